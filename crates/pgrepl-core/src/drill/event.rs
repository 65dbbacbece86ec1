//! The events a drill injects, as values: each knows what it needs, how to inject itself,
//! and how to put the cluster back so that the next run starts from the same place.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::drill::hooks::Operations;
use crate::error::{Error, Result};
use crate::observe::topology;
use crate::ops::control;
use crate::postgres::queries;
use crate::progress::Progress;
use crate::runtime::{NetFault, Runtime};
use crate::spec::NodeSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Planned switchover to the best standby.
    Switchover,
    /// The primary is lost (SIGKILL of the postmaster and all its backends at once), then
    /// `pgrepl failover`.
    Failover,
    /// SIGKILL of the primary, restarted in place: crash recovery.
    Crash,
    /// SIGSTOP of the primary and its backends for `duration`, then SIGCONT.
    Freeze { duration: Duration },
    /// The synchronous standbys stop for `duration` under synchronous replication: commits
    /// wait on them.
    SyncBlock { duration: Duration },
    /// The primary cut off from everyone, the host (and so the writers) included, for
    /// `duration`, then healed: it stays primary, nobody can reach it meanwhile.
    Partition { duration: Duration },
    /// Every packet the primary sends waits `delay`, for `duration`.
    Delay { duration: Duration, delay: Duration },
}

pub const NAMES: &[&str] = &[
    "switchover",
    "failover",
    "crash",
    "freeze",
    "sync-block",
    "partition",
    "delay",
];

/// Not an event but a series of drills: the failover drill under each replication mode
/// ([`crate::drill::matrix`]).
pub const MATRIX: &str = "matrix";

impl Event {
    /// An event by name; `hold` is how long a freeze, a sync block, a partition or a delay
    /// lasts, `delay` the delay event's delay.
    pub fn parse(name: &str, hold: Duration, delay: Duration) -> Result<Event> {
        Ok(match name {
            "switchover" => Event::Switchover,
            "failover" => Event::Failover,
            "crash" => Event::Crash,
            "freeze" => Event::Freeze { duration: hold },
            "sync-block" => Event::SyncBlock { duration: hold },
            "partition" => Event::Partition { duration: hold },
            "delay" => Event::Delay {
                duration: hold,
                delay,
            },
            other => {
                return Err(Error::Invalid(format!(
                    "unknown drill event '{other}': choose one of {}, or '{MATRIX}' (the failover drill under async and synchronous replication)",
                    NAMES.join(", ")
                )))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Event::Switchover => "switchover",
            Event::Failover => "failover",
            Event::Crash => "crash",
            Event::Freeze { .. } => "freeze",
            Event::SyncBlock { .. } => "sync-block",
            Event::Partition { .. } => "partition",
            Event::Delay { .. } => "delay",
        }
    }

    /// Whether this build has the operations the event needs; checked before any run.
    pub fn check(&self, ops: &Operations) -> Result<()> {
        match self {
            Event::Switchover => ops.switchover().map(drop),
            Event::Failover => ops
                .failover()
                .and(ops.rejoin())
                .and(ops.switchover())
                .map(drop),
            Event::Crash
            | Event::Freeze { .. }
            | Event::SyncBlock { .. }
            | Event::Partition { .. }
            | Event::Delay { .. } => Ok(()),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Delay { duration, delay } => write!(
                f,
                "delay ({} for {})",
                humantime::format_duration(*delay),
                humantime::format_duration(*duration)
            ),
            Event::Freeze { duration }
            | Event::SyncBlock { duration }
            | Event::Partition { duration } => {
                write!(
                    f,
                    "{} ({})",
                    self.name(),
                    humantime::format_duration(*duration)
                )
            }
            _ => f.write_str(self.name()),
        }
    }
}

/// What an event run is given.
pub struct Ctx<'a> {
    pub cluster: &'a Cluster,
    /// The primary when the run started.
    pub primary: &'a str,
    pub ops: &'a Operations,
    pub progress: &'a dyn Progress,
    /// The drill's clock: times are counted from here, like the writers'.
    pub origin: Instant,
}

impl Ctx<'_> {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

impl Event {
    /// What can be checked on the cluster before the workload starts (a sync block needs
    /// synchronous standbys, a switchover a streaming standby): a run that cannot inject
    /// its event should not start.
    pub async fn preflight(&self, ctx: &Ctx<'_>) -> Result<()> {
        match self {
            Event::SyncBlock { .. } => sync_standbys(ctx).await.map(drop),
            Event::Switchover => best_standby(ctx.cluster, ctx.primary).await.map(drop),
            // A runtime without network faults refuses before the workload starts.
            Event::Partition { .. } | Event::Delay { .. } => {
                ctx.cluster.runtime.check_network_faults()
            }
            Event::Failover => refuse_primary_listed_as_sync(ctx),
            Event::Freeze { .. } | Event::Crash => Ok(()),
        }
    }
}

/// The failover drill promotes a synchronous standby, and the cluster file's `[sync]` then
/// applies to it. When that list names the primary itself, the promoted node's commits wait
/// for the primary the drill has just killed, so writes would not resume until it rejoins,
/// after the run: the drill refuses before it starts.
fn refuse_primary_listed_as_sync(ctx: &Ctx<'_>) -> Result<()> {
    // Earlier runs and operations save the file: read it as it is now.
    let cluster = ctx.cluster.reloaded()?;
    let Some(sync) = &cluster.spec.sync else {
        return Ok(());
    };
    let primary = ctx.primary;
    let app = cluster.node(primary)?.application_name();
    if !sync.standbys.iter().any(|s| s == app) {
        return Ok(());
    }
    let listed: Vec<&str> = cluster
        .spec
        .nodes
        .iter()
        .filter(|n| n.name != primary)
        .map(|n| n.application_name())
        .filter(|a| sync.standbys.iter().any(|s| s == a))
        .collect();
    // At least two, so that one is left to confirm commits once the other is promoted.
    let suggested: Vec<&str> = if listed.len() >= 2 {
        listed
    } else {
        cluster
            .spec
            .nodes
            .iter()
            .filter(|n| n.name != primary)
            .map(|n| n.application_name())
            .collect()
    };
    Err(Error::Precondition(format!(
        "the failover drill cannot run while synchronous replication lists the primary {primary} itself ([sync] standbys = {}): the standby it promotes would wait for {primary}, which the drill kills, and writes would not resume until {primary} rejoins; list standbys only: `pgrepl sync enable --standbys {}`",
        sync.standbys.join(", "),
        suggested.join(",")
    )))
}

/// When the event happened and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    /// The event itself (the kill, the stop signal, the switchover's start), from the origin.
    #[serde(serialize_with = "crate::drill::ser_ms", rename = "at_ms")]
    pub at: Duration,
    /// When the event's own work was over (restarted, thawed, promoted): writes are expected
    /// to resume from here.
    #[serde(serialize_with = "crate::drill::ser_ms", rename = "end_ms")]
    pub end: Duration,
    /// Figures particular to the event, e.g. `crash_recovery_ms`.
    pub detail: BTreeMap<String, serde_json::Value>,
}

impl Event {
    pub async fn inject(&self, ctx: &Ctx<'_>) -> Result<Injected> {
        let cluster = ctx.cluster;
        let server = cluster.server(ctx.primary)?;
        let mut detail = BTreeMap::new();
        let at;
        match *self {
            Event::Crash => {
                ctx.progress
                    .step(&format!("crashing {} (SIGKILL)", ctx.primary));
                at = ctx.now();
                let t = Instant::now();
                server.kill().await?;
                // Until the killed postmaster is reaped: a restart must wait for it.
                detail.insert("kill_ms".into(), ms(t.elapsed()));
                ctx.progress
                    .step(&format!("restarting {} (crash recovery)", ctx.primary));
                let t = Instant::now();
                server.start().await?;
                detail.insert("crash_recovery_ms".into(), ms(t.elapsed()));
            }
            Event::Freeze { duration } => {
                if !server.is_running().await {
                    return Err(not_running(ctx.primary));
                }
                ctx.progress.step(&format!(
                    "{} frozen (SIGSTOP) for {}",
                    ctx.primary,
                    humantime::format_duration(duration)
                ));
                // Thawed even if the drill is interrupted while it waits.
                let thaw = Undo::new(cluster, &server.node, UndoAction::Thaw);
                at = ctx.now();
                if !cluster.runtime.freeze(&server.node, true).await? {
                    return Err(not_running(ctx.primary));
                }
                tokio::time::sleep(duration).await;
                thaw.now().await?;
            }
            Event::Partition { duration } => {
                let everyone = NetFault::Partition {
                    from: Vec::new(),
                    host: true,
                };
                at = network_fault_for(ctx, &server.node, &everyone, duration).await?;
            }
            Event::Delay { duration, delay } => {
                let fault = NetFault::Delay {
                    delay,
                    jitter: Duration::ZERO,
                };
                at = network_fault_for(ctx, &server.node, &fault, duration).await?;
                detail.insert("delay_ms".into(), ms(delay));
            }
            Event::SyncBlock { duration } => {
                let blocked = sync_standbys(ctx).await?;
                ctx.progress.step(&format!(
                    "stopping the synchronous standbys {} for {}",
                    blocked.join(", "),
                    humantime::format_duration(duration)
                ));
                at = ctx.now();
                try_join_all(
                    blocked
                        .iter()
                        .map(|n| control::stop(cluster, n, ctx.progress)),
                )
                .await?;
                tokio::time::sleep(duration).await;
                ctx.progress
                    .step(&format!("starting {} again", blocked.join(", ")));
                for n in &blocked {
                    control::start(cluster, n, ctx.progress).await?;
                }
                detail.insert("blocked_standbys".into(), blocked.into());
            }
            Event::Switchover => {
                let switchover = ctx.ops.switchover()?;
                let to = best_standby(cluster, ctx.primary).await?;
                ctx.progress
                    .step(&format!("switchover from {} to {to}", ctx.primary));
                at = ctx.now();
                switchover(cluster, &to, ctx.progress).await?;
                detail.insert("new_primary".into(), to.into());
            }
            Event::Failover => {
                let failover = ctx.ops.failover()?;
                ctx.progress.step(&format!(
                    "crashing {} (SIGKILL), then failover",
                    ctx.primary
                ));
                at = ctx.now();
                let t = Instant::now();
                server.kill().await?;
                // Backends that were still committing in the meantime may have acknowledged:
                // the run reports them as late acks.
                detail.insert("kill_ms".into(), ms(t.elapsed()));
                let t = Instant::now();
                failover(cluster, None, ctx.progress).await?;
                detail.insert("failover_ms".into(), ms(t.elapsed()));
                detail.insert(
                    "new_primary".into(),
                    topology::current_primary(cluster).await?.into(),
                );
            }
        }
        Ok(Injected {
            at,
            end: ctx.now(),
            detail,
        })
    }

    /// Puts the cluster back as the next run needs it: every node running and every standby
    /// streaming (the drill then checks that).
    pub async fn restore(&self, ctx: &Ctx<'_>) -> Result<()> {
        match self {
            Event::Failover => {
                let rejoin = ctx.ops.rejoin()?;
                let switchover = ctx.ops.switchover()?;
                let new = topology::current_primary(ctx.cluster).await?;
                ctx.progress
                    .step(&format!("rejoining {} as a standby of {new}", ctx.primary));
                rejoin(ctx.cluster, ctx.primary, &new, ctx.progress).await?;
                // Back to the run's primary, so that every run fails the same node over under
                // the same synchronous replication. Without it, under FIRST 1 (sync2, sync3)
                // a second run would promote the other synchronous standby, whose only
                // synchronous candidate left is the node just crashed: its writes would wait
                // for a rejoin that comes only after the run.
                ctx.progress.step(&format!(
                    "switching over from {new} back to {}",
                    ctx.primary
                ));
                switchover(ctx.cluster, ctx.primary, ctx.progress).await
            }
            // The old primary already follows the new one; crash, freeze and sync-block leave
            // the same primary, and the standbys reconnect by themselves.
            Event::Switchover
            | Event::Crash
            | Event::Freeze { .. }
            | Event::SyncBlock { .. }
            | Event::Partition { .. }
            | Event::Delay { .. } => Ok(()),
        }
    }
}

/// Applies `fault` to `node` for `hold`, then heals it (also when the drill is dropped
/// meanwhile); returns when the fault was applied.
async fn network_fault_for(
    ctx: &Ctx<'_>,
    node: &NodeSpec,
    fault: &NetFault,
    hold: Duration,
) -> Result<Duration> {
    ctx.progress.step(&format!(
        "{}: {fault} for {}",
        node.name,
        humantime::format_duration(hold)
    ));
    let heal = Undo::new(ctx.cluster, node, UndoAction::Heal);
    let at = ctx.now();
    ctx.cluster.runtime.apply_fault(node, fault).await?;
    tokio::time::sleep(hold).await;
    heal.now().await?;
    Ok(at)
}

fn ms(d: Duration) -> serde_json::Value {
    crate::drill::ms(d).into()
}

fn not_running(node: &str) -> Error {
    Error::Precondition(format!(
        "{node} is not running: start it (`pgrepl start {node}`) before the drill"
    ))
}

/// Undoes what an event did to a node (thaws it, heals its network) when the drill is done
/// with it, or when it is dropped: an interrupted drill must not leave the primary frozen or
/// cut off.
struct Undo {
    runtime: Arc<dyn Runtime>,
    node: NodeSpec,
    action: UndoAction,
    done: bool,
}

#[derive(Clone, Copy)]
enum UndoAction {
    Thaw,
    Heal,
}

impl Undo {
    fn new(cluster: &Cluster, node: &NodeSpec, action: UndoAction) -> Undo {
        Undo {
            runtime: cluster.runtime.clone(),
            node: node.clone(),
            action,
            done: false,
        }
    }

    async fn run(runtime: &dyn Runtime, node: &NodeSpec, action: UndoAction) -> Result<()> {
        match action {
            UndoAction::Heal => runtime.heal(node).await,
            UndoAction::Thaw => runtime.freeze(node, false).await.map(drop),
        }
    }

    async fn now(mut self) -> Result<()> {
        let result = Self::run(self.runtime.as_ref(), &self.node, self.action).await;
        self.done = result.is_ok();
        result
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Drop cannot await: a thread of its own drives the undo to its end (blocking this
        // one, which may be a worker of the async runtime, is what block_on forbids).
        let (runtime, node, action) = (self.runtime.clone(), self.node.clone(), self.action);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let _ =
            std::thread::spawn(move || handle.block_on(Undo::run(runtime.as_ref(), &node, action)))
                .join();
    }
}

/// The nodes named by the primary's `synchronous_standby_names` (all standbys for `*`).
async fn sync_standbys(ctx: &Ctx<'_>) -> Result<Vec<String>> {
    let c = ctx.cluster.connect(ctx.primary).await?;
    let setting = queries::show(&c, "synchronous_standby_names").await?;
    let names = crate::spec::parse_standby_names(&setting)
        .map(|(_, _, names)| names)
        .unwrap_or_default();
    let nodes: Vec<String> = ctx
        .cluster
        .spec
        .nodes
        .iter()
        .filter(|n| n.name != ctx.primary)
        .filter(|n| names.iter().any(|s| s == "*" || s == n.application_name()))
        .map(|n| n.name.clone())
        .collect();
    if nodes.is_empty() {
        return Err(Error::Precondition(format!(
            "the sync-block drill needs synchronous replication, and {} has none{}: enable it (`pgrepl sync enable`, or a [sync] section in {} and `pgrepl up`)",
            ctx.primary,
            if setting.is_empty() { String::new() } else { format!(" that names a node of the cluster ('{setting}')") },
            ctx.cluster.spec_path.display()
        )));
    }
    Ok(nodes)
}

/// The streaming standby of `primary` that has received the most WAL (the spec's order on a
/// tie): the one a switchover loses nothing to and waits least for.
async fn best_standby(cluster: &Cluster, primary: &str) -> Result<String> {
    let probes = topology::probe_all(cluster).await;
    let p = probes.iter().find(|p| p.name == primary);
    // Streaming standbys by application name, and whether commits wait for them.
    let streaming: Vec<(&str, bool)> = p
        .map(|p| {
            p.downstreams
                .iter()
                .filter(|d| d.state.as_deref() == Some("streaming"))
                .map(|d| {
                    let sync = matches!(d.sync_state.as_deref(), Some("sync" | "quorum"));
                    (d.application_name.as_str(), sync)
                })
                .collect()
        })
        .unwrap_or_default();
    // A synchronous standby first: it has every acknowledged commit, and the drill measures
    // the switchover a planned change would make. Then the one that received the most WAL.
    cluster
        .spec
        .nodes
        .iter()
        .filter_map(|n| {
            let (_, sync) = streaming
                .iter()
                .find(|(app, _)| *app == n.application_name())?;
            let probe = probes.iter().find(|q| q.name == n.name)?;
            Some((
                (*sync, probe.position.as_ref()?.receive_lsn),
                n.name.clone(),
            ))
        })
        .rev()
        .max_by_key(|(key, _)| *key)
        .map(|(_, name)| name)
        .ok_or_else(|| {
            Error::Precondition(format!(
                "no standby streams from {primary}: a switchover needs one (`pgrepl status`)"
            ))
        })
}
