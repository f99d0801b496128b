//! The CLI's errors and exit codes: every failure is one line on stderr, `hz: <message>`.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | ok |
//! | 1    | the work failed: a fragment failed (`hz local`, `hz progress --watch`, `hz logs -f`) |
//! | 2    | bad input: usage, a missing directory, an invalid name, a program not found, a bad config, any herzog refusal except those below |
//! | 3    | herzog unreachable (a connection cut while it was set up too), or the connection to it failed mid-call; `hz tail`, `hz logs -f`: the worker holding the output unreachable; `hz shutdown WORKER`: that worker unreachable |
//! | 4    | herzog-side failure: herzog could not store a change or is shutting down; in `hz local`, a daemon failed |
//! | 130  | interrupted (Ctrl-C during `hz local`, `hz tail -f` or `hz logs -f`, or SIGTERM during `hz local`) |
//!
//! `hz run` exits with its command's status (128+N for signal N, 127 could not start, 255 no
//! status: lost or cancelled); the codes above only when hz itself failed.

use common::ApiError;
use common::config::ConfigError;
use common::transport::ConnectError;
use std::path::PathBuf;

/// The exit codes, as documented in `hz --help`.
pub mod code {
    /// Everything worked.
    pub const OK: u8 = 0;
    /// The work failed: a fragment failed.
    pub const WORK_FAILED: u8 = 1;
    /// Bad input.
    pub const BAD_INPUT: u8 = 2;
    /// herzog is unreachable or an RPC failed; or (`hz tail`) herzog cannot reach the
    /// instance's worker.
    pub const UNREACHABLE: u8 = 3;
    /// herzog failed on its side.
    pub const HERZOG_FAILED: u8 = 4;
    /// herzog refused our certificate (expired, another cluster's CA, wrong role), or we
    /// refused its.
    pub const NOT_ALLOWED: u8 = 5;
    /// Interrupted by Ctrl-C or SIGTERM.
    pub const INTERRUPTED: u8 = 130;
    /// `hz progress --watch`: a project watched was removed meanwhile.
    pub const PROJECT_REMOVED: u8 = 6;
}

/// The text appended to `hz --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    ok
  1    the work failed: a fragment failed (hz local, hz progress --watch, hz logs -f)
  2    bad input: usage, missing directory, invalid name, program not found, bad config,
       or any refusal from herzog other than those under 3 and 4
  3    herzog unreachable (also: it cut the connection while it was set up), or the
       connection to it failed during a call;
       hz tail, hz logs -f: herzog cannot reach the worker holding the output;
       hz shutdown WORKER: herzog cannot reach that worker
  4    herzog-side failure: it could not store a change or is shutting down
       (in hz local: herzog or kinski failed)
  5    not allowed: herzog refused your certificate (expired, from another cluster's CA,
       or not an admin certificate), or its certificate is not this cluster's
  6    hz progress --watch: a project watched was removed meanwhile
  130  interrupted (Ctrl-C during hz local, hz tail -f or hz logs -f, or SIGTERM during hz local)
hz run exits with its command's own status instead (128+N for signal N, 127 when it could not
start, 255 when it ended without one: its worker was lost, or it was cancelled); the codes
above only when hz itself failed.";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A value the user gave cannot be used.
    #[error("{0}")]
    Usage(String),
    /// The input directory is missing or unreadable.
    #[error("directory {} cannot be used: {source}; give an existing directory", dir.display())]
    Directory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The input path exists but is not a directory.
    #[error("{} is not a directory: give the directory that holds the input files", dir.display())]
    NotADirectory { dir: PathBuf },
    /// The current directory cannot be read.
    #[error("failed to read the current directory: {0}")]
    Cwd(#[source] std::io::Error),
    /// The `--config` file cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// herzog (or a local check that mirrors herzog's) refused the request.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// herzog cannot be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// No certificate to talk to herzog with.
    #[error(
        "no certificate: give your admin bundle with --tls or HERZOG_TLS (or put it at ~/.config/herzog/admin.pem); `herzog certs issue NAME --role admin` makes one"
    )]
    NoCertificate,
    /// The certificate could not be used.
    #[error(transparent)]
    Tls(#[from] common::tls::TlsError),
    /// A call to herzog failed on the way.
    #[error("the call to herzog at {addr} failed while {what}: {source}; is herzog still running?")]
    Rpc {
        addr: String,
        what: &'static str,
        #[source]
        source: tarpc::client::RpcError,
    },
    /// herzog answered something that makes no sense (a page that does not advance).
    #[error("herzog at {addr} answered nonsense while {what}: {detail}")]
    Protocol {
        addr: String,
        what: &'static str,
        detail: String,
    },
    /// `hz local`'s state directory cannot be used.
    #[error("state directory {} cannot be used: {source}; give another with --state-dir", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `hz local`'s state directory holds a different project of the same name.
    #[error(
        "state directory {} already holds a project '{name}' with {what}: give another --state-dir or --name, or delete that directory",
        state_dir.display()
    )]
    LocalConflict {
        state_dir: PathBuf,
        name: String,
        what: String,
    },
    /// `hz local --joblog FILE` cannot be written.
    #[error("failed to write the job log {}: {source}; give a writable --joblog path", path.display())]
    Joblog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One of `hz local`'s daemons failed.
    #[error("{which} failed: {message}")]
    Daemon { which: &'static str, message: String },
    /// Writing the output failed.
    #[error("failed to write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::Directory { .. }
            | CliError::NotADirectory { .. }
            | CliError::Cwd(_)
            | CliError::Config(_)
            | CliError::StateDir { .. }
            | CliError::Joblog { .. }
            | CliError::LocalConflict { .. }
            | CliError::NoCertificate
            | CliError::Tls(_) => code::BAD_INPUT,
            CliError::Connect(ConnectError::Tls { .. } | ConnectError::Refused { .. }) => code::NOT_ALLOWED,
            CliError::Api(e) => api_exit_code(e),
            CliError::Connect(_) | CliError::Rpc { .. } | CliError::Protocol { .. } => code::UNREACHABLE,
            CliError::Daemon { .. } => code::HERZOG_FAILED,
            // Nobody reads a closed pipe's exit code; anything else is this machine's problem.
            CliError::Output(_) => code::WORK_FAILED,
        }
    }

    /// True when the reader went away (`hz fragments p | head`): exit quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// herzog's refusals are bad input, except when herzog itself is in trouble.
pub fn api_exit_code(e: &ApiError) -> u8 {
    match e {
        ApiError::Storage { .. } | ApiError::ShuttingDown | ApiError::PurgeFailed { .. } => code::HERZOG_FAILED,
        ApiError::HostUnreachable { .. } | ApiError::WorkerUnreachable { .. } => code::UNREACHABLE,
        _ => code::BAD_INPUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_map_to_bad_input_or_herzog_failed() {
        let bad = CliError::Api(ApiError::UnknownProject { name: "x".into() });
        assert_eq!(bad.exit_code(), 2);
        assert_eq!(CliError::Api(ApiError::ShuttingDown).exit_code(), 4);
        assert_eq!(
            CliError::Api(ApiError::Storage { reason: "disk".into() }).exit_code(),
            4
        );
        let host = CliError::Api(ApiError::HostUnreachable {
            instance: "web:0".into(),
            worker: "euclid".into(),
            reason: "it is not connected".into(),
        });
        assert_eq!(host.exit_code(), 3);
        let unreachable = CliError::Connect(ConnectError::Timeout { addr: "h:1".into() });
        assert_eq!(unreachable.exit_code(), 3);
        // A herzog dying mid-handshake cuts the connection: unreachable, not a refusal.
        for kind in [std::io::ErrorKind::ConnectionReset, std::io::ErrorKind::UnexpectedEof] {
            let cut = common::transport::handshake_error("h:1", std::io::Error::from(kind));
            assert_eq!(CliError::Connect(cut).exit_code(), 3, "{kind:?}");
        }
        let refused = CliError::Connect(ConnectError::Tls {
            addr: "h:1".into(),
            reason: "herzog refused our certificate".into(),
        });
        assert_eq!(refused.exit_code(), 5);
        let rpc = CliError::Rpc {
            addr: "h:1".into(),
            what: "listing projects",
            source: tarpc::client::RpcError::Shutdown,
        };
        assert_eq!(rpc.exit_code(), 3);
        assert!(rpc.to_string().contains("h:1"), "{rpc}");
    }

    #[test]
    fn broken_pipes_are_recognised() {
        let e = CliError::Output(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(e.is_broken_pipe());
        assert!(!CliError::Usage("x".into()).is_broken_pipe());
    }
}
