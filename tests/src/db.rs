//! herzog's database rows as the tests read them.

/// One fragment as herzog's database holds it.
#[derive(Clone, Debug)]
pub struct DbFragment {
    pub id: i64,
    pub index: i64,
    pub name: String,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub state: String,
    /// How many attempts count toward `max_attempts`.
    pub attempt_count: i64,
    /// The running, accepted or failing attempt.
    pub attempt_id: Option<i64>,
    /// Every attempt, by id.
    pub attempts: Vec<DbAttempt>,
}

/// One attempt as herzog's database holds it.
#[derive(Clone, Debug)]
pub struct DbAttempt {
    pub id: i64,
    pub worker: String,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    /// `running`, `succeeded`, `failed`, `lost`, `stopped` (or `late`).
    pub outcome: String,
    pub ended_at: Option<i64>,
    pub exit_kind: Option<String>,
    pub exit_value: Option<i64>,
    /// The exit of a completion that arrived after the attempt had ended (lost or stopped).
    pub late_exit: Option<String>,
    pub note: Option<String>,
    /// The program's wall time, when a completion was stored.
    pub wall_ms: Option<i64>,
}
