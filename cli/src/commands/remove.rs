//! `hz remove PROJECT`: removes a project and stops its running attempts.

use crate::Outcome;
use crate::args::RemoveArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;

pub(crate) async fn run(args: &RemoveArgs, addr: &Endpoint) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    herzog.project_remove(&args.project).await?;
    note!("removed project {}", args.project);
    Ok(Outcome::Ok)
}
