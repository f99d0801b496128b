//! The simulated hz: submits projects (again until acknowledged), and, with the faults the
//! seed turned on, removes projects, sets the policy and sends the controls (pause, limit,
//! share, cancel, drain), undoing pauses and drains once the faults stop.

use super::World;
use super::net::From;
use herzog::sim_api::{Control, Input};
use rand::RngExt;

/// What hz sends again, once the faults stop, until herzog has answered it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Undo {
    Resume(String),
    Undrain(String),
}

impl World {
    /// hz's turn: new projects, the operator's actions, and what waits to be acknowledged.
    pub(super) fn hz_acts(&mut self) {
        // New projects keep arriving while the faults strike, so there is work to break.
        if self.faulty && self.rng.random_bool(0.002) {
            self.projects_made += 1;
            let name = format!("p{}", self.projects_made);
            let fragments = self.rng.random_range(1..=60);
            self.to_submit.insert(name, fragments);
            self.next_submit = self.mono;
        }
        if self.herzog.is_none() {
            return;
        }
        let f = self.faults.clone();
        if self.faulty && f.remove > 0.0 && self.rng.random_bool(f.remove) {
            let names = self.truth.removable();
            if !names.is_empty() {
                let name = names[self.rng.random_range(0..names.len())].clone();
                self.truth.removing(&name);
                self.note(format!("hz removes {name}"));
                self.local
                    .push((From::HzRemove(name.clone()), Input::RemoveProject { name }));
            }
        }
        if self.faulty && f.policy > 0.0 && self.rng.random_bool(f.policy) {
            let names = self.truth.removable();
            let priority = match names.len() {
                0 => None,
                n => self
                    .rng
                    .random_bool(0.7)
                    .then(|| names[self.rng.random_range(0..n)].clone()),
            };
            self.note(format!("hz sets priority {priority:?}"));
            self.local.push((From::HzControl(None), Input::SetPolicy { priority }));
        }
        if self.faulty && f.control > 0.0 && self.rng.random_bool(f.control) {
            self.control();
        }
        if self.mono < self.next_submit {
            return;
        }
        self.next_submit = self.mono + 5_000;
        let pending: Vec<(String, usize)> = self.to_submit.iter().map(|(n, f)| (n.clone(), *f)).collect();
        for (name, fragments) in pending {
            self.truth.expect(&name, fragments);
            self.local.push((
                From::Hz(name.clone()),
                Input::AddProject {
                    name,
                    fragments,
                    max_attempts: 3,
                    retry_failed: true,
                },
            ));
        }
        if !self.faulty {
            for undo in self.undo.clone() {
                let control = match &undo {
                    Undo::Resume(project) => Control::Resume {
                        project: project.clone(),
                    },
                    Undo::Undrain(worker) => Control::Undrain { worker: worker.clone() },
                };
                self.local.push((From::HzControl(Some(undo)), Input::Control(control)));
            }
        }
    }

    /// One control, as an operator would send it while the project runs.
    fn control(&mut self) {
        let projects = self.truth.removable();
        let workers: Vec<String> = self.workers.iter().map(|w| w.name.clone()).collect();
        let project = match projects.len() {
            0 => None,
            n => Some(projects[self.rng.random_range(0..n)].clone()),
        };
        let worker = workers[self.rng.random_range(0..workers.len())].clone();
        let (control, undo) = match (self.rng.random_range(0..7), project) {
            (0, Some(project)) => (
                Control::Pause {
                    project: project.clone(),
                },
                Some(Undo::Resume(project)),
            ),
            (1, Some(project)) => (Control::Resume { project }, None),
            (2, Some(project)) => {
                let max_running = self.rng.random_bool(0.7).then(|| self.rng.random_range(1..=3));
                (Control::Limit { project, max_running }, None)
            }
            (3, Some(project)) => (
                Control::Share {
                    project,
                    share: self.rng.random_range(1..=4),
                },
                None,
            ),
            (4, Some(project)) => {
                let fragments = (0..self.rng.random_range(1..=3))
                    .map(|_| self.rng.random_range(0..60).to_string())
                    .collect();
                (Control::Cancel { project, fragments }, None)
            }
            (5, _) => (Control::Drain { worker: worker.clone() }, Some(Undo::Undrain(worker))),
            (_, _) => (Control::Undrain { worker }, None),
        };
        self.note(format!("hz sends {control:?}"));
        if let Some(undo) = undo {
            // Sent again once the faults stop, whether or not this one is heard.
            self.undo.insert(undo);
        }
        self.local.push((From::HzControl(None), Input::Control(control)));
    }

    /// herzog answered one of hz's requests.
    pub(super) fn hz_heard(&mut self, from: From, reply: Result<(), String>) {
        match from {
            From::Hz(name) => {
                // Added, or added already (its reply was lost in a crash).
                if reply.is_ok() || reply.as_ref().is_err_and(|e| e.contains("exists")) {
                    self.to_submit.remove(&name);
                    self.truth.submitted(name);
                } else if let Err(e) = reply {
                    self.note(format!("hz: project {name} refused: {e}"));
                }
            }
            From::HzRemove(name) => {
                if let Err(e) = reply {
                    self.note(format!("hz: removing {name} refused: {e}"));
                }
            }
            From::HzControl(undo) => {
                if let Err(e) = &reply {
                    self.note(format!("hz: refused: {e}"));
                }
                // Answered (a project since removed refuses it): nothing left to undo.
                if let Some(undo) = undo {
                    self.undo.remove(&undo);
                }
            }
            From::Worker(..) | From::Local => {}
        }
    }
}
