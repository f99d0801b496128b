//! The fair share in the machine: what feeds the ledger (programs starting and ending, the
//! projects with work), what the scheduler is told, `hz share` and `hz shares`.

use super::*;

/// What an attempt is taken to use before any of its project's attempts ended: the cost a
/// round charges a project per slot it gives (the real slot-time replaces it as it accrues).
const UNKNOWN_ATTEMPT_MS: u64 = 1_000;

impl Machine {
    /// A live attempt of a project in the fair share ended: its slot-time (`cpus` a
    /// millisecond) stops accruing, at its real end where its completion says how long it ran.
    pub(super) fn fair_ended(
        fair: &mut crate::fair::Ledger,
        now: Now,
        live: &Live,
        cpus: u32,
        completion: Option<&Completion>,
    ) {
        let ran_ms = completion
            .filter(|c| !matches!(c.exit, Exit::StartFailed(_)))
            .map(|c| c.wall_ms.min(i64::MAX as u64) as i64);
        match (live.counted, ran_ms) {
            (Some(from), Some(ms)) => fair.end_n(live.project, cpus, from.0, from.0.saturating_add(ms), now.mono.0),
            (Some(from), None) => fair.end_n(live.project, cpus, from.0, now.mono.0, now.mono.0),
            // A short program: no start notice came before its completion.
            (None, Some(ms)) => fair.ran(
                live.project,
                ms.min(now.mono.since(live.since).max(0)) * i64::from(cpus.max(1)),
                now.mono.0,
            ),
            (None, None) => {}
        }
    }

    /// The projects the scheduler may give slots, each with how far below its share it is.
    /// Makes them the ledger's active projects first (the priority project is not one: it
    /// takes what it can use, and the others share the rest).
    pub(super) fn fair_demands(&mut self, now: Now, priority: Option<ProjectId>) -> Vec<Demand> {
        let wanting: Vec<(ProjectId, u64)> = self
            .projects
            .values()
            .map(|p| (p.id, p.startable()))
            .filter(|(_, pending)| *pending > 0)
            .collect();
        let active: Vec<ProjectId> = wanting
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| Some(*p) != priority)
            .collect();
        self.fair.sync(&active, now.mono.0);
        // Before any attempt ended, the known lengths of the others, else a second.
        let known: Vec<u64> = self.projects.values().filter_map(|p| p.recent_wall_ms).collect();
        let fallback = if known.is_empty() {
            UNKNOWN_ATTEMPT_MS
        } else {
            known.iter().sum::<u64>() / known.len() as u64
        };
        wanting
            .into_iter()
            .map(|(id, pending)| {
                let p = &self.projects[&id];
                // An attempt of N CPUs uses N slot-ms a millisecond.
                let cpus = u64::from(crate::scheduler::Size::of(&p.spec.requests).cpus);
                let cost_ms = p.recent_wall_ms.unwrap_or(fallback).max(1).saturating_mul(cpus);
                // Its starts waiting in workers' queues will use slot-time they have not yet.
                let queued = p.counts.running.saturating_sub(p.started);
                let owed = self.fair.deficit(id, now.mono.0) - (queued * cost_ms) as f64;
                Demand {
                    project: id,
                    pending,
                    owed_ms: owed.round() as i64,
                    weight: p.share,
                    cost_ms,
                    size: crate::scheduler::Size::of(&p.spec.requests),
                }
            })
            .collect()
    }

    /// `hz share P N`.
    pub(super) fn set_share(&mut self, now: Now, project: &str, share: u32) -> Result<String, Rejected> {
        let id = self.project_id(project)?;
        if share == 0 {
            return Err(ApiError::InvalidValue {
                what: "share".into(),
                reason: format!("must be at least 1: `hz pause {project}` holds a project"),
            }
            .into());
        }
        let p = self.projects.get_mut(&id).expect("found above");
        p.share = share;
        self.fair.set_weight(id, share, now.mono.0);
        self.writes.push(Write::ProjectShare { id, share });
        tracing::info!(%project, share, "project share set");
        Ok(format!(
            "{project} has a share of {share}: {share}x the slot-time of a share-1 project while both have work"
        ))
    }

    /// `hz shares`: every project active in the fair share or running programs, in age order.
    pub(crate) fn shares(&self) -> Vec<ShareInfo> {
        self.fair
            .view(self.last_mono.0)
            .into_iter()
            .filter_map(|v| {
                let p = self.projects.get(&v.project)?;
                Some(ShareInfo {
                    project: p.name.clone(),
                    share: v.weight,
                    active: v.active,
                    target: v.target,
                    last_minute: v.last_minute,
                    since_active: v.since_active,
                    used_ms: v.used_ms.max(0) as u64,
                    active_ms: v.active_ms.max(0) as u64,
                    deficit_ms: v.deficit_ms,
                    priority: self.policy
                        == (Policy::Priority {
                            project: p.name.clone(),
                        }),
                })
            })
            .collect()
    }
}
