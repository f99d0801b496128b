//! `hz run` jobs: a command run once, as a project of one fragment (so it is fenced, recorded,
//! restored and followed like any attempt), hidden from `hz list`, named `run:N`, placed on the
//! next free slot ahead of the batch projects and outside their policy, and never run again
//! after it ran unless it asked to be (`--requeue`).

use super::*;
use common::job::{CommandInfo, Interactive, JOB_PREFIX, JobCommand, JobRequest, JobStarted, JobState};

/// What a job's project holds beyond a project's.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Job {
    pub(crate) argv: Vec<String>,
    /// The workers it may run on; empty: any.
    pub(crate) hosts: Vec<String>,
    pub(crate) interactive: Interactive,
    pub(crate) requeue: bool,
    /// How its program ended, once it has, and where it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exit: Option<(String, Exit)>,
}

/// The most attempts a `--requeue` job gets (each lost with its worker).
const REQUEUE_ATTEMPTS: u32 = 3;

impl Machine {
    /// Records a job and queues its one fragment; the scheduler places it ahead of the
    /// projects.
    pub(super) fn add_job(&mut self, now: Now, request: JobRequest) -> Result<Reply, Rejected> {
        common::job::check(&request)?;
        let JobRequest {
            command,
            host,
            mut env,
            cwd,
            from,
            interactive,
            requeue,
        } = request;
        let (argv, mut hosts, cwd) = match command {
            JobCommand::Argv(argv) => (argv, Vec::new(), cwd.unwrap_or(from)),
            JobCommand::Named { name, args } => {
                let file = self.services.file();
                let (_, spec) = common::services::commands::find(&file.commands, &name).ok_or_else(|| {
                    ApiError::InvalidValue {
                        what: "command".into(),
                        reason: format!(
                            "no command named '{name}' in the services file: `hz commands` lists them; to run a program, give it after `--`"
                        ),
                    }
                })?;
                let mut merged = spec.env.clone();
                merged.append(&mut env);
                env = merged;
                (
                    spec.argv(&args),
                    spec.hosts.clone().unwrap_or_default(),
                    cwd.or_else(|| spec.cwd.clone()).unwrap_or(from),
                )
            }
        };
        if let Some(host) = host {
            if !hosts.is_empty() && !hosts.contains(&host) {
                return Err(ApiError::InvalidValue {
                    what: "--host".into(),
                    reason: format!("the command runs only on {}", hosts.join(", ")),
                }
                .into());
            }
            if !self.workers.contains_key(&host) {
                return Err(ApiError::UnknownHost { name: host }.into());
            }
            hosts = vec![host];
        }
        let id = ProjectId(self.next_project);
        self.next_project += 1;
        let fragment = FragmentId(self.next_fragment);
        self.next_fragment += 1;
        let name = format!("{JOB_PREFIX}{}", id.0);
        let program = argv
            .iter()
            .map(|a| common::template::shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        let mut spec = RunSpec::new(program);
        spec.env = env;
        spec.cwd = Some(cwd.clone());
        spec.max_attempts = if requeue { REQUEUE_ATTEMPTS } else { 1 };
        let results_dir = self.results_root.join(".runs").join(id.0.to_string());
        let base = std::path::Path::new(&argv[0])
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "run".to_string());
        let names = std::sync::Arc::new(std::iter::once(base).collect::<Names>());
        let job = Job {
            argv: argv.clone(),
            hosts,
            interactive,
            requeue,
            exit: None,
        };
        self.writes.push(Write::AddProject {
            id,
            name: name.clone(),
            dir: cwd.clone(),
            spec: spec.clone(),
            results_dir: results_dir.clone(),
            created_at: now.wall,
            first_fragment: fragment,
            names: names.clone(),
            after: Vec::new(),
            max_running: None,
        });
        self.writes.push(Write::Job {
            id,
            job: Box::new(job.clone()),
        });
        let mut project = Project::new(
            id,
            name.clone(),
            cwd,
            spec,
            results_dir,
            now.wall,
            names,
            vec![Fragment {
                id: fragment,
                attempts: 0,
                failures: 0,
                state: FragmentState::Pending,
            }],
        );
        project.queue.push_back(0);
        project.counts.pending = 1;
        project.job = Some(Box::new(job));
        self.by_name.insert(name.clone(), id);
        self.projects.insert(id, project);
        tracing::info!(job = %name, ?argv, "job added");
        Ok(Reply::Job(JobStarted { name, argv }))
    }

    /// Places waiting jobs, oldest first, each on the worker it may run on with the most room
    /// (a free slot before a place in a queue), ahead of any project: a job's start also goes
    /// to the front of its worker's queue.
    pub(super) fn schedule_jobs(&mut self, now: Now) {
        let waiting: Vec<ProjectId> = self
            .projects
            .values()
            .filter(|p| p.job.is_some() && !p.queue.is_empty() && !p.paused)
            .map(|p| p.id)
            .collect();
        for id in waiting {
            let job = self.projects[&id].job.as_deref().expect("filtered above");
            let room = |w: &Worker| {
                let Resources { slots, queue, .. } = w.resources;
                i64::from(slots) + i64::from(queue) - w.running.len() as i64 - i64::from(w.foreign)
            };
            let best = self
                .workers
                .values()
                .filter(|w| w.takes_starts(now) && (job.hosts.is_empty() || job.hosts.contains(&w.name)))
                .filter(|w| room(w) > 0)
                .max_by_key(|w| (room(w), std::cmp::Reverse(w.name.clone())))
                .map(|w| w.name.clone());
            if let Some(worker) = best {
                self.dispatch(now, worker, id);
            }
        }
    }

    /// Where job `name` is.
    pub(crate) fn job_state(&self, name: &str) -> Result<JobState, ApiError> {
        let p = self.job(name)?;
        let job = p.job.as_deref().expect("a job");
        Ok(match &p.fragments[0].state {
            FragmentState::Pending => JobState::Waiting,
            FragmentState::Running { attempt, worker, .. } => JobState::Running {
                attempt: *attempt,
                worker: worker.clone(),
                started: self.live.get(attempt).is_some_and(|l| l.ran.is_some()),
            },
            FragmentState::Succeeded { .. } | FragmentState::Failed { .. } => match &job.exit {
                Some((worker, exit)) => JobState::Exited {
                    worker: worker.clone(),
                    exit: exit.clone(),
                },
                None => JobState::Ended {
                    reason: match &p.fragments[0].state {
                        FragmentState::Failed { reason, .. } => reason.clone(),
                        _ => "ended".to_string(),
                    },
                },
            },
        })
    }

    /// Job `name`'s dispatched attempt and its worker, with whether its program started.
    pub(crate) fn job_attempt(&self, name: &str) -> Result<(AttemptId, String, bool), ApiError> {
        match self.job_state(name)? {
            JobState::Running {
                attempt,
                worker,
                started,
            } => Ok((attempt, worker, started)),
            JobState::Waiting => Err(ApiError::Job {
                name: name.to_string(),
                reason: "it waits for a free slot: it has no process yet".into(),
            }),
            JobState::Exited { .. } | JobState::Ended { .. } => Err(ApiError::Job {
                name: name.to_string(),
                reason: "it has ended".into(),
            }),
        }
    }

    fn job(&self, name: &str) -> Result<&Project, ApiError> {
        self.by_name
            .get(name)
            .and_then(|id| self.projects.get(id))
            .filter(|p| p.job.is_some())
            .ok_or_else(|| ApiError::UnknownJob { name: name.to_string() })
    }

    /// Keeps how a job's program ended, for `job_state`.
    pub(super) fn job_exited(&mut self, project: ProjectId, worker: &str, exit: &Exit) {
        if let Some(job) = self.projects.get_mut(&project).and_then(|p| p.job.as_deref_mut()) {
            job.exit = Some((worker.to_string(), exit.clone()));
            let id = project;
            self.writes.push(Write::Job {
                id,
                job: Box::new(job.clone()),
            });
        }
    }

    /// The named commands of the services file in force.
    pub(crate) fn commands(&self) -> Vec<CommandInfo> {
        self.services
            .file()
            .commands
            .iter()
            .map(|(name, c)| CommandInfo {
                name: name.clone(),
                command: c.command.clone(),
                aliases: c.aliases.clone(),
                hosts: c.hosts.clone(),
                description: c.description.clone(),
            })
            .collect()
    }
}

/// Whether a job that ran must not run again after its attempt ended so.
pub(super) fn ends_job(job: &Job, end: AttemptEnd, ran: bool) -> bool {
    !job.requeue && ran && matches!(end, AttemptEnd::TakenBack | AttemptEnd::Lost)
}
