//! The restart policy on real daemons and real processes, as supervisord users know it:
//! `autorestart` against each way a program can end, a crash loop backing off to FATAL with
//! its delays measured from the event log, and a services file written in YAML.
//!
//! ```text
//! cargo build --workspace && cargo test -p tests --test service_policy -- --nocapture
//! ```

use common::instances::{EventKind, InstanceState};
use common::wire::Exit;
use tests::services::{LIMIT, events, running, services, status, word};
use tests::{Cluster, eventually, write_script};

/// One worker and a short heartbeat; `extra` is added to the cluster's config.
fn cluster(extra: &str) -> Cluster {
    Cluster::start_with_config(
        Some(&format!(
            "[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"2s\"\n{extra}"
        )),
        &[("euclid", 1)],
    )
}

#[test]
fn autorestart_never_unexpected_always_against_exit_0_exit_3_and_sigkill() {
    let cluster = cluster("");
    let dir = cluster.dir().display().to_string();
    // Up for longer than startsecs (and than the second within which any exit counts as a
    // failed start), then ends as its argument says.
    write_script(
        &cluster.dir().join("end.sh"),
        "#!/bin/sh\nsleep 1.5\ncase \"$1\" in\n  kill) kill -9 $$ ;;\n  *) exit \"$1\" ;;\nesac\n",
    );
    let policies = ["never", "unexpected", "always"];
    let ends = ["0", "3", "kill"];
    let mut file = String::new();
    for policy in policies {
        for end in ends {
            file += &format!(
                "[services.{policy}-{end}]\ncommand = \"{dir}/end.sh {end}\"\nautorestart = \"{policy}\"\nstartsecs = \"500ms\"\n"
            );
        }
    }
    services(&cluster, &file);
    cluster.hz_ok(&["reload"]);

    // supervisord's table: `never` leaves every end EXITED; `unexpected` restarts what is not
    // in exitcodes ([0]), a signal included; `always` restarts every end.
    let restarted = |policy: &str, end: &str| policy == "always" || (policy == "unexpected" && end != "0");
    let settled = eventually("every instance to end or restart", LIMIT, || {
        let now = status(&cluster);
        let mut seen = Vec::new();
        for policy in policies {
            for end in ends {
                let instance = format!("{policy}-{end}:0");
                let i = now.get(&instance)?;
                let done = if restarted(policy, end) {
                    i.restarts >= 1
                } else {
                    matches!(i.state, InstanceState::Exited { .. })
                };
                if !done {
                    return None;
                }
                seen.push((instance, i.state.clone(), i.restarts));
            }
        }
        Some(seen)
    });
    for (instance, state, restarts) in &settled {
        println!("{instance}: {} after {restarts} restarts", state.name());
        let (policy, end) = instance.trim_end_matches(":0").split_once('-').expect("policy-end");
        let exit = match end {
            "kill" => Exit::Signal(9),
            code => Exit::Code(code.parse().expect("a code")),
        };
        if restarted(policy, end) {
            assert!(
                !matches!(state, InstanceState::Exited { .. } | InstanceState::Fatal { .. }),
                "{instance} is {state:?}"
            );
        } else {
            assert_eq!(
                *state,
                InstanceState::Exited {
                    exit,
                    expected: end == "0"
                },
                "{instance}"
            );
            assert_eq!(*restarts, 0, "{instance} was restarted");
        }
    }
    // The log says each crash was followed by a start, and each end left alone by none.
    let log = events(&cluster);
    for (instance, _, _) in &settled {
        let words: Vec<String> = log.iter().filter(|e| &e.instance == instance).map(word).collect();
        let after_exit: Vec<&str> = words
            .iter()
            .map(String::as_str)
            .skip_while(|w| *w != "exited")
            .take(2)
            .collect();
        let policy = instance.split('-').next().expect("policy");
        let end = instance.trim_end_matches(":0").rsplit('-').next().expect("end");
        let expected: &[&str] = if restarted(policy, end) {
            &["exited", "started"]
        } else {
            &["exited"]
        };
        assert_eq!(after_exit, expected, "{instance}: {words:?}");
    }
}

#[test]
fn a_crash_loop_backs_off_1_2_4_seconds_then_is_fatal() {
    let cluster = cluster("");
    let dir = cluster.dir().display().to_string();
    write_script(
        &cluster.dir().join("fail.sh"),
        "#!/bin/sh\necho 'no config' >&2\nexit 1\n",
    );
    services(
        &cluster,
        &format!("[services.broken]\ncommand = \"{dir}/fail.sh\"\nstartretries = 3\n"),
    );
    cluster.hz_ok(&["reload"]);
    eventually("broken:0 to be FATAL", LIMIT, || {
        matches!(status(&cluster)["broken:0"].state, InstanceState::Fatal { .. }).then_some(())
    });
    let log: Vec<_> = eventually("the FATAL in the event log", LIMIT, || {
        let log: Vec<_> = events(&cluster)
            .into_iter()
            .filter(|e| e.instance == "broken:0" && !matches!(e.kind, EventKind::Placed))
            .collect();
        log.iter()
            .any(|e| matches!(e.kind, EventKind::Fatal { .. }))
            .then_some(log)
    });
    let words: Vec<String> = log.iter().map(word).collect();
    assert_eq!(
        words,
        [
            "started", "backoff", "started", "backoff", "started", "backoff", "started", "fatal"
        ],
        "four failed starts: three retries, then FATAL"
    );
    let told: Vec<u64> = log
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Backoff { delay_ms, .. } => Some(delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(told, [1000, 2000, 4000]);
    assert!(matches!(log[7].kind, EventKind::Fatal { retries: 4 }), "{:?}", log[7]);
    // Measured: from each backoff to the next start (kinski's clock stamps both).
    let waited: Vec<i64> = log
        .windows(2)
        .filter(|w| word(&w[0]) == "backoff")
        .map(|w| w[1].at - w[0].at)
        .collect();
    println!("backoff delays measured: {waited:?} ms (told: {told:?} ms)");
    for (waited, told) in waited.iter().zip(&told) {
        let told = i64::try_from(*told).expect("small");
        assert!(
            *waited >= told - 20 && *waited < told + 2000,
            "waited {waited} ms where {told} ms was told"
        );
    }
    assert!(
        waited[1] * 2 > waited[0] * 3 && waited[2] * 2 > waited[1] * 3,
        "the delays do not grow: {waited:?}"
    );
}

#[test]
fn a_services_file_in_yaml_runs_reloads_and_is_refused_with_the_line_of_an_unknown_key() {
    let cluster = cluster("services = \"services.yaml\"\n");
    let dir = cluster.dir().display().to_string();
    write_script(
        &cluster.dir().join("serve.sh"),
        "#!/bin/sh\necho \"up $MODE\"\nexec sleep 1000\n",
    );
    let yaml = cluster.dir().join("services.yaml");
    let write = |numprocs: u32, extra: &str| {
        std::fs::write(
            &yaml,
            format!(
                "services:\n  web:\n    command: {dir}/serve.sh\n    numprocs: {numprocs}\n    startsecs: 0\n    env:\n      MODE: yaml\n{extra}"
            ),
        )
        .expect("write services.yaml");
    };
    write(2, "");
    let said = cluster.hz_ok(&["reload"]);
    assert!(said.contains("added: web"), "{said}");
    let before = running(&cluster, &["web:0", "web:1"]);
    assert!(
        tests::environ(before["web:0"]).contains(&"MODE=yaml".to_string()),
        "the env of the YAML file reaches the program"
    );

    // A YAML change applies as a TOML one does: one more instance, the others untouched.
    write(3, "");
    cluster.hz_ok(&["reload"]);
    let after = running(&cluster, &["web:0", "web:1", "web:2"]);
    assert_eq!((after["web:0"], after["web:1"]), (before["web:0"], before["web:1"]));

    // An unknown key is refused with its name and line; nothing changes.
    write(3, "    numproc: 2\n");
    let err = cluster.hz_fails(&["reload"], 2);
    assert!(
        err.contains("numproc") && err.contains("line 8") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(running(&cluster, &["web:0", "web:1", "web:2"]), after);
}
