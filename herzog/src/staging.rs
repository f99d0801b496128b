//! Staging over SSH for hosts without the shared filesystem: one multiplexed master
//! connection per host (the system `ssh`, so `~/.ssh/config` and agents apply), SFTP over it
//! for files, a bounded number of transfers per host, retries with backoff.
//!
//! herzog's login may be root, and the program it fetches from is not to be trusted, so:
//! uploads go into the attempt's `in/`, which kinski gives to the login (its uid is learnt once
//! per connection) until the start, and are created new (`O_EXCL`: nothing planted is followed);
//! a fetched file must be, by the handle herzog opened (not by the listing, which a program can
//! race), a regular file of the user the program ran as (outputs) or of kinski (logs), else it
//! is dropped with a line in the attempt's stderr log saying why; and the results folder, which
//! the program's user may own on the shared filesystem, is written only through directory
//! descriptors ([`common::dirfd`]).

mod control;
mod fetch;
mod input;

use crate::machine::Upload;
use backon::{ExponentialBuilder, Retryable};
use common::config::HostConfig;
use futures::StreamExt;
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use openssh_sftp_client::{Sftp, SftpOptions};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, Semaphore};

/// Transfers at once per host: sshd's MaxSessions (10) caps the channels of one connection,
/// and a few parallel files already fill a link.
const PER_HOST: usize = 8;
/// Tries of one transfer before its attempt fails.
const TRIES: usize = 3;
/// An idle master connection exits after this (and a herzog killed with -9 has its masters
/// stopped by the next one at start-up, `control`).
const IDLE: usize = 120;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes per SFTP read or write request.
const CHUNK: usize = 256 * 1024;
/// Requests in flight per transfer.
const IN_FLIGHT: usize = 8;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StagingError {
    #[error(
        "host {host} is not in cluster.toml's [[hosts]], so herzog does not know how to reach it: add an entry for it and restart herzog"
    )]
    UnknownHost { host: String },
    #[error("failed to log in to host {host} over SSH ({address}): {reason}")]
    Connect {
        host: String,
        address: String,
        reason: String,
    },
    #[error("failed to {action} {path} on host {host}: {reason}")]
    Remote {
        host: String,
        action: &'static str,
        path: PathBuf,
        reason: String,
        /// The host's SFTP server answered (with an error): the connection works.
        answered: bool,
    },
    #[error("failed to {action} {path} on herzog's host: {source}")]
    Local {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} from host {host} is {got} bytes after the transfer, not {expected}")]
    Size {
        host: String,
        path: PathBuf,
        expected: u64,
        got: u64,
    },
    #[error(
        "host {host} listed {name:?} in {dir}, which is not a plain file name: not fetched; have the program name its outputs with plain names"
    )]
    BadName { host: String, dir: PathBuf, name: String },
    /// The input itself cannot be uploaded (gone, not a regular file, not its project
    /// directory owner's): the attempt's problem, not the host's.
    #[error("failed to upload {path}: {source}")]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} on host {host} was not fetched: {reason}")]
    Refused {
        host: String,
        path: PathBuf,
        reason: String,
    },
}

impl StagingError {
    /// Whether the connection itself may be broken (then it is dropped and made again): not
    /// when the host's SFTP server answered with an error of its own (no such file, no space).
    fn connection(&self) -> bool {
        matches!(
            self,
            StagingError::Connect { .. } | StagingError::Remote { answered: false, .. }
        )
    }
}

/// One host's open SFTP session (over its SSH connection), and herzog's uid there.
struct SftpSession {
    sftp: Sftp,
    /// The uid herzog's login has on the host.
    uid: u32,
}

/// One host: how to reach it, its connection once made, and its transfer permits. Each host
/// has its own lock, so a host that takes its time to answer holds up no other.
struct Host {
    config: HostConfig,
    link: Mutex<Option<Arc<SftpSession>>>,
    permits: Semaphore,
}

/// The staging side of herzog: knows the hosts and keeps their connections.
pub(crate) struct Stager {
    hosts: HashMap<String, Host>,
    /// ssh's control sockets: `<state_dir>/ssh`, or a short path when that one is too long.
    control_dir: control::ControlDir,
    /// Where fetched files are written before they are renamed into the results folder (on
    /// its filesystem, so the rename is atomic). Emptied at start-up: what a killed herzog
    /// left there is refetched, since its completion was never acknowledged.
    incoming: PathBuf,
}

impl Stager {
    /// The stager of a herzog whose state is in `state_dir`: empties `incoming/`, stops the
    /// ssh masters a killed predecessor left and removes their control directories, and makes
    /// the control directory when a host needs staging.
    pub(crate) async fn new(hosts: &[HostConfig], state_dir: &Path) -> std::io::Result<Stager> {
        let incoming = state_dir.join("incoming");
        let control_dir = control::ControlDir::of(state_dir);
        let staged = hosts.iter().any(|h| !h.shared_fs);
        let (incoming, control_dir, leftovers) = tokio::task::spawn_blocking(move || {
            match std::fs::remove_dir_all(&incoming) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            std::fs::create_dir_all(&incoming)?;
            let leftovers = control_dir.leftovers()?;
            if staged {
                control_dir.create()?;
            }
            Ok((incoming, control_dir, leftovers))
        })
        .await
        .map_err(std::io::Error::other)??;
        control::clear(leftovers).await;
        Ok(Stager {
            hosts: hosts
                .iter()
                .map(|h| {
                    let host = Host {
                        config: h.clone(),
                        link: Mutex::new(None),
                        permits: Semaphore::new(PER_HOST),
                    };
                    (h.name.clone(), host)
                })
                .collect(),
            control_dir,
            incoming,
        })
    }

    /// Whether `worker`'s host lacks the shared filesystem, so its files go over SSH.
    pub(crate) fn staged(&self, worker: &str) -> bool {
        self.hosts.get(worker).is_some_and(|h| !h.config.shared_fs)
    }

    /// The slot count cluster.toml sets for `worker`'s host, if any.
    pub(crate) fn slots(&self, worker: &str) -> Option<u32> {
        self.hosts.get(worker).and_then(|h| h.config.slots)
    }

    fn host(&self, host: &str) -> Result<&Host, StagingError> {
        self.hosts
            .get(host)
            .ok_or_else(|| StagingError::UnknownHost { host: host.to_string() })
    }

    async fn link(&self, host: &str) -> Result<Arc<SftpSession>, StagingError> {
        let state = self.host(host)?;
        let mut slot = state.link.lock().await;
        if let Some(link) = slot.as_ref() {
            return Ok(link.clone());
        }
        let config = &state.config;
        let address = config.ssh_address().to_string();
        let connect_error = |reason: String| StagingError::Connect {
            host: host.to_string(),
            address: address.clone(),
            reason,
        };
        let mut builder = SessionBuilder::default();
        builder
            .known_hosts_check(KnownHosts::Strict)
            .connect_timeout(CONNECT_TIMEOUT)
            .server_alive_interval(Duration::from_secs(15))
            .control_directory(self.control_dir.path())
            .control_persist(ControlPersist::IdleFor(IDLE.try_into().expect("not zero")));
        if let Some(user) = &config.ssh.user {
            builder.user(user.clone());
        }
        if let Some(port) = config.ssh.port {
            builder.port(port);
        }
        if let Some(key) = &config.ssh.identity {
            builder.keyfile(key);
        }
        if let Some(file) = &config.ssh.config {
            builder.config_file(file);
        }
        if let Some(file) = &config.ssh.known_hosts {
            builder.user_known_hosts_file(file);
        }
        let session: Session = builder
            .connect_mux(&address)
            .await
            .map_err(|e| connect_error(describe_ssh(&e)))?;
        let uid = login_uid(&session).await.map_err(connect_error)?;
        let sftp = Sftp::from_session(session, SftpOptions::default())
            .await
            .map_err(|e| connect_error(format!("the SFTP subsystem failed to start: {e}")))?;
        tracing::info!(%host, %address, uid, "SSH connection to host opened");
        let link = Arc::new(SftpSession { sftp, uid });
        *slot = Some(link.clone());
        Ok(link)
    }

    /// Forgets a connection that failed, so the next try makes a new one.
    async fn drop_link(&self, host: &str) {
        let Ok(state) = self.host(host) else { return };
        let link = state.link.lock().await.take();
        if let Some(link) = link
            && let Ok(link) = Arc::try_unwrap(link)
        {
            let _ = link.sftp.close().await;
        }
    }

    /// Runs `op` with a permit for `host`, retrying with backoff; a connection-level failure
    /// drops the connection before the next try.
    async fn with_retries<T, F, Fut>(&self, host: &str, op: F) -> Result<T, StagingError>
    where
        F: Fn(Arc<SftpSession>) -> Fut,
        Fut: std::future::Future<Output = Result<T, StagingError>>,
    {
        let _permit = self.host(host)?.permits.acquire().await.expect("never closed");
        let once = || async {
            let link = self.link(host).await?;
            match op(link).await {
                Ok(v) => Ok(v),
                Err(e) => {
                    if e.connection() {
                        self.drop_link(host).await;
                    }
                    Err(e)
                }
            }
        };
        once.retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(2))
                .with_max_times(TRIES - 1),
        )
        .when(|e: &StagingError| {
            !matches!(
                e,
                StagingError::UnknownHost { .. }
                    | StagingError::BadName { .. }
                    | StagingError::Refused { .. }
                    | StagingError::Input { .. }
            )
        })
        .notify(|e, delay| tracing::warn!(%host, error = %e, retry_in_ms = delay.as_millis() as u64, "staging failed; retrying"))
        .await
    }

    /// Logs in to `host` and checks that its scratch directory is there.
    pub(crate) async fn probe(&self, host: &str, scratch: &Path) -> Result<(), StagingError> {
        self.with_retries(host, |link| async move {
            let meta = link
                .sftp
                .fs()
                .metadata(scratch)
                .await
                .map_err(|e| remote(host, "look at the scratch directory", scratch, e))?;
            if meta.file_type().is_some_and(|t| t.is_dir()) {
                Ok(())
            } else {
                Err(StagingError::Remote {
                    host: host.to_string(),
                    action: "use the scratch directory",
                    path: scratch.to_path_buf(),
                    reason: "it is not a directory".into(),
                    answered: true,
                })
            }
        })
        .await
    }

    /// The uid herzog's login has on `host` (learnt when the connection was made): kinski
    /// gives an attempt's `in/` to it for the uploads.
    pub(crate) async fn login_uid(&self, host: &str) -> Result<u32, StagingError> {
        self.with_retries(host, |link| async move { Ok(link.uid) }).await
    }

    /// Copies an attempt's files to its host (kinski made their directory with
    /// `fragment_prep`), making parent directories inside it as needed, keeping the mode
    /// bits (a program stays executable) and checking each size afterwards.
    pub(crate) async fn upload(&self, host: &str, files: &[Upload]) -> Result<(), StagingError> {
        for file in files {
            self.with_retries(host, |link| upload_one(link, host, file)).await?;
        }
        Ok(())
    }
}

fn remote(host: &str, action: &'static str, path: &Path, e: openssh_sftp_client::Error) -> StagingError {
    use openssh_sftp_client::error::SftpErrorKind;
    let (reason, answered) = match &e {
        // The server's own words; "Failure" on a write is how sftp-server says the disk is
        // full or a quota is reached.
        openssh_sftp_client::Error::SftpError(kind, msg) => {
            let hint = match kind {
                SftpErrorKind::Failure => " (on a write: is the host's disk full?)",
                _ => "",
            };
            let (text, _language) = msg.get();
            (format!("the SFTP server says {kind:?} ({text}){hint}"), true)
        }
        _ => (e.to_string(), false),
    };
    StagingError::Remote {
        host: host.to_string(),
        action,
        path: path.to_path_buf(),
        reason,
        answered,
    }
}

/// ssh's own words, which name the cause (`Permission denied (publickey)`, `Host key
/// verification failed`, `Connection refused`), rather than the crate's wrapper.
fn describe_ssh(e: &openssh::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text.trim().to_string()
}

/// `id -u` on the host: herzog's login's uid there.
async fn login_uid(session: &Session) -> Result<u32, String> {
    let out = session
        .command("id")
        .arg("-u")
        .output()
        .await
        .map_err(|e| format!("failed to run `id -u` to learn the login's uid: {}", describe_ssh(&e)))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse() {
        Ok(uid) if out.status.success() => Ok(uid),
        _ => Err(format!(
            "`id -u` ({}) printed {:?} ({}), not the login's uid, which herzog needs to let kinski give it the attempts' in/ directories: let the login run commands",
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

async fn upload_one(link: Arc<SftpSession>, host: &str, file: &Upload) -> Result<(), StagingError> {
    use openssh_sftp_client::error::SftpErrorKind;
    let local = |action, source| StagingError::Local {
        action,
        path: file.from.clone(),
        source,
    };
    // Opened once and checked (see `input`): size, mode and bytes all come from that file.
    let from = file.from.clone();
    let input = |source| StagingError::Input {
        path: file.from.clone(),
        source,
    };
    let (src, meta) = tokio::task::spawn_blocking(move || input::open(&from))
        .await
        .map_err(|e| input(io::Error::other(e)))?
        .map_err(input)?;
    let mut options = link.sftp.options();
    // Always a new file: nothing at the name is followed or truncated.
    options.read(true).write(true).create_new(true);
    let dst = match options.open(&file.to).await {
        Ok(f) => f,
        // The attempt's directory exists (fragment_prep); a program in a subdirectory of the
        // project needs the ones below it.
        Err(openssh_sftp_client::Error::SftpError(SftpErrorKind::NoSuchFile, _)) => {
            create_parents(&link, host, &file.to).await?;
            options
                .open(&file.to)
                .await
                .map_err(|e| remote(host, "create", &file.to, e))?
        }
        // A part left by an earlier try: the name goes (never what it points to), then anew.
        Err(openssh_sftp_client::Error::SftpError(..)) => {
            let _ = link.sftp.fs().remove_file(&file.to).await;
            options
                .open(&file.to)
                .await
                .map_err(|e| remote(host, "create", &file.to, e))?
        }
        Err(e) => return Err(remote(host, "create", &file.to, e)),
    };
    let write_error = |e: openssh_sftp_client::Error| remote(host, "write", &file.to, e);
    // Several writes in flight, each at its own offset through its own clone of the handle:
    // one at a time, every chunk would wait a round trip through ssh.
    // No more than the size seen when it was opened, whatever is appended meanwhile.
    let mut src = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(src), meta.len());
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut offset = 0u64;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0;
        while n < CHUNK {
            let got = src.read(&mut buf[n..]).await.map_err(|e| local("read", e))?;
            if got == 0 {
                break;
            }
            n += got;
        }
        if n == 0 {
            break;
        }
        buf.truncate(n);
        let mut part = dst.clone();
        let at = offset;
        inflight.push(async move {
            seek(&mut part, at).await?;
            part.write_all(&buf).await
        });
        offset += n as u64;
        if inflight.len() >= IN_FLIGHT
            && let Some(result) = inflight.next().await
        {
            result.map_err(write_error)?;
        }
        if n < CHUNK {
            break;
        }
    }
    while let Some(result) = inflight.next().await {
        result.map_err(write_error)?;
    }
    drop(inflight);
    // Through the handle, not the name: what the name points to is not ours to change.
    let mut dst = dst;
    dst.set_permissions(permissions(meta.permissions()))
        .await
        .map_err(|e| remote(host, "set the mode of", &file.to, e))?;
    let got = dst
        .metadata()
        .await
        .map_err(|e| remote(host, "look at", &file.to, e))?
        .len()
        .unwrap_or(0);
    // Closed (the last reference sends the close and waits for it) before anything else
    // happens: a program still open for writing on the host cannot be executed (ETXTBSY).
    dst.close().await.map_err(write_error)?;
    if got != meta.len() {
        return Err(StagingError::Size {
            host: host.to_string(),
            path: file.to.clone(),
            expected: meta.len(),
            got,
        });
    }
    Ok(())
}

/// Moves a handle's offset; SFTP sends the offset with each request, so this is local.
async fn seek(file: &mut openssh_sftp_client::file::File, at: u64) -> Result<(), openssh_sftp_client::Error> {
    use tokio::io::AsyncSeekExt;
    file.seek(std::io::SeekFrom::Start(at)).await?;
    Ok(())
}

/// Makes the missing directories above `path` on the host.
async fn create_parents(link: &SftpSession, host: &str, path: &Path) -> Result<(), StagingError> {
    let mut fs = link.sftp.fs();
    let mut missing = Vec::new();
    let mut up = path.parent();
    while let Some(dir) = up {
        if fs.metadata(dir).await.is_ok() {
            break;
        }
        missing.push(dir.to_path_buf());
        up = dir.parent();
    }
    for dir in missing.iter().rev() {
        fs.create_dir(dir)
            .await
            .map_err(|e| remote(host, "create the directory", dir, e))?;
    }
    Ok(())
}

/// A local file's mode bits (rwx for owner, group, other), for the copy on the host.
fn permissions(local: std::fs::Permissions) -> openssh_sftp_client::metadata::Permissions {
    use std::os::unix::fs::PermissionsExt;
    openssh_sftp_client::metadata::Permissions::from((local.mode() & 0o777) as u16)
}
