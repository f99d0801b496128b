//! `hz report P`: a project's usage, read from the record on a blocking thread with its own
//! reader connection, so neither the loop nor the writer waits for it.

use super::{Api, blocking, storage};
use crate::store::Reader;
use common::ApiError;
use common::report::Report;

pub(super) async fn report(api: &Api, project: String) -> Result<Report, ApiError> {
    let db = api.db.clone();
    blocking(move || {
        let reader = Reader::open(&db).map_err(storage)?;
        reader
            .report(&project)
            .map_err(storage)?
            .ok_or(ApiError::UnknownProject { name: project })
    })
    .await
}
