//! Whom programs run as. kinski running as root runs them as the configured user, dropping
//! privileges in the child in the order that leaves nothing behind: supplementary groups,
//! then the group, then the user.

use std::ffi::CString;

/// A resolved account to run programs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    pub home: std::path::PathBuf,
}

/// Why programs cannot be run as asked.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(
        "kinski runs as root and no user is configured to run programs as: set kinski.run_as or --run-as (\"root\" only if you mean it)"
    )]
    RootWithoutUser,
    #[error("no user named '{name}' on this host: create it or set another kinski.run_as")]
    NoSuchUser { name: String },
    #[error("kinski runs as '{me}' and cannot run programs as '{name}': only root can switch users")]
    NotRoot { me: String, name: String },
    #[error("failed to look up user '{name}': {reason}")]
    Lookup { name: String, reason: String },
}

fn lookup(name: &str) -> Result<RunAs, UserError> {
    let lookup_error = |e: nix::Error| UserError::Lookup {
        name: name.to_string(),
        reason: e.to_string(),
    };
    let user = nix::unistd::User::from_name(name)
        .map_err(lookup_error)?
        .ok_or_else(|| UserError::NoSuchUser { name: name.to_string() })?;
    let cname = CString::new(name).map_err(|e| UserError::Lookup {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid).map_err(lookup_error)?;
    Ok(RunAs {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: groups.into_iter().map(|g| g.as_raw()).collect(),
        home: user.dir,
    })
}

/// The name of the user this process runs as (its uid if it has no name).
pub fn current_user() -> String {
    let euid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(euid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| euid.to_string())
}

/// Decides whom programs run as. Root must name a user (possibly "root", on purpose); anyone
/// else runs programs as themselves, and may only name themselves.
pub fn resolve(run_as: Option<&str>) -> Result<Option<RunAs>, UserError> {
    let euid = nix::unistd::geteuid();
    let me = current_user();
    match run_as {
        None if euid.is_root() => Err(UserError::RootWithoutUser),
        None => Ok(None),
        Some(name) if name == me => Ok(None),
        Some(name) if !euid.is_root() => Err(UserError::NotRoot {
            me,
            name: name.to_string(),
        }),
        Some(name) => lookup(name).map(Some),
    }
}

impl RunAs {
    /// Drops to this user in the child. Only async-signal-safe calls: it runs between fork
    /// and exec.
    pub(crate) fn apply(&self, command: &mut crate::exec::Exec) {
        command
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .user(crate::exec::Ids {
                uid: self.uid,
                gid: self.gid,
                groups: self.groups.clone(),
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_must_name_a_user_and_others_only_themselves() {
        let root = nix::unistd::geteuid().is_root();
        match resolve(None) {
            Err(UserError::RootWithoutUser) => assert!(root),
            Ok(None) => assert!(!root),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve(Some("no-such-user-herzog")),
            Err(UserError::NoSuchUser { .. } | UserError::NotRoot { .. })
        ));
        if root {
            let nobody = resolve(Some("nobody")).unwrap().unwrap();
            assert_eq!(nobody.uid, 65534);
            assert_eq!(resolve(Some("root")).unwrap(), None);
        }
    }
}
