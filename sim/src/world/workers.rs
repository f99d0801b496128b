//! The simulated workers, as kinski behaves: slots and a queue, heartbeats of every attempt
//! held, completions kept until herzog acknowledges them and sent again.

use super::net::{From, Msg, Sent};
use super::{HEARTBEAT_MS, RESEND_MS, World};
use herzog::sim_api::{AttemptId, Input};
use rand::RngExt;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A program running on a simulated worker.
#[derive(Clone, Debug)]
pub(super) struct Program {
    pub(super) ends_at: i64,
    pub(super) began: i64,
    pub(super) succeeds: bool,
}

#[derive(Clone, Debug)]
pub(super) enum Conn {
    /// Crashed or cut off, until then.
    Down(i64),
    /// Registering: asks again at this time if no answer came.
    Registering(i64),
    Up,
}

#[derive(Clone, Debug)]
pub(super) struct Worker {
    pub(super) name: String,
    pub(super) slots: u32,
    pub(super) queue: u32,
    pub(super) running: BTreeMap<AttemptId, Program>,
    pub(super) queued: VecDeque<AttemptId>,
    /// Finished, not yet acknowledged by herzog: success, wall time, when.
    pub(super) unacked: BTreeMap<AttemptId, (bool, u64, i64)>,
    /// Every attempt it was ever handed: a duplicate start is ignored, as kinski does.
    pub(super) seen: BTreeSet<AttemptId>,
    pub(super) conn: Conn,
    /// Cut off from herzog (messages either way are lost) until then.
    pub(super) cut_until: i64,
    pub(super) next_beat: i64,
    pub(super) next_resend: i64,
    /// Whether herzog's dispatcher holds its current connection.
    pub(super) herzog_has_conn: bool,
    /// Its connection's number: a new one after every reset, so that a reply sent on a
    /// closed connection is not taken for one on the new.
    pub(super) epoch: u64,
}

impl Worker {
    pub(super) fn held(&self) -> Vec<AttemptId> {
        let mut all: Vec<AttemptId> = self.unacked.keys().copied().collect();
        all.extend(self.running.keys().copied());
        all.extend(self.queued.iter().copied());
        all.sort();
        all.dedup();
        all
    }
}

impl World {
    /// Each worker: registers, starts what its slots allow, finishes programs, beats, and
    /// sends again what herzog has not acknowledged.
    pub(super) fn workers_act(&mut self) {
        let (mono, wall) = (self.mono, self.mono + self.wall_offset);
        for w in 0..self.workers.len() {
            if let Conn::Down(until) = self.workers[w].conn
                && mono >= until
            {
                self.workers[w].conn = Conn::Registering(mono);
            }
            if !self.faulty {
                // Quiet: every cut heals.
                self.workers[w].cut_until = self.workers[w].cut_until.min(mono);
                if let Conn::Down(_) = self.workers[w].conn {
                    self.workers[w].conn = Conn::Registering(mono);
                }
            }
            // Programs end whether or not herzog can hear of it.
            let ended: Vec<AttemptId> = self.workers[w]
                .running
                .iter()
                .filter(|(_, p)| p.ends_at <= mono)
                .map(|(a, _)| *a)
                .collect();
            for attempt in ended {
                let p = self.workers[w].running.remove(&attempt).expect("listed");
                let r = self.truth.ran(attempt, p.succeeds);
                self.violated(r);
                let wall_ms = (p.ends_at - p.began) as u64;
                self.workers[w].unacked.insert(attempt, (p.succeeds, wall_ms, wall));
                self.send_complete(w, attempt);
            }
            let mut started = Vec::new();
            while (self.workers[w].running.len() as u32) < self.workers[w].slots {
                let Some(attempt) = self.workers[w].queued.pop_front() else {
                    break;
                };
                let succeeds = !self.rng.random_bool(self.fail_rate);
                let ends_at = mono + self.rng.random_range(10..3_000);
                self.workers[w].running.insert(
                    attempt,
                    Program {
                        ends_at,
                        began: mono,
                        succeeds,
                    },
                );
                started.push(attempt);
            }
            let name = self.workers[w].name.clone();
            let cut = self.workers[w].cut_until > mono;
            match self.workers[w].conn {
                Conn::Down(_) => {}
                Conn::Registering(at) if at <= mono => {
                    self.workers[w].conn = Conn::Registering(mono + HEARTBEAT_MS);
                    let input = Input::Register {
                        worker: name.clone(),
                        slots: self.workers[w].slots,
                        queue: self.workers[w].queue,
                        running: self.workers[w].held(),
                    };
                    if !cut {
                        self.send(Msg::ToHerzog(
                            From::Worker(w, self.workers[w].epoch, Sent::Register),
                            input,
                        ));
                    }
                }
                Conn::Registering(_) => {}
                Conn::Up => {
                    if !started.is_empty() {
                        let input = Input::Started {
                            worker: name.clone(),
                            attempts: started,
                            at: wall,
                        };
                        self.send(Msg::ToHerzog(
                            From::Worker(w, self.workers[w].epoch, Sent::Other),
                            input,
                        ));
                    }
                    if mono >= self.workers[w].next_beat {
                        self.workers[w].next_beat = mono + HEARTBEAT_MS;
                        let input = Input::Heartbeat {
                            worker: name.clone(),
                            running: self.workers[w].held(),
                        };
                        self.send(Msg::ToHerzog(
                            From::Worker(w, self.workers[w].epoch, Sent::Heartbeat),
                            input,
                        ));
                    }
                    if mono >= self.workers[w].next_resend {
                        self.workers[w].next_resend = mono + RESEND_MS;
                        let unacked: Vec<AttemptId> = self.workers[w].unacked.keys().copied().collect();
                        for attempt in unacked {
                            self.send_complete(w, attempt);
                        }
                    }
                }
            }
        }
    }

    pub(super) fn send_complete(&mut self, w: usize, attempt: AttemptId) {
        let worker = &self.workers[w];
        if !matches!(worker.conn, Conn::Up) {
            return;
        }
        let (success, wall_ms, finished_at) = worker.unacked[&attempt];
        let input = Input::Complete {
            worker: worker.name.clone(),
            attempt,
            success,
            wall_ms,
            finished_at,
        };
        self.send(Msg::ToHerzog(
            From::Worker(w, worker.epoch, Sent::Complete(attempt)),
            input,
        ));
    }
}
