//! Projects as a whole: adding and removing one, retrying its failed fragments, and the
//! scheduling policy that may name one.

use super::*;

#[derive(Clone, Debug)]
pub(crate) struct Project {
    pub(crate) id: ProjectId,
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) spec: RunSpec,
    pub(crate) results_dir: PathBuf,
    pub(crate) created_at: Millis,
    /// Its fragments' names, in the order of `fragments`.
    pub(crate) names: std::sync::Arc<Names>,
    pub(crate) fragments: Vec<Fragment>,
    /// Indexes of pending fragments, in dispatch order.
    pub(crate) queue: VecDeque<u32>,
    pub(crate) counts: Counts,
    /// How long its attempts ran lately (a moving average of their wall time), once one has
    /// ended; not kept across restarts. Decides how deep workers' queues are filled.
    pub(crate) recent_wall_ms: Option<u64>,
    /// `hz pause`: nothing new starts.
    pub(crate) paused: bool,
    /// `hz limit`: the most attempts dispatched at once.
    pub(crate) max_running: Option<u32>,
    /// Projects that must succeed before this one starts; each is dropped from the list once
    /// it has, so removing it afterwards blocks nothing.
    pub(crate) after: Vec<String>,
    /// Its live attempts whose program has started (the others wait in workers' queues).
    pub(crate) started: u64,
    /// When its latest attempts ended, for the rate and ETA; not kept across restarts.
    pub(crate) recent: Recent,
    /// How many of its fragments failed, by reason.
    pub(crate) failures: BTreeMap<String, u64>,
    /// An `hz run` job's own part (its project has one fragment and is not listed).
    pub(crate) job: Option<Box<Job>>,
    /// Its weight in the fair share (`hz share`), at least 1.
    pub(crate) share: u32,
}

impl Project {
    /// How many of its pending fragments may start now: none while it is paused, waits for
    /// the projects it comes after, or is a job (placed on its own); at most what its
    /// `max_running` leaves.
    pub(crate) fn startable(&self) -> u64 {
        if self.queue.is_empty() || self.paused || !self.after.is_empty() || self.job.is_some() {
            return 0;
        }
        match self.max_running {
            Some(max) => (self.queue.len() as u64).min(u64::from(max).saturating_sub(self.counts.running)),
            None => self.queue.len() as u64,
        }
    }

    /// A project as added or restored, with nothing queued or counted yet.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ProjectId,
        name: String,
        dir: PathBuf,
        spec: RunSpec,
        results_dir: PathBuf,
        created_at: Millis,
        names: std::sync::Arc<Names>,
        fragments: Vec<Fragment>,
    ) -> Project {
        Project {
            id,
            name,
            dir,
            spec,
            results_dir,
            created_at,
            names,
            fragments,
            queue: VecDeque::new(),
            counts: Counts::default(),
            recent_wall_ms: None,
            paused: false,
            max_running: None,
            after: Vec::new(),
            started: 0,
            recent: Recent::default(),
            failures: BTreeMap::new(),
            job: None,
            share: 1,
        }
    }
}

impl Machine {
    pub(super) fn add_project(&mut self, now: Now, new: NewProjectEvent) -> Result<Reply, Rejected> {
        let NewProjectEvent {
            name,
            dir,
            spec,
            files,
            after,
            max_running,
            share,
        } = new;
        common::name::check_name(&name)?;
        if self.by_name.contains_key(&name) {
            return Err(ApiError::DuplicateProject { name }.into());
        }
        for before in &after {
            self.project_id(before)?;
        }
        if max_running == Some(0) {
            return Err(ApiError::InvalidValue {
                what: "--max-running".into(),
                reason: "must be at least 1 (`hz pause` holds a project)".into(),
            }
            .into());
        }
        if share == 0 {
            return Err(ApiError::InvalidValue {
                what: "--share".into(),
                reason: "must be at least 1 (`hz pause` holds a project)".into(),
            }
            .into());
        }
        self.check_project_alerts(&spec)?;
        self.check_fits(&spec)?;
        if files.is_empty() {
            return Err(ApiError::EmptyDirectory {
                dir: dir.display().to_string(),
            }
            .into());
        }
        let id = ProjectId(self.next_project);
        self.next_project += 1;
        let first = self.next_fragment;
        self.next_fragment += files.len() as i64;
        let results_dir = self.results_root.join(&name);
        let names = std::sync::Arc::new(files.into_iter().collect::<Names>());
        let fragments: Vec<Fragment> = (0..names.len())
            .map(|i| Fragment {
                id: FragmentId(first + i as i64),
                attempts: 0,
                failures: 0,
                state: FragmentState::Pending,
            })
            .collect();
        let total = fragments.len() as u64;
        self.writes.push(Write::AddProject {
            id,
            name: name.clone(),
            dir: dir.clone(),
            spec: Box::new(spec.clone()),
            results_dir: results_dir.clone(),
            created_at: now.wall,
            first_fragment: FragmentId(first),
            names: names.clone(),
            after: after.clone(),
            max_running,
        });
        let mut project = Project::new(
            id,
            name.clone(),
            dir,
            spec,
            results_dir.clone(),
            now.wall,
            names,
            fragments,
        );
        project.queue = (0..total as u32).collect();
        project.counts.pending = total;
        project.after = after;
        project.max_running = max_running;
        project.share = share;
        if share != 1 {
            self.writes.push(Write::ProjectShare { id, share });
        }
        self.fair.set_weight(id, share, now.mono.0);
        self.by_name.insert(name.clone(), id);
        self.projects.insert(id, project);
        tracing::info!(project = %name, fragments = total, "project added");
        Ok(Reply::Added(ProjectAdded {
            id,
            name,
            fragments: total,
            results_dir,
        }))
    }

    pub(super) fn remove_project(&mut self, now: Now, name: &str) -> Result<Reply, Rejected> {
        let id = self.project_id(name)?;
        let running: Vec<AttemptId> = self
            .live
            .iter()
            .filter(|(_, l)| l.project == id)
            .map(|(a, _)| *a)
            .collect();
        for attempt in running {
            if let Some(worker) = self.end_live(now, attempt, AttemptEnd::Stopped, None, Some("project removed".into()))
                && self
                    .workers
                    .get(&worker)
                    .is_some_and(|w| w.connection == ConnectionState::Connected)
            {
                // A stop for an unreachable worker is delivered by reconciliation when it returns.
                self.effects.push(Effect::Stop { worker, attempt });
            }
        }
        self.projects.remove(&id);
        self.fair.forget(id, now.mono.0);
        self.by_name.remove(name);
        if self.policy
            == (Policy::Priority {
                project: name.to_string(),
            })
        {
            self.policy = Policy::Fair;
            self.writes.push(Write::Policy(Policy::Fair));
        }
        self.writes.push(Write::RemoveProject { id, at: now.wall });
        tracing::info!(project = %name, "project removed");
        Ok(Reply::Done)
    }

    pub(super) fn retry(&mut self, name: &str) -> Result<Reply, Rejected> {
        let id = self.project_id(name)?;
        if self.projects[&id].job.is_some() {
            // A job runs once, for the caller that waits for it: nobody would read a rerun.
            return Err(ApiError::Job {
                name: name.to_string(),
                reason: "a job is not run again: `hz run` it anew".into(),
            }
            .into());
        }
        let failed: Vec<u32> = self.projects[&id]
            .fragments
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f.state, FragmentState::Failed { .. }))
            .map(|(i, _)| i as u32)
            .collect();
        for &i in &failed {
            let p = self.projects.get_mut(&id).expect("checked above");
            p.fragments[i as usize].attempts = 0;
            p.fragments[i as usize].failures = 0;
            self.set_state(id, i, FragmentState::Pending);
        }
        Ok(Reply::Retried(failed.len() as u64))
    }

    pub(super) fn set_policy(&mut self, policy: Policy) -> Result<Reply, Rejected> {
        if let Policy::Priority { project } = &policy {
            self.project_id(project)?;
        }
        tracing::info!(%policy, "policy changed");
        self.policy = policy.clone();
        self.writes.push(Write::Policy(policy.clone()));
        Ok(Reply::Policy(policy))
    }
}
