//! `pgrepl standby add` (the lab's 10_setup_standby.sh / 22_setup_sync_standby.sh): clone a
//! standby through its slot and wait until it streams.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::error::{Error, Result, ResultExt};
use crate::node;
use crate::ops::{config, guard, Outcome};
use crate::postgres::conn::Conn;
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
            let started = guard::start(cluster, node, progress).await?;
            if matches!(started, guard::Started::Primary { .. }) {
                return Err(Error::Precondition(format!(
                    "{node} started as a primary: the cluster file makes it a standby of {upstream}, but its data is the newest primary's; make the cluster file agree (`pgrepl failover` records the running primary)"
                )));
            }
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
    runtime::die_with_parent(&mut cmd);
    cmd.arg("-D")
        .arg(&staging)
        // One syncfs afterwards instead of an fsync per file.
        .args(["-X", "stream", "-c", "fast", "--no-sync"])
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
    runtime::sync_filesystem(&staging)?;
    crate::crashpoint::reached("clone: base backup taken");
    // Settings copied from the upstream (port, who to follow) are replaced by this node's.
    // (pg_basebackup leaves out the upstream's lock file and postmaster.opts.)
    config::write_node_files(cluster, &spec, &staging)?;
    std::fs::rename(&staging, &server.data)
        .what(|| format!("cannot move the clone to {}", server.data.display()))?;
    crate::crashpoint::reached("clone: data directory in place");

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
    if !is_new {
        crate::ops::net::refuse_partitioned(
            cluster,
            node,
            &upstream,
            &format!("clone {node} from {upstream}"),
        )
        .await?;
    }
    if is_new {
        let highest = spec
            .nodes
            .iter()
            .map(|n| n.port)
            .max()
            .unwrap_or(crate::spec::DEFAULT_BASE_PORT);
        let port = highest.checked_add(1).ok_or_else(|| {
            Error::Invalid(format!(
                "no port is left after {highest} for {node}: add it to the cluster file with a port of its own, then run `pgrepl standby add {node} --slot {slot}`"
            ))
        })?;
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

/// Waits until the standby streams from `upstream` (the cluster file's upstream when None):
/// the upstream's pg_stat_replication shows it streaming, and its walreceiver names that
/// upstream as its sender. The walreceiver alone says "streaming" as soon as it starts, before
/// it has connected, also when the upstream refuses it (another database system, a timeline
/// it cannot follow): only the upstream's side proves that WAL flows. A standby of another
/// database system fails at once.
pub async fn wait_streaming_from(
    cluster: &Cluster,
    node: &str,
    upstream: Option<&NodeSpec>,
    timeout: Duration,
) -> Result<()> {
    let server = cluster.server(node)?;
    // Without one named, the cluster file's; a node the file makes the primary is waited on
    // for whichever node its walreceiver names (a caller with an older view of the file).
    let named = match upstream {
        Some(u) => Some(u.name.clone()),
        None => cluster.node(node)?.upstream.clone(),
    };
    let app = cluster.node(node)?.application_name().to_string();
    let deadline = std::time::Instant::now() + timeout;
    let (mut mine, mut theirs) = (None, None);
    loop {
        if mine.is_none() {
            mine = cluster.connect(node).await.ok();
        }
        let up_name = match &named {
            Some(n) => Some(n.clone()),
            None => match &mine {
                Some(c) => queries::position(c)
                    .await
                    .ok()
                    .and_then(|p| cluster.sender(&p).map(|n| n.name.clone())),
                None => None,
            },
        };
        if theirs.is_none() {
            if let Some(u) = &up_name {
                theirs = cluster.connect(u).await.ok();
            }
        }
        if let (Some(c), Some(u), Some(up_name)) = (&mine, &theirs, &up_name) {
            match streaming_state(cluster, c, u, up_name, &app).await {
                Ok(Some(true)) => return Ok(()),
                Ok(Some(false)) => {}
                Ok(None) => {
                    return Err(Error::Precondition(format!(
                        "{node}'s data belongs to another database system than {up_name}'s: it can never stream from it; re-clone it with `pgrepl rejoin {node} --upstream {up_name} --reclone` (the old directory is kept)"
                    )))
                }
                Err(_) => (mine, theirs) = (None, None),
            }
        }
        if std::time::Instant::now() >= deadline {
            // Error::Command reads "<what> failed: <detail>".
            return Err(Error::Command {
                what: format!(
                    "waiting for {node} to stream{}",
                    named
                        .as_deref()
                        .map(|u| format!(" from {u}"))
                        .unwrap_or_default(),
                ),
                detail: format!(
                    "it did not within {} s (see `pgrepl status` and `pgrepl logs {node}`); the last lines of {node}'s log:\n{}",
                    timeout.as_secs(),
                    server.log_tail(10).await
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Some(true) when the standby streams from `upstream` as both sides see it; None when the
/// two belong to different database systems.
async fn streaming_state(
    cluster: &Cluster,
    standby: &Conn,
    upstream: &Conn,
    up_name: &str,
    app: &str,
) -> Result<Option<bool>> {
    let p = queries::position(standby).await?;
    let u = queries::position(upstream).await?;
    if p.system_id.is_some() && u.system_id.is_some() && p.system_id != u.system_id {
        return Ok(None);
    }
    if p.receiver_status.as_deref() != Some("streaming") || !cluster.streams_from(&p, up_name) {
        return Ok(Some(false));
    }
    let seen = queries::downstreams(upstream).await?.iter().any(|d| {
        d.application_name == app
            && matches!(d.state.as_deref(), Some("streaming") | Some("catchup"))
    });
    Ok(Some(seen))
}
