//! Shrinking a failure: the same seed with fewer steps of faults and fewer kinds of fault,
//! for as long as it still fails the same way, so its trace holds less that is beside the
//! point.

use crate::{Config, Failure};

/// A failure made smaller, with the run that gives it.
#[derive(Debug)]
pub struct Shrunk {
    pub config: Config,
    pub failure: Failure,
    /// Runs tried while shrinking.
    pub runs: u32,
}

/// What a failure is, without its numbers: two failures are the same when this matches.
fn kind(what: &str) -> String {
    let mut masked = String::new();
    for c in what.chars() {
        match c.is_ascii_digit() {
            true if masked.ends_with('#') => {}
            true => masked.push('#'),
            false => masked.push(c),
        }
    }
    masked.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}

/// Shrinks `failure` of `config`: first the steps with faults (down to the step it failed
/// at, then by halves), then each fault turned off in turn, until neither changes more.
pub fn shrink(config: &Config, failure: Failure) -> Shrunk {
    shrink_with(config, failure, crate::run)
}

/// Shrinks a failure of a herzog with a bug planted.
#[cfg(feature = "planted-bugs")]
pub fn shrink_planted(config: &Config, failure: Failure, plant: crate::Plant) -> Shrunk {
    shrink_with(config, failure, |c| crate::run_planted(c, plant))
}

fn shrink_with(config: &Config, failure: Failure, run: impl Fn(&Config) -> Result<crate::Summary, Failure>) -> Shrunk {
    let wanted = kind(&failure.what);
    let mut best = Shrunk {
        config: Config {
            faults: Some(config.faults()),
            ..config.clone()
        },
        failure,
        runs: 0,
    };
    let mut runs = 0;
    // A smaller run fails the same way, and no later.
    let mut try_run = |candidate: Config, by: u64| -> Option<Shrunk> {
        runs += 1;
        match run(&candidate) {
            Err(f) if kind(&f.what) == wanted && f.step <= by => Some(Shrunk {
                config: candidate,
                failure: f,
                runs: 0,
            }),
            _ => None,
        }
    };
    loop {
        let before = (best.config.steps, best.config.faults.clone());
        // Faults after the failing step changed nothing before it: the same run, shorter.
        if best.failure.step < best.config.steps
            && let Some(s) = try_run(
                Config {
                    steps: best.failure.step,
                    ..best.config.clone()
                },
                best.failure.step,
            )
        {
            best = s;
        }
        let (mut lo, mut hi) = (0, best.config.steps);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match try_run(
                Config {
                    steps: mid,
                    ..best.config.clone()
                },
                best.failure.step,
            ) {
                Some(s) => {
                    hi = s.config.steps;
                    best = s;
                }
                None => lo = mid + 1,
            }
        }
        let names: Vec<&'static str> = best
            .config
            .faults
            .clone()
            .unwrap_or_default()
            .rates()
            .into_iter()
            .filter(|(_, rate)| **rate > 0.0)
            .map(|(name, _)| name)
            .collect();
        for name in names {
            let mut fewer = best.config.faults.clone().unwrap_or_default();
            for (n, rate) in fewer.rates() {
                if n == name {
                    *rate = 0.0;
                }
            }
            if let Some(s) = try_run(
                Config {
                    faults: Some(fewer),
                    ..best.config.clone()
                },
                best.failure.step,
            ) {
                best = s;
            }
        }
        if (best.config.steps, best.config.faults.clone()) == before {
            best.runs = runs;
            return best;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kind;

    #[test]
    fn a_failure_is_known_by_its_words_not_its_numbers() {
        assert_eq!(
            kind("the store records 65 failed, but no worker ran it"),
            kind("the store records 7 failed, but no worker ran it")
        );
        assert_ne!(kind("work left undone: w0 has"), kind("the store records 65 failed"));
    }
}
