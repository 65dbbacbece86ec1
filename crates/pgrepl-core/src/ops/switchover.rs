//! `pgrepl switchover --to NODE`: a planned role swap that loses nothing. The primary stops
//! cleanly (its shutdown checkpoint is the last WAL it writes and its walsenders send it), the
//! target replays that checkpoint, then is promoted; the old primary restarts as its standby
//! without a rewind, since its WAL ends exactly where the new timeline begins.
//!
//! A switchover killed halfway is completed by running it again. A journal, written before the
//! old primary is stopped, names the two nodes; the rest is read back from PostgreSQL: whether
//! the old primary has stopped, whether the target has been promoted, who follows whom. When
//! the target cannot take over, the old primary is started again as the primary, as if
//! nothing had happened.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::crashpoint;
use crate::error::{Error, Result, ResultExt};
use crate::observe::authority;
use crate::observe::lineage;
use crate::observe::topology::{self, Probe};
use crate::ops::{follow, journal, promote, slots, sync, wait, Outcome};
use crate::postgres::conn::{Conn, SLOW_BOUND};
use crate::postgres::timeline::{self, Lineage};
use crate::postgres::Lsn;
use crate::progress::{figure, Progress};
use crate::runtime::StopMode;

/// How long the target may take to replay the old primary's last WAL.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

const JOURNAL: &str = "switchover";

/// Written before the old primary is stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    old: String,
    target: String,
}

/// The figures of an uninterrupted switchover.
struct Timings {
    started: Instant,
    /// When the old primary was asked to stop: from here writes are refused.
    stop_asked: Instant,
    stop: Duration,
}

/// `pgrepl switchover --to NODE`.
pub async fn switchover(
    cluster: &mut Cluster,
    target: &str,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let started = Instant::now();
    cluster.node(target)?;
    let journal: Option<Journal> = journal::read(cluster, JOURNAL);
    if let Some(j) = journal.as_ref().filter(|j| j.target != target) {
        return Err(Error::Precondition(format!(
            "a switchover from {} to {} was interrupted: complete it first with `pgrepl switchover --to {}`",
            j.old, j.target, j.target
        )));
    }
    let probes = topology::probe_all(cluster).await;
    let primaries: Vec<&Probe> = probes.iter().filter(|p| p.is_primary()).collect();
    match primaries.as_slice() {
        [p] if p.name == target => {
            let old = match &journal {
                Some(j) => Some(j.old.clone()),
                None => leftover_old_primary(cluster, &probes, target),
            };
            if journal.is_none() && old.is_none() && everyone_follows(cluster, &probes, target) {
                return Ok(Outcome::AlreadyDone(format!(
                    "{target} is already the primary: nothing to do"
                )));
            }
            figure(progress, "old_primary", &old);
            figure(progress, "new_primary", target);
            figure(progress, "completed_interrupted", true);
            let first = format!(
                "{target} is already the primary: completing the interrupted switchover{}",
                old.as_ref()
                    .map(|o| format!(" from {o}"))
                    .unwrap_or_default()
            );
            finish(cluster, old.as_deref(), target, vec![first], None, progress).await
        }
        [p] => {
            let old = p.name.clone();
            if journal.is_some() {
                // It named this switchover, but the old primary it stopped is running as the
                // primary again: nothing of it is left to complete.
                journal::clear(cluster, JOURNAL)?;
            }
            from_the_start(cluster, &old, target, &probes, started, progress).await
        }
        [] => match journal {
            Some(j) => {
                figure(progress, "completed_interrupted", true);
                resume_stopped(cluster, &j.old, target, progress).await
            }
            None => Err(Error::Precondition(format!(
                "there is no running primary to switch over from: for an unplanned change use `pgrepl failover --to {target}`"
            ))),
        },
        many => Err(promote::split_brain(cluster, &probes, many)),
    }
}

/// The old primary answers: check, write the journal, stop it, and go on.
async fn from_the_start(
    cluster: &mut Cluster,
    old: &str,
    target: &str,
    probes: &[Probe],
    started: Instant,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let t = probes.iter().find(|p| p.name == target).expect("probed");
    let streaming_from_old = t.position.as_ref().is_some_and(|p| {
        p.receiver_status.as_deref() == Some("streaming") && cluster.streams_from(p, old)
    });
    if !t.is_standby() || !streaming_from_old {
        return Err(Error::Precondition(format!(
            "{target} is not a healthy standby streaming from the primary {old} ({}): a switchover needs one; check `pgrepl status`, or repoint it first with `pgrepl standby follow {target} --upstream {old}`",
            describe(t)
        )));
    }
    // A node that runs but does not answer (frozen, hung) holds the old primary's fast
    // shutdown until wal_sender_timeout if it streams from it: writes would stop for a minute.
    let silent: Vec<&str> = probes
        .iter()
        .filter(|p| p.name != old && p.running && p.position.is_none())
        .map(|p| p.name.as_str())
        .collect();
    if let Some(n) = silent.first() {
        return Err(Error::Precondition(format!(
            "{} {} running but not answering (frozen or hung): its walsender would hold {old}'s shutdown, and writes, for up to a minute; thaw it (`pgrepl thaw {n}`) or stop it (`pgrepl kill {n}`) first",
            silent.join(" and "),
            if silent.len() > 1 { "are" } else { "is" }
        )));
    }
    let old_server = cluster.server(old)?;
    if !old_server.is_running().await {
        return Err(Error::Precondition(format!("{old} stopped meanwhile")));
    }
    // A checkpoint while the old primary still takes writes leaves its shutdown checkpoint
    // next to nothing to flush, and that one runs while writes are refused.
    progress.step(&format!("checkpoint on {old} (writes go on)"));
    let t = Instant::now();
    cluster
        .connect(old)
        .await?
        .batch_execute_within("CHECKPOINT", SLOW_BOUND)
        .await
        .what(|| format!("cannot checkpoint {old}"))?;
    figure(progress, "checkpoint_ms", t.elapsed().as_millis() as u64);
    // Connected while writes still go on: the gap has no room for a handshake.
    let tc = cluster.connect(target).await?;

    journal::write(
        cluster,
        JOURNAL,
        &Journal {
            old: old.to_string(),
            target: target.to_string(),
        },
    )?;
    crashpoint::reached("switchover: journal written");
    // From here the cluster refuses writes until the target is promoted.
    progress.step(&format!("stopping {old} (fast shutdown)"));
    let stop_asked = Instant::now();
    stop(cluster, old).await?;
    let timings = Timings {
        started,
        stop_asked,
        stop: stop_asked.elapsed(),
    };
    crashpoint::reached("switchover: old primary stopped");
    take_over(cluster, old, target, Some(timings), Some(tc), progress).await
}

/// An interrupted switchover found no primary answering: the old primary was stopped (or is
/// stopping). Go on from there, or give the old primary its role back.
async fn resume_stopped(
    cluster: &mut Cluster,
    old: &str,
    target: &str,
    progress: &dyn Progress,
) -> Result<Outcome> {
    progress.note(&format!(
        "an interrupted switchover from {old} to {target} stopped {old}: going on from there"
    ));
    if cluster.server(old)?.is_running().await {
        // Still shutting down, or it does not answer: let the stop finish.
        stop(cluster, old).await?;
    }
    let probes = topology::probe_all(cluster).await;
    let t = probes.iter().find(|p| p.name == target).expect("probed");
    if t.running && t.position.is_none() {
        // It may have been promoted: giving the old primary its role back could make two.
        return Err(Error::Precondition(format!(
            "{target} runs but does not answer ({}): whether the interrupted switchover promoted it is unknown; once it answers, run `pgrepl switchover --to {target}` again",
            t.error.as_deref().unwrap_or("no reply")
        )));
    }
    if !t.is_standby() {
        let facts = authority::of_probes(cluster, &probes);
        let fact = |n: &str| facts.iter().find(|f| f.name == n).expect("probed");
        if authority::supersedes(fact(target), fact(old)) {
            return Err(Error::Precondition(format!(
                "{target} was promoted by the interrupted switchover but is not running now ({}): start it (`pgrepl start {target}`), then run `pgrepl switchover --to {target}` again to complete the switchover",
                describe(t)
            )));
        }
        return roll_back(
            cluster,
            old,
            target,
            &format!("{target} is not a running standby ({})", describe(t)),
        )
        .await;
    }
    take_over(cluster, old, target, None, None, progress).await
}

/// A fast shutdown of `old`, bounded.
async fn stop(cluster: &Cluster, old: &str) -> Result<()> {
    tokio::time::timeout(STOP_TIMEOUT, cluster.server(old)?.stop(StopMode::Fast))
        .await
        .map_err(|_| {
            Error::Precondition(format!(
                "{old} did not finish its fast shutdown within {} s (a standby that does not answer, frozen say, holds it back), and it is still shutting down; once it has stopped, run `pgrepl switchover` again with the same target to go on, or `pgrepl start {old}` to give it its role back",
                STOP_TIMEOUT.as_secs()
            ))
        })?
}

/// The old primary is down: once the target has replayed its shutdown checkpoint (every
/// commit it acknowledged), the target is promoted.
async fn take_over(
    cluster: &mut Cluster,
    old: &str,
    target: &str,
    timings: Option<Timings>,
    tc: Option<Conn>,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let control = cluster.server(old)?.controldata().await?;
    let Some(ckpt) = control
        .checkpoint_lsn
        .filter(|_| control.state == "shut down")
    else {
        return roll_back(
            cluster,
            old,
            target,
            &format!(
                "{old} did not shut down cleanly (state '{}')",
                control.state
            ),
        )
        .await;
    };
    progress.step(&format!(
        "waiting for {target} to replay {old}'s shutdown checkpoint"
    ));
    // Nothing is promoted yet: a target that dies, freezes or stops answering now gives the
    // old primary its role back at once, not after the catch-up timeout.
    let tc = match tc {
        Some(c) => c,
        None => match cluster.connect(target).await {
            Ok(c) => c,
            Err(e) => return roll_back(cluster, old, target, &e.to_string()).await,
        },
    };
    let target_server = cluster.server(target)?;
    let t1 = Instant::now();
    // The walsenders sent the shutdown checkpoint before the old primary exited: replay is
    // usually done by now, and otherwise a few milliseconds away.
    let caught_up = wait::until_every(
        &format!("{target} to replay {old}'s shutdown checkpoint at {ckpt}"),
        CATCH_UP_TIMEOUT,
        Duration::from_millis(2),
        || async {
            let row = match tc
                .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
                .await
            {
                Ok(row) => row,
                Err(e) => return Some(Err(format!("{target} stopped answering: {e}"))),
            };
            let replayed: Option<Lsn> =
                row.get::<_, Option<String>>(0).and_then(|r| r.parse().ok());
            // Replay positions are record ends: past the checkpoint's start means replayed.
            if replayed.is_some_and(|r| r > ckpt) {
                return Some(Ok(()));
            }
            // A frozen target may still answer through a backend that was not stopped, but
            // replays nothing.
            match target_server.state().await {
                Ok(crate::runtime::ProcessState::Running) => None,
                Ok(crate::runtime::ProcessState::Frozen) => {
                    Some(Err(format!("{target} is frozen")))
                }
                _ => Some(Err(format!("{target} stopped"))),
            }
        },
    )
    .await;
    match caught_up {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return roll_back(cluster, old, target, &why).await,
        Err(e) => return roll_back(cluster, old, target, &e.to_string()).await,
    }
    let catch_up = t1.elapsed();
    crashpoint::reached("switchover: target caught up");
    progress.step(&format!("promoting {target}"));
    let promoted = promote::promote_now(&tc, target).await?;
    promoted.figures(progress);
    figure(progress, "old_primary", old);
    figure(progress, "new_primary", target);
    figure(progress, "catch_up_ms", catch_up.as_millis() as u64);
    if let Some(t) = &timings {
        figure(progress, "stop_ms", t.stop.as_millis() as u64);
        figure(
            progress,
            "writes_unavailable_ms",
            t.stop_asked.elapsed().as_millis() as u64,
        );
    }
    crashpoint::reached("switchover: promoted");
    let first = match &timings {
        Some(t) => format!(
            "switched over from {old} to {target}: {target} is the primary on timeline {}; writes were unavailable for {:.3} s (stop {:.3} s, catch-up {:.3} s, promote {:.3} s)",
            promoted.timeline,
            t.stop_asked.elapsed().as_secs_f64(),
            t.stop.as_secs_f64(),
            catch_up.as_secs_f64(),
            promoted.took.as_secs_f64()
        ),
        None => format!(
            "completed the interrupted switchover from {old} to {target}: {target} is the primary on timeline {}",
            promoted.timeline
        ),
    };
    finish(
        cluster,
        Some(old),
        target,
        vec![first],
        timings.as_ref().map(|t| t.started),
        progress,
    )
    .await
}

/// Nothing has changed but the old primary's stop: it takes its role back.
async fn roll_back(cluster: &Cluster, old: &str, target: &str, why: &str) -> Result<Outcome> {
    cluster.server(old)?.start().await?;
    journal::clear(cluster, JOURNAL)?;
    Err(Error::Command {
        what: format!("switchover to {target}"),
        detail: format!("{why}; {old} was started again as the primary, nothing changed"),
    })
}

/// With the target promoted: the cluster file records it, `[sync]` applies to it, the old
/// primary restarts as its standby (no rewind: its WAL ends at the fork point), the standbys
/// follow it, slots nobody streams through go, the journal goes. Each step finds its work done
/// when it is, so a rerun completes whatever a killed run left.
async fn finish(
    cluster: &mut Cluster,
    old: Option<&str>,
    target: &str,
    mut lines: Vec<String>,
    started: Option<Instant>,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let probes = topology::probe_all(cluster).await;
    let before_root = cluster.spec.root().name.clone();
    let mut next = cluster.spec.clone();
    next.set_primary(target)?;
    if let Some(o) = old {
        if next.node(o)?.upstream.as_deref() != Some(target) {
            next.set_upstream(o, target, None)?;
        }
    }
    // The standbys that followed the old primary follow the new one.
    let previous: Vec<&str> = [Some(before_root.as_str()), old]
        .into_iter()
        .flatten()
        .filter(|n| *n != target)
        .collect();
    for p in probes.iter().filter(|p| p.is_standby()) {
        if p.name == target || Some(p.name.as_str()) == old {
            continue;
        }
        let follows_previous = previous.iter().any(|prev| {
            cluster
                .node(&p.name)
                .is_ok_and(|n| n.upstream.as_deref() == Some(*prev))
                || p.position
                    .as_ref()
                    .is_some_and(|x| cluster.streams_from(x, prev))
        });
        if follows_previous {
            next.set_upstream(&p.name, target, None)?;
        }
    }
    promote::save_primary(cluster, next, "switchover")?;

    progress.step(&format!(
        "{}repointing the standbys to {target}",
        old.map(|o| format!("restarting {o} as a standby of {target}, "))
            .unwrap_or_default()
    ));
    let others: Vec<String> = cluster
        .spec
        .downstream_of(target)
        .map(|n| n.name.clone())
        .filter(|n| Some(n.as_str()) != old)
        .filter(|n| probes.iter().any(|p| &p.name == n && p.is_standby()))
        .collect();
    let cluster_ref: &Cluster = cluster;
    let demote = async {
        match old {
            Some(o) => Some(follow::repoint(cluster_ref, o, progress).await),
            None => None,
        }
    };
    let repoints = join_all(
        others
            .iter()
            .map(|o| follow::repoint(cluster_ref, o, progress)),
    );
    // The new primary's settings at the same time: under synchronous replication commits
    // wait until a synchronous standby streams from it, so the repoints are in the write gap.
    let settings = promote::apply_primary(cluster_ref, target, "switchover");
    let (settings, demoted, repointed) = futures::join!(settings, demote, repoints);
    lines.extend(settings?);
    if let (Some(o), Some(d)) = (old, demoted) {
        match d {
            Ok(Outcome::AlreadyDone(_)) => {}
            Ok(Outcome::Done(_)) => lines.push(format!("{o} restarted as a standby of {target}")),
            Err(e) => {
                return Err(Error::Command {
                    what: format!("restarting {o} as a standby of {target}"),
                    detail: format!(
                        "{e}; {target} is the primary; run `pgrepl switchover --to {target}` again to complete the switchover"
                    ),
                })
            }
        }
    }
    for (o, r) in others.iter().zip(repointed) {
        match r {
            Ok(Outcome::AlreadyDone(_)) => {}
            Ok(outcome) => lines.push(outcome.message().to_string()),
            Err(e) => lines.push(format!("WARNING: {o} could not follow {target}: {e}")),
        }
    }
    crashpoint::reached("switchover: standbys following");
    lines.extend(slots::note(target, &slots::tidy(cluster, target).await));
    if let Some(o) = old {
        lines.extend(slots::note(o, &slots::tidy(cluster, o).await));
    }
    if let Some(w) = sync::blocked_commits_warning(cluster, target).await {
        lines.push(w);
    }
    journal::clear(cluster, JOURNAL)?;
    if let Some(s) = started {
        lines.push(format!(
            "switchover done in {:.2} s",
            s.elapsed().as_secs_f64()
        ));
    }
    Ok(Outcome::Done(lines.join("\n")))
}

/// Without a journal, the old primary a switchover left behind: the node the cluster file
/// still names the primary, or a node whose data is a primary's that stopped cleanly right at
/// the point where the target's timeline begins (it can follow the target without a rewind).
fn leftover_old_primary(cluster: &Cluster, probes: &[Probe], target: &str) -> Option<String> {
    let root = &cluster.spec.root().name;
    if root != target {
        return Some(root.clone());
    }
    let history = probes.iter().find(|p| p.name == target)?.path.clone()?;
    probes
        .iter()
        .filter(|p| !p.running)
        .filter(|p| !cluster.data_dir(&p.name).join("standby.signal").exists())
        .filter(|p| p.control.as_ref().is_some_and(|c| c.state == "shut down"))
        .find(|p| {
            lineage::stopped_end(p).is_some_and(|e| {
                matches!(
                    timeline::lineage(&history, &e.path, e.end),
                    Lineage::Follows { fork: Some(_) }
                )
            })
        })
        .map(|p| p.name.clone())
}

/// Whether every running standby the cluster file puts under `target` streams from it.
fn everyone_follows(cluster: &Cluster, probes: &[Probe], target: &str) -> bool {
    cluster.spec.downstream_of(target).all(|n| {
        probes.iter().any(|p| {
            p.name == n.name
                && (!p.running
                    || p.position.as_ref().is_some_and(|x| {
                        x.in_recovery
                            && x.receiver_status.as_deref() == Some("streaming")
                            && cluster.streams_from(x, target)
                    }))
        })
    })
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
