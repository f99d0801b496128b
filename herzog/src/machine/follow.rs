//! What a follower of a fragment's output (`hz logs -f`) asks the machine: where the fragment
//! is (its running attempt and worker, or how it ended), and whether an attempt still runs.

use super::*;
use common::output::FragmentNow;

/// A fragment as a follower sees it, with what locating its recorded logs needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Followed {
    pub(crate) now: FragmentNow,
    /// Its file name (`fragment` may have named it by index).
    pub(crate) name: String,
    pub(crate) results_dir: PathBuf,
}

impl Machine {
    /// Where fragment `fragment` (a file name, or an index when no file has that name) of
    /// `project` is. `attempt`, the one a follower reads, finds it without a look through the
    /// names while it runs.
    pub(crate) fn fragment_now(
        &self,
        project: &str,
        fragment: &str,
        attempt: Option<AttemptId>,
    ) -> Result<Followed, ApiError> {
        let id = self.project_id(project)?;
        let p = &self.projects[&id];
        let named = |i: usize| p.names.get(i) == fragment || fragment.parse::<usize>() == Ok(i);
        let live = attempt
            .and_then(|a| self.live.get(&a))
            .filter(|l| l.project == id && named(l.index as usize))
            .map(|l| l.index as usize);
        let index = live
            .or_else(|| p.names.position(fragment))
            .or_else(|| fragment.parse::<usize>().ok().filter(|&i| i < p.fragments.len()))
            .ok_or_else(|| ApiError::UnknownFragment {
                project: project.to_string(),
                fragment: fragment.to_string(),
            })?;
        let now = match &p.fragments[index].state {
            FragmentState::Pending => FragmentNow::Pending,
            FragmentState::Running { attempt, worker, .. } => FragmentNow::Running {
                attempt: *attempt,
                worker: worker.clone(),
            },
            FragmentState::Succeeded { attempt } => FragmentNow::Succeeded { attempt: *attempt },
            FragmentState::Failed { attempt, reason } => FragmentNow::Failed {
                attempt: *attempt,
                reason: reason.clone(),
            },
        };
        Ok(Followed {
            now,
            name: p.names.get(index).to_string(),
            results_dir: p.results_dir.clone(),
        })
    }

    /// Whether `attempt` is dispatched and not ended (its end not applied yet).
    pub(crate) fn is_live(&self, attempt: AttemptId) -> bool {
        self.live.contains_key(&attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::wire::{Completion, Exit};

    #[test]
    fn a_follower_finds_the_running_attempt_by_name_index_or_attempt_then_how_it_ended() {
        let timing = Timing {
            worker_timeout_ms: 10_000,
            start_grace_ms: 2_000,
            probe_retry_ms: 10_000,
        };
        let mut m = Machine::new(timing, PathBuf::from("/results"));
        let add = Event::AddProject(Box::new(NewProjectEvent {
            name: "p".into(),
            dir: PathBuf::from("/data"),
            spec: RunSpec::new("wc -l"),
            files: vec!["a".into(), "b".into()],
            after: Vec::new(),
            max_running: None,
            share: 1,
        }));
        m.handle(Now::at(0), add).expect("added");
        let register = Event::Register {
            worker: "w".into(),
            resources: Resources {
                slots: 1,
                cpus: 1,
                queue: 0,
                ..Resources::default()
            },
            running: Vec::new(),
            staged: false,
        };
        m.handle(Now::at(1), register).expect("registered");
        m.schedule(Now::at(2));
        let a = m.fragment_now("p", "a", None).expect("found");
        let FragmentNow::Running { attempt, worker } = a.now.clone() else {
            panic!("a runs: {a:?}")
        };
        assert_eq!((worker.as_str(), a.name.as_str()), ("w", "a"));
        assert!(a.results_dir.ends_with("p"), "{a:?}");
        // By index, and by the attempt a follower reads: the same.
        assert_eq!(m.fragment_now("p", "0", None), Ok(a.clone()));
        assert_eq!(m.fragment_now("p", "a", Some(attempt)), Ok(a.clone()));
        assert!(m.is_live(attempt));
        // One slot: b waits.
        assert_eq!(m.fragment_now("p", "1", None).expect("found").now, FragmentNow::Pending);
        assert!(matches!(
            m.fragment_now("p", "zz", None),
            Err(ApiError::UnknownFragment { .. })
        ));
        assert!(matches!(
            m.fragment_now("q", "a", None),
            Err(ApiError::UnknownProject { .. })
        ));
        let done = Event::Complete {
            worker: "w".into(),
            completion: Completion {
                limit: None,
                peak_memory_bytes: None,
                attempt,
                exit: Exit::Code(3),
                wall_ms: 1,
                cpu_ms: 1,
                peak_rss_kb: 1,
                finished_at: 3,
            },
            staging_error: None,
        };
        m.handle(Now::at(3), done).expect("completed");
        assert!(!m.is_live(attempt));
        let ended = m.fragment_now("p", "a", Some(attempt)).expect("found").now;
        assert!(
            matches!(&ended, FragmentNow::Failed { attempt: Some(a), reason } if *a == attempt && reason.contains('3')),
            "{ended:?}"
        );
    }
}
