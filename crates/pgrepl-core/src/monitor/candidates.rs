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
use crate::spec::{parse_standby_names, SyncMethod};

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
    /// The most WAL any `sync`/`quorum` standby ever reported flushed while this primary
    /// was seen: no commit acknowledged until then lies beyond it. A standby that took the
    /// `sync` role over later may not have caught up to it yet.
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
            received: n.received.unwrap_or_default(),
            replayed: n.replayed.unwrap_or_default(),
            synchronous: listed(&synchronous_names, intent.app(&n.name)),
        })
        .collect();
    let Some((method, num, names)) = rule else {
        let d = choose(&candidates, false).map_err(|e| e.to_string())?;
        return Ok(Pick {
            node: d.node,
            reason: d.reason,
            data_loss_accepted: false,
        });
    };
    let need = num.max(1) as usize;
    let available: BTreeSet<&str> = candidates
        .iter()
        .filter(|c| c.synchronous)
        .map(|c| intent.app(&c.name))
        .collect();
    // Every acknowledged commit is on at least `need` synchronous candidates (FIRST and ANY
    // alike): with at most need-1 of them missing, the one with the most WAL has them all.
    let universe = intent
        .nodes
        .iter()
        .filter(|n| Some(n.name.as_str()) != old && listed(&names, &n.application_name))
        .count();
    let by_count = !available.is_empty() && universe.saturating_sub(available.len()) < need;
    // Otherwise the primary's last word: under FIRST a standby it called `sync` has every
    // commit acknowledged while it was; under ANY, at most need-1 of its `quorum` standbys
    // may be missing. Commits acknowledged before lie at or below the floor.
    let best = choose(&candidates, true).ok();
    let by_view = view.filter(|v| v.fresh).is_some_and(|v| {
        let here = v
            .confirming
            .iter()
            .filter(|a| available.contains(a.as_str()))
            .count();
        let has_floor = best.as_ref().is_some_and(|d| {
            candidates
                .iter()
                .any(|c| c.name == d.node && c.received.max(c.replayed) >= v.floor)
        });
        here > 0 && has_floor && (method == SyncMethod::First || v.confirming.len() - here < need)
    });
    if let Some(d) = best.filter(|_| by_count || by_view) {
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
