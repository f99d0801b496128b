//! The herzog binary: parse arguments, build the config, call `herzog::run`.

use clap::Parser;
use common::config::ClusterConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// herzog, the coordinator of a herzog cluster.
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
    /// Address to listen on (overrides herzog.listen). Loopback by default: until mTLS lands,
    /// whoever reaches this port can run programs on every worker.
    #[arg(long)]
    listen: Option<String>,
    /// State directory: database, logs, results (overrides herzog.state_dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log filter, e.g. info or herzog=debug (overrides herzog.log_level).
    #[arg(long)]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cluster = match &args.config {
        Some(path) => match ClusterConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("herzog: {e}");
                return ExitCode::from(2);
            }
        },
        None => ClusterConfig::default(),
    };
    let h = cluster.herzog;
    let listen = args.listen.unwrap_or_else(|| h.listen_address().to_string());
    let state_dir = args.state_dir.unwrap_or(h.state_dir);
    let log_level = args.log_level.unwrap_or(h.log_level);
    let _guard = match common::logging::init(&state_dir, "herzog", &log_level, true) {
        Ok(g) => g,
        Err(e) => {
            eprintln!(
                "herzog: failed to open the log directory under {}: {e}",
                state_dir.display()
            );
            return ExitCode::from(2);
        }
    };
    let config = herzog::Config {
        state_dir,
        heartbeat_interval: h.heartbeat_interval,
        worker_timeout: h.worker_timeout,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herzog: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
            anyhow::anyhow!(
                "failed to listen on {listen}: {e}; is another herzog running there? choose another with --listen"
            )
        })?;
        herzog::run(config, listener, common::logging::shutdown_signal())
            .await
            .map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "herzog stopped");
            eprintln!("herzog: {e:#}");
            ExitCode::FAILURE
        }
    }
}
