//! `pgrepl switchover --to NODE`: a planned role swap that loses nothing. The primary stops
//! cleanly (its shutdown checkpoint is the last WAL it writes and its walsenders send it), the
//! target replays that checkpoint, then is promoted; the old primary restarts as its standby
//! without a rewind, since its WAL ends exactly where the new timeline begins.

use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::observe::topology::{self, Probe};
use crate::ops::{config, follow, promote, standby, sync, wait, Outcome};
use crate::postgres::{queries, Lsn};
use crate::progress::Progress;
use crate::runtime::StopMode;

/// How long the target may take to replay the old primary's last WAL.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SwitchoverReport {
    pub old_primary: String,
    pub new_primary: String,
    pub timeline: u32,
    /// From the old primary's stop signal until the target accepted writes.
    pub write_gap: Duration,
    pub stop: Duration,
    pub catch_up: Duration,
    pub promote: Duration,
    pub total: Duration,
}

/// `pgrepl switchover --to NODE`.
pub async fn switchover(
    cluster: &mut Cluster,
    target: &str,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let started = Instant::now();
    cluster.node(target)?;
    let probes = topology::probe_all(cluster).await;
    let primaries: Vec<&Probe> = probes.iter().filter(|p| p.is_primary()).collect();
    let old = match primaries.as_slice() {
        [one] => one.name.clone(),
        [] => {
            return Err(Error::Precondition(format!(
                "there is no running primary to switch over from: for an unplanned change use `pgrepl failover --to {target}`"
            )))
        }
        many => {
            return Err(Error::Precondition(format!(
                "split brain: {} are all primaries; rejoin the stale one first (`pgrepl rejoin NODE --upstream NODE`)",
                many.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(" and ")
            )))
        }
    };
    if old == target {
        return Ok(Outcome::AlreadyDone(format!(
            "{target} is already the primary: nothing to do"
        )));
    }
    let t = probes.iter().find(|p| p.name == target).expect("probed");
    let streaming_from_old = t.position.as_ref().is_some_and(|p| {
        p.receiver_status.as_deref() == Some("streaming") && cluster.streams_from(p, &old)
    });
    if !t.is_standby() || !streaming_from_old {
        return Err(Error::Precondition(format!(
            "{target} is not a healthy standby streaming from the primary {old} ({}): a switchover needs one; check `pgrepl status`, or repoint it first with `pgrepl standby follow {target} --upstream {old}`",
            describe(t)
        )));
    }
    // The standbys that follow the old primary follow the new one afterwards.
    let others: Vec<String> = probes
        .iter()
        .filter(|p| p.name != target && p.name != old && p.is_standby())
        .filter(|p| {
            p.position
                .as_ref()
                .is_some_and(|x| cluster.streams_from(x, &old))
                || cluster
                    .node(&p.name)
                    .is_ok_and(|n| n.upstream.as_deref() == Some(&old))
        })
        .map(|p| p.name.clone())
        .collect();
    let mut next = cluster.spec.clone();
    next.set_primary(target)?;
    for o in &others {
        next.set_upstream(o, target, None)?;
    }

    let tc = cluster.connect(target).await?;
    let old_server = cluster.server(&old)?;
    if !old_server.is_running().await {
        return Err(Error::Precondition(format!("{old} stopped meanwhile")));
    }

    // From here the cluster refuses writes until the target is promoted.
    progress.step(&format!("stopping {old} (fast shutdown)"));
    let t0 = Instant::now();
    tokio::time::timeout(STOP_TIMEOUT, old_server.stop(StopMode::Fast))
        .await
        .map_err(|_| Error::Timeout {
            what: format!("{old} to shut down"),
            after: STOP_TIMEOUT,
        })??;
    let stop = t0.elapsed();
    let control = old_server.controldata().await?;
    let Some(ckpt) = control
        .checkpoint_lsn
        .filter(|_| control.state == "shut down")
    else {
        old_server.start().await?;
        return Err(Error::Command {
            what: format!("switchover to {target}"),
            detail: format!(
                "{old} did not shut down cleanly (state '{}'); it was started again as the primary",
                control.state
            ),
        });
    };
    progress.step(&format!(
        "waiting for {target} to replay {old}'s shutdown checkpoint"
    ));
    let t1 = Instant::now();
    let caught_up = wait::until(
        &format!("{target} to replay {old}'s shutdown checkpoint at {ckpt}"),
        CATCH_UP_TIMEOUT,
        || async {
            let row = tc
                .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
                .await
                .ok()?;
            let replayed: Lsn = row.get::<_, Option<String>>(0)?.parse().ok()?;
            // Replay positions are record ends: past the checkpoint's start means replayed.
            (replayed > ckpt).then_some(())
        },
    )
    .await;
    if let Err(e) = caught_up {
        // Nothing has changed yet: the old primary takes its role back.
        old_server.start().await?;
        return Err(Error::Command {
            what: format!("switchover to {target}"),
            detail: format!("{e}; {old} was started again as the primary, nothing changed"),
        });
    }
    let catch_up = t1.elapsed();
    progress.step(&format!("promoting {target}"));
    let promoted = promote::promote_now(&tc, target).await?;
    let write_gap = t0.elapsed();
    cluster.spec = next;
    cluster.save_spec()?;
    let mut lines = vec![format!(
        "switched over from {old} to {target}: {target} is the primary on timeline {}; writes were unavailable for {:.3} s (stop {:.3} s, catch-up {:.3} s, promote {:.3} s)",
        promoted.timeline,
        write_gap.as_secs_f64(),
        stop.as_secs_f64(),
        catch_up.as_secs_f64(),
        promoted.took.as_secs_f64()
    )];
    if let Some(setting) = sync::apply_to_primary(cluster, target).await? {
        lines.push(format!("{target}: synchronous_standby_names = '{setting}'"));
    }

    progress.step(&format!("restarting {old} as a standby of {target}"));
    let cluster_ref: &Cluster = cluster;
    let demote = demote(cluster_ref, &old, target);
    let repoints = join_all(
        others
            .iter()
            .map(|o| follow::repoint(cluster_ref, o, progress)),
    );
    let (demoted, repointed) = futures::join!(demote, repoints);
    demoted?;
    lines.push(format!("{old} restarted as a standby of {target}"));
    for (o, r) in others.iter().zip(repointed) {
        match r {
            Ok(outcome) => lines.push(outcome.message().to_string()),
            Err(e) => lines.push(format!("WARNING: {o} could not follow {target}: {e}")),
        }
    }
    if let Some(w) = sync::blocked_commits_warning(cluster_ref, target).await {
        lines.push(w);
    }
    let report = SwitchoverReport {
        old_primary: old.clone(),
        new_primary: target.to_string(),
        timeline: promoted.timeline,
        write_gap,
        stop,
        catch_up,
        promote: promoted.took,
        total: started.elapsed(),
    };
    lines.push(format!(
        "switchover done in {:.2} s",
        report.total.as_secs_f64()
    ));
    Ok(Outcome::Done(lines.join("\n")))
}

/// The old primary, stopped cleanly, restarts as a standby of the new one: its WAL ends with
/// the checkpoint the new primary replayed before its promotion, so no rewind is needed.
async fn demote(cluster: &Cluster, old: &str, target: &str) -> Result<()> {
    let spec = cluster.node(old)?.clone();
    let tc = cluster.connect(target).await?;
    queries::ensure_slot(&tc, &spec.slot_or_default()).await?;
    let server = cluster.server(old)?;
    config::write_node_files(cluster, &spec, &server.data)?;
    server.start().await?;
    standby::wait_streaming_from(
        cluster,
        old,
        Some(cluster.node(target)?),
        standby::STREAM_TIMEOUT,
    )
    .await
}

fn describe(p: &Probe) -> String {
    match &p.position {
        None if !p.running => "it is stopped".into(),
        None => "it does not answer".into(),
        Some(x) if !x.in_recovery => "it is a primary".into(),
        Some(x) => format!(
            "walreceiver {}",
            x.receiver_status.as_deref().unwrap_or("not running")
        ),
    }
}
