//! What a reload changes: a pure comparison of the services file in force with a new one,
//! per service. How a service runs (its command, environment, directory, user, outputs,
//! placement) changing restarts its instances; how it is watched (restart policy, stop
//! signal and grace, description, watched files) changing applies without a restart, as
//! taskmaster does; `numprocs` alone starts or stops the difference and leaves the others.

use common::services::{ServiceSpec, ServicesFile};

/// What a reload does, service by service, each list in name order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    /// New services: started if `autostart`.
    pub(crate) added: Vec<String>,
    /// Gone from the file: stopped.
    pub(crate) removed: Vec<String>,
    /// How they run changed: every instance restarts.
    pub(crate) restarted: Vec<String>,
    /// Only how they are watched changed: applied to the running instances.
    pub(crate) retuned: Vec<String>,
    /// `numprocs` changed (from, to): the difference starts or stops, the rest untouched.
    pub(crate) scaled: Vec<(String, u32, u32)>,
    /// The same: left alone, same pids.
    pub(crate) unchanged: Vec<String>,
}

impl Diff {
    /// True when the reload changes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.restarted.is_empty()
            && self.retuned.is_empty()
            && self.scaled.is_empty()
    }
}

/// The reload from `old` to `new`.
pub(crate) fn diff(old: &ServicesFile, new: &ServicesFile) -> Diff {
    let mut d = Diff::default();
    for name in old.services.keys().filter(|n| !new.services.contains_key(*n)) {
        d.removed.push(name.clone());
    }
    for (name, spec) in &new.services {
        let Some(before) = old.services.get(name) else {
            d.added.push(name.clone());
            continue;
        };
        if runs_differently(before, spec) {
            d.restarted.push(name.clone());
        } else if watched_differently(before, spec) {
            d.retuned.push(name.clone());
        }
        if before.numprocs != spec.numprocs {
            d.scaled.push((name.clone(), before.numprocs, spec.numprocs));
        }
        if !runs_differently(before, spec) && !watched_differently(before, spec) && before.numprocs == spec.numprocs {
            d.unchanged.push(name.clone());
        }
    }
    d
}

/// Whether the instances must be started again to take the change.
fn runs_differently(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    (&a.command, &a.env, &a.cwd, &a.umask, &a.user, &a.stage)
        != (&b.command, &b.env, &b.cwd, &b.umask, &b.user, &b.stage)
        || (&a.stdout, a.stdout_maxbytes, a.stdout_backups) != (&b.stdout, b.stdout_maxbytes, b.stdout_backups)
        || (&a.stderr, a.stderr_maxbytes, a.stderr_backups) != (&b.stderr, b.stderr_maxbytes, b.stderr_backups)
        || (&a.hosts, a.every_host) != (&b.hosts, b.every_host)
}

/// Whether what watches the instances changed (applied without a restart).
fn watched_differently(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    (a.autostart, a.autorestart, &a.exitcodes, a.startsecs, a.startretries)
        != (b.autostart, b.autorestart, &b.exitcodes, b.startsecs, b.startretries)
        || (a.stopsignal, a.stopwaitsecs, &a.description) != (b.stopsignal, b.stopwaitsecs, &b.description)
        || (&a.restart_on_change, a.change_signal) != (&b.restart_on_change, b.change_signal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn file(text: &str) -> ServicesFile {
        ServicesFile::parse(text, Path::new("services.toml")).unwrap()
    }

    #[test]
    fn one_changed_one_added_one_removed_one_untouched() {
        let old = file(
            r#"
[services.web]
command = "web --port 80"
[services.worker]
command = "worker"
[services.old]
command = "old"
"#,
        );
        let new = file(
            r#"
[services.web]
command = "web --port 8080"
[services.worker]
command = "worker"
[services.metrics]
command = "metrics"
"#,
        );
        assert_eq!(
            diff(&old, &new),
            Diff {
                added: vec!["metrics".into()],
                removed: vec!["old".into()],
                restarted: vec!["web".into()],
                unchanged: vec!["worker".into()],
                ..Diff::default()
            }
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn how_it_runs_restarts_how_it_is_watched_does_not() {
        let base = "[services.s]\ncommand = \"s\"\n";
        for (line, restart) in [
            ("env = { A = \"1\" }", true),
            ("cwd = \"/tmp\"", true),
            ("umask = \"077\"", true),
            ("user = \"nobody\"", true),
            ("stdout = \"discard\"", true),
            ("stderr_backups = 3", true),
            ("hosts = [\"euclid\"]", true),
            ("every_host = true", true),
            ("stage = [\"/opt/s\"]", true),
            ("autorestart = \"always\"", false),
            ("exitcodes = [0, 1]", false),
            ("startsecs = 5", false),
            ("startretries = 9", false),
            ("stopsignal = \"INT\"", false),
            ("stopwaitsecs = 2", false),
            ("description = \"s\"", false),
            ("autostart = false", false),
            ("restart_on_change = [\"/etc/s\"]", false),
        ] {
            let d = diff(&file(base), &file(&format!("{base}{line}\n")));
            let name = vec!["s".to_string()];
            if restart {
                assert_eq!((&d.restarted, &d.retuned), (&name, &vec![]), "{line}");
            } else {
                assert_eq!((&d.restarted, &d.retuned), (&vec![], &name), "{line}");
            }
            assert!(d.unchanged.is_empty() && d.scaled.is_empty(), "{line}: {d:?}");
        }
    }

    #[test]
    fn numprocs_alone_scales_and_touches_nothing_else() {
        let two = file("[services.s]\ncommand = \"s\"\nnumprocs = 3\n");
        let three = file("[services.s]\ncommand = \"s\"\nnumprocs = 2\n");
        let d = diff(&two, &three);
        assert_eq!(d.scaled, [("s".to_string(), 3, 2)]);
        assert!(d.restarted.is_empty() && d.retuned.is_empty() && d.unchanged.is_empty());
        // With a change of command too, every instance restarts and the count changes.
        let moved = file("[services.s]\ncommand = \"t\"\nnumprocs = 4\n");
        let d = diff(&two, &moved);
        assert_eq!((d.restarted.len(), d.scaled.len()), (1, 1));
    }
}
