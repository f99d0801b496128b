//! Requests enforced by real daemons on this host's real cgroups (as root): `--mem` ends a
//! greedy fragment out of memory with its peak while its neighbour runs on, `--time` stops
//! `sleep 60` at about its limit, both with their reasons; the worker says which limits it
//! enforces; a child that called setsid dies with its fragment, requests or not; two spinning
//! processes under `--cpus 1` use about one CPU.

use common::wire::{Exit, FragmentInfo};
use std::time::{Duration, Instant};
use tests::Cluster;

/// A project of `n` fragments running `script` (python) under these `hz action` options.
fn project(cluster: &Cluster, name: &str, n: usize, program: &str, options: &[&str]) {
    let input = cluster.inputs(name, n);
    let mut args = vec!["action", input.to_str().unwrap(), program];
    args.extend_from_slice(options);
    cluster.hz_ok(&args);
}

/// A program file in the cluster's directory.
fn program(cluster: &Cluster, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = cluster.dir().join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
#[ignore = "needs root: cgroups"]
fn past_its_memory_a_fragment_ends_out_of_memory_and_a_neighbour_runs_on_as_root() {
    let mut cluster = Cluster::start(&[]);
    cluster.add_worker_with_cpus("euclid", 2, 2);
    let log = cluster.worker("euclid").log();
    assert!(log.contains("limits: cgroup"), "{log}");
    let greedy = program(
        &cluster,
        "greedy.py",
        "#!/usr/bin/env python3\nb = b'x' * (400 << 20)\n",
    );
    let modest = program(
        &cluster,
        "modest.py",
        "#!/usr/bin/env python3\nb = b'x' * (100 << 20)\nprint(len(b))\n",
    );
    project(&cluster, "greedy", 1, &greedy, &["--mem", "64M"]);
    project(&cluster, "modest", 1, &modest, &[]);
    cluster.hz(&["progress", "greedy", "--watch"]);
    cluster.hz_ok(&["progress", "modest", "--watch"]);
    let greedy: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "greedy"]);
    let f = &greedy[0];
    assert_eq!(f.exit, Some(Exit::Signal(9)), "{f:?}");
    let reason = f.reason.clone().unwrap_or_default();
    assert!(reason.contains("out of memory: limit 64 MiB, peak"), "{f:?}");
    assert!(
        f.peak_memory_bytes.is_some_and(|p| p > 32 << 20 && p <= 64 << 20),
        "{f:?}"
    );
    assert_eq!(f.attempts, 1, "not retried by default: {f:?}");
    let modest: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "modest"]);
    assert_eq!(modest[0].exit, Some(Exit::Code(0)), "{:?}", modest[0]);
}

#[test]
fn a_time_limit_stops_sleep_60_at_about_its_limit() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    let sleeper = program(&cluster, "sleeper.sh", "#!/bin/sh\nexec sleep 60\n");
    let started = Instant::now();
    project(&cluster, "sleepy", 1, &sleeper, &["--time", "2s"]);
    cluster.hz(&["progress", "sleepy", "--watch"]);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    let fragments: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "sleepy"]);
    let f = &fragments[0];
    let wall = f.wall_ms.expect("a wall time");
    assert!((2000..3500).contains(&wall), "{f:?}");
    assert_eq!(f.exit, Some(Exit::Signal(15)), "{f:?}");
    assert!(
        f.reason.as_deref().is_some_and(|r| r.contains("time limit 2s reached")),
        "{f:?}"
    );
    assert_eq!(f.attempts, 1, "not retried by default: {f:?}");
}

#[test]
#[ignore = "needs root: cgroups"]
fn a_child_that_calls_setsid_dies_with_its_fragment_without_requests_as_root() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    let pid_file = cluster.dir().join("escaped.pid");
    let escaping = program(
        &cluster,
        "escaping.sh",
        &format!(
            "#!/bin/sh\nsetsid sh -c 'echo $$ > {f}.tmp; mv {f}.tmp {f}; exec sleep 300' &\n\
             while [ ! -e {f} ]; do sleep 0.01; done\n",
            f = pid_file.display()
        ),
    );
    project(&cluster, "escaping", 1, &escaping, &[]);
    cluster.hz_ok(&["progress", "escaping", "--watch"]);
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // Gone, or a zombie its new parent has yet to reap: the cgroup was emptied before the
    // fragment's end was reported.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next()))
        .flatten();
    if !matches!(state, None | Some('Z' | 'X')) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        panic!("the child that called setsid outlived its fragment (state {state:?})");
    }
}

#[test]
#[ignore = "needs root: cgroups"]
fn two_spinning_processes_under_cpus_1_use_about_one_cpu_as_root() {
    let mut cluster = Cluster::start(&[]);
    cluster.add_worker_with_cpus("euclid", 2, 2);
    // Two processes spinning for 3 s of wall time; the leader waits for both, so the
    // attempt's CPU time holds theirs. Unlimited on an idle 2-CPU host they use about 2.
    let spinner = program(
        &cluster,
        "spin.py",
        "#!/usr/bin/env python3\nimport os, time\n\
         def spin():\n    end = time.monotonic() + 3\n    while time.monotonic() < end: pass\n    os._exit(0)\n\
         for _ in range(2):\n    if os.fork() == 0: spin()\n\
         os.wait(); os.wait()\n",
    );
    project(&cluster, "spin", 1, &spinner, &["--cpus", "1"]);
    cluster.hz_ok(&["progress", "spin", "--watch"]);
    let fragments: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "spin"]);
    let f = &fragments[0];
    let (cpu, wall) = (f.cpu_ms.expect("CPU time"), f.wall_ms.expect("a wall time"));
    let used = cpu as f64 / wall as f64;
    assert!(used < 1.3, "{used:.2} CPUs under --cpus 1: {f:?}");
    // The host is shared (2 CPUs, other tests): only that it spun at all.
    assert!(used > 0.2, "it did not spin: {used:.2}: {f:?}");
}
