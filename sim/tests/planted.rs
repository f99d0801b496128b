//! The simulator finds each known bug planted in herzog (`--features planted-bugs`), and says
//! with which seed and after how many steps:
//! `cargo test --release -p sim --features planted-bugs --test planted -- --nocapture`.
#![cfg(feature = "planted-bugs")]

use sim::{Config, Failure, Plant};

/// Runs swarm seeds from 1 on until one finds `plant`; panics if `seeds` of them miss it.
fn find(plant: Plant, seeds: u64) -> (Config, Failure) {
    for seed in 1..=seeds {
        let config = Config {
            seed,
            steps: 3_000,
            swarm: true,
            faults: None,
        };
        if let Err(failure) = sim::run_planted(&config, plant) {
            eprintln!(
                "{plant:?}: found by seed {seed} at step {}: {}",
                failure.step, failure.what
            );
            assert!(failure.replay.contains(&format!("--seed {seed}")), "{failure}");
            return (config, failure);
        }
    }
    panic!("{seeds} seeds missed the planted bug {plant:?}");
}

/// Replies and effects released before their batch's commit: found at once, with or
/// without faults, by the check that each start's attempt is in the store as it is released.
#[test]
fn release_before_commit_is_found() {
    let quiet = Config {
        seed: 1,
        steps: 1_000,
        swarm: false,
        faults: None,
    };
    let failure = sim::run_planted(&quiet, Plant::ReleaseBeforeCommit)
        .expect_err("the simulator missed a release before the commit");
    assert!(failure.what.contains("before"), "{failure}");
    let (_, failure) = find(Plant::ReleaseBeforeCommit, 1);
    assert!(failure.what.contains("before"), "{failure}");
}

/// A late or repeated completion taken as its fragment's current attempt: found by the
/// check that every attempt the store records as ended ran to that end.
#[test]
fn completion_without_fencing_is_found() {
    let (config, failure) = find(Plant::CompletionUnfenced, 50);
    assert!(failure.what.contains("no worker ran"), "{failure}");
    // Shrunk: fewer steps, no more faults, the same failure; and its replay fails so too.
    let step = failure.step;
    let shrunk = sim::shrink_planted(&config, failure, Plant::CompletionUnfenced);
    eprintln!(
        "shrunk in {} runs: step {step} -> {}, {} steps of faults -> {}, faults {} -> {}\n{}",
        shrunk.runs,
        shrunk.failure.step,
        config.steps,
        shrunk.config.steps,
        config.faults(),
        shrunk.config.faults(),
        shrunk.failure
    );
    assert!(shrunk.failure.what.contains("no worker ran"), "{}", shrunk.failure);
    assert!(shrunk.failure.step <= step && shrunk.config.steps <= config.steps);
    let fewer = |c: &Config| c.faults().rates().into_iter().filter(|(_, r)| **r > 0.0).count();
    assert!(fewer(&shrunk.config) <= fewer(&config));
    assert!(shrunk.failure.replay.contains("--faults"), "{}", shrunk.failure.replay);
    let again = sim::run_planted(&shrunk.config, Plant::CompletionUnfenced).expect_err("the shrunk run fails");
    assert_eq!((again.step, again.what), (shrunk.failure.step, shrunk.failure.what));
}

/// A fragment started again under its last attempt's id: the store refuses the second row
/// of the same id, and the simulator reports the failed commit.
#[test]
fn requeue_without_a_new_attempt_is_found() {
    let (_, failure) = find(Plant::RequeueSameAttempt, 50);
    assert!(
        failure.what.contains("attempts.id") || failure.what.contains("reused"),
        "{failure}"
    );
}
