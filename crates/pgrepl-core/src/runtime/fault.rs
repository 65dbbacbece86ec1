//! Network faults as values: what `pgrepl net` or a drill asks a runtime to do to a node's
//! network, and what status shows (read back from the runtime, never from a file). Only
//! runtimes that give each node its own network can apply them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NetFault {
    /// The node exchanges no packet, in either direction, with the nodes in `from` (empty:
    /// every other node), nor with the host (pgrepl itself, and clients) when `host`.
    Partition { from: Vec<String>, host: bool },
    /// The node exchanges no packet with the host only (pgrepl, a monitor, clients on this
    /// machine); the nodes still reach each other.
    HostPartition,
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
                let whom = match (from.is_empty(), host) {
                    (true, true) => "everyone".to_string(),
                    (true, false) => "every other node".to_string(),
                    (false, true) => format!("{} and the host", from.join(", ")),
                    (false, false) => from.join(", "),
                };
                write!(f, "partitioned from {whom}")
            }
            NetFault::HostPartition => write!(f, "partitioned from the host"),
            NetFault::Delay { delay, jitter } if jitter.is_zero() => {
                write!(f, "delay {}", humantime::format_duration(*delay))
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
        let everyone = NetFault::Partition {
            from: vec![],
            host: true,
        };
        assert_eq!(everyone.to_string(), "partitioned from everyone");
    }
}
