//! The cluster config file (`cluster.toml`): one file can serve herzog, every kinski and hz.
//! Every key has a default; an unknown key is an error that names it.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// herzog's default address, where clients dial it and (without `listen`) where it listens:
/// loopback, so a herzog is reachable from the network only when its config or `--listen`
/// says so.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:7373";

/// Checks that `addr` is `host:port` (`[v6]:port` for an IPv6 address); the error says what
/// is missing and how to write it.
pub fn check_address(addr: &str) -> Result<(), String> {
    let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
        let host_ok = !host.is_empty() && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
        host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    match (ok, addr.contains(':')) {
        (true, _) => Ok(()),
        (false, false) if !addr.is_empty() => Err(format!(
            "herzog's address '{addr}' has no port: add :PORT, e.g. {addr}:7373 (herzog's default port)"
        )),
        (false, _) => Err(format!(
            "herzog's address '{addr}' is not host:port (e.g. coordinator:7373, [::1]:7373)"
        )),
    }
}

/// How many daily log files a daemon keeps by default (`log_retention`).
pub const DEFAULT_LOG_RETENTION: u32 = 14;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub herzog: HerzogSection,
    pub kinski: KinskiSection,
    /// `[[hosts]]`: the compute hosts, by worker name. A worker not listed is a host with the
    /// shared filesystem and the defaults.
    pub hosts: Vec<HostConfig>,
    /// `[alerts]`: mail and webhooks when services fail, projects end, workers are lost.
    pub alerts: crate::alerts::AlertsSection,
}

/// One `[[hosts]]` entry. herzog reads `shared_fs`, `address`, `slots` and `ssh`; the kinski
/// whose name it is reads `slots` and `scratch_dir` (so one file can serve both).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The worker's name (its certificate's name, kinski's `--name`).
    pub name: String,
    /// Where herzog reaches the host over SSH; default: the name.
    #[serde(default)]
    pub address: Option<String>,
    /// True: the project directories and herzog's results folder are the same paths on the
    /// host (NFS and the like). False: inputs go over SSH and outputs come back the same way.
    #[serde(default = "yes")]
    pub shared_fs: bool,
    /// How many attempts run there at once; default: what kinski registers.
    #[serde(default)]
    pub slots: Option<u32>,
    /// Where kinski makes each staged attempt's directory; default `<kinski state_dir>/scratch`.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// How herzog logs in (hosts without the shared filesystem).
    #[serde(default)]
    pub ssh: SshConfig,
}

fn yes() -> bool {
    true
}

/// `[hosts.ssh]`: passed to the system `ssh`, so `~/.ssh/config` (or `config`) still applies
/// for anything not set here.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    pub user: Option<String>,
    pub port: Option<u16>,
    /// A private key file.
    pub identity: Option<PathBuf>,
    /// An ssh config file used instead of `~/.ssh/config`.
    pub config: Option<PathBuf>,
    /// A known_hosts file used instead of `~/.ssh/known_hosts`. Host keys are always checked.
    pub known_hosts: Option<PathBuf>,
}

impl HostConfig {
    /// The address ssh dials.
    pub fn ssh_address(&self) -> &str {
        self.address.as_deref().unwrap_or(&self.name)
    }
}

/// `[herzog]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HerzogSection {
    /// Where hz and kinski reach herzog.
    pub address: String,
    /// Where herzog binds; defaults to `address`.
    pub listen: Option<String>,
    /// herzog's database, logs and results.
    pub state_dir: PathBuf,
    /// How often workers heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Silence after which a worker is lost.
    #[serde(with = "humantime_serde")]
    pub worker_timeout: Duration,
    /// The tracing filter (`info`, `herzog=debug`, ...).
    pub log_level: String,
    /// How many daily log files (`logs/herzog.log.YYYY-MM-DD`) are kept; older ones are removed.
    pub log_retention: u32,
    /// herzog's certificate bundle (from `herzog certs init`).
    pub tls: Option<PathBuf>,
    /// The free space herzog keeps on its state filesystem: below it, no attempt starts
    /// (each writes its logs there) until there is room again. Bytes, or "1 GiB", "500 MB".
    pub min_free_space: bytesize::ByteSize,
    /// The services file (long-running programs herzog keeps up; services.example.toml):
    /// TOML, or YAML when it ends in .yaml or .yml. Default: services.toml beside the config
    /// file; without a config file, none.
    pub services: Option<PathBuf>,
    /// The most bytes kept of each attempt's stdout and of its stderr: the first and the
    /// last half, with a line between them saying what was cut.
    pub max_log_bytes: bytesize::ByteSize,
    /// Fair share: past usage counts half as much after this long ("7d", "1h"; Slurm's
    /// PriorityDecayHalfLife). Default: off, usage counts in full since a project became
    /// active.
    #[serde(with = "humantime_serde")]
    pub fair_half_life: Option<Duration>,
    /// What a project's attempts ask for when `hz action` does not say (`[herzog.defaults]`).
    pub defaults: DefaultsSection,
}

/// `[herzog.defaults]`: requests for projects that give none; what is set here is enforced
/// as if `hz action` had asked for it (the built-in 1 CPU only packs).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultsSection {
    /// CPUs per attempt.
    pub cpus: Option<u32>,
    /// Memory per attempt: bytes, or "512 MiB", "4 GiB".
    pub mem: Option<bytesize::ByteSize>,
    /// Wall-clock limit per attempt ("90s", "2h").
    #[serde(with = "humantime_serde")]
    pub time: Option<Duration>,
}

impl DefaultsSection {
    /// As requests.
    pub fn requests(&self) -> crate::requests::Requests {
        crate::requests::Requests {
            cpus: self.cpus,
            memory_bytes: self.mem.map(|m| m.0),
            time_ms: self.time.map(|t| t.as_millis() as u64),
        }
    }
}

impl Default for HerzogSection {
    fn default() -> Self {
        HerzogSection {
            tls: None,
            address: DEFAULT_ADDRESS.to_string(),
            listen: None,
            state_dir: PathBuf::from("/var/lib/herzog"),
            heartbeat_interval: Duration::from_secs(2),
            worker_timeout: Duration::from_secs(10),
            log_level: "info".to_string(),
            log_retention: DEFAULT_LOG_RETENTION,
            min_free_space: bytesize::ByteSize::gib(1),
            services: None,
            max_log_bytes: bytesize::ByteSize(crate::wire::DEFAULT_MAX_LOG_BYTES),
            fair_half_life: None,
            defaults: DefaultsSection::default(),
        }
    }
}

/// The smallest `herzog.max_log_bytes`: room for a head, a tail and the line between them.
const MIN_MAX_LOG_BYTES: u64 = 4096;

impl HerzogSection {
    /// The services file: `services`, relative to the config file's directory when relative;
    /// else `services.toml` beside the config file (`config`); else none.
    pub fn services_file(&self, config: Option<&Path>) -> Option<PathBuf> {
        let dir = config.and_then(Path::parent);
        match (&self.services, dir) {
            (Some(path), Some(dir)) => Some(dir.join(path)),
            (Some(path), None) => Some(path.clone()),
            (None, Some(dir)) => Some(dir.join("services.toml")),
            (None, None) => None,
        }
    }

    /// The address to bind.
    pub fn listen_address(&self) -> &str {
        self.listen.as_deref().unwrap_or(&self.address)
    }
}

/// `[kinski]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KinskiSection {
    /// This worker's name; default: the name its certificate was issued for.
    pub name: Option<String>,
    /// How many attempts run at once; default: the available parallelism.
    pub slots: Option<u32>,
    /// kinski's logs and journal.
    pub state_dir: PathBuf,
    /// The tracing filter.
    pub log_level: String,
    /// How many daily log files (`logs/kinski.log.YYYY-MM-DD`) are kept; older ones are removed.
    pub log_retention: u32,
    /// This worker's certificate bundle (from `herzog certs issue NAME --role worker`).
    pub tls: Option<PathBuf>,
    /// The user programs run as; required when kinski runs as root.
    pub run_as: Option<String>,
    /// Users a service may name with `user =` besides `run_as` (a root kinski only): what
    /// herzog asks cannot go beyond what this host's admin allows.
    pub service_users: Vec<String>,
    /// Where kinski keeps one pid file per service instance (`<instance>.pid`) while it runs,
    /// for tools that expect them; none by default.
    pub pid_dir: Option<PathBuf>,
    /// The CPUs this worker offers; default: the host's (as Slurm's `CPUs=` in a node line).
    pub cpus: Option<u32>,
    /// CPUs kept for the system: attempts are packed into the rest.
    pub reserve_cpus: u32,
    /// Memory kept for the system: bytes, or "2 GiB".
    pub reserve_mem: bytesize::ByteSize,
}

impl Default for KinskiSection {
    fn default() -> Self {
        KinskiSection {
            run_as: None,
            service_users: Vec::new(),
            pid_dir: None,
            cpus: None,
            reserve_cpus: 0,
            reserve_mem: bytesize::ByteSize(0),
            tls: None,
            name: None,
            slots: None,
            state_dir: PathBuf::from("/var/lib/kinski"),
            log_level: "info".to_string(),
            log_retention: DEFAULT_LOG_RETENTION,
        }
    }
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is invalid: {message}; cluster.example.toml documents every key")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {key} = {value:?} is invalid: {reason}")]
    Value {
        path: PathBuf,
        key: &'static str,
        value: String,
        reason: &'static str,
    },
}

impl ClusterConfig {
    /// Parses config text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: ClusterConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string() + &line_of(text, e.span()),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The config at `path` when one is given, else the defaults.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self, ConfigError> {
        path.map_or_else(|| Ok(ClusterConfig::default()), Self::load)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key, value: String, reason| ConfigError::Value {
            path: path.to_path_buf(),
            key,
            value,
            reason,
        };
        let h = &self.herzog;
        if check_address(&h.address).is_err() {
            return Err(bad("herzog.address", h.address.clone(), "expected host:port"));
        }
        if h.heartbeat_interval.is_zero() {
            return Err(bad("herzog.heartbeat_interval", "0s".into(), "must be more than zero"));
        }
        if h.worker_timeout <= h.heartbeat_interval {
            return Err(bad(
                "herzog.worker_timeout",
                humantime_serde::re::humantime::format_duration(h.worker_timeout).to_string(),
                "must be longer than herzog.heartbeat_interval",
            ));
        }
        if h.max_log_bytes.as_u64() < MIN_MAX_LOG_BYTES {
            return Err(bad(
                "herzog.max_log_bytes",
                h.max_log_bytes.as_u64().to_string(),
                "must be at least 4096 (bytes)",
            ));
        }
        for (key, days) in [
            ("herzog.log_retention", h.log_retention),
            ("kinski.log_retention", self.kinski.log_retention),
        ] {
            if days == 0 {
                return Err(bad(key, "0".into(), "must be at least 1 (days of log files kept)"));
            }
        }
        if self.kinski.slots == Some(0) {
            return Err(bad("kinski.slots", "0".into(), "must be at least 1"));
        }
        if let Some(name) = &self.kinski.name
            && crate::name::check_name(name).is_err()
        {
            return Err(bad(
                "kinski.name",
                name.clone(),
                "use letters, digits, '.', '_' and '-'",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for host in &self.hosts {
            if crate::name::check_name(&host.name).is_err() {
                return Err(bad(
                    "hosts.name",
                    host.name.clone(),
                    "use letters, digits, '.', '_' and '-'",
                ));
            }
            if !seen.insert(host.name.as_str()) {
                return Err(bad("hosts.name", host.name.clone(), "listed twice"));
            }
            if host.slots == Some(0) {
                return Err(bad(
                    "hosts.slots",
                    format!("0 (host {})", host.name),
                    "must be at least 1",
                ));
            }
            if let Some(dir) = &host.scratch_dir
                && crate::paths::clean_absolute(dir).is_err()
            {
                return Err(bad(
                    "hosts.scratch_dir",
                    dir.display().to_string(),
                    "must be an absolute path without '..'",
                ));
            }
        }
        self.alerts.check().map_err(|b| ConfigError::Value {
            path: path.to_path_buf(),
            key: b.key,
            value: b.value,
            reason: b.reason,
        })
    }

    /// The `[[hosts]]` entry of worker `name`, if it has one.
    pub fn host(&self, name: &str) -> Option<&HostConfig> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// " (line N: <that line>)" for an error's span, so the message names the key even when the
/// parser only says what was wrong with its value.
pub(crate) fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let start = span.start.min(text.len());
    let number = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(number - 1).unwrap_or("").trim();
    format!(" (line {number}: {line})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let text = include_str!("../../cluster.example.toml");
        let parsed = ClusterConfig::parse(text, Path::new("cluster.example.toml")).unwrap();
        let mut expected = ClusterConfig::default();
        expected.kinski.name = parsed.kinski.name.clone();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn the_example_defaults_parse_when_uncommented() {
        let text = include_str!("../../cluster.example.toml");
        let from = text
            .find("# [herzog.defaults]")
            .expect("the example documents [herzog.defaults]");
        let to = from + text[from..].find("\n[kinski]").expect("then [kinski]");
        let uncommented: String = text[from..to]
            .lines()
            .filter(|l| !l.starts_with("# #") && l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let parsed = ClusterConfig::parse(&uncommented, Path::new("defaults.toml")).unwrap();
        let r = parsed.herzog.defaults.requests();
        assert_eq!(
            (r.cpus, r.memory_bytes, r.time_ms),
            (Some(1), Some(2 << 30), Some(12 * 3_600_000))
        );
    }

    #[test]
    fn the_example_hosts_entry_parses_when_uncommented() {
        let text = include_str!("../../cluster.example.toml");
        let hosts = &text[text.find("# [[hosts]]").expect("the example documents [[hosts]]")..];
        let uncommented: String = hosts
            .lines()
            .filter(|l| !l.starts_with("# #") && l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let parsed = ClusterConfig::parse(&uncommented, Path::new("hosts.toml")).unwrap();
        let host = parsed.host("pythagoras").expect("the example host");
        assert!(!host.shared_fs);
        assert_eq!(host.ssh_address(), "pythagoras.example.org");
        assert_eq!(host.slots, Some(8));
        assert_eq!(host.ssh.port, Some(22));
        assert_eq!(host.ssh.user.as_deref(), Some("hzrun"));
    }

    #[test]
    fn a_host_defaults_to_the_shared_filesystem_and_bad_entries_are_named() {
        let parsed = ClusterConfig::parse("[[hosts]]\nname = \"a\"\n", Path::new("c.toml")).unwrap();
        let a = parsed.host("a").unwrap();
        assert!(a.shared_fs);
        assert_eq!(a.ssh_address(), "a");
        for (text, key) in [
            ("[[hosts]]\nname = \"a b\"\n", "hosts.name"),
            ("[[hosts]]\nname = \"a\"\n[[hosts]]\nname = \"a\"\n", "hosts.name"),
            ("[[hosts]]\nname = \"a\"\nslots = 0\n", "hosts.slots"),
            ("[[hosts]]\nname = \"a\"\nscratch_dir = \"tmp\"\n", "hosts.scratch_dir"),
            ("[[hosts]]\nname = \"a\"\n[hosts.ssh]\nkey = \"x\"\n", "key"),
        ] {
            let err = ClusterConfig::parse(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }

    #[test]
    fn addresses_need_a_host_and_a_port() {
        for good in ["127.0.0.1:7373", "coordinator:1", "[::1]:7373", "a.example.org:65535"] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        let err = check_address("127.0.0.1").unwrap_err();
        assert!(err.contains("no port") && err.contains("127.0.0.1:7373"), "{err}");
        for bad in ["", ":7373", "h:", "h:port", "h:70000", "h:0", "::1:7373", "h:7373:1"] {
            assert!(check_address(bad).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = ClusterConfig::parse("[herzog]\nlisten_adress = \"x\"\n", Path::new("c.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("listen_adress"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    proptest::proptest! {
        // The CI-sized version of fuzz/fuzz_targets/config.rs: any text gives a config or an
        // error, never a panic; keys and values come from the real vocabulary so the parser
        // gets past the syntax.
        #[test]
        fn parsing_never_panics(
            text in "(\\[(herzog|kinski|x)\\]\n)?((address|listen|state_dir|heartbeat_interval|worker_timeout|slots|name|tls|run_as|log_level|q) = (\"[a-z0-9:. ]{0,8}\"|-?[0-9]{1,3}|true|\\[\\])\n){0,6}|\\PC{0,40}"
        ) {
            let _ = ClusterConfig::parse(&text, Path::new("prop.toml"));
        }
    }

    #[test]
    fn bad_values_are_named() {
        let err = ClusterConfig::parse("[herzog]\nworker_timeout = \"1s\"\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("herzog.worker_timeout"), "{err}");
        let err = ClusterConfig::parse("[kinski]\nslots = 0\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("kinski.slots"), "{err}");
        for section in ["herzog", "kinski"] {
            let text = format!("[{section}]\nlog_retention = 0\n");
            let err = ClusterConfig::parse(&text, Path::new("c.toml")).unwrap_err();
            assert!(err.to_string().contains(&format!("{section}.log_retention")), "{err}");
        }
        let ok = ClusterConfig::parse("[kinski]\nlog_retention = 3\n", Path::new("c.toml")).unwrap();
        assert_eq!(
            (ok.kinski.log_retention, ok.herzog.log_retention),
            (3, DEFAULT_LOG_RETENTION)
        );
        let err = ClusterConfig::parse("[herzog]\nheartbeat_interval = \"soon\"\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("heartbeat_interval"), "{err}");
        let err = ClusterConfig::parse("[herzog]\nmax_log_bytes = 100\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("herzog.max_log_bytes"), "{err}");
        let ok = ClusterConfig::parse("[herzog]\nmax_log_bytes = 65536\n", Path::new("c.toml")).unwrap();
        assert_eq!(ok.herzog.max_log_bytes.as_u64(), 65536);
        let ok = ClusterConfig::parse("[herzog]\nmax_log_bytes = \"1 MiB\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(ok.herzog.max_log_bytes.as_u64(), 1 << 20);
        let ok = ClusterConfig::parse("[herzog]\nfair_half_life = \"1h\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(ok.herzog.fair_half_life, Some(Duration::from_secs(3600)));
        assert_eq!(
            ClusterConfig::parse("", Path::new("c.toml"))
                .unwrap()
                .herzog
                .fair_half_life,
            None
        );
        let err = ClusterConfig::parse("[herzog]\nfair_half_life = \"often\"\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("fair_half_life"), "{err}");
    }

    #[test]
    fn the_example_alerts_section_parses_when_uncommented() {
        let text = include_str!("../../cluster.example.toml");
        let start = text.find("# [alerts]").expect("the example documents [alerts]");
        let end = text.find("# The compute hosts").expect("hosts come after");
        let uncommented: String = text[start..end]
            .lines()
            .filter(|l| !l.starts_with("# #") && l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let parsed = ClusterConfig::parse(&uncommented, Path::new("alerts.toml")).unwrap();
        assert_eq!(parsed.alerts.email, vec!["ops@example.org".to_string()]);
        assert!(!parsed.alerts.enabled(crate::alerts::AlertKind::ProjectDone));
        assert_eq!(parsed.alerts.smtp.unwrap().port(), 587);
    }

    #[test]
    fn bad_alerts_are_named() {
        for (text, key) in [
            ("[alerts]\non = [\"service_fatl\"]\n", "service_fatl"),
            ("[alerts]\nemail = [\"ops@example.org\"]\n", "alerts.smtp"),
            ("[alerts]\nemail = [\"ops\"]\n", "alerts.email"),
            ("[alerts]\nwebhook = [\"ftp://x\"]\n", "alerts.webhook"),
            (
                "[alerts.smtp]\nhost = \"mail\"\nfrom = \"h@x\"\nuser = \"u\"\n",
                "alerts.smtp.password_file",
            ),
            ("[alerts.smtp]\nhost = \"mail\"\n", "from"),
            (
                "[alerts.smtp]\nhost = \"mail\"\nfrom = \"h@x\"\nsecurity = \"ssl\"\n",
                "ssl",
            ),
            // A password in the clear to another host.
            (
                "[alerts.smtp]\nhost = \"mail\"\nfrom = \"h@x\"\nsecurity = \"none\"\nuser = \"u\"\npassword_file = \"/p\"\n",
                "alerts.smtp.security",
            ),
        ] {
            let err = ClusterConfig::parse(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
        let ok = ClusterConfig::parse(
            "[alerts]\nemail = [\"ops@example.org\"]\non = [\"worker_lost\"]\n[alerts.smtp]\nhost = \"mail\"\nfrom = \"h@x\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(ok.alerts.enabled(crate::alerts::AlertKind::WorkerLost));
        assert!(!ok.alerts.enabled(crate::alerts::AlertKind::ProjectDone));
        assert_eq!(ok.alerts.smtp.unwrap().port(), 587);
    }
}
