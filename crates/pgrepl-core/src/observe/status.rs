//! `pgrepl status` (the lab's 06_check_replication.sql): one row per node, everything read
//! from PostgreSQL.

use futures::future::join_all;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::observe::authority;
use crate::observe::lineage::{self, History, WalEnd};
use crate::observe::topology::{self, Probe};
use crate::postgres::timeline::Lineage;
use crate::postgres::Lsn;
use crate::runtime::{NetFault, ProcessState};

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
    /// Current WAL position for a primary, replay position for a standby, and for a stopped
    /// node the end of the WAL it had reached (none when that cannot be read).
    pub lsn: Option<Lsn>,
    pub receive_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// The node this one streams from now (read from its walreceiver).
    pub upstream: Option<String>,
    /// Its upstream's pg_stat_replication shows it streaming: WAL flows to it.
    pub streaming: bool,
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
    /// It has a data directory: false for a node of the cluster file never built (the note
    /// names the command that builds it).
    pub created: bool,
    pub note: Option<String>,
    /// Every process of the node is stopped (`pgrepl freeze`).
    pub frozen: bool,
    /// The network faults the runtime has in force on the node (`pgrepl net ...`).
    pub faults: Vec<NetFault>,
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
    /// Whether `pgrepl monitor` runs for the cluster, and its last decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MonitorInfo {
    pub running: bool,
    pub pid: Option<u32>,
    /// The event log's last decision: its time and line.
    pub last_decision: Option<String>,
}

/// Told by the monitor's lock (not by a pid file alone) and its event log.
pub fn monitor_info(cluster: &Cluster) -> MonitorInfo {
    let pid = crate::monitor::run::running(&cluster.dir);
    MonitorInfo {
        running: pid.is_some(),
        pid: pid.filter(|p| *p != 0),
        last_decision: crate::monitor::events_log::last_decision(&cluster.dir).map(|r| r.line()),
    }
}

pub async fn status(cluster: &Cluster) -> ClusterStatus {
    let (probes, faults) = tokio::join!(topology::probe_all(cluster), injected(cluster));
    assemble(cluster, &probes, faults).await
}

/// The status from probes already taken (the monitor's tick probes once for its decision
/// and its health endpoints).
pub async fn of_probes(cluster: &Cluster, probes: &[Probe]) -> ClusterStatus {
    let faults = injected(cluster).await;
    assemble(cluster, probes, faults).await
}

async fn assemble(
    cluster: &Cluster,
    probes: &[Probe],
    faults: Vec<(bool, Vec<NetFault>)>,
) -> ClusterStatus {
    // The primary's timeline history tells a node that can still follow it from one that
    // has gone past the fork point.
    let history = topology::pick_primary(cluster, probes).and_then(|p| {
        Some(History {
            node: p.name.clone(),
            path: p.path.clone()?,
        })
    });
    let wal_ends = stopped_wal_ends(cluster, probes).await;
    let mut status = build(cluster, probes, history.as_ref(), &wal_ends);
    status.monitor = Some(monitor_info(cluster));
    for (n, (frozen, f)) in status.nodes.iter_mut().zip(faults) {
        n.frozen = frozen;
        n.faults = f;
        let hidden = n.faults.iter().any(|f| {
            matches!(
                f,
                NetFault::Partition { host: true, .. } | NetFault::HostPartition
            )
        });
        if hidden && n.state == State::Unreachable {
            status.warnings.push(format!(
                "{} is partitioned from the host: pgrepl cannot see it, though it still runs in whatever role it had; `pgrepl net heal {}` ends the partition",
                n.name, n.name
            ));
        }
    }
    status
}

/// What was done to each node on purpose: frozen, and its network faults (a runtime that
/// cannot tell shows none).
async fn injected(cluster: &Cluster) -> Vec<(bool, Vec<NetFault>)> {
    let rt = &cluster.runtime;
    join_all(cluster.spec.nodes.iter().map(|n| async move {
        let frozen = rt.state(n).await.is_ok_and(|s| s == ProcessState::Frozen);
        (frozen, rt.faults(n).await.unwrap_or_default())
    }))
    .await
}

/// Where each stopped node's WAL ends (None for running nodes).
async fn stopped_wal_ends(cluster: &Cluster, probes: &[Probe]) -> Vec<Option<Lsn>> {
    futures::future::join_all(probes.iter().map(|p| async move {
        if p.running {
            return None;
        }
        let server = cluster.server(&p.name).ok().filter(|s| s.exists())?;
        server.wal_end().await
    }))
    .await
}

fn build(
    cluster: &Cluster,
    probes: &[Probe],
    history: Option<&History>,
    wal_ends: &[Option<Lsn>],
) -> ClusterStatus {
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
    } else if let Some(stale) = primary.filter(|q| superseded(q, probes)) {
        warnings.push(format!(
            "{} runs as the primary, but other nodes are on a newer timeline history: its data is older than theirs; make the newest of them the primary (`pgrepl failover --force`) and rejoin {} (`pgrepl rejoin {} --upstream NODE`)",
            stale.name, stale.name, stale.name
        ));
    } else if primaries.is_empty()
        && !cluster
            .spec
            .nodes
            .iter()
            .any(|n| cluster.server(&n.name).is_ok_and(|s| s.exists()))
    {
        warnings.push("the cluster is not built yet: `pgrepl up` builds it".into());
    } else if primaries.is_empty() {
        warnings.push(
            "no running primary: writes are impossible until one is started or promoted".into(),
        );
    }
    warnings.extend(crate::observe::slot_health::warnings(cluster, probes));
    let primary_tli = primary.and_then(|p| p.timeline());
    let primary_lsn = primary
        .and_then(|p| p.position.as_ref())
        .and_then(|p| p.current_lsn);

    let nodes: Vec<NodeStatus> = cluster
        .spec
        .nodes
        .iter()
        .zip(probes)
        .zip(wal_ends)
        .map(|((spec, p), wal_end)| {
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
                None => *wal_end,
            };
            let is_current_primary = primary.is_some_and(|q| q.name == p.name);
            let lag_bytes = match (primary_lsn, pos.and_then(|x| x.replay_lsn)) {
                (Some(pl), Some(r)) if !is_current_primary => Some(pl.bytes_after(r)),
                _ => None,
            };
            let foreign = !is_current_primary
                && primary
                    .and_then(Probe::system_id)
                    .zip(p.system_id())
                    .is_some_and(|(a, b)| a != b);
            // A node never built has no data to diverge: it is "not created", not crashed.
            let created = p.running || cluster.server(&spec.name).is_ok_and(|s| s.exists());
            let (needs_rejoin, note) = match history {
                _ if !created => (
                    false,
                    Some(format!(
                        "not created (no data directory yet): create it with {}",
                        spec.create_hint()
                    )),
                ),
                _ if foreign => (
                    true,
                    Some(format!(
                        "its data belongs to another database system than the primary's: needs `pgrepl rejoin {} --upstream {} --reclone`",
                        p.name,
                        primary.map(|q| q.name.as_str()).unwrap_or("?")
                    )),
                ),
                Some(h) if !is_current_primary && !p.is_primary() => {
                    diverged_from(h, p, state, spec)
                }
                _ => divergence(p, primary_tli, is_current_primary, state),
            };
            // The walreceiver says "streaming" from its start, before it has connected; the
            // upstream's pg_stat_replication says whether WAL flows.
            let note = note.or_else(|| {
                let up = upstream.as_deref()?;
                let receiving = pos?.receiver_status.as_deref() == Some("streaming");
                let up_answers = probes.iter().any(|q| q.name == up && q.position.is_some());
                (receiving && up_answers && seen_by_upstream.is_none()).then(|| {
                    format!("not streaming: its walreceiver is trying {up}, which does not list it (see `pgrepl logs {}`)", p.name)
                })
            });
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
                streaming: seen_by_upstream
                    .is_some_and(|d| d.state.as_deref() == Some("streaming")),
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
                created,
                note: note.or_else(|| p.error.clone()),
                frozen: false,
                faults: Vec::new(),
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
    if !split_brain && sync.is_none() {
        if let Some(w) = primary.and_then(|p| crate::ops::sync::lost_warning(cluster, &p.name)) {
            warnings.push(w.trim_start_matches("WARNING: ").to_string());
        }
        warnings.extend(primary.and_then(|p| no_copy_warning(p, &nodes)));
    }
    ClusterStatus {
        cluster: cluster.name().to_string(),
        primary: primary.map(|p| p.name.clone()),
        split_brain,
        sync,
        warnings,
        nodes,
        monitor: None,
    }
}

/// Under asynchronous replication a commit is acknowledged once it is on the primary's disk:
/// with no standby streaming, nothing else holds it, and losing the primary loses it.
fn no_copy_warning(primary: &Probe, nodes: &[NodeStatus]) -> Option<String> {
    let others: Vec<&NodeStatus> = nodes.iter().filter(|n| n.name != primary.name).collect();
    let streaming = primary
        .downstreams
        .iter()
        .any(|d| d.state.as_deref() == Some("streaming"));
    if others.is_empty() || streaming {
        return None;
    }
    let stopped: Vec<&str> = others
        .iter()
        // Only those `start` would bring back as they are: a node that needs a rejoin is
        // named in its own note.
        .filter(|n| n.state == State::Stopped && !n.needs_rejoin && n.created)
        .map(|n| n.name.as_str())
        .collect();
    Some(format!(
        "no standby streams from {p} and replication is asynchronous: writes on {p} are acknowledged with no copy on another node, and losing {p} loses them; {}",
        if stopped.is_empty() {
            "see the notes on the standbys".to_string()
        } else {
            format!("start a standby (`pgrepl start {}`)", stopped.join(" "))
        },
        p = primary.name
    ))
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

/// Whether another node's history has moved on from `primary`'s: a promotion it never saw.
fn superseded(primary: &Probe, probes: &[Probe]) -> bool {
    let facts: Vec<authority::Facts> = probes
        .iter()
        .map(|p| authority::Facts::from_probe(p, false))
        .collect();
    let Some(me) = facts.iter().find(|f| f.name == primary.name) else {
        return false;
    };
    facts
        .iter()
        .any(|o| o.name != me.name && authority::supersedes(o, me))
}
