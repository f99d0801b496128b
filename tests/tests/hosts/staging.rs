//! Staging over SSH: every sshd answers, a refused key, the cost against the shared
//! filesystem, and a transfer that keeps failing.

use super::*;

#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test hosts -- --ignored"]
fn sshd_answers_in_every_namespace() {
    const TEST: &str = "sshd_answers_in_every_namespace";
    let bed = Bed::up(TEST);
    let ssh = |key: &Path, host: &Host, command: &str| {
        let mut cmd = bed.exec("euclid", Path::new("ssh"));
        cmd.arg("-i").arg(key).args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            &format!("root@{}", host.addr),
            command,
        ]);
        output_within(&mut cmd, Duration::from_secs(30))
    };
    for host in bed.hosts() {
        // The test key logs in, and lands in the host's namespace.
        let out = ssh(&bed.key(), host, "ip netns identify $$");
        assert!(
            out.status.success(),
            "the test key cannot log in to {} ({}): {}",
            host.name,
            host.addr,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), host.ns);

        // A key that is not authorised is refused.
        let out = ssh(&bed.wrong_key(), host, "true");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "the wrong key on {}: {stderr}", host.name);
        assert!(stderr.contains("Permission denied"), "{stderr}");

        // By name, with the bed's ssh config: host key checked against known_hosts.
        let mut cmd = bed.exec("euclid", Path::new("ssh"));
        cmd.arg("-F").arg(bed.ssh_config()).args([&host.name, "true"]);
        let out = output_within(&mut cmd, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "ssh -F ssh_config {}: {}",
            host.name,
            String::from_utf8_lossy(&out.stderr)
        );

        // SFTP works (staging will upload inputs and fetch outputs this way).
        let payload = bed.dir().join(format!("payload-{}", host.name));
        std::fs::write(&payload, format!("for {}\n", host.name)).expect("failed to write a payload");
        let batch = bed.dir().join(format!("batch-{}", host.name));
        let target = host.scratch.join("payload");
        std::fs::write(&batch, format!("put {} {}\n", payload.display(), target.display()))
            .expect("failed to write an sftp batch");
        let mut cmd = bed.exec("euclid", Path::new("sftp"));
        cmd.arg("-F")
            .arg(bed.ssh_config())
            .arg("-b")
            .arg(&batch)
            .arg(&host.name);
        let out = output_within(&mut cmd, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "sftp to {}: {}",
            host.name,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(&target).expect("the uploaded file"),
            std::fs::read(&payload).expect("the payload")
        );
    }
    let refusals = std::fs::read_to_string(bed.dir().join("newton").join("sshd.log")).expect("newton's sshd log");
    assert!(refusals.contains("Accepted publickey for root"), "{refusals}");
}

#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test hosts -- --ignored"]
fn a_host_whose_sshd_refuses_the_key_gets_no_work_and_says_why() {
    const TEST: &str = "a_host_whose_sshd_refuses_the_key_gets_no_work_and_says_why";
    const N: usize = 24;
    let _serial = serial();
    let bed = Bed::up(TEST);
    // newton's entry names a key its sshd does not accept; leibniz stages normally.
    let config = hosts_toml(&bed, &["leibniz", "newton"], Some("newton"));
    let hosts = [
        ("euclid", Files::Shared),
        ("leibniz", Files::Staged),
        ("newton", Files::Staged),
    ];
    let cluster = Hosted::start_with(bed, Some(&config), 2, &hosts);
    let newton_problem = eventually(
        "hz workers to show newton's SSH failure",
        Duration::from_secs(60),
        || {
            let workers = cluster.workers();
            let newton = workers.iter().find(|w| w.name == "newton")?;
            (newton.staging == "ssh failed").then(|| newton.problem.clone())
        },
    )
    .expect("a failed host says why");
    assert!(
        newton_problem.contains("newton") && newton_problem.contains("Permission denied"),
        "the problem should name the host and ssh's error: {newton_problem}"
    );
    let table = cluster.hz_ok(&["workers"]);
    assert!(
        table.contains("ssh failed") && table.contains("Permission denied"),
        "hz workers:\n{table}"
    );
    println!("{TEST}: hz workers says:\n{table}");

    let inputs = varied_inputs(&cluster.shared().join("refused"), N);
    let program = cluster.program();
    cluster.hz_ok(&["action", inputs.to_str().expect("UTF-8"), &program]);
    cluster.hz_ok(&["progress", "refused", "--watch"]);
    let fragments = assert_each_fragment_succeeded_once(&cluster.db(), "refused", N);
    let newton_attempts: Vec<_> = fragments
        .iter()
        .flat_map(|f| f.attempts.iter())
        .filter(|a| a.worker == "newton")
        .collect();
    assert!(newton_attempts.is_empty(), "newton got work: {newton_attempts:?}");
    let leibniz = fragments
        .iter()
        .filter(|f| {
            f.attempts
                .iter()
                .any(|a| a.worker == "leibniz" && a.outcome == "succeeded")
        })
        .count();
    assert!(leibniz > 0, "leibniz, which stages, ran nothing");
    assert_eq!(files(&cluster.results("refused").join("output")).len(), 2 * N);
    let log = cluster.herzog.log();
    assert!(
        log.contains("newton") && log.contains("Permission denied"),
        "herzog's log should name newton and the SSH error:\n{log}"
    );
}

/// Not a timed assertion: measures what staging costs per fragment against the shared
/// filesystem in the same run, and prints it (the note quotes it). One host of each
/// kind, one slot each, the same 1 MB inputs; per attempt, herzog's own record from dispatch
/// to stored completion, less the program's wall time.
#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test hosts -- --ignored"]
fn staging_overhead_against_the_shared_filesystem() {
    const TEST: &str = "staging_overhead_against_the_shared_filesystem";
    const N: usize = 60;
    let _serial = serial();
    let bed = Bed::up(TEST);
    let config = hosts_toml(&bed, &["pythagoras"], None);
    let hosts = [("euclid", Files::Shared), ("pythagoras", Files::Staged)];
    let cluster = Hosted::start_with(bed, Some(&config), 1, &hosts);
    let inputs = cluster.shared().join("mb");
    std::fs::create_dir_all(&inputs).expect("failed to create the inputs");
    for i in 0..N {
        // 1 MiB of varied bytes, so nothing along the way can shortcut it.
        let bytes: Vec<u8> = (0..1usize << 20)
            .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i as u8)
            .collect();
        std::fs::write(inputs.join(format!("m{i:03}")), bytes).expect("failed to write an input");
    }
    // Reads its input and writes 1 MiB back, as a filter would.
    let program = cluster.dir().join("copy.sh");
    write_script(
        &program,
        "#!/bin/sh\ncat \"$1\" > \"$HERZOG_OUTPUT_DIR/$(basename \"$1\").copy\"\n",
    );
    cluster.hz_ok(&[
        "action",
        inputs.to_str().expect("UTF-8"),
        program.to_str().expect("UTF-8"),
    ]);
    cluster.hz_ok(&["progress", "mb", "--watch"]);
    let fragments = assert_each_fragment_succeeded_once(&cluster.db(), "mb", N);
    let mut per_host: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for f in &fragments {
        let a = f.attempts.iter().find(|a| a.outcome == "succeeded").expect("checked");
        let wall = a.wall_ms.expect("wall time recorded");
        let total = a.ended_at.expect("ended") - a.started_at;
        per_host.entry(a.worker.clone()).or_default().push(total - wall);
    }
    let mean = |host: &str| {
        let v = per_host
            .get(host)
            .unwrap_or_else(|| panic!("{host} ran nothing: {per_host:?}"));
        v.iter().sum::<i64>() as f64 / v.len() as f64
    };
    let (shared, staged) = (mean("euclid"), mean("pythagoras"));
    let outputs = files(&cluster.results("mb").join("output"));
    assert_eq!(outputs.len(), N);
    assert!(outputs.values().all(|b| b.len() == 1 << 20));
    println!(
        "{TEST}: overhead per 1 MiB fragment beyond the program's run, from dispatch to stored completion: \
         shared filesystem {shared:.1} ms ({} fragments), staged over SSH {staged:.1} ms ({} fragments); \
         ratio staged/shared {:.2}",
        per_host["euclid"].len(),
        per_host["pythagoras"].len(),
        staged / shared.max(0.1)
    );
}

#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test hosts -- --ignored"]
fn a_transfer_that_keeps_failing_fails_the_attempt_not_the_fragment() {
    const TEST: &str = "a_transfer_that_keeps_failing_fails_the_attempt_not_the_fragment";
    const N: usize = 12;
    let _serial = serial();
    let bed = Bed::up(TEST);
    // In pythagoras's sshd's mount namespace (which its kinski joins), its scratch directory
    // is a 256 KiB filesystem: logging in and preparing work, uploading a 1 MiB input cannot.
    // The mount goes with the namespace when the bed is torn down.
    let scratch = bed.host("pythagoras").scratch.clone();
    let mut mount = clean_command(Path::new("nsenter"));
    mount
        .arg("--target")
        .arg(bed.sshd_pid("pythagoras").to_string())
        .args([
            "--mount",
            "--",
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=256k,mode=0755",
            "tiny",
        ])
        .arg(&scratch);
    let out = output_within(&mut mount, Duration::from_secs(10));
    assert!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
    let config = hosts_toml(&bed, &["pythagoras"], None);
    // pythagoras's kinski sees the whole file system; its files still go over SSH, as
    // cluster.toml says.
    let hosts = [("euclid", Files::Shared), ("pythagoras", Files::WithSshd)];
    let cluster = Hosted::start_with(bed, Some(&config), 2, &hosts);
    eventually("pythagoras ready for staging", Duration::from_secs(60), || {
        cluster
            .workers()
            .iter()
            .any(|w| w.name == "pythagoras" && w.staging == "ssh ready")
            .then_some(())
    });
    let inputs = cluster.shared().join("big");
    std::fs::create_dir_all(&inputs).expect("failed to create the inputs");
    for i in 0..N {
        std::fs::write(inputs.join(format!("b{i:02}")), vec![b'x' + (i % 3) as u8; 1 << 20]).expect("an input");
    }
    let program = cluster.program();
    cluster.hz_ok(&["action", inputs.to_str().expect("UTF-8"), &program]);
    cluster.hz_ok(&["progress", "big", "--watch"]);
    let fragments = assert_each_fragment_succeeded_once(&cluster.db(), "big", N);
    let failed: Vec<_> = fragments
        .iter()
        .flat_map(|f| f.attempts.iter().map(move |a| (f, a)))
        .filter(|(_, a)| a.worker == "pythagoras")
        .collect();
    assert!(
        !failed.is_empty(),
        "pythagoras got no work, so nothing was tried: {fragments:?}"
    );
    for (f, a) in &failed {
        assert_eq!(a.outcome, "failed", "{}: {a:?}", f.name);
        let accepted = f.attempts.iter().find(|a| a.outcome == "succeeded").expect("checked");
        assert_eq!(accepted.worker, "euclid", "{} went elsewhere", f.name);
    }
    let note = failed
        .iter()
        .map(|(_, a)| a)
        .min_by_key(|a| a.id)
        .and_then(|a| a.note.clone())
        .expect("a failed attempt keeps its reason");
    assert!(note.contains("pythagoras") && note.contains("write"), "{note}");
    let problem = cluster
        .workers()
        .into_iter()
        .find(|w| w.name == "pythagoras")
        .and_then(|w| w.problem)
        .unwrap_or_default();
    println!(
        "{TEST}: {} attempts on pythagoras failed to stage and ran elsewhere; the record says: {note}; hz workers: {problem}",
        failed.len()
    );
}
