//! `pgrepl up`: the lab's Quick Start in one command.

use futures::future::join_all;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::ops::{primary, standby, Outcome};
use crate::progress::Progress;

/// What `up` did to one node, or to the cluster as a whole (`node` None: the primary's
/// synchronous replication setting).
#[derive(Debug, Clone)]
pub struct Step {
    pub node: Option<String>,
    pub outcome: Outcome,
}

/// Brings every node of the spec up: the primary initialized and running, every standby
/// cloned (in parallel, wave by wave for cascades) and streaming.
pub async fn up(cluster: &Cluster, progress: &dyn Progress) -> Result<Vec<Step>> {
    preflight(cluster).await?;
    cluster
        .runtime
        .prepare(&cluster.spec.nodes, progress)
        .await?;
    let root = &cluster.spec.root().name;
    let mut steps = vec![Step {
        node: Some(root.clone()),
        outcome: primary::init(cluster, root, progress).await?,
    }];
    crate::crashpoint::reached("up: primary ready");
    // A standby that cannot come up (the start guard refuses it, say) stops neither the
    // clones under way nor the other standbys: each is brought up as far as it can be, and
    // the failures are reported together.
    let mut failed = Vec::new();
    for wave in cluster.spec.clone_waves() {
        let results = join_all(
            wave.iter()
                .map(|n| standby::clone(cluster, &n.name, progress)),
        )
        .await;
        for (n, r) in wave.iter().zip(results) {
            match r {
                Ok(outcome) => steps.push(Step {
                    node: Some(n.name.clone()),
                    outcome,
                }),
                Err(e) => failed.push(format!("{}: {e}", n.name)),
            }
        }
        crate::crashpoint::reached("up: standbys streaming");
    }
    if !failed.is_empty() {
        let up: Vec<&str> = steps.iter().filter_map(|s| s.node.as_deref()).collect();
        return Err(Error::Command {
            what: "up".into(),
            detail: format!("{} (up and running: {})", failed.join("; "), up.join(", ")),
        });
    }
    if let Some(setting) = crate::ops::sync::apply_to_primary(cluster, root).await? {
        steps.push(Step {
            node: None,
            outcome: Outcome::AlreadyDone(format!(
                "{root}: synchronous_standby_names = '{setting}'"
            )),
        });
    }
    Ok(steps)
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
