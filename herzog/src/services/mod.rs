//! Services: long-running programs herzog keeps up (the supervisor half). This module holds
//! what is pure about them: the difference between two services files (`hz reload`).

mod diff;
pub(crate) mod rpc;
mod state;

pub(crate) use state::{Order, Recorded, Services, Wanted};
