//! Carries out the decision's actions with the operations the commands use (`ops::promote`,
//! `ops::follow`, `ops::rejoin`, the start guard, `ops::slots`, `ops::sync`), and turns each
//! outcome into an event: Done only when PostgreSQL (or the runtime, for a fence) confirmed
//! it, Failed otherwise. The next tick's observation tells the decision what came of it.

use std::time::{Duration, Instant};

use super::action::Action;
use super::event::{Event, EventKind};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::ops::guard::{self, Started};
use crate::ops::{follow, promote, rejoin, slots, sync, Outcome};
use crate::progress::Silent;
use crate::runtime::{NetFault, ProcessState, StopMode};

/// What an action achieved: the line for the log and the figures that go with it.
struct Done {
    message: String,
    fields: Vec<(&'static str, serde_json::Value)>,
}

impl Done {
    fn new(message: String) -> Done {
        Done {
            message,
            fields: Vec::new(),
        }
    }

    fn with(mut self, key: &'static str, value: impl Into<serde_json::Value>) -> Done {
        self.fields.push((key, value.into()));
        self
    }
}

/// Carries out one action (not a `Log`) and returns its outcome as an event. `at_ms` is the
/// tick's clock, for the event.
pub async fn execute(cluster: &mut Cluster, action: &Action, at_ms: u64) -> Event {
    let started = Instant::now();
    let result = run(cluster, action).await;
    let ms = started.elapsed().as_millis() as u64;
    let (kind, mut event) = match result {
        Ok(done) => {
            let mut e = Event::new(
                at_ms,
                EventKind::Done,
                action.code(),
                action.node(),
                done.message,
            );
            for (k, v) in done.fields {
                e = e.with(k, v);
            }
            (EventKind::Done, e)
        }
        Err(err) => (
            EventKind::Failed,
            Event::new(
                at_ms,
                EventKind::Failed,
                action.code(),
                action.node(),
                format!("{}: {err}", action.describe()),
            ),
        ),
    };
    event = event.with("duration_ms", ms);
    tracing::info!(
        action = action.code(),
        node = action.node(),
        ?kind,
        ms,
        "{}",
        event.message
    );
    event
}

async fn run(cluster: &mut Cluster, action: &Action) -> Result<Done> {
    // An operation across a partition the runtime put in place would only wait out its
    // timeouts (holding the cluster's lock meanwhile): it waits for the heal instead.
    let across = match action {
        Action::Repoint { node, upstream } | Action::Rejoin { node, upstream } => {
            vec![node.as_str(), upstream.as_str()]
        }
        Action::RestartStandby { node } | Action::StartPrimary { node } => vec![node.as_str()],
        _ => Vec::new(),
    };
    for n in across {
        if let Some(fault) = partitioned(cluster, n).await {
            return Err(Error::Precondition(format!(
                "{n} is {fault}: `{}` waits until the partition heals (`pgrepl net heal {n}`)",
                action.describe()
            )));
        }
    }
    match action {
        Action::Fence { node } => fence(cluster, node).await,
        Action::Promote { node, reason } => {
            let c = cluster.connect(node).await?;
            let p = promote::promote_now(&c, node).await?;
            drop(c);
            // The cluster file records the new primary, and it gets the shared settings and
            // its `[sync]`, as `pgrepl failover` does.
            let mut next = cluster.spec.clone();
            next.set_primary(node)?;
            promote::record_primary(cluster, next, node, "monitor").await?;
            Ok(Done::new(format!(
                "{node} promoted: primary on timeline {} ({reason})",
                p.timeline
            ))
            .with("timeline", p.timeline)
            .with("promote_ms", p.took.as_millis() as u64))
        }
        Action::StartPrimary { node } => match guard::start(cluster, node, &Silent).await? {
            s @ Started::Primary { .. } => Ok(Done::new(s.describe(node))),
            s => Err(Error::Precondition(format!(
                "the start guard started {node} as a standby, not as the primary: {}",
                s.describe(node)
            ))),
        },
        Action::RestartStandby { node } => {
            let server = cluster.server(node)?;
            if server.is_running().await {
                server.stop(StopMode::Fast).await?;
            }
            match guard::start(cluster, node, &Silent).await? {
                s @ Started::Standby {
                    streaming: true, ..
                } => Ok(Done::new(s.describe(node))),
                s => Err(Error::Precondition(s.describe(node))),
            }
        }
        Action::Repoint { node, upstream } => {
            let o = follow::follow(cluster, node, upstream, &Silent).await?;
            Ok(Done::new(o.message().to_string()))
        }
        Action::Rejoin { node, upstream } => rejoin(cluster, node, upstream).await,
        Action::DropSlot { node, slot } => {
            let c = cluster.connect(node).await?;
            if slots::drop_inactive(&c, slot).await? {
                Ok(Done::new(format!("dropped the slot {slot} on {node}")))
            } else {
                Err(Error::Precondition(format!(
                    "the slot {slot} on {node} is gone or in use again: left alone"
                )))
            }
        }
        Action::ApplySync { primary } => {
            let set = sync::apply_to_primary(cluster, primary).await?;
            Ok(Done::new(match set {
                Some(s) => format!("{primary}: synchronous_standby_names = '{s}'"),
                None => format!("{primary}: no synchronous replication (as the cluster file says)"),
            }))
        }
        Action::DegradeSync { primary } => {
            let c = cluster.connect(primary).await?;
            sync::configure(&c, primary, None).await?;
            Ok(Done::new(format!(
                "{primary}: synchronous_standby_names cleared until a synchronous standby streams again (on_sync_loss = \"degrade\"): commits no longer wait"
            )))
        }
        Action::Log(e) => Ok(Done::new(e.message.clone())),
    }
}

/// Makes sure the node cannot acknowledge a write: a frozen node is killed (thawing it would
/// let it write); a running one is stopped (a fast shutdown sends its standbys all it wrote)
/// and killed when that does not finish in time. Done only when the runtime says it is gone.
async fn fence(cluster: &Cluster, node: &str) -> Result<Done> {
    let server = cluster.server(node)?;
    let how = match server.state().await? {
        ProcessState::Stopped => "it had stopped",
        ProcessState::Frozen => {
            server.kill().await?;
            "killed (it was frozen)"
        }
        ProcessState::Running if answers(cluster, node).await => {
            // It answers (a split brain's stale side): a fast shutdown sends its standbys
            // what it wrote, if it finishes in time.
            promote::fence_within(cluster, &[node], FENCE_PATIENCE, &Silent).await?;
            "stopped (or killed when the stop did not finish)"
        }
        ProcessState::Running => {
            // Silent (partitioned, hung): no standby hears from it, so a clean shutdown
            // could send nobody anything, and would only wait.
            server.kill().await?;
            "killed (it did not answer)"
        }
    };
    match server.state().await? {
        ProcessState::Stopped => Ok(Done::new(format!("fenced {node}: {how}"))),
        other => Err(Error::Precondition(format!(
            "{node} is still {other:?} after the fence: it may still acknowledge writes"
        ))),
    }
}

/// The partition the runtime has in force on the node, if any.
async fn partitioned(cluster: &Cluster, node: &str) -> Option<NetFault> {
    let spec = cluster.node(node).ok()?;
    let faults = cluster.runtime.faults(spec).await.ok()?;
    faults
        .into_iter()
        .find(|f| matches!(f, NetFault::Partition { .. } | NetFault::HostPartition))
}

/// How long a fenced node that answers gets to shut down cleanly before it is killed.
const FENCE_PATIENCE: Duration = Duration::from_secs(2);

/// Whether the node's PostgreSQL answers a question now (briefly: a silent node is the
/// common case of a fence).
async fn answers(cluster: &Cluster, node: &str) -> bool {
    let ask = async {
        let c = cluster.connect(node).await.ok()?;
        c.query_one("SELECT 1", &[]).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(250), ask).await,
        Ok(Some(_))
    )
}

/// pg_rewind, or a re-clone (the old directory kept) when a rewind cannot work, as
/// `pgrepl rejoin` does; the WAL it discarded goes into the event.
async fn rejoin(cluster: &mut Cluster, node: &str, upstream: &str) -> Result<Done> {
    let first = rejoin::rejoin(cluster, node, upstream, None, false, false, &Silent).await;
    let (outcome, recloned) = match first {
        // Every refusal of a rewind names the re-clone as its way out.
        Err(Error::Precondition(why)) if why.contains("--reclone") => {
            tracing::info!(node, %why, "a rewind cannot work: re-cloning");
            let o = rejoin::rejoin(cluster, node, upstream, None, true, false, &Silent).await?;
            (o, true)
        }
        other => (other?, false),
    };
    let message = outcome.message().to_string();
    let mut done = Done::new(message.clone()).with("recloned", recloned);
    if let Some(bytes) = discarded_bytes(&message) {
        done = done.with("discarded_wal_bytes", bytes);
    }
    if matches!(outcome, Outcome::AlreadyDone(_)) {
        done = done.with("already", true);
    }
    Ok(done)
}

/// The bytes of WAL a rejoin reported discarding ("discarded N bytes of WAL", as
/// `rejoin::Discarded::describe` words it).
fn discarded_bytes(message: &str) -> Option<u64> {
    let rest = message.split("discarded ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    rest[digits.len()..]
        .starts_with(" bytes")
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discarded_bytes_are_read_from_rejoins_words() {
        assert_eq!(
            discarded_bytes("fork point 0/3000000 on timeline 1; discarded 4096 bytes of WAL of timeline 1 past it"),
            Some(4096)
        );
        assert_eq!(discarded_bytes("pg1 rejoined as a standby"), None);
    }
}
