//! Services: long-running programs herzog keeps up (the supervisor half). This module holds
//! what is pure about them: the difference between two services files (`hz reload`).

// Not called yet: the machine's services and `hz reload` come next (issue 11).
#[allow(dead_code)]
mod diff;
#[allow(dead_code)]
mod state;
