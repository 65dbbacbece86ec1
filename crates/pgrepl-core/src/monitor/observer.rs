//! One tick's look at the cluster: the runtime's word on each node's processes and what each
//! node's PostgreSQL answers, all nodes at once, each within a bound (a node that does not
//! answer in time did not answer). The questions are `observe::topology::probe`'s, the same
//! ones `pgrepl status` and `pgrepl failover` ask: no second copy of them.

use std::time::Duration;

use futures::future::join_all;

use super::observation::{Downstream, NodeObs, Observation, Process, Receiver, Role, Slot};
use crate::cluster::Cluster;
use crate::observe::lineage;
use crate::observe::topology::{self, Probe};
use crate::runtime::ProcessState;
use crate::spec::NodeSpec;

/// One tick: the observation for the decision, and the probes it was made from (for the
/// health snapshot).
pub struct Seen {
    pub obs: Observation,
    pub probes: Vec<Probe>,
}

/// Observes every node of the cluster file concurrently, each within `bound`. `busy` is
/// whether another pgrepl command holds the cluster's lock.
pub async fn observe(cluster: &Cluster, at_ms: u64, busy: bool, bound: Duration) -> Seen {
    let seen = join_all(
        cluster
            .spec
            .nodes
            .iter()
            .map(|n| observe_node(cluster, n, bound)),
    )
    .await;
    let (nodes, probes): (Vec<NodeObs>, Vec<Probe>) = seen.into_iter().unzip();
    Seen {
        obs: Observation { at_ms, busy, nodes },
        probes,
    }
}

async fn observe_node(cluster: &Cluster, spec: &NodeSpec, bound: Duration) -> (NodeObs, Probe) {
    // The runtime's word first, on its own: a runtime that cannot tell (its daemon did not
    // answer) must not read as a dead node, which would be acted on at once.
    let process = match tokio::time::timeout(bound, cluster.runtime.state(spec)).await {
        Ok(Ok(ProcessState::Stopped)) => Process::Gone,
        Ok(Ok(ProcessState::Running)) => Process::Running,
        Ok(Ok(ProcessState::Frozen)) => Process::Frozen,
        Ok(Err(_)) | Err(_) => Process::Unknown,
    };
    let probe = tokio::time::timeout(bound, topology::probe(cluster, &spec.name));
    tokio::pin!(probe);
    // A node slow to answer the monitor: the other nodes are asked at the same time whether
    // it answers them, so that their opinion is there when the monitor's own wait ends.
    let (probe, others) = match tokio::time::timeout(ASK_OTHERS_AFTER, &mut probe).await {
        Ok(p) => (p, None),
        Err(_) if process == Process::Running => {
            let (p, o) = tokio::join!(probe, others_reach(cluster, spec, bound));
            (p, Some(o))
        }
        Err(_) => (probe.await, None),
    };
    let probe = probe.unwrap_or_else(|_| silent_probe(&spec.name, bound));
    let mut obs = to_obs(cluster, spec, process, &probe);
    if !obs.answered {
        obs.reachable_from_standbys = others;
    }
    (obs, probe)
}

/// How long a node may take to answer before the others are asked about it too.
const ASK_OTHERS_AFTER: Duration = Duration::from_millis(250);

/// Whether another running node gets an answer from `target`'s PostgreSQL (`pg_isready` run
/// from that node's place: a startup packet answered, not a TCP connect, which a frozen
/// server's kernel still accepts). A primary cut off from the monitor alone still answers its
/// standbys, and is no reason for a failover even when it has nothing to stream.
async fn others_reach(cluster: &Cluster, target: &NodeSpec, bound: Duration) -> bool {
    let asks = cluster
        .spec
        .nodes
        .iter()
        .filter(|n| n.name != target.name)
        .map(|from| async move {
            let running = matches!(
                tokio::time::timeout(bound, cluster.runtime.state(from)).await,
                Ok(Ok(ProcessState::Running))
            );
            running && answers_from(cluster, from, target, bound).await
        });
    join_all(asks).await.into_iter().any(|a| a)
}

/// Whether `target`'s PostgreSQL answers a startup packet sent from `from`'s place
/// (accepting or rejecting connections: either way it runs and answers).
async fn answers_from(
    cluster: &Cluster,
    from: &NodeSpec,
    target: &NodeSpec,
    bound: Duration,
) -> bool {
    let at = cluster.runtime.tool_endpoint(from, target);
    let mut cmd = cluster.runtime.command(from, "pg_isready");
    cmd.args(["-q", "-t", "1", "-h", &at.host, "-p", &at.port.to_string()])
        .kill_on_drop(true);
    // pg_isready's own timeout is a whole second at least: the monitor's bound is shorter.
    match tokio::time::timeout(bound, cmd.status()).await {
        // 0: accepting connections, 1: rejecting them (starting or stopping); 2: no answer.
        Ok(Ok(status)) => matches!(status.code(), Some(0 | 1)),
        _ => false,
    }
}

/// A node that did not answer within the bound (partitioned, overloaded).
fn silent_probe(name: &str, bound: Duration) -> Probe {
    let mut p = Probe::nothing_yet(name, true);
    p.not_answering = true;
    p.error = Some(format!("did not answer within {} ms", bound.as_millis()));
    p
}

fn to_obs(cluster: &Cluster, spec: &NodeSpec, process: Process, p: &Probe) -> NodeObs {
    let mut n = NodeObs::new(&spec.name, process);
    n.system_id = p.system_id();
    n.path = p.path.clone();
    n.standby_signal = cluster.data_dir(&spec.name).join("standby.signal").exists();
    if let Some(pos) = &p.position {
        n.answered = true;
        n.role = Some(if pos.in_recovery {
            Role::Standby
        } else {
            Role::Primary
        });
        n.end = if pos.in_recovery {
            pos.replay_lsn
        } else {
            pos.current_lsn
        };
        n.received = pos.receive_lsn;
        n.replayed = pos.replay_lsn;
        n.receiver = pos.receiver_status.as_ref().map(|status| Receiver {
            upstream: cluster.sender(pos).map(|u| u.name.clone()),
            streaming: status == "streaming",
            last_msg_age_ms: pos.last_msg_age_ms.map(|a| a.max(0.0) as u64),
        });
    } else if !p.running {
        // A stopped node: where its WAL ends, from its control file (None after a crash),
        // on the timeline path its WAL reached.
        if let Some(end) = lineage::stopped_end(p) {
            n.end = Some(end.end);
            n.path = Some(end.path);
        }
    }
    n.sync_names = p.sync.as_ref().map(|(names, ..)| names.clone());
    n.downstreams = p
        .downstreams
        .iter()
        .map(|d| Downstream {
            application_name: d.application_name.clone(),
            streaming: d.state.as_deref() == Some("streaming"),
            sync_state: d.sync_state.clone(),
            flush: d.flush_lsn,
        })
        .collect();
    n.slots = p
        .slots
        .iter()
        .map(|s| Slot {
            name: s.name.clone(),
            active: s.active,
        })
        .collect();
    n
}
