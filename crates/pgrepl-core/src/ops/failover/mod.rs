//! `pgrepl failover [--to NODE] [--force]`: the answer to "there is no primary". With no
//! primary answering, it fences whatever may still be one (a node that runs but does not
//! answer), promotes the standby on the newest history that has received the most WAL
//! (under synchronous replication only a synchronous one, so that no acknowledged commit is
//! lost), and points the remaining standbys at it.
//!
//! A primary that answers is never deposed without `--force`: it is either the cluster file's
//! primary (then there is nothing to fail over; a planned change is a switchover) or a node
//! that an interrupted failover (or a promotion outside pgrepl) made the primary, and then
//! running `failover` again completes that failover. A journal written before the promotion
//! says which node the failover chose, so that a rerun finishes the job instead of choosing
//! again.

mod choice;

pub use choice::{choose, Candidate, Decision};

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::crashpoint;
use crate::error::{Error, Result};
use crate::observe::authority::{self, Facts};
use crate::observe::topology::{self, Probe};
use crate::ops::{follow, journal, promote, slots, sync, Outcome};
use crate::progress::{figure, Progress};
use std::time::Instant;

const JOURNAL: &str = "failover";

/// Written before the promotion: which node the failover promotes, and the primary it
/// replaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    old: String,
    target: String,
}

/// `pgrepl failover [--to NODE] [--force]`.
pub async fn failover(
    cluster: &mut Cluster,
    to: Option<&str>,
    force: bool,
    progress: &dyn Progress,
) -> Result<Outcome> {
    if let Some(t) = to {
        cluster.node(t)?;
    }
    let probes = topology::probe_all(cluster).await;
    let journal = live_journal(cluster, &probes)?;
    let primaries: Vec<&Probe> = probes.iter().filter(|p| p.is_primary()).collect();
    if primaries.is_empty() && !force {
        if let Some(refusal) = unknown_sender(cluster, &probes) {
            return Err(refusal);
        }
    }
    match primaries.as_slice() {
        [] => {}
        [p] => {
            let root = cluster.spec.root().name.clone();
            let chosen_by_journal = journal.as_ref().filter(|j| j.target == p.name);
            if chosen_by_journal.is_some() || root != p.name {
                let old = chosen_by_journal.map_or(root, |j| j.old.clone());
                let target = p.name.clone();
                return complete(cluster, &old, &target, to, force, &probes, progress).await;
            }
            // A journal that names another node is from a failover that never promoted
            // anyone: the primary it replaced is back. It says nothing true any more.
            journal::clear(cluster, JOURNAL)?;
            if !force {
                return Err(Error::Precondition(format!(
                    "{root} is the running primary and answers: failover is for a failed primary; for a planned change use `pgrepl switchover --to NODE` (no data lost); `pgrepl failover --force` fences {root} and promotes a standby"
                )));
            }
            return promote_best(cluster, to, force, None, &probes, progress).await;
        }
        many => return Err(promote::split_brain(cluster, &probes, many)),
    }
    promote_best(cluster, to, force, journal, &probes, progress).await
}

/// "Is there a primary?" is also asked of the standbys: one that streams from a server that is
/// no node of the cluster file (a node removed from the file by hand, say) shows that a
/// primary may be running there, and promoting would make a second one.
pub(crate) fn unknown_sender(cluster: &Cluster, probes: &[Probe]) -> Option<Error> {
    probes.iter().find_map(|p| {
        let pos = p.position.as_ref()?;
        let streaming = pos.in_recovery && pos.receiver_status.as_deref() == Some("streaming");
        if !streaming || cluster.sender(pos).is_some() {
            return None;
        }
        let at = format!(
            "{}:{}",
            pos.sender_host.as_deref()?,
            pos.sender_port?
        );
        Some(Error::Precondition(format!(
            "{} streams from {at}, which is no node of the cluster file: a primary may be running there, and promoting a standby would make a second one; add that node back to the cluster file, or stop that server, then try again (`--force` promotes anyway)",
            p.name
        )))
    })
}

/// The journal of an interrupted failover, when what PostgreSQL says still agrees with it.
/// It is stale once that failover was finished some other way (its old primary rejoined as a
/// standby, or the file records its target while the target no longer serves): trusting it
/// then would take a standby for the failed primary. A stale journal is removed.
fn live_journal(cluster: &Cluster, probes: &[Probe]) -> Result<Option<Journal>> {
    let Some(j) = journal::read::<Journal>(cluster, JOURNAL) else {
        return Ok(None);
    };
    let is = |name: &str, f: fn(&Probe) -> bool| probes.iter().any(|p| p.name == name && f(p));
    let target_serves = is(&j.target, Probe::is_primary);
    let finished = is(&j.old, Probe::is_standby) || cluster.spec.root().name == j.target;
    if target_serves || !finished {
        return Ok(Some(j));
    }
    tracing::info!(old = %j.old, target = %j.target, "an earlier failover's journal is stale: removed");
    journal::clear(cluster, JOURNAL)?;
    Ok(None)
}

/// The primary that answers is not the one the cluster file names, or is the one an earlier
/// failover's journal chose: that failover (or a promotion outside pgrepl) was not finished.
async fn complete(
    cluster: &mut Cluster,
    old: &str,
    target: &str,
    to: Option<&str>,
    force: bool,
    probes: &[Probe],
    progress: &dyn Progress,
) -> Result<Outcome> {
    if let Some(t) = to.filter(|t| *t != target) {
        return Err(Error::Precondition(format!(
            "{target} is already the running primary (an interrupted failover or a promotion made it so): run `pgrepl failover` to complete that failover, then `pgrepl switchover --to {t}`"
        )));
    }
    let facts = authority::of_probes(cluster, probes);
    let mine = facts.iter().find(|f| f.name == target).expect("probed");
    let newer = authority::newer_than(mine, &facts);
    if !newer.is_empty() && !force {
        return Err(promote::newer_history_refusal(
            mine,
            &newer,
            "pgrepl failover --force",
        ));
    }
    let followers = followers_of(cluster, probes, old, target);
    figure(progress, "old_primary", old);
    figure(progress, "new_primary", target);
    figure(progress, "completed_interrupted", true);
    let mut lines = vec![format!(
        "{target} is the running primary but the failover that made it so was not finished (interrupted, or a promotion outside pgrepl): completing it"
    )];
    lines.extend(finish(cluster, old, target, &followers, probes, progress).await?);
    Ok(Outcome::Done(lines.join("\n")))
}

/// Running standbys other than `target` and `old` that follow `old`: they stream from it, or
/// the cluster file says they do.
fn followers_of(cluster: &Cluster, probes: &[Probe], old: &str, target: &str) -> Vec<String> {
    probes
        .iter()
        .filter(|p| p.name != target && p.name != old && p.is_standby())
        .filter(|p| {
            p.position
                .as_ref()
                .is_some_and(|x| cluster.streams_from(x, old))
                || cluster
                    .node(&p.name)
                    .is_ok_and(|n| n.upstream.as_deref() == Some(old))
        })
        .map(|p| p.name.clone())
        .collect()
}

/// Who commits waited for, as the serving primary says (with `--force`), else as the cluster
/// file says: whether a synchronous standby is required, and which standbys are synchronous.
struct SyncFacts {
    required: bool,
    synchronous: Vec<String>,
}

fn sync_facts(cluster: &Cluster, probes: &[Probe], serving: Option<&Probe>) -> SyncFacts {
    let names = serving
        .and_then(|p| p.sync.as_ref())
        .map(|(names, ..)| names.clone())
        .filter(|n| !n.trim().is_empty());
    let required = match serving {
        Some(_) => names.is_some(),
        None => cluster.spec.sync.is_some(),
    };
    let listed: Vec<String> = match (&names, &cluster.spec.sync) {
        (Some(n), _) => crate::spec::parse_standby_names(n)
            .map(|(_, _, l)| l)
            .unwrap_or_default(),
        (None, Some(s)) => s.standbys.clone(),
        _ => Vec::new(),
    };
    let synchronous = probes
        .iter()
        .filter(|p| p.is_standby())
        .filter(|p| {
            let app = cluster
                .node(&p.name)
                .map(|n| n.application_name().to_string())
                .unwrap_or_default();
            match serving {
                Some(o) => o.downstreams.iter().any(|d| {
                    d.application_name == app
                        && matches!(d.sync_state.as_deref(), Some("sync") | Some("quorum"))
                }),
                None => listed.iter().any(|l| l == "*" || *l == app),
            }
        })
        .map(|p| p.name.clone())
        .collect();
    SyncFacts {
        required,
        synchronous,
    }
}

/// The running standbys as candidates.
fn candidates(probes: &[Probe], sync: &SyncFacts) -> Vec<Candidate> {
    probes
        .iter()
        .filter(|p| p.is_standby())
        .filter_map(|p| {
            let pos = p.position.as_ref()?;
            Some(Candidate {
                name: p.name.clone(),
                timeline: pos.timeline.unwrap_or(0),
                path: p.path.clone(),
                received: pos.receive_lsn.unwrap_or_default(),
                replayed: pos.replay_lsn.unwrap_or_default(),
                synchronous: sync.synchronous.contains(&p.name),
            })
        })
        .collect()
}

/// The standby to promote: `--to`, else the one an earlier run chose (its promotion may be
/// under way: choosing another would make two primaries), else the best candidate.
fn decide(
    to: Option<&str>,
    journal: Option<&Journal>,
    candidates: &[Candidate],
    sync_required: bool,
    force: bool,
) -> Result<Decision> {
    let auto = || choose(candidates, sync_required);
    let chosen_before = journal.filter(|j| candidates.iter().any(|c| c.name == j.target));
    if let (Some(t), Some(j)) = (to, chosen_before) {
        if t != j.target && !force {
            return Err(Error::Precondition(format!(
                "an interrupted failover chose {} and may have begun to promote it: promoting {t} as well could make two primaries; run `pgrepl failover` to complete that failover (then `pgrepl switchover --to {t}`), or `pgrepl failover --to {t} --force`",
                j.target
            )));
        }
    }
    if let Some(t) = to {
        let mut reason = match auto() {
            Ok(a) if a.node != t => format!(
                "chosen with --to; the automatic choice would have been {}: {}",
                a.node, a.reason
            ),
            Ok(_) => "chosen with --to (it is also the automatic choice)".into(),
            // Never "also the automatic choice" when there was none: say why not.
            Err(e) => format!("chosen with --to; pgrepl would have chosen no node: {e}"),
        };
        let asynchronous = candidates.iter().any(|c| c.name == t && !c.synchronous);
        if sync_required && asynchronous {
            reason += &format!(
                "; WARNING: {t} is an asynchronous standby under synchronous replication: commits the primary acknowledged after a synchronous standby confirmed them may be missing on {t}, and are lost"
            );
        }
        return Ok(Decision {
            node: t.to_string(),
            reason,
        });
    }
    if let Some(j) = chosen_before {
        return Ok(Decision {
            node: j.target.clone(),
            reason: "an interrupted failover chose it (and may have begun its promotion)".into(),
        });
    }
    auto()
}

/// Refuses a candidate that a stopped (or silent) node's newer history would make lose the
/// commits acknowledged there.
async fn refuse_newer(
    cluster: &Cluster,
    target: &str,
    candidates: &[Candidate],
    facts: &[Facts],
    force: bool,
) -> Result<()> {
    if force {
        return Ok(());
    }
    let Some(c) = candidates.iter().find(|c| c.name == target) else {
        return Ok(());
    };
    let mine = c.facts();
    let force_cmd = format!("pgrepl failover --to {target} --force");
    let newer = authority::newer_than(&mine, facts);
    if !newer.is_empty() {
        return Err(promote::newer_history_refusal(&mine, &newer, &force_cmd));
    }
    // A node that is down with a known end of WAL (a clean shutdown) further along the same
    // timeline: typically the old primary, stopped with commits no standby received. The
    // running standbys were compared by the choice itself.
    let holds = Facts {
        end: Some(c.received.max(c.replayed)),
        ..mine
    };
    let down: Vec<Facts> = facts.iter().filter(|f| !f.running).cloned().collect();
    let further = authority::further_than(&holds, &down);
    let further = promote::holding_commits(cluster, &holds, further).await;
    if !further.is_empty() {
        return Err(promote::further_refusal(&holds, &further, &force_cmd));
    }
    Ok(())
}

/// No primary answers (or `--force`): fence what may still be one, promote the best standby.
async fn promote_best(
    cluster: &mut Cluster,
    to: Option<&str>,
    force: bool,
    journal: Option<Journal>,
    probes: &[Probe],
    progress: &dyn Progress,
) -> Result<Outcome> {
    let serving = probes.iter().find(|p| p.is_primary());
    let old = serving
        .map(|p| p.name.clone())
        .or_else(|| journal.as_ref().map(|j| j.old.clone()))
        .unwrap_or_else(|| cluster.spec.root().name.clone());
    if let Some(t) = to {
        let p = probes.iter().find(|p| p.name == t).expect("probed");
        if !p.is_standby() {
            return Err(Error::Precondition(format!(
                "{t} is not a running standby{}: it cannot take over",
                if p.is_primary() {
                    " (it is the primary)"
                } else {
                    ""
                }
            )));
        }
    }
    let sync = sync_facts(cluster, probes, serving);
    let before = candidates(probes, &sync);
    if before.is_empty() {
        return Err(Error::Precondition(
            "no running standby to promote: start one (`pgrepl start NODE`)".into(),
        ));
    }
    // Everything that can refuse is checked before the fence, the first change. The fence
    // changes positions only, not histories, so the choice made now stands on the same one.
    let facts = authority::of_probes(cluster, probes);
    let provisional = decide(to, journal.as_ref(), &before, sync.required, force)?;
    refuse_newer(cluster, &provisional.node, &before, &facts, force).await?;
    let followers = followers_of(cluster, probes, &old, &provisional.node);

    let mut lines = Vec::new();
    // A node that runs but does not answer may be a primary that wakes up later (one whose
    // data says standby is not); the serving primary goes too with --force. A fast shutdown
    // sends the standbys all it wrote; what does not stop in time is killed.
    let fence: Vec<&str> = probes
        .iter()
        .filter(|p| {
            p.is_primary()
                || (p.running
                    && p.position.is_none()
                    && !cluster.data_dir(&p.name).join("standby.signal").exists())
        })
        .map(|p| p.name.as_str())
        .collect();
    figure(progress, "old_primary", &old);
    figure(progress, "fenced", &fence);
    if fence.is_empty() {
        lines.push(format!("the old primary {old} is down"));
    } else {
        let t = Instant::now();
        promote::fence(cluster, &fence, progress).await?;
        figure(progress, "fence_ms", t.elapsed().as_millis() as u64);
        crashpoint::reached("failover: fenced");
    }

    // Positions once nothing more can arrive. With nothing fenced, no primary ran when the
    // nodes were probed (one that stopped cannot start again under our lock), so those
    // positions already are final: a second probe would only lengthen the write gap.
    let probes = if fence.is_empty() {
        probes.to_vec()
    } else {
        topology::probe_all(cluster).await
    };
    let after = candidates(&probes, &sync);
    let decision = decide(to, journal.as_ref(), &after, sync.required, force)?;
    let target = decision.node.clone();
    if !after.iter().any(|c| c.name == target) {
        return Err(Error::Precondition(format!(
            "{target} stopped answering as a standby while the old primary was fenced; nothing was promoted: run `pgrepl failover` again"
        )));
    }
    refuse_newer(
        cluster,
        &target,
        &after,
        &authority::of_probes(cluster, &probes),
        force,
    )
    .await?;
    figure(progress, "new_primary", &target);
    figure(progress, "reason", &decision.reason);
    lines.push(format!("promoting {target}: {}", decision.reason));
    progress.note(&lines.join("\n"));
    lines.clear();

    journal::write(
        cluster,
        JOURNAL,
        &Journal {
            old: old.clone(),
            target: target.clone(),
        },
    )?;
    crashpoint::reached("failover: journal written");
    progress.step(&format!("promoting {target}"));
    let tc = cluster.connect(&target).await?;
    let promoted = promote::promote_now(&tc, &target).await?;
    promoted.figures(progress);
    crashpoint::reached("failover: promoted");
    lines.push(format!(
        "{target} promoted: primary on timeline {} (promotion took {:.3} s)",
        promoted.timeline,
        promoted.took.as_secs_f64()
    ));
    let mut followers = followers;
    followers.retain(|f| *f != target);
    lines.extend(finish(cluster, &old, &target, &followers, &probes, progress).await?);
    Ok(Outcome::Done(lines.join("\n")))
}

/// After the promotion of `target`: the cluster file records it, `[sync]` applies to it, the
/// standbys that followed `old` follow it, slots nobody streams through go, the journal goes.
/// Every step finds its work done when it is already done, so a rerun completes the rest.
async fn finish(
    cluster: &mut Cluster,
    old: &str,
    target: &str,
    followers: &[String],
    probes: &[Probe],
    progress: &dyn Progress,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut next = cluster.spec.clone();
    next.set_primary(target)?;
    for f in followers {
        next.set_upstream(f, target, None)?;
    }
    promote::save_primary(cluster, next, "failover")?;

    // Every running standby the file now puts under the new primary (as probed before the
    // promotion, which changed no other node: probing again would only add to the gap).
    let cluster_ref: &Cluster = cluster;
    let standbys: Vec<String> = cluster_ref
        .spec
        .downstream_of(target)
        .map(|n| n.name.clone())
        .filter(|n| probes.iter().any(|p| &p.name == n && p.is_standby()))
        .collect();
    // The new primary's settings and the repoints at once: under synchronous replication
    // commits wait until a synchronous standby streams from the new primary, so the repoints
    // are part of the write gap.
    let t = Instant::now();
    let settings = promote::apply_primary(cluster_ref, target, "failover");
    let repoints = join_all(
        standbys
            .iter()
            .map(|o| follow::repoint(cluster_ref, o, progress)),
    );
    let (settings, results) = futures::join!(settings, repoints);
    lines.extend(settings?);
    for (o, r) in standbys.iter().zip(results) {
        match r {
            Ok(outcome) => lines.push(outcome.message().to_string()),
            Err(e) => lines.push(format!("WARNING: {o} could not follow {target}: {e}")),
        }
    }
    figure(progress, "repointed", &standbys);
    figure(progress, "repoint_ms", t.elapsed().as_millis() as u64);
    crashpoint::reached("failover: standbys repointed");
    lines.extend(slots::note(target, &slots::tidy(cluster, target).await));
    if let Some(w) = sync::blocked_commits_warning(cluster, target).await {
        lines.push(w);
    }
    journal::clear(cluster, JOURNAL)?;
    let old_follows = probes.iter().any(|p| {
        p.name == old
            && p.position
                .as_ref()
                .is_some_and(|x| x.in_recovery && cluster.streams_from(x, target))
    });
    if !old_follows && old != target {
        lines.push(format!(
            "next: rejoin the old primary with `pgrepl rejoin {old} --upstream {target}`"
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::timeline::TimelinePath;
    use crate::postgres::Lsn;

    fn cand(name: &str, synchronous: bool) -> Candidate {
        Candidate {
            name: name.into(),
            timeline: 1,
            path: Some(TimelinePath::new(1, Vec::new())),
            received: Lsn(100),
            replayed: Lsn(100),
            synchronous,
        }
    }

    #[test]
    fn an_asynchronous_target_under_sync_is_never_promoted_silently() {
        // No synchronous standby runs: --to an async one is not "the automatic choice".
        let only_async = [cand("pg2", false), cand("pg3", false)];
        let d = decide(Some("pg2"), None, &only_async, true, false).unwrap();
        assert!(
            !d.reason.contains("also the automatic choice"),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("no synchronous standby"), "{}", d.reason);
        assert!(
            d.reason.contains("WARNING: pg2 is an asynchronous standby"),
            "{}",
            d.reason
        );
        // Without --to it refuses.
        assert!(decide(None, None, &only_async, true, false).is_err());
        // With a synchronous one running, --to an async one says so too.
        let mixed = [cand("pg1", true), cand("pg2", false)];
        let d = decide(Some("pg2"), None, &mixed, true, false).unwrap();
        assert!(d.reason.contains("would have been pg1"), "{}", d.reason);
        assert!(d.reason.contains("WARNING"), "{}", d.reason);
        let d = decide(Some("pg1"), None, &mixed, true, false).unwrap();
        assert!(!d.reason.contains("WARNING"), "{}", d.reason);
        // Asynchronous replication: nothing to warn about.
        let d = decide(Some("pg2"), None, &mixed, false, false).unwrap();
        assert!(!d.reason.contains("WARNING"), "{}", d.reason);
    }
}
