//! `hz start`, `hz stop` and `hz restart` of services or instances; prints what they are then.

use crate::Outcome;
use crate::args::ServicesArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use common::instances::ServiceAction;
use std::io::Write;

pub(crate) async fn run(
    action: ServiceAction,
    args: &ServicesArgs,
    addr: &Endpoint,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let all = herzog.services_control(action, args.names.clone()).await?;
    out.write_all(super::status::table(&all, common::now_millis()).render().as_bytes())?;
    Ok(Outcome::Ok)
}
