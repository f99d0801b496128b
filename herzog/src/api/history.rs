//! `hz fragments P FRAG`, `hz fragments P --json|--worker|--since` and `hz logs --attempt`:
//! attempt histories, read from the record on a blocking thread.

use super::{Api, MAX_PAGE, blocking, read_logs, storage};
use crate::store::Reader;
use common::history::{FragmentQuery, LogsQuery};
use common::wire::{FragmentInfo, Logs, Page};
use common::{ApiError, AttemptId};

/// The most fragments in one page with their attempts: each attempt carries its command line.
const MAX_PAGE_WITH_ATTEMPTS: u32 = 1_000;

pub(super) async fn fragments(
    api: &Api,
    project: String,
    query: FragmentQuery,
) -> Result<Page<FragmentInfo>, ApiError> {
    let db = api.db.clone();
    let mut query = query;
    let cap = if query.attempts {
        MAX_PAGE_WITH_ATTEMPTS
    } else {
        MAX_PAGE
    };
    query.limit = query.limit.clamp(1, cap);
    blocking(move || {
        let reader = Reader::open(&db).map_err(storage)?;
        let record = reader
            .project(&project)
            .map_err(storage)?
            .ok_or_else(|| ApiError::UnknownProject { name: project.clone() })?;
        if let Some(key) = &query.fragment
            && reader.find_fragment(record.id, key).map_err(storage)?.is_none()
        {
            return Err(ApiError::UnknownFragment {
                project,
                fragment: key.clone(),
            });
        }
        reader.fragments_query(&record, &query).map_err(storage)
    })
    .await
}

pub(super) async fn logs(api: &Api, query: LogsQuery) -> Result<Logs, ApiError> {
    let db = api.db.clone();
    let results_root = api.results_root.clone();
    let max = query.max_bytes.clamp(1, 4 * 1024 * 1024);
    let max_log_bytes = api.max_log_bytes;
    blocking(move || {
        let LogsQuery {
            project,
            fragment,
            attempt,
            ..
        } = query;
        let reader = Reader::open(&db).map_err(storage)?;
        let record = reader
            .project(&project)
            .map_err(storage)?
            .ok_or_else(|| ApiError::UnknownProject { name: project.clone() })?;
        let found = reader
            .find_fragment(record.id, &fragment)
            .map_err(storage)?
            .ok_or_else(|| ApiError::UnknownFragment {
                project: project.clone(),
                fragment: fragment.clone(),
            })?;
        let chosen = match attempt {
            None => found.attempt,
            Some(wanted) => {
                let ids = reader.attempt_ids(found.id).map_err(storage)?;
                if !ids.contains(&wanted) {
                    return Err(ApiError::NoSuchAttempt {
                        project,
                        fragment,
                        attempt: wanted,
                        known: known(&ids),
                    });
                }
                Some(wanted)
            }
        };
        let Some(chosen) = chosen else {
            return Ok(Logs {
                attempt: None,
                stdout_path: None,
                stderr_path: None,
                stdout: String::new(),
                stderr: String::new(),
                truncated: false,
                cut: Vec::new(),
                never_ran: None,
            });
        };
        let mut logs = read_logs(&results_root.join(&project), &found.name, chosen, max, max_log_bytes);
        if found.attempt == Some(chosen) {
            logs.never_ran = found.never_ran;
        }
        Ok(logs)
    })
    .await
}

/// `1, 5 and 9`, or `none yet`.
fn known(ids: &[AttemptId]) -> String {
    let words: Vec<String> = ids.iter().map(ToString::to_string).collect();
    match words.as_slice() {
        [] => "none yet".into(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_lists_read_as_english() {
        assert_eq!(known(&[]), "none yet");
        assert_eq!(known(&[AttemptId(4)]), "4");
        assert_eq!(known(&[AttemptId(1), AttemptId(5), AttemptId(9)]), "1, 5 and 9");
    }
}
