//! Services on this host: long-running programs kept up by kinski itself (a crash is
//! restarted here, without a round trip to herzog).

// Not called yet: the runner that spawns instances comes next (issue 11).
#[allow(dead_code)]
pub(crate) mod policy;
