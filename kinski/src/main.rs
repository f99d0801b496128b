//! The kinski binary: parse arguments, build the config, call `kinski::run`.

use clap::Parser;
use common::config::ClusterConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// kinski, the worker daemon of a herzog cluster: one per compute host.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad configuration or arguments."
)]
struct Args {
    /// The cluster config file (cluster.example.toml documents every key).
    #[arg(long, env = "HERZOG_CONFIG")]
    config: Option<PathBuf>,
    /// herzog's address, host:port (overrides herzog.address).
    #[arg(long, env = "HERZOG_ADDR")]
    herzog: Option<String>,
    /// This worker's name (overrides kinski.name; default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Attempts run at once (overrides kinski.slots; default: available parallelism).
    #[arg(long)]
    slots: Option<u32>,
    /// State directory: logs (overrides kinski.state_dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log filter (overrides kinski.log_level).
    #[arg(long)]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cluster = match &args.config {
        Some(path) => match ClusterConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("kinski: {e}");
                return ExitCode::from(2);
            }
        },
        None => ClusterConfig::default(),
    };
    let k = cluster.kinski;
    if args.slots == Some(0) {
        eprintln!("kinski: --slots must be at least 1");
        return ExitCode::from(2);
    }
    let name = args.name.or(k.name).unwrap_or_else(kinski::default_name);
    if let Err(e) = common::name::check_name(&name) {
        eprintln!("kinski: bad worker name: {e}; set --name or kinski.name");
        return ExitCode::from(2);
    }
    let state_dir = args.state_dir.unwrap_or(k.state_dir);
    let log_level = args.log_level.unwrap_or(k.log_level);
    let _guard = match common::logging::init(&state_dir, "kinski", &log_level, true) {
        Ok(g) => g,
        Err(e) => {
            eprintln!(
                "kinski: failed to open the log directory under {}: {e}",
                state_dir.display()
            );
            return ExitCode::from(2);
        }
    };
    let config = kinski::Config {
        herzog: args.herzog.unwrap_or(cluster.herzog.address),
        name,
        slots: args.slots.or(k.slots).unwrap_or_else(kinski::default_slots),
        state_dir,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kinski: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kinski::run(config, common::logging::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kinski: {e}");
            ExitCode::FAILURE
        }
    }
}
