//! `pgrepl up`: the lab's Quick Start in one command.

use futures::future::try_join_all;

use crate::cluster::Cluster;
use crate::error::Result;
use crate::ops::{primary, standby, Outcome};
use crate::progress::Progress;

/// Brings every node of the spec up: the primary initialized and running, every standby
/// cloned (in parallel, wave by wave for cascades) and streaming.
pub async fn up(cluster: &Cluster, progress: &dyn Progress) -> Result<Vec<Outcome>> {
    preflight(cluster).await?;
    cluster
        .runtime
        .prepare(&cluster.spec.nodes, progress)
        .await?;
    let mut outcomes = vec![primary::init(cluster, &cluster.spec.root().name, progress).await?];
    for wave in cluster.spec.clone_waves() {
        let results = try_join_all(
            wave.iter()
                .map(|n| standby::clone(cluster, &n.name, progress)),
        )
        .await?;
        outcomes.extend(results);
    }
    let root = &cluster.spec.root().name;
    if let Some(setting) = crate::ops::sync::apply_to_primary(cluster, root).await? {
        outcomes.push(Outcome::AlreadyDone(format!(
            "{root}: synchronous_standby_names = '{setting}'"
        )));
    }
    Ok(outcomes)
}

/// Everything that can be checked before touching anything: the OS user can reach the data,
/// and the runtime's checks of every node that is not running (local: its port is free).
pub async fn preflight(cluster: &Cluster) -> Result<()> {
    cluster.check_reachable().await?;
    for n in &cluster.spec.nodes {
        if !cluster.is_running(&n.name).await {
            cluster.runtime.preflight(n)?;
        }
    }
    Ok(())
}
