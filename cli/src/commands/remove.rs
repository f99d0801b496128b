//! `hz remove PROJECT [--purge]`: removes a project and stops its running attempts; says
//! where its results are left, or deletes them with `--purge`.

use crate::Outcome;
use crate::args::RemoveArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use common::history::ProjectRemoved;

pub(crate) async fn run(args: &RemoveArgs, addr: &Endpoint) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let removed = herzog.project_remove_with(&args.project, args.purge).await?;
    note!("{}", message(&removed));
    Ok(Outcome::Ok)
}

/// What was done and what is left on disk, in one line.
fn message(r: &ProjectRemoved) -> String {
    let dir = r.results_dir.display();
    let what = if r.removed {
        format!("removed project {}", r.name)
    } else {
        format!("project {} was removed before", r.name)
    };
    match (r.purged, r.left) {
        (true, false) => format!("{what}; deleted its results folder {dir}"),
        (true, true) => format!(
            "{what}; its results folder {dir} was deleted but is back (a program still stopping wrote to it): run `hz remove --purge {}` again",
            r.name
        ),
        (false, true) => format!(
            "{what}; its results are left in {dir} (logs/ and output/): `hz remove --purge {}` deletes them, and a new project of this name needs that first",
            r.name
        ),
        (false, false) => format!("{what}; it left no results on disk"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_says_what_is_left() {
        let mut r = ProjectRemoved {
            name: "p".into(),
            removed: true,
            results_dir: "/s/results/p".into(),
            purged: false,
            left: true,
        };
        let text = message(&r);
        assert!(
            text.contains("left in /s/results/p") && text.contains("hz remove --purge p"),
            "{text}"
        );
        r.purged = true;
        r.left = false;
        assert_eq!(
            message(&r),
            "removed project p; deleted its results folder /s/results/p"
        );
        r.removed = false;
        assert!(message(&r).starts_with("project p was removed before; deleted"));
    }
}
