//! `hz report P`: what a project's attempts used, as Slurm's seff and sacct show a job's:
//! wall and CPU time, CPU and memory efficiency and peak memory as min / median / p95 / max,
//! the slowest and largest fragments, failures by reason, attempts per host.

use super::print_json;
use crate::Outcome;
use crate::args::ReportArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table, ago, bytes, duration_ms, percent};
use common::report::{FragmentUsage, Report, Stats};
use std::io::Write;

pub(crate) async fn run(args: &ReportArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let report = herzog.project_report(&args.project).await?;
    if args.json {
        print_json(out, &report)?;
    } else {
        out.write_all(render(&report, common::now_millis()).as_bytes())?;
    }
    Ok(Outcome::Ok)
}

/// The report as text: a header of `Label: value` lines, then its tables.
fn render(r: &Report, now: common::Millis) -> String {
    let mut s = String::new();
    let kind = if r.job { "Job" } else { "Project" };
    let mut head = vec![(kind, r.project.clone())];
    if let Some(at) = r.removed_at {
        head.push(("Removed", ago(now, at)));
    }
    let f = &r.fragments;
    let mut states = Vec::new();
    for (n, word) in [
        (f.succeeded, "succeeded"),
        (f.failed, "failed"),
        (f.running, "running"),
        (f.pending, "pending"),
    ] {
        if n > 0 {
            states.push(format!("{n} {word}"));
        }
    }
    head.push((
        "Fragments",
        format!(
            "{}{}",
            f.total,
            if states.is_empty() {
                String::new()
            } else {
                format!(": {}", states.join(", "))
            }
        ),
    ));
    head.push((
        "Requests",
        if r.requests.is_empty() {
            "none (CPU efficiency is against 1 CPU)".to_string()
        } else {
            r.requests.to_string()
        },
    ));
    head.push((
        "Counted",
        format!(
            "{}: the last of each finished fragment whose program ran",
            common::count(r.counted, "attempt")
        ),
    ));
    if r.counted > 0 {
        head.push((
            "Total",
            format!(
                "wall {}, CPU {}, CPU efficiency {}",
                duration_ms(r.total.wall_ms),
                duration_ms(r.total.cpu_ms),
                r.total.cpu_efficiency.map_or("-".into(), |e| percent(e * 100.0))
            ),
        ));
    }
    let width = head.iter().map(|(label, _)| label.len()).max().unwrap_or(0) + 1;
    for (label, value) in head {
        s.push_str(&format!("{:<width$} {value}\n", format!("{label}:")));
    }
    if r.counted == 0 {
        s.push_str("\nNo finished attempt to measure yet.\n");
    } else {
        s.push('\n');
        s.push_str(&distributions(r).render());
        s.push_str(&section("Slowest fragments", &fragments(&r.slowest)));
        s.push_str(&section("Largest fragments (peak memory)", &fragments(&r.largest)));
    }
    if !r.failures.is_empty() {
        let mut t = Table::new(&[
            ("FRAGMENTS", Align::Right),
            ("REASON", Align::Left),
            ("FIRST", Align::Left),
        ]);
        for fail in &r.failures {
            t.row(vec![
                fail.fragments.to_string(),
                fail.reason.clone(),
                fail.example.clone(),
            ]);
        }
        s.push_str(&section("Failures by reason", &t));
    }
    if !r.hosts.is_empty() {
        let mut t = Table::new(&[
            ("WORKER", Align::Left),
            ("ATTEMPTS", Align::Right),
            ("SUCCEEDED", Align::Right),
            ("FAILED", Align::Right),
            ("LOST", Align::Right),
            ("STOPPED", Align::Right),
            ("RUNNING", Align::Right),
            ("WALL", Align::Right),
            ("CPU", Align::Right),
        ]);
        for h in &r.hosts {
            t.row(vec![
                h.worker.clone(),
                h.attempts.to_string(),
                h.succeeded.to_string(),
                h.failed.to_string(),
                h.lost.to_string(),
                h.stopped.to_string(),
                h.running.to_string(),
                duration_ms(h.wall_ms),
                duration_ms(h.cpu_ms),
            ]);
        }
        s.push_str(&section("Attempts per host", &t));
    }
    s
}

/// The min / median / p95 / max table.
fn distributions(r: &Report) -> Table {
    let mut t = Table::new(&[
        ("", Align::Left),
        ("MIN", Align::Right),
        ("MEDIAN", Align::Right),
        ("P95", Align::Right),
        ("MAX", Align::Right),
    ]);
    let mut row = |label: &str, stats: Option<Vec<String>>| {
        let mut cells = vec![label.to_string()];
        cells.extend(stats.unwrap_or_else(|| vec!["-".into(); 4]));
        t.row(cells);
    };
    let cells = |s: Stats<u64>, f: fn(u64) -> String| vec![f(s.min), f(s.median), f(s.p95), f(s.max)];
    let ratios = |s: Stats<f64>| {
        let p = |v: f64| percent(v * 100.0);
        vec![p(s.min), p(s.median), p(s.p95), p(s.max)]
    };
    row("Wall time", r.wall_ms.map(|s| cells(s, duration_ms)));
    row("CPU time", r.cpu_ms.map(|s| cells(s, duration_ms)));
    let cpus = common::count(u64::from(r.requests.packing_cpus()), "CPU");
    row(&format!("CPU efficiency ({cpus})"), r.cpu_efficiency.map(ratios));
    row("Peak memory", r.peak_memory_bytes.map(|s| cells(s, bytes)));
    if let Some(m) = r.requests.memory_bytes {
        let label = format!("Memory efficiency (of {})", common::requests::show_bytes(m));
        row(&label, r.memory_efficiency.map(ratios));
    }
    t
}

fn fragments(list: &[FragmentUsage]) -> Table {
    let mut t = Table::new(&[
        ("FRAGMENT", Align::Left),
        ("WALL", Align::Right),
        ("CPU", Align::Right),
        ("PEAK MEMORY", Align::Right),
        ("WORKER", Align::Left),
    ]);
    for f in list {
        t.row(vec![
            f.fragment.clone(),
            duration_ms(f.wall_ms),
            duration_ms(f.cpu_ms),
            f.peak_memory_bytes.map_or_else(|| "-".to_string(), bytes),
            f.worker.clone(),
        ]);
    }
    t
}

/// A blank line, a heading and its table.
fn section(title: &str, table: &Table) -> String {
    format!("\n{title}:\n{}", table.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::report::{FailureCount, HostAttempts, Usage};
    use common::requests::Requests;

    #[test]
    fn a_report_reads_like_seff() {
        let requests = Requests {
            cpus: Some(2),
            memory_bytes: Some(1 << 30),
            time_ms: None,
        };
        let mut r = Report::new("genome".into(), false, None, requests);
        r.fragments.total = 3;
        r.fragments.succeeded = 2;
        r.fragments.failed = 1;
        let mut u = Usage::new(requests);
        for (name, wall, peak) in [
            ("a.fa", 1_000, 256 << 20),
            ("b.fa", 3_000, 512 << 20),
            ("c.fa", 2_000, 1 << 20),
        ] {
            u.add(FragmentUsage {
                fragment: name.into(),
                wall_ms: wall,
                cpu_ms: wall,
                peak_memory_bytes: Some(peak),
                worker: "euclid".into(),
            });
        }
        u.finish(&mut r);
        r.failures.push(FailureCount {
            reason: "exited with 3".into(),
            fragments: 1,
            example: "c.fa".into(),
        });
        r.hosts.push(HostAttempts {
            worker: "euclid".into(),
            attempts: 3,
            succeeded: 2,
            failed: 1,
            wall_ms: 6_000,
            cpu_ms: 6_000,
            ..Default::default()
        });
        let text = render(&r, 0);
        for needle in [
            "Project:   genome",
            "Fragments: 3: 2 succeeded, 1 failed",
            "Requests:  2 CPUs / 1 GiB",
            "Counted:   3 attempts",
            "Total:     wall 6.0s, CPU 6.0s, CPU efficiency 50.0%",
            "CPU efficiency (2 CPUs)         50.0%      50.0%      50.0%      50.0%",
            "Memory efficiency (of 1 GiB)     0.1%      25.0%      50.0%      50.0%",
            "Wall time                        1.0s       2.0s       3.0s       3.0s",
            "Slowest fragments:",
            "b.fa      3.0s  3.0s    512.0 MiB  euclid",
            "        1  exited with 3  c.fa",
            "euclid         3          2       1     0        0        0  6.0s  6.0s",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        let slow = text.find("b.fa").unwrap();
        assert!(slow < text.find("c.fa").unwrap() && text.find("c.fa").unwrap() < text.find("a.fa").unwrap());
    }

    #[test]
    fn a_project_with_nothing_finished_says_so() {
        let r = Report::new("run:4".into(), true, Some(1_000), Requests::default());
        let text = render(&r, 61_000);
        assert!(text.contains("Job:       run:4"), "{text}");
        assert!(text.contains("Removed:   1m00s ago"), "{text}");
        assert!(
            text.contains("Requests:  none (CPU efficiency is against 1 CPU)"),
            "{text}"
        );
        assert!(text.contains("No finished attempt to measure yet."), "{text}");
        assert!(!text.contains("MEDIAN"), "{text}");
    }
}
