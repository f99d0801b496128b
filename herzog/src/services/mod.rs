//! Services: long-running programs herzog keeps up (the supervisor half). This module holds
//! what is pure about them: the difference between two services files (`hz reload`), the
//! instances and their placements, and where `hz tail` reads.

mod diff;
pub(crate) mod fit;
pub(crate) mod route;
pub(crate) mod rpc;
mod state;

pub(crate) use fit::Host;
pub(crate) use route::Route;
pub(crate) use state::{Order, Recorded, Services, Wanted};
