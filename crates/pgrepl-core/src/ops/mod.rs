//! Operations that change a cluster. Each checks its preconditions before touching anything,
//! waits for the real outcome (a standby is up when it streams), and says when there was
//! nothing to do.

pub mod config;
pub mod control;
pub mod failover;
pub mod follow;
pub mod guard;
pub mod journal;
pub mod load;
pub mod net;
pub mod primary;
pub mod promote;
pub mod rejoin;
pub mod slots;
pub mod sql;
pub mod standby;
pub mod switchover;
pub mod sync;
pub mod up;
pub mod wait;

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It changed the cluster; the message says how.
    Done(String),
    /// The cluster already was as asked; nothing changed.
    AlreadyDone(String),
}

impl Outcome {
    pub fn message(&self) -> &str {
        match self {
            Outcome::Done(m) | Outcome::AlreadyDone(m) => m,
        }
    }
    pub fn changed(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }
}
