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

impl From<std::time::SystemTime> for UnixMillis {
    /// Converts a wall-clock instant (reading the clock is the caller's IO);
    /// instants before 1970 become 0.
    fn from(time: std::time::SystemTime) -> Self {
        let elapsed = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
    }
}

impl UnixMillis {
    /// Returns this instant moved forward by `millis` (saturating).
    #[must_use]
    pub fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }
}
