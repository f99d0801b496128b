//! The faults a run strikes with, each at its own odds: chosen by the seed (swarm testing),
//! or given as `--faults drop=0.05,delay=0.1` (what a shrunk failure replays with).

use rand::RngExt;
use rand_xorshift::XorShiftRng;

/// Each fault's odds per chance (per message, or per step); zero is off.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// A message waits up to 5 s longer.
    pub delay: f64,
    /// A message is lost (a start's loss comes back to herzog as a failed dispatch).
    pub drop: f64,
    /// A message arrives twice.
    pub duplicate: f64,
    /// A worker is cut off for up to 3 worker timeouts, then heals and registers again.
    pub partition: f64,
    /// A worker's kinski crashes: its programs die, its journal survives; it restarts.
    pub worker_crash: f64,
    /// herzog crashes before a commit, in the middle of one (some of its writes made in the
    /// open transaction, which SQLite rolls back), between a commit and its replies and
    /// effects, or between its replies and its effects, and restarts from its store.
    pub herzog_crash: f64,
    /// The wall clock jumps by up to two minutes, either way.
    pub clock_jump: f64,
    /// The disk fills: the next commit that needs room fails, herzog stops and is restarted.
    pub disk_full: f64,
    /// hz removes a project while it runs (its late completions then find it gone).
    pub remove: f64,
    /// hz gives a project priority, or sets the policy back to fair.
    pub policy: f64,
    /// hz pauses or resumes a project, limits it, changes its share, cancels some of its
    /// fragments, or drains a worker (pauses and drains are undone once the faults stop).
    pub control: f64,
}

impl Faults {
    /// Swarm testing: each fault is on or off by the seed, at a rate the seed picks.
    pub(crate) fn choose(rng: &mut XorShiftRng) -> Faults {
        let mut pick = |hi: f64| {
            if rng.random_bool(0.5) {
                // Three significant digits: a replay line stays readable, and exact.
                let odds: f64 = rng.random_range(hi / 10.0..hi);
                format!("{odds:.2e}").parse().unwrap_or(odds)
            } else {
                0.0
            }
        };
        Faults {
            delay: pick(0.2),
            drop: pick(0.1),
            duplicate: pick(0.1),
            partition: pick(0.005),
            worker_crash: pick(0.003),
            herzog_crash: pick(0.005),
            clock_jump: pick(0.005),
            disk_full: pick(0.002),
            remove: pick(0.001),
            policy: pick(0.005),
            control: pick(0.01),
        }
    }
}

impl Faults {
    /// Each fault's name (as `--faults` spells it) and odds.
    pub fn rates(&mut self) -> [(&'static str, &mut f64); 11] {
        [
            ("delay", &mut self.delay),
            ("drop", &mut self.drop),
            ("duplicate", &mut self.duplicate),
            ("partition", &mut self.partition),
            ("worker_crash", &mut self.worker_crash),
            ("herzog_crash", &mut self.herzog_crash),
            ("clock_jump", &mut self.clock_jump),
            ("disk_full", &mut self.disk_full),
            ("remove", &mut self.remove),
            ("policy", &mut self.policy),
            ("control", &mut self.control),
        ]
    }
}

/// `delay=0.1,drop=0.05`, the faults that are on; `none` when none is.
impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut copy = self.clone();
        let on: Vec<String> = copy
            .rates()
            .into_iter()
            .filter(|(_, rate)| **rate > 0.0)
            .map(|(name, rate)| format!("{name}={rate}"))
            .collect();
        if on.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", on.join(","))
        }
    }
}

/// A `--faults` value that does not name faults and their odds.
#[derive(Debug, thiserror::Error)]
#[error(
    "failed to read the faults {given:?}: {why}; write them as name=odds,... (names: delay, drop, duplicate, partition, worker_crash, herzog_crash, clock_jump, disk_full, remove, policy, control; odds from 0 to 1), or none"
)]
pub struct BadFaults {
    given: String,
    why: String,
}

impl std::str::FromStr for Faults {
    type Err = BadFaults;

    fn from_str(given: &str) -> Result<Faults, BadFaults> {
        let bad = |why: String| BadFaults {
            given: given.to_string(),
            why,
        };
        let mut faults = Faults::default();
        if given.trim() == "none" {
            return Ok(faults);
        }
        let mut named = Vec::new();
        for part in given.split(',') {
            if part.trim().is_empty() {
                return Err(bad("an entry is empty (a stray comma?)".into()));
            }
            let (name, odds) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} has no '='")))?;
            if named.contains(&name.trim()) {
                return Err(bad(format!("{:?} is given twice", name.trim())));
            }
            named.push(name.trim());
            let odds: f64 = odds
                .trim()
                .parse()
                .ok()
                .filter(|o: &f64| (0.0..=1.0).contains(o))
                .ok_or_else(|| bad(format!("{odds:?} is not odds from 0 to 1")))?;
            let mut rates = faults.rates();
            let slot = rates
                .iter_mut()
                .find(|(n, _)| *n == name.trim())
                .ok_or_else(|| bad(format!("there is no fault {name:?}")))?;
            *slot.1 = odds;
        }
        Ok(faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_read_back_what_they_print() {
        let faults: Faults = "drop=0.05,remove=0.001".parse().expect("valid");
        assert_eq!(faults.drop, 0.05);
        assert_eq!(faults.remove, 0.001);
        assert_eq!(faults.to_string().parse::<Faults>().expect("valid"), faults);
        assert_eq!("none".parse::<Faults>().expect("valid"), Faults::default());
        let err = "drop=2".parse::<Faults>().expect_err("odds above 1").to_string();
        assert!(err.contains("from 0 to 1"), "{err}");
        let err = "drop=0.1,".parse::<Faults>().expect_err("a stray comma").to_string();
        assert!(err.contains("empty"), "{err}");
        let err = "drop=0.1,drop=0".parse::<Faults>().expect_err("twice").to_string();
        assert!(err.contains("twice"), "{err}");
        let err = "drip=0.1".parse::<Faults>().expect_err("no such fault").to_string();
        assert!(err.contains("no fault \"drip\""), "{err}");
    }
}
