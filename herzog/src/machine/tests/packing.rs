//! Packing in the machine: starts go where their requests fit (queued starts counted), a
//! request no worker can fit is refused or held with the reason, services take their requests
//! from the worker's room, and requests on a worker without limits are warned of.

use super::*;
use common::requests::{LimitSupport, Requests};

fn asking(cpus: u32, memory_gib: Option<u64>) -> RunSpec {
    RunSpec {
        requests: Requests {
            cpus: Some(cpus),
            memory_bytes: memory_gib.map(|g| g << 30),
            time_ms: None,
        },
        ..spec("wc -l", 2)
    }
}

/// A worker of 2 slots, a queue of 2 and `cpus` CPUs.
fn worker(name: &str, cpus: u32, limits: LimitSupport) -> Event {
    Event::Register {
        worker: name.to_string(),
        resources: Resources {
            cpus,
            queue: 2,
            limits,
            ..slots(2)
        },
        running: Vec::new(),
        staged: false,
    }
}

const FILES: &[&str] = &["a", "b", "c", "d", "e", "f"];

#[test]
fn one_cpu_attempts_fill_slots_and_queue_and_two_cpu_ones_go_one_at_a_time() {
    let mut m = machine();
    ok(&mut m, 0, worker("w1", 2, LimitSupport::Cgroup2));
    ok(&mut m, 0, add_event_with("ones", FILES, asking(1, None)));
    // Two running and two queued: any two of them fit the two CPUs.
    assert_eq!(starts(&sched(&mut m, 1).1).len(), 4);

    let mut m = machine();
    ok(&mut m, 0, worker("w1", 2, LimitSupport::Cgroup2));
    ok(&mut m, 0, add_event_with("twos", FILES, asking(2, None)));
    let first = starts(&sched(&mut m, 1).1);
    assert_eq!(first.len(), 1, "a queued 2-CPU start would run beside the first");
    ok(&mut m, 2, complete_event("w1", first[0].1.attempt.0, Exit::Code(0), 2));
    assert_eq!(starts(&sched(&mut m, 3).1).len(), 1, "the next once it ended");
}

#[test]
fn memory_packs_as_cpus_do_and_reserves_come_off_the_offer() {
    let mut m = machine();
    let register = Event::Register {
        worker: "w1".into(),
        resources: Resources {
            memory_bytes: 8 << 30,
            reserved_memory_bytes: 2 << 30,
            ..slots(4)
        },
        running: Vec::new(),
        staged: false,
    };
    ok(&mut m, 0, register);
    ok(&mut m, 0, add_event_with("mem", FILES, asking(1, Some(3))));
    // 6 GiB offered: two of 3 GiB.
    assert_eq!(starts(&sched(&mut m, 1).1).len(), 2);
}

#[test]
fn a_request_no_worker_can_fit_is_refused_or_held_until_one_registers() {
    let mut m = machine();
    // No worker yet: accepted, and held with the reason.
    ok(&mut m, 0, add_event_with("huge", &["a"], asking(8, Some(64))));
    let held = m.progress(Some("huge")).expect("known")[0].held.clone();
    assert_eq!(
        held.as_deref(),
        Some("waiting: no worker can fit 8 CPUs / 64 GiB: none has registered")
    );
    ok(&mut m, 0, worker("euclid", 4, LimitSupport::Cgroup2));
    ok(&mut m, 0, worker("newton", 2, LimitSupport::Cgroup2));
    let held = m.progress(Some("huge")).expect("known")[0]
        .held
        .clone()
        .unwrap_or_default();
    assert!(
        held.starts_with("waiting: no worker can fit 8 CPUs / 64 GiB: the largest offers 4 CPUs / 64 GiB (euclid)"),
        "{held}"
    );
    assert!(starts(&sched(&mut m, 1).1).is_empty());
    // Now that workers are known, a project no worker can fit is refused.
    let out = step(&mut m, 2, add_event_with("bigger", &["a"], asking(8, None)));
    assert_eq!(
        out.reply,
        Err(Rejected::Api(ApiError::NoWorkerFits {
            request: "8 CPUs".into(),
            largest: "4 CPUs / 64 GiB".into(),
            worker: "euclid".into(),
        }))
    );
    // Short of memory only: the largest in memory is named.
    let out = step(&mut m, 2, add_event_with("bigger", &["a"], asking(1, Some(100))));
    assert!(
        matches!(&out.reply, Err(Rejected::Api(ApiError::NoWorkerFits { request, .. })) if request == "1 CPU / 100 GiB"),
        "{:?}",
        out.reply
    );
    ok(&mut m, 2, add_event_with("fits", &["a"], asking(4, None)));
}

#[test]
fn a_big_project_reserves_the_worker_and_the_small_stream_keeps_off_until_it_fits() {
    let mut m = machine();
    ok(&mut m, 0, worker("w1", 2, LimitSupport::Cgroup2));
    ok(&mut m, 0, add_event_with("small", FILES, asking(1, None)));
    let first = starts(&sched(&mut m, 1).1);
    assert_eq!(first.len(), 4);
    ok(&mut m, 1_000, add_event_with("big", &["x"], asking(2, None)));
    let attempts: Vec<i64> = first.iter().map(|s| s.1.attempt.0).collect();
    // As the small ones end, nothing of "small" starts: "big" (below its share) holds w1.
    for (i, a) in attempts.into_iter().enumerate() {
        let now = 2_000 + i as i64 * 100;
        ok(&mut m, now, complete_event("w1", a, Exit::Code(0), now));
        let given = starts(&sched(&mut m, now).1);
        if i < 3 {
            assert!(given.is_empty(), "after {} ended: {given:?}", i + 1);
        } else {
            assert_eq!(given.len(), 1, "{given:?}");
            assert_eq!(given[0].1.project, "big");
        }
    }
}

#[test]
fn a_service_takes_its_cpus_from_the_worker_and_goes_only_where_it_fits() {
    let mut m = machine();
    ok(&mut m, 0, worker("w1", 2, LimitSupport::Cgroup2));
    ok(&mut m, 0, worker("w2", 4, LimitSupport::Cgroup2));
    let file = common::services::ServicesFile::parse(
        "[services.db]\ncommand = \"db\"\ncpus = 3\n",
        std::path::Path::new("services.toml"),
    )
    .expect("parses");
    ok(&mut m, 0, Event::ServicesReload { file });
    ok(&mut m, 0, add_event_with("p", FILES, asking(1, None)));
    let (_, e) = sched(&mut m, 1);
    let placed: Vec<String> = e
        .iter()
        .filter_map(|e| match e {
            Effect::Instance(crate::services::Order::Run { worker, .. }) => Some(worker.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(placed, ["w2"], "only w2 has 3 CPUs");
    let per_worker = |w: &str| starts(&e).iter().filter(|s| s.0 == w).count();
    // w2 keeps 1 CPU for its attempts: one; w1 its 2 CPUs: four (two run, two queued).
    assert_eq!((per_worker("w1"), per_worker("w2")), (4, 1));
}

#[test]
fn requests_on_a_worker_without_limits_are_warned_of() {
    let mut m = machine();
    ok(&mut m, 0, worker("bare", 2, LimitSupport::None));
    ok(&mut m, 0, add_event_with("asks", &["a"], asking(1, None)));
    ok(&mut m, 0, add_event_with("plain", &["a"], spec("wc -l", 2)));
    sched(&mut m, 1);
    let warnings = |m: &Machine, p: &str| m.progress(Some(p)).expect("known")[0].warnings.clone();
    assert_eq!(
        warnings(&m, "asks"),
        ["1 attempt on bare, whose kinski enforces no limits (limits: none): its --cpus and --mem only pack there"]
    );
    assert!(warnings(&m, "plain").is_empty(), "nothing asked, nothing to enforce");
}

#[test]
fn a_request_that_fits_only_where_services_leave_too_little_is_held_with_the_reason() {
    let mut m = machine();
    ok(&mut m, 0, worker("w1", 4, LimitSupport::Cgroup2));
    let file = common::services::ServicesFile::parse(
        "[services.db]\ncommand = \"db\"\ncpus = 3\n",
        std::path::Path::new("services.toml"),
    )
    .expect("parses");
    ok(&mut m, 0, Event::ServicesReload { file });
    sched(&mut m, 1);
    // 4 CPUs fit w1's offer, so `hz action` takes it; beside db's 3 it cannot start.
    ok(&mut m, 1, add_event_with("wide", &["a"], asking(4, None)));
    assert!(starts(&sched(&mut m, 2).1).is_empty());
    let held = m.progress(Some("wide")).expect("known")[0].held.clone();
    assert_eq!(
        held.as_deref(),
        Some("waiting: no worker can fit 4 CPUs beside its services: the most room is 1 CPU / 64 GiB (w1)")
    );
}
