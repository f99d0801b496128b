//! The herzog binary: parse arguments, build the config, call `herzog::run`; or make the
//! cluster's certificates (`herzog certs`).

use clap::{CommandFactory, Parser, Subcommand};
use common::config::ClusterConfig;
use common::tls::{Authority, Identity, Pki, Role};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, not glibc's malloc: herzog frees on one thread what another allocated (a start
/// is built in the loop and sent by a connection's task), and glibc's per-thread arenas kept
/// the difference: 280 MB against jemalloc's 260 MB at 1,000 workers and 1,000,000
/// fragments, and 15% more CPU per fragment (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// herzog, the coordinator of a herzog cluster.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad configuration or arguments."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The cluster config file (cluster.example.toml documents every key).
    #[arg(long, env = "HERZOG_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides herzog.listen).
    #[arg(long)]
    listen: Option<String>,
    /// State directory: database, logs, results (overrides herzog.state_dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log filter, e.g. info or herzog=debug (overrides herzog.log_level).
    #[arg(long)]
    log_level: Option<String>,
    /// Daily log files kept in STATE_DIR/logs, older ones removed (overrides
    /// herzog.log_retention; default 14).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    log_retention: Option<u32>,
    /// herzog's certificate bundle (overrides herzog.tls); made by `herzog certs init`. Not
    /// HERZOG_TLS: that is hz's admin bundle, and a shell that exports it for hz must not hand
    /// it to herzog.
    #[arg(long, env = "HERZOG_SERVER_TLS")]
    tls: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make and hand out the cluster's certificates.
    #[command(subcommand)]
    Certs(Certs),
    /// Print herzog's man page (roff): `herzog man | man -l -`, or save it as herzog.1.
    Man,
}

#[derive(Subcommand, Debug)]
enum Certs {
    /// Create the cluster's CA (DIR/ca.pem, DIR/ca.key), herzog's bundle (DIR/herzog.pem) and a
    /// first admin bundle (DIR/admin.pem). DIR is made with mode 0700; ca.pem is 0644, the
    /// others 0600. None of these files is ever written again.
    Init {
        /// Where the files go; keep ca.key there and nowhere else.
        #[arg(long)]
        dir: PathBuf,
        /// Days the CA and the two bundles are valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Issue a bundle for a worker host or a user: DIR/NAME.pem (mode 0600), the one file to
    /// copy to it. The names of init's files (ca, herzog, admin) are refused.
    Issue {
        /// The worker's name (as kinski --name) or the user's.
        name: String,
        /// worker (kinski) or admin (hz).
        #[arg(long)]
        role: String,
        /// The directory holding ca.pem and ca.key.
        #[arg(long)]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace DIR/NAME.pem if it exists (to renew a bundle); never the CA's files.
        #[arg(long)]
        force: bool,
    },
}

fn certs(command: Certs) -> Result<String, String> {
    match command {
        Certs::Init { dir, days } => {
            let pki = Pki::create(&dir).map_err(|e| e.to_string())?;
            let ca = Authority::generate(days).map_err(|e| e.to_string())?;
            pki.save_authority(&ca).map_err(|e| e.to_string())?;
            for (name, role, file) in [
                ("herzog", Role::Coordinator, "herzog.pem"),
                ("admin", Role::Admin, "admin.pem"),
            ] {
                let bundle = ca.issue(name, role, i64::from(days)).map_err(|e| e.to_string())?;
                pki.save_init_bundle(file, &bundle).map_err(|e| e.to_string())?;
            }
            Ok(format!(
                "created the cluster CA in {d}: run herzog with --tls {d}/herzog.pem, hz with --tls {d}/admin.pem; \
                 give each worker its own bundle from `herzog certs issue NAME --role worker --dir {d}`",
                d = dir.display()
            ))
        }
        Certs::Issue {
            name,
            role,
            dir,
            days,
            force,
        } => {
            let role: Role = role.parse().map_err(|e: common::tls::TlsError| e.to_string())?;
            if role == Role::Coordinator {
                return Err("herzog's own bundle comes from `herzog certs init`; issue admin or worker".into());
            }
            common::name::check_name(&name).map_err(|e| e.to_string())?;
            let pki = Pki::open(&dir).map_err(|e| e.to_string())?;
            let ca = pki.authority().map_err(|e| e.to_string())?;
            let bundle = ca.issue(&name, role, i64::from(days)).map_err(|e| e.to_string())?;
            let path = pki.save_bundle(&name, &bundle, force).map_err(|e| e.to_string())?;
            Ok(format!(
                "issued {path} for {role} '{name}', valid {valid}",
                path = path.display(),
                valid = common::count(days, "day")
            ))
        }
    }
}

/// Writes `command`'s man page to stdout.
fn print_man(command: clap::Command) -> ExitCode {
    match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herzog: failed to write the man page: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    common::logging::abort_on_panic();
    let args = Args::parse();
    if let Some(Command::Man) = args.command {
        return print_man(Args::command());
    }
    if let Some(Command::Certs(command)) = args.command {
        return match certs(command) {
            Ok(done) => {
                eprintln!("herzog: {done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("herzog: {e}");
                ExitCode::from(2)
            }
        };
    }
    let cluster = match ClusterConfig::load_or_default(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herzog: {e}");
            return ExitCode::from(2);
        }
    };
    let hosts = cluster.hosts;
    let h = cluster.herzog;
    let mut alerts = cluster.alerts;
    // The cluster's name in messages: the address its users dial.
    alerts.name.get_or_insert_with(|| h.address.clone());
    if let Err(e) = herzog::check_alerts(&alerts) {
        eprintln!("herzog: {e}");
        return ExitCode::from(2);
    }
    let services = h.services_file(args.config.as_deref());
    let Some(tls) = args.tls.or(h.tls.clone()) else {
        eprintln!(
            "herzog: no certificate: every connection is mutual TLS. Run `herzog certs init --dir DIR` once, then \
             give --tls DIR/herzog.pem (or herzog.tls in the config)"
        );
        return ExitCode::from(2);
    };
    // Everything that can be checked is checked before anything is made on disk.
    let identity = match Identity::load(&tls) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("herzog: {e}");
            return ExitCode::from(2);
        }
    };
    if identity.role != Role::Coordinator {
        eprintln!(
            "herzog: {} is {} certificate for '{}', not herzog's own: give herzog the herzog.pem that \
             `herzog certs init` made (--tls, HERZOG_SERVER_TLS or herzog.tls; HERZOG_TLS is hz's)",
            tls.display(),
            identity.role.with_article(),
            identity.name
        );
        return ExitCode::from(2);
    }
    if let Err(e) = identity.server_config() {
        eprintln!("herzog: {}: {e}", tls.display());
        return ExitCode::from(2);
    }
    let listen = args.listen.unwrap_or_else(|| h.listen_address().to_string());
    let state_dir = args.state_dir.unwrap_or(h.state_dir);
    if let Ok(meta) = std::fs::metadata(&state_dir)
        && !meta.is_dir()
    {
        eprintln!(
            "herzog: the state directory {} is not a directory: give another with --state-dir or herzog.state_dir",
            state_dir.display()
        );
        return ExitCode::from(2);
    }
    // Bound before the state directory is made: a port in use leaves nothing behind.
    let listener = match std::net::TcpListener::bind(&listen).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "herzog: failed to listen on {listen}: {e}; is another herzog running there? choose another with --listen"
            );
            return ExitCode::FAILURE;
        }
    };
    let log_level = args.log_level.unwrap_or(h.log_level);
    let log_retention = args.log_retention.unwrap_or(h.log_retention);
    let _guard = match common::logging::init(&state_dir, "herzog", &log_level, true, log_retention) {
        Ok(g) => g,
        Err(e) => {
            eprintln!(
                "herzog: failed to open the log directory under {}: {e}",
                state_dir.display()
            );
            return ExitCode::from(2);
        }
    };
    let expires_in_days = (identity.not_after - common::now_millis() / 1000) / 86_400;
    if expires_in_days < 30 {
        tracing::warn!(
            expires_in_days,
            "herzog's certificate expires soon: renew it (README, Security)"
        );
    }
    let config = herzog::Config {
        state_dir,
        heartbeat_interval: h.heartbeat_interval,
        worker_timeout: h.worker_timeout,
        hosts,
        min_free_space: h.min_free_space.as_u64(),
        services,
        max_log_bytes: h.max_log_bytes.as_u64(),
        fair_half_life: h.fair_half_life,
        defaults: h.defaults.requests(),
        alerts,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herzog: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = common::logging::shutdown_signal();
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| anyhow::anyhow!("failed to listen on {listen}: {e}"))?;
        herzog::run(
            config,
            herzog::Listener::Tls {
                tcp: listener,
                identity,
            },
            shutdown,
        )
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
