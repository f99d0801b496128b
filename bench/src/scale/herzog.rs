//! The herzog child process and the certificates it and the simulated workers use.

use super::*;

/// The cluster's certificates, made for this run: herzog's bundle on disk (for `--tls`), an
/// admin connector for the submit and the progress, and one connector per simulated worker
/// (each certificate names its worker, as `herzog certs issue NAME --role worker` would).
pub(super) struct Certs {
    pub(super) herzog: PathBuf,
    pub(super) admin: Connector,
    pub(super) workers: Vec<(String, Connector)>,
}

pub(super) fn make_certs(dir: &Path, workers: usize) -> Result<Certs> {
    let ca = Authority::generate(2)?;
    let herzog = dir.join("herzog.pem");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // A fresh directory: the file is new, and its key readable by its owner alone.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&herzog)?;
        file.write_all(ca.issue("herzog", Role::Coordinator, 2)?.as_bytes())?;
    }
    let connector = |name: &str, role: Role| -> Result<Connector> {
        let bundle = ca.issue(name, role, 2)?;
        let identity = Identity::from_pem(bundle.as_bytes(), Path::new("(bench, in memory)"))?;
        Ok(Connector::new(&identity)?)
    };
    let admin = connector("bench-admin", Role::Admin)?;
    let workers = (0..workers)
        .map(|i| {
            let name = format!("sim-{i:05}");
            connector(&name, Role::Worker).map(|c| (name, c))
        })
        .collect::<Result<_>>()?;
    Ok(Certs { herzog, admin, workers })
}

/// The herzog child process.
pub(super) struct Herzog {
    pub(super) child: Child,
    pub(super) pid: u32,
}

impl Herzog {
    pub(super) fn spawn(o: &Options, state: &Path, tls: &Path, port: u16) -> Result<Herzog> {
        let mut cmd = Command::new(util::bin("herzog")?);
        cmd.arg("--tls")
            .arg(tls)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state)
            .env_remove("RUST_LOG")
            .env_remove("HERZOG_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd.envs(o.herzog_env.iter().map(|(k, v)| (k, v)));
        if let Some(level) = &o.log_level {
            cmd.arg("--log-level").arg(level);
        }
        match &o.herzog_stderr {
            Some(path) => {
                let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                cmd.stderr(f);
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().context("failed to start herzog")?;
        let pid = child.id();
        Ok(Herzog { child, pid })
    }

    /// Fails if herzog has exited.
    pub(super) fn check(&mut self, state: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "herzog exited ({status}); its log is under {}",
                state.join("logs").display()
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after a grace.
    pub(super) async fn stop(mut self) {
        util::signal(self.pid, libc::SIGTERM);
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Herzog {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until herzog accepts a connection and its hello; returns how long that took.
pub(super) async fn until_listening(
    addr: &str,
    admin: &Connector,
    herzog: &mut Herzog,
    state: &Path,
) -> Result<Duration> {
    let began = Instant::now();
    loop {
        if dial(addr, &Hello::Client, admin).await.is_ok() {
            return Ok(began.elapsed());
        }
        herzog.check(state)?;
        if began.elapsed() > Duration::from_secs(60) {
            bail!("herzog did not listen on {addr} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
