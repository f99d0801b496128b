//! `hz tail` on real daemons: a service instance's output read from its worker through
//! herzog (kinski listens on nothing), the last bytes or followed as they come, across a
//! restart of the instance, and clear errors for what cannot be read.
//!
//! ```text
//! cargo build --workspace && cargo test -p tests --test tail -- --nocapture
//! ```

use common::instances::InstanceState;
use std::time::Duration;
use tests::{Cluster, eventually, write_script};

const LIMIT: Duration = Duration::from_secs(30);

/// One worker, a short heartbeat, and a program that prints a numbered line on stdout and on
/// stderr every 100 ms, each naming its placement (`out RUN N`).
fn cluster(services: &str) -> Cluster {
    let cluster = Cluster::start_with_config(
        Some("[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"2s\"\n"),
        &[("euclid", 1)],
    );
    write_script(
        &cluster.dir().join("ticker.sh"),
        "#!/bin/sh\ni=0\nwhile :; do\n  echo \"out $HERZOG_RUN $i\"\n  echo \"err $HERZOG_RUN $i\" >&2\n  i=$((i+1))\n  sleep 0.1\ndone\n",
    );
    let dir = cluster.dir().display().to_string();
    std::fs::write(cluster.dir().join("services.toml"), services.replace("@DIR@", &dir)).expect("write services.toml");
    cluster.hz_ok(&["reload"]);
    eventually("ticker:0 to run", LIMIT, || {
        let all: Vec<common::instances::InstanceStatus> = cluster.hz_json(&["status", "ticker"]);
        matches!(all.first()?.state, InstanceState::Running { .. }).then_some(())
    });
    cluster
}

/// `out RUN N` as (RUN, N).
fn parse(line: &str) -> (i64, u64) {
    let mut words = line.split_whitespace().skip(1);
    let mut next = || words.next().and_then(|w| w.parse::<u64>().ok());
    match (next(), next()) {
        (Some(run), Some(n)) => (run as i64, n),
        _ => panic!("not a ticker line: {line:?}"),
    }
}

#[test]
fn tail_prints_the_recent_output_and_follows_new_lines_across_a_restart() {
    let cluster = cluster(
        "[services.ticker]\ncommand = \"@DIR@/ticker.sh\"\nstartsecs = 0\n\
         [services.quiet]\ncommand = \"sleep 1000\"\nstartsecs = 0\nstdout = \"discard\"\n",
    );

    // The recent output, whole lines in order, every one of this placement.
    let text = eventually("ticker's output", LIMIT, || {
        let text = cluster.hz_ok(&["tail", "ticker"]);
        (text.lines().count() >= 5).then_some(text)
    });
    let lines: Vec<(i64, u64)> = text.lines().map(parse).collect();
    let run = lines[0].0;
    assert!(lines.iter().all(|(r, _)| *r == run), "{text}");
    assert!(
        lines.windows(2).all(|w| w[1].1 == w[0].1 + 1),
        "in order, none missing: {text}"
    );
    assert_eq!(lines[0].1, 0, "10 KiB holds all of it from the first line: {text}");
    // -c: only the last bytes; --stderr: the other stream.
    let short = cluster.hz_ok(&["tail", "-c", "12", "ticker:0"]);
    assert!(!short.is_empty() && short.len() <= 12, "{short:?}");
    let err = cluster.hz_ok(&["tail", "--stderr", "ticker"]);
    assert!(
        err.lines().count() >= 5 && err.lines().all(|l| l.starts_with(&format!("err {run} "))),
        "{err}"
    );

    // Following: the recent lines first, then the lines printed after it started.
    let newest = parse(cluster.hz_ok(&["tail", "ticker"]).lines().last().expect("a line")).1;
    let mut follower = cluster.hz_spawn(&["tail", "-f", "ticker"]);
    let later = follower.line(&format!("out {run} {}", newest + 20), LIMIT);
    println!("followed: {later}");

    // A restart: the follower reads the old placement to its end, says so on stderr and
    // goes on with the new one from its first line.
    cluster.hz_ok(&["restart", "ticker"]);
    let note = follower.note("placed again", LIMIT);
    let new_run: i64 = note
        .split("(run ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the note names the new placement: {note}"));
    assert_ne!(new_run, run, "{note}");
    follower.line(&format!("out {new_run} 0"), LIMIT);
    follower.line(&format!("out {new_run} 5"), LIMIT);
    println!("the follower said on stderr:\n{}", follower.stderr());

    // What cannot be read says why, and exits 2.
    let err = cluster.hz_fails(&["tail", "nope"], 2);
    assert!(err.contains("no service or instance named 'nope'"), "{err}");
    let err = cluster.hz_fails(&["tail", "ticker:3"], 2);
    assert!(err.contains("'ticker:3'"), "{err}");
    let err = cluster.hz_fails(&["tail", "quiet"], 2);
    assert!(
        err.contains("quiet:0's stdout is not kept") && err.contains("discard"),
        "{err}"
    );
    let err = cluster.hz_fails(&["tail", "-c", "lots", "ticker"], 2);
    assert!(err.contains("-c lots"), "{err}");
}

#[test]
fn a_follower_whose_worker_is_gone_says_so_and_exits_3() {
    let mut cluster =
        cluster("[services.ticker]\ncommand = \"@DIR@/ticker.sh\"\nstartsecs = 0\nhosts = [\"euclid\"]\n");
    let mut follower = cluster.hz_spawn(&["tail", "-f", "ticker"]);
    follower.line("out ", LIMIT);
    cluster.kill_kinski("euclid");
    let status = follower.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(3), "stderr:\n{}", follower.stderr());
    let said = follower.stderr();
    assert!(
        said.contains("ticker:0 runs on worker 'euclid', which herzog cannot reach now"),
        "{said}"
    );
    let err = cluster.hz_fails(&["tail", "ticker"], 3);
    assert!(err.contains("worker 'euclid'"), "{err}");
    // The new kinski kills what its predecessor left running.
    cluster.restart_worker("euclid");
}

#[test]
fn a_large_output_comes_through_whole_in_chunks() {
    let cluster = cluster(
        "[services.ticker]\ncommand = \"@DIR@/ticker.sh\"\nstartsecs = 0\n\
         [services.big]\ncommand = \"cat @DIR@/data; exec sleep 1000\"\nstartsecs = 0\n",
    );
    // 8 MiB of random bytes: 32 chunks, none of them text.
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(cluster.dir().join("data"), &data).expect("write data");
    cluster.hz_ok(&["restart", "big"]);
    let kept = cluster.kinski_state("euclid").join("services/big/big_0.stdout");
    eventually("big to have written it all", LIMIT, || {
        (std::fs::metadata(&kept).ok()?.len() == data.len() as u64).then_some(())
    });
    let started = std::time::Instant::now();
    let out = cluster.hz(&["tail", "-c", "8MiB", "big"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.stdout == data,
        "{} bytes came, not the program's {}",
        out.stdout.len(),
        data.len()
    );
    println!(
        "hz tail -c 8MiB: {:.1} MiB/s ({took:?}, debug build, over mutual TLS)",
        8.0 / took.as_secs_f64()
    );
}
