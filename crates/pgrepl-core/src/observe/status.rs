//! `pgrepl status` (the lab's 06_check_replication.sql): one row per node, everything read
//! from PostgreSQL.

use serde::Serialize;

use crate::cluster::Cluster;
use crate::observe::lineage::{self, History, WalEnd};
use crate::observe::topology::{self, Probe};
use crate::postgres::timeline::Lineage;
use crate::postgres::Lsn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Stopped,
    /// The postmaster runs but refuses us (starting up, shutting down, or a login error).
    Unreachable,
    /// The postmaster runs but does not answer in time: frozen, or overloaded.
    #[serde(rename = "not answering")]
    NotAnswering,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Standby,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub state: State,
    pub role: Option<Role>,
    pub timeline: Option<u32>,
    /// Current WAL position for a primary, replay position for a standby, last checkpoint
    /// for a stopped node.
    pub lsn: Option<Lsn>,
    pub receive_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// The node this one streams from now (read from its walreceiver).
    pub upstream: Option<String>,
    pub slot: Option<String>,
    pub application_name: String,
    /// As the upstream's pg_stat_replication says: async, potential, sync, quorum.
    pub sync_state: Option<String>,
    pub sync_priority: Option<i32>,
    /// WAL the current primary has written that this node has not replayed.
    pub lag_bytes: Option<u64>,
    pub write_lag_ms: Option<f64>,
    pub flush_lag_ms: Option<f64>,
    pub replay_lag_ms: Option<f64>,
    /// Diverged from the current primary's history: only `pgrepl rejoin` brings it back.
    pub needs_rejoin: bool,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncStatus {
    pub standby_names: String,
    pub commit: String,
    /// Whether enough synchronous standbys are connected for commits to complete.
    pub satisfied: bool,
    /// Application names of the standbys that confirm commits now (sync or quorum).
    pub sync_standbys: Vec<String>,
    pub waiting_sessions: i64,
    pub oldest_wait_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub primary: Option<String>,
    pub split_brain: bool,
    pub sync: Option<SyncStatus>,
    pub warnings: Vec<String>,
    pub nodes: Vec<NodeStatus>,
}

pub async fn status(cluster: &Cluster) -> ClusterStatus {
    let probes = topology::probe_all(cluster).await;
    // The primary's timeline history tells a node that can still follow it from one that
    // has gone past the fork point.
    let history = match topology::pick_primary(cluster, &probes) {
        Some(p) if p.timeline().unwrap_or(1) > 1 => {
            lineage::history_of(cluster, &p.name).await.ok()
        }
        _ => None,
    };
    build(cluster, &probes, history.as_ref())
}

fn build(cluster: &Cluster, probes: &[Probe], history: Option<&History>) -> ClusterStatus {
    let primary = topology::pick_primary(cluster, probes);
    let primaries: Vec<&str> = probes
        .iter()
        .filter(|p| p.is_primary())
        .map(|p| p.name.as_str())
        .collect();
    let split_brain = primaries.len() > 1;
    let mut warnings = Vec::new();
    if split_brain {
        warnings.push(format!(
            "SPLIT BRAIN: {} {} accepting writes as primaries; clients may write to either and those writes will conflict. Keep {} and rejoin the others (`pgrepl rejoin NODE --upstream {}`): their diverging writes will be discarded.",
            primaries.join(" and "),
            if primaries.len() == 2 { "are both" } else { "are all" },
            primary.map(|p| p.name.as_str()).unwrap_or("?"),
            primary.map(|p| p.name.as_str()).unwrap_or("?"),
        ));
    } else if primaries.is_empty() {
        warnings.push(
            "no running primary: writes are impossible until one is started or promoted".into(),
        );
    }
    let primary_tli = primary.and_then(|p| p.timeline());
    let primary_lsn = primary
        .and_then(|p| p.position.as_ref())
        .and_then(|p| p.current_lsn);

    let nodes = cluster
        .spec
        .nodes
        .iter()
        .zip(probes)
        .map(|(spec, p)| {
            let client = cluster.runtime.client_endpoint(spec);
            let state = if !p.running {
                State::Stopped
            } else if p.not_answering {
                State::NotAnswering
            } else if p.position.is_none() {
                State::Unreachable
            } else {
                State::Running
            };
            let pos = p.position.as_ref();
            let role = pos.map(|x| {
                if x.in_recovery {
                    Role::Standby
                } else {
                    Role::Primary
                }
            });
            let upstream = pos.and_then(|x| cluster.sender(x)).map(|n| n.name.clone());
            let seen_by_upstream = upstream.as_ref().and_then(|u| {
                let up = probes.iter().find(|q| &q.name == u)?;
                up.downstreams
                    .iter()
                    .find(|d| d.application_name == spec.application_name())
            });
            let lsn = match pos {
                Some(x) if x.in_recovery => x.replay_lsn,
                Some(x) => x.current_lsn,
                None => p.control.as_ref().and_then(|c| c.checkpoint_lsn),
            };
            let is_current_primary = primary.is_some_and(|q| q.name == p.name);
            let lag_bytes = match (primary_lsn, pos.and_then(|x| x.replay_lsn)) {
                (Some(pl), Some(r)) if !is_current_primary => Some(pl.bytes_after(r)),
                _ => None,
            };
            let (needs_rejoin, note) = match history {
                Some(h) if !is_current_primary && !p.is_primary() => {
                    diverged_from(h, p, state, spec)
                }
                _ => divergence(p, primary_tli, is_current_primary, state),
            };
            NodeStatus {
                name: spec.name.clone(),
                host: client.host,
                port: client.port,
                state,
                role,
                timeline: p.timeline(),
                lsn,
                receive_lsn: pos.and_then(|x| x.receive_lsn),
                replay_lsn: pos.and_then(|x| x.replay_lsn),
                upstream,
                slot: pos
                    .and_then(|x| x.slot_name.clone())
                    .or_else(|| spec.slot.clone()),
                application_name: spec.application_name().to_string(),
                sync_state: seen_by_upstream.and_then(|d| d.sync_state.clone()),
                sync_priority: seen_by_upstream.and_then(|d| d.sync_priority),
                lag_bytes,
                write_lag_ms: seen_by_upstream.and_then(|d| d.write_lag_ms),
                flush_lag_ms: seen_by_upstream.and_then(|d| d.flush_lag_ms),
                replay_lag_ms: seen_by_upstream.and_then(|d| d.replay_lag_ms),
                needs_rejoin,
                note: note.or_else(|| p.error.clone()),
            }
        })
        .collect();

    let sync =
        primary
            .and_then(|p| p.sync.as_ref())
            .and_then(|(names, commit, waiting, oldest)| {
                if names.is_empty() {
                    return None;
                }
                let downstreams = &primary.unwrap().downstreams;
                let satisfied = sync_satisfied(names, downstreams);
                Some(SyncStatus {
                    standby_names: names.clone(),
                    commit: commit.clone(),
                    satisfied,
                    sync_standbys: downstreams
                        .iter()
                        .filter(|d| confirms(d))
                        .map(|d| d.application_name.clone())
                        .collect(),
                    waiting_sessions: *waiting,
                    oldest_wait_ms: *oldest,
                })
            });
    if let Some(s) = &sync {
        if !s.satisfied {
            warnings.push(format!(
                "synchronous replication is not satisfied ('{}'): commits on the primary wait until enough synchronous standbys connect{}",
                s.standby_names,
                if s.waiting_sessions > 0 { format!(" ({} sessions waiting now)", s.waiting_sessions) } else { String::new() }
            ));
        }
    }
    ClusterStatus {
        cluster: cluster.name().to_string(),
        primary: primary.map(|p| p.name.clone()),
        split_brain,
        sync,
        warnings,
        nodes,
    }
}

/// Whether a standby or a stopped node has gone past the point where the primary's timeline
/// forked off its own: then only a rewind brings it back.
fn diverged_from(
    h: &History,
    p: &Probe,
    state: State,
    spec: &crate::spec::NodeSpec,
) -> (bool, Option<String>) {
    let end = match (state, &p.position) {
        (State::Running, Some(x)) => p
            .path
            .clone()
            .zip(x.replay_lsn)
            .map(|(path, end)| WalEnd { path, end }),
        (State::Stopped, _) => lineage::stopped_end(p),
        _ => return (false, None),
    };
    let Some(end) = end else {
        // Stopped after a crash: its WAL end is unknown, and crash recovery would write past
        // the fork point anyway.
        let tli = p.timeline().unwrap_or(0);
        return if tli < h.tli() {
            (
                true,
                Some(format!(
                    "crashed on timeline {tli} (the primary is on {}): needs rejoin (`pgrepl rejoin {} --upstream {}`)",
                    h.tli(), p.name, h.node
                )),
            )
        } else {
            (false, None)
        };
    };
    match h.lineage(&end) {
        Lineage::Diverged { fork, past_by } => (
            true,
            Some(format!(
                "diverged: {past_by} bytes of timeline {} past {fork}, where the primary's timeline {} forked off: needs rejoin (`pgrepl rejoin {} --upstream {}`)",
                end.tli(), h.tli(), p.name, h.node
            )),
        ),
        Lineage::Unrelated => (
            true,
            Some(format!(
                "its timeline {} is not in the primary's history: needs rejoin (`pgrepl rejoin {} --upstream {} --reclone`)",
                end.tli(), p.name, h.node
            )),
        ),
        Lineage::Follows { fork: Some(_) }
            if state == State::Running
                && p.position.as_ref().and_then(|x| x.receiver_status.as_deref())
                    != Some("streaming") =>
        {
            (
                false,
                Some(format!(
                    "on timeline {}, not streaming; it has not diverged: `pgrepl standby follow {} --upstream {}`",
                    end.tli(), spec.name, h.node
                )),
            )
        }
        _ => (false, None),
    }
}

/// Whether a node has left the current primary's history (without its timeline history).
fn divergence(
    p: &Probe,
    primary_tli: Option<u32>,
    is_current_primary: bool,
    state: State,
) -> (bool, Option<String>) {
    let Some(ptli) = primary_tli else {
        return (false, None);
    };
    if is_current_primary {
        return (false, None);
    }
    let behind = p.timeline().is_some_and(|t| t < ptli);
    match state {
        State::Running if p.is_primary() => (true, Some("a second primary: needs rejoin".into())),
        State::Running
            if p.is_standby()
                && behind
                && p.position
                    .as_ref()
                    .and_then(|x| x.receiver_status.as_deref())
                    != Some("streaming") =>
        {
            (
                true,
                Some(format!(
                    "stuck on timeline {} while the primary is on {ptli}: needs rejoin",
                    p.timeline().unwrap_or(0)
                )),
            )
        }
        State::Stopped
            if behind
                && p.control
                    .as_ref()
                    .is_some_and(|c| c.state == "shut down" || c.state == "in production") =>
        {
            (
                true,
                Some(format!(
                    "was a primary on timeline {}: needs rejoin",
                    p.timeline().unwrap_or(0)
                )),
            )
        }
        _ => (false, None),
    }
}

/// Whether the connected standbys satisfy `synchronous_standby_names` (FIRST n / ANY n /
/// a bare list, which means FIRST 1; `*` matches any standby). PostgreSQL marks as `sync`
/// (FIRST) or `quorum` (ANY) only streaming standbys it would wait for; with fewer than n of
/// them a commit waits, although those present still show `sync`.
pub fn sync_satisfied(names: &str, downstreams: &[crate::postgres::queries::Downstream]) -> bool {
    let needed = crate::spec::parse_standby_names(names)
        .map(|(_, n, _)| n)
        .unwrap_or(1) as usize;
    downstreams.iter().filter(|d| confirms(d)).count() >= needed
}

fn confirms(d: &crate::postgres::queries::Downstream) -> bool {
    matches!(d.sync_state.as_deref(), Some("sync") | Some("quorum"))
}
