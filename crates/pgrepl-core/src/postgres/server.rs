//! What PostgreSQL's files say about a data directory while its server is down: the control
//! file (through pg_controldata) and the WAL segments. The server itself is started and
//! stopped by the cluster's runtime ([`crate::runtime`]).

use std::path::Path;

use crate::postgres::{timeline, Lsn};

/// What `pg_controldata` says about a data directory, readable while the server is down.
#[derive(Debug, Clone, Default)]
pub struct ControlData {
    /// `shut down`, `shut down in recovery`, `in production`, `in archive recovery`, ...
    pub state: String,
    /// initdb's identifier of the database system; every clone keeps it.
    pub system_id: Option<u64>,
    pub checkpoint_lsn: Option<Lsn>,
    pub checkpoint_timeline: Option<u32>,
    pub min_recovery_lsn: Option<Lsn>,
    pub min_recovery_timeline: Option<u32>,
    pub checksums: bool,
    pub wal_log_hints: bool,
}

impl ControlData {
    pub fn parse(text: &str) -> ControlData {
        let mut c = ControlData::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "Database cluster state" => c.state = v.to_string(),
                "Database system identifier" => c.system_id = v.parse().ok(),
                "Latest checkpoint location" => c.checkpoint_lsn = v.parse().ok(),
                "Latest checkpoint's TimeLineID" => c.checkpoint_timeline = v.parse().ok(),
                "Minimum recovery ending location" => c.min_recovery_lsn = v.parse().ok(),
                "Min recovery ending loc's timeline" => c.min_recovery_timeline = v.parse().ok(),
                "Data page checksum version" => c.checksums = v != "0",
                "wal_log_hints setting" => c.wal_log_hints = v == "on",
                _ => {}
            }
        }
        c
    }

    /// Whether the last shutdown was clean (pg_rewind needs that of its target).
    pub fn cleanly_shut_down(&self) -> bool {
        self.state == "shut down" || self.state == "shut down in recovery"
    }
}

/// The timeline of the newest WAL segment in pg_wal, readable while the server is down.
/// pg_control's checkpoint timeline can be several promotions old (a node that crashed soon
/// after becoming primary has not checkpointed on its new timeline yet).
pub fn newest_wal_timeline(data: &Path) -> Option<u32> {
    std::fs::read_dir(data.join("pg_wal"))
        .ok()?
        .flatten()
        .filter_map(|e| timeline::segment_timeline(e.file_name().to_str()?))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_controldata() {
        let c = ControlData::parse(
            "Database system identifier:           7442281797235735552\n\
             Database cluster state:               in archive recovery\n\
             Latest checkpoint location:           0/3000080\n\
             Latest checkpoint's TimeLineID:       2\n\
             Minimum recovery ending location:     0/3000100\n\
             Min recovery ending loc's timeline:   2\n\
             Data page checksum version:           1\n",
        );
        assert_eq!(c.state, "in archive recovery");
        assert_eq!(c.system_id, Some(7442281797235735552));
        assert_eq!(c.checkpoint_lsn, Some(Lsn(0x3000080)));
        assert_eq!(c.checkpoint_timeline, Some(2));
        assert!(c.checksums);
        assert!(!c.cleanly_shut_down());
    }
}
