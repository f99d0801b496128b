//! An attempt ended by a limit (`--mem`, `--time`): its own reason, and no retry unless the
//! project opted in (`--retry-on`).

use super::*;
use common::requests::{LimitHit, RetryOn};

fn limited(worker: &str, attempt: i64, limit: LimitHit, now: Millis) -> Event {
    Event::Complete {
        worker: worker.to_string(),
        completion: Completion {
            limit: Some(limit),
            peak_memory_bytes: Some(2 << 30),
            ..completion(attempt, Exit::Signal(9), now)
        },
        staging_error: None,
    }
}

fn oom() -> LimitHit {
    LimitHit::Memory {
        limit_bytes: 2 << 30,
        peak_bytes: 2 << 30,
    }
}

#[test]
fn a_limit_fails_its_fragment_with_its_reason_despite_retries() {
    let mut m = machine();
    let spec = RunSpec {
        retries: 2,
        retry_failed: true,
        ..spec("wc -l", 3)
    };
    ok(&mut m, 0, add_event_with("p", &["a", "b"], spec));
    ok(&mut m, 0, register_event("w1", 2, &[]));
    sched(&mut m, 0);
    ok(&mut m, 1, limited("w1", 1, oom(), 1));
    assert_eq!(
        state(&m, "p", "a"),
        FragmentState::Failed {
            attempt: Some(AttemptId(1)),
            reason: "out of memory: limit 2 GiB, peak 2 GiB".into()
        }
    );
    ok(&mut m, 2, limited("w1", 2, LimitHit::Time { limit_ms: 600_000 }, 2));
    assert_eq!(
        state(&m, "p", "b"),
        FragmentState::Failed {
            attempt: Some(AttemptId(2)),
            reason: "time limit 10m reached".into()
        }
    );
}

#[test]
fn retry_on_retries_the_named_limit_up_to_max_attempts() {
    let mut m = machine();
    let spec = RunSpec {
        retry_on: vec![RetryOn::Oom],
        ..spec("wc -l", 2)
    };
    ok(&mut m, 0, add_event_with("p", &["a", "b"], spec));
    ok(&mut m, 0, register_event("w1", 2, &[]));
    sched(&mut m, 0);
    // An OOM is retried; a time limit, not named, is not.
    ok(&mut m, 1, limited("w1", 1, oom(), 1));
    assert_eq!(state(&m, "p", "a"), FragmentState::Pending);
    ok(&mut m, 1, limited("w1", 2, LimitHit::Time { limit_ms: 2_000 }, 1));
    assert!(matches!(state(&m, "p", "b"), FragmentState::Failed { .. }));
    let (_, e) = sched(&mut m, 2);
    let again = starts(&e);
    assert_eq!(again[0].1.fragment, "a");
    // The second OOM is its last attempt: failed, with the limit as the reason.
    ok(&mut m, 3, limited("w1", again[0].1.attempt.0, oom(), 3));
    assert_eq!(
        state(&m, "p", "a"),
        FragmentState::Failed {
            attempt: Some(again[0].1.attempt),
            reason: "out of memory: limit 2 GiB, peak 2 GiB".into()
        }
    );
}

#[test]
fn a_program_that_succeeds_despite_a_limit_event_succeeds() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a"]));
    ok(&mut m, 0, register_event("w1", 1, &[]));
    sched(&mut m, 0);
    // A child was OOM-killed and the program coped: its exit decides.
    let done = Event::Complete {
        worker: "w1".into(),
        completion: Completion {
            limit: Some(oom()),
            ..completion(1, Exit::Code(0), 1)
        },
        staging_error: None,
    };
    ok(&mut m, 1, done);
    assert_eq!(state(&m, "p", "a"), FragmentState::Succeeded { attempt: AttemptId(1) });
}
