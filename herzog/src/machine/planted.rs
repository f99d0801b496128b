//! Known bugs planted in the machine for the simulator to show it finds them (the
//! `planted-bugs` feature, which nothing shipped is built with).

use common::{AttemptId, ProjectId};
use std::collections::BTreeMap;

/// A known bug to plant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// Replies and effects released before the batch's commit.
    ReleaseBeforeCommit,
    /// A completion for an attempt that already ended is taken as its fragment's, whatever
    /// attempt the fragment runs now: the fence (the attempt id) is not checked.
    CompletionUnfenced,
    /// A fragment started again gets the id of its last attempt instead of a new one.
    RequeueSameAttempt,
}

/// The plant, and what the planted bugs need to remember that the machine itself forgets.
#[derive(Debug, Default)]
pub(crate) struct Planted {
    pub(crate) plant: Option<Plant>,
    /// Every ended attempt's fragment.
    ended: BTreeMap<AttemptId, (ProjectId, u32)>,
    /// Each fragment's last attempt.
    last: BTreeMap<(ProjectId, u32), AttemptId>,
}

impl Planted {
    pub(crate) fn ended(&mut self, attempt: AttemptId, project: ProjectId, index: u32) {
        if self.plant.is_some() {
            self.ended.insert(attempt, (project, index));
        }
    }

    /// The fragment an ended attempt was for, where the unfenced completion is planted.
    pub(crate) fn unfenced(&self, attempt: AttemptId) -> Option<(ProjectId, u32)> {
        (self.plant == Some(Plant::CompletionUnfenced))
            .then(|| self.ended.get(&attempt).copied())
            .flatten()
    }

    /// The id the fragment's new attempt gets: `fresh`, or its last one where that bug is
    /// planted.
    pub(crate) fn attempt_for(&mut self, project: ProjectId, index: u32, fresh: AttemptId) -> AttemptId {
        if self.plant.is_none() {
            return fresh;
        }
        let last = self.last.entry((project, index)).or_insert(fresh);
        if self.plant == Some(Plant::RequeueSameAttempt) {
            *last
        } else {
            *last = fresh;
            fresh
        }
    }
}
