//! `pgrepl failover [--to NODE]`: the unplanned case in one command. Fence the old primary if
//! it still runs, promote the standby that has received the most WAL (under synchronous
//! replication only a synchronous one, so that no acknowledged commit is lost), and point the
//! remaining standbys at it.

use futures::future::join_all;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::observe::topology::{self, Probe};
use crate::ops::{follow, promote, sync, Outcome};
use crate::postgres::{queries, Lsn};
use crate::progress::Progress;

/// A standby that could be promoted, as it stands once the old primary is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub timeline: u32,
    pub received: Lsn,
    pub replayed: Lsn,
    /// Whether commits waited for it: sync/quorum in the old primary's pg_stat_replication,
    /// or, with the old primary gone, listed in the synchronous standby names.
    pub synchronous: bool,
}

impl Candidate {
    fn has(&self) -> (u32, Lsn) {
        (self.timeline, self.received.max(self.replayed))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub node: String,
    pub reason: String,
}

/// The standby to promote: the most WAL received (then replayed), the earliest listed on a
/// tie; under synchronous replication only among synchronous standbys.
pub fn choose(candidates: &[Candidate], sync_required: bool) -> Result<Decision> {
    let eligible: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !sync_required || c.synchronous)
        .collect();
    let mut best: Option<&Candidate> = None;
    for c in &eligible {
        if best.is_none_or(|b| c.has() > b.has()) {
            best = Some(c);
        }
    }
    let Some(best) = best else {
        return Err(Error::Precondition(if sync_required {
            "no synchronous standby is running: promoting an asynchronous one could lose commits the primary acknowledged; start a synchronous standby, or name one with `pgrepl failover --to NODE` to accept that loss".into()
        } else {
            "no running standby to promote: start one (`pgrepl start NODE`)".into()
        }));
    };
    let (tli, pos) = best.has();
    let mut reason = format!(
        "{} has received the most WAL{} ({pos} on timeline {tli})",
        best.name,
        if sync_required {
            " of the synchronous standbys"
        } else {
            ""
        }
    );
    let others: Vec<String> = candidates
        .iter()
        .filter(|c| c.name != best.name)
        .map(|c| {
            let (t, p) = c.has();
            let behind = if t == tli {
                format!("{} bytes behind", pos.bytes_after(p))
            } else {
                format!("on timeline {t}")
            };
            let why_not = if sync_required && !c.synchronous {
                ", asynchronous"
            } else {
                ""
            };
            format!("{} at {p}, {behind}{why_not}", c.name)
        })
        .collect();
    if !others.is_empty() {
        reason += &format!("; {}", others.join("; "));
    }
    if sync_required {
        reason += "; under synchronous replication only a synchronous standby is sure to have every acknowledged commit";
    }
    Ok(Decision {
        node: best.name.clone(),
        reason,
    })
}

/// `pgrepl failover [--to NODE]`.
pub async fn failover(
    cluster: &mut Cluster,
    to: Option<&str>,
    progress: &dyn Progress,
) -> Result<Outcome> {
    if let Some(t) = to {
        cluster.node(t)?;
    }
    let probes = topology::probe_all(cluster).await;
    let primaries: Vec<&Probe> = probes.iter().filter(|p| p.is_primary()).collect();
    if primaries.len() > 1 {
        return Err(Error::Precondition(format!(
            "split brain: {} are all primaries; rejoin the stale one first (`pgrepl rejoin NODE --upstream NODE`)",
            primaries.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(" and ")
        )));
    }
    let old = primaries
        .first()
        .map(|p| p.name.clone())
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
    if !probes.iter().any(|p| p.is_standby()) {
        return Err(Error::Precondition(
            "no running standby to promote: start one (`pgrepl start NODE`)".into(),
        ));
    }

    // Who commits waited for, read before the old primary goes.
    let old_probe = probes.iter().find(|p| p.name == old && p.is_primary());
    let names = old_probe
        .and_then(|p| p.sync.as_ref())
        .map(|(names, ..)| names.clone())
        .filter(|n| !n.trim().is_empty());
    let sync_required = match old_probe {
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
    let synchronous = |p: &Probe| -> bool {
        let app = cluster
            .node(&p.name)
            .map(|n| n.application_name().to_string())
            .unwrap_or_default();
        match old_probe {
            Some(o) => o.downstreams.iter().any(|d| {
                d.application_name == app
                    && matches!(d.sync_state.as_deref(), Some("sync") | Some("quorum"))
            }),
            None => listed.iter().any(|l| l == "*" || *l == app),
        }
    };
    let sync_flags: Vec<(String, bool)> = probes
        .iter()
        .filter(|p| p.is_standby())
        .map(|p| (p.name.clone(), synchronous(p)))
        .collect();

    let mut lines = Vec::new();
    // A node that runs but does not answer (frozen) may be a primary that wakes up later:
    // it is fenced too. The fence notes how it went: a fast shutdown sends the standbys all
    // it wrote; what does not stop in time is killed.
    let mut fenced: Vec<&str> = promote::other_primaries(&probes, "")
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    if fenced.is_empty() && probes.iter().any(|p| p.name == old && p.running) {
        fenced.push(old.as_str());
    }
    if fenced.is_empty() {
        lines.push(format!("the old primary {old} is down"));
    } else {
        promote::fence(cluster, &fenced, progress).await?;
    }

    // Positions once nothing more can arrive.
    let mut candidates = Vec::new();
    for (name, synchronous) in &sync_flags {
        let Ok(c) = cluster.connect(name).await else {
            continue;
        };
        let Ok(pos) = queries::position(&c).await else {
            continue;
        };
        if !pos.in_recovery {
            continue;
        }
        candidates.push(Candidate {
            name: name.clone(),
            timeline: pos.timeline.unwrap_or(0),
            received: pos.receive_lsn.unwrap_or_default(),
            replayed: pos.replay_lsn.unwrap_or_default(),
            synchronous: *synchronous,
        });
    }
    let decision = match to {
        Some(t) => {
            let auto = choose(&candidates, sync_required).ok();
            Decision {
                node: t.to_string(),
                reason: match auto {
                    Some(a) if a.node != t => format!(
                        "chosen with --to; the automatic choice would have been {}: {}",
                        a.node, a.reason
                    ),
                    _ => "chosen with --to (it is also the automatic choice)".into(),
                },
            }
        }
        None => choose(&candidates, sync_required)?,
    };
    let target = decision.node.clone();
    lines.push(format!("promoting {target}: {}", decision.reason));
    progress.note(&lines.join("\n"));
    lines.clear();

    progress.step(&format!("promoting {target}"));
    let tc = cluster.connect(&target).await?;
    let promoted = promote::promote_now(&tc, &target).await?;
    lines.push(format!(
        "{target} promoted: primary on timeline {} (promotion took {:.3} s)",
        promoted.timeline,
        promoted.took.as_secs_f64()
    ));

    cluster.node(&old)?;
    let others: Vec<String> = candidates
        .iter()
        .map(|c| c.name.clone())
        .filter(|n| n != &target)
        .filter(|n| {
            let followed_old = probes.iter().any(|p| {
                &p.name == n
                    && p.position
                        .as_ref()
                        .is_some_and(|x| cluster.streams_from(x, &old))
            });
            followed_old
                || cluster
                    .node(n)
                    .is_ok_and(|s| s.upstream.as_deref() == Some(&old))
        })
        .collect();
    let mut next = cluster.spec.clone();
    next.set_primary(&target)?;
    for o in &others {
        next.set_upstream(o, &target, None)?;
    }
    cluster.spec = next;
    cluster.save_spec()?;
    if let Some(setting) = sync::apply_to_primary(cluster, &target).await? {
        lines.push(format!("{target}: synchronous_standby_names = '{setting}'"));
    }
    let cluster_ref: &Cluster = cluster;
    let results = join_all(
        others
            .iter()
            .map(|o| follow::repoint(cluster_ref, o, progress)),
    )
    .await;
    for (o, r) in others.iter().zip(results) {
        match r {
            Ok(outcome) => lines.push(outcome.message().to_string()),
            Err(e) => lines.push(format!("WARNING: {o} could not follow {target}: {e}")),
        }
    }
    if let Some(w) = sync::blocked_commits_warning(cluster, &target).await {
        lines.push(w);
    }
    lines.push(format!(
        "next: rejoin the old primary with `pgrepl rejoin {old} --upstream {target}`"
    ));
    Ok(Outcome::Done(lines.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, received: u64, synchronous: bool) -> Candidate {
        Candidate {
            name: name.into(),
            timeline: 1,
            received: Lsn(received),
            replayed: Lsn(received),
            synchronous,
        }
    }

    #[test]
    fn picks_the_standby_with_the_most_wal() {
        let d = choose(
            &[
                cand("pg1", 100, false),
                cand("pg2", 300, false),
                cand("pg3", 200, false),
            ],
            false,
        )
        .unwrap();
        assert_eq!(d.node, "pg2");
        assert!(
            d.reason.contains("pg1 at 0/64, 200 bytes behind"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_tie_goes_to_the_first_listed() {
        let d = choose(&[cand("pg1", 100, false), cand("pg2", 100, false)], false).unwrap();
        assert_eq!(d.node, "pg1");
    }

    #[test]
    fn under_sync_only_a_synchronous_standby_qualifies() {
        let c = [
            cand("pg1", 500, false),
            cand("pg2", 300, true),
            cand("pg3", 200, true),
        ];
        let d = choose(&c, true).unwrap();
        assert_eq!(d.node, "pg2");
        assert!(d.reason.contains("asynchronous"), "{}", d.reason);
        assert_eq!(choose(&c, false).unwrap().node, "pg1");
        let e = choose(&[cand("pg1", 500, false)], true).unwrap_err();
        assert!(e.to_string().contains("no synchronous standby"), "{e}");
    }

    #[test]
    fn a_newer_timeline_beats_more_bytes() {
        let mut newer = cand("pg3", 10, false);
        newer.timeline = 2;
        let d = choose(&[cand("pg1", 500, false), newer], false).unwrap();
        assert_eq!(d.node, "pg3");
    }

    #[test]
    fn received_wal_counts_even_when_not_yet_replayed() {
        let mut a = cand("pg1", 100, false);
        a.received = Lsn(400);
        let d = choose(&[a, cand("pg2", 300, false)], false).unwrap();
        assert_eq!(d.node, "pg1");
    }
}
