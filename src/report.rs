//! `--json` of the commands that change something: one object with what was done and its
//! figures, the same shape for every command so that a script or CI reads them alike:
//!
//! ```json
//! {"command": "start", "changed": true, "message": "pg1 started and streaming",
//!  "warnings": [], "notes": [], "took_ms": 812,
//!  "nodes": [{"node": "pg1", "outcome": "started", "changed": true, "state": "running",
//!             "role": "standby", "streaming": true, "timeline": 1, "took_ms": 790, ...}],
//!  ...the command's own figures (a timeline, the WAL a rejoin discarded), at the top level}
//! ```
//!
//! `nodes` lists the nodes the command acted on, each as PostgreSQL shows it afterwards.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use pgrepl_core::observe::status::{ClusterStatus, NodeStatus, Role};
use pgrepl_core::ops::Outcome;
use pgrepl_core::postgres::Lsn;
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Serialize)]
pub struct CommandReport {
    /// The command as typed after `pgrepl` (`start`, `sync enable`).
    pub command: String,
    /// Whether the cluster changed; false when everything already was as asked.
    pub changed: bool,
    /// What a person would have read.
    pub message: String,
    pub warnings: Vec<String>,
    /// How the request was read, and what else is worth knowing.
    pub notes: Vec<String>,
    pub nodes: Vec<NodeReport>,
    pub took_ms: u64,
    /// The command's own figures.
    #[serde(flatten)]
    pub figures: Map<String, Value>,
}

#[derive(Debug, Default, Serialize)]
pub struct NodeReport {
    pub node: String,
    /// What the command did to it, in a word or two: `started`, `already running`, `stopped`,
    /// `killed`, `created`, `unchanged`, ...
    pub outcome: String,
    pub changed: bool,
    /// As PostgreSQL shows the node afterwards.
    pub state: Option<String>,
    pub role: Option<Role>,
    /// For a standby: its upstream's pg_stat_replication shows it streaming.
    pub streaming: Option<bool>,
    pub timeline: Option<u32>,
    pub lsn: Option<Lsn>,
    pub upstream: Option<String>,
    pub took_ms: Option<u64>,
    pub message: Option<String>,
    /// Figures of this node only (a sync state, a priority).
    #[serde(flatten)]
    pub figures: Map<String, Value>,
}

impl CommandReport {
    pub fn new(command: &str, started: Instant) -> Self {
        CommandReport {
            command: command.to_string(),
            changed: false,
            message: String::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
            nodes: Vec::new(),
            took_ms: millis(started),
            figures: Map::new(),
        }
    }

    /// Adds a figure of the command (serialized to JSON).
    pub fn figure(mut self, key: &str, value: impl Serialize) -> Self {
        self.figures.insert(
            key.to_string(),
            serde_json::to_value(value).expect("figures serialize"),
        );
        self
    }

    pub fn print(&self) -> Result<ExitCode> {
        println!("{}", serde_json::to_string_pretty(self)?);
        Ok(ExitCode::SUCCESS)
    }
}

impl NodeReport {
    /// A node an operation acted on, with how `status` (taken afterwards) shows it.
    pub fn acted_on(
        node: &str,
        outcome: &Outcome,
        word: &str,
        status: &ClusterStatus,
        took_ms: Option<u64>,
    ) -> Self {
        let mut r = NodeReport {
            node: node.to_string(),
            outcome: word.to_string(),
            changed: outcome.changed(),
            took_ms,
            message: Some(outcome.message().to_string()),
            ..NodeReport::default()
        };
        if let Some(n) = status.nodes.iter().find(|n| n.name == node) {
            r.observed(n);
        }
        r
    }

    /// Fills in what PostgreSQL shows of the node.
    pub fn observed(&mut self, n: &NodeStatus) {
        self.state = serde_json::to_value(n.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        self.role = n.role;
        self.streaming = (n.role == Some(Role::Standby)).then_some(n.streaming);
        self.timeline = n.timeline;
        self.lsn = n.lsn;
        self.upstream = n.upstream.clone();
    }
}

pub fn millis(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_scripts_rely_on() {
        let mut r = CommandReport::new("stop", Instant::now()).figure("timeline", 2);
        r.changed = true;
        r.nodes.push(NodeReport {
            node: "pg1".into(),
            outcome: "stopped".into(),
            changed: true,
            ..NodeReport::default()
        });
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "command", "changed", "message", "warnings", "notes", "nodes", "took_ms", "timeline",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
        assert_eq!(v["nodes"][0]["outcome"], "stopped");
        assert_eq!(v["nodes"][0]["role"], Value::Null);
    }
}
