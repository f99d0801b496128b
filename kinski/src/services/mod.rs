//! Services on this host: long-running programs kept up by kinski itself (a crash is
//! restarted here, without a round trip to herzog).

pub(crate) mod policy;
mod runner;
mod spawn;
mod taps;

pub(crate) use runner::Instances;
