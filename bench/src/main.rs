//! herzog's benchmarks (issue 6). Every figure is a ratio against a baseline measured in the
//! same run: the one-host workloads against `xargs -P2 -n1` on the same files, interleaved;
//! the coordinator scale figures against the targets. See BENCHMARKS.md.
//!
//! `cargo run --release -p bench -- <noop|sleep|cpu|scale|smoke|all> [options]`

mod scale;
mod sim;
mod util;
mod workloads;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;
use workloads::Kind;

/// herzog's benchmark suite.
#[derive(Debug, Parser)]
#[command(name = "bench", max_term_width = 100)]
struct Cli {
    /// Scratch space: inputs (kept and reused), state directories (removed after each run)
    #[arg(long, global = true, env = "HERZOG_BENCH_DIR", value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Do not build hz and herzog first (by default they are built when run by `cargo run`)
    #[arg(long, global = true)]
    no_build: bool,
    #[command(subcommand)]
    command: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// 5,000 × /bin/true: pure per-fragment overhead (target ≤ 1.3x xargs -P2)
    Noop(WorkloadArgs),
    /// 400 × a shell script sleeping 50 ms: ideal 10 s (target ≤ 1.01x xargs -P2)
    Sleep(WorkloadArgs),
    /// 64 × gzip -9 of 2 MB (target ≤ 1.01x xargs -P2)
    Cpu(WorkloadArgs),
    /// noop, sleep and cpu, one after the other
    Workloads(WorkloadArgs),
    /// The coordinator against many simulated workers over real tarpc connections
    Scale(ScaleArgs),
    /// Every benchmark at tiny sizes, one repetition: proves they run (for CI; not timed)
    Smoke,
    /// noop, sleep and cpu at their default sizes, then scale (one run, or the sweep)
    All {
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Also run the scale sweep
        #[arg(long)]
        sweep: bool,
        /// Skip sweep runs with more fragments than this
        #[arg(long, default_value_t = 1_000_000)]
        sweep_max_fragments: usize,
    },
}

#[derive(Debug, Args, Clone)]
struct WorkloadArgs {
    /// Number of input files [default: noop 5000, sleep 400, cpu 64]
    #[arg(long)]
    files: Option<usize>,
    /// Recorded repetitions of each side, interleaved (baseline, herzog, baseline, ...)
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Unrecorded repetitions of each side first
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Slots (herzog) and parallelism (xargs -P)
    #[arg(long, default_value_t = 2)]
    slots: u32,
    /// sleep: how long each job sleeps, in milliseconds
    #[arg(long, default_value_t = 50)]
    sleep_ms: u64,
    /// cpu: the size of each input file, in bytes
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    file_bytes: usize,
    /// Tiny sizes and one repetition without warm-up
    #[arg(long)]
    smoke: bool,
    /// An argument for `hz local` (repeatable), e.g. `--hz-arg=--mem --hz-arg=1G` for a
    /// cgroup per attempt
    #[arg(long = "hz-arg", value_name = "ARG", allow_hyphen_values = true)]
    hz_args: Vec<String>,
}

#[derive(Debug, Args, Clone)]
struct ScaleArgs {
    /// Simulated workers (each dials herzog twice, as kinski does)
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Slots per simulated worker
    #[arg(long, default_value_t = 8)]
    slots: u32,
    /// Queue per simulated worker (attempts accepted beyond the slots; kinski uses its slots)
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// Fragments in the project (empty files, created once and reused)
    #[arg(long, default_value_t = 1_000_000)]
    fragments: usize,
    /// Do not kill and restart herzog half way
    #[arg(long)]
    no_restart: bool,
    /// Milliseconds a worker waits before dialing again after losing herzog (plus as much jitter)
    #[arg(long, default_value_t = 50)]
    retry_ms: u64,
    /// herzog's --log-level [default: herzog's own, info]
    #[arg(long)]
    herzog_log_level: Option<String>,
    /// Append herzog's stderr to this file [default: /dev/null; its log file is kept anyway]
    #[arg(long)]
    herzog_stderr: Option<PathBuf>,
    /// An environment variable for herzog, KEY=VALUE (repeatable; e.g. MALLOC_ARENA_MAX=2)
    #[arg(long, value_parser = parse_env)]
    herzog_env: Vec<(String, String)>,
    /// The longest one run may take, in seconds
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// Keep herzog's state directory
    #[arg(long)]
    keep: bool,
    /// Report how the figures grow: 10k → 100k → 1M fragments (1,000 workers), and 10 → 100
    /// → 1,000 workers (100k fragments)
    #[arg(long)]
    sweep: bool,
    /// Sweep: skip runs with more fragments than this
    #[arg(long, default_value_t = 1_000_000)]
    sweep_max_fragments: usize,
    /// Tiny sizes (for CI)
    #[arg(long)]
    smoke: bool,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

fn work_dir(cli: &Cli) -> PathBuf {
    cli.work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("herzog-bench"))
}

fn workload_options(kind: Kind, a: &WorkloadArgs, work: &Path) -> workloads::Options {
    let default_files = match (kind, a.smoke) {
        (Kind::Noop, false) => 5000,
        (Kind::Sleep, false) => 400,
        (Kind::Cpu, false) => 64,
        (Kind::Noop, true) => 50,
        (Kind::Sleep, true) => 8,
        (Kind::Cpu, true) => 4,
    };
    workloads::Options {
        files: a.files.unwrap_or(default_files),
        reps: if a.smoke { 1 } else { a.reps.max(1) },
        warmup: if a.smoke { 0 } else { a.warmup },
        sleep_ms: a.sleep_ms,
        file_bytes: if a.smoke { 64 * 1024 } else { a.file_bytes },
        work: work.to_path_buf(),
        slots: a.slots,
        hz_args: a.hz_args.clone(),
    }
}

fn scale_options(a: &ScaleArgs, work: &Path) -> scale::Options {
    scale::Options {
        workers: if a.smoke { 4 } else { a.workers },
        slots: if a.smoke { 2 } else { a.slots },
        queue: a.queue,
        fragments: if a.smoke { 200 } else { a.fragments },
        restart: !a.no_restart,
        retry: Duration::from_millis(a.retry_ms),
        log_level: a.herzog_log_level.clone(),
        herzog_stderr: a.herzog_stderr.clone(),
        herzog_env: a.herzog_env.clone(),
        work: work.to_path_buf(),
        timeout: Duration::from_secs(if a.smoke { 120 } else { a.timeout }),
        keep: a.keep,
    }
}

fn header(work: &Path) {
    println!("# herzog benchmarks");
    println!();
    println!("- machine: {}", util::machine());
    println!(
        "- date: {}",
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    if let Some(fs) = util::ext4_without_journal(work) {
        println!(
            "- note: the scratch space is on an ext4 without a journal ({fs}): creating files there is \
             10-16x slower for minutes after many deletions nearby, so the runs' directories are removed \
             only at the end"
        );
    }
    if util::is_debug_build() {
        println!("- WARNING: a debug build of bench (and so of hz and herzog): timings mean nothing");
    }
    println!();
}

fn run_workloads(kinds: &[Kind], a: &WorkloadArgs, work: &Path) -> Result<Vec<workloads::Outcome>> {
    let mut outcomes = Vec::new();
    for &kind in kinds {
        let o = workload_options(kind, a, work);
        outcomes.push(workloads::run(kind, &o)?);
    }
    println!("## one host, 2 slots: hz local against xargs -P2 -n1, interleaved");
    println!();
    print!("{}", workloads::table(&outcomes));
    println!();
    for o in &outcomes {
        println!("- {}: `{}` vs `{}`", o.kind.name(), o.command, o.baseline_command);
        let list = |v: &[Duration]| {
            v.iter()
                .map(|d| format!("{:.3}", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  - xargs [{}] s; hz local [{}] s; hz's own summary [{}] s; to the last completion recorded [{}] s",
            list(&o.baseline),
            list(&o.herzog),
            list(&o.reported),
            list(&o.recorded)
        );
    }
    println!();
    Ok(outcomes)
}

fn print_scale(outcome: &scale::Outcome) {
    println!("### coordinator scale: real herzog, simulated workers");
    println!();
    print!("{}", scale::table(outcome));
    println!();
    let series: Vec<String> = outcome
        .samples
        .windows(2)
        .map(|w| {
            let rate = w[1].acks.saturating_sub(w[0].acks) as f64 / (w[1].t - w[0].t).as_secs_f64();
            format!("{rate:.0}")
        })
        .collect();
    println!("completions per second, sampled every second: {}", series.join(" "));
    println!();
}

fn run_scale(a: &ScaleArgs, work: &Path) -> Result<()> {
    let o = scale_options(a, work);
    println!("## coordinator scale");
    println!();
    if a.sweep && !a.smoke {
        let mut runs: Vec<(usize, usize)> = vec![
            (10_000, 1000),
            (100_000, 1000),
            (1_000_000, 1000),
            (100_000, 10),
            (100_000, 100),
        ];
        runs.retain(|(f, _)| *f <= a.sweep_max_fragments);
        let mut outcomes = Vec::new();
        for (fragments, workers) in runs {
            eprintln!("bench: sweep: {fragments} fragments, {workers} workers");
            let mut ox = o.clone();
            ox.fragments = fragments;
            ox.workers = workers;
            match scale::run(&ox) {
                Ok(outcome) => {
                    print_scale(&outcome);
                    outcomes.push(outcome);
                }
                Err(e) => {
                    eprintln!("bench: sweep: {fragments} fragments, {workers} workers failed: {e:#}");
                    println!("### {fragments} fragments, {workers} workers: FAILED: {e:#}");
                    println!();
                }
            }
        }
        println!("### how the figures grow ({} slots per worker)", o.slots);
        println!();
        print!("{}", scale::sweep_table(&outcomes));
        println!();
        return Ok(());
    }
    print_scale(&scale::run(&o)?);
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let work = work_dir(&cli);
    std::fs::create_dir_all(&work)?;
    if !cli.no_build {
        util::build_binaries()?;
    }
    header(&work);
    let result = run(&cli, &work);
    util::remove_deferred();
    result
}

fn run(cli: &Cli, work: &Path) -> Result<()> {
    let work = work.to_path_buf();
    match &cli.command {
        Workload::Noop(a) => {
            run_workloads(&[Kind::Noop], a, &work)?;
        }
        Workload::Sleep(a) => {
            run_workloads(&[Kind::Sleep], a, &work)?;
        }
        Workload::Cpu(a) => {
            run_workloads(&[Kind::Cpu], a, &work)?;
        }
        Workload::Workloads(a) => {
            run_workloads(&[Kind::Noop, Kind::Sleep, Kind::Cpu], a, &work)?;
        }
        Workload::Scale(a) => run_scale(a, &work)?,
        Workload::Smoke => {
            let began = std::time::Instant::now();
            let a = WorkloadArgs {
                files: None,
                reps: 1,
                warmup: 0,
                slots: 2,
                sleep_ms: 50,
                file_bytes: 64 * 1024,
                smoke: true,
                hz_args: Vec::new(),
            };
            run_workloads(&[Kind::Noop, Kind::Sleep, Kind::Cpu], &a, &work)?;
            let s = ScaleArgs::parse_smoke();
            run_scale(&s, &work)?;
            println!(
                "smoke: every benchmark ran, in {:.1} s (not a timed check)",
                began.elapsed().as_secs_f64()
            );
        }
        Workload::All {
            workload,
            sweep,
            sweep_max_fragments,
        } => {
            run_workloads(&[Kind::Noop, Kind::Sleep, Kind::Cpu], workload, &work)?;
            let mut s = ScaleArgs::parse_default();
            s.sweep = *sweep;
            s.sweep_max_fragments = *sweep_max_fragments;
            run_scale(&s, &work)?;
        }
    }
    Ok(())
}

impl ScaleArgs {
    /// The defaults, as the command line would give them.
    fn parse_default() -> ScaleArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            scale: ScaleArgs,
        }
        Only::parse_from(["scale"]).scale
    }

    fn parse_smoke() -> ScaleArgs {
        ScaleArgs {
            smoke: true,
            ..ScaleArgs::parse_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        assert_eq!(ScaleArgs::parse_default().workers, 1000);
        assert!(ScaleArgs::parse_smoke().smoke);
    }
}
