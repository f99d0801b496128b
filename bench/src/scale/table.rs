//! The figures of a run, and of a sweep, as markdown tables.

use super::*;

pub(super) fn mb(b: u64) -> String {
    format!("{:.0} MB", b as f64 / (1024.0 * 1024.0))
}

pub(super) fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// The figures of one run beside the targets, as a markdown table.
pub fn table(x: &Outcome) -> String {
    let per_fragment = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6 / x.fragments as f64);
    let mut s = format!(
        "{} fragments, {} simulated workers × {} slots\n\n\
         | figure | measured | target | measured/target | verdict |\n|---|---:|---:|---:|---|\n",
        x.fragments, x.workers, x.slots
    );
    s += &format!(
        "| submit (`project_add`, {} files) | {} | < 10 s | {:.2} | {} |\n",
        x.fragments,
        secs(x.submit),
        x.submit.as_secs_f64() / TARGET_SUBMIT.as_secs_f64(),
        verdict(x.submit < TARGET_SUBMIT)
    );
    s += &format!(
        "| … of which: listing the directory (readdir + stat, timed in the bench) | {} | | | |\n",
        secs(x.listing)
    );
    if let Some(a) = x.submit_to_added {
        s += &format!(
            "| … of which: submit → herzog's \"project added\" (listing, state machine) | {} | | | |\n",
            secs(a)
        );
        s += &format!(
            "| … of which: \"project added\" → reply (commit of every row) | {} | | | |\n",
            secs(x.submit.saturating_sub(a))
        );
    }
    s += &format!(
        "| fragments/s sustained (first completion → {}) | {:.0}/s | ≥ 10,000/s | {:.2} | {} |\n",
        if x.restart.is_some() { "kill" } else { "last" },
        x.rate,
        x.rate / TARGET_RATE,
        verdict(x.rate >= TARGET_RATE)
    );
    if x.rate_sampled.is_finite() {
        s += &format!(
            "| fragments/s, median of 1 s samples | {:.0}/s | ≥ 10,000/s | {:.2} | {} |\n",
            x.rate_sampled,
            x.rate_sampled / TARGET_RATE,
            verdict(x.rate_sampled >= TARGET_RATE)
        );
    }
    if let Some(r) = x.rate_after {
        s += &format!(
            "| fragments/s after the restart (first start → last) | {r:.0}/s | ≥ 10,000/s | {:.2} | {} |\n",
            r / TARGET_RATE,
            verdict(r >= TARGET_RATE)
        );
    }
    s += &format!(
        "| herzog peak RSS (VmHWM, max of both processes) | {} | < 300 MB | {:.2} | {} |\n",
        mb(x.peak_rss),
        x.peak_rss as f64 / TARGET_RSS as f64,
        verdict(x.peak_rss < TARGET_RSS)
    );
    if let Some(r) = x.restart {
        s += &format!(
            "| restart: spawn → first {} at a worker | {} | < 2 s | {:.2} | {} |\n",
            if x.restart_by_completion {
                "acknowledged completion (nothing was left to start)"
            } else {
                "`fragment_start`"
            },
            secs(r),
            r.as_secs_f64() / TARGET_RESTART.as_secs_f64(),
            verdict(r < TARGET_RESTART)
        );
        s += &format!(
            "| … of which: spawn → accepting connections | {} | | | |\n",
            x.listening.map_or("-".into(), secs)
        );
        s += &format!(
            "| … of which: herzog's \"state restored\" (its log) | {} | | | |\n",
            x.restored_ms.map_or("-".into(), |m| format!("{m} ms"))
        );
    }
    s += &format!(
        "| register {} workers (dial twice + `resources_register`) | {} | | | |\n",
        x.workers,
        secs(x.register)
    );
    s += &format!(
        "| herzog CPU per fragment (user+sys) | {} | | | |\n",
        per_fragment(x.herzog_cpu)
    );
    s += &format!(
        "| simulator CPU per fragment (this process) | {} | | | |\n",
        per_fragment(x.bench_cpu)
    );
    s += &format!("| submit → project finished | {} | | | |\n", secs(x.total));
    s += &format!(
        "| `project_progress` latency while busy (median of the 1 s samples) | {} | | | |\n",
        x.query_latency
            .map_or("> 900 ms".into(), |l| format!("{} ms", l.as_millis()))
    );
    s += &format!("| database + WAL at the end | {} | | | |\n", mb(x.db_bytes));
    s += &format!(
        "| open-file limit: bench {} (hard {}), herzog {} | | | | |\n",
        x.bench_nofile.0,
        x.bench_nofile.1,
        x.herzog_nofile.map_or("?".into(), |n| n.to_string())
    );
    if x.refused > 0 {
        s += &format!("| completions herzog refused | {} | | | |\n", x.refused);
    }
    s
}

/// One line per run for the sweep's table.
pub fn sweep_table(xs: &[Outcome]) -> String {
    let mut s = String::from(
        "| fragments | workers × slots | register | submit | fragments/s (→kill) | fragments/s (1 s median) | after restart | peak RSS | restart → first start | restored (log) | herzog CPU/fragment |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for x in xs {
        s += &format!(
            "| {} | {} × {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.1} µs |\n",
            x.fragments,
            x.workers,
            x.slots,
            secs(x.register),
            secs(x.submit),
            x.rate,
            if x.rate_sampled.is_finite() {
                format!("{:.0}", x.rate_sampled)
            } else {
                "-".into()
            },
            x.rate_after.map_or("-".into(), |r| format!("{r:.0}")),
            mb(x.peak_rss),
            x.restart.map_or("-".into(), |r| {
                format!("{}{}", secs(r), if x.restart_by_completion { " (ack)" } else { "" })
            }),
            x.restored_ms.map_or("-".into(), |m| format!("{m} ms")),
            x.herzog_cpu.as_secs_f64() * 1e6 / x.fragments as f64,
        );
    }
    s
}
