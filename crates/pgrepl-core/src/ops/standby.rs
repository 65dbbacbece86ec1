//! `pgrepl standby add` (the lab's 10_setup_standby.sh / 22_setup_sync_standby.sh): clone a
//! standby through its slot and wait until it streams.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::error::{Error, Result, ResultExt};
use crate::node;
use crate::ops::{config, Outcome};
use crate::postgres::queries;
use crate::progress::Progress;
use crate::runtime;
use crate::spec::NodeSpec;

/// How long a standby may take from start to streaming.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Clones `node` from its upstream (as the spec says) unless it already has data.
pub async fn clone(cluster: &Cluster, node: &str, progress: &dyn Progress) -> Result<Outcome> {
    let spec = cluster.node(node)?.clone();
    let Some(upstream) = spec.upstream.clone() else {
        return Err(Error::Precondition(format!(
            "'{node}' has no upstream in the cluster file: it is the primary, it cannot be cloned"
        )));
    };
    let server = cluster.server(node)?;
    if server.exists() {
        if !server.is_running().await {
            progress.step(&format!("starting {node}"));
            server.start().await?;
            wait_streaming(cluster, node).await?;
            return Ok(Outcome::Done(format!(
                "{node}: started; streaming from {upstream}"
            )));
        }
        wait_streaming(cluster, node).await?;
        return Ok(Outcome::AlreadyDone(format!(
            "{node} is already streaming from {upstream}"
        )));
    }
    cluster.runtime.preflight(&spec)?;

    let up = cluster.connect(&upstream).await.map_err(|e| {
        Error::Precondition(format!("cannot clone {node}: its upstream '{upstream}' is not reachable ({e}); start it with `pgrepl start {upstream}`"))
    })?;
    if let Some(slot) = &spec.slot {
        queries::ensure_slot(&up, slot).await?;
    }
    drop(up);

    // Clone into a staging directory: a clone interrupted halfway leaves no data directory
    // that could pass for a node.
    let staging = cluster.dir.join(format!(".{node}.clone"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .what(|| format!("cannot remove the stale {}", staging.display()))?;
    }
    // Made by us for the OS user, who may not create directories in a cluster directory
    // pgrepl took over.
    cluster.create_private_dir(&staging)?;
    progress.step(&format!("pg_basebackup {node} from {upstream}"));
    let up_spec = cluster.node(&upstream)?;
    let mut cmd = cluster.runtime.command(&spec, "pg_basebackup");
    cmd.arg("-D")
        .arg(&staging)
        .args(["-X", "stream", "-c", "fast"])
        .arg(format!(
            "--dbname={}",
            cluster.tool_conninfo(
                &spec,
                up_spec,
                &cluster.spec.cluster.replication_user,
                &format!("pgrepl_clone_{node}")
            )
        ));
    if let Some(slot) = &spec.slot {
        cmd.args(["-S", slot]);
    }
    runtime::run(
        &format!("pg_basebackup of {node} from {upstream}"),
        &mut cmd,
    )
    .await?;
    // Settings copied from the upstream (port, who to follow) are replaced by this node's.
    // (pg_basebackup leaves out the upstream's lock file and postmaster.opts.)
    config::write_node_files(cluster, &spec, &staging)?;
    std::fs::rename(&staging, &server.data)
        .what(|| format!("cannot move the clone to {}", server.data.display()))?;

    progress.step(&format!("starting {node}"));
    server.start().await?;
    wait_streaming(cluster, node).await?;
    Ok(Outcome::Done(format!(
        "{node}: cloned from {upstream}{} and streaming",
        spec.slot
            .as_ref()
            .map(|s| format!(" through slot {s}"))
            .unwrap_or_default()
    )))
}

/// Adds a standby (to the spec too when it is new) and clones it: `pgrepl standby add`.
pub async fn add(
    cluster: &mut Cluster,
    node: &str,
    slot: &str,
    upstream: Option<&str>,
    application_name: Option<&str>,
    progress: &dyn Progress,
) -> Result<Outcome> {
    crate::spec::validate_slot_name(slot)?;
    let upstream = match upstream {
        Some(u) => {
            cluster.node(u)?;
            u.to_string()
        }
        None => cluster.spec.root().name.clone(),
    };
    let mut spec = cluster.spec.clone();
    let is_new = spec.node(node).is_err();
    if is_new {
        let port = spec
            .nodes
            .iter()
            .map(|n| n.port)
            .max()
            .unwrap_or(crate::spec::DEFAULT_BASE_PORT)
            + 1;
        spec.nodes.push(NodeSpec {
            name: node.to_string(),
            host: spec.root().host,
            port,
            upstream: Some(upstream.clone()),
            slot: Some(slot.to_string()),
            application_name: application_name.map(str::to_string),
        });
    } else {
        let n = spec.node_mut(node)?;
        if n.upstream.is_none() {
            return Err(Error::Precondition(format!(
                "'{node}' is the primary in the cluster file: it cannot be added as a standby"
            )));
        }
        if node::has_data(&cluster.data_dir(node))
            && (n.upstream.as_deref() != Some(&upstream)
                || n.slot.as_deref() != Some(slot)
                || application_name.is_some_and(|a| a != n.application_name()))
        {
            return Err(Error::Precondition(format!(
                "'{node}' already exists with upstream {}, slot {}: to repoint it use `pgrepl standby follow {node} --upstream {upstream}`",
                n.upstream.as_deref().unwrap_or("-"),
                n.slot.as_deref().unwrap_or("-")
            )));
        }
        n.upstream = Some(upstream.clone());
        n.slot = Some(slot.to_string());
        if let Some(a) = application_name {
            n.application_name = (a != node).then(|| a.to_string());
        }
    }
    spec.validate()?;
    cluster.runtime.prepare(&spec.nodes, progress).await?;
    let previous = cluster.swap_spec(spec);
    let result = clone(cluster, node, progress).await;
    cluster.settle_spec(previous, result)
}

/// Waits until the standby's walreceiver streams.
pub async fn wait_streaming(cluster: &Cluster, node: &str) -> Result<()> {
    wait_streaming_for(cluster, node, STREAM_TIMEOUT).await
}

/// Waits until the standby's walreceiver streams, on one connection once it has one.
pub async fn wait_streaming_for(cluster: &Cluster, node: &str, timeout: Duration) -> Result<()> {
    wait_streaming_from(cluster, node, None, timeout).await
}

/// Waits until the standby streams, from `upstream` when given (after a repoint the old
/// walreceiver may still be streaming from the previous upstream for a moment).
pub async fn wait_streaming_from(
    cluster: &Cluster,
    node: &str,
    upstream: Option<&NodeSpec>,
    timeout: Duration,
) -> Result<()> {
    let server = cluster.server(node)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut client = None;
    loop {
        if client.is_none() {
            client = cluster.connect(node).await.ok();
        }
        if let Some(c) = &client {
            match queries::position(c).await {
                Ok(p)
                    if p.receiver_status.as_deref() == Some("streaming")
                        && upstream.is_none_or(|u| cluster.streams_from(&p, &u.name)) =>
                {
                    return Ok(())
                }
                Ok(_) => {}
                Err(_) => client = None,
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Command {
                what: format!(
                    "{node} did not start streaming within {}s",
                    timeout.as_secs()
                ),
                detail: format!(
                    "--- last lines of {} ---\n{}",
                    cluster.log_file(node).display(),
                    server.log_tail(10).await
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
