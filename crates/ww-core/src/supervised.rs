//! `Supervised`: a `JoinSet` that remembers what each task was doing, so
//! the owner can clean up after a task that panicked (clear its in-flight
//! flags, reschedule its work) instead of leaving them set for ever.
//!
//! ```
//! # async fn sketch() {
//! use ww_core::supervised::{Supervised, Joined};
//! let mut tasks: Supervised<&'static str, u32> = Supervised::default();
//! tasks.spawn("answer", async { 42 });
//! tasks.spawn("broken", async { panic!("boom") });
//! let mut panicked = Vec::new();
//! while let Some(joined) = tasks.join_next().await {
//!     if let Joined::Panicked { what, .. } = joined {
//!         panicked.push(what);
//!     }
//! }
//! assert_eq!(panicked, vec!["broken"]);
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};

/// The counter of supervised tasks that panicked, by `task` (their owners
/// count each panic they recover from; the daemon's catalog documents it).
pub const TASK_PANICS_TOTAL: &str = "ww_task_panics_total";

/// How a supervised task ended.
#[derive(Debug)]
pub enum Joined<K, T> {
    /// It returned its output.
    Done(T),
    /// It panicked (or was aborted); `what` says what it was doing.
    Panicked {
        /// The description it was spawned with.
        what: K,
        /// The panic, as text.
        error: String,
    },
}

/// Tasks with a description each.
#[derive(Debug)]
pub struct Supervised<K, T> {
    tasks: JoinSet<T>,
    running: HashMap<Id, K>,
}

impl<K, T> Default for Supervised<K, T> {
    fn default() -> Self {
        Self { tasks: JoinSet::new(), running: HashMap::new() }
    }
}

impl<K, T: Send + 'static> Supervised<K, T> {
    /// Spawns `task`, described by `what`.
    pub fn spawn(&mut self, what: K, task: impl Future<Output = T> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.running.insert(handle.id(), what);
    }

    /// Waits for the next task to end; `None` when none is running.
    pub async fn join_next(&mut self) -> Option<Joined<K, T>> {
        loop {
            match self.tasks.join_next_with_id().await? {
                Ok((id, output)) => {
                    self.running.remove(&id);
                    return Some(Joined::Done(output));
                }
                Err(error) => {
                    let Some(what) = self.running.remove(&error.id()) else { continue };
                    return Some(Joined::Panicked { what, error: error.to_string() });
                }
            }
        }
    }

    /// Returns how many tasks are running.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Returns true when no task is running.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Aborts every task.
    pub fn abort_all(&mut self) {
        self.tasks.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue #12, losses 8): a panicked pipeline task left its
    /// in-flight flags set for ever, because the panic lost what the task
    /// was doing. The supervisor returns it.
    #[tokio::test]
    async fn a_panicked_task_is_reported_with_what_it_was_doing() {
        let mut tasks: Supervised<String, u32> = Supervised::default();
        tasks.spawn("fetch a".into(), async { 1 });
        tasks.spawn("walk b".into(), async { panic!("decoder bug") });
        tasks.spawn("fetch c".into(), async { 3 });
        let mut done = Vec::new();
        let mut panicked = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Joined::Done(value) => done.push(value),
                Joined::Panicked { what, error } => {
                    assert!(error.contains("panic"), "{error}");
                    panicked.push(what);
                }
            }
        }
        done.sort_unstable();
        assert_eq!(done, vec![1, 3]);
        assert_eq!(panicked, vec!["walk b".to_string()]);
        assert!(tasks.is_empty());
    }
}
