//! One module per `hz` subcommand.

pub(crate) mod action;
pub(crate) mod active;
pub(crate) mod chunks;
pub(crate) mod control;
pub(crate) mod controls;
pub(crate) mod docs;
pub(crate) mod events;
pub(crate) mod follow;
pub(crate) mod fragments;
pub(crate) mod joblog;
pub(crate) mod list;
pub(crate) mod local;
pub(crate) mod logs;
pub(crate) mod named;
pub(crate) mod progress;
pub(crate) mod reload;
pub(crate) mod remove;
pub(crate) mod report;
pub(crate) mod retry;
pub(crate) mod run;
pub(crate) mod schedule;
pub(crate) mod shares;
pub(crate) mod shutdown;
pub(crate) mod status;
pub(crate) mod tail;
pub(crate) mod workers;

use crate::error::CliError;
use std::io::Write;

/// Prints a value as pretty JSON with a trailing newline.
pub(crate) fn print_json<T: serde::Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")?;
    Ok(())
}
