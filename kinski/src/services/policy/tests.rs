//! The restart policy, driven by hand and by random inputs against a model of the process.

use super::*;
use proptest::prelude::*;

const S: Duration = Duration::from_secs(1);

fn watch(autorestart: AutoRestart, startretries: Retries) -> Watch {
    Watch {
        autorestart,
        exitcodes: vec![0],
        startsecs: S,
        startretries,
        stopsignal: libc::SIGTERM,
        stopwait: 10 * S,
        change_signal: None,
    }
}

fn changed(file: &str) -> Input {
    Input::Changed {
        files: vec![file.into()],
        more: 0,
    }
}

fn note(file: &str, signal: Option<StopSignal>) -> Action {
    Action::Note(Note::FileChanged {
        files: vec![file.into()],
        more: 0,
        signal,
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Started, spawned as `pid` at `at`, and up for startsecs.
fn running(i: &mut Instance, at: Duration, pid: i32) {
    assert_eq!(i.handle(at, Input::Start), [Action::Spawn]);
    i.handle(at, Input::Spawned { pid });
    i.handle(at + S, Input::Tick);
    assert_eq!(i.state, State::Running { pid, since: at });
}

#[test]
fn a_crash_after_startsecs_restarts_at_once() {
    let mut i = Instance::new(watch(AutoRestart::Unexpected, Retries::Count(3)));
    running(&mut i, ms(0), 10);
    let out = i.handle(ms(5_000), Input::Exited { exit: Exit::Code(3) });
    assert_eq!(
        out,
        [
            Action::Note(Note::Exited {
                exit: Exit::Code(3),
                expected: false
            }),
            Action::Spawn
        ]
    );
    assert_eq!(i.restarts, 1);
    assert!(matches!(i.state, State::Starting { retries: 0, .. }));
}

#[test]
fn failed_starts_back_off_1_2_4_seconds_then_fatal() {
    let mut i = Instance::new(watch(AutoRestart::Unexpected, Retries::Count(3)));
    let mut now = ms(0);
    assert_eq!(i.handle(now, Input::Start), [Action::Spawn]);
    let mut spawns = 1;
    let mut delays = Vec::new();
    loop {
        i.handle(now, Input::Spawned { pid: spawns });
        now += ms(100);
        let out = i.handle(now, Input::Exited { exit: Exit::Code(1) });
        match &i.state {
            State::Backoff { until, .. } => {
                delays.push(*until - now);
                assert_eq!(out.last(), Some(&Action::WakeAt(*until)));
                now = *until;
                assert_eq!(i.handle(now, Input::Tick), [Action::Spawn]);
                spawns += 1;
            }
            State::Fatal { retries, .. } => {
                assert_eq!(*retries, 4);
                assert_eq!(out, [Action::Note(Note::Fatal { retries: 4 })]);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays, [S, 2 * S, 4 * S]);
    assert_eq!(spawns, 4, "the first start and three retries");
    // Fatal stays down until started by hand, which starts afresh.
    assert!(i.handle(now + 100 * S, Input::Tick).is_empty());
    assert_eq!(i.handle(now, Input::Start), [Action::Spawn]);
    assert!(matches!(i.state, State::Starting { retries: 0, .. }));
}

#[test]
fn the_backoff_doubles_up_to_a_minute_and_forever_never_gives_up() {
    assert_eq!(
        (1..=9).map(backoff).collect::<Vec<_>>(),
        [1, 2, 4, 8, 16, 32, 60, 60, 60].map(|s| s * S)
    );
    let mut i = Instance::new(watch(AutoRestart::Always, Retries::Forever));
    let mut now = ms(0);
    i.handle(now, Input::Start);
    for n in 0..50 {
        i.handle(now, Input::Spawned { pid: n });
        i.handle(now, Input::Exited { exit: Exit::Signal(9) });
        let State::Backoff { until, .. } = i.state else {
            panic!("{:?}", i.state)
        };
        now = until;
        assert_eq!(i.handle(now, Input::Tick), [Action::Spawn]);
    }
}

#[test]
fn autorestart_against_exit_0_exit_3_and_sigkill() {
    for (policy, exit, restarts) in [
        (AutoRestart::Never, Exit::Code(0), false),
        (AutoRestart::Never, Exit::Code(3), false),
        (AutoRestart::Never, Exit::Signal(9), false),
        (AutoRestart::Unexpected, Exit::Code(0), false),
        (AutoRestart::Unexpected, Exit::Code(3), true),
        (AutoRestart::Unexpected, Exit::Signal(9), true),
        (AutoRestart::Always, Exit::Code(0), true),
        (AutoRestart::Always, Exit::Code(3), true),
        (AutoRestart::Always, Exit::Signal(9), true),
    ] {
        let mut i = Instance::new(watch(policy, Retries::Count(3)));
        running(&mut i, ms(0), 7);
        let out = i.handle(10 * S, Input::Exited { exit: exit.clone() });
        assert_eq!(out.contains(&Action::Spawn), restarts, "{policy:?} {exit:?}: {out:?}");
        if !restarts {
            assert_eq!(
                i.state,
                State::Exited {
                    expected: exit == Exit::Code(0),
                    exit
                }
            );
        }
    }
}

#[test]
fn a_stop_signals_waits_the_grace_then_kills() {
    let mut i = Instance::new(watch(AutoRestart::Always, Retries::Count(3)));
    running(&mut i, ms(0), 42);
    let out = i.handle(5 * S, Input::Stop);
    assert_eq!(
        out,
        [
            Action::Signal {
                pid: 42,
                signal: libc::SIGTERM
            },
            Action::WakeAt(15 * S)
        ]
    );
    assert_eq!(i.handle(9 * S, Input::Tick), [Action::WakeAt(15 * S)]);
    assert_eq!(
        i.handle(15 * S, Input::Tick),
        [Action::Signal {
            pid: 42,
            signal: libc::SIGKILL
        }]
    );
    // Exited after SIGKILL: stopped, and autorestart = always does not bring it back.
    assert_eq!(
        i.handle(15 * S, Input::Exited { exit: Exit::Signal(9) }),
        [Action::Note(Note::Stopped)]
    );
    assert_eq!(i.state, State::Stopped);
}

#[test]
fn a_stop_during_the_spawn_waits_for_the_pid() {
    let mut i = Instance::new(watch(AutoRestart::Never, Retries::Count(3)));
    assert_eq!(i.handle(3 * S, Input::Start), [Action::Spawn]);
    // Stopped before its pid is known: signalled the moment it is.
    assert_eq!(i.handle(3 * S, Input::Stop), []);
    let out = i.handle(3 * S, Input::Spawned { pid: 6 });
    assert_eq!(
        out,
        [
            Action::Signal {
                pid: 6,
                signal: libc::SIGTERM
            },
            Action::WakeAt(13 * S)
        ]
    );
}

#[test]
fn a_program_that_exits_at_once_backs_off_even_with_startsecs_zero() {
    let mut w = watch(AutoRestart::Always, Retries::Count(2));
    w.startsecs = Duration::ZERO;
    let mut i = Instance::new(w);
    let mut now = ms(0);
    i.handle(now, Input::Start);
    let mut delays = Vec::new();
    for pid in 1.. {
        i.handle(now, Input::Spawned { pid });
        now += ms(5);
        i.handle(now, Input::Exited { exit: Exit::Code(0) });
        match i.state {
            State::Backoff { until, .. } => {
                delays.push(until - now);
                now = until;
                assert_eq!(i.handle(now, Input::Tick), [Action::Spawn]);
            }
            State::Fatal { retries, .. } => {
                assert_eq!(retries, 3);
                break;
            }
            ref other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays, [S, 2 * S], "no restart without a pause");
    // Up for longer than a second, then a crash: restarted at once, as any crash.
    i.handle(now, Input::Start);
    i.handle(now, Input::Spawned { pid: 99 });
    let out = i.handle(now + 2 * S, Input::Exited { exit: Exit::Code(0) });
    assert!(out.contains(&Action::Spawn), "{out:?}");
}

#[test]
fn startsecs_zero_is_running_at_once() {
    let mut w = watch(AutoRestart::Unexpected, Retries::Count(3));
    w.startsecs = Duration::ZERO;
    let mut i = Instance::new(w);
    i.handle(ms(0), Input::Start);
    let out = i.handle(ms(0), Input::Spawned { pid: 3 });
    assert_eq!(
        out,
        [
            Action::Note(Note::Started { pid: 3 }),
            Action::Note(Note::Running { pid: 3 })
        ]
    );
    assert_eq!(i.state, State::Running { pid: 3, since: ms(0) });
}

#[test]
fn a_changed_file_restarts_a_running_instance_once_it_has_stopped() {
    let mut i = Instance::new(watch(AutoRestart::Never, Retries::Count(3)));
    running(&mut i, ms(0), 10);
    let out = i.handle(ms(5_000), changed("/etc/app.conf"));
    assert_eq!(
        out,
        [
            note("/etc/app.conf", None),
            Action::Signal {
                pid: 10,
                signal: libc::SIGTERM
            },
            Action::WakeAt(ms(15_000))
        ]
    );
    // More changes while it stops change nothing; its exit (whatever autorestart says)
    // spawns it again, with no note of a stop: it was restarted, not stopped.
    assert!(i.handle(ms(5_100), changed("/etc/app.conf")).is_empty());
    assert_eq!(
        i.handle(ms(5_200), Input::Exited { exit: Exit::Signal(15) }),
        [Action::Spawn]
    );
    assert!(matches!(i.state, State::Starting { retries: 0, .. }));
    assert_eq!(i.restarts, 0, "a restart for a change is not a crash");
    // One that does not stop in its grace is killed, and spawned again all the same.
    i.handle(ms(5_200), Input::Spawned { pid: 11 });
    i.handle(ms(6_200), Input::Tick);
    i.handle(ms(7_000), changed("/etc/app.conf"));
    assert_eq!(
        i.handle(ms(17_000), Input::Tick),
        [Action::Signal {
            pid: 11,
            signal: libc::SIGKILL
        }]
    );
    assert_eq!(
        i.handle(ms(17_001), Input::Exited { exit: Exit::Signal(9) }),
        [Action::Spawn]
    );
}

#[test]
fn with_change_signal_a_changed_file_is_signalled_not_restarted() {
    let mut w = watch(AutoRestart::Unexpected, Retries::Count(3));
    w.change_signal = Some(StopSignal::Hup);
    let mut i = Instance::new(w);
    running(&mut i, ms(0), 10);
    assert_eq!(
        i.handle(ms(2_000), changed("/etc/app.conf")),
        [
            note("/etc/app.conf", Some(StopSignal::Hup)),
            Action::Signal {
                pid: 10,
                signal: libc::SIGHUP
            }
        ]
    );
    assert_eq!(i.state, State::Running { pid: 10, since: ms(0) });
}

#[test]
fn a_change_starts_one_backing_off_at_once_and_leaves_the_down_alone() {
    let mut i = Instance::new(watch(AutoRestart::Unexpected, Retries::Count(1)));
    i.handle(ms(0), Input::Start);
    i.handle(ms(0), Input::Spawned { pid: 1 });
    i.handle(ms(100), Input::Exited { exit: Exit::Code(1) });
    assert!(matches!(i.state, State::Backoff { retries: 1, .. }));
    // The change may be the fix: no waiting out the backoff.
    assert_eq!(
        i.handle(ms(200), changed("/etc/app.conf")),
        [note("/etc/app.conf", None), Action::Spawn]
    );
    assert!(matches!(i.state, State::Starting { retries: 1, .. }));
    // A spawn on its way reads the changed file as it starts.
    assert!(i.handle(ms(200), changed("/etc/app.conf")).is_empty());
    i.handle(ms(200), Input::Spawned { pid: 2 });
    i.handle(ms(300), Input::Exited { exit: Exit::Code(1) });
    assert!(matches!(i.state, State::Fatal { .. }));
    assert!(
        i.handle(ms(400), changed("/etc/app.conf")).is_empty(),
        "Fatal until hz start"
    );
    i.handle(ms(400), Input::Stop);
    assert_eq!(i.state, State::Stopped);
    assert!(i.handle(ms(500), changed("/etc/app.conf")).is_empty());
}

#[test]
fn a_stop_asked_while_restarting_for_a_change_keeps_it_down() {
    let mut i = Instance::new(watch(AutoRestart::Always, Retries::Count(3)));
    running(&mut i, ms(0), 10);
    i.handle(ms(2_000), changed("/etc/app.conf"));
    assert!(i.handle(ms(2_100), Input::Stop).is_empty());
    assert_eq!(
        i.handle(ms(2_200), Input::Exited { exit: Exit::Signal(15) }),
        [Action::Note(Note::Stopped)]
    );
    assert_eq!(i.state, State::Stopped);
}

/// What the test does next; the harness turns it into an input the process could give.
#[derive(Clone, Debug)]
enum Step {
    Start,
    Stop,
    /// The live process exits with this code (or this signal, when negative).
    Exit(i32),
    /// Time passes.
    Wait(u64),
    /// A watched file changes.
    Change,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Start),
        1 => Just(Step::Stop),
        3 => (-15i32..4).prop_map(Step::Exit),
        3 => (0u64..20_000).prop_map(Step::Wait),
        1 => Just(Step::Change),
    ]
}

proptest! {
    /// At most one process at a time, signals only to it, SIGKILL only a grace after the stop
    /// signal, `Fatal` only after more failed starts in a row than allowed, and every timed
    /// state has its wake-up.
    #[test]
    fn random_inputs_keep_the_rules(
        retries in 0u32..4,
        hup in any::<bool>(),
        autorestart in prop_oneof![Just(AutoRestart::Always), Just(AutoRestart::Never), Just(AutoRestart::Unexpected)],
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut w = watch(autorestart, Retries::Count(retries));
        w.change_signal = hup.then_some(StopSignal::Hup);
        let mut i = Instance::new(w);
        let mut now = Duration::ZERO;
        // The model of the process: the live pid, a spawn owed, when the stop signal went.
        let mut live: Option<i32> = None;
        let mut next_pid = 1;
        let mut term_at: Option<Duration> = None;
        let mut wake: Option<Duration> = None;
        for s in steps {
            let input = match s {
                Step::Start => Input::Start,
                Step::Stop => Input::Stop,
                Step::Exit(code) => match live {
                    Some(_) => Input::Exited { exit: if code < 0 { Exit::Signal(-code) } else { Exit::Code(code) } },
                    None => Input::Tick,
                },
                Step::Wait(ms) => {
                    // Never past the wake-up asked for: the caller keeps its promise.
                    let to = now + Duration::from_millis(ms);
                    now = wake.map_or(to, |w| to.min(w.max(now)));
                    Input::Tick
                }
                Step::Change => changed("/etc/app.conf"),
            };
            let exited = matches!(input, Input::Exited { .. });
            let before = i.state.clone();
            if exited {
                live = None;
                term_at = None;
            }
            let mut queue = vec![input];
            while let Some(input) = queue.pop() {
                for action in i.handle(now, input) {
                    match action {
                        Action::Spawn => {
                            prop_assert!(live.is_none(), "a second process while {live:?} lives");
                            live = Some(next_pid);
                            queue.push(Input::Spawned { pid: next_pid });
                            next_pid += 1;
                        }
                        Action::Signal { pid, signal } => {
                            prop_assert_eq!(Some(pid), live, "a signal to a process that is not the live one");
                            if signal == libc::SIGKILL {
                                let at = term_at.expect("SIGKILL only after the stop signal");
                                prop_assert!(now >= at + 10 * S, "SIGKILL before the grace");
                            } else if signal == libc::SIGHUP {
                                prop_assert!(hup, "SIGHUP without change_signal");
                                prop_assert!(matches!(before, State::Starting { .. } | State::Running { .. }), "SIGHUP while {:?}", before);
                            } else {
                                term_at = Some(now);
                            }
                        }
                        Action::WakeAt(at) => wake = Some(at),
                        Action::Note(Note::Fatal { retries: r }) => {
                            // One failed start more than allowed, the ones before in a row.
                            prop_assert_eq!(r, retries + 1);
                            prop_assert!(
                                matches!(before, State::Starting { retries: b, .. } if b == retries),
                                "Fatal from {:?}", before
                            );
                        }
                        Action::Note(_) => {}
                    }
                }
            }
            match &i.state {
                State::Starting { pid: Some(pid), since, .. } => {
                    prop_assert!(wake >= Some(*since + S));
                    prop_assert_eq!(Some(*pid), live);
                }
                State::Backoff { until, .. } => prop_assert_eq!(wake, Some(*until)),
                State::Stopping { pid: Some(_), killed: false, since, .. } => prop_assert_eq!(wake, Some(*since + 10 * S)),
                State::Running { pid, .. } => prop_assert_eq!(Some(*pid), live),
                State::Stopped | State::Exited { .. } | State::Fatal { .. } => prop_assert!(live.is_none(), "{:?} with a live process", i.state),
                _ => {}
            }
        }
    }
}
