//! The kinski binary: parse arguments, build the config, call `kinski::run`.

use clap::{CommandFactory, Parser, Subcommand};
use common::config::ClusterConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// kinski, the worker daemon of a herzog cluster: one per compute host.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    // The last of an option given twice counts (a wrapper's defaults, then the caller's).
    args_override_self = true,
    after_help = "Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad configuration or arguments."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The cluster config file (cluster.example.toml documents every key).
    #[arg(long, env = "HERZOG_CONFIG")]
    config: Option<PathBuf>,
    /// herzog's address, host:port (overrides herzog.address).
    #[arg(long, env = "HERZOG_ADDR")]
    herzog: Option<String>,
    /// This worker's name, as its certificate names it (overrides kinski.name) [default: the
    /// name in the --tls certificate]
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
    /// Daily log files kept in STATE_DIR/logs, older ones removed (overrides
    /// kinski.log_retention; default 14).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    log_retention: Option<u32>,
    /// This worker's certificate bundle (overrides kinski.tls); made by
    /// `herzog certs issue NAME --role worker`.
    #[arg(long, env = "KINSKI_TLS")]
    tls: Option<PathBuf>,
    /// Where staged attempts get their directories (overrides the host's scratch_dir in
    /// cluster.toml; default STATE_DIR/scratch).
    #[arg(long)]
    scratch_dir: Option<PathBuf>,
    /// The user programs run as (overrides kinski.run_as). Required when kinski runs as root;
    /// "root" only if you mean it.
    #[arg(long)]
    run_as: Option<String>,
    /// CPUs attempts are packed into (overrides kinski.cpus; default: the host's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cpus: Option<u32>,
    /// CPUs kept for the system (overrides kinski.reserve_cpus; default 0).
    #[arg(long, value_name = "N")]
    reserve_cpus: Option<u32>,
    /// Memory kept for the system, like 2G or 512M (overrides kinski.reserve_mem; default 0).
    #[arg(long, value_name = "SIZE", value_parser = common::requests::parse_size)]
    reserve_mem: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print kinski's man page (roff): `kinski man | man -l -`, or save it as kinski.1.
    Man,
}

fn main() -> ExitCode {
    common::logging::abort_on_panic();
    let args = Args::parse();
    if let Some(Command::Man) = args.command {
        return match clap_mangen::Man::new(Args::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kinski: failed to write the man page: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cluster = match ClusterConfig::load_or_default(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kinski: {e}");
            return ExitCode::from(2);
        }
    };
    let k = cluster.kinski.clone();
    if let Some(addr) = &args.herzog
        && let Err(e) = common::config::check_address(addr)
    {
        eprintln!("kinski: {e}; set --herzog or HERZOG_ADDR");
        return ExitCode::from(2);
    }
    if args.slots == Some(0) {
        eprintln!("kinski: --slots must be at least 1");
        return ExitCode::from(2);
    }
    if let Some(name) = args.name.as_ref().or(k.name.as_ref())
        && let Err(e) = common::name::check_name(name)
    {
        eprintln!("kinski: bad worker name: {e}; set --name or kinski.name");
        return ExitCode::from(2);
    }
    let Some(tls) = args.tls.or(k.tls.clone()) else {
        eprintln!(
            "kinski: no certificate: every connection is mutual TLS. Issue one on the CA host with \
             `herzog certs issue NAME --role worker --dir DIR`, copy DIR/NAME.pem here and give --tls (or kinski.tls)"
        );
        return ExitCode::from(2);
    };
    let identity = match common::tls::Identity::load(&tls) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("kinski: {e}");
            return ExitCode::from(2);
        }
    };
    // The certificate names the worker; --name or kinski.name must agree with it.
    let name = args.name.or(k.name.clone()).unwrap_or_else(|| identity.name.clone());
    if let Err(e) = common::name::check_name(&name) {
        eprintln!("kinski: bad worker name: {e}; set --name or kinski.name");
        return ExitCode::from(2);
    }
    if identity.role != common::tls::Role::Worker || identity.name != name {
        eprintln!(
            "kinski: {} is {} certificate for '{}', but this worker is '{name}': issue one with \
             `herzog certs issue {name} --role worker`",
            tls.display(),
            identity.role.with_article(),
            identity.name
        );
        return ExitCode::from(2);
    }
    let state_dir = args.state_dir.unwrap_or(k.state_dir);
    let log_level = args.log_level.unwrap_or(k.log_level);
    let log_retention = args.log_retention.unwrap_or(k.log_retention);
    let _guard = match common::logging::init(&state_dir, "kinski", &log_level, true, log_retention) {
        Ok(g) => g,
        Err(e) => {
            eprintln!(
                "kinski: failed to open the log directory under {}: {e}",
                state_dir.display()
            );
            return ExitCode::from(2);
        }
    };
    // This host's [[hosts]] entry, when the file lists it (one file can serve every daemon).
    let host = cluster.host(&name).cloned();
    let config = kinski::Config {
        herzog: kinski::Herzog::Tls {
            addr: args.herzog.unwrap_or(cluster.herzog.address.clone()),
            identity,
        },
        slots: args
            .slots
            .or(host.as_ref().and_then(|h| h.slots))
            .or(k.slots)
            .unwrap_or_else(kinski::default_slots),
        name,
        state_dir,
        run_as: args.run_as.or(k.run_as),
        service_users: k.service_users,
        pid_dir: k.pid_dir,
        scratch_dir: args.scratch_dir.or(host.and_then(|h| h.scratch_dir)),
    };
    // Refuse before anything starts: root without a user to run programs as, or a user that
    // does not exist.
    if let Err(e) = kinski::user::resolve(config.run_as.as_deref()) {
        eprintln!("kinski: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kinski: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let capacity = kinski::Capacity {
        cpus: args.cpus.or(k.cpus),
        reserve_cpus: args.reserve_cpus.unwrap_or(k.reserve_cpus),
        reserve_memory_bytes: args.reserve_mem.unwrap_or(k.reserve_mem.0),
    };
    match runtime.block_on(async move { kinski::run_with(config, capacity, common::logging::shutdown_signal()).await })
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kinski: {e}");
            if e.is_setup() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
