//! `hz report PROJECT`: what a project's attempts used (Slurm's seff and sacct in one), as
//! herzog's record has it, and the arithmetic behind it (nearest-rank percentiles, CPU and
//! memory efficiency), kept here apart from the SQL so it is tested without a database.

use crate::Millis;
use crate::requests::Requests;
use serde::{Deserialize, Serialize};

/// How many fragments `slowest` and `largest` list.
pub const TOP: usize = 10;

/// A project's usage report (`hz report P --json`). Field names are stable.
///
/// Which attempts count in the distributions and the top lists: the **last attempt of each
/// finished fragment** (succeeded or failed) whose program ran and reported its exit, as
/// `seff` reports a job's final run and `sacct` shows a requeued job's last instance. An
/// attempt that was lost with its worker or stopped has no measured usage, one that could
/// not start used none: neither counts. `hosts` counts every attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub project: String,
    /// An `hz run` job (a project of one fragment named `run:N`) rather than a batch project.
    pub job: bool,
    /// When it was removed, for a removed project (the latest of that name, when no live one
    /// has it).
    pub removed_at: Option<Millis>,
    /// What each attempt asked for (`hz action --cpus --mem --time`).
    pub requests: Requests,
    /// Its fragments by state.
    pub fragments: FragmentCounts,
    /// How many attempts the distributions count (see above).
    pub counted: u64,
    /// Wall time (ms) from the program's start to its exit.
    pub wall_ms: Option<Stats<u64>>,
    /// User plus system CPU time (ms) of the program and its waited-for children.
    pub cpu_ms: Option<Stats<u64>>,
    /// CPU time over wall time × the CPUs requested (1 when none were): 1.0 is every requested
    /// CPU busy all the time. Attempts of no measurable wall time (0 ms) are left out.
    pub cpu_efficiency: Option<Stats<f64>>,
    /// The peak resident memory (bytes) of the largest process of the attempt, as wait4
    /// reports it.
    pub peak_memory_bytes: Option<Stats<u64>>,
    /// Peak memory over the memory requested (only with `--mem`).
    pub memory_efficiency: Option<Stats<f64>>,
    /// Sums over the counted attempts.
    pub total: Totals,
    /// The (at most [`TOP`]) counted fragments of the longest wall time, longest first.
    pub slowest: Vec<FragmentUsage>,
    /// The (at most [`TOP`]) counted fragments of the highest peak memory, largest first.
    pub largest: Vec<FragmentUsage>,
    /// Failed fragments counted by their reason, most frequent first.
    pub failures: Vec<FailureCount>,
    /// Every attempt of the project, counted by the worker it was sent to, by worker name.
    pub hosts: Vec<HostAttempts>,
}

/// A project's fragments by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentCounts {
    pub total: u64,
    pub pending: u64,
    /// Dispatched: running, or queued on their worker.
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
}

/// Minimum, median, 95th percentile and maximum of a sample (nearest rank: see
/// [`nearest_rank`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats<T> {
    pub min: T,
    pub median: T,
    pub p95: T,
    pub max: T,
}

/// Sums over the counted attempts, and the CPU efficiency of all of them together (seff's
/// figure for a job array: total CPU time over total wall time × CPUs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub cpu_efficiency: Option<f64>,
}

/// One fragment's counted attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentUsage {
    pub fragment: String,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    /// The cgroup's peak where there was one, else wait4's; none where neither was measured.
    pub peak_memory_bytes: Option<u64>,
    pub worker: String,
}

/// How many failed fragments failed for one reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCount {
    pub reason: String,
    pub fragments: u64,
    /// The first of them (by position in the project), to look at with `hz logs`.
    pub example: String,
}

/// The attempts sent to one worker, by how they ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAttempts {
    pub worker: String,
    pub attempts: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Lost with the worker (or whose exit came after they were given up).
    pub lost: u64,
    /// Stopped by herzog (the project removed) or taken back.
    pub stopped: u64,
    /// Running or queued there now.
    pub running: u64,
    /// Wall and CPU time of its attempts that reported an exit.
    pub wall_ms: u64,
    pub cpu_ms: u64,
}

/// The `p`th percentile (0 to 100) of `sorted` (ascending) by the **nearest-rank method**:
/// the value of rank ⌈p/100 × n⌉ (1-based; rank 1 for p = 0), so every percentile is a value
/// that was measured, never an interpolation. The median of an even count is the lower of
/// the two middle values; the 95th percentile of 20 values is the 19th. `None` for an empty
/// sample.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: u32) -> Option<T> {
    let n = sorted.len() as u64;
    if n == 0 {
        return None;
    }
    let rank = (u64::from(p.min(100)) * n).div_ceil(100).max(1);
    Some(sorted[(rank - 1) as usize])
}

impl<T: Copy + PartialOrd> Stats<T> {
    /// The statistics of `values` (in any order); `None` when there are none.
    pub fn of(mut values: Vec<T>) -> Option<Stats<T>> {
        values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        Some(Stats {
            min: *values.first()?,
            median: nearest_rank(&values, 50)?,
            p95: nearest_rank(&values, 95)?,
            max: *values.last()?,
        })
    }
}

/// CPU time over wall time × `cpus` (at least 1); `None` for a wall time of 0.
pub fn cpu_efficiency(cpu_ms: u64, wall_ms: u64, cpus: u32) -> Option<f64> {
    let capacity = wall_ms as f64 * f64::from(cpus.max(1));
    (wall_ms > 0).then(|| cpu_ms as f64 / capacity)
}

/// Peak memory over the memory requested; `None` when none was (or 0).
pub fn memory_efficiency(peak_bytes: u64, requested: Option<u64>) -> Option<f64> {
    requested.filter(|r| *r > 0).map(|r| peak_bytes as f64 / r as f64)
}

/// Gathers the counted attempts one at a time (a project may have millions) into the
/// distributions, totals and top lists of a [`Report`].
#[derive(Debug)]
pub struct Usage {
    requests: Requests,
    walls: Vec<u64>,
    cpus: Vec<u64>,
    cpu_eff: Vec<f64>,
    peaks: Vec<u64>,
    total: Totals,
    /// Its capacity in CPU-ms (wall × CPUs), for the total efficiency.
    capacity_ms: u128,
    slowest: Vec<FragmentUsage>,
    largest: Vec<FragmentUsage>,
}

impl Usage {
    pub fn new(requests: Requests) -> Usage {
        Usage {
            requests,
            walls: Vec::new(),
            cpus: Vec::new(),
            cpu_eff: Vec::new(),
            peaks: Vec::new(),
            total: Totals::default(),
            capacity_ms: 0,
            slowest: Vec::new(),
            largest: Vec::new(),
        }
    }

    /// Counts one fragment's attempt.
    pub fn add(&mut self, f: FragmentUsage) {
        let cpus = self.requests.packing_cpus();
        self.walls.push(f.wall_ms);
        self.cpus.push(f.cpu_ms);
        if let Some(peak) = f.peak_memory_bytes {
            self.peaks.push(peak);
        }
        if let Some(e) = cpu_efficiency(f.cpu_ms, f.wall_ms, cpus) {
            self.cpu_eff.push(e);
        }
        self.total.wall_ms += f.wall_ms;
        self.total.cpu_ms += f.cpu_ms;
        self.capacity_ms += u128::from(f.wall_ms) * u128::from(cpus);
        // Ties go to the fragment seen first (the store gives them in project order).
        keep_top(&mut self.slowest, &f, |u| u.wall_ms);
        if f.peak_memory_bytes.is_some() {
            keep_top(&mut self.largest, &f, |u| u.peak_memory_bytes.unwrap_or(0));
        }
    }

    /// The report's usage part: `counted`, the distributions, totals and top lists.
    pub fn finish(self, report: &mut Report) {
        report.counted = self.walls.len() as u64;
        let request = self.requests.memory_bytes;
        report.memory_efficiency = Stats::of(
            self.peaks
                .iter()
                .filter_map(|p| memory_efficiency(*p, request))
                .collect(),
        );
        report.wall_ms = Stats::of(self.walls);
        report.cpu_ms = Stats::of(self.cpus);
        report.cpu_efficiency = Stats::of(self.cpu_eff);
        report.peak_memory_bytes = Stats::of(self.peaks);
        let mut total = self.total;
        total.cpu_efficiency = (self.capacity_ms > 0).then(|| total.cpu_ms as f64 / self.capacity_ms as f64);
        report.total = total;
        report.slowest = self.slowest;
        report.largest = self.largest;
    }
}

/// Puts `f` into `top` (descending by `key`, at most [`TOP`]) if it belongs there; an equal
/// key goes after those already in.
fn keep_top(top: &mut Vec<FragmentUsage>, f: &FragmentUsage, key: impl Fn(&FragmentUsage) -> u64) {
    let k = key(f);
    let at = top.partition_point(|u| key(u) >= k);
    if at < TOP {
        top.insert(at, f.clone());
        top.truncate(TOP);
    }
}

/// The reason failures are counted under: the fragment's reason, except that an out-of-memory
/// end is counted by its limit alone (`out of memory: limit 2 GiB`), since the peak it names
/// differs for every fragment.
pub fn failure_kind(reason: &str) -> &str {
    match reason.split_once(", peak ") {
        Some((head, _)) if head.starts_with("out of memory: limit ") => head,
        _ => reason,
    }
}

/// Failed fragments counted by [`failure_kind`]: `groups` are (reason, fragments, position
/// of the first, its name), one per distinct reason; the answer is most frequent first (ties
/// by reason), each with the first fragment of its kind.
pub fn count_failures(groups: Vec<(String, u64, u64, String)>) -> Vec<FailureCount> {
    let mut kinds: std::collections::BTreeMap<String, (u64, u64, String)> = Default::default();
    for (reason, n, first, example) in groups {
        let entry = kinds
            .entry(failure_kind(&reason).to_string())
            .or_insert((0, u64::MAX, String::new()));
        entry.0 += n;
        if first < entry.1 {
            (entry.1, entry.2) = (first, example);
        }
    }
    let mut counts: Vec<FailureCount> = kinds
        .into_iter()
        .map(|(reason, (fragments, _, example))| FailureCount {
            reason,
            fragments,
            example,
        })
        .collect();
    // Stable: equal counts stay in reason order.
    counts.sort_by_key(|c| std::cmp::Reverse(c.fragments));
    counts
}

impl Report {
    /// An empty report of `project`: nothing counted yet.
    pub fn new(project: String, job: bool, removed_at: Option<Millis>, requests: Requests) -> Report {
        Report {
            project,
            job,
            removed_at,
            requests,
            fragments: FragmentCounts::default(),
            counted: 0,
            wall_ms: None,
            cpu_ms: None,
            cpu_efficiency: None,
            peak_memory_bytes: None,
            memory_efficiency: None,
            total: Totals::default(),
            slowest: Vec::new(),
            largest: Vec::new(),
            failures: Vec::new(),
            hosts: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_are_measured_values() {
        let v: Vec<u64> = (1..=20).map(|i| i * 100).collect();
        assert_eq!(nearest_rank(&v, 0), Some(100));
        assert_eq!(nearest_rank(&v, 5), Some(100));
        assert_eq!(nearest_rank(&v, 6), Some(200));
        assert_eq!(nearest_rank(&v, 50), Some(1000), "the lower middle of an even count");
        assert_eq!(nearest_rank(&v, 95), Some(1900), "rank 19 of 20");
        assert_eq!(nearest_rank(&v, 96), Some(2000));
        assert_eq!(nearest_rank(&v, 100), Some(2000));
        assert_eq!(nearest_rank(&v, 250), Some(2000), "above 100 is the maximum");
        // Wikipedia's worked example of the method: 15, 20, 35, 40, 50.
        let w = [15, 20, 35, 40, 50];
        assert_eq!(
            [5, 30, 40, 50, 100].map(|p| nearest_rank(&w, p)),
            [Some(15), Some(20), Some(20), Some(35), Some(50)]
        );
        assert_eq!(nearest_rank(&[7], 50), Some(7));
        assert_eq!(nearest_rank::<u64>(&[], 50), None);
    }

    #[test]
    fn stats_sort_what_they_are_given() {
        let s = Stats::of(vec![5u64, 1, 4, 2, 3]).expect("some");
        assert_eq!(
            s,
            Stats {
                min: 1,
                median: 3,
                p95: 5,
                max: 5
            }
        );
        let f = Stats::of(vec![0.5, 0.25, 1.0]).expect("some");
        assert_eq!((f.min, f.median, f.max), (0.25, 0.5, 1.0));
        assert_eq!(Stats::<u64>::of(Vec::new()), None);
    }

    #[test]
    fn efficiencies_are_against_the_request() {
        assert_eq!(cpu_efficiency(500, 1000, 1), Some(0.5));
        assert_eq!(cpu_efficiency(3000, 1000, 4), Some(0.75));
        assert_eq!(
            cpu_efficiency(2000, 1000, 1),
            Some(2.0),
            "threads beyond an unrequested CPU"
        );
        assert_eq!(cpu_efficiency(5, 0, 1), None);
        assert_eq!(cpu_efficiency(500, 1000, 0), Some(0.5), "0 CPUs counts as 1");
        assert_eq!(memory_efficiency(512 << 20, Some(1 << 30)), Some(0.5));
        assert_eq!(memory_efficiency(512 << 20, None), None);
        assert_eq!(memory_efficiency(512 << 20, Some(0)), None);
    }

    fn usage(name: &str, wall_ms: u64, cpu_ms: u64, peak: u64) -> FragmentUsage {
        FragmentUsage {
            fragment: name.into(),
            wall_ms,
            cpu_ms,
            peak_memory_bytes: Some(peak),
            worker: "w".into(),
        }
    }

    #[test]
    fn usage_gathers_distributions_totals_and_tops() {
        let requests = Requests {
            cpus: Some(2),
            memory_bytes: Some(1000),
            time_ms: None,
        };
        let mut u = Usage::new(requests);
        for i in 1..=25u64 {
            // Fragment i: i s of wall, half a CPU busy, 10·i bytes; f3 and f4 tie on memory.
            let peak = if i == 4 { 30 } else { 10 * i };
            u.add(usage(&format!("f{i:02}"), i * 1000, i * 500, peak));
        }
        u.add(usage("instant", 0, 0, 1));
        let mut r = Report::new("p".into(), false, None, requests);
        u.finish(&mut r);
        assert_eq!(r.counted, 26);
        let wall = r.wall_ms.expect("wall");
        assert_eq!((wall.min, wall.median, wall.p95, wall.max), (0, 12_000, 24_000, 25_000));
        let eff = r.cpu_efficiency.expect("efficiency");
        assert_eq!((eff.min, eff.max), (0.25, 0.25), "the 0 ms attempt is left out");
        assert_eq!(r.total.wall_ms, 325_000);
        assert_eq!(r.total.cpu_ms, 162_500);
        assert_eq!(r.total.cpu_efficiency, Some(0.25));
        let mem = r.memory_efficiency.expect("memory efficiency");
        assert_eq!((mem.min, mem.max), (0.001, 0.25));
        let slow: Vec<&str> = r.slowest.iter().map(|f| f.fragment.as_str()).collect();
        assert_eq!(
            slow,
            ["f25", "f24", "f23", "f22", "f21", "f20", "f19", "f18", "f17", "f16"]
        );
        assert_eq!(r.largest.len(), TOP);
        assert_eq!(r.largest[0].fragment, "f25");
        // Without a memory request there is no memory efficiency.
        let mut u = Usage::new(Requests::default());
        u.add(usage("a", 1000, 1000, 5));
        let mut r = Report::new("p".into(), false, None, Requests::default());
        u.finish(&mut r);
        assert_eq!(r.memory_efficiency, None);
        assert_eq!(r.cpu_efficiency.map(|s| s.max), Some(1.0));
    }

    #[test]
    fn a_peak_not_measured_counts_in_no_memory_figure() {
        let requests = Requests {
            memory_bytes: Some(100),
            ..Requests::default()
        };
        let mut u = Usage::new(requests);
        u.add(usage("measured", 1000, 1000, 50));
        u.add(FragmentUsage {
            peak_memory_bytes: None,
            ..usage("unmeasured", 2000, 1000, 0)
        });
        let mut r = Report::new("p".into(), false, None, requests);
        u.finish(&mut r);
        assert_eq!(r.counted, 2);
        let peak = r.peak_memory_bytes.expect("one measured");
        assert_eq!((peak.min, peak.max), (50, 50));
        assert_eq!(r.memory_efficiency.map(|m| (m.min, m.max)), Some((0.5, 0.5)));
        let largest: Vec<&str> = r.largest.iter().map(|f| f.fragment.as_str()).collect();
        assert_eq!(largest, ["measured"]);
    }

    #[test]
    fn ties_keep_the_order_they_came_in() {
        let mut top = Vec::new();
        for (name, wall) in [("a", 5), ("b", 7), ("c", 5), ("d", 9)] {
            keep_top(&mut top, &usage(name, wall, 0, 0), |u| u.wall_ms);
        }
        let names: Vec<&str> = top.iter().map(|f| f.fragment.as_str()).collect();
        assert_eq!(names, ["d", "b", "a", "c"]);
    }

    #[test]
    fn out_of_memory_ends_count_by_their_limit() {
        let oom = |peak| {
            crate::requests::LimitHit::Memory {
                limit_bytes: 2 << 30,
                peak_bytes: peak,
            }
            .to_string()
        };
        assert_eq!(failure_kind(&oom(2 << 30)), "out of memory: limit 2 GiB");
        assert_eq!(failure_kind("exited with 3"), "exited with 3");
        assert_eq!(failure_kind("could not start: x, peak y"), "could not start: x, peak y");
        let time = crate::requests::LimitHit::Time { limit_ms: 600_000 }.to_string();
        let counted = count_failures(vec![
            ("exited with 3".into(), 1, 4, "e".into()),
            (oom(2 << 30), 1, 7, "h".into()),
            (oom(3 << 29), 2, 2, "c".into()),
            (time.clone(), 1, 9, "j".into()),
        ]);
        let got: Vec<(&str, u64, &str)> = counted
            .iter()
            .map(|f| (f.reason.as_str(), f.fragments, f.example.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("out of memory: limit 2 GiB", 3, "c"),
                ("exited with 3", 1, "e"),
                ("time limit 10m reached", 1, "j")
            ]
        );
    }

    #[test]
    fn a_report_round_trips_through_json() {
        let mut r = Report::new("p".into(), true, Some(5), Requests::default());
        let mut u = Usage::new(Requests::default());
        u.add(usage("a", 1000, 10, 4096));
        u.finish(&mut r);
        r.failures.push(FailureCount {
            reason: "exited with 3".into(),
            fragments: 2,
            example: "a".into(),
        });
        let json = serde_json::to_string(&r).expect("json");
        assert!(
            json.contains("\"peak_memory_bytes\"") && json.contains("\"p95\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Report>(&json).expect("back"), r);
    }
}
