//! `hz pause`, `resume`, `cancel`, `limit`, `drain`, `undrain` and `forget`: one call each,
//! which says what it did.

use crate::Outcome;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use common::wire::Control;

pub(crate) async fn run(control: Control, addr: &Endpoint) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let done = herzog.control(control).await?;
    note!("{done}");
    Ok(Outcome::Ok)
}
