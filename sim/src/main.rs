//! `sim`: runs herzog's deterministic simulation for one seed, or for many.

use clap::Parser;
use std::time::Instant;

/// Runs herzog's real loop core, machine, scheduler and store against simulated workers,
/// network and clock, every choice drawn from the seed; checks every invariant after every
/// step. A failing seed prints the command that replays it.
#[derive(Parser, Debug)]
#[command(name = "sim")]
struct Args {
    /// The seed to run (the first of `--seeds`).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Steps with faults (if any), before the quiet steps in which every project must
    /// finish; the steps reported count both.
    #[arg(long, default_value_t = 2_000)]
    steps: u64,
    /// Let each seed turn a random subset of the faults on, at odds it picks (swarm
    /// testing). Without `--swarm` or `--faults` no fault strikes: a quiet run.
    #[arg(long)]
    swarm: bool,
    /// How many seeds to run, from `--seed` on.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// These faults and odds instead of the ones the seed would pick:
    /// `drop=0.05,delay=0.1`, or `none`. The world (workers, projects) is still the seed's,
    /// and `--swarm` still changes the draws: replay a line as it is printed.
    #[arg(long)]
    faults: Option<sim::Faults>,
    /// On a failure, shrink it (fewer steps with faults, fewer kinds of fault, the same
    /// failure) and print the smaller run's replay command and trace too.
    #[arg(long)]
    shrink: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let Some(last) = args.seed.checked_add(args.seeds - 1) else {
        eprintln!(
            "sim: --seed {} with --seeds {} runs past the largest seed ({}); start lower or run fewer",
            args.seed,
            args.seeds,
            u64::MAX
        );
        return std::process::ExitCode::from(2);
    };
    let began = Instant::now();
    let (mut steps, mut sim_ms) = (0u64, 0i64);
    for seed in args.seed..=last {
        let config = sim::Config {
            seed,
            steps: args.steps,
            swarm: args.swarm,
            faults: args.faults.clone(),
        };
        match sim::run(&config) {
            Ok(summary) => {
                steps += summary.steps;
                sim_ms += summary.sim_ms;
                if args.seeds == 1 {
                    println!("{summary:#?}");
                }
            }
            Err(failure) => {
                eprintln!("{failure}");
                if args.shrink {
                    let (step, steps) = (failure.step, config.steps);
                    let shrunk = sim::shrink(&config, failure);
                    eprintln!(
                        "\nshrunk in {} runs: failing at step {} with {} steps of faults (was step {step} with {steps}), faults {}:\n{}",
                        shrunk.runs,
                        shrunk.failure.step,
                        shrunk.config.steps,
                        shrunk.config.faults(),
                        shrunk.failure
                    );
                }
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{} seed(s) passed: {steps} steps (the quiet ones included), {:.1} simulated hours, in {secs:.2} s ({:.0} steps/s)",
        args.seeds,
        sim_ms as f64 / 3_600_000.0,
        steps as f64 / secs.max(1e-9)
    );
    std::process::ExitCode::SUCCESS
}
