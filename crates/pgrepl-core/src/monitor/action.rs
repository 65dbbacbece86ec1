//! What the decision asks the loop to do. The loop carries the actions of one tick out in
//! order, and observes again once they finished (or failed): their results come back as
//! observations, never as return values.

use serde::Serialize;

use super::event::Event;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Make sure the node cannot acknowledge a write any more: stop it through the runtime,
    /// and kill it when the stop does not finish quickly; a frozen node is killed, not
    /// thawed. Done when the runtime says it is gone.
    Fence { node: String },
    /// `pg_promote(wait => true)`; the cluster file records it as the primary.
    Promote { node: String, reason: String },
    /// Start the old primary again in place (crash recovery): no standby can take over
    /// without losing commits, and nothing superseded its data.
    StartPrimary { node: String },
    /// Make the node stream from `upstream`: recorded in the cluster file; a running standby
    /// takes it with a reload, a stopped one gets its settings and is started
    /// (`ops::follow::repoint`).
    Repoint { node: String, upstream: String },
    /// Make the node a standby of `upstream` again: pg_rewind, or a re-clone when a rewind
    /// cannot work (the old directory kept), as `pgrepl rejoin` does; report the WAL it
    /// discarded.
    Rejoin { node: String, upstream: String },
    /// (Re)start a standby as it is configured: it stopped streaming, or its process died.
    RestartStandby { node: String },
    /// Drop an inactive replication slot that no standby of the cluster file streams
    /// through from this node: it would pin WAL forever.
    DropSlot { node: String, slot: String },
    /// Set the file's `[sync]` on the primary (`ops::sync::apply_to_primary`; without `[sync]`
    /// it clears the setting).
    ApplySync { primary: String },
    /// Clear `synchronous_standby_names` on the primary (the file's `[sync]` stays, so that
    /// ApplySync restores it once a synchronous candidate streams again).
    DegradeSync { primary: String },
    /// Append to the event log.
    Log(Event),
}

impl Action {
    /// The node the action works on (the primary for the sync actions).
    pub fn node(&self) -> Option<&str> {
        match self {
            Action::Fence { node }
            | Action::Promote { node, .. }
            | Action::StartPrimary { node }
            | Action::Repoint { node, .. }
            | Action::Rejoin { node, .. }
            | Action::RestartStandby { node }
            | Action::DropSlot { node, .. } => Some(node),
            Action::ApplySync { primary } | Action::DegradeSync { primary } => Some(primary),
            Action::Log(e) => e.node.as_deref(),
        }
    }

    /// A short stable name (`fence`, `promote`, ...), for event codes and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Action::Fence { .. } => "fence",
            Action::Promote { .. } => "promote",
            Action::StartPrimary { .. } => "start_primary",
            Action::Repoint { .. } => "repoint",
            Action::Rejoin { .. } => "rejoin",
            Action::RestartStandby { .. } => "restart_standby",
            Action::DropSlot { .. } => "drop_slot",
            Action::ApplySync { .. } => "apply_sync",
            Action::DegradeSync { .. } => "degrade_sync",
            Action::Log(_) => "log",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Action::Fence { node } => format!("fence {node}"),
            Action::Promote { node, reason } => format!("promote {node}: {reason}"),
            Action::StartPrimary { node } => format!("start {node} again as the primary"),
            Action::Repoint { node, upstream } => format!("point {node} at {upstream}"),
            Action::Rejoin { node, upstream } => {
                format!("rejoin {node} as a standby of {upstream}")
            }
            Action::RestartStandby { node } => format!("restart the standby {node}"),
            Action::DropSlot { node, slot } => format!("drop the slot {slot} on {node}"),
            Action::ApplySync { primary } => {
                format!("apply the cluster file's synchronous replication on {primary}")
            }
            Action::DegradeSync { primary } => {
                format!("clear synchronous_standby_names on {primary}")
            }
            Action::Log(e) => e.message.clone(),
        }
    }
}
