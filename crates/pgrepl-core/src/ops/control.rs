//! Starting, stopping and crashing nodes (the lab's `docker start`/`docker stop`), and
//! `pgrepl down`.

use futures::future::try_join_all;

use crate::cluster::Cluster;
use crate::cluster_dir::{self, PurgePlan};
use crate::error::{Error, Result};
use crate::node;
use crate::ops::{guard, Outcome};
use crate::progress::Progress;
use crate::runtime::{self, ProcessState, StopMode};

pub async fn start(cluster: &Cluster, node: &str, progress: &dyn Progress) -> Result<Outcome> {
    let spec = cluster.node(node)?;
    let server = cluster.server(node)?;
    if !server.exists() {
        return Err(Error::Precondition(format!(
            "'{node}' has no data directory yet: create it with {}",
            spec.create_hint()
        )));
    }
    if server.is_running().await {
        return Ok(Outcome::AlreadyDone(format!("{node} is already running")));
    }
    let started = guard::start(cluster, node, progress).await?;
    Ok(Outcome::Done(started.describe(node)))
}

/// Refuses, before anything stops, to stop a frozen node: its processes cannot act on the
/// shutdown signal, so a stop would only wait out its timeout (and on docker the engine
/// would thaw it to deliver the signal, letting it run again).
pub async fn refuse_frozen(cluster: &Cluster, nodes: &[String]) -> Result<()> {
    for node in nodes {
        if cluster.server(node)?.state().await? == ProcessState::Frozen {
            return Err(Error::Precondition(runtime::frozen_refusal(node)));
        }
    }
    Ok(())
}

pub async fn stop(cluster: &Cluster, node: &str, progress: &dyn Progress) -> Result<Outcome> {
    refuse_frozen(cluster, &[node.to_string()]).await?;
    let server = cluster.server(node)?;
    if !server.is_running().await {
        return Ok(Outcome::AlreadyDone(format!("{node} is already stopped")));
    }
    progress.step(&format!("stopping {node}"));
    server.stop(StopMode::Fast).await?;
    Ok(Outcome::Done(format!("{node} stopped (fast shutdown)")))
}

pub async fn kill(cluster: &Cluster, node: &str) -> Result<Outcome> {
    if cluster.server(node)?.kill().await? {
        Ok(Outcome::Done(format!(
            "{node} killed (SIGKILL of the postmaster and all its backends)"
        )))
    } else {
        Ok(Outcome::AlreadyDone(format!("{node} is not running")))
    }
}

/// Stops every running node, in parallel, then removes what the runtime made for them
/// (`purge`: for good, the data goes too).
pub async fn down(cluster: &Cluster, purge: bool, progress: &dyn Progress) -> Result<Vec<Outcome>> {
    // A monitor would take stopped nodes for failed ones, and write into a purged directory.
    if let Some(pid) = crate::monitor::run::running(&cluster.dir) {
        return Err(Error::Precondition(format!(
            "a monitor runs for cluster '{}' (pid {pid}): stop it first (Ctrl-C in its terminal, or `kill {pid}`), then run down again",
            cluster.name()
        )));
    }
    let names: Vec<String> = cluster.spec.nodes.iter().map(|n| n.name.clone()).collect();
    refuse_frozen(cluster, &names).await?;
    let mut outcomes = try_join_all(
        cluster
            .spec
            .nodes
            .iter()
            .map(|n| stop(cluster, &n.name, progress)),
    )
    .await?;
    let removed = cluster.runtime.teardown(&cluster.spec.nodes, purge).await?;
    outcomes.extend(removed.into_iter().map(Outcome::Done));
    Ok(outcomes)
}

fn purge_plan(cluster: &Cluster) -> Result<Option<PurgePlan>> {
    let nodes: Vec<&str> = cluster.spec.nodes.iter().map(|n| n.name.as_str()).collect();
    cluster_dir::purge_plan(&cluster.dir, cluster.name(), &nodes)
}

/// What `down --purge` would delete, for the confirmation prompt; None when there is
/// nothing.
pub fn purge_summary(cluster: &Cluster) -> Result<Option<String>> {
    let Some(plan) = purge_plan(cluster)? else {
        return Ok(None);
    };
    let nodes: Vec<&str> = cluster
        .spec
        .nodes
        .iter()
        .filter(|n| node::has_data(&cluster.data_dir(&n.name)))
        .map(|n| n.name.as_str())
        .collect();
    let size: u64 = plan.delete.iter().map(|p| dir_size(p)).sum();
    Ok(Some(format!(
        "this deletes cluster '{}' for good: what pgrepl created in {} ({} MB, data of {}), its logs and its passwords{}",
        cluster.name(),
        cluster.dir.display(),
        size / (1024 * 1024),
        if nodes.is_empty() {
            "no node".to_string()
        } else {
            nodes.join(", ")
        },
        foreign_note(&plan)
    )))
}

fn foreign_note(plan: &PurgePlan) -> String {
    if plan.foreign.is_empty() {
        return String::new();
    }
    format!(
        "; files pgrepl did not create are kept ({})",
        names(&plan.foreign)
    )
}

fn names(paths: &[std::path::PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// Deletes what pgrepl created in the cluster's directory, and the directory when nothing
/// else is in it and pgrepl created it. Nodes must be stopped first.
pub async fn purge(cluster: &Cluster) -> Result<Outcome> {
    for n in &cluster.spec.nodes {
        if cluster.is_running(&n.name).await {
            return Err(Error::Precondition(format!(
                "'{}' is still running: stop it first",
                n.name
            )));
        }
    }
    let Some(plan) = purge_plan(cluster)? else {
        return Ok(Outcome::AlreadyDone(format!(
            "cluster '{}' has no data to purge",
            cluster.name()
        )));
    };
    // A server may run on a directory the cluster file no longer names (a node removed from
    // it by hand): its data is not deleted under it. (Processes of the host's pid namespace
    // only: a container's postmaster.pid holds a pid of its own namespace.)
    if cluster.runtime.kind() != crate::spec::RuntimeKind::Docker {
        for d in &plan.delete {
            let live = runtime::signals::pidfile_pid(d).filter(|p| runtime::signals::alive(*p));
            if let Some(pid) = live {
                return Err(Error::Precondition(format!(
                    "a server (pid {pid}) still runs on {}: stop it first (`pgrepl stop NODE`, or `kill {pid}` for a node no longer in the cluster file)",
                    d.display()
                )));
            }
        }
    }
    let dir = &cluster.dir;
    if !cluster_dir::purge(dir, &plan)? {
        return Ok(Outcome::Done(if plan.foreign.is_empty() {
            format!(
                "deleted what pgrepl created in {}; kept the directory itself, which pgrepl did not create",
                dir.display()
            )
        } else {
            format!(
                "deleted what pgrepl created in {}; kept the directory and what pgrepl did not create in it: {}",
                dir.display(),
                names(&plan.foreign)
            )
        }));
    }
    // The default `.pgrepl/` holder goes too once it holds no other cluster.
    if let Some(parent) = dir.parent().filter(|p| p.ends_with(".pgrepl")) {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(Outcome::Done(format!("deleted {}", dir.display())))
}

fn dir_size(p: &std::path::Path) -> u64 {
    if p.is_file() {
        return std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    }
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
