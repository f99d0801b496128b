//! Alerts, decided where their event happens: a fragment failed for good, a project finished,
//! a worker was lost, a service instance went FATAL or exited unexpectedly. Each becomes one
//! outbox row per recipient, written in the same commit as the event ("commit, then act"),
//! and an effect that wakes the sender (crate::alerts), which delivers them off the loop.

use super::*;
use common::alerts::{AlertKind, AlertsSection};
use common::instances::{EventKind, InstanceEvent, InstanceState};
use serde::{Deserialize, Serialize};

/// Who gets which alerts, from `[alerts]`.
#[derive(Clone, Debug, Default)]
pub(crate) struct AlertRules {
    /// The kinds the cluster-wide recipients get.
    on: BTreeSet<AlertKind>,
    /// Cluster-wide recipients: mail addresses and webhook URLs.
    recipients: Vec<Recipient>,
    /// Whether mail can be sent at all (`[alerts.smtp]`): `--notify` needs it.
    smtp: bool,
    /// How the cluster is named in messages.
    cluster: String,
    /// The last failed start's exit of each placement reported backing off or FATAL: the
    /// FATAL event itself carries none, and may come before the report that shows it.
    last_exit: BTreeMap<i64, String>,
}

impl AlertRules {
    pub(crate) fn new(section: &AlertsSection, cluster: String) -> AlertRules {
        let recipients = section
            .email
            .iter()
            .map(|a| Recipient::Email(a.clone()))
            .chain(section.webhook.iter().map(|u| Recipient::Webhook(u.clone())))
            .collect();
        AlertRules {
            on: AlertKind::ALL.into_iter().filter(|k| section.enabled(*k)).collect(),
            recipients,
            smtp: section.smtp.is_some(),
            cluster,
            last_exit: BTreeMap::new(),
        }
    }
}

/// Where an alert goes: a mail address, or a URL POSTed to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Recipient {
    Email(String),
    Webhook(String),
}

impl Recipient {
    /// As the outbox keeps it: `mailto:ADDR`, or the URL.
    /// The recipient as logs show it: a webhook's credentials (`user:pass@`) left out.
    pub(crate) fn shown(&self) -> String {
        match self {
            Recipient::Webhook(u) => match (u.find("://"), u.find('@')) {
                (Some(scheme), Some(at)) if at > scheme && !u[scheme + 3..at].contains('/') => {
                    format!("{}***@{}", &u[..scheme + 3], &u[at + 1..])
                }
                _ => u.clone(),
            },
            Recipient::Email(_) => self.stored(),
        }
    }

    pub(crate) fn stored(&self) -> String {
        match self {
            Recipient::Email(a) => format!("mailto:{a}"),
            Recipient::Webhook(u) => u.clone(),
        }
    }

    pub(crate) fn parse(stored: &str) -> Recipient {
        match stored.strip_prefix("mailto:") {
            Some(a) => Recipient::Email(a.to_string()),
            None => Recipient::Webhook(stored.to_string()),
        }
    }
}

/// Where the tail of stderr is read at send time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub(crate) enum StderrFrom {
    /// An attempt's log file in the results folder.
    File { path: PathBuf },
    /// A service placement's kept stderr, read through its worker.
    Instance { worker: String, run: i64 },
    /// Nothing to read, and why.
    NotKept { why: String },
}

/// One alert, as the outbox keeps it (JSON) and messages show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Alert {
    pub(crate) kind: AlertKind,
    /// When it happened (wall time).
    pub(crate) at: Millis,
    pub(crate) cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fragment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attempt: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) instance: Option<String>,
    /// The worker it happened on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    /// Exit status or signal, when a program ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exit: Option<String>,
    /// What happened, in a line.
    pub(crate) reason: String,
    pub(crate) stderr: StderrFrom,
}

impl Alert {
    /// What it is about, for folding a storm: the project, service or worker.
    pub(crate) fn subject(&self) -> &str {
        self.project
            .as_deref()
            .or(self.service.as_deref())
            .or(self.host.as_deref())
            .unwrap_or("")
    }
}

/// One outbox row to write: the alert for one recipient. `origin` names the event for ever,
/// so an event reported twice (a worker resending what herzog stored) makes one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OutboxRow {
    pub(crate) origin: String,
    pub(crate) recipient: Recipient,
    pub(crate) alert: Alert,
}

impl Machine {
    /// Sets who gets which alerts.
    pub(crate) fn with_alerts(mut self, rules: AlertRules) -> Self {
        self.alerts = rules;
        self
    }

    /// Refuses a project's own mail recipients when herzog cannot send mail.
    pub(super) fn check_project_alerts(&self, spec: &RunSpec) -> Result<(), ApiError> {
        if !spec.alerts.notify.is_empty() && !self.alerts.smtp {
            return Err(ApiError::InvalidValue {
                what: "--notify".into(),
                reason: "herzog has no [alerts.smtp] in its cluster.toml to send mail through: ask its admin, or use --webhook".into(),
            });
        }
        Ok(())
    }

    /// Queues `alert` for the cluster-wide recipients (if its kind is on) and `extra`.
    fn raise(&mut self, origin: String, alert: Alert, extra: &[Recipient]) {
        let mut to: Vec<Recipient> = Vec::new();
        if self.alerts.on.contains(&alert.kind) {
            to.extend(self.alerts.recipients.iter().cloned());
        }
        to.extend(extra.iter().cloned());
        to.sort();
        to.dedup();
        if to.is_empty() {
            return;
        }
        tracing::info!(kind = %alert.kind, subject = alert.subject(), recipients = to.len(), "alert queued");
        let rows = to
            .into_iter()
            .map(|recipient| OutboxRow {
                origin: origin.clone(),
                recipient,
                alert: alert.clone(),
            })
            .collect();
        self.writes.push(Write::Alerts(rows));
        // One wake does for a run of alerts (a wake is idempotent: only its cost is saved).
        if self.effects.last() != Some(&Effect::Alerts) {
            self.effects.push(Effect::Alerts);
        }
    }

    fn alert(&self, kind: AlertKind, at: Millis, reason: String) -> Alert {
        Alert {
            kind,
            at,
            cluster: self.alerts.cluster.clone(),
            project: None,
            fragment: None,
            attempt: None,
            service: None,
            instance: None,
            host: None,
            exit: None,
            reason,
            stderr: StderrFrom::NotKept {
                why: "no program output goes with this event".into(),
            },
        }
    }

    /// After an attempt ended and its fragment moved on: a fragment failed for good alerts
    /// `project_failed`; a project with nothing left pending or running alerts `project_done`.
    pub(super) fn fragment_alerts(
        &mut self,
        now: Now,
        live: Live,
        attempt: AttemptId,
        worker: &str,
        end: AttemptEnd,
        exit: Option<&Exit>,
    ) {
        let (id, index) = (live.project, live.index);
        // A job's end goes to its caller (`hz run`), not to the alert recipients.
        let Some(p) = self.projects.get(&id).filter(|p| p.job.is_none()) else {
            return;
        };
        let extra: Vec<Recipient> = p
            .spec
            .alerts
            .notify
            .iter()
            .map(|a| Recipient::Email(a.clone()))
            .chain(p.spec.alerts.webhook.iter().map(|u| Recipient::Webhook(u.clone())))
            .collect();
        let fragment = p.names.get(index as usize).to_string();
        let failed = match &p.fragments[index as usize].state {
            FragmentState::Failed { reason, .. } if end != AttemptEnd::Cancelled => Some(reason.clone()),
            _ => None,
        };
        let done = p.counts.pending == 0 && p.counts.running == 0;
        let counts = p.counts.clone();
        let name = p.name.clone();
        let stderr = match (exit, &p.spec.settings.stderr) {
            (None, _) => StderrFrom::NotKept {
                why: "the attempt never reported an end (its worker was lost or it did not start)".into(),
            },
            (Some(_), common::run_settings::Sink::Discard) => StderrFrom::NotKept {
                why: "the project discards stderr (hz action --stderr discard)".into(),
            },
            (Some(_), _) => StderrFrom::File {
                path: attempt_paths(&p.results_dir, &fragment, attempt).1,
            },
        };
        if let Some(reason) = failed {
            let mut alert = self.alert(
                AlertKind::ProjectFailed,
                now.wall,
                format!("fragment {fragment} failed: {reason}"),
            );
            alert.project = Some(name.clone());
            alert.fragment = Some(fragment.clone());
            alert.attempt = Some(attempt.0);
            alert.host = Some(worker.to_string());
            alert.exit = exit.map(exit_text);
            alert.stderr = stderr.clone();
            self.raise(format!("project_failed:{}", attempt.0), alert, &extra);
        }
        if done {
            let reason = format!(
                "project {name} finished: {} succeeded, {} failed of {}",
                counts.succeeded,
                counts.failed,
                counts.succeeded + counts.failed
            );
            let mut alert = self.alert(AlertKind::ProjectDone, now.wall, reason);
            alert.project = Some(name);
            alert.stderr = StderrFrom::NotKept {
                why: "a finished project's stderr is per fragment: `hz logs`".into(),
            };
            // The last attempt to end names this finish for ever (a retry finishes it anew).
            self.raise(format!("project_done:{}:{}", id.0, attempt.0), alert, &extra);
        }
    }

    /// Keeps the exits of failed starts that reports show, for the FATAL alert that follows.
    pub(super) fn note_exits(&mut self, reports: &[common::instances::InstanceReport]) {
        for r in reports {
            match &r.state {
                InstanceState::Backoff { exit, .. } | InstanceState::Fatal { exit, .. } => {
                    self.alerts.last_exit.insert(r.run.0, exit_text(exit));
                }
                // Up, or ended otherwise: what it failed with before no longer matters. A
                // start under way keeps it (the FATAL after it may come first).
                InstanceState::Running { .. } | InstanceState::Stopped | InstanceState::Exited { .. } => {
                    self.alerts.last_exit.remove(&r.run.0);
                }
                _ => {}
            }
        }
    }

    /// A worker silent past the timeout.
    pub(super) fn worker_lost_alert(&mut self, now: Now, worker: &str, attempts: usize) {
        let reason = format!(
            "worker {worker} silent for {} s: lost; {} requeued",
            self.timing.worker_timeout_ms / 1000,
            common::count(attempts as u64, "attempt")
        );
        let mut alert = self.alert(AlertKind::WorkerLost, now.wall, reason);
        alert.host = Some(worker.to_string());
        self.raise(format!("worker_lost:{worker}:{}", now.wall), alert, &[]);
    }

    /// A worker's report of an instance event: FATAL, or an unexpected exit, alerts unless
    /// its service says `alert = false`.
    pub(super) fn instance_alert(&mut self, worker: &str, e: &InstanceEvent) {
        let kind = match &e.kind {
            EventKind::Fatal { .. } => AlertKind::ServiceFatal,
            EventKind::Exited { expected: false, .. } => AlertKind::ServiceUnexpectedExit,
            _ => return,
        };
        let service = &e.instance.service;
        if self.services.file().services.get(service).is_some_and(|s| !s.alert) {
            return;
        }
        let exit = match &e.kind {
            EventKind::Exited { exit, .. } => Some(exit_text(exit)),
            // The last failed start's exit, as the worker reported the instance's state.
            // (Taken: the placement is done failing; a resent event's row is kept once anyway.)
            _ => self.alerts.last_exit.remove(&e.run.0),
        };
        let mut alert = self.alert(kind, e.at, format!("{} {}", e.instance, e.kind));
        alert.service = Some(service.clone());
        alert.instance = Some(e.instance.to_string());
        alert.host = Some(worker.to_string());
        alert.exit = exit;
        alert.stderr = StderrFrom::Instance {
            worker: worker.to_string(),
            run: e.run.0,
        };
        self.raise(format!("service:{}:{}", e.run.0, e.n), alert, &[]);
    }

    /// A worker refused to run a placement: it is FATAL until `hz start`, which alerts as a
    /// FATAL start does (once per placement).
    pub(super) fn refused_alert(&mut self, now: Now, worker: &str, run: common::instances::RunId, reason: &str) {
        let Some(id) = self
            .services
            .instances()
            .iter()
            .find(|(_, k)| k.placed.as_ref().is_some_and(|p| p.run == run && p.worker == worker))
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        if self.services.file().services.get(&id.service).is_some_and(|s| !s.alert) {
            return;
        }
        let mut alert = self.alert(
            AlertKind::ServiceFatal,
            now.wall,
            format!("{id} FATAL: refused by its worker: {reason}"),
        );
        alert.service = Some(id.service.clone());
        alert.instance = Some(id.to_string());
        alert.host = Some(worker.to_string());
        alert.stderr = StderrFrom::NotKept {
            why: "it never started".into(),
        };
        self.raise(format!("refused:{}", run.0), alert, &[]);
    }

    /// The sender delivered these outbox rows: never sent again.
    pub(super) fn alerts_delivered(&mut self, now: Now, ids: Vec<i64>) {
        if !ids.is_empty() {
            self.writes.push(Write::AlertsDelivered { ids, at: now.wall });
        }
    }
}

/// An exit as messages say it: `exit code 3`, `signal 9`, `start failed: ...`.
fn exit_text(exit: &Exit) -> String {
    match exit {
        Exit::Code(c) => format!("exit code {c}"),
        other => other.to_string(),
    }
}
