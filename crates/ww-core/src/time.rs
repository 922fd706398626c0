//! Wall-clock instants as milliseconds since the Unix epoch.
//!
//! Stored and serialized as plain integers so the JSON form is stable and
//! language-neutral. The rest of this crate never reads the clock: its
//! functions take `UnixMillis` in, so they are deterministic under test;
//! [`now`] is the one place the process reads it.

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

/// Reads the wall clock.
pub fn now() -> UnixMillis {
    UnixMillis::from(std::time::SystemTime::now())
}
