//! A few fixed seeds, quiet and swarm, must keep every invariant and finish every project;
//! a seed run twice must run the same.

fn run(seed: u64, swarm: bool) -> sim::Summary {
    let config = sim::Config {
        seed,
        steps: 1_500,
        swarm,
        faults: None,
    };
    sim::run(&config).unwrap_or_else(|failure| panic!("{failure}"))
}

#[test]
fn quiet_seeds_finish_every_project() {
    for seed in 1..=3 {
        let summary = run(seed, false);
        assert!(summary.fragments > 0, "{summary:?}");
        assert_eq!(summary.succeeded + summary.failed, summary.fragments, "{summary:?}");
        assert_eq!(summary.restarts, 0, "{summary:?}");
    }
}

#[test]
fn swarm_seeds_keep_every_invariant() {
    let mut faults = 0;
    for seed in [1, 2, 3, 4, 5, 6, 7, 8] {
        let summary = run(seed, true);
        assert_eq!(summary.succeeded + summary.failed, summary.fragments, "{summary:?}");
        faults += usize::from(summary.faults != sim::Faults::default());
    }
    assert!(faults > 0, "no seed turned a fault on: the swarm tests nothing");
}

#[test]
fn a_seed_replays_the_same_run() {
    let (a, b) = (run(11, true), run(11, true));
    assert_eq!(a.digest, b.digest, "the same seed ran differently:\n{a:?}\n{b:?}");
    assert_eq!((a.steps, a.commits, a.attempts), (b.steps, b.commits, b.attempts));
}
