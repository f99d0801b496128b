//! The services file: long-running programs herzog keeps up on the cluster (supervisord's
//! `[program:x]`, one file for every host). TOML, or YAML when the file ends in `.yaml` or
//! `.yml`; the same schema either way, every key with a default but `command`, and an
//! unknown key refused with its name and line.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole file: `[services.NAME]` tables (`services: NAME:` in YAML).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServicesFile {
    pub services: BTreeMap<String, ServiceSpec>,
    /// Named commands `hz run NAME` runs once (`[commands.NAME]`).
    pub commands: BTreeMap<String, CommandSpec>,
}

/// One service: how to run it, where, and how to keep it up.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The program and its arguments; shell syntax runs under `/bin/sh -c`, as for projects.
    pub command: String,
    /// Free text shown by `hz status`.
    #[serde(default)]
    pub description: Option<String>,
    /// How many instances to keep running.
    #[serde(default = "one")]
    pub numprocs: u32,
    /// The workers it may run on; `None`: anywhere, spread.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// One set of `numprocs` instances on every worker.
    #[serde(default)]
    pub every_host: bool,
    /// Start when herzog starts or the service first appears.
    #[serde(default = "yes")]
    pub autostart: bool,
    #[serde(default)]
    pub autorestart: AutoRestart,
    /// Exit codes that count as expected.
    #[serde(default = "zero")]
    pub exitcodes: Vec<i32>,
    /// How long an instance must stay up to count as started.
    #[serde(
        default = "one_second",
        deserialize_with = "duration",
        serialize_with = "write_duration"
    )]
    pub startsecs: Duration,
    /// Failed starts in a row before the instance is `Fatal`.
    #[serde(default)]
    pub startretries: Retries,
    #[serde(default)]
    pub stopsignal: StopSignal,
    /// Grace between the stop signal and SIGKILL.
    #[serde(
        default = "ten_seconds",
        deserialize_with = "duration",
        serialize_with = "write_duration"
    )]
    pub stopwaitsecs: Duration,
    #[serde(default)]
    pub stdout: Output,
    #[serde(default)]
    pub stderr: Output,
    /// A file given as `stdout` is rotated at this size...
    #[serde(default = "fifty_megabytes", serialize_with = "write_bytes")]
    pub stdout_maxbytes: bytesize::ByteSize,
    /// ...keeping this many old ones.
    #[serde(default = "ten")]
    pub stdout_backups: u32,
    #[serde(default = "fifty_megabytes", serialize_with = "write_bytes")]
    pub stderr_maxbytes: bytesize::ByteSize,
    #[serde(default = "ten")]
    pub stderr_backups: u32,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default = "root_dir")]
    pub cwd: PathBuf,
    /// The file mode creation mask, octal ("022"); `None`: kinski's.
    #[serde(default, deserialize_with = "umask", serialize_with = "write_umask")]
    pub umask: Option<u32>,
    /// Whom it runs as (only a root kinski can switch); `None`: kinski's `run_as`.
    #[serde(default)]
    pub user: Option<String>,
    /// Files or directories whose change restarts its instances.
    #[serde(default)]
    pub restart_on_change: Vec<PathBuf>,
    /// Sent on such a change instead of a restart (a program that reloads its config on HUP).
    #[serde(default)]
    pub change_signal: Option<StopSignal>,
    /// For hosts without the shared filesystem: files copied there before the first start.
    #[serde(default)]
    pub stage: Vec<PathBuf>,
    /// `false`: its fatal starts and unexpected exits send no alert (`[alerts]` in cluster.toml).
    #[serde(default = "yes")]
    pub alert: bool,
    /// CPUs each instance asks for: taken from its worker's capacity, and enforced.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory each instance asks for (bytes, or "512 MiB"): taken from its worker's
    /// capacity, and enforced.
    #[serde(default, serialize_with = "write_opt_bytes")]
    pub mem: Option<bytesize::ByteSize>,
}

impl ServiceSpec {
    /// What each instance asks for (no time limit: a service runs until stopped).
    pub fn requests(&self) -> crate::requests::Requests {
        crate::requests::Requests {
            cpus: self.cpus,
            memory_bytes: self.mem.map(|m| m.0),
            time_ms: None,
        }
    }
}

/// When an instance that exited is started again.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoRestart {
    /// Whatever the exit.
    Always,
    /// Never: it stays `Exited`.
    Never,
    /// When the exit is not one of `exitcodes` (or a signal).
    #[default]
    Unexpected,
}

/// How many failed starts in a row an instance gets. Written as in the file: a number, or
/// `"forever"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retries {
    Count(u32),
    /// Never `Fatal`: keeps trying, backing off.
    Forever,
}

impl Default for Retries {
    fn default() -> Self {
        Retries::Count(3)
    }
}

impl serde::Serialize for Retries {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Retries::Count(n) => s.serialize_u32(*n),
            Retries::Forever => s.serialize_str("forever"),
        }
    }
}

impl<'de> Deserialize<'de> for Retries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(Retries::Count(n)),
            Raw::Word(w) if w == "forever" => Ok(Retries::Forever),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "startretries = {w:?}: expected a number or \"forever\""
            ))),
        }
    }
}

/// The signals a service may be stopped (or told of a change) with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StopSignal {
    #[default]
    Term,
    Int,
    Quit,
    Hup,
    Kill,
    Usr1,
    Usr2,
}

impl StopSignal {
    const ALL: [(StopSignal, &'static str, i32); 7] = [
        (StopSignal::Term, "TERM", 15),
        (StopSignal::Int, "INT", 2),
        (StopSignal::Quit, "QUIT", 3),
        (StopSignal::Hup, "HUP", 1),
        (StopSignal::Kill, "KILL", 9),
        (StopSignal::Usr1, "USR1", 10),
        (StopSignal::Usr2, "USR2", 12),
    ];

    /// Its name without `SIG`, as supervisord writes it.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, ..)| *s == self)
            .map_or("TERM", |(_, n, _)| n)
    }

    /// Its number on Linux.
    pub fn number(self) -> i32 {
        Self::ALL.iter().find(|(s, ..)| *s == self).map_or(15, |(.., n)| *n)
    }
}

impl TryFrom<String> for StopSignal {
    type Error = String;

    /// `TERM`, `SIGTERM`, `term`: any case, with or without `SIG`.
    fn try_from(text: String) -> Result<Self, String> {
        let upper = text.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Self::ALL
            .iter()
            .find(|(_, name, _)| *name == bare)
            .map(|(s, ..)| *s)
            .ok_or_else(|| format!("{text:?} is not a signal a service can be stopped with: use TERM, INT, QUIT, HUP, KILL, USR1 or USR2"))
    }
}

impl From<StopSignal> for String {
    fn from(s: StopSignal) -> String {
        s.name().to_string()
    }
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a stream of an instance goes. Written as in the file: `"discard"`, a path, or
/// `"kept"`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Under kinski's state directory, readable with `hz tail`.
    #[default]
    Kept,
    /// Thrown away.
    Discard,
    /// Appended to this file on the host, rotated at its `*_maxbytes`.
    File(PathBuf),
}

impl serde::Serialize for Output {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Output::Kept => s.serialize_str("kept"),
            Output::Discard => s.serialize_str("discard"),
            Output::File(path) => path.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Output {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "discard" => Output::Discard,
            "kept" | "keep" => Output::Kept,
            _ => Output::File(PathBuf::from(text)),
        })
    }
}

fn one() -> u32 {
    1
}
fn ten() -> u32 {
    10
}
fn yes() -> bool {
    true
}
fn zero() -> Vec<i32> {
    vec![0]
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn fifty_megabytes() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(50)
}
fn root_dir() -> PathBuf {
    PathBuf::from("/")
}

/// A duration as `"1s"`, `"500ms"`, `"2m"`, or a number of seconds (supervisord's way).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => humantime::parse_duration(&t)
            .map_err(|e| serde::de::Error::custom(format!("{t:?} is not a duration ({e}): write e.g. \"1s\" or 10"))),
    }
}

fn write_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Exactly, in bytes: bytesize writes "1.2 MiB", which reads back as another number.
fn write_bytes<S: serde::Serializer>(b: &bytesize::ByteSize, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(b.as_u64())
}

fn write_opt_bytes<S: serde::Serializer>(b: &Option<bytesize::ByteSize>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.serialize_some(&b.as_u64()),
        None => s.serialize_none(),
    }
}

fn write_umask<S: serde::Serializer>(mask: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match mask {
        Some(m) => s.serialize_str(&format!("{m:03o}")),
        None => s.serialize_none(),
    }
}

/// An octal mask: `"022"` or `"0o022"`.
fn umask<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let digits = text.strip_prefix("0o").unwrap_or(&text);
    match u32::from_str_radix(digits, 8) {
        Ok(mask) if mask <= 0o777 => Ok(Some(mask)),
        _ => Err(serde::de::Error::custom(format!(
            "umask {text:?} is not an octal mask: write e.g. \"022\""
        ))),
    }
}

/// The most instances of one service, and per host of one on every host: a typo of a few
/// zeros must not make herzog build millions of them.
pub const MAX_NUMPROCS: u32 = 1024;
pub const MAX_NUMPROCS_EVERY_HOST: u32 = 64;

/// Why a services file cannot be used. Nothing of a file with an error is applied.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("failed to read the services file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the services file {path} is invalid: {message}; services.example.toml documents every key")]
    Parse { path: PathBuf, message: String },
    #[error("the services file {path}: service {service}: {key} {problem}")]
    Value {
        path: PathBuf,
        service: String,
        key: &'static str,
        problem: String,
    },
}

impl ServicesFile {
    /// Parses a services file's text; YAML when `path` ends in `.yaml` or `.yml`, else TOML.
    /// `path` also names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ServicesError> {
        let parse_error = |message: String| ServicesError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        let file: ServicesFile = if yaml {
            serde_yaml_ng::from_str(text).map_err(|e| parse_error(e.to_string()))?
        } else {
            toml::from_str(text)
                .map_err(|e| parse_error(e.message().to_string() + &crate::config::line_of(text, e.span())))?
        };
        file.validate(path)?;
        Ok(file)
    }

    /// Reads and parses a services file.
    pub fn load(path: &Path) -> Result<Self, ServicesError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServicesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn validate(&self, path: &Path) -> Result<(), ServicesError> {
        commands::validate(&self.commands, path)?;
        for (name, s) in &self.services {
            let bad = |key, problem: String| ServicesError::Value {
                path: path.to_path_buf(),
                service: name.clone(),
                key,
                problem,
            };
            if let Err(e) = crate::name::check_name(name) {
                return Err(bad("name", e.to_string()));
            }
            if s.command.trim().is_empty() {
                return Err(bad("command", "is empty: name the program to run".into()));
            }
            if s.numprocs == 0 {
                return Err(bad(
                    "numprocs",
                    "is 0: at least 1 (to keep a service down, set autostart = false)".into(),
                ));
            }
            let most = if s.every_host {
                MAX_NUMPROCS_EVERY_HOST
            } else {
                MAX_NUMPROCS
            };
            if s.numprocs > most {
                return Err(bad(
                    "numprocs",
                    format!("is {}: at most {most} (per host with every_host)", s.numprocs),
                ));
            }
            match &s.hosts {
                Some(_) if s.every_host => {
                    return Err(bad("hosts", "and every_host are both set: choose one".into()));
                }
                Some(hosts) if hosts.is_empty() => {
                    return Err(bad(
                        "hosts",
                        "is empty: list workers, or leave it out to run anywhere".into(),
                    ));
                }
                Some(hosts) => {
                    if let Some(e) = hosts.iter().find_map(|h| crate::name::check_name(h).err()) {
                        return Err(bad("hosts", e.to_string()));
                    }
                }
                None => {}
            }
            if let Some(code) = s.exitcodes.iter().find(|c| !(0..=255).contains(*c)) {
                return Err(bad("exitcodes", format!("holds {code}: exit codes are 0 to 255")));
            }
            if crate::paths::clean_absolute(&s.cwd).is_err() {
                return Err(bad(
                    "cwd",
                    format!("{} must be an absolute path without '..'", s.cwd.display()),
                ));
            }
            for (key, output) in [("stdout", &s.stdout), ("stderr", &s.stderr)] {
                if let Output::File(file) = output
                    && crate::paths::clean_absolute(file).is_err()
                {
                    return Err(bad(
                        key,
                        format!(
                            "{} must be \"discard\" or an absolute path without '..'",
                            file.display()
                        ),
                    ));
                }
            }
            if let Some(key) = s.env.keys().find(|k| k.is_empty() || k.contains(['=', '\0'])) {
                return Err(bad(
                    "env",
                    format!("has the variable name {key:?}: no '=' or NUL, not empty"),
                ));
            }
            if s.change_signal.is_some() && s.restart_on_change.is_empty() {
                return Err(bad(
                    "change_signal",
                    "is set without restart_on_change: name the files whose change it signals".into(),
                ));
            }
            if let Some(bad_path) = s
                .restart_on_change
                .iter()
                .chain(&s.stage)
                .find(|p| crate::paths::clean_absolute(p).is_err())
            {
                return Err(bad(
                    "restart_on_change or stage",
                    format!("holds {}: paths must be absolute, without '..'", bad_path.display()),
                ));
            }
            // Staged files land side by side in one directory on the host.
            let mut names = std::collections::BTreeSet::new();
            if let Some(twice) = s.stage.iter().find(|p| !names.insert(p.file_name())) {
                return Err(bad(
                    "stage",
                    format!(
                        "names two files called {:?} ({}): they would land on each other in the host's stage directory; rename one",
                        twice.file_name().unwrap_or_default(),
                        twice.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

pub mod commands;
#[cfg(test)]
mod tests;

pub use commands::CommandSpec;
