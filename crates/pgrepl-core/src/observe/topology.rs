//! Who is who right now, asked of every node in parallel.

use futures::future::join_all;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::postgres::queries::{self, Downstream, Position, Slot};
use crate::postgres::server::ControlData;
use crate::postgres::timeline::{self, TimelinePath};
use crate::runtime::ProcessState;

/// What one node says about itself. A node that is down is a probe, not an error.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub running: bool,
    pub position: Option<Position>,
    pub downstreams: Vec<Downstream>,
    /// For a primary: `synchronous_standby_names`, `synchronous_commit`, and the sessions
    /// waiting on SyncRep with the oldest wait's age.
    pub sync: Option<(String, String, i64, Option<f64>)>,
    pub control: Option<ControlData>,
    /// For a stopped node: the timeline of its newest WAL segment.
    pub wal_timeline: Option<u32>,
    /// The node's timeline and its history: asked of a running node, read from a stopped
    /// node's pg_wal.
    pub path: Option<TimelinePath>,
    /// Its postmaster runs but it did not answer in time: frozen or overloaded.
    pub not_answering: bool,
    /// Its physical replication slots (running nodes).
    pub slots: Vec<Slot>,
    pub error: Option<String>,
}

impl Probe {
    pub fn is_primary(&self) -> bool {
        self.position.as_ref().is_some_and(|p| !p.in_recovery)
    }
    pub fn is_standby(&self) -> bool {
        self.position.as_ref().is_some_and(|p| p.in_recovery)
    }
    /// The database system this node's data belongs to (initdb's identifier, kept by clones).
    pub fn system_id(&self) -> Option<u64> {
        match &self.position {
            Some(p) => p.system_id,
            None => self.control.as_ref().and_then(|c| c.system_id),
        }
    }

    pub fn timeline(&self) -> Option<u32> {
        match &self.position {
            Some(p) => p.timeline,
            None => self
                .wal_timeline
                .or_else(|| self.control.as_ref().and_then(|c| c.checkpoint_timeline)),
        }
    }
}

impl Probe {
    /// A probe that has learnt nothing but whether the node runs.
    pub fn nothing_yet(node: &str, running: bool) -> Probe {
        Probe {
            name: node.to_string(),
            running,
            position: None,
            downstreams: Vec::new(),
            sync: None,
            control: None,
            wal_timeline: None,
            path: None,
            not_answering: false,
            slots: Vec::new(),
            error: None,
        }
    }

    fn failed(&mut self, e: Error) {
        self.not_answering = matches!(e, Error::NotAnswering { .. });
        self.error = Some(e.to_string());
    }
}

pub async fn probe(cluster: &Cluster, node: &str) -> Probe {
    let server = cluster.server(node);
    let state = match &server {
        Ok(s) => s.state().await.unwrap_or(ProcessState::Stopped),
        Err(_) => ProcessState::Stopped,
    };
    let running = state != ProcessState::Stopped;
    let mut p = Probe::nothing_yet(node, running);
    if !p.running {
        if let Some(server) = server.ok().filter(|s| s.exists()) {
            p.control = server.controldata().await.ok();
            p.wal_timeline = server.newest_wal_timeline();
            p.path = timeline::path_on_disk(&server.data);
        }
        return p;
    }
    if state == ProcessState::Frozen {
        // It would accept a connection and never answer.
        p.not_answering = true;
        p.error = Some(format!(
            "frozen: every process is stopped (`pgrepl thaw {node}` resumes it)"
        ));
        return p;
    }
    let client = match cluster.connect(node).await {
        Ok(c) => c,
        Err(e) => {
            p.failed(e);
            return p;
        }
    };
    match queries::position(&client).await {
        Ok(pos) => {
            if let Some(tli) = pos.timeline {
                p.path = timeline::read_history(&client, tli)
                    .await
                    .ok()
                    .map(|h| TimelinePath::new(tli, h));
            }
            p.position = Some(pos);
        }
        Err(e) => {
            // Every further question would wait out its bound as well.
            p.failed(e);
            return p;
        }
    }
    p.downstreams = queries::downstreams(&client).await.unwrap_or_default();
    p.slots = queries::slots(&client).await.unwrap_or_default();
    if p.is_primary() {
        let names = queries::show(&client, "synchronous_standby_names")
            .await
            .unwrap_or_default();
        let commit = queries::show(&client, "synchronous_commit")
            .await
            .unwrap_or_default();
        let (waiting, oldest) = queries::syncrep_waiters(&client).await.unwrap_or((0, None));
        p.sync = Some((names, commit, waiting, oldest));
    }
    p
}

pub async fn probe_all(cluster: &Cluster) -> Vec<Probe> {
    join_all(cluster.spec.nodes.iter().map(|n| probe(cluster, &n.name))).await
}

/// The current primary among probes: the running primary with the highest timeline (the
/// spec's root on a tie), so that in a split brain the newer side wins.
pub fn pick_primary<'a>(cluster: &Cluster, probes: &'a [Probe]) -> Option<&'a Probe> {
    let root = &cluster.spec.root().name;
    probes
        .iter()
        .filter(|p| p.is_primary())
        .max_by_key(|p| (p.timeline().unwrap_or(0), &p.name == root))
}

/// The one running primary; an error when there is none, or more than one (split brain).
pub async fn current_primary(cluster: &Cluster) -> Result<String> {
    let probes = probe_all(cluster).await;
    let primaries: Vec<&str> = probes
        .iter()
        .filter(|p| p.is_primary())
        .map(|p| p.name.as_str())
        .collect();
    let silent: Vec<&str> = probes
        .iter()
        .filter(|p| p.not_answering)
        .map(|p| p.name.as_str())
        .collect();
    match primaries.as_slice() {
        [one] => Ok(one.to_string()),
        [] if !silent.is_empty() => Err(Error::Precondition(format!(
            "no primary answers, and {} {} not answering (frozen, or overloaded): wait for it, or fail over with `pgrepl failover`",
            silent.join(" and "),
            if silent.len() > 1 { "are" } else { "is" }
        ))),
        [] => Err(Error::Precondition(format!(
            "cluster '{}' has no running primary: start it (`pgrepl start {}`) or promote a standby (`pgrepl promote NODE`)",
            cluster.name(),
            cluster.spec.root().name
        ))),
        many => Err(Error::Precondition(format!(
            "split brain: {} are all running as primaries; rejoin the stale one as a standby (`pgrepl rejoin NODE --upstream NODE`) first",
            many.join(" and ")
        ))),
    }
}
