//! Projects across the four hosts, shared and staged, and a host whose link is cut.

use super::*;

#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test hosts -- --ignored"]
fn a_project_runs_across_four_hosts() {
    const TEST: &str = "a_project_runs_across_four_hosts";
    const N: usize = 40;
    const STAGED: [&str; 3] = ["pythagoras", "leibniz", "newton"];
    let _serial = serial();
    let bed = Bed::up(TEST);
    // euclid has the shared filesystem; the three others see neither the project nor
    // herzog's results: their input comes over SSH and their outputs go back the same way.
    let config = hosts_toml(&bed, &STAGED, None);
    let hosts = HOSTS.map(|h| {
        (
            h,
            if STAGED.contains(&h) {
                Files::Staged
            } else {
                Files::Shared
            },
        )
    });
    let cluster = Hosted::start_with(bed, Some(&config), 2, &hosts);
    let inputs = varied_inputs(&cluster.shared().join("spread"), N);
    // The program lives in the project directory, so it is staged too.
    let program = cluster.program_at(&inputs.join("bin").join("where.sh"));
    let started = Instant::now();
    let name = cluster.hz_ok(&[
        "action",
        inputs.to_str().expect("UTF-8"),
        &program,
        "--env",
        "SLEEP=0.05",
    ]);
    assert_eq!(name.trim(), "spread");
    cluster.hz_ok(&["progress", "spread", "--watch"]);
    let ran = started.elapsed();

    let progress: Vec<ProjectProgress> = cluster.hz_json(&["progress", "spread"]);
    assert_eq!(progress.len(), 1, "{progress:?}");
    let p = &progress[0];
    assert_eq!((p.total, p.succeeded, p.failed), (N as u64, N as u64, 0), "{p:?}");
    assert!(
        (p.percent - 100.0).abs() < f64::EPSILON,
        "hz progress reads {}%",
        p.percent
    );

    // Each fragment succeeded exactly once, on the host herzog says it ran on.
    let fragments = assert_each_fragment_succeeded_once(&cluster.db(), "spread", N);
    let ran_on = cluster.ran_on("spread");
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for f in &fragments {
        let accepted = f
            .attempts
            .iter()
            .find(|a| a.outcome == "succeeded")
            .expect("checked above");
        let ns = ran_on
            .get(&(f.name.clone(), accepted.id))
            .unwrap_or_else(|| panic!("attempt {} of {} left no marker", accepted.id, f.name));
        let host = cluster
            .bed
            .host_of_ns(ns)
            .unwrap_or_else(|| panic!("{} ran in namespace {ns:?}, not on a host of the bed", f.name));
        assert_eq!(
            host.name, accepted.worker,
            "{} ran on {} but herzog recorded {}",
            f.name, host.name, accepted.worker
        );
        *per_host.entry(host.name.clone()).or_default() += 1;
    }
    // Proof that the staged hosts worked from their copies: their programs saw nothing in
    // shared/, where the project and the results are.
    let saw = cluster.saw_shared("spread");
    for ((fragment, attempt), seen) in &saw {
        let host = cluster
            .bed
            .host_of_ns(ran_on[&(fragment.clone(), *attempt)].as_str())
            .map(|h| h.name.as_str())
            .unwrap_or("?");
        if STAGED.contains(&host) {
            assert_eq!(*seen, 0, "{fragment} on {host} saw the shared directory");
        } else {
            assert!(*seen > 0, "{fragment} on {host} should see the shared directory");
        }
    }
    // Staged attempts leave nothing behind in the scratch directories.
    // (kinski removes an attempt's directory once herzog acknowledged its completion.)
    for host in STAGED {
        let scratch = cluster.bed.host(host).scratch.clone();
        eventually(
            &format!("{host}'s scratch directory to empty"),
            Duration::from_secs(10),
            || {
                let left: Vec<_> = std::fs::read_dir(&scratch)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                left.is_empty().then_some(())
            },
        );
    }
    println!("{TEST}: {N} fragments ran on four hosts in {ran:?}; fragments per host: {per_host:?}");
    let hosts: BTreeSet<&str> = per_host.keys().map(String::as_str).collect();
    assert_eq!(hosts, HOSTS.into_iter().collect(), "every host runs some fragments");

    // The same program on the same files, run locally (`hz local`, root namespace): the same
    // outputs and the same stdout and stderr, byte for byte.
    let local_state = cluster.dir().join("local.hz");
    let local_started = Instant::now();
    let mut local = clean_command(&bin("hz"));
    local
        .arg("local")
        .arg(&inputs)
        .args([
            &program,
            "--name",
            "spread-local",
            "--env",
            "SLEEP=0.05",
            "--slots",
            "2",
            "--state-dir",
        ])
        .arg(&local_state)
        .current_dir(cluster.dir());
    let out = output_within(&mut local, HZ_LIMIT);
    assert!(
        out.status.success(),
        "hz local failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{TEST}: the same project with hz local in {:?}",
        local_started.elapsed()
    );
    let local_db = local_state.join("herzog").join("herzog.db");
    let local_results = local_state.join("herzog").join("results").join("spread-local");
    assert_each_fragment_succeeded_once(&local_db, "spread-local", N);

    let outputs = files(&cluster.results("spread").join("output"));
    let local_outputs = files(&local_results.join("output"));
    assert_eq!(outputs.len(), 2 * N, "outputs: {:?}", outputs.keys());
    assert!(
        outputs == local_outputs,
        "the outputs differ from a local run: {:?}",
        outputs
            .iter()
            .filter(|(k, v)| local_outputs.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    );
    let logs = accepted_logs(&cluster.db(), &cluster.results("spread"), "spread");
    let local_logs = accepted_logs(&local_db, &local_results, "spread-local");
    assert_eq!(logs.len(), N);
    for (fragment, (stdout, stderr)) in &logs {
        assert!(!stdout.is_empty(), "{fragment} printed nothing");
        assert_eq!(
            Some(&(stdout.clone(), stderr.clone())),
            local_logs.get(fragment),
            "{fragment}'s stdout and stderr differ from a local run"
        );
    }
}

#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test hosts -- --ignored"]
fn cutting_a_hosts_link_requeues_its_fragments() {
    const TEST: &str = "cutting_a_hosts_link_requeues_its_fragments";
    const N: usize = 40;
    const CONFIG: &str = "[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"1500ms\"\n";
    let _serial = serial();
    let bed = Bed::up(TEST);
    let cluster = Hosted::start(bed, Some(CONFIG), 2);
    let inputs = make_inputs(&cluster.dir().join("cut"), N);
    let program = cluster.program();
    cluster.hz_ok(&[
        "action",
        inputs.to_str().expect("UTF-8"),
        &program,
        "--env",
        "SLEEP=0.6",
        "--max-attempts",
        "5",
    ]);

    // Mid-project: some fragments done, and newton running some.
    let held = eventually("newton running fragments mid-project", Duration::from_secs(60), || {
        let fragments = db_fragments(&cluster.db(), "cut");
        let done = fragments.iter().filter(|f| f.state == "succeeded").count();
        let on_newton: Vec<String> = fragments
            .iter()
            .filter(|f| {
                f.attempts
                    .iter()
                    .any(|a| a.worker == "newton" && a.outcome == "running")
            })
            .map(|f| f.name.clone())
            .collect();
        (done >= 4 && !on_newton.is_empty()).then_some(on_newton)
    });
    let cut = Instant::now();
    cluster.bed.cut("newton");
    let lost_after = eventually("herzog to declare newton lost", Duration::from_secs(30), || {
        let workers = cluster.workers();
        let newton = workers.iter().find(|w| w.name == "newton").expect("newton is listed");
        (newton.state == "lost").then(|| cut.elapsed())
    });
    println!(
        "{TEST}: cut newton's link while it ran {held:?}; newton lost {lost_after:?} after the cut \
         (heartbeat 200ms, worker_timeout 1500ms)"
    );
    // herzog times out from the last heartbeat it heard, up to one heartbeat (200 ms) before
    // the cut.
    assert!(
        lost_after >= Duration::from_millis(1500 - 200),
        "newton was declared lost {lost_after:?} after the cut, before its timeout"
    );

    cluster.hz_ok(&["progress", "cut", "--watch"]);
    let finished = cut.elapsed();
    let progress: Vec<ProjectProgress> = cluster.hz_json(&["progress", "cut"]);
    assert_eq!(
        (progress[0].succeeded, progress[0].failed),
        (N as u64, 0),
        "{progress:?}"
    );
    let fragments = assert_each_fragment_succeeded_once(&cluster.db(), "cut", N);

    // What newton held when its link went is lost and ran again elsewhere.
    let mut requeued = Vec::new();
    for f in &fragments {
        let accepted = f
            .attempts
            .iter()
            .find(|a| a.outcome == "succeeded")
            .expect("checked above");
        if f.attempts.iter().any(|a| a.worker == "newton" && a.outcome == "lost") {
            assert_ne!(accepted.worker, "newton", "{f:?}");
            requeued.push(format!("{} -> {}", f.name, accepted.worker));
        }
    }
    assert!(
        !requeued.is_empty(),
        "newton ran {held:?} when its link was cut, yet none of its attempts is lost: {fragments:?}"
    );
    println!(
        "{TEST}: project done {finished:?} after the cut; requeued from newton: {}",
        requeued.join(", ")
    );

    let workers = cluster.workers();
    let states: BTreeMap<&str, &str> = workers.iter().map(|w| (w.name.as_str(), w.state.as_str())).collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("euclid", "connected"),
            ("leibniz", "connected"),
            ("newton", "lost"),
            ("pythagoras", "connected"),
        ]),
        "hz workers after the cut"
    );
}
