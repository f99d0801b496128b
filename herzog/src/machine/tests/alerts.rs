//! The machine's alerts: which events raise them, for whom, and that each is one outbox row
//! per recipient in the event's own writes, with an effect to wake the sender.

use super::*;
use common::alerts::{AlertKind, AlertsSection, SmtpConfig};
use common::instances::{EventKind, InstanceEvent, InstanceId, InstanceReport, InstanceState, RunId};

fn section(on: Option<Vec<AlertKind>>) -> AlertsSection {
    AlertsSection {
        smtp: Some(SmtpConfig {
            host: "mail".into(),
            port: None,
            security: Default::default(),
            user: None,
            password_file: None,
            from: "herzog@x".into(),
        }),
        email: vec!["ops@x".into()],
        webhook: vec!["http://hooks/a".into()],
        on,
        ..AlertsSection::default()
    }
}

fn alerting(on: Option<Vec<AlertKind>>) -> Machine {
    machine().with_alerts(AlertRules::new(&section(on), "test".into()))
}

/// An alerting machine with one worker and the test services placed on it.
fn serving(on: Option<Vec<AlertKind>>) -> Machine {
    let mut m = alerting(on);
    ok(&mut m, 0, register_event("w1", 1, &[]));
    ok(
        &mut m,
        0,
        Event::ServicesReload {
            file: services_text(true),
        },
    );
    sched(&mut m, 0);
    m
}

/// The outbox rows among `writes`: (origin, recipient, kind, subject).
fn rows(writes: &[Write]) -> Vec<(String, String, AlertKind, String)> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::Alerts(rows) => Some(rows),
            _ => None,
        })
        .flatten()
        .map(|r| {
            (
                r.origin.clone(),
                r.recipient.stored(),
                r.alert.kind,
                r.alert.subject().to_string(),
            )
        })
        .collect()
}

fn wakes(effects: &[Effect]) -> usize {
    effects.iter().filter(|e| **e == Effect::Alerts).count()
}

#[test]
fn a_fragment_out_of_attempts_and_the_project_s_end_alert_everyone_concerned() {
    let mut m = alerting(None);
    let mut own = spec("wc -l", 1);
    own.alerts.webhook = vec!["http://mine/x".into()];
    ok(&mut m, 0, register_event("w1", 2, &[]));
    ok(&mut m, 0, add_event_with("p", &["a", "b"], own));
    sched(&mut m, 0);
    let out = ok(&mut m, 1, complete_event("w1", 1, Exit::Code(0), 1));
    assert!(rows(&out.writes).is_empty(), "a success alerts nothing while b runs");
    let out = ok(&mut m, 2, complete_event("w1", 2, Exit::Code(4), 2));
    let got = rows(&out.writes);
    let failed: Vec<_> = got.iter().filter(|r| r.2 == AlertKind::ProjectFailed).collect();
    let done: Vec<_> = got.iter().filter(|r| r.2 == AlertKind::ProjectDone).collect();
    let to = |v: &[&(String, String, AlertKind, String)]| v.iter().map(|r| r.1.clone()).collect::<Vec<_>>();
    let everyone = vec![
        "mailto:ops@x".to_string(),
        "http://hooks/a".into(),
        "http://mine/x".into(),
    ];
    assert_eq!(to(&failed), everyone);
    assert_eq!(to(&done), everyone);
    assert!(failed.iter().all(|r| r.0 == "project_failed:2" && r.3 == "p"));
    assert!(done.iter().all(|r| r.0 == "project_done:1:2"));
    assert_eq!(wakes(&out.effects), 1, "one wake for the batch");
    let Some(Write::Alerts(rows)) = out.writes.iter().find(|w| matches!(w, Write::Alerts(_))) else {
        unreachable!()
    };
    let alert = &rows[0].alert;
    assert_eq!(alert.exit.as_deref(), Some("exit code 4"));
    assert_eq!(alert.host.as_deref(), Some("w1"));
    assert_eq!(
        alert.stderr,
        StderrFrom::File {
            path: PathBuf::from("/results/p/logs/b.2.stderr")
        }
    );
}

#[test]
fn kinds_left_out_of_on_reach_only_the_project_s_own_recipients() {
    let mut m = alerting(Some(vec![AlertKind::WorkerLost]));
    let mut own = spec("wc -l", 1);
    own.alerts.notify = vec!["dev@x".into()];
    ok(&mut m, 0, register_event("w1", 1, &[]));
    ok(&mut m, 0, add_event_with("p", &["a"], own));
    sched(&mut m, 0);
    let out = ok(&mut m, 1, complete_event("w1", 1, Exit::Code(0), 1));
    let got = rows(&out.writes);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].1.as_str(), got[0].2), ("mailto:dev@x", AlertKind::ProjectDone));
}

#[test]
fn a_project_s_own_mail_needs_smtp() {
    let mut m = machine();
    let mut own = spec("wc -l", 1);
    own.alerts.notify = vec!["dev@x".into()];
    let out = step(&mut m, 0, add_event_with("p", &["a"], own));
    assert!(
        matches!(out.reply, Err(Rejected::Api(ApiError::InvalidValue { .. }))),
        "{:?}",
        out.reply
    );
}

#[test]
fn a_lost_worker_alerts_once_and_nothing_without_recipients() {
    let mut m = alerting(None);
    ok(&mut m, 0, register_event("w1", 1, &[]));
    let out = ok(&mut m, TIMEOUT + 1, Event::Tick);
    let got = rows(&out.writes);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.2 == AlertKind::WorkerLost && r.3 == "w1"));
    let out = ok(&mut m, 2 * TIMEOUT, Event::Tick);
    assert!(rows(&out.writes).is_empty(), "lost once");
    // Without [alerts], no row at all.
    let mut quiet = machine();
    ok(&mut quiet, 0, register_event("w1", 1, &[]));
    let out = ok(&mut quiet, TIMEOUT + 1, Event::Tick);
    assert!(rows(&out.writes).is_empty() && wakes(&out.effects) == 0);
}

fn services_text(alert: bool) -> common::services::ServicesFile {
    let text = format!("[services.web]\ncommand = \"/bin/web\"\nalert = {alert}\n");
    common::services::ServicesFile::parse(&text, std::path::Path::new("s.toml")).unwrap()
}

fn web_event(n: u32, kind: EventKind) -> Event {
    Event::InstanceEvents {
        worker: "w1".into(),
        events: vec![InstanceEvent {
            run: RunId(1),
            n,
            at: 5,
            instance: InstanceId {
                service: "web".into(),
                host: None,
                index: 0,
            },
            kind,
        }],
    }
}

#[test]
fn fatal_starts_and_unexpected_exits_of_services_alert_unless_switched_off() {
    let mut m = serving(None);
    let backoff = InstanceReport {
        run: RunId(1),
        instance: InstanceId {
            service: "web".into(),
            host: None,
            index: 0,
        },
        state: InstanceState::Backoff {
            retries: 1,
            exit: Exit::Code(7),
        },
        restarts: 0,
    };
    // The next start is under way when the FATAL event comes (before the report showing it).
    let mut starting = backoff.clone();
    starting.state = InstanceState::Starting {
        pid: Some(9),
        since: 1,
        retries: 1,
    };
    ok(
        &mut m,
        1,
        Event::InstancesReport {
            worker: "w1".into(),
            reports: vec![backoff],
        },
    );
    ok(
        &mut m,
        1,
        Event::InstancesReport {
            worker: "w1".into(),
            reports: vec![starting],
        },
    );
    // An expected exit alerts nothing; an unexpected one and a FATAL do.
    let exit = |expected| EventKind::Exited {
        exit: Exit::Code(3),
        expected,
    };
    assert!(rows(&ok(&mut m, 2, web_event(1, exit(true))).writes).is_empty());
    let got = rows(&ok(&mut m, 2, web_event(2, exit(false))).writes);
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|r| r.0 == "service:1:2" && r.2 == AlertKind::ServiceUnexpectedExit && r.3 == "web")
    );
    let out = ok(&mut m, 3, web_event(3, EventKind::Fatal { retries: 2 }));
    let Some(Write::Alerts(fatal)) = out.writes.iter().find(|w| matches!(w, Write::Alerts(_))) else {
        panic!("no alert for FATAL")
    };
    assert_eq!(fatal[0].alert.kind, AlertKind::ServiceFatal);
    assert_eq!(
        fatal[0].alert.exit.as_deref(),
        Some("exit code 7"),
        "the last failed start's"
    );
    assert_eq!(
        fatal[0].alert.stderr,
        StderrFrom::Instance {
            worker: "w1".into(),
            run: 1
        }
    );
    // The same event sent again has the same origin: the outbox keeps it once.
    let again = rows(&ok(&mut m, 4, web_event(3, EventKind::Fatal { retries: 2 })).writes);
    assert!(again.iter().all(|r| r.0 == "service:1:3"));

    ok(
        &mut m,
        5,
        Event::ServicesReload {
            file: services_text(false),
        },
    );
    assert!(
        rows(&ok(&mut m, 6, web_event(4, exit(false))).writes).is_empty(),
        "alert = false"
    );
}

#[test]
fn a_delivery_is_recorded() {
    let mut m = alerting(None);
    let out = ok(&mut m, 9, Event::AlertsDelivered { ids: vec![3, 4] });
    assert_eq!(out.writes, vec![Write::AlertsDelivered { ids: vec![3, 4], at: 9 }]);
}

#[test]
fn a_placement_its_worker_refuses_alerts_as_fatal() {
    let mut m = serving(Some(vec![AlertKind::ServiceFatal]));
    let run = m
        .services
        .instances()
        .values()
        .find_map(|k| k.placed.as_ref())
        .expect("web:0 placed")
        .run;
    let refused = Event::InstanceRefused {
        worker: "w1".into(),
        run,
        reason: "no user bob".into(),
    };
    let got = rows(&ok(&mut m, 1, refused).writes);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .all(|r| r.0 == format!("refused:{}", run.0) && r.2 == AlertKind::ServiceFatal && r.3 == "web")
    );
}

#[test]
fn a_job_s_end_alerts_no_one_its_caller_hears_it() {
    let mut m = alerting(None);
    ok(&mut m, 0, register_event("w1", 1, &[]));
    let request = common::job::JobRequest {
        command: common::job::JobCommand::Argv(vec!["false".into()]),
        host: None,
        env: BTreeMap::new(),
        cwd: None,
        from: PathBuf::from("/home/u"),
        interactive: Default::default(),
        requeue: false,
    };
    ok(&mut m, 1, Event::AddJob(Box::new(request)));
    let (_, effects) = sched(&mut m, 1);
    let attempt = effects
        .iter()
        .find_map(|e| match e {
            Effect::Start { start, .. } => Some(start.attempt.0),
            _ => None,
        })
        .expect("the job starts");
    let out = ok(&mut m, 2, complete_event("w1", attempt, Exit::Code(1), 2));
    assert!(rows(&out.writes).is_empty(), "{:?}", out.writes);
    assert_eq!(wakes(&out.effects), 0);
}

#[test]
fn a_webhook_s_credentials_stay_out_of_what_is_shown() {
    let shown = |u: &str| Recipient::Webhook(u.into()).shown();
    assert_eq!(
        shown("https://user:pass@hooks.example.org/x"),
        "https://***@hooks.example.org/x"
    );
    assert_eq!(shown("https://hooks.example.org/a@b"), "https://hooks.example.org/a@b");
    assert_eq!(shown("http://hooks/x"), "http://hooks/x");
    assert_eq!(Recipient::Email("ops@x".into()).shown(), "mailto:ops@x");
}
