//! Network faults as values: what a drill or `pgrepl fault` asks a runtime to do to a node's
//! network, and what status shows. Only runtimes that give each node its own network can
//! apply them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NetFault {
    /// The node cannot exchange packets with `from` (node names); an empty `from` cuts it off
    /// from everyone, the host included. `host` also cuts it off from the host (pgrepl itself).
    Partition { from: Vec<String>, host: bool },
    /// Every packet the node sends waits `delay` ± `jitter`.
    Delay {
        #[serde(with = "duration_text")]
        delay: Duration,
        #[serde(with = "duration_text")]
        jitter: Duration,
    },
    /// The node drops this share of the packets it sends.
    Loss { percent: f32 },
}

impl fmt::Display for NetFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetFault::Partition { from, host } => {
                let mut whom = if from.is_empty() {
                    "everyone".to_string()
                } else {
                    from.join(", ")
                };
                if *host && !from.is_empty() {
                    whom += " and the host";
                }
                write!(f, "partitioned from {whom}")
            }
            NetFault::Delay { delay, jitter } => write!(
                f,
                "delay {} ± {}",
                humantime::format_duration(*delay),
                humantime::format_duration(*jitter)
            ),
            NetFault::Loss { percent } => write!(f, "loss {percent}%"),
        }
    }
}

/// Durations as humantime text ("150ms") in the serialized form: status and files read well.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_round_trip_through_json() {
        let faults = vec![
            NetFault::Partition {
                from: vec!["pg1".into()],
                host: false,
            },
            NetFault::Delay {
                delay: Duration::from_millis(150),
                jitter: Duration::from_millis(20),
            },
            NetFault::Loss { percent: 2.5 },
        ];
        let json = serde_json::to_string(&faults).unwrap();
        assert!(json.contains("\"150ms\""), "{json}");
        let back: Vec<NetFault> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, faults);
        assert_eq!(faults[0].to_string(), "partitioned from pg1");
    }
}
