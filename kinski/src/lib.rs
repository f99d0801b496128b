//! kinski, the worker: registers with herzog, runs attempts as supervised process groups,
//! heartbeats, and reports each completion until herzog acknowledges it.

pub mod cgroup;
mod exec;
mod interactive;
mod journal;
mod leftovers;
mod output;
pub mod process;
mod resources;
mod rotate;
mod service;
mod services;
mod session;
mod stream;
mod supervisor;
mod taps;
pub mod user;

use backon::{BackoffBuilder, ExponentialBuilder};
use std::path::PathBuf;
use std::time::Duration;

/// How kinski reaches herzog.
#[derive(Clone, Debug)]
pub enum Herzog {
    /// herzog's address (host:port) and this worker's certificate bundle (role worker, named
    /// as the worker).
    Tls {
        addr: String,
        identity: common::tls::Identity,
    },
    /// herzog in this process (`hz local`).
    InProcess(common::link::Dialer),
}

/// Starts accepted per slot beyond the slots, started in order as slots free up.
const QUEUE_PER_SLOT: u32 = 32;

/// What kinski needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub herzog: Herzog,
    /// This worker's name.
    pub name: String,
    /// How many attempts run at once.
    pub slots: u32,
    /// Holds logs/ and the journal.
    pub state_dir: PathBuf,
    /// The user programs run as; required when kinski runs as root (see [`user::resolve`]).
    pub run_as: Option<String>,
    /// Users a service may run as besides `run_as` (`kinski.service_users`).
    pub service_users: Vec<String>,
    /// Where staged attempts get their directories; default `<state_dir>/scratch`.
    pub scratch_dir: Option<PathBuf>,
    /// Where each service instance's pid file is kept while it runs (`kinski.pid_dir`).
    pub pid_dir: Option<PathBuf>,
}

/// What kinski registers as this host's capacity beyond what it finds (`--cpus`,
/// `kinski.reserve_cpus`, `kinski.reserve_mem`); the default: the host as found, nothing kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct Capacity {
    /// The CPUs attempts are packed into; default: the host's.
    pub cpus: Option<u32>,
    /// CPUs and memory kept for the system: attempts are packed into the rest.
    pub reserve_cpus: u32,
    pub reserve_memory_bytes: u64,
}

/// Why kinski stopped.
#[derive(Debug, thiserror::Error)]
pub enum KinskiError {
    #[error("failed to open the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open the scratch directory {path}: {source}; set kinski.scratch_dir or the host's scratch_dir")]
    ScratchDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the scratch directory {path} is {problem}, so others could plant files where kinski writes: make it kinski's and not writable by others (chown, chmod go-w), or set the host's scratch_dir"
    )]
    ScratchNotOwn { path: PathBuf, problem: String },
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error(transparent)]
    PidDir(#[from] services::PidDirError),
    #[error(transparent)]
    Tls(#[from] common::tls::TlsError),
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(
        "the certificate is for {role} '{certificate}', but this worker is '{name}': issue one with `herzog certs issue {name} --role worker`"
    )]
    WrongCertificate {
        certificate: String,
        role: common::tls::Role,
        name: String,
    },
    #[error("'{name}' is not a valid worker name: use letters, digits, '.', '_' and '-'")]
    BadName { name: String },
    /// Another kinski holds this name: restarting would not help (exit 2).
    #[error("{reason}")]
    NameInUse { reason: String },
}

impl KinskiError {
    /// A mistake in how kinski was set up, which a restart does not mend (systemd's
    /// RestartPreventExitStatus=2).
    pub fn is_setup(&self) -> bool {
        matches!(self, KinskiError::NameInUse { .. })
    }
}

/// Works for herzog until `shutdown` resolves, reconnecting whenever herzog is away. The
/// attempts keep running while herzog is unreachable; on shutdown they are stopped.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()> + Send) -> Result<(), KinskiError> {
    run_with(config, Capacity::default(), shutdown).await
}

/// [`run`], registering `capacity`.
pub async fn run_with(
    config: Config,
    capacity: Capacity,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), KinskiError> {
    if common::name::check_name(&config.name).is_err() {
        return Err(KinskiError::BadName { name: config.name });
    }
    let route = match &config.herzog {
        Herzog::Tls { identity, .. } if identity.role != common::tls::Role::Worker || identity.name != config.name => {
            return Err(KinskiError::WrongCertificate {
                certificate: identity.name.clone(),
                role: identity.role,
                name: config.name,
            });
        }
        Herzog::Tls { addr, identity } => common::link::Route::Tls {
            addr: addr.clone(),
            connector: common::transport::Connector::new(identity)?,
        },
        Herzog::InProcess(dialer) => common::link::Route::InProcess(dialer.clone()),
    };
    let _handled = handle_ignored_signals();
    // Every directory kinski makes is given mode 0755 explicitly; this covers the rest (the
    // journal, and the programs, which inherit it), whatever mask kinski was started with.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let run_as = user::resolve(config.run_as.as_deref())?;
    if run_as.is_none() && nix::unistd::geteuid().is_root() {
        tracing::warn!("programs run as root, as configured (kinski.run_as = \"root\")");
    }
    let mut config = config;
    // Absolute from here on: what kinski tells herzog (its scratch directory) and the paths it
    // checks starts against are absolute.
    config.state_dir = common::paths::made_dir(&config.state_dir).map_err(|source| KinskiError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    for dir in [&mut config.scratch_dir, &mut config.pid_dir].into_iter().flatten() {
        if let Ok(absolute) = std::path::absolute(&*dir) {
            *dir = absolute;
        }
    }
    // Reading and rewriting the journal, and a look through /proc, off the runtime.
    let (dir, name) = (config.state_dir.clone(), config.name.clone());
    let pid_dir = config.pid_dir.clone();
    let (journal, recovered, killed, tracking, emptied, pid_files) = tokio::task::spawn_blocking(move || {
        let (journal, recovered) = journal::Journal::open(&dir)?;
        // A predecessor's cgroups first: everything in them, whichever group it is in.
        let (tracking, emptied) = cgroup::Tracking::start(&name, &dir);
        let killed =
            leftovers::kill_leftovers(&recovered.running) + leftovers::kill_instance_leftovers(&recovered.instances);
        let pid_files = pid_dir.as_deref().map(services::PidFiles::open).transpose()?;
        // The predecessor's instances are gone now: so are their pid files.
        if let Some(pid_files) = &pid_files {
            recovered
                .instances
                .iter()
                .filter_map(|i| i.instance.as_ref())
                .for_each(|instance| pid_files.remove(instance));
        }
        Ok::<_, KinskiError>((journal, recovered, killed, tracking, emptied, pid_files))
    })
    .await
    .expect("the journal's recovery does not panic")?;
    tracing::info!("the processes of attempts and service instances are tracked by {tracking}");
    tracing::info!("limits: {}", tracking.limits());
    if emptied > 0 {
        tracing::warn!(
            cgroups = emptied,
            "killed what a previous kinski left running in its cgroups"
        );
    }
    if !recovered.running.is_empty() || !recovered.unacked.is_empty() {
        tracing::warn!(
            left_running = recovered.running.len(),
            killed,
            to_report = recovered.unacked.len(),
            "recovered the journal of a previous kinski: killed its leftover attempts (herzog requeues them), reporting its finished ones"
        );
    }
    let slots = config.slots.max(1);
    // How many starts wait here for a free slot: herzog fills as much of it as covers its
    // round trip for the attempts this worker runs (a queue as deep as the slots for long
    // attempts, all of it for millisecond ones).
    let queue = slots.saturating_mul(QUEUE_PER_SLOT);
    let scratch = config
        .scratch_dir
        .clone()
        .unwrap_or_else(|| config.state_dir.join("scratch"));
    let scratch_error = |source| KinskiError::ScratchDir {
        path: scratch.clone(),
        source,
    };
    let owner = common::dirfd::DirFd::open_or_create(&scratch, common::dirfd::DIR_MODE)
        .and_then(|dir| dir.owner())
        .map_err(scratch_error)?;
    let me = rustix::process::geteuid().as_raw();
    if owner.uid != me || owner.mode & 0o022 != 0 {
        return Err(KinskiError::ScratchNotOwn {
            path: scratch,
            problem: format!("owned by uid {} with mode {:o}", owner.uid, owner.mode),
        });
    }
    let scratch = scratch.canonicalize().map_err(scratch_error)?;
    let supervisor = supervisor::Supervisor::new(
        slots,
        queue,
        run_as.clone(),
        scratch.clone(),
        journal,
        recovered.unacked,
    )
    .with_tracking(tracking.clone());
    supervisor.clean_leftovers().await;
    {
        let scratch = scratch.clone();
        let _ = tokio::task::spawn_blocking(move || services::stage::remove_leftovers(&scratch)).await;
    }
    let instances = services::Instances::new(
        config.state_dir.join("services"),
        scratch.clone(),
        run_as.clone(),
        config.service_users.clone(),
        supervisor.clone(),
        tracking.clone(),
        pid_files,
    );
    instances.recovered_events(recovered.events);
    let cut_off = {
        let instances = instances.clone();
        tokio::spawn(async move { instances.stop_movable_when_cut_off().await })
    };
    let limits = tracking.limits();
    let mut resources = {
        let dir = config.state_dir.clone();
        tokio::task::spawn_blocking(move || resources::probe(slots, queue, &dir, capacity, limits))
            .await
            .expect("probing the host does not panic")
    };
    tracing::info!(
        cpus = resources.cpus,
        reserved_cpus = resources.reserved_cpus,
        memory = %common::requests::show_bytes(resources.memory_bytes),
        reserved_memory = %common::requests::show_bytes(resources.reserved_memory_bytes),
        cpu = %resources.cpu_model,
        mhz = resources.cpu_mhz,
        "capacity"
    );
    resources.scratch_dir = Some(scratch);
    tracing::info!(name = %config.name, slots = resources.slots, herzog = %route.describe(), "kinski starting");
    // Ready once the journal is recovered: herzog may be away, and kinski works without it.
    common::logging::notify_ready();
    // `hz shutdown WORKER` takes the path SIGTERM takes.
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let shutdown = {
        let asked = stop.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = asked.notified() => {}
            }
        }
    };
    tokio::pin!(shutdown);
    // Jitter adds up to the delay again, so a cap of `max / 2` keeps every wait under `max`.
    let backoff = |max: Duration| {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100).min(max / 2))
            .with_max_delay(max / 2)
            .with_jitter()
            .without_max_times()
            .build()
    };
    // Until the first registration: up to 5 s between tries. After it, never longer than the
    // heartbeat interval, so a restarted herzog sees this worker back well within its timeout.
    let mut longest = Duration::from_secs(5);
    let mut delays = backoff(longest);
    loop {
        let session = session::Session {
            route: &route,
            name: &config.name,
            supervisor: &supervisor,
            instances: &instances,
            resources: &resources,
            stop: &stop,
        };
        let mut registered = None;
        let ended = tokio::select! {
            _ = &mut shutdown => break,
            e = session.run(|heartbeat| registered = Some(heartbeat)) => e,
        };
        if let session::SessionError::Connect(common::transport::ConnectError::NameInUse { reason, .. }) = ended {
            cut_off.abort();
            tokio::join!(supervisor.stop_all(), instances.stop_all());
            return Err(KinskiError::NameInUse { reason });
        }
        if let Some(heartbeat) = registered {
            longest = heartbeat.clamp(Duration::from_millis(200), Duration::from_secs(5));
            delays = backoff(longest);
        }
        let delay = delays.next().unwrap_or(longest);
        tracing::warn!(error = %ended, retry_in_ms = delay.as_millis() as u64, "session with herzog ended; reconnecting");
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    tracing::info!("kinski shutting down: stopping running attempts");
    common::logging::notify_stopping();
    cut_off.abort();
    tokio::join!(supervisor.stop_all(), instances.stop_all());
    // herzog requeues what was stopped at once, and shows this worker stopped, not lost.
    if let Err(e) = session::goodbye(&route, &config.name, &supervisor).await {
        tracing::info!(error = %e, "could not tell herzog this worker stops; it counts it lost after its timeout");
    }
    let _ = tokio::task::spawn_blocking(move || tracking.finish()).await;
    Ok(())
}

/// Signals kinski was started ignoring (under `nohup`, HUP) get a handler that does nothing:
/// kinski still takes no action on them, and the programs it starts get them at their default
/// action, since exec keeps an ignored signal ignored but resets a handled one. Without this,
/// a shell run by kinski could not even trap them. Returns the listeners, which must live.
fn handle_ignored_signals() -> Vec<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        (libc::SIGHUP, SignalKind::hangup()),
        (libc::SIGINT, SignalKind::interrupt()),
        (libc::SIGQUIT, SignalKind::quit()),
        (libc::SIGTERM, SignalKind::terminate()),
        (libc::SIGUSR1, SignalKind::user_defined1()),
        (libc::SIGUSR2, SignalKind::user_defined2()),
    ];
    kinds
        .into_iter()
        .filter(|(number, _)| ignored(*number))
        .filter_map(|(number, kind)| {
            let mut listener = signal(kind).ok()?;
            tracing::info!(signal = number, "started with this signal ignored: kinski goes on ignoring it, its programs get it at its default action");
            Some(tokio::spawn(async move { while listener.recv().await.is_some() {} }))
        })
        .collect()
}

/// Whether this process ignores `signal`.
fn ignored(signal: libc::c_int) -> bool {
    // SAFETY: a query only (no new action); `old` is written by the call.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The default slot count: the host's available parallelism.
pub fn default_slots() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// The default worker name: the host name.
pub fn default_name() -> String {
    resources::host_name()
}
