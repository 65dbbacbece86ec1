//! Patroni's health checks over a snapshot of the cluster: which node answers 200 to which
//! path, so that HAProxy configurations written for Patroni work unchanged.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::observe::status::{ClusterStatus, NodeStatus, Role, State};

/// What the loop publishes every tick: the status as `pgrepl status` reads it, plus the
/// monitor's own counters.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    #[serde(flatten)]
    pub status: ClusterStatus,
    /// Failovers this monitor carried out.
    pub failovers: u64,
    /// When each node was last promoted by the monitor (Unix seconds).
    pub promoted_at: BTreeMap<String, f64>,
}

impl Snapshot {
    pub fn new(status: ClusterStatus) -> Snapshot {
        Snapshot {
            status,
            failovers: 0,
            promoted_at: BTreeMap::new(),
        }
    }

    pub fn node(&self, name: &str) -> Option<&NodeStatus> {
        self.status.nodes.iter().find(|n| n.name == name)
    }
}

/// A health check, by its Patroni path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `/primary`, `/leader`, `/master`, `/read-write`.
    Primary,
    /// `/replica` (`?lag=` honoured).
    Replica,
    /// `/read-only`: the primary or a streaming standby.
    ReadOnly,
    /// `/health`: PostgreSQL runs.
    Health,
    /// `/sync`, `/synchronous`.
    Sync,
    /// `/async`, `/asynchronous`.
    Async,
    /// `/liveness`: the monitor answers.
    Liveness,
    /// `/readiness`: the primary or a streaming standby.
    Readiness,
}

impl Check {
    pub fn from_path(path: &str) -> Option<Check> {
        Some(match path.trim_end_matches('/') {
            "/primary" | "/leader" | "/master" | "/read-write" => Check::Primary,
            "/replica" => Check::Replica,
            "/read-only" => Check::ReadOnly,
            "/health" => Check::Health,
            "/sync" | "/synchronous" => Check::Sync,
            "/async" | "/asynchronous" => Check::Async,
            "/liveness" => Check::Liveness,
            "/readiness" => Check::Readiness,
            _ => return None,
        })
    }
}

fn is_primary(s: &Snapshot, n: &NodeStatus) -> bool {
    n.state == State::Running
        && n.role == Some(Role::Primary)
        && s.status.primary.as_deref() == Some(n.name.as_str())
}

/// A standby WAL flows to, as its upstream sees it (a walreceiver that only tries does not
/// count), and that has not left the primary's history.
fn streaming_standby(n: &NodeStatus) -> bool {
    n.state == State::Running && n.role == Some(Role::Standby) && n.streaming && !n.needs_rejoin
}

fn synchronous(n: &NodeStatus) -> bool {
    matches!(n.sync_state.as_deref(), Some("sync" | "quorum"))
}

/// Whether `node` passes `check`; `max_lag` is `/replica?lag=`'s limit in bytes.
pub fn passes(s: &Snapshot, node: &NodeStatus, check: Check, max_lag: Option<u64>) -> bool {
    match check {
        Check::Primary => is_primary(s, node),
        Check::Replica => {
            streaming_standby(node)
                && max_lag.is_none_or(|m| node.lag_bytes.is_some_and(|l| l <= m))
        }
        Check::ReadOnly | Check::Readiness => is_primary(s, node) || streaming_standby(node),
        Check::Health => node.state == State::Running,
        Check::Sync => streaming_standby(node) && synchronous(node),
        Check::Async => streaming_standby(node) && !synchronous(node),
        Check::Liveness => true,
    }
}

/// Parses Patroni's lag limit: a number of bytes, or with a unit B, kB, MB, GB, TB (powers
/// of 1024, as PostgreSQL's memory units).
pub fn parse_lag(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Patroni's body: `{"state": "running", "role": "primary", ...}`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeHealth<'a> {
    pub name: &'a str,
    pub cluster: &'a str,
    pub state: &'static str,
    pub role: Option<&'static str>,
    pub timeline: Option<u32>,
    pub xlog: Xlog,
    pub upstream: Option<&'a str>,
    pub sync_state: Option<&'a str>,
    pub lag_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Xlog {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed_location: Option<String>,
}

pub fn body<'a>(s: &'a Snapshot, n: &'a NodeStatus) -> NodeHealth<'a> {
    let primary = n.role == Some(Role::Primary);
    NodeHealth {
        name: &n.name,
        cluster: &s.status.cluster,
        state: match n.state {
            State::Running => "running",
            State::Stopped => "stopped",
            State::Unreachable => "unreachable",
            State::NotAnswering => "not answering",
        },
        role: n.role.map(|r| match r {
            Role::Primary => "primary",
            Role::Standby => "replica",
        }),
        timeline: n.timeline,
        xlog: Xlog {
            location: primary.then(|| n.lsn.map(|l| l.to_string())).flatten(),
            received_location: n.receive_lsn.map(|l| l.to_string()),
            replayed_location: n.replay_lsn.map(|l| l.to_string()),
        },
        upstream: n.upstream.as_deref(),
        sync_state: n.sync_state.as_deref(),
        lag_bytes: n.lag_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_limits_read_as_patroni_reads_them() {
        assert_eq!(parse_lag("1024"), Some(1024));
        assert_eq!(parse_lag("10MB"), Some(10 << 20));
        assert_eq!(parse_lag("16kB"), Some(16 << 10));
        assert_eq!(parse_lag("1GB"), Some(1 << 30));
        assert_eq!(parse_lag("5B"), Some(5));
        assert_eq!(parse_lag("ten"), None);
        assert_eq!(parse_lag("10 parsecs"), None);
    }

    #[test]
    fn paths_are_patronis() {
        for p in ["/primary", "/leader", "/master", "/read-write", "/primary/"] {
            assert_eq!(Check::from_path(p), Some(Check::Primary), "{p}");
        }
        assert_eq!(Check::from_path("/synchronous"), Some(Check::Sync));
        assert_eq!(Check::from_path("/asynchronous"), Some(Check::Async));
        assert_eq!(Check::from_path("/nope"), None);
    }
}
