//! Alerts through the real daemons to a local SMTP sink and a local HTTP sink: each event
//! arrives once, with what it is about, where, how it ended and the end of its stderr; a sink
//! that is down first gets it once it is up, also across a crash of herzog; a storm is folded.

use common::wire::ProjectProgress;
use std::time::Duration;
use tests::services::{self, LIMIT, status};
use tests::sinks::{self, Mail, Post};
use tests::{Cluster, eventually, write_script};

/// How long a message may take to come (retries back off 1, 2, 4, 8 s).
const COMES: Duration = Duration::from_secs(40);
/// How long to wait for a message that must not come (the absence cannot be awaited).
const QUIET: Duration = Duration::from_secs(3);

/// A cluster config: a 200 ms heartbeat, a 2 s worker timeout, and `[alerts]` to the SMTP sink
/// on `smtp` (mail to ops@example.org) and the HTTP sink on `http` (`/hook`), with `extra`
/// keys in `[alerts]`.
fn config(smtp: u16, http: u16, extra: &str) -> String {
    format!(
        r#"[herzog]
heartbeat_interval = "200ms"
worker_timeout = "2s"
[alerts]
email = ["ops@example.org"]
webhook = ["http://127.0.0.1:{http}/hook"]
{extra}
[alerts.smtp]
host = "127.0.0.1"
port = {smtp}
security = "none"
from = "herzog@example.org"
"#
    )
}

fn kind(post: &Post) -> String {
    post.body["kind"].as_str().unwrap_or_default().to_string()
}

/// Takes posts until one of each of `kinds` (by kind and subject) has come; returns them.
fn posts_for(received: &sinks::Received<Post>, wanted: &[(&str, &str)]) -> Vec<Post> {
    let mut got: Vec<Post> = Vec::new();
    while !wanted
        .iter()
        .all(|(k, s)| got.iter().any(|p| kind(p) == *k && subject(&p.body) == *s))
    {
        got.push(received.next(&format!("a webhook for each of {wanted:?} (got {got:?})"), COMES));
    }
    got
}

fn mails_for(received: &sinks::Received<Mail>, n: usize) -> Vec<Mail> {
    (0..n)
        .map(|i| received.next(&format!("mail {}", i + 1), COMES))
        .collect()
}

/// The project, service or worker a webhook body is about.
fn subject(body: &serde_json::Value) -> String {
    ["project", "service", "host"]
        .iter()
        .find_map(|k| body[*k].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn services_alert_once_per_fatal_start_and_unexpected_exit_unless_switched_off() {
    let (smtp, inbox) = sinks::smtp(0);
    let (http, posts) = sinks::http(0);
    let cluster = Cluster::start_with_config(Some(&config(smtp, http, "")), &[("euclid", 1)]);
    let dir = cluster.dir().display().to_string();
    write_script(
        &cluster.dir().join("fail.sh"),
        "#!/bin/sh\necho 'no config file' >&2\nexit 1\n",
    );
    write_script(
        &cluster.dir().join("crash.sh"),
        "#!/bin/sh\necho 'crash: out of cheese' >&2\nsleep 1\nexit 3\n",
    );
    services::services(
        &cluster,
        &format!(
            r#"[services.broken]
command = "{dir}/fail.sh"
startsecs = "300ms"
startretries = 1
[services.crashy]
command = "{dir}/crash.sh"
startsecs = "300ms"
autorestart = "never"
[services.quiet]
command = "{dir}/fail.sh"
startsecs = "300ms"
startretries = 1
alert = false
"#
        ),
    );
    cluster.hz_ok(&["reload"]);

    let got = posts_for(
        &posts,
        &[("service_fatal", "broken"), ("service_unexpected_exit", "crashy")],
    );
    let fatal = got.iter().find(|p| kind(p) == "service_fatal").unwrap();
    assert_eq!(fatal.path, "/hook");
    assert_eq!(fatal.body["instance"], "broken:0");
    assert_eq!(fatal.body["host"], "euclid");
    assert_eq!(fatal.body["exit"], "exit code 1", "{:?}", fatal.body);
    assert!(
        fatal.body["stderr_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("no config file"),
        "{:?}",
        fatal.body
    );
    assert_eq!(fatal.header("idempotency-key"), fatal.body["id"].as_str());
    let exit = got.iter().find(|p| kind(p) == "service_unexpected_exit").unwrap();
    assert_eq!(exit.body["instance"], "crashy:0");
    assert_eq!(exit.body["exit"], "exit code 3");
    assert!(
        exit.body["stderr_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("out of cheese"),
        "{:?}",
        exit.body
    );
    assert_eq!(got.len(), 2, "one webhook per event: {got:?}");

    // The same two by mail.
    let mails = mails_for(&inbox, 2);
    for mail in &mails {
        assert_eq!(mail.from, "herzog@example.org");
        assert_eq!(mail.to, vec!["ops@example.org".to_string()]);
        assert!(
            mail.header("Message-ID").is_some_and(|id| id.contains("alert-")),
            "{mail:?}"
        );
    }
    let fatal = mails
        .iter()
        .find(|m| {
            m.header("Subject")
                .is_some_and(|s| s.contains("service_fatal broken:0 on euclid"))
        })
        .unwrap_or_else(|| panic!("no mail for broken: {mails:?}"));
    assert!(fatal.body().contains("no config file"), "{}", fatal.body());
    let crash = mails
        .iter()
        .find(|m| {
            m.header("Subject")
                .is_some_and(|s| s.contains("service_unexpected_exit crashy:0"))
        })
        .unwrap_or_else(|| panic!("no mail for crashy: {mails:?}"));
    assert!(
        crash.body().contains("exit code 3") && crash.body().contains("out of cheese"),
        "{}",
        crash.body()
    );

    // `quiet` went FATAL too, and its event was stored with no alert beside it.
    eventually("quiet to be FATAL", LIMIT, || {
        (status(&cluster)["quiet:0"].state.name() == "FATAL").then_some(())
    });
    let rows: i64 = cluster
        .db()
        .query_row("SELECT count(*) FROM alerts WHERE body LIKE '%quiet%'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(rows, 0, "alert = false sends nothing");
    assert!(posts.within(QUIET).is_none(), "no second webhook");
    assert!(inbox.within(Duration::ZERO).is_none(), "no third mail");
}

#[test]
fn projects_alert_the_cluster_and_their_own_recipients() {
    let (smtp, mails) = sinks::smtp(0);
    let (http, posts) = sinks::http(0);
    let (own_http, own_posts) = sinks::http(0);
    let mut cluster = Cluster::start_with_config(Some(&config(smtp, http, "")), &[("euclid", 2)]);
    let own = format!("http://127.0.0.1:{own_http}/mine");

    // A bad address is refused before anything is added.
    let good = cluster.inputs("good", 2);
    let refused = cluster.hz(&["action", good.to_str().unwrap(), "true", "--notify", "nobody"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--notify nobody"));

    cluster.hz_ok(&[
        "action",
        good.to_str().unwrap(),
        "true",
        "--notify",
        "dev@example.org",
        "--webhook",
        &own,
    ]);
    let bad = cluster.inputs("bad", 1);
    let program = cluster.dir().join("bad.sh");
    write_script(&program, "#!/bin/sh\necho \"cannot read $1\" >&2\nexit 2\n");
    cluster.hz_ok(&["action", bad.to_str().unwrap(), program.to_str().unwrap()]);

    let got = posts_for(
        &posts,
        &[
            ("project_done", "good"),
            ("project_failed", "bad"),
            ("project_done", "bad"),
        ],
    );
    assert_eq!(got.len(), 3, "{got:?}");
    let failed = got.iter().find(|p| kind(p) == "project_failed").unwrap();
    assert_eq!(failed.body["host"], "euclid");
    assert_eq!(failed.body["exit"], "exit code 2");
    assert_eq!(failed.body["fragment"], "f0000");
    assert!(
        failed.body["stderr_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot read"),
        "{:?}",
        failed.body
    );
    let done = got
        .iter()
        .find(|p| kind(p) == "project_done" && p.body["project"] == "good")
        .unwrap();
    assert!(
        done.body["reason"].as_str().unwrap().contains("2 succeeded, 0 failed"),
        "{:?}",
        done.body
    );

    // The project's own webhook and address got its completion, and nothing of `bad`.
    let mine = own_posts.next("the project's own webhook", COMES);
    assert_eq!((kind(&mine).as_str(), mine.path.as_str()), ("project_done", "/mine"));
    assert_eq!(mine.body["project"], "good");
    let mails = mails_for(&mails, 4);
    let to_dev: Vec<&Mail> = mails.iter().filter(|m| m.to == ["dev@example.org"]).collect();
    assert_eq!(to_dev.len(), 1, "{mails:?}");
    assert!(to_dev[0].header("Subject").unwrap().contains("project_done good"));
    assert_eq!(mails.iter().filter(|m| m.to == ["ops@example.org"]).count(), 3);
    assert!(own_posts.within(QUIET).is_none() && posts.within(Duration::ZERO).is_none());

    // Kept with the project, shown by `hz list --json`.
    let list: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    let spec = list.iter().find(|p| p.name == "good").unwrap().spec.clone().unwrap();
    assert_eq!(spec.alerts.notify, vec!["dev@example.org".to_string()]);
    assert_eq!(spec.alerts.webhook, vec![own.clone()]);
    // And through a restart.
    cluster.restart_herzog();
    let list: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    assert_eq!(
        list.iter()
            .find(|p| p.name == "good")
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .alerts
            .webhook,
        vec![own]
    );
    assert!(
        posts.within(QUIET).is_none(),
        "nothing delivered is sent again after a restart"
    );
}

#[test]
fn a_lost_worker_alerts_once() {
    let (smtp, _mails) = sinks::smtp(0);
    let (http, posts) = sinks::http(0);
    let mut cluster = Cluster::start_with_config(
        Some(&config(smtp, http, "on = [\"worker_lost\"]")),
        &[("euclid", 1), ("newton", 1)],
    );
    cluster.kill_kinski("newton");
    let lost = posts.next("the worker_lost webhook", COMES);
    assert_eq!(kind(&lost), "worker_lost");
    assert_eq!(lost.body["host"], "newton");
    assert!(
        lost.body["reason"].as_str().unwrap().contains("lost"),
        "{:?}",
        lost.body
    );
    assert!(lost.body["stderr_not_kept"].is_string());
    assert!(posts.within(QUIET).is_none(), "one alert per loss");
}

#[test]
fn a_storm_is_folded_into_one_message_per_window_with_a_true_count() {
    let (smtp, _mails) = sinks::smtp(0);
    let (http, posts) = sinks::http(0);
    let cluster = Cluster::start_with_config(
        Some(&config(
            smtp,
            http,
            "on = [\"service_unexpected_exit\"]\nrate_window = \"4s\"",
        )),
        &[("euclid", 1)],
    );
    let dir = cluster.dir().display().to_string();
    write_script(
        &cluster.dir().join("flap.sh"),
        "#!/bin/sh\necho 'flapping' >&2\nsleep 1.2\nexit 3\n",
    );
    services::services(
        &cluster,
        &format!(
            "[services.flappy]\ncommand = \"{dir}/flap.sh\"\nstartsecs = \"100ms\"\nautorestart = \"unexpected\"\nstartretries = \"forever\"\n"
        ),
    );
    cluster.hz_ok(&["reload"]);
    // The first at once, the second a window later with what came meanwhile (a crash after a
    // second up is restarted at once: an exit every 1.2 s).
    let first = posts.next("the first alert of the storm", COMES);
    assert_eq!(first.body["folded"], 0);
    let second = posts.next("the folded alert", COMES);
    let folded = second.body["folded"].as_u64().unwrap();
    assert!(folded >= 1, "{:?}", second.body);
    assert!(
        second.body["summary"].as_str().is_some() && second.body["folded_since"].is_string(),
        "{:?}",
        second.body
    );
    cluster.hz_ok(&["stop", "flappy"]);
    eventually("flappy to stop", LIMIT, || {
        (status(&cluster)["flappy:0"].state.name() == "STOPPED").then_some(())
    });
    let exits = services::events(&cluster)
        .iter()
        .filter(|e| e.service == "flappy" && services::word(e) == "exited")
        .filter(|e| matches!(e.kind, common::instances::EventKind::Exited { expected: false, .. }))
        .count() as u64;
    let mut covered = 1 + 1 + folded;
    let mut messages = 2;
    while covered < exits {
        let more = posts.next(&format!("alerts for all {exits} exits (covered {covered})"), COMES);
        covered += 1 + more.body["folded"].as_u64().unwrap();
        messages += 1;
    }
    assert_eq!(covered, exits, "every exit is counted once");
    assert!(messages < exits, "{messages} messages for {exits} exits: folded");
    assert!(posts.within(Duration::from_secs(4)).is_none(), "nothing more");
}

#[test]
fn a_sink_down_at_first_gets_the_message_when_it_comes_up() {
    let (smtp_port, http_port) = (sinks::free_port(), sinks::free_port());
    let mut cluster = Cluster::start_with_config(
        Some(&config(smtp_port, http_port, "on = [\"project_done\"]")),
        &[("euclid", 1)],
    );
    let input = cluster.inputs("late", 1);
    cluster.hz_ok(&["action", input.to_str().unwrap(), "true"]);
    cluster.herzog_wait_for("alert delivery failed", COMES);
    let (_, posts) = sinks::http(http_port);
    let (_, mails) = sinks::smtp(smtp_port);
    let post = posts.next("the webhook once its sink is up", COMES);
    assert_eq!(
        (kind(&post).as_str(), subject(&post.body).as_str()),
        ("project_done", "late")
    );
    let mail = mails.next("the mail once its sink is up", COMES);
    assert!(mail.header("Subject").unwrap().contains("project_done late"));
    assert!(posts.within(QUIET).is_none() && mails.within(Duration::ZERO).is_none());
}

#[test]
fn an_undelivered_alert_survives_a_crash_of_herzog() {
    let (smtp, _mails) = sinks::smtp(0);
    let http_port = sinks::free_port();
    let mut cluster = Cluster::start_with_config(
        Some(&config(smtp, http_port, "on = [\"project_done\"]")),
        &[("euclid", 1)],
    );
    let input = cluster.inputs("crashing", 1);
    cluster.hz_ok(&["action", input.to_str().unwrap(), "true"]);
    cluster.herzog_wait_for("alert delivery failed", COMES);
    cluster.kill_herzog();
    let (_, posts) = sinks::http(http_port);
    cluster.start_herzog();
    let post = posts.next("the webhook after herzog's restart", COMES);
    assert_eq!(
        (kind(&post).as_str(), subject(&post.body).as_str()),
        ("project_done", "crashing")
    );
    cluster.herzog_wait_for("alert delivered", COMES);
    assert!(posts.within(QUIET).is_none(), "delivered once");
    let undelivered: i64 = cluster
        .db()
        .query_row(
            "SELECT count(*) FROM alerts WHERE delivered_at IS NULL AND recipient LIKE 'http%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(undelivered, 0);
}

#[test]
fn a_bad_alerts_section_refuses_to_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    for (text, key) in [
        ("[alerts]\non = [\"project_finished\"]\n", "project_finished"),
        ("[alerts]\nemail = [\"ops@example.org\"]\n", "alerts.smtp"),
        (
            "[alerts.smtp]\nhost = \"127.0.0.1\"\nfrom = \"h@x\"\nuser = \"u\"\npassword_file = \"/nonexistent/pw\"\n",
            "alerts.smtp.password_file",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = tests::output_within(
            tests::by_path::clean_command(&tests::bin("herzog"))
                .arg("--config")
                .arg(&config)
                .args(["--listen", "127.0.0.1:0", "--state-dir"])
                .arg(dir.path().join("state"))
                .arg("--tls")
                .arg(tests::bundle(dir.path(), "herzog", "coordinator")),
            Duration::from_secs(20),
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {said}");
        assert!(said.contains(key), "{text}: {said}");
    }
}
