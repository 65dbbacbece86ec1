//! The event log's records: each observation that led to a decision, each decision, and
//! (written by the loop) each action's outcome. Stored as JSON lines in the cluster dir.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Something the monitor saw (the primary stopped answering, a standby streams again).
    Observed,
    /// What it decided, and why.
    Decided,
    /// An action the loop carried out (PostgreSQL confirmed it).
    Done,
    /// An action that failed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub kind: EventKind,
    /// A stable name to filter on (`primary_gone`, `promote`, ...).
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The human line.
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, serde_json::Value>,
}

impl Event {
    pub fn new(
        at_ms: u64,
        kind: EventKind,
        code: &str,
        node: Option<&str>,
        message: String,
    ) -> Event {
        Event {
            at_ms,
            kind,
            code: code.to_string(),
            node: node.map(str::to_string),
            message,
            fields: BTreeMap::new(),
        }
    }

    pub fn observed(at_ms: u64, code: &str, node: Option<&str>, message: String) -> Event {
        Event::new(at_ms, EventKind::Observed, code, node, message)
    }

    pub fn decided(at_ms: u64, code: &str, node: Option<&str>, message: String) -> Event {
        Event::new(at_ms, EventKind::Decided, code, node, message)
    }

    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Event {
        self.fields.insert(key.to_string(), value.into());
        self
    }

    /// One line of the event log.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }

    pub fn from_json_line(line: &str) -> serde_json::Result<Event> {
        serde_json::from_str(line)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            EventKind::Observed => "seen",
            EventKind::Decided => "decided",
            EventKind::Done => "done",
            EventKind::Failed => "FAILED",
        };
        write!(f, "{kind:<7} {}", self.message)
    }
}
