//! Where `hz tail` reads: an instance named as the user names it (`web` for `web:0`, or
//! `web:N`, `agent@euclid:0`), its current placement or the one a follower is finishing, and
//! the worker that holds it. Pure: the handler in [`super::rpc`] does the call.

use super::state::{Placed, Services};
use common::ApiError;
use common::instances::{InstanceId, InstanceState, RunId};
use common::output::{Follow, Stream};
use common::services::Output;

/// The placement to read and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// `web:0`.
    pub(crate) instance: String,
    pub(crate) run: RunId,
    pub(crate) worker: String,
}

/// The instance `name` names: `NAME:N` (or `NAME@HOST:N`) exactly, or `NAME` for its
/// instance 0 when there is one such.
pub(crate) fn instance(services: &Services, name: &str) -> Result<InstanceId, ApiError> {
    let all = services.select(Some(name));
    let unknown = || ApiError::UnknownService { name: name.to_string() };
    if all.len() <= 1 {
        return all.into_iter().next().ok_or_else(unknown);
    }
    let first: Vec<InstanceId> = all.into_iter().filter(|i| i.index == 0).collect();
    match first.len() {
        1 => Ok(first.into_iter().next().expect("one")),
        0 => Err(unknown()),
        _ => Err(ApiError::AmbiguousInstance {
            name: name.to_string(),
            instances: first.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// The placement of `name` a follower reads (`follow`), and its worker; `connected` says
/// whether herzog has a connection to a worker.
pub(crate) fn route(
    services: &Services,
    connected: impl Fn(&str) -> bool,
    name: &str,
    follow: &Follow,
    stream: Stream,
) -> Result<Route, ApiError> {
    let id = instance(services, name)?;
    let shown = id.to_string();
    if let Some(spec) = services.file().services.get(&id.service) {
        let sink = match stream {
            Stream::Stdout => &spec.stdout,
            Stream::Stderr => &spec.stderr,
        };
        let reason = match sink {
            Output::Kept => None,
            Output::Discard => Some(format!("{} = \"discard\" in the services file", stream.name())),
            Output::File(path) => Some(format!(
                "it goes to {} on the instance's host ({} in the services file): read it there",
                path.display(),
                stream.name()
            )),
        };
        if let Some(reason) = reason {
            return Err(ApiError::OutputNotKept {
                instance: shown,
                stream: stream.name().to_string(),
                reason,
            });
        }
    }
    let kept = &services.instances()[&id];
    let placements = [kept.placed.as_ref(), kept.draining.as_ref()];
    let placed: &Placed = match follow {
        Follow::Run { run, worker } => match placements.into_iter().flatten().find(|p| p.run == *run) {
            Some(p) => p,
            None => {
                // One herzog has forgotten (stopped and gone): read as long as its worker
                // still has its output; when the worker no longer knows it, it has ended.
                let route = Route {
                    instance: shown,
                    run: *run,
                    worker: worker.clone(),
                };
                return reachable(route, &connected, None);
            }
        },
        Follow::Current => match placements.into_iter().flatten().next() {
            Some(p) => p,
            None => {
                let reason = match kept.wanted {
                    super::Wanted::Down => format!("it is stopped: `hz start {shown}` starts it"),
                    super::Wanted::Up => "it waits for a worker it may run on: `hz workers` shows them".to_string(),
                };
                return Err(ApiError::NotPlaced {
                    instance: shown,
                    reason,
                });
            }
        },
    };
    let route = Route {
        instance: shown,
        run: placed.run,
        worker: placed.worker.clone(),
    };
    reachable(route, &connected, placed.state.as_ref())
}

/// The route, if its worker can be reached now.
fn reachable(
    route: Route,
    connected: &impl Fn(&str) -> bool,
    state: Option<&InstanceState>,
) -> Result<Route, ApiError> {
    let unreachable = |reason: &str| ApiError::HostUnreachable {
        instance: route.instance.clone(),
        worker: route.worker.clone(),
        reason: reason.to_string(),
    };
    if matches!(state, Some(InstanceState::Unknown { .. })) {
        return Err(unreachable("it was lost (silent for the worker timeout)"));
    }
    if !connected(&route.worker) {
        return Err(unreachable("it is not connected"));
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Mono;
    use common::services::ServicesFile;

    fn services(text: &str, workers: &[&str]) -> Services {
        let file = ServicesFile::parse(text, std::path::Path::new("services.toml")).expect("parse");
        let mut s = Services::new(file, 0);
        let workers: Vec<String> = workers.iter().map(|w| w.to_string()).collect();
        let file = s.file().clone();
        s.reload(file, &workers);
        s.place(Mono(0), &workers);
        s
    }

    fn current(s: &Services, name: &str) -> Result<Route, ApiError> {
        route(s, |w| w != "gone", name, &Follow::Current, Stream::Stdout)
    }

    #[test]
    fn a_service_name_means_its_instance_0_and_every_error_names_what_is_wrong() {
        let s = services(
            "[services.web]\ncommand = \"w\"\nnumprocs = 2\n[services.agent]\ncommand = \"a\"\nevery_host = true\n[services.quiet]\ncommand = \"q\"\nstdout = \"discard\"\nstderr = \"/var/log/q.err\"\n[services.later]\ncommand = \"l\"\nautostart = false\n",
            &["euclid", "newton"],
        );
        let web = current(&s, "web").expect("web:0");
        assert_eq!(web.instance, "web:0");
        assert_eq!(current(&s, "web:1").expect("web:1").instance, "web:1");
        assert_ne!(current(&s, "web:1").expect("web:1").run, web.run);
        assert_eq!(current(&s, "agent@newton:0").expect("one host's").worker, "newton");
        let err = current(&s, "agent").unwrap_err().to_string();
        assert!(
            err.contains("agent@euclid:0, agent@newton:0") && err.contains("name one"),
            "{err}"
        );
        let err = current(&s, "web:7").unwrap_err();
        assert_eq!(err, ApiError::UnknownService { name: "web:7".into() });
        let err = current(&s, "quiet").unwrap_err().to_string();
        assert!(err.contains("quiet:0's stdout") && err.contains("discard"), "{err}");
        let err = route(&s, |_| true, "quiet", &Follow::Current, Stream::Stderr)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/var/log/q.err") && err.contains("read it there"), "{err}");
        let err = current(&s, "later").unwrap_err().to_string();
        assert!(
            err.contains("later:0 is not placed") && err.contains("hz start later:0"),
            "{err}"
        );
    }

    #[test]
    fn a_follower_finishes_the_placement_it_read_even_one_herzog_has_forgotten() {
        let s = services("[services.web]\ncommand = \"w\"\n", &["euclid"]);
        let now = current(&s, "web").expect("placed");
        let again = route(
            &s,
            |_| true,
            "web",
            &Follow::Run {
                run: now.run,
                worker: "euclid".into(),
            },
            Stream::Stdout,
        );
        assert_eq!(again, Ok(now.clone()));
        let old = Follow::Run {
            run: RunId(now.run.0 - 1),
            worker: "newton".into(),
        };
        let earlier = route(&s, |_| true, "web", &old, Stream::Stdout).expect("routed");
        assert_eq!((earlier.worker.as_str(), earlier.run), ("newton", RunId(now.run.0 - 1)));
        let err = route(&s, |w| w != "euclid", "web", &Follow::Current, Stream::Stdout)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("web:0 runs on worker 'euclid'") && err.contains("not connected"),
            "{err}"
        );
    }
}
