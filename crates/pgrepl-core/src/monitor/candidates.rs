//! Which standby takes over: as `pgrepl failover` chooses (`ops::failover::choose`: the most
//! WAL received), over timeline paths (never one that missed a newer promotion), and under
//! synchronous replication only a synchronous candidate that is sure to hold every
//! acknowledged commit, unless the user consented to lose some.

use std::collections::BTreeSet;

use super::intent::Intent;
use super::observation::{Observation, Process, Role};
use crate::observe::authority;
use crate::ops::failover::{choose, Candidate};
use crate::ops::sync::for_primary;
use crate::postgres::Lsn;
use crate::spec::parse_standby_names;

/// The last primary's synchronous replication as the monitor last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncView {
    pub primary: String,
    /// Its `synchronous_standby_names` ("" = asynchronous).
    pub names: String,
    /// Application names it reported as `sync` or `quorum`.
    pub confirming: BTreeSet<String>,
    /// False once a synchronous candidate came or went after the primary was last seen:
    /// PostgreSQL may have handed the `sync` role to another standby since.
    pub fresh: bool,
    /// No commit acknowledged until the primary was last seen lies beyond it: the most WAL
    /// any `sync`/`quorum` standby reported flushed, raised to the primary's own position
    /// wherever the monitor could not vouch for what happened in between (see
    /// `decide`'s `watch_sync`). A standby that took the `sync` role over later may not
    /// have caught up to it yet.
    pub floor: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub node: String,
    pub reason: String,
    /// Chosen among asynchronous standbys under synchronous replication, with the user's
    /// consent (`allow_data_loss`).
    pub data_loss_accepted: bool,
}

fn listed(names: &[String], app: &str) -> bool {
    names
        .iter()
        .any(|l| l == "*" || l.eq_ignore_ascii_case(app))
}

/// The standby to promote now that `old` (the primary, when known) is gone; Err says why
/// there is none.
pub fn pick(
    obs: &Observation,
    intent: &Intent,
    view: Option<&SyncView>,
    old: Option<&str>,
) -> Result<Pick, String> {
    // What the monitor saw of another primary says nothing about `old`'s commits.
    let view = view.filter(|v| Some(v.primary.as_str()) == old);
    let facts = obs.facts();
    let mut excluded = Vec::new();
    let mut standbys = Vec::new();
    for n in &obs.nodes {
        if !n.answers_as(Role::Standby) || n.process == Process::Frozen {
            continue;
        }
        let newer: Vec<&str> = authority::newer_than(&n.facts(), &facts)
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        if newer.is_empty() {
            standbys.push(n);
        } else {
            excluded.push(format!(
                "{} missed the promotion of {} (promoting it would throw away what was committed there)",
                n.name,
                newer.join(" and ")
            ));
        }
    }
    if standbys.is_empty() {
        let mut why = "no standby answers that could take over".to_string();
        if !excluded.is_empty() {
            why += &format!(": {}", excluded.join("; "));
        }
        return Err(why);
    }

    let old_app = old.map(|o| intent.app(o).to_string());
    let names = match view {
        Some(v) => v.names.clone(),
        None => intent
            .sync
            .as_ref()
            .and_then(|s| for_primary(s, old_app.as_deref().unwrap_or("")))
            .map(|s| s.standby_names_setting())
            .unwrap_or_default(),
    };
    let rule = parse_standby_names(&names);
    let synchronous_names = rule.as_ref().map(|(_, _, l)| l.clone()).unwrap_or_default();
    let candidates: Vec<Candidate> = standbys
        .iter()
        .map(|n| Candidate {
            name: n.name.clone(),
            timeline: n.path.as_ref().map(|p| p.tli).unwrap_or(0),
            path: n.path.clone(),
            received: n.received.unwrap_or_default(),
            replayed: n.replayed.unwrap_or_default(),
            synchronous: listed(&synchronous_names, intent.app(&n.name)),
        })
        .collect();
    let best_sync = choose(&candidates, true).ok();
    let has = |node: &str, floor: Lsn| {
        candidates
            .iter()
            .any(|c| c.name == node && c.received.max(c.replayed) >= floor)
    };
    let Some((_, num, names)) = rule else {
        let d = choose(&candidates, false).map_err(|e| e.to_string())?;
        // Synchronous replication degraded (`on_sync_loss = degrade`): commits acknowledged
        // since are the accepted risk, not those acknowledged under sync before.
        let floor = view
            .filter(|_| intent.sync.is_some())
            .map(|v| v.floor)
            .unwrap_or_default();
        let enough = has(&d.node, floor);
        if !enough && !intent.allow_data_loss {
            return Err(format!(
                "synchronous replication was degraded, and no standby has every commit acknowledged before (up to {floor}): not promoting (set allow_data_loss in the cluster file to accept losing them, or bring a synchronous standby back)"
            ));
        }
        return Ok(Pick {
            node: d.node,
            reason: d.reason,
            data_loss_accepted: !enough,
        });
    };
    let need = num.max(1) as usize;
    let available: BTreeSet<&str> = candidates
        .iter()
        .filter(|c| c.synchronous)
        .map(|c| intent.app(&c.name))
        .collect();
    let others: Vec<&str> = intent
        .nodes
        .iter()
        .filter(|n| Some(n.name.as_str()) != old && listed(&names, &n.application_name))
        .map(|n| n.name.as_str())
        .collect();
    // Every acknowledged commit is on at least `need` synchronous candidates (FIRST and ANY
    // alike): with at most need-1 of them missing, the one with the most WAL has them all.
    let universe = others.len();
    let by_count = !available.is_empty() && universe.saturating_sub(available.len()) < need;
    // Otherwise the primary's last word. Commits acknowledged until the monitor last saw it
    // lie at or below the floor. Those acknowledged after (while it was silent, frozen or
    // partitioned, until it was fenced) are on some synchronous candidate that streamed
    // from it then: the best candidate has them if every candidate that cannot be asked
    // now was already gone or frozen when the primary was last seen (`fresh`: none came
    // or went since) and so could not confirm anything since. A candidate that runs
    // without answering may be the one that did.
    let silent_since: Vec<&str> = others
        .iter()
        .copied()
        .filter(|n| !available.contains(intent.app(n)))
        .filter(|n| {
            obs.node(n)
                .is_none_or(|o| !matches!(o.process, Process::Gone | Process::Frozen))
        })
        .collect();
    let by_view = view
        .filter(|v| v.fresh && silent_since.is_empty())
        .is_some_and(|v| best_sync.as_ref().is_some_and(|d| has(&d.node, v.floor)));
    if let Some(d) = best_sync.filter(|_| by_count || by_view) {
        return Ok(Pick {
            node: d.node,
            reason: d.reason,
            data_loss_accepted: false,
        });
    }
    let why = format!(
        "under synchronous replication ('{names}', {} of {universe} synchronous candidates answer as standbys) no standby is sure to have every acknowledged commit",
        available.len(),
        names = names.join(", ")
    );
    if intent.allow_data_loss {
        let d = choose(&candidates, false).map_err(|e| e.to_string())?;
        return Ok(Pick {
            node: d.node,
            reason: format!(
                "{}; {why}, and the cluster file allows data loss (allow_data_loss)",
                d.reason
            ),
            data_loss_accepted: true,
        });
    }
    Err(format!(
        "{why}: not promoting (set allow_data_loss in the cluster file to accept losing them, or bring a synchronous standby back)"
    ))
}
