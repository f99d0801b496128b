//! herzog killed mid-project on staged hosts: no output lost, nothing rerun, prepared
//! directories and SSH masters cleaned up.

use super::*;

#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test hosts -- --ignored"]
fn herzog_killed_mid_staged_project_loses_no_output_and_reruns_nothing_that_succeeded() {
    const TEST: &str = "herzog_killed_mid_staged_project_loses_no_output_and_reruns_nothing_that_succeeded";
    const N: usize = 40;
    const STAGED: [&str; 2] = ["pythagoras", "leibniz"];
    let _serial = serial();
    let bed = Bed::up(TEST);
    let config = hosts_toml(&bed, &STAGED, None);
    let hosts = [("pythagoras", Files::Staged), ("leibniz", Files::Staged)];
    let mut cluster = Hosted::start_with(bed, Some(&config), 2, &hosts);
    let inputs = varied_inputs(&cluster.shared().join("crash"), N);
    let program = cluster.program_at(&inputs.join("bin").join("where.sh"));
    cluster.hz_ok(&[
        "action",
        inputs.to_str().expect("UTF-8"),
        &program,
        "--env",
        "SLEEP=0.2",
    ]);
    let done_before = eventually("a quarter of the project done", Duration::from_secs(60), || {
        let done = db_fragments(&cluster.db(), "crash")
            .iter()
            .filter(|f| f.state == "succeeded")
            .count();
        (done >= N / 4).then_some(done)
    });
    let succeeded_before: BTreeMap<String, i64> = db_fragments(&cluster.db(), "crash")
        .into_iter()
        .filter(|f| f.state == "succeeded")
        .map(|f| (f.name, f.attempt_id.expect("a success names its attempt")))
        .collect();
    // Killed while attempts run and completions (with their fetches) are on their way.
    cluster.restart_herzog();
    cluster.hz_ok(&["progress", "crash", "--watch"]);
    let fragments = assert_each_fragment_succeeded_once(&cluster.db(), "crash", N);
    for f in &fragments {
        if let Some(attempt) = succeeded_before.get(&f.name) {
            assert_eq!(
                f.attempt_id,
                Some(*attempt),
                "{} succeeded before the crash and ran again",
                f.name
            );
            assert_eq!(f.attempts.len(), 1, "{} ran again: {:?}", f.name, f.attempts);
        }
    }
    // Every output came back, whole: the same bytes as the program makes from the input.
    let outputs = files(&cluster.results("crash").join("output"));
    assert_eq!(outputs.len(), 2 * N, "outputs: {:?}", outputs.keys());
    for (name, bytes) in &outputs {
        if let Some(input) = name.strip_suffix(".out") {
            let text = std::fs::read_to_string(inputs.join(input)).expect("the input");
            let expected: String = text.replace('x', "y").lines().rev().map(|l| format!("{l}\n")).collect();
            assert_eq!(String::from_utf8_lossy(bytes), expected, "{name}");
        }
    }
    let logs = accepted_logs(&cluster.db(), &cluster.results("crash"), "crash");
    assert!(
        logs.values().all(|(out, _)| !out.is_empty()),
        "a fragment's stdout did not come back"
    );
    println!(
        "{TEST}: herzog killed with {done_before} of {N} done; the project completed, nothing re-ran, every output came back"
    );
}

/// `pid` and its descendants, stopped (SIGSTOP) until dropped (SIGCONT): a host's sshd that
/// no longer answers.
struct Frozen(Vec<i32>);

impl Frozen {
    fn tree(root: i32) -> Frozen {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        // The root first, so it forks nothing while its descendants are found.
        kill(Pid::from_raw(root), Signal::SIGSTOP).expect("failed to stop sshd");
        let pids: Vec<i32> = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let mut all = vec![root];
        let mut i = 0;
        while i < all.len() {
            let parent = all[i] as u32;
            all.extend(pids.iter().filter(|p| tests::parent_of(**p) == Some(parent)));
            i += 1;
        }
        for pid in &all[1..] {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
        }
        Frozen(all)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGCONT);
        }
    }
}

/// The attempts that have a directory in `scratch`.
fn prepared(scratch: &Path) -> BTreeSet<i64> {
    std::fs::read_dir(scratch)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test hosts -- --ignored"]
fn a_directory_prepared_for_an_attempt_herzog_requeued_after_its_crash_is_removed() {
    const TEST: &str = "a_directory_prepared_for_an_attempt_herzog_requeued_after_its_crash_is_removed";
    const N: usize = 4;
    let _serial = serial();
    let bed = Bed::up(TEST);
    let config = hosts_toml(&bed, &["pythagoras"], None);
    let scratch = bed.host("pythagoras").scratch.clone();
    let sshd = bed.sshd_pid("pythagoras") as i32;
    let hosts = [("euclid", Files::Shared), ("pythagoras", Files::Staged)];
    let mut cluster = Hosted::start_with(bed, Some(&config), 1, &hosts);
    eventually("pythagoras ready for staging", Duration::from_secs(60), || {
        cluster
            .workers()
            .iter()
            .any(|w| w.name == "pythagoras" && w.staging == "ssh ready")
            .then_some(())
    });
    // pythagoras's sshd stops answering: an upload hangs once kinski has prepared its directory.
    let frozen = Frozen::tree(sshd);
    let inputs = varied_inputs(&cluster.shared().join("prep"), N);
    let program = cluster.program();
    cluster.hz_ok(&["action", inputs.to_str().expect("UTF-8"), &program]);
    eventually("a directory prepared on pythagoras", Duration::from_secs(60), || {
        (!prepared(&scratch).is_empty()).then_some(())
    });
    // herzog dies before the upload and the start: kinski keeps the directories...
    cluster.restart_herzog();
    let left = prepared(&scratch);
    // ...until herzog finds pythagoras without those attempts, requeues them and stops them
    // there. pythagoras's kinski runs on, never restarted.
    let kinski = &mut cluster
        .workers
        .iter_mut()
        .find(|(n, _)| n == "pythagoras")
        .expect("pythagoras")
        .1;
    let mut removed = BTreeSet::new();
    while !left.is_subset(&removed) {
        let line = kinski.wait_for("removed the directory of a prepared attempt", Duration::from_secs(60));
        let attempt = line
            .split("attempt=")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|id| id.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("no attempt in {line:?}"));
        removed.insert(attempt);
    }
    // A preparation herzog asked for just before its death may have ended after the listing.
    eventually("no directory left on pythagoras", Duration::from_secs(60), || {
        prepared(&scratch).is_empty().then_some(())
    });
    drop(frozen);
    cluster.hz_ok(&["progress", "prep", "--watch"]);
    let fragments = assert_each_fragment_succeeded_once(&cluster.db(), "prep", N);
    for f in &fragments {
        for a in f.attempts.iter().filter(|a| left.contains(&a.id)) {
            assert_eq!(a.outcome, "lost", "{}: {a:?}", f.name);
        }
    }
    // The upload that hung, let go now that its herzog is gone, brings nothing back.
    assert_eq!(
        prepared(&scratch),
        BTreeSet::new(),
        "a directory came back on pythagoras"
    );
    println!(
        "{TEST}: attempts {left:?} were prepared on pythagoras when herzog was killed; their directories were removed, and the project finished elsewhere"
    );
}

/// The ssh masters (`ssh ... -M ...`, still running) in the network namespace of process
/// `pid`, each with its control socket (its `-S`).
fn ssh_masters_beside(pid: u32) -> Vec<(i32, PathBuf)> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("the process's network namespace");
    let mut masters = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{p}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_ssh = argv.first().is_some_and(|a| a == "ssh" || a.ends_with("/ssh"));
        if !is_ssh || !argv.iter().any(|a| a == "-M") || !tests::running(p) {
            continue;
        }
        if std::fs::read_link(format!("/proc/{p}/ns/net")).ok().as_ref() != Some(&ns) {
            continue;
        }
        if let Some(i) = argv.iter().position(|a| a == "-S") {
            masters.push((p, PathBuf::from(&argv[i + 1])));
        }
    }
    masters
}

#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test hosts -- --ignored"]
fn a_killed_herzogs_ssh_masters_and_control_sockets_are_gone_once_it_restarts() {
    const TEST: &str = "a_killed_herzogs_ssh_masters_and_control_sockets_are_gone_once_it_restarts";
    let _serial = serial();
    let bed = Bed::up(TEST);
    let config = hosts_toml(&bed, &["pythagoras"], None);
    let mut cluster = Hosted::start_with(bed, Some(&config), 1, &[("pythagoras", Files::Staged)]);
    // herzog logs in to check the scratch directory before it gives the host work: from
    // then on a master connection serves every transfer to it.
    eventually("pythagoras ready for staging", Duration::from_secs(60), || {
        cluster
            .workers()
            .iter()
            .any(|w| w.name == "pythagoras" && w.staging == "ssh ready")
            .then_some(())
    });
    let masters = ssh_masters_beside(cluster.herzog.pid());
    assert_eq!(masters.len(), 1, "one master for the one staged host: {masters:?}");
    let (master, socket) = masters[0].clone();
    // The control socket lives under herzog's state directory (its own, not a shared /tmp).
    let state = cluster.shared().join("herzog");
    assert!(
        socket.starts_with(&state),
        "the control socket {} is not under herzog's state directory {}",
        socket.display(),
        state.display()
    );
    let connection_dir = socket.parent().expect("the socket's directory").to_path_buf();

    cluster.restart_herzog();
    // The new herzog stopped the old master and removed its directory at start-up; its own
    // master (once it probes the host again) is another process in another directory.
    let started = Instant::now();
    eventually(
        "the killed herzog's ssh master to exit and its control directory to go",
        Duration::from_secs(10),
        || (!tests::running(master) && !connection_dir.exists()).then_some(()),
    );
    let log = cluster.herzog.log();
    assert!(log.contains("stopped 1 of the SSH masters"), "herzog's log:\n{log}");
    println!(
        "{TEST}: the old master {master} and {} were gone {:?} after the restart",
        connection_dir.display(),
        started.elapsed()
    );
}
