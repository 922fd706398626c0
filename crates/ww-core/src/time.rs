//! Wall-clock instants as milliseconds since the Unix epoch.
//!
//! Stored and serialized as plain integers so the JSON form is stable and
//! language-neutral. Reading the clock is IO, so this crate never does it:
//! callers pass `UnixMillis` in.

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// Returns this instant moved forward by `millis` (saturating).
    #[must_use]
    pub fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }
}
