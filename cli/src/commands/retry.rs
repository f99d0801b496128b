//! `hz retry PROJECT`: puts a project's failed fragments back in the queue.

use crate::Outcome;
use crate::args::RetryArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;

pub(crate) async fn run(args: &RetryArgs, addr: &Endpoint) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let requeued = herzog.project_retry(&args.project).await?;
    if requeued == 0 {
        note!("project {} has no failed fragment to retry", args.project);
    } else {
        note!(
            "requeued {} of project {}: `hz progress {} --watch` follows them",
            common::count(requeued, "failed fragment"),
            args.project,
            args.project
        );
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::fragments;
    use crate::test_cluster::Cluster;
    use common::wire::{Exit, FragmentStateKind, RunSpec};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requeues_failed_fragments() {
        let cluster = Cluster::with_worker(2).await;
        let marks = tempfile::tempdir().unwrap();
        // Fails the first time it sees a file and succeeds the next time.
        let mut spec = RunSpec::new("sh -c 'm=\"$MARKS/${0##*/}\"; test -e \"$m\" && exit 0; touch \"$m\"; exit 3'");
        spec.env.insert("MARKS".into(), marks.path().display().to_string());
        let dir = cluster.inputs((0..4).map(|i| (format!("f{i}"), "")));
        cluster.add_spec("p", dir, spec).await;
        let first = cluster.finish("p").await;
        assert_eq!((first.succeeded, first.failed), (0, 4));
        let failed = fragments::collect(&cluster.herzog, "p", None, usize::MAX)
            .await
            .unwrap();
        assert!(failed.iter().all(|f| f.exit == Some(Exit::Code(3))), "{failed:?}");

        run(&RetryArgs { project: "p".into() }, &cluster.endpoint)
            .await
            .unwrap();
        let second = cluster.finish("p").await;
        assert_eq!((second.succeeded, second.failed), (4, 0));
        // Each fragment ran once more, its attempt count started afresh.
        let all = fragments::collect(&cluster.herzog, "p", None, usize::MAX)
            .await
            .unwrap();
        for (before, after) in failed.iter().zip(&all) {
            assert_eq!(after.state, FragmentStateKind::Succeeded, "{after:?}");
            assert_eq!(after.attempts, 1, "{after:?}");
            assert_ne!(after.attempt, before.attempt, "{after:?}");
        }
        // Nothing left to retry.
        run(&RetryArgs { project: "p".into() }, &cluster.endpoint)
            .await
            .unwrap();
        assert_eq!(cluster.herzog.project_progress(Some("p")).await.unwrap()[0].pending, 0);

        let err = run(&RetryArgs { project: "q".into() }, &cluster.endpoint)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        cluster.stop().await;
    }
}
