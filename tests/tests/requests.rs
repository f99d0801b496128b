//! What a project asks of its workers (`hz action --cpus --mem --time`, `[herzog.defaults]`):
//! stored with the project and shown by `hz list`, `hz fragments` and the JSON; bad sizes and
//! durations are refused before anything is sent.

use common::requests::{Requests, RetryOn};
use common::wire::ProjectProgress;
use tests::Cluster;

#[test]
fn requests_are_kept_with_the_project_and_defaults_fill_the_rest() {
    let config = "[herzog.defaults]\ntime = \"1h\"\nmem = \"1 GiB\"\n";
    let cluster = Cluster::start_with_config(Some(config), &[("euclid", 1)]);
    cluster.inputs("asks", 2);
    cluster.hz_ok(&[
        "action",
        "asks",
        "true",
        "--cpus",
        "1",
        "--mem",
        "64M",
        "--retry-on",
        "time,oom",
    ]);
    cluster.inputs("plain", 1);
    cluster.hz_ok(&["action", "plain", "true"]);
    cluster.hz_ok(&["progress", "asks", "--watch"]);
    cluster.hz_ok(&["progress", "plain", "--watch"]);

    let progress: Vec<ProjectProgress> = cluster.hz_json(&["progress", "asks"]);
    let spec = progress[0].spec.as_deref().expect("the spec");
    // Given: CPUs and memory; from [herzog.defaults]: the time.
    assert_eq!(
        spec.requests,
        Requests {
            cpus: Some(1),
            memory_bytes: Some(64 << 20),
            time_ms: Some(3_600_000),
        }
    );
    assert_eq!(spec.retry_on, [RetryOn::Oom, RetryOn::Time]);
    let progress: Vec<ProjectProgress> = cluster.hz_json(&["progress", "plain"]);
    let plain = progress[0].spec.as_deref().expect("the spec");
    assert_eq!(
        plain.requests,
        Requests {
            cpus: None,
            memory_bytes: Some(1 << 30),
            time_ms: Some(3_600_000),
        }
    );

    let list = cluster.hz_ok(&["list"]);
    assert!(list.contains("REQUESTS"), "{list}");
    assert!(list.contains("1 CPU / 64 MiB / 1h"), "{list}");
    assert!(list.contains("1 CPU / 1 GiB / 1h"), "{list}");
    let fragments = cluster.hz_ok(&["fragments", "asks"]);
    assert!(fragments.starts_with("requests: 1 CPU / 64 MiB / 1h\n"), "{fragments}");
}

#[test]
fn a_bad_size_duration_or_limit_name_is_refused_with_what_to_write() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    cluster.inputs("bad", 1);
    let err = cluster.hz_fails(&["action", "bad", "true", "--mem", "4X"], 2);
    assert!(err.contains("unknown unit `x`") && err.contains("512M"), "{err}");
    let err = cluster.hz_fails(&["action", "bad", "true", "--time", "soon"], 2);
    assert!(err.contains("not a duration") && err.contains("90s"), "{err}");
    let err = cluster.hz_fails(&["action", "bad", "true", "--cpus", "0"], 2);
    assert!(err.contains("--cpus"), "{err}");
    let err = cluster.hz_fails(&["action", "bad", "true", "--retry-on", "segfault"], 2);
    assert!(err.contains("unknown limit `segfault`: use oom or time"), "{err}");
    // Nothing was added.
    let progress: Vec<ProjectProgress> = cluster.hz_json(&["progress"]);
    assert!(progress.is_empty(), "{progress:?}");
}
