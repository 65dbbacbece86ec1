//! What the cluster file intends, as the decision needs it, and the monitor's timing.

use serde::{Deserialize, Serialize};

use crate::spec::{ClusterSpec, SyncSpec};

/// What to do when synchronous replication would block every commit because no synchronous
/// candidate streams any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSyncLoss {
    /// Commits wait, as PostgreSQL does: no acknowledged commit can be lost.
    #[default]
    Block,
    /// Clear `synchronous_standby_names` until a synchronous candidate streams again: writes
    /// go on, and a failover in that window may lose them.
    Degrade,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIntent {
    pub name: String,
    pub application_name: String,
    pub upstream: Option<String>,
    /// The slot it streams through (the default name when the file gives none).
    pub slot: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub nodes: Vec<NodeIntent>,
    pub sync: Option<SyncSpec>,
    pub on_sync_loss: OnSyncLoss,
    /// The user's consent to promote an asynchronous standby under synchronous replication
    /// (losing the commits only the synchronous standbys had).
    pub allow_data_loss: bool,
}

impl Intent {
    pub fn from_spec(
        spec: &ClusterSpec,
        on_sync_loss: OnSyncLoss,
        allow_data_loss: bool,
    ) -> Intent {
        Intent {
            nodes: spec
                .nodes
                .iter()
                .map(|n| NodeIntent {
                    name: n.name.clone(),
                    application_name: n.application_name().to_string(),
                    upstream: n.upstream.clone(),
                    slot: n.slot_or_default(),
                })
                .collect(),
            sync: spec.sync.clone(),
            on_sync_loss,
            allow_data_loss,
        }
    }

    pub fn node(&self, name: &str) -> Option<&NodeIntent> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn app<'s>(&'s self, name: &'s str) -> &'s str {
        self.node(name)
            .map(|n| n.application_name.as_str())
            .unwrap_or(name)
    }

    pub fn by_app(&self, app: &str) -> Option<&NodeIntent> {
        self.nodes
            .iter()
            .find(|n| n.application_name.eq_ignore_ascii_case(app))
    }

    /// The node the file names as the primary.
    pub fn root(&self) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.upstream.is_none())
            .map(|n| n.name.as_str())
    }
}

/// The monitor's clock settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// How long the primary may go unheard (by the monitor and by every standby) before it is
    /// fenced. Not used when the runtime says it is gone: that is acted on at once.
    pub failover_timeout_ms: u64,
    /// How long a standby may not stream (or a slot stay orphaned) before the monitor acts.
    pub standby_grace_ms: u64,
    /// The first wait before an action on a node is tried again; it doubles up to a minute.
    pub retry_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            failover_timeout_ms: 2_000,
            standby_grace_ms: 3_000,
            retry_ms: 2_000,
        }
    }
}
