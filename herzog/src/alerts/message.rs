//! What a message says, pure: a mail's subject and text, a webhook's JSON body, from the
//! outbox rows of one message (the last shown, those before it folded into a count) and the
//! tail of stderr read for it.

use crate::machine::Alert;
use crate::store::Undelivered;
use serde::Serialize;

/// One message: the newest alert of a batch, and what was folded into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    /// A stable name for the message: its newest row's id and the cluster, so a sink can drop
    /// the repeat a crash between delivery and its record may cause.
    pub(crate) id: String,
    pub(crate) alert: Alert,
    /// How many alerts before it were folded into it, and when the first of them happened.
    pub(crate) folded: usize,
    pub(crate) folded_since: Option<common::Millis>,
    /// The outbox rows it covers.
    pub(crate) rows: Vec<i64>,
    /// The tail of stderr, or why there is none.
    pub(crate) stderr: Tail,
}

/// The end of a program's stderr at send time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    Text(String),
    NotKept(String),
}

/// The webhook's JSON body.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    #[serde(flatten)]
    alert: &'a Alert,
    /// RFC 3339, UTC.
    time: String,
    summary: String,
    folded: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    folded_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr_tail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr_not_kept: Option<&'a str>,
}

fn time(at: common::Millis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Message {
    /// The message for `rows` (oldest first, at least one), with `stderr` read for the newest.
    pub(crate) fn new(rows: &[Undelivered], stderr: Tail) -> Message {
        let newest = rows.last().expect("a message covers at least one alert");
        let folded = rows.len() - 1;
        Message {
            id: format!("alert-{}.{}", newest.id, sanitize(&newest.alert.cluster)),
            alert: newest.alert.clone(),
            folded,
            folded_since: (folded > 0).then(|| rows[0].alert.at),
            rows: rows.iter().map(|r| r.id).collect(),
            stderr,
        }
    }

    /// "and 14 more unexpected exits of web since 2026-12-03T12:00:01Z", when some were folded.
    pub(crate) fn folded_line(&self) -> Option<String> {
        let since = self.folded_since?;
        Some(format!(
            "and {} more {} of {} since {}",
            self.folded,
            self.alert.kind.plural(),
            self.alert.subject(),
            time(since)
        ))
    }

    /// A line saying what happened.
    pub(crate) fn summary(&self) -> String {
        let a = &self.alert;
        let what = match (&a.instance, &a.project, &a.host) {
            (Some(instance), _, _) => instance.clone(),
            (None, Some(project), _) => project.clone(),
            (None, None, Some(host)) => host.clone(),
            _ => String::new(),
        };
        match &a.host {
            Some(host) if a.instance.is_some() || a.project.is_some() => format!("{} {what} on {host}", a.kind),
            _ => format!("{} {what}", a.kind),
        }
    }

    pub(crate) fn subject(&self) -> String {
        let more = if self.folded > 0 {
            format!(" (+{} more)", self.folded)
        } else {
            String::new()
        };
        format!("[herzog {}] {}{more}", self.alert.cluster, self.summary())
    }

    /// The mail's text.
    pub(crate) fn text(&self) -> String {
        let a = &self.alert;
        let mut out = format!("{}\n\n{}\n", self.summary(), a.reason);
        if let Some(line) = self.folded_line() {
            out.push_str(&format!("{line}\n"));
        }
        out.push('\n');
        let fields = [
            ("event", Some(a.kind.name().to_string())),
            ("cluster", Some(a.cluster.clone())),
            ("time", Some(time(a.at))),
            ("project", a.project.clone()),
            ("fragment", a.fragment.clone()),
            ("attempt", a.attempt.map(|n| n.to_string())),
            ("service", a.service.clone()),
            ("instance", a.instance.clone()),
            ("host", a.host.clone()),
            ("exit", a.exit.clone()),
            ("alert id", Some(self.id.clone())),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                out.push_str(&format!("{name:>9}: {value}\n"));
            }
        }
        match &self.stderr {
            Tail::Text(text) => out.push_str(&format!("\nThe end of its stderr:\n\n{text}\n")),
            Tail::NotKept(why) => out.push_str(&format!("\nstderr: not kept ({why})\n")),
        }
        out
    }

    /// The webhook's body.
    pub(crate) fn json(&self) -> String {
        let (tail, not_kept) = match &self.stderr {
            Tail::Text(t) => (Some(t.as_str()), None),
            Tail::NotKept(why) => (None, Some(why.as_str())),
        };
        let body = Body {
            id: &self.id,
            alert: &self.alert,
            time: time(self.alert.at),
            summary: self.summary(),
            folded: self.folded,
            folded_since: self.folded_since.map(time),
            stderr_tail: tail,
            stderr_not_kept: not_kept,
        };
        serde_json::to_string(&body).unwrap_or_else(|e| format!("{{\"id\":\"{}\",\"error\":\"{e}\"}}", self.id))
    }
}

/// A name fit for a Message-ID's right side: letters, digits, '.' and '-'.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "herzog".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Recipient, StderrFrom};
    use common::alerts::AlertKind;

    fn row(id: i64, at: i64) -> Undelivered {
        Undelivered {
            id,
            origin: format!("service:1:{id}"),
            recipient: Recipient::Webhook("http://x/".into()),
            alert: Alert {
                kind: AlertKind::ServiceUnexpectedExit,
                at,
                cluster: "127.0.0.1:7373".into(),
                project: None,
                fragment: None,
                attempt: None,
                service: Some("web".into()),
                instance: Some("web:0".into()),
                host: Some("euclid".into()),
                exit: Some("exit code 3".into()),
                reason: "web:0 exited unexpectedly (3)".into(),
                stderr: StderrFrom::Instance {
                    worker: "euclid".into(),
                    run: 1,
                },
            },
        }
    }

    #[test]
    fn a_folded_message_counts_what_it_covers() {
        let rows: Vec<Undelivered> = (1..=15).map(|i| row(i, 1_700_000_000_000 + i)).collect();
        let m = Message::new(&rows, Tail::Text("boom".into()));
        assert_eq!(m.folded, 14);
        assert_eq!(m.rows.len(), 15);
        assert_eq!(m.id, "alert-15.127.0.0.1-7373");
        let line = m.folded_line().unwrap();
        assert!(
            line.starts_with("and 14 more unexpected exits of web since 2023-11-14T22:13:20Z"),
            "{line}"
        );
        let text = m.text();
        assert!(text.contains("service_unexpected_exit web:0 on euclid"), "{text}");
        assert!(text.contains("exit code 3") && text.contains("boom"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&m.json()).unwrap();
        assert_eq!(json["kind"], "service_unexpected_exit");
        assert_eq!(json["host"], "euclid");
        assert_eq!(json["folded"], 14);
        assert_eq!(json["stderr_tail"], "boom");
        assert_eq!(json["id"], "alert-15.127.0.0.1-7373");
    }

    #[test]
    fn a_single_alert_says_nothing_of_folding() {
        let m = Message::new(&[row(3, 0)], Tail::NotKept("stderr = \"discard\"".into()));
        assert_eq!(m.folded_line(), None);
        assert!(!m.subject().contains("more"));
        assert!(m.text().contains("stderr: not kept"));
    }
}
