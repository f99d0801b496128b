//! A deterministic simulation of herzog: its real loop core, machine, scheduler and store
//! (SQLite in a temp file), driven in one thread by simulated workers, network and clock,
//! every choice drawn from one seed. Invariants are checked after every step against the
//! machine and the store; a failing seed prints the command that replays it and the last
//! events.

mod check;
mod faults;
mod shrink;
mod world;

pub use faults::{BadFaults, Faults};
#[cfg(feature = "planted-bugs")]
pub use shrink::shrink_planted;
pub use shrink::{Shrunk, shrink};
pub use world::Config;

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub seed: u64,
    /// Steps run, the quiet ones after the faults included.
    pub steps: u64,
    /// Simulated time covered, in milliseconds.
    pub sim_ms: i64,
    /// Batches herzog applied and committed.
    pub commits: u64,
    /// Times herzog was restarted from its store (crashes, full disks).
    pub restarts: u64,
    /// Attempts started on simulated workers.
    pub attempts: usize,
    pub fragments: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Why fragments failed, with how many for each reason (the first few).
    pub failures: Vec<String>,
    /// The odds that a program exits non-zero.
    pub fail_rate: f64,
    /// A hash of every event of the run: the same seed must give the same.
    pub digest: u64,
    /// The faults the run struck with: the seed's, or those `--faults` gave.
    pub faults: Faults,
}

/// An invariant that broke (or herzog failing where it must not), with how to replay it.
#[derive(Debug, thiserror::Error)]
#[error("seed {seed} failed at step {step}: {what}\nreplay: {replay}\nlast events:\n{trace}")]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub what: String,
    /// The one-line command that runs the same seed again.
    pub replay: String,
    /// The last events before the failure, oldest first.
    pub trace: String,
}

/// Runs one seed.
pub fn run(config: &Config) -> Result<Summary, Failure> {
    world::World::new(config.clone())?.run()
}

#[cfg(feature = "planted-bugs")]
pub use herzog::sim_api::Plant;

/// Runs one seed against a herzog with a known bug planted.
#[cfg(feature = "planted-bugs")]
pub fn run_planted(config: &Config, plant: Plant) -> Result<Summary, Failure> {
    let mut world = world::World::new(config.clone())?;
    world.plant(plant);
    world.run()
}
