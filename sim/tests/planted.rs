//! The simulator finds a known bug planted in herzog (`--features planted-bugs`):
//! `cargo test -p sim --features planted-bugs --test planted -- --nocapture`.
#![cfg(feature = "planted-bugs")]

/// Replies and effects released before their batch's commit: found at once, with or
/// without faults, by the check that each start's attempt is in the store as it is released.
#[test]
fn release_before_commit_is_found() {
    for swarm in [false, true] {
        let config = sim::Config {
            seed: 1,
            steps: 1_000,
            swarm,
        };
        let failure = sim::run_planted(&config, sim::Plant::ReleaseBeforeCommit)
            .expect_err("the simulator missed a release before the commit");
        eprintln!("found at step {}: {}", failure.step, failure.what);
        assert!(failure.what.contains("before"), "{failure}");
        assert!(failure.replay.contains("--seed 1"), "{failure}");
    }
}
