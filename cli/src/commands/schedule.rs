//! `hz schedule [fair|PROJECT]`: sets the scheduling policy, or shows it.

use super::print_json;
use crate::Outcome;
use crate::args::ScheduleArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use common::wire::Policy;
use std::io::Write;

pub(crate) async fn run(args: &ScheduleArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let wanted = args.policy.as_deref().map(parse_policy).transpose()?;
    let herzog = Herzog::connect(addr).await?;
    let policy = match wanted {
        Some(policy) => herzog.project_schedule(policy).await?,
        None => herzog.policy().await?,
    };
    if args.output.json {
        print_json(out, &policy)?;
    } else {
        writeln!(out, "{policy}")?;
    }
    Ok(Outcome::Ok)
}

/// `fair` is the fair policy; anything else names the project to prioritise.
fn parse_policy(arg: &str) -> Result<Policy, CliError> {
    if arg == "fair" {
        return Ok(Policy::Fair);
    }
    common::name::check_name(arg)?;
    Ok(Policy::Priority {
        project: arg.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_or_a_project() {
        assert_eq!(parse_policy("fair").unwrap(), Policy::Fair);
        assert_eq!(
            parse_policy("genome").unwrap(),
            Policy::Priority {
                project: "genome".into()
            }
        );
        assert_eq!(parse_policy("a/b").unwrap_err().exit_code(), 2);
    }
}
