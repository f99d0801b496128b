//! The simulated network: messages in flight with their latency, and the faults that strike
//! them (delay, loss, duplication); and what each message does where it arrives.

use super::workers::{Conn, Worker};
use super::{HEARTBEAT_MS, World};
use herzog::sim_api::{AttemptId, Input};
use rand::RngExt;

/// How long herzog's dispatcher waits for a worker to answer a call (dispatch.rs).
const CALL_TIMEOUT_MS: i64 = 30_000;

/// Who sent an input herzog answers, so the reply goes back to them.
#[derive(Clone, Debug)]
pub(super) enum From {
    /// A worker, on the connection of this epoch.
    Worker(usize, u64, Sent),
    Hz(String),
    /// hz asking to remove this project.
    HzRemove(String),
    /// hz setting the policy or sending a control; `Some` for one that undoes a pause or a
    /// drain once the faults stop.
    HzControl(Option<super::hz::Undo>),
    /// herzog's own dispatcher or connection layer: nobody waits.
    Local,
}

#[derive(Clone, Debug)]
pub(super) enum Sent {
    Register,
    Heartbeat,
    Complete(AttemptId),
    Other,
}

#[derive(Clone, Debug)]
pub(super) enum Msg {
    ToHerzog(From, Input),
    Start {
        to: usize,
        attempt: AttemptId,
        fragment: (String, String),
    },
    Stop(usize, AttemptId),
    Unqueue(usize, Vec<AttemptId>),
    /// herzog's answer to a worker, on the connection of this epoch.
    Reply(usize, u64, Sent, bool),
}

impl World {
    /// Puts `msg` on the network, where the faults the seed chose may delay, lose or
    /// duplicate it.
    pub(super) fn send(&mut self, msg: Msg) {
        let f = self.faults.clone();
        let on = self.faulty;
        if on && f.drop > 0.0 && self.rng.random_bool(f.drop) {
            self.note(format!("lost: {msg:?}"));
            self.lost(msg);
            return;
        }
        let copies = if on && f.duplicate > 0.0 && self.rng.random_bool(f.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut latency = self.rng.random_range(1..20);
            if on && f.delay > 0.0 && self.rng.random_bool(f.delay) {
                latency += self.rng.random_range(100..5_000);
            }
            self.seq += 1;
            self.network.insert((self.mono + latency, self.seq), msg.clone());
        }
    }

    /// What herzog's side sees of a lost message: a start whose call failed is a failed
    /// dispatch (sometimes the start did arrive and only the answer was lost).
    pub(super) fn lost(&mut self, msg: Msg) {
        if let Msg::Start { to, attempt, fragment } = msg {
            if self.rng.random_bool(0.3) {
                self.seq += 1;
                let at = self.mono + self.rng.random_range(1..20);
                self.network
                    .insert((at, self.seq), Msg::Start { to, attempt, fragment });
            }
            self.local.push((From::Local, Input::DispatchFailed { attempt }));
        }
    }

    pub(super) fn deliver(&mut self) {
        while let Some(entry) = self.network.first_entry() {
            if entry.key().0 > self.mono {
                break;
            }
            let msg = entry.remove();
            self.arrive(msg);
        }
    }

    pub(super) fn arrive(&mut self, msg: Msg) {
        let mono = self.mono;
        let cut = |w: &Worker| w.cut_until > mono || matches!(w.conn, Conn::Down(_));
        match msg {
            Msg::ToHerzog(from, input) => {
                if let From::Worker(w, _, _) = &from
                    && cut(&self.workers[*w])
                {
                    return;
                }
                self.local.push((from, input));
            }
            Msg::Start { to, attempt, fragment } => {
                if cut(&self.workers[to]) {
                    // The call hangs on the dead connection until its timeout.
                    self.seq += 1;
                    let failed = Msg::ToHerzog(From::Local, Input::DispatchFailed { attempt });
                    self.network.insert((self.mono + CALL_TIMEOUT_MS, self.seq), failed);
                    return;
                }
                let worker = &mut self.workers[to];
                if !worker.seen.insert(attempt) {
                    return;
                }
                worker.queued.push_back(attempt);
                let r = self.truth.handed(attempt, fragment);
                self.violated(r);
            }
            Msg::Stop(w, attempt) => {
                if cut(&self.workers[w]) {
                    return;
                }
                let worker = &mut self.workers[w];
                let was_queued = worker.queued.iter().any(|a| *a == attempt);
                worker.queued.retain(|a| *a != attempt);
                if let Some(p) = worker.running.remove(&attempt) {
                    let wall = (mono - p.began) as u64;
                    worker.unacked.insert(attempt, (false, wall, mono + self.wall_offset));
                    let r = self.truth.ran(attempt, false);
                    self.violated(r);
                    self.note(format!("w{w} stops {attempt}"));
                } else if was_queued {
                    worker.unacked.insert(attempt, (false, 0, mono + self.wall_offset));
                }
            }
            Msg::Unqueue(w, attempts) => {
                if cut(&self.workers[w]) {
                    return;
                }
                let worker = &mut self.workers[w];
                let taken: Vec<AttemptId> = attempts.into_iter().filter(|a| worker.queued.contains(a)).collect();
                worker.queued.retain(|a| !taken.contains(a));
                let (name, epoch) = (worker.name.clone(), worker.epoch);
                self.send(Msg::ToHerzog(
                    From::Worker(w, epoch, Sent::Other),
                    Input::TakenBack {
                        worker: name,
                        attempts: taken,
                    },
                ));
            }
            Msg::Reply(w, epoch, sent, ok) => {
                // A reply on a connection since closed is lost with it.
                if cut(&self.workers[w]) || epoch != self.workers[w].epoch {
                    return;
                }
                let worker = &mut self.workers[w];
                match sent {
                    Sent::Register if ok && matches!(worker.conn, Conn::Registering(_)) => {
                        worker.conn = Conn::Up;
                        worker.next_beat = mono + HEARTBEAT_MS;
                        worker.next_resend = mono;
                    }
                    // herzog no longer knows it (lost): kinski registers again.
                    Sent::Heartbeat if !ok && matches!(worker.conn, Conn::Up) => {
                        worker.conn = Conn::Registering(mono);
                    }
                    // Acknowledged, or refused for good: the journal lets go either way.
                    Sent::Complete(attempt) => {
                        worker.unacked.remove(&attempt);
                    }
                    _ => {}
                }
            }
        }
    }
}
