//! Typed ids, so a fragment id can never be passed where an attempt id is meant.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id!(
    /// A project, assigned by herzog when it is added.
    ProjectId
);
id!(
    /// A fragment, unique across every project, stable for the project's life.
    FragmentId
);
id!(
    /// One run of a fragment on one worker: the fence every start and completion carries.
    AttemptId
);
