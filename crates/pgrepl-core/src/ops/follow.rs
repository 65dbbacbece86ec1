//! `pgrepl standby follow NODE --upstream NODE`: repoint a standby without a restart
//! (PostgreSQL 13+ applies primary_conninfo and primary_slot_name on reload).

use std::time::Duration;

use crate::cluster::Cluster;
use crate::error::{Error, Result, ResultExt};
use crate::observe::lineage::{self, History};
use crate::observe::topology;
use crate::observe::twins::{self, WalSource};
use crate::ops::{config, slots, standby, Outcome};
use crate::postgres::queries;
use crate::progress::{figure, Progress};

/// How long a repointed standby may take to stream from its new upstream.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// `pgrepl standby follow`: records the new upstream in the spec once the node streams from it.
pub async fn follow(
    cluster: &mut Cluster,
    node: &str,
    upstream: &str,
    progress: &dyn Progress,
) -> Result<Outcome> {
    cluster.node(node)?;
    cluster.node(upstream)?;
    if node == upstream {
        return Err(Error::Invalid(format!("{node} cannot follow itself")));
    }
    let mut spec = cluster.spec.clone();
    spec.set_upstream(node, upstream, None)?;
    crate::ops::net::refuse_partitioned(
        cluster,
        node,
        upstream,
        &format!("point {node} at {upstream}"),
    )
    .await?;
    figure(progress, "node", node);
    figure(progress, "upstream", upstream);
    let previous = cluster.swap_spec(spec);
    let result = repoint(cluster, node, progress).await;
    cluster.settle_spec(previous, result)
}

/// Makes `node` stream from the upstream the spec gives it: checks that it can (it has not
/// gone past the fork point of the upstream's timeline), creates its slot there, rewrites
/// its settings and reloads (or starts it, when it is stopped), then waits until it streams.
pub async fn repoint(cluster: &Cluster, node: &str, progress: &dyn Progress) -> Result<Outcome> {
    let spec = cluster.node(node)?.clone();
    let Some(upstream) = spec.upstream.clone() else {
        return Err(Error::Precondition(format!(
            "{node} is the primary in the cluster file: it follows nobody"
        )));
    };
    let up = cluster.connect(&upstream).await.map_err(|e| {
        Error::Precondition(format!(
            "{node} cannot follow {upstream}: {upstream} is not reachable ({e}); start it with `pgrepl start {upstream}`"
        ))
    })?;
    let history = History::read(&up, &upstream).await?;
    let slot = spec.slot_or_default();
    let server = cluster.server(node)?;

    if !server.is_running().await {
        if !server.exists() {
            return Err(Error::Precondition(format!(
                "{node} has no data directory: create it with `pgrepl standby add {node} --slot {slot} --upstream {upstream}`"
            )));
        }
        let probe = topology::probe(cluster, node).await;
        let Some(end) = lineage::stopped_end(&probe) else {
            return Err(Error::Precondition(format!(
                "{node} was not shut down cleanly, so where its WAL ends is unknown: rejoin it with `pgrepl rejoin {node} --upstream {upstream}`"
            )));
        };
        if let Some(why) = lineage::cannot_follow(node, &history, &end) {
            return Err(Error::Precondition(why));
        }
        let src = WalSource::Stopped(&server.data);
        if let Some(why) = twins::refusal(node, &up, &history, &src, &end).await {
            return Err(Error::Precondition(why));
        }
        queries::ensure_slot(&up, &slot).await?;
        config::write_node_files(cluster, &spec, &server.data)?;
        progress.step(&format!("starting {node} as a standby of {upstream}"));
        server.start().await?;
        wait_following(cluster, node, &upstream).await?;
        return Ok(Outcome::Done(format!(
            "{node}: started as a standby of {upstream}, streaming through slot {slot}"
        )));
    }

    let c = cluster.connect(node).await?;
    let pos = queries::position(&c).await?;
    if !pos.in_recovery {
        return Err(Error::Precondition(format!(
            "{node} is a primary, not a standby: to make it follow {upstream} use `pgrepl rejoin {node} --upstream {upstream}`"
        )));
    }
    // Checked even when it looks connected: a twin's walreceiver connects and streams while
    // its startup process rejects every record.
    if let Some(end) = lineage::running_end(&c).await? {
        if let Some(why) = lineage::cannot_follow(node, &history, &end) {
            return Err(Error::Precondition(why));
        }
        if let Some(why) = twins::refusal(node, &up, &history, &WalSource::Running(&c), &end).await
        {
            return Err(Error::Precondition(why));
        }
    }
    let from_upstream = cluster.streams_from(&pos, &upstream);
    if from_upstream
        && pos.receiver_status.as_deref() == Some("streaming")
        && pos.slot_name.as_deref() == Some(slot.as_str())
    {
        return Ok(Outcome::AlreadyDone(format!(
            "{node} is already streaming from {upstream}"
        )));
    }
    let previous = cluster.sender(&pos).map(|n| n.name.clone());

    progress.step(&format!("repointing {node} to {upstream}"));
    queries::ensure_slot(&up, &slot).await?;
    config::write_node_files(cluster, &spec, &server.data)?;
    if pos.server_version_num < 130000 {
        // Before 13 primary_conninfo needs a restart.
        server.stop(crate::runtime::StopMode::Fast).await?;
        server.start().await?;
    } else {
        c.execute("SELECT pg_reload_conf()", &[])
            .await
            .what(|| format!("cannot reload {node}"))?;
    }
    wait_following(cluster, node, &upstream).await?;
    if let Some(prev) = previous.filter(|p| p != &upstream) {
        // Its slot there (and any other that nobody streams through) would hold WAL.
        slots::tidy(cluster, &prev).await;
    }
    Ok(Outcome::Done(format!(
        "{node} now streams from {upstream} through slot {slot}"
    )))
}

/// Waits until `node` streams from `upstream`; when it does not, says whether it refused the
/// upstream's timeline (it went past the fork point) or why else.
async fn wait_following(cluster: &Cluster, node: &str, upstream: &str) -> Result<()> {
    let up = cluster.node(upstream)?;
    let Err(e) = standby::wait_streaming_from(cluster, node, Some(up), FOLLOW_TIMEOUT).await else {
        return Ok(());
    };
    let log = cluster.server(node)?.log_tail(20).await;
    Err(if log.contains("forked off") {
        Error::Precondition(format!(
            "{node} cannot follow {upstream}: it has replayed WAL past the point where {upstream}'s timeline forked off (its log: \"forked off ... before current recovery point\"); rejoin it with `pgrepl rejoin {node} --upstream {upstream}`"
        ))
    } else {
        e
    })
}
