//! Named commands (`[commands.NAME]`): programs `hz run NAME ARGS...` runs once on a worker,
//! the process-tree master's command nodes.

use super::ServicesError;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One named command.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The program and its first arguments; shell syntax runs under `/bin/sh -c`, with the
    /// arguments `hz run` adds as the script's positional parameters (never pasted into it),
    /// `"$@"` appended unless the script uses them itself.
    pub command: String,
    /// Other names `hz run` knows it by.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The workers it may run on; `None`: any.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Extra environment (`hz run --env` adds to it).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; `None`: the caller's.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Free text shown by `hz commands`.
    #[serde(default)]
    pub description: Option<String>,
}

impl CommandSpec {
    /// The command line with `args` added.
    pub fn argv(&self, args: &[String]) -> Vec<String> {
        if crate::template::needs_shell(&self.command) {
            let uses = ["$@", "$*", "${@", "${*", "$#"]
                .iter()
                .any(|p| self.command.contains(p))
                || (1..=9)
                    .any(|n| self.command.contains(&format!("${n}")) || self.command.contains(&format!("${{{n}")));
            let script = if uses {
                self.command.clone()
            } else {
                format!("{} \"$@\"", self.command.trim_end())
            };
            let mut argv = vec!["/bin/sh".to_string(), "-c".to_string(), script, "sh".to_string()];
            argv.extend(args.iter().cloned());
            argv
        } else {
            self.command
                .split_whitespace()
                .map(str::to_string)
                .chain(args.iter().cloned())
                .collect()
        }
    }
}

/// The command `name` names, by its name or one of its aliases.
pub fn find<'a>(commands: &'a BTreeMap<String, CommandSpec>, name: &str) -> Option<(&'a String, &'a CommandSpec)> {
    commands
        .get_key_value(name)
        .or_else(|| commands.iter().find(|(_, c)| c.aliases.iter().any(|a| a == name)))
}

/// Checks every command: names and aliases valid and each used once, a program, clean paths.
pub(super) fn validate(commands: &BTreeMap<String, CommandSpec>, path: &Path) -> Result<(), ServicesError> {
    let mut seen = BTreeSet::new();
    for (name, c) in commands {
        let bad = |key, problem: String| ServicesError::Value {
            path: path.to_path_buf(),
            service: format!("(command) {name}"),
            key,
            problem,
        };
        for n in std::iter::once(name).chain(&c.aliases) {
            if let Err(e) = crate::name::check_name(n) {
                return Err(bad("name or alias", e.to_string()));
            }
            if !seen.insert(n.as_str()) {
                return Err(bad(
                    "aliases",
                    format!("'{n}' names two commands: give each name and alias once"),
                ));
            }
        }
        if c.command.trim().is_empty() {
            return Err(bad("command", "is empty: name the program to run".into()));
        }
        if let Some(hosts) = &c.hosts {
            if hosts.is_empty() {
                return Err(bad(
                    "hosts",
                    "is empty: list workers, or leave it out to run anywhere".into(),
                ));
            }
            if let Some(e) = hosts.iter().find_map(|h| crate::name::check_name(h).err()) {
                return Err(bad("hosts", e.to_string()));
            }
        }
        if let Some(cwd) = &c.cwd
            && crate::paths::clean_absolute(cwd).is_err()
        {
            return Err(bad(
                "cwd",
                format!("{} must be an absolute path without '..'", cwd.display()),
            ));
        }
        if let Some(key) = c.env.keys().find(|k| k.is_empty() || k.contains(['=', '\0'])) {
            return Err(bad(
                "env",
                format!("has the variable name {key:?}: no '=' or NUL, not empty"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str) -> CommandSpec {
        CommandSpec {
            command: command.into(),
            aliases: Vec::new(),
            hosts: None,
            env: BTreeMap::new(),
            cwd: None,
            description: None,
        }
    }

    #[test]
    fn arguments_follow_the_program_and_never_enter_a_script() {
        let args = vec!["a b".to_string(), "$(rm -rf /)".to_string()];
        assert_eq!(spec("echo -n").argv(&args), ["echo", "-n", "a b", "$(rm -rf /)"]);
        assert_eq!(
            spec("grep x | wc -l").argv(&args),
            ["/bin/sh", "-c", "grep x | wc -l \"$@\"", "sh", "a b", "$(rm -rf /)"]
        );
        // A script that places its arguments itself gets them as they are.
        assert_eq!(
            spec("printf '%s|' \"$@\" | wc -c").argv(&args),
            [
                "/bin/sh",
                "-c",
                "printf '%s|' \"$@\" | wc -c",
                "sh",
                "a b",
                "$(rm -rf /)"
            ]
        );
    }

    #[test]
    fn a_name_or_alias_finds_its_command_and_each_is_used_once() {
        let mut commands = BTreeMap::new();
        let mut backup = spec("rsync -a");
        backup.aliases = vec!["bk".into()];
        commands.insert("backup".to_string(), backup);
        assert_eq!(find(&commands, "bk").map(|(n, _)| n.as_str()), Some("backup"));
        assert_eq!(find(&commands, "backup").map(|(n, _)| n.as_str()), Some("backup"));
        assert!(find(&commands, "nope").is_none());
        assert!(validate(&commands, Path::new("s.toml")).is_ok());
        let mut other = spec("ls");
        other.aliases = vec!["bk".into()];
        commands.insert("list".to_string(), other);
        let e = validate(&commands, Path::new("s.toml")).unwrap_err().to_string();
        assert!(e.contains("'bk' names two commands"), "{e}");
    }
}
