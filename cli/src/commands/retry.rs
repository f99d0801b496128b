//! `hz retry PROJECT`: puts a project's failed fragments back in the queue.

use crate::Outcome;
use crate::args::RetryArgs;
use crate::client::Herzog;
use crate::error::CliError;

pub(crate) async fn run(args: &RetryArgs, addr: &str) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let requeued = herzog.project_retry(&args.project).await?;
    if requeued == 0 {
        note!("project {} has no failed fragment to retry", args.project);
    } else {
        note!(
            "requeued {requeued} failed fragments of project {}: `hz progress {} --watch` follows them",
            args.project,
            args.project
        );
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeHerzog, project};

    #[tokio::test]
    async fn requeues_failed_fragments() {
        let fake = FakeHerzog::default();
        let mut p = project("p", 4);
        (p.pending, p.failed) = (0, 4);
        fake.state().projects = vec![p];
        let addr = fake.start().await.addr().to_string();
        run(&RetryArgs { project: "p".into() }, &addr).await.unwrap();
        assert_eq!(fake.state().projects[0].pending, 4);
        let err = run(&RetryArgs { project: "q".into() }, &addr).await.unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
