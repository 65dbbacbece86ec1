//! Replication lag over a drill: every standby's replay position against the primary's
//! current position, sampled at a fixed interval on every node at once.

use std::time::{Duration, Instant};

use crate::postgres::conn::Conn;
use futures::future::join_all;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::error::Result;
use crate::postgres::conn::{self, ConnParams};
use crate::postgres::queries::{self, Position};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagSample {
    #[serde(serialize_with = "crate::drill::ser_ms")]
    pub at: Duration,
    pub node: String,
    /// WAL the primary had written that this standby had not replayed.
    pub lag_bytes: u64,
}

pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<LagSample>>,
}

/// After a failed connect, a node is left alone this long: a frozen node would otherwise
/// collect a connection attempt every tick, all served at once when it thaws.
const BACKOFF: Duration = Duration::from_millis(200);

struct NodeProbe {
    name: String,
    params: ConnParams,
    client: Option<Conn>,
    /// A connection being opened in the background: connecting (SCRAM, a slow or frozen
    /// node) must not stall the sampling of the others.
    connecting: Option<JoinHandle<Result<Conn>>>,
    retry_at: Instant,
}

impl NodeProbe {
    /// The node's position, within `budget`; a connection that did not answer in time is
    /// dropped (its query's state is unknown).
    async fn sample(&mut self, budget: Duration) -> Option<Position> {
        if self.client.is_none() {
            match self.connecting.take() {
                Some(task) if task.is_finished() => match task.await {
                    Ok(Ok(c)) => self.client = Some(c),
                    Ok(Err(e)) => {
                        tracing::debug!(node = %self.name, error = %e, "sampler cannot connect");
                        self.retry_at = Instant::now() + BACKOFF;
                    }
                    Err(_) => self.retry_at = Instant::now() + BACKOFF,
                },
                Some(task) => self.connecting = Some(task),
                None if Instant::now() >= self.retry_at => {
                    let params = self.params.clone();
                    self.connecting =
                        Some(tokio::spawn(async move { conn::connect(&params).await }));
                }
                None => {}
            }
        }
        let c = self.client.as_ref()?;
        match tokio::time::timeout(budget, queries::position(c)).await {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                tracing::debug!(node = %self.name, error = %e, "sampler query failed");
                self.client = None;
                None
            }
            Err(_) => {
                self.client = None;
                self.retry_at = Instant::now() + BACKOFF;
                None
            }
        }
    }
}

impl Sampler {
    /// Starts sampling every node each `interval`, times counted from `origin`.
    pub fn start(cluster: &Cluster, origin: Instant, interval: Duration) -> Result<Sampler> {
        let secrets = cluster.secrets()?;
        let mut nodes: Vec<NodeProbe> = cluster
            .spec
            .nodes
            .iter()
            .map(|n| NodeProbe {
                name: n.name.clone(),
                params: ConnParams {
                    application_name: "pgrepl-drill-sampler".into(),
                    connect_timeout: Duration::from_secs(1),
                    ..cluster.superuser_params(n, &secrets)
                },
                client: None,
                connecting: None,
                retry_at: Instant::now(),
            })
            .collect();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let at = origin.elapsed();
                let positions = join_all(nodes.iter_mut().map(|n| n.sample(interval))).await;
                samples.extend(lags(at, &nodes, &positions));
            }
            samples
        });
        Ok(Sampler { stop, task })
    }

    pub async fn stop(self) -> Vec<LagSample> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// Each standby's lag against the primary seen in the same round; none without a primary.
fn lags(at: Duration, nodes: &[NodeProbe], positions: &[Option<Position>]) -> Vec<LagSample> {
    let Some(primary_lsn) = positions
        .iter()
        .flatten()
        .filter(|p| !p.in_recovery)
        .filter_map(|p| p.current_lsn)
        .max()
    else {
        return Vec::new();
    };
    nodes
        .iter()
        .zip(positions)
        .filter_map(|(n, p)| {
            let p = p.as_ref().filter(|p| p.in_recovery)?;
            Some(LagSample {
                at,
                node: n.name.clone(),
                lag_bytes: primary_lsn.bytes_after(p.replay_lsn?),
            })
        })
        .collect()
}
