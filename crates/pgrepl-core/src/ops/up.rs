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
/// and no node's port is held by another program.
pub async fn preflight(cluster: &Cluster) -> Result<()> {
    let parent = cluster.dir.parent().unwrap_or(std::path::Path::new("/"));
    cluster
        .runner
        .check_reachable(&crate::runtime::local::existing_ancestor(parent))
        .await?;
    for n in &cluster.spec.nodes {
        if !cluster.server(&n.name).is_running() {
            standby::check_port_free(n)?;
        }
    }
    Ok(())
}
