//! Delivery: a mail through the configured SMTP server (lettre, rustls with ring), a webhook
//! POST (ureq, rustls with ring, on a blocking thread), and the tail of stderr read for a
//! message at send time.

use super::message::{Message, Tail};
use crate::dispatch::Connections;
use crate::machine::StderrFrom;
use common::alerts::{Security, SmtpConfig};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::Duration;

/// How much of stderr a message carries.
pub(crate) const TAIL_BYTES: u64 = 4096;
/// The longest one delivery may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    #[error("failed to build the mail to {to}: {reason}")]
    Mail { to: String, reason: String },
    #[error("failed to send the mail to {to} through {server}: {source}")]
    Smtp {
        to: String,
        server: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("no [alerts.smtp] in herzog's cluster.toml to mail {to} through")]
    NoSmtp { to: String },
    #[error("failed to POST to {url}: {reason}")]
    Webhook { url: String, reason: String },
}

/// The SMTP server, as herzog sends through it.
pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

/// Why the SMTP settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SmtpSetupError {
    #[error("alerts.smtp.from = {from:?} is not a mail address: {reason}")]
    From { from: String, reason: String },
    #[error("alerts.smtp.host = {host:?} cannot be used for TLS: {reason}")]
    Host { host: String, reason: String },
    #[error("failed to read alerts.smtp.password_file {path}: {source}")]
    Password {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("alerts.smtp.password_file {path} is empty: its first line is the password")]
    EmptyPassword { path: std::path::PathBuf },
}

impl Mailer {
    /// Builds the transport; reads the password file (the first line is the password).
    pub(crate) fn new(smtp: &SmtpConfig) -> Result<Mailer, SmtpSetupError> {
        let from: Mailbox = smtp
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| SmtpSetupError::From {
                from: smtp.from.clone(),
                reason: e.to_string(),
            })?;
        let host_err = |e: lettre::transport::smtp::Error| SmtpSetupError::Host {
            host: smtp.host.clone(),
            reason: e.to_string(),
        };
        let builder = match smtp.security {
            Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host).map_err(host_err)?,
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(host_err)?,
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
        };
        let mut builder = builder.port(smtp.port()).timeout(Some(SEND_TIMEOUT));
        if let (Some(user), Some(path)) = (&smtp.user, &smtp.password_file) {
            let password = read_password(path)?;
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            server: format!("{}:{}", smtp.host, smtp.port()),
        })
    }

    /// Mails `message` to `to`.
    pub(crate) async fn send(&self, to: &str, message: &Message) -> Result<(), DeliveryError> {
        let bad = |reason: String| DeliveryError::Mail {
            to: to.to_string(),
            reason,
        };
        let mailbox: Mailbox = to
            .parse()
            .map_err(|e: lettre::address::AddressError| bad(e.to_string()))?;
        let mail = lettre::Message::builder()
            .from(self.from.clone())
            .to(mailbox)
            .subject(message.subject())
            .message_id(Some(format!("<{}@herzog>", message.id)))
            .header(ContentType::TEXT_PLAIN)
            .body(message.text())
            .map_err(|e| bad(e.to_string()))?;
        self.transport
            .send(mail)
            .await
            .map(|_| ())
            .map_err(|source| DeliveryError::Smtp {
                to: to.to_string(),
                server: self.server.clone(),
                source,
            })
    }
}

/// The first line of the password file.
pub(crate) fn read_password(path: &std::path::Path) -> Result<String, SmtpSetupError> {
    let text = std::fs::read_to_string(path).map_err(|source| SmtpSetupError::Password {
        path: path.to_path_buf(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r').to_string();
    if line.is_empty() {
        return Err(SmtpSetupError::EmptyPassword {
            path: path.to_path_buf(),
        });
    }
    Ok(line)
}

/// POSTs `message` as JSON to `url`, with its id as `Idempotency-Key`; a status other than
/// 2xx is a failure. On a blocking thread: ureq blocks.
pub(crate) async fn post(agent: &ureq::Agent, url: &str, message: &Message) -> Result<(), DeliveryError> {
    let agent = agent.clone();
    let target = url.to_string();
    let body = message.json();
    let id = message.id.clone();
    let sent = tokio::task::spawn_blocking(move || {
        agent
            .post(&target)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &id)
            .send(body)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let reason = match sent {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(reason)) => reason,
        Err(e) => e.to_string(),
    };
    Err(DeliveryError::Webhook {
        // Its credentials, if it has any, stay out of the log.
        url: crate::machine::Recipient::Webhook(url.to_string()).shown(),
        reason,
    })
}

/// The agent every webhook goes through: a global timeout, non-2xx statuses as errors.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(SEND_TIMEOUT))
        .http_status_as_error(true)
        .build()
        .into()
}

/// The end of the stderr `from` names, read now.
pub(crate) async fn tail(from: &StderrFrom, connections: &Connections) -> Tail {
    match from {
        StderrFrom::NotKept { why } => Tail::NotKept(why.clone()),
        StderrFrom::File { path } => {
            let path = path.clone();
            let read = tokio::task::spawn_blocking(move || tail_of_file(&path)).await;
            match read {
                Ok(tail) => tail,
                Err(e) => Tail::NotKept(format!("reading it failed: {e}")),
            }
        }
        StderrFrom::Instance { worker, run } => {
            let Some(client) = connections.client(worker) else {
                return Tail::NotKept(format!("worker {worker} is not connected now"));
            };
            let target = common::output::OutputTarget::Instance {
                run: common::instances::RunId(*run),
                stream: common::output::Stream::Stderr,
            };
            let read = crate::services::rpc::relay_read(
                &client,
                target,
                common::output::Position::Last(TAIL_BYTES),
                TAIL_BYTES as u32,
                0,
                Duration::from_secs(10),
            )
            .await;
            match read {
                Ok(Ok(chunk)) => Tail::Text(String::from_utf8_lossy(&chunk.bytes).into_owned()),
                Ok(Err(e)) => Tail::NotKept(e.to_string()),
                Err(e) => Tail::NotKept(format!("the read from worker {worker} failed: {e}")),
            }
        }
    }
}

/// The last [`TAIL_BYTES`] of a file.
fn tail_of_file(path: &std::path::Path) -> Tail {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Tail::NotKept(format!("{}: {e}", path.display())),
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    let read = file
        .seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)))
        .and_then(|_| file.take(TAIL_BYTES).read_to_end(&mut bytes));
    match read {
        Ok(_) => Tail::Text(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => Tail::NotKept(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(security: Security) -> SmtpConfig {
        SmtpConfig {
            host: "mail.example.org".into(),
            port: None,
            security,
            user: None,
            password_file: None,
            from: "herzog@example.org".into(),
        }
    }

    /// Every security builds its transport (TLS ones with the ring provider, the only one
    /// linked: a second provider or none would fail here).
    #[tokio::test]
    async fn each_security_builds_and_a_password_file_is_read_and_checked() {
        for security in [Security::Starttls, Security::Tls, Security::None] {
            let mailer = Mailer::new(&smtp(security)).unwrap_or_else(|e| panic!("{security:?}: {e}"));
            assert!(mailer.server.starts_with("mail.example.org:"));
        }
        let dir = tempfile::tempdir().unwrap();
        let mut with_login = smtp(Security::Starttls);
        with_login.user = Some("herzog".into());
        with_login.password_file = Some(dir.path().join("missing"));
        let err = Mailer::new(&with_login)
            .err()
            .expect("a missing password file")
            .to_string();
        assert!(err.contains("alerts.smtp.password_file"), "{err}");
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        with_login.password_file = Some(dir.path().join("empty"));
        let err = Mailer::new(&with_login)
            .err()
            .expect("an empty password file")
            .to_string();
        assert!(err.contains("empty"), "{err}");
        std::fs::write(dir.path().join("pw"), "s3cret\nignored\n").unwrap();
        assert_eq!(read_password(&dir.path().join("pw")).unwrap(), "s3cret");
        with_login.password_file = Some(dir.path().join("pw"));
        assert!(Mailer::new(&with_login).is_ok());
        let mut bad_from = smtp(Security::None);
        bad_from.from = "not an address".into();
        let err = Mailer::new(&bad_from).err().expect("a bad sender").to_string();
        assert!(err.contains("alerts.smtp.from"), "{err}");
    }
}
