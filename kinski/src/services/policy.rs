//! One service instance's life on its host, pure: what to do when it is asked to start or
//! stop, when its process exits, and when a deadline passes. No IO and no clock: time is a
//! value (`now`, monotonic, from kinski's start), the process is spawned and signalled by
//! the caller as the returned [`Action`]s say, and its pid and exit come back as [`Input`]s.
//!
//! supervisord's rules: an exit before `startsecs` is a failed start, retried after a delay
//! that doubles from 1 s up to 60 s, and after `startretries` of them in a row the instance is
//! `Fatal` until it is started again by hand; an exit after `startsecs` is a crash, restarted
//! at once when `autorestart` says so (no tick to wait for: supervisord takes a second).
//!
//! A change of a file it watches (`restart_on_change`, already debounced by
//! [`watch`](super::watch)) restarts a live instance (stop with its stop signal and grace,
//! then spawn) or, with `change_signal`, sends it that signal; one backing off after failed
//! starts is started at once (the change may be the fix). Stopped, exited, `Fatal` or
//! stopping instances ignore it, and so does one whose spawn is on its way (it reads the
//! changed file as it starts).

use common::instances::WatchSpec;
use common::services::{AutoRestart, Retries, StopSignal};
use common::wire::Exit;
use std::path::PathBuf;
use std::time::Duration;

/// The longest wait between two failed starts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A crash this soon after the start counts as a failed start, whatever `startsecs` says: with
/// `startsecs = 0` a program that exits at once would otherwise be restarted at once, forever.
const MIN_UP: Duration = Duration::from_secs(1);

/// How an instance is watched: the part of its service that decides restarts and stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Watch {
    pub(crate) autorestart: AutoRestart,
    pub(crate) exitcodes: Vec<i32>,
    pub(crate) startsecs: Duration,
    pub(crate) startretries: Retries,
    /// The signal's number.
    pub(crate) stopsignal: i32,
    pub(crate) stopwait: Duration,
    /// Sent on a change of a watched file instead of a restart.
    pub(crate) change_signal: Option<StopSignal>,
}

impl From<&WatchSpec> for Watch {
    fn from(s: &WatchSpec) -> Watch {
        Watch {
            autorestart: s.autorestart,
            exitcodes: s.exitcodes.clone(),
            startsecs: Duration::from_millis(s.startsecs_ms),
            startretries: s.startretries,
            stopsignal: s.stopsignal,
            stopwait: Duration::from_millis(s.stopwait_ms),
            change_signal: s.change_signal,
        }
    }
}

/// Where an instance is. `pid: None` while its spawn is on its way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Not running, and not meant to (never started, or stopped).
    Stopped,
    /// Spawned, not yet up for `startsecs`; `retries` failed starts came before.
    Starting {
        pid: Option<i32>,
        since: Duration,
        retries: u32,
    },
    /// Up for `startsecs` or longer.
    Running { pid: i32, since: Duration },
    /// Waiting to start again after `retries` failed starts in a row.
    Backoff { retries: u32, until: Duration, exit: Exit },
    /// Sent its stop signal at `since`; SIGKILL at `since + stopwait`. With `restart`, spawned
    /// again once it has exited (a watched file changed).
    Stopping {
        pid: Option<i32>,
        since: Duration,
        killed: bool,
        restart: bool,
    },
    /// Ended and not restarted (autorestart said no).
    Exited { exit: Exit, expected: bool },
    /// Too many failed starts in a row: down until started by hand.
    Fatal { exit: Exit, retries: u32 },
}

/// What happened to the instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    /// Be up.
    Start,
    /// Be down. (herzog restarts an instance by placing it anew.)
    Stop,
    /// The spawn asked for gave this pid.
    Spawned { pid: i32 },
    /// Its process ended (or could not be spawned: `Exit::StartFailed`).
    Exited { exit: Exit },
    /// Time passed: deadlines are checked.
    Tick,
    /// Watched files changed: the first few, and how many others.
    Changed { files: Vec<PathBuf>, more: u32 },
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Spawn the program (then report [`Input::Spawned`] or [`Input::Exited`]).
    Spawn,
    /// Send this signal to the instance's process group.
    Signal { pid: i32, signal: i32 },
    /// Call back with [`Input::Tick`] at this time.
    WakeAt(Duration),
    /// Tell herzog's event log.
    Note(Note),
}

/// What the event log hears of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Note {
    Started {
        pid: i32,
    },
    /// Up for `startsecs`.
    Running {
        pid: i32,
    },
    Exited {
        exit: Exit,
        expected: bool,
    },
    /// A failed start; the next try in `delay`.
    Backoff {
        retries: u32,
        delay: Duration,
    },
    Fatal {
        retries: u32,
    },
    Stopped,
    /// Watched files changed: restarted, or sent `signal`.
    FileChanged {
        files: Vec<PathBuf>,
        more: u32,
        signal: Option<StopSignal>,
    },
}

/// One instance: how it is watched and where it is.
#[derive(Clone, Debug)]
pub(crate) struct Instance {
    pub(crate) watch: Watch,
    pub(crate) state: State,
    /// Restarts after a crash over its life, for `hz status`.
    pub(crate) restarts: u32,
    /// Crashes in a row within [`MIN_UP`] of their start, for an instance that counts as up at
    /// once (`startsecs` below it).
    quick: u32,
}

impl Instance {
    pub(crate) fn new(watch: Watch) -> Instance {
        Instance {
            watch,
            state: State::Stopped,
            restarts: 0,
            quick: 0,
        }
    }

    /// Applies one input at `now`; returns what to do, in order.
    pub(crate) fn handle(&mut self, now: Duration, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.state.clone(), input) {
            // Be up.
            (State::Stopped | State::Exited { .. } | State::Fatal { .. }, Input::Start) => {
                self.quick = 0;
                self.spawn(now, 0, &mut out);
            }
            (State::Backoff { retries, .. }, Input::Start) => self.spawn(now, retries, &mut out),
            // Up, or on its way up or down: as it is.
            (State::Starting { .. } | State::Running { .. } | State::Stopping { .. }, Input::Start) => {}
            // Be down.
            (State::Starting { pid, .. }, Input::Stop) => self.stop(now, pid, false, &mut out),
            (State::Running { pid, .. }, Input::Stop) => self.stop(now, Some(pid), false, &mut out),
            (State::Backoff { .. }, Input::Stop) => {
                self.state = State::Stopped;
                out.push(Action::Note(Note::Stopped));
            }
            (
                State::Stopping {
                    pid,
                    since,
                    killed,
                    restart: true,
                },
                Input::Stop,
            ) => {
                // Restarting for a changed file, and now asked to stop: it stays down.
                self.state = State::Stopping {
                    pid,
                    since,
                    killed,
                    restart: false,
                };
            }
            (State::Stopping { .. }, Input::Stop) => {}
            (State::Stopped | State::Exited { .. } | State::Fatal { .. }, Input::Stop) => {
                self.state = State::Stopped;
            }
            // The spawn's pid.
            (
                State::Starting {
                    pid: None,
                    since,
                    retries,
                },
                Input::Spawned { pid },
            ) => {
                self.state = State::Starting {
                    pid: Some(pid),
                    since,
                    retries,
                };
                out.push(Action::Note(Note::Started { pid }));
                if self.watch.startsecs.is_zero() {
                    self.state = State::Running { pid, since };
                    out.push(Action::Note(Note::Running { pid }));
                } else {
                    out.push(Action::WakeAt(since + self.watch.startsecs));
                }
            }
            (
                State::Stopping {
                    pid: None,
                    since,
                    restart,
                    ..
                },
                Input::Spawned { pid },
            ) => {
                // Asked to stop while it was being spawned: stop it now that it exists.
                out.push(Action::Signal {
                    pid,
                    signal: self.watch.stopsignal,
                });
                self.state = State::Stopping {
                    pid: Some(pid),
                    since,
                    killed: false,
                    restart,
                };
                out.push(Action::WakeAt(since + self.watch.stopwait));
            }
            (_, Input::Spawned { .. }) => {}
            // Its end.
            (State::Starting { retries, .. }, Input::Exited { exit }) => {
                self.failed_start(now, retries + 1, exit, &mut out)
            }
            (State::Running { since, .. }, Input::Exited { exit }) => {
                let expected = matches!(exit, Exit::Code(c) if self.watch.exitcodes.contains(&c));
                out.push(Action::Note(Note::Exited {
                    exit: exit.clone(),
                    expected,
                }));
                let again = match self.watch.autorestart {
                    AutoRestart::Always => true,
                    AutoRestart::Unexpected => !expected,
                    AutoRestart::Never => false,
                };
                if again && now.saturating_sub(since) < MIN_UP {
                    self.quick += 1;
                    self.failed_start(now, self.quick, exit, &mut out);
                } else if again {
                    self.quick = 0;
                    self.restarts += 1;
                    self.spawn(now, 0, &mut out);
                } else {
                    self.state = State::Exited { exit, expected };
                }
            }
            (State::Stopping { restart: true, .. }, Input::Exited { .. }) => {
                // Stopped to take a changed file: up again at once, afresh.
                self.quick = 0;
                self.spawn(now, 0, &mut out);
            }
            (State::Stopping { .. }, Input::Exited { .. }) => {
                self.state = State::Stopped;
                out.push(Action::Note(Note::Stopped));
            }
            (_, Input::Exited { .. }) => {}
            // Deadlines.
            (
                State::Starting {
                    pid: Some(pid), since, ..
                },
                Input::Tick,
            ) => {
                if now >= since + self.watch.startsecs {
                    self.state = State::Running { pid, since };
                    out.push(Action::Note(Note::Running { pid }));
                } else {
                    out.push(Action::WakeAt(since + self.watch.startsecs));
                }
            }
            (State::Backoff { retries, until, .. }, Input::Tick) => {
                if now >= until {
                    self.spawn(now, retries, &mut out);
                } else {
                    out.push(Action::WakeAt(until));
                }
            }
            (
                State::Stopping {
                    pid: Some(pid),
                    since,
                    killed: false,
                    restart,
                },
                Input::Tick,
            ) => {
                if now >= since + self.watch.stopwait {
                    out.push(Action::Signal {
                        pid,
                        signal: libc::SIGKILL,
                    });
                    self.state = State::Stopping {
                        pid: Some(pid),
                        since,
                        killed: true,
                        restart,
                    };
                } else {
                    out.push(Action::WakeAt(since + self.watch.stopwait));
                }
            }
            (_, Input::Tick) => {}
            // A watched file changed.
            (State::Starting { pid: Some(pid), .. } | State::Running { pid, .. }, Input::Changed { files, more }) => {
                let signal = self.watch.change_signal;
                out.push(Action::Note(Note::FileChanged { files, more, signal }));
                match signal {
                    Some(signal) => out.push(Action::Signal {
                        pid,
                        signal: signal.number(),
                    }),
                    None => self.stop(now, Some(pid), true, &mut out),
                }
            }
            (State::Backoff { retries, .. }, Input::Changed { files, more }) => {
                out.push(Action::Note(Note::FileChanged {
                    files,
                    more,
                    signal: None,
                }));
                self.spawn(now, retries, &mut out);
            }
            (_, Input::Changed { .. }) => {}
        }
        out
    }

    /// Spawns it, `retries` failed starts having come before.
    fn spawn(&mut self, now: Duration, retries: u32, out: &mut Vec<Action>) {
        self.state = State::Starting {
            pid: None,
            since: now,
            retries,
        };
        out.push(Action::Spawn);
    }

    /// Sends the stop signal; with `restart`, spawns again once the process has exited.
    fn stop(&mut self, now: Duration, pid: Option<i32>, restart: bool, out: &mut Vec<Action>) {
        if let Some(pid) = pid {
            out.push(Action::Signal {
                pid,
                signal: self.watch.stopsignal,
            });
            out.push(Action::WakeAt(now + self.watch.stopwait));
        }
        self.state = State::Stopping {
            pid,
            since: now,
            killed: false,
            restart,
        };
    }

    /// The `retries`-th failed start in a row: back off, or give up.
    fn failed_start(&mut self, now: Duration, retries: u32, exit: Exit, out: &mut Vec<Action>) {
        let give_up = match self.watch.startretries {
            Retries::Count(n) => retries > n,
            Retries::Forever => false,
        };
        if give_up {
            self.state = State::Fatal { exit, retries };
            out.push(Action::Note(Note::Fatal { retries }));
            return;
        }
        let delay = backoff(retries);
        self.state = State::Backoff {
            retries,
            until: now + delay,
            exit,
        };
        out.push(Action::Note(Note::Backoff { retries, delay }));
        out.push(Action::WakeAt(now + delay));
    }
}

/// The wait after the `retries`-th failed start in a row: 1 s, 2 s, 4 s, ... at most 60 s.
pub(crate) fn backoff(retries: u32) -> Duration {
    let doublings = retries.saturating_sub(1).min(6);
    (Duration::from_secs(1) * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests;
