//! Alerts: `[alerts]` in cluster.toml (where herzog sends them: mail over SMTP, webhooks; and
//! for which events), and a project's own recipients (`hz action --notify/--webhook`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// What an alert is about: the names `[alerts] on` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A service instance gave up starting (`startretries` failed starts in a row).
    ServiceFatal,
    /// A service instance that ran exited with a code not in `exitcodes` (or by a signal).
    ServiceUnexpectedExit,
    /// A project has nothing left pending or running.
    ProjectDone,
    /// A fragment failed for good (out of attempts or retries).
    ProjectFailed,
    /// A worker was silent past `herzog.worker_timeout`.
    WorkerLost,
}

impl AlertKind {
    pub const ALL: [AlertKind; 5] = [
        AlertKind::ServiceFatal,
        AlertKind::ServiceUnexpectedExit,
        AlertKind::ProjectDone,
        AlertKind::ProjectFailed,
        AlertKind::WorkerLost,
    ];

    /// Its name in the config and in messages: `service_fatal`, ...
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::ServiceFatal => "service_fatal",
            AlertKind::ServiceUnexpectedExit => "service_unexpected_exit",
            AlertKind::ProjectDone => "project_done",
            AlertKind::ProjectFailed => "project_failed",
            AlertKind::WorkerLost => "worker_lost",
        }
    }

    /// What several of them are called in a sentence: "14 more unexpected exits".
    pub fn plural(self) -> &'static str {
        match self {
            AlertKind::ServiceFatal => "fatal starts",
            AlertKind::ServiceUnexpectedExit => "unexpected exits",
            AlertKind::ProjectDone => "completions",
            AlertKind::ProjectFailed => "failed fragments",
            AlertKind::WorkerLost => "losses",
        }
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How herzog talks to the SMTP server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (refused if the server cannot): port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS): port 465.
    Tls,
    /// No encryption at all: only for a relay on the same host or a test sink.
    None,
}

/// `[alerts.smtp]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    /// Login name, if the server wants one (with `password_file`).
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding the password (its first line); read by herzog at start.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The sender address.
    pub from: String,
}

impl SmtpConfig {
    /// The port, or the usual one for the security chosen.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        })
    }
}

/// `[alerts]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSection {
    pub smtp: Option<SmtpConfig>,
    /// Addresses every alert is mailed to.
    pub email: Vec<String>,
    /// URLs every alert is POSTed to as JSON.
    pub webhook: Vec<String>,
    /// Which events alert; `None`: all of them.
    pub on: Option<Vec<AlertKind>>,
    /// How the cluster is named in messages; default: herzog's address.
    pub name: Option<String>,
    /// At most one message per event kind and project (or service, or worker) per this
    /// window to each recipient; what comes meanwhile is folded into the next, with a count.
    #[serde(with = "humantime_serde")]
    pub rate_window: Duration,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            smtp: None,
            email: Vec::new(),
            webhook: Vec::new(),
            on: None,
            name: None,
            rate_window: Duration::from_secs(60),
        }
    }
}

/// A bad `[alerts]` key: which, its value, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadKey {
    pub key: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl AlertsSection {
    /// Whether `kind` alerts the cluster-wide recipients.
    pub fn enabled(&self, kind: AlertKind) -> bool {
        self.on.as_ref().is_none_or(|on| on.contains(&kind))
    }

    /// Checks what can be checked without reading files (the password file is herzog's to
    /// read: kinski and hz load the same cluster.toml on hosts that lack it).
    pub fn check(&self) -> Result<(), BadKey> {
        let bad = |key, value: &str, reason| BadKey {
            key,
            value: value.to_string(),
            reason,
        };
        for address in &self.email {
            check_address(address).map_err(|reason| bad("alerts.email", address, reason))?;
        }
        if !self.email.is_empty() && self.smtp.is_none() {
            return Err(bad(
                "alerts.smtp",
                "",
                "missing: alerts.email needs an [alerts.smtp] table (host, from) to send through",
            ));
        }
        for url in &self.webhook {
            check_url(url).map_err(|reason| bad("alerts.webhook", url, reason))?;
        }
        if let Some(smtp) = &self.smtp {
            if smtp.host.trim().is_empty() {
                return Err(bad("alerts.smtp.host", &smtp.host, "must name the SMTP server"));
            }
            if smtp.port == Some(0) {
                return Err(bad("alerts.smtp.port", "0", "must be a port from 1 to 65535"));
            }
            check_address(&smtp.from).map_err(|reason| bad("alerts.smtp.from", &smtp.from, reason))?;
            // A password in the clear goes only to a relay on this host.
            let local = matches!(smtp.host.trim(), "localhost" | "127.0.0.1" | "::1" | "[::1]");
            if smtp.security == Security::None && smtp.user.is_some() && !local {
                return Err(bad(
                    "alerts.smtp.security",
                    "none",
                    "would send the password in the clear to another host: use \"starttls\" or \"tls\" (or a relay on this host)",
                ));
            }
            if smtp.user.is_some() != smtp.password_file.is_some() {
                return Err(bad(
                    "alerts.smtp.password_file",
                    &smtp
                        .password_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    "give both alerts.smtp.user and alerts.smtp.password_file, or neither",
                ));
            }
        }
        if self.rate_window.is_zero() {
            return Err(bad("alerts.rate_window", "0s", "must be more than zero"));
        }
        Ok(())
    }
}

/// Checks a mail address roughly (local@domain, no spaces or angle brackets); the SMTP server
/// has the last word.
pub fn check_address(address: &str) -> Result<(), &'static str> {
    let ok = address
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        && !address.contains(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | ',' | '"'));
    if ok {
        Ok(())
    } else {
        Err("is not a mail address (user@example.org)")
    }
}

/// Checks a webhook URL: `http://` or `https://` and a host.
pub fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) => Ok(()),
        _ => Err("is not an http:// or https:// URL with a host"),
    }
}

/// A project's own recipients (`hz action --notify ADDR --webhook URL`): its `project_done`
/// and `project_failed` alerts go to them, besides the cluster-wide ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectAlerts {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook: Vec<String>,
}

impl ProjectAlerts {
    pub fn is_empty(&self) -> bool {
        self.notify.is_empty() && self.webhook.is_empty()
    }

    /// Refuses an address or URL that cannot be one, naming the flag.
    pub fn check(&self) -> Result<(), crate::ApiError> {
        for address in &self.notify {
            check_address(address).map_err(|reason| crate::ApiError::InvalidValue {
                what: format!("--notify {address}"),
                reason: reason.to_string(),
            })?;
        }
        for url in &self.webhook {
            check_url(url).map_err(|reason| crate::ApiError::InvalidValue {
                what: format!("--webhook {url}"),
                reason: reason.to_string(),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_urls_are_checked() {
        assert!(check_address("ops@example.org").is_ok());
        for bad in ["ops", "@x", "a@", "a b@x", "<a@x>", "a@b@c"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("https://hooks.example.org/x").is_ok());
        for bad in ["ftp://x", "http://", "https:///x", "127.0.0.1:9", "http://a b"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_are_named_as_in_the_config() {
        for kind in AlertKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
    }
}
