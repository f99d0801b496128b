//! Fair share by usage: each project's CPU-time, shown as such (running attempts × the CPUs
//! each asked for × time, from the real start of each program; counted here in slot-ms, an
//! N-CPU attempt as N slots) against what its weight entitles it to since it became active.
//!
//! The ledger is pure: time enters as a monotonic reading in milliseconds. Every operation
//! is O(log P) for P projects but [`Ledger::sync`], which the scheduler calls once per round
//! and costs O(P); nothing scans the live attempts. Used slot-time is kept as
//! `base + running × now` (a start subtracts its start time, an end adds its end time), so it
//! is exact between events without being advanced. The entitlement is a virtual clock:
//! `virt` grows by `running × dt / weight` over the active projects (slot-ms per unit of
//! weight handed out), and a project is owed `weight × (virt − virt when it became active)`.
//! The deficit `owed − used` is what the scheduler sorts by. See docs/architecture.md,
//! "Scheduling".

use common::ProjectId;
use std::collections::{BTreeMap, VecDeque};

/// How long the "last minute" share looks back.
const MINUTE_MS: i64 = 60_000;
/// How often a project's usage is sampled for that share.
const SAMPLE_MS: i64 = 1_000;

/// One project's account.
#[derive(Clone, Debug)]
struct Account {
    weight: u32,
    /// Its attempts whose programs run now (counted from their start).
    running: i64,
    /// Used slot-ms, all told, is `base + running × now`.
    base: i64,
    /// While it is active (has work the scheduler may start).
    active: Option<Active>,
    /// (when, used, total used by every project) about every second while active.
    samples: VecDeque<(i64, i64, i64)>,
}

#[derive(Clone, Copy, Debug)]
struct Active {
    since: i64,
    used_at_start: i64,
    total_at_start: i64,
    /// Entitlement folded in at weight changes, slot-ms.
    owed: f64,
    /// `virt` when `owed` was last folded.
    virt_from: f64,
    /// What decay took off the deficit, slot-ms.
    forgiven: f64,
}

impl Account {
    fn used(&self, now: i64) -> i64 {
        self.base + self.running * now
    }
}

/// Every project's usage and entitlement.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ledger {
    accounts: BTreeMap<ProjectId, Account>,
    /// Used slot-ms of every project: `total_base + total_running × now`.
    total_base: i64,
    total_running: i64,
    /// Slot-ms per unit of weight handed out to the active projects, as of `virt_at`.
    virt: f64,
    virt_at: i64,
    active_weight: u64,
    active_running: i64,
    /// `herzog.fair_half_life`: a deficit halves over this long (`None`: never).
    half_life_ms: Option<i64>,
    decayed_at: i64,
}

/// One project's line in `hz shares`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ShareView {
    pub(crate) project: ProjectId,
    pub(crate) weight: u32,
    pub(crate) active: bool,
    /// Its weight over the active projects' weights (0 when not active).
    pub(crate) target: f64,
    /// Its part of all slot-time used in the last minute (or since it became active, if
    /// later); `None` when none was used.
    pub(crate) last_minute: Option<f64>,
    /// Its part of all slot-time used since it became active.
    pub(crate) since_active: Option<f64>,
    /// Its slot-time since it became active, ms.
    pub(crate) used_ms: i64,
    /// How long it has been active, ms.
    pub(crate) active_ms: i64,
    /// Its entitlement minus its use, ms (what the scheduler sorts by).
    pub(crate) deficit_ms: i64,
}

impl Ledger {
    /// `herzog.fair_half_life` (`None`, or not positive: no decay).
    pub(crate) fn set_half_life(&mut self, half_life_ms: Option<i64>) {
        self.half_life_ms = half_life_ms.filter(|h| *h > 0);
    }

    fn account(&mut self, p: ProjectId) -> &mut Account {
        self.accounts.entry(p).or_insert_with(|| Account {
            weight: 1,
            running: 0,
            base: 0,
            active: None,
            samples: VecDeque::new(),
        })
    }

    /// Brings `virt` to `now`: call before the active running count or weight changes.
    fn advance(&mut self, now: i64) {
        if now > self.virt_at {
            if self.active_weight > 0 {
                self.virt += (self.active_running * (now - self.virt_at)) as f64 / self.active_weight as f64;
            }
            self.virt_at = now;
        }
    }

    /// Slot-ms given to active projects outside the running count (a back-dated start, a
    /// program that ended before herzog heard it start) are handed out as entitlement too.
    fn credit(&mut self, ms: i64) {
        if self.active_weight > 0 {
            self.virt += ms as f64 / self.active_weight as f64;
        }
    }

    pub(crate) fn total_used(&self, now: i64) -> i64 {
        self.total_base + self.total_running * now
    }

    /// A program of `p` of one CPU started at `from` (tests).
    #[cfg(test)]
    pub(crate) fn start(&mut self, p: ProjectId, from: i64, now: i64) {
        self.start_n(p, 1, from, now);
    }

    /// A program of `p` asking for `cpus` CPUs started at `from` (≤ `now`; earlier when
    /// herzog heard late): it uses `cpus` slot-ms a millisecond (its CPU-time as packed).
    pub(crate) fn start_n(&mut self, p: ProjectId, cpus: u32, from: i64, now: i64) {
        self.advance(now);
        let n = i64::from(cpus.max(1));
        let from = from.min(now);
        let a = self.account(p);
        a.running += n;
        a.base -= from * n;
        let active = a.active.is_some();
        self.total_running += n;
        self.total_base -= from * n;
        if active {
            self.active_running += n;
            self.credit((now - from) * n);
        }
    }

    /// A program of `p` of one CPU ended (tests).
    #[cfg(test)]
    pub(crate) fn end(&mut self, p: ProjectId, from: i64, to: i64, now: i64) {
        self.end_n(p, 1, from, to, now);
    }

    /// A program of `p` asking for `cpus` CPUs, counted from `from`, ended at `to` (clamped
    /// to `from..=now`).
    pub(crate) fn end_n(&mut self, p: ProjectId, cpus: u32, from: i64, to: i64, now: i64) {
        self.advance(now);
        let n = i64::from(cpus.max(1));
        let to = to.clamp(from.min(now), now);
        let Some(a) = self.accounts.get_mut(&p) else { return };
        if a.running < n {
            return;
        }
        a.running -= n;
        a.base += to * n;
        let active = a.active.is_some();
        self.total_running -= n;
        self.total_base += to * n;
        if active {
            self.active_running -= n;
            self.credit((to - now) * n);
        }
    }

    /// A program of `p` ran `ms` and ended before herzog heard it start.
    pub(crate) fn ran(&mut self, p: ProjectId, ms: i64, now: i64) {
        self.advance(now);
        let a = self.account(p);
        a.base += ms;
        let active = a.active.is_some();
        self.total_base += ms;
        if active {
            self.credit(ms);
        }
    }

    /// `hz share`: from now on `p` is entitled in proportion to `weight` (at least 1).
    pub(crate) fn set_weight(&mut self, p: ProjectId, weight: u32, now: i64) {
        self.advance(now);
        let weight = weight.max(1);
        let virt = self.virt;
        let a = self.account(p);
        let old = a.weight;
        a.weight = weight;
        if let Some(act) = &mut a.active {
            act.owed += f64::from(old) * (virt - act.virt_from);
            act.virt_from = virt;
            self.active_weight = self.active_weight - u64::from(old) + u64::from(weight);
        }
    }

    /// A project is gone: its account goes, and its running programs stop counting.
    pub(crate) fn forget(&mut self, p: ProjectId, now: i64) {
        self.advance(now);
        let Some(a) = self.accounts.remove(&p) else { return };
        self.total_base += a.running * now;
        self.total_running -= a.running;
        if a.active.is_some() {
            self.active_weight -= u64::from(a.weight);
            self.active_running -= a.running;
        }
    }

    /// Makes exactly the projects in `active` (in id order) the active ones: a project that
    /// becomes active starts level (its entitlement and use count from now); one that stops
    /// being active drops its history. Also decays deficits and samples usage.
    pub(crate) fn sync(&mut self, active: &[ProjectId], now: i64) {
        self.advance(now);
        for p in active {
            self.account(*p);
        }
        let total = self.total_used(now);
        let virt = self.virt;
        let mut want = active.iter().peekable();
        for (id, a) in self.accounts.iter_mut() {
            let is = want.next_if(|w| *w == id).is_some();
            match (&a.active, is) {
                (Some(_), false) => {
                    a.active = None;
                    a.samples.clear();
                    self.active_weight -= u64::from(a.weight);
                    self.active_running -= a.running;
                }
                (None, true) => {
                    a.active = Some(Active {
                        since: now,
                        used_at_start: a.used(now),
                        total_at_start: total,
                        owed: 0.0,
                        virt_from: virt,
                        forgiven: 0.0,
                    });
                    self.active_weight += u64::from(a.weight);
                    self.active_running += a.running;
                }
                _ => {}
            }
        }
        self.decay(now);
        self.sample(now);
    }

    fn decay(&mut self, now: i64) {
        let Some(half) = self.half_life_ms else { return };
        let dt = now - self.decayed_at;
        if dt <= 0 {
            return;
        }
        self.decayed_at = now;
        let keep = 0.5f64.powf(dt as f64 / half as f64);
        let virt = self.virt;
        for a in self.accounts.values_mut() {
            let used = a.used(now);
            if let Some(act) = &mut a.active {
                let deficit = deficit(act, a.weight, virt, used);
                act.forgiven += deficit * (1.0 - keep);
            }
        }
    }

    fn sample(&mut self, now: i64) {
        let total = self.total_used(now);
        for a in self.accounts.values_mut() {
            if a.active.is_none() || a.samples.back().is_some_and(|s| now - s.0 < SAMPLE_MS) {
                continue;
            }
            a.samples.push_back((now, a.used(now), total));
            while a.samples.front().is_some_and(|s| now - s.0 > MINUTE_MS + SAMPLE_MS) {
                a.samples.pop_front();
            }
        }
    }

    /// `virt` as of `now`, without advancing.
    fn virt_at(&self, now: i64) -> f64 {
        if self.active_weight == 0 || now <= self.virt_at {
            return self.virt;
        }
        self.virt + (self.active_running * (now - self.virt_at)) as f64 / self.active_weight as f64
    }

    /// How far `p` is below its entitlement, slot-ms (negative: above it); 0 when not active.
    pub(crate) fn deficit(&self, p: ProjectId, now: i64) -> f64 {
        let virt = self.virt_at(now);
        self.accounts
            .get(&p)
            .and_then(|a| a.active.as_ref().map(|act| deficit(act, a.weight, virt, a.used(now))))
            .unwrap_or(0.0)
    }

    /// The accounts worth showing (active, or with programs running), in id order.
    pub(crate) fn view(&self, now: i64) -> Vec<ShareView> {
        let total = self.total_used(now);
        let virt = self.virt_at(now);
        let ratio = |part: i64, whole: i64| (whole > 0).then(|| part as f64 / whole as f64);
        self.accounts
            .iter()
            .filter(|(_, a)| a.active.is_some() || a.running > 0)
            .map(|(id, a)| {
                let used = a.used(now);
                let (used_ms, active_ms, since_active, last_minute, deficit_ms) = match &a.active {
                    Some(act) => {
                        let minute = a
                            .samples
                            .iter()
                            .find(|s| now - s.0 <= MINUTE_MS)
                            .map_or((act.used_at_start, act.total_at_start), |s| (s.1, s.2));
                        (
                            used - act.used_at_start,
                            now - act.since,
                            ratio(used - act.used_at_start, total - act.total_at_start),
                            ratio(used - minute.0, total - minute.1),
                            deficit(act, a.weight, virt, used).round() as i64,
                        )
                    }
                    None => (0, 0, None, None, 0),
                };
                ShareView {
                    project: *id,
                    weight: a.weight,
                    active: a.active.is_some(),
                    target: if a.active.is_some() && self.active_weight > 0 {
                        f64::from(a.weight) / self.active_weight as f64
                    } else {
                        0.0
                    },
                    last_minute,
                    since_active,
                    used_ms,
                    active_ms,
                    deficit_ms,
                }
            })
            .collect()
    }
}

fn deficit(act: &Active, weight: u32, virt: f64, used: i64) -> f64 {
    let owed = act.owed + f64::from(weight) * (virt - act.virt_from);
    owed - (used - act.used_at_start) as f64 - act.forgiven
}

#[cfg(test)]
#[path = "fair_tests.rs"]
pub(crate) mod tests;
