//! What the monitor saw in one tick: the runtime's word on each node's process, and what each
//! node's PostgreSQL answered. The observer fills it; [`super::decide`] only reads it.

use serde::{Deserialize, Serialize};

use crate::observe::authority::Facts;
use crate::postgres::timeline::TimelinePath;
use crate::postgres::Lsn;

/// How a node answered: `pg_is_in_recovery()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Standby,
}

/// The runtime's word on a node's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Process {
    /// No server process (crashed, fenced, stopped, container gone): it cannot acknowledge
    /// a write. The only state in which a primary counts as confirmed dead.
    Gone,
    Running,
    /// Stopped by SIGSTOP or a paused container: alive, silent, and able to resume writing.
    Frozen,
    /// The runtime could not tell (for instance its own daemon did not answer).
    Unknown,
}

/// A standby's walreceiver (`pg_stat_wal_receiver`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receiver {
    /// The node it receives from (its sender's host and port mapped to a node name).
    pub upstream: Option<String>,
    /// `status = 'streaming'`.
    pub streaming: bool,
    /// Time since `last_msg_receipt_time`. None when unknown; an unknown age is no evidence
    /// that the upstream lives.
    pub last_msg_age_ms: Option<u64>,
}

/// One row of a primary's `pg_stat_replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downstream {
    pub application_name: String,
    /// `state = 'streaming'`.
    pub streaming: bool,
    /// async, potential, sync, quorum.
    pub sync_state: Option<String>,
    /// `flush_lsn`: what it has on disk.
    pub flush: Option<Lsn>,
}

/// A physical replication slot on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub name: String,
    pub active: bool,
}

/// One node in one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeObs {
    pub name: String,
    pub process: Process,
    /// The monitor reached its PostgreSQL and got an answer this tick.
    pub answered: bool,
    /// As it answered (`pg_is_in_recovery()`); None when it did not answer.
    pub role: Option<Role>,
    pub system_id: Option<u64>,
    /// Its timeline path: asked of a running node, read from a stopped node's pg_wal.
    pub path: Option<TimelinePath>,
    /// Where its WAL ends: a primary's current position, a standby's replay position, a
    /// cleanly stopped node's shutdown checkpoint (`observe::lineage::stopped_end`); None
    /// when unknown (a crash).
    pub end: Option<Lsn>,
    /// A standby's `pg_last_wal_receive_lsn()`.
    pub received: Option<Lsn>,
    pub replayed: Option<Lsn>,
    /// A node that is down would start as a standby (standby.signal in its data).
    pub standby_signal: bool,
    pub receiver: Option<Receiver>,
    /// A second opinion the observer may gather: whether a standby got an answer from this
    /// node's PostgreSQL (an answer, not a TCP connect: a frozen server's kernel still
    /// accepts connections). None when nobody asked.
    pub reachable_from_standbys: Option<bool>,
    /// A primary's `synchronous_standby_names` (Some("") when empty); None when not read.
    pub sync_names: Option<String>,
    /// A primary's (or a cascading standby's) `pg_stat_replication`.
    pub downstreams: Vec<Downstream>,
    pub slots: Vec<Slot>,
}

impl NodeObs {
    /// A node nobody has heard from; fill in what was seen.
    pub fn new(name: &str, process: Process) -> NodeObs {
        NodeObs {
            name: name.to_string(),
            process,
            answered: false,
            role: None,
            system_id: None,
            path: None,
            end: None,
            received: None,
            replayed: None,
            standby_signal: false,
            receiver: None,
            reachable_from_standbys: None,
            sync_names: None,
            downstreams: Vec::new(),
            slots: Vec::new(),
        }
    }

    pub fn answers_as(&self, role: Role) -> bool {
        self.answered && self.role == Some(role)
    }

    pub fn is_gone(&self) -> bool {
        self.process == Process::Gone
    }

    /// Streaming from `upstream` now.
    pub fn streams_from(&self, upstream: &str) -> bool {
        self.answers_as(Role::Standby)
            && self
                .receiver
                .as_ref()
                .is_some_and(|r| r.streaming && r.upstream.as_deref() == Some(upstream))
    }

    pub fn streams(&self) -> bool {
        self.answers_as(Role::Standby) && self.receiver.as_ref().is_some_and(|r| r.streaming)
    }

    /// What its data says, for the lineage rules of `observe::authority`.
    pub fn facts(&self) -> Facts {
        Facts {
            name: self.name.clone(),
            running: self.process != Process::Gone,
            primary: self.answers_as(Role::Primary),
            standby: self.answers_as(Role::Standby) || (self.is_gone() && self.standby_signal),
            system_id: self.system_id,
            path: self.path.clone(),
            end: self.end,
        }
    }
}

/// Everything seen in one tick. Time comes from here: the decision reads no clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Milliseconds on a monotonic clock of the observer's choice.
    pub at_ms: u64,
    /// Another pgrepl command holds the cluster's lock (a switchover, a rejoin...): the
    /// monitor leaves the cluster to it.
    pub busy: bool,
    pub nodes: Vec<NodeObs>,
}

impl Observation {
    pub fn node(&self, name: &str) -> Option<&NodeObs> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn facts(&self) -> Vec<Facts> {
        self.nodes.iter().map(NodeObs::facts).collect()
    }
}
