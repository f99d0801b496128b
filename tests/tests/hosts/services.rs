//! A service on a host without the shared filesystem.

use super::*;

#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test hosts -- --ignored"]
fn a_service_on_a_host_without_the_shared_filesystem_runs_from_its_staged_files() {
    const TEST: &str = "a_service_on_a_host_without_the_shared_filesystem_runs_from_its_staged_files";
    let _serial = serial();
    let bed = Bed::up(TEST);
    let scratch = bed.host("pythagoras").scratch.clone();
    let config = format!(
        "[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"2s\"\n\n{}",
        hosts_toml(&bed, &["pythagoras"], None)
    );
    // The only worker sees nothing of shared/, where the service's program and config lie.
    let cluster = Hosted::start_with(bed, Some(&config), 1, &[("pythagoras", Files::Staged)]);
    let app = cluster.shared().join("app");
    std::fs::create_dir_all(&app).expect("failed to create app/");
    let served = cluster.dir().join("markers").join("served");
    write_script(
        &app.join("serve.sh"),
        &format!(
            "#!/bin/sh\nprintf '%s %s %s\\n' \"$(ip netns identify $$)\" \"$(cat \"$1\")\" \"$HERZOG_STAGE_DIR\" > {}\nexec sleep 1000\n",
            served.display()
        ),
    );
    std::fs::write(app.join("app.conf"), "answer=42").expect("failed to write app.conf");
    let app = app.display();
    std::fs::write(
        cluster.dir().join("services.toml"),
        format!("[services.app]\ncommand = \"{app}/serve.sh {app}/app.conf\"\nstage = [\"{app}/serve.sh\", \"{app}/app.conf\"]\n"),
    )
    .expect("failed to write services.toml");
    cluster.hz_ok(&["reload"]);

    let status = |cluster: &Hosted| -> Vec<common::instances::InstanceStatus> { cluster.hz_json(&["status"]) };
    let running = eventually("app:0 to run on pythagoras", Duration::from_secs(30), || {
        status(&cluster).into_iter().find(|i| {
            i.instance == "app:0"
                && i.host.as_deref() == Some("pythagoras")
                && matches!(i.state, common::instances::InstanceState::Running { .. })
        })
    });
    let line = eventually("the service to say where it runs", Duration::from_secs(10), || {
        std::fs::read_to_string(&served).ok().filter(|t| t.ends_with('\n'))
    });
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.len(), 3, "served: {line:?}");
    assert_eq!(
        cluster.bed.host_of_ns(words[0]).map(|h| h.name.as_str()),
        Some("pythagoras"),
        "served: {line:?}"
    );
    // Its argument named the staged config, whose copy it read.
    assert_eq!(words[1], "answer=42", "served: {line:?}");
    let stage = PathBuf::from(words[2]);
    assert_eq!(
        stage.parent(),
        Some(scratch.join("services").as_path()),
        "served: {line:?}"
    );
    assert!(stage.join("serve.sh").is_file() && stage.join("app.conf").is_file());
    println!("{TEST}: {running:?} ran from {}", stage.display());

    // Stopped, its placement's directory goes with it.
    cluster.hz_ok(&["stop", "app"]);
    eventually(
        "app:0 to stop and its staged files to go",
        Duration::from_secs(30),
        || {
            let stopped = status(&cluster)
                .iter()
                .any(|i| i.instance == "app:0" && i.state == common::instances::InstanceState::Stopped);
            (stopped && !stage.exists()).then_some(())
        },
    );
}
