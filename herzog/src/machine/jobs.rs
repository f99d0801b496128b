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
                return Err(ApiError::NoSuchWorker { name: host }.into());
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
        // Where a project's would be (its name is one path component): `hz logs` and
        // `hz remove --purge` find it as they find a project's.
        let results_dir = self.results_root.join(&name);
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
            spec: Box::new(spec.clone()),
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
        let services = self.services.requested();
        for id in waiting {
            let job = self.projects[&id].job.as_deref().expect("filtered above");
            let size = Size::of(&self.projects[&id].spec.requests);
            let fits = |w: &Worker| {
                let room = super::packing::room(w.offer(), services.get(w.name.as_str()));
                w.held.fits(w.resources.slots, room, size)
            };
            let room = |w: &Worker| {
                let Resources { slots, queue, .. } = w.resources;
                i64::from(slots) + i64::from(queue) - w.running.len() as i64 - i64::from(w.foreign)
            };
            let best = self
                .workers
                .values()
                .filter(|w| w.takes_starts(now) && (job.hosts.is_empty() || job.hosts.contains(&w.name)))
                .filter(|w| room(w) > 0 && fits(w))
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

/// Whether a job must not run again after its attempt ended so. A lost one may have run
/// even if herzog never heard it start; one taken back by a clean shutdown did not, unless
/// it was heard.
pub(super) fn ends_job(job: &Job, end: AttemptEnd, ran: bool) -> bool {
    !job.requeue && (end == AttemptEnd::Lost || (end == AttemptEnd::TakenBack && ran))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        let timing = Timing {
            worker_timeout_ms: 10_000,
            start_grace_ms: 2_000,
            probe_retry_ms: 10_000,
        };
        let mut m = Machine::new(timing, PathBuf::from("/results"));
        for (worker, slots) in [("w1", 1), ("w2", 1)] {
            let register = Event::Register {
                worker: worker.into(),
                resources: Resources {
                    slots,
                    cpus: slots,
                    queue: 1,
                    ..Resources::default()
                },
                running: Vec::new(),
                staged: false,
            };
            m.handle(Now::at(0), register).expect("registered");
        }
        m
    }

    fn request(argv: &[&str]) -> JobRequest {
        JobRequest {
            command: JobCommand::Argv(argv.iter().map(|a| a.to_string()).collect()),
            host: None,
            env: BTreeMap::new(),
            cwd: None,
            from: PathBuf::from("/home/u"),
            interactive: Interactive::default(),
            requeue: false,
        }
    }

    fn add_job(m: &mut Machine, now: i64, request: JobRequest) -> String {
        match m.handle(Now::at(now), Event::AddJob(Box::new(request))) {
            Ok(Reply::Job(started)) => started.name,
            other => panic!("not added: {other:?}"),
        }
    }

    /// The starts queued for the loop since the last call: (worker, attempt, argv).
    fn starts(m: &mut Machine) -> Vec<(String, AttemptId, Vec<String>, bool)> {
        let (_, effects) = m.take();
        effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::Start { worker, start, .. } => {
                    Some((worker, start.attempt, start.argv.clone(), start.interactive.is_some()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_job_takes_the_next_free_slot_ahead_of_a_projects_pending_fragments() {
        let mut m = machine();
        let add = Event::AddProject(Box::new(NewProjectEvent {
            name: "batch".into(),
            dir: PathBuf::from("/data"),
            spec: RunSpec::new("wc -l"),
            files: (0..10).map(|i| format!("f{i}")).collect(),
            after: Vec::new(),
            max_running: None,
            share: 1,
        }));
        m.handle(Now::at(1), add).expect("added");
        m.schedule(Now::at(1));
        // Slots and queues are full of batch starts.
        assert_eq!(starts(&mut m).len(), 4);
        let name = add_job(&mut m, 2, request(&["echo", "hi"]));
        assert_eq!(name, "run:2");
        m.schedule(Now::at(2));
        assert!(starts(&mut m).is_empty(), "no room anywhere yet");
        assert_eq!(m.job_state(&name), Ok(JobState::Waiting));
        // A batch attempt ends on w2: the job gets the room, not the next fragment.
        let first_on_w2 = m.workers["w2"].running.iter().next().copied().expect("w2 runs one");
        let done = super::super::tests::complete_event("w2", first_on_w2.0, Exit::Code(0), 3);
        m.handle(Now::at(3), done).expect("completed");
        m.schedule(Now::at(3));
        let s = starts(&mut m);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(
            (s[0].0.as_str(), s[0].2.clone(), s[0].3),
            ("w2", vec!["echo".to_string(), "hi".to_string()], true)
        );
        assert!(matches!(
            m.job_state(&name),
            Ok(JobState::Running { started: false, .. })
        ));
        // Not listed with the projects; shown among the active attempts.
        let listed = m.progress(None).expect("progress");
        assert!(listed.iter().all(|p| p.name == "batch"), "{listed:?}");
        assert!(m.active(0, 100).items.iter().any(|a| a.project == name));
        // Its exit is kept, with where it ran.
        let end = super::super::tests::complete_event("w2", s[0].1.0, Exit::Code(3), 4);
        m.handle(Now::at(4), end).expect("completed");
        assert_eq!(
            m.job_state(&name),
            Ok(JobState::Exited {
                worker: "w2".into(),
                exit: Exit::Code(3)
            })
        );
        let (writes, _) = m.take();
        assert!(
            writes
                .iter()
                .any(|w| matches!(w, Write::Job { job, .. } if job.exit.is_some()))
        );
    }

    #[test]
    fn a_job_on_a_lost_worker_ends_unless_it_asked_to_be_run_again() {
        // Whether or not herzog heard its start before the loss: the program may have run.
        for (requeue, heard) in [(false, true), (false, false), (true, true), (true, false)] {
            let mut m = machine();
            let mut r = request(&["sleep", "100"]);
            r.host = Some("w1".into());
            r.requeue = requeue;
            let name = add_job(&mut m, 1, r);
            m.schedule(Now::at(1));
            let s = starts(&mut m);
            assert_eq!(s[0].0, "w1", "pinned to w1");
            let notice = Event::Started {
                worker: "w1".into(),
                notices: vec![common::wire::StartNotice { attempt: s[0].1, at: 2 }],
            };
            if heard {
                m.handle(Now::at(2), notice).expect("started");
            }
            // w2 stays alive; w1 falls silent past the timeout.
            let beat = Event::Heartbeat {
                worker: "w2".into(),
                running: Vec::new(),
            };
            m.handle(Now::at(9_000), beat).expect("heartbeat");
            m.handle(Now::at(12_000), Event::Tick).expect("tick");
            m.schedule(Now::at(12_000));
            let again = starts(&mut m);
            if requeue {
                assert!(
                    matches!(m.job_state(&name), Ok(JobState::Waiting)),
                    "{:?}",
                    m.job_state(&name)
                );
                assert!(again.is_empty(), "pinned to the lost w1: {again:?}");
            } else {
                let Ok(JobState::Ended { reason }) = m.job_state(&name) else {
                    panic!("{:?}", m.job_state(&name))
                };
                assert!(reason.contains("was lost"), "heard {heard}: {reason}");
                assert!(again.is_empty(), "{again:?}");
                // Nor by `hz retry`.
                let retry = m.handle(Now::at(12_001), Event::Retry { name: name.clone() });
                assert!(matches!(retry, Err(Rejected::Api(ApiError::Job { .. }))), "{retry:?}");
            }
        }
    }

    #[test]
    fn named_commands_resolve_with_their_hosts_env_and_directory() {
        let mut m = machine();
        let file = common::services::ServicesFile::parse(
            "[commands.backup]\ncommand = \"rsync -a\"\naliases = [\"bk\"]\nhosts = [\"w2\"]\ncwd = \"/srv\"\nenv = { A = \"1\" }\n",
            std::path::Path::new("services.toml"),
        )
        .expect("parses");
        m.handle(Now::at(1), Event::ServicesReload { file }).expect("reloaded");
        let mut r = request(&[]);
        r.command = JobCommand::Named {
            name: "bk".into(),
            args: vec!["x".into()],
        };
        r.env.insert("B".into(), "2".into());
        let name = add_job(&mut m, 2, r.clone());
        m.schedule(Now::at(2));
        let s = starts(&mut m);
        assert_eq!(
            (s[0].0.as_str(), s[0].2.clone()),
            ("w2", vec!["rsync".to_string(), "-a".to_string(), "x".to_string()])
        );
        let p = m.job(&name).expect("a job");
        assert_eq!(p.spec.cwd.as_deref(), Some(std::path::Path::new("/srv")));
        assert_eq!(p.spec.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(p.spec.env.get("B").map(String::as_str), Some("2"));
        assert_eq!(m.commands()[0].aliases, vec!["bk".to_string()]);
        // Another host than the command's is refused; so is an unknown command.
        r.host = Some("w1".into());
        assert!(m.handle(Now::at(3), Event::AddJob(Box::new(r.clone()))).is_err());
        r.host = None;
        r.command = JobCommand::Named {
            name: "nope".into(),
            args: Vec::new(),
        };
        assert!(m.handle(Now::at(3), Event::AddJob(Box::new(r))).is_err());
    }
}
