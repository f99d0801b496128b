//! Services on this host: long-running programs kept up by kinski itself (a crash is
//! restarted here, without a round trip to herzog).

mod pidfile;
pub(crate) mod policy;
mod runner;
mod spawn;
pub(crate) mod stage;
mod watch;

pub use pidfile::PidDirError;
pub(crate) use pidfile::PidFiles;
pub(crate) use runner::Instances;
