//! Whether a node can stream from a server on a newer timeline, or has diverged from it: the
//! node's end of WAL compared with the fork point in the server's timeline history.

use crate::postgres::conn::Conn;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::observe::topology::Probe;
use crate::postgres::timeline::{self, Lineage, TimelinePath};
use crate::postgres::{queries, Lsn};

/// Where a node's WAL ends, and on which timeline path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEnd {
    pub path: TimelinePath,
    pub end: Lsn,
}

impl WalEnd {
    pub fn tli(&self) -> u32 {
        self.path.tli
    }
}

/// A server's timeline and its history: what other nodes are compared with.
#[derive(Debug, Clone)]
pub struct History {
    pub node: String,
    pub path: TimelinePath,
}

impl History {
    pub async fn read(c: &Conn, node: &str) -> Result<History> {
        let pos = queries::position(c).await?;
        let tli = pos
            .timeline
            .ok_or_else(|| Error::Precondition(format!("{node} does not report its timeline")))?;
        Ok(History {
            node: node.to_string(),
            path: TimelinePath::new(tli, timeline::read_history(c, tli).await?),
        })
    }

    pub fn tli(&self) -> u32 {
        self.path.tli
    }

    pub fn lineage(&self, end: &WalEnd) -> Lineage {
        timeline::lineage(&self.path, &end.path, end.end)
    }
}

/// Where a running node's WAL ends. A standby is compared by its replay position: that is
/// what PostgreSQL itself checks before following a new timeline (WAL received past it but
/// not replayed is read from the new timeline's segments instead).
pub async fn running_end(c: &Conn) -> Result<Option<WalEnd>> {
    let pos = queries::position(c).await?;
    let end = if pos.in_recovery {
        pos.replay_lsn
    } else {
        pos.current_lsn
    };
    let (Some(tli), Some(end)) = (pos.timeline, end) else {
        return Ok(None);
    };
    Ok(Some(WalEnd {
        path: TimelinePath::new(tli, timeline::read_history(c, tli).await?),
        end,
    }))
}

/// Where a stopped node's WAL ends, from its control file and the timeline history in its
/// pg_wal; None after a crash (its WAL goes on past the last checkpoint, and crash recovery
/// writes more).
pub fn stopped_end(probe: &Probe) -> Option<WalEnd> {
    let c = probe.control.as_ref()?;
    let ckpt = c.checkpoint_lsn?;
    let ckpt_tli = c.checkpoint_timeline?;
    // A clean shutdown ends with its checkpoint record, which starts at `ckpt`: one byte
    // into it is already past a fork point equal to `ckpt`.
    let past_ckpt = Lsn(ckpt.0 + 1);
    let (tli, end) = match c.state.as_str() {
        "shut down" => (ckpt_tli, past_ckpt),
        "shut down in recovery" => (
            ckpt_tli.max(c.min_recovery_timeline.unwrap_or(0)),
            past_ckpt.max(c.min_recovery_lsn.unwrap_or_default()),
        ),
        _ => return None,
    };
    // The history on disk may name a newer timeline than the WAL reached (a standby fetches
    // the history file before it replays into the new timeline): cut the path at `tli`.
    let path = match &probe.path {
        Some(p) if p.tli == tli => p.clone(),
        Some(p) if p.tli > tli => TimelinePath::new(
            tli,
            p.history.iter().filter(|e| e.tli < tli).cloned().collect(),
        ),
        _ if tli == 1 => TimelinePath::new(1, Vec::new()),
        _ => return None,
    };
    Some(WalEnd { path, end })
}

/// A one-line explanation of why `node` cannot follow `history.node`, or None if it can.
pub fn cannot_follow(node: &str, history: &History, end: &WalEnd) -> Option<String> {
    let up = &history.node;
    match history.lineage(end) {
        Lineage::Follows { .. } => None,
        Lineage::Diverged { fork, past_by } => Some(format!(
            "{node} has diverged from {up}: it has {past_by} bytes of WAL on timeline {} past {fork}, where {up}'s history (timeline {}) parted from it; rejoin it with `pgrepl rejoin {node} --upstream {up}` (pg_rewind discards that WAL)",
            end.tli(), history.tli()
        )),
        Lineage::Ahead => Some(format!(
            "{node} is on timeline {}, newer than {up}'s timeline {}: {up} is the stale one; follow a node on the newest timeline",
            end.tli(), history.tli()
        )),
        Lineage::Unrelated => Some(format!(
            "{node}'s timeline {} is not in {up}'s history: they are unrelated; re-clone it with `pgrepl rejoin {node} --upstream {up} --reclone`",
            end.tli()
        )),
    }
}

/// The history of the node `name`, read over a new superuser connection.
pub async fn history_of(cluster: &Cluster, name: &str) -> Result<History> {
    let c = cluster.connect(name).await?;
    History::read(&c, name).await
}
