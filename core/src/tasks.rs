//! The daemons' background tasks, supervised: a task that ends (returns, fails or panics) before
//! shutdown is a failure of the daemon, which then stops with a non-zero exit so that systemd
//! (`Restart=on-failure`) starts it again. Nothing runs on silently with a part of it dead.

use std::collections::HashMap;
use std::fmt::Display;
use tokio::task::{Id, JoinSet};

/// Why a supervised task ended before shutdown.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskEnded {
    #[error("the {0} task stopped unexpectedly")]
    Returned(&'static str),
    #[error("the {task} task failed: {error}")]
    Failed { task: &'static str, error: String },
    #[error("the {0} task panicked")]
    Panicked(&'static str),
}

/// What a task's future gives back: nothing, or a result whose error is reported.
pub trait Outcome: Send + 'static {
    /// The error, if it failed.
    fn failure(self) -> Option<String>;
}

impl Outcome for () {
    fn failure(self) -> Option<String> {
        None
    }
}

impl<E: Display + Send + 'static> Outcome for Result<(), E> {
    fn failure(self) -> Option<String> {
        self.err().map(|e| format!("{e:#}"))
    }
}

/// A set of named background tasks.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<Option<String>>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    /// Runs `task` in the background under `name`.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Outcome,
    {
        let handle = self.set.spawn(async move { task.await.failure() });
        self.names.insert(handle.id(), name);
    }

    /// Waits for the first task to end and says why; pending forever when there are none.
    /// Before shutdown, any end is a failure.
    pub async fn ended(&mut self) -> TaskEnded {
        let Some(joined) = self.set.join_next_with_id().await else {
            return std::future::pending().await;
        };
        match joined {
            Ok((id, None)) => TaskEnded::Returned(self.name(id)),
            Ok((id, Some(error))) => TaskEnded::Failed {
                task: self.name(id),
                error,
            },
            Err(e) if e.is_panic() => TaskEnded::Panicked(self.name(e.id())),
            Err(e) => TaskEnded::Returned(self.name(e.id())),
        }
    }

    /// After shutdown: waits for every task to finish, logging any that failed on the way out.
    pub async fn join(mut self) {
        while let Some(joined) = self.set.join_next_with_id().await {
            match joined {
                Ok((id, Some(error))) => {
                    tracing::warn!(task = self.name(id), %error, "task failed while stopping");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(task = self.name(e.id()), error = %e,
                    "task did not stop cleanly"),
            }
        }
    }

    fn name(&self, id: Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("unnamed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_fails_or_panics_is_reported_by_name() {
        let mut tasks = Tasks::default();
        tasks.spawn("forever", std::future::pending::<()>());
        tasks.spawn("ingest", async { Err::<(), _>("consumer deleted") });
        assert_eq!(
            tasks.ended().await,
            TaskEnded::Failed {
                task: "ingest",
                error: "consumer deleted".into()
            }
        );
        tasks.spawn("http", async {});
        assert_eq!(tasks.ended().await, TaskEnded::Returned("http"));
        tasks.spawn("serve", async {
            if true {
                panic!("boom");
            }
        });
        assert_eq!(tasks.ended().await, TaskEnded::Panicked("serve"));
    }
}
