//! Services: long-running programs herzog keeps up (the supervisor half). This module holds
//! what is pure about them: the difference between two services files (`hz reload`).

// Not called yet: `hz reload` and the machine's services come next (issue 11).
#[allow(dead_code)]
mod diff;
