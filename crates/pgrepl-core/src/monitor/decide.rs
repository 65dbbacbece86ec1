//! The decision: a pure function from one tick's observation (and the monitor's memory of
//! earlier ticks) to actions. No I/O, no clock: time comes in the observation. Results of
//! earlier actions come back as observations, so a failover takes at least two ticks when
//! the old primary still runs (fence; then, once the runtime says it is gone, promote) and
//! one when the runtime already says it is gone.

use std::collections::{BTreeMap, BTreeSet};

use super::action::Action;
use super::candidates::{self, SyncView};
use super::event::Event;
use super::intent::{Intent, OnSyncLoss, Timing};
use super::observation::{Downstream, NodeObs, Observation, Process, Role};
use crate::observe::authority::{self, Facts, StartAs};
use crate::ops::sync::for_primary;
use crate::postgres::timeline::{self, Lineage};
use crate::postgres::Lsn;
use crate::spec::parse_standby_names;

/// The monitor's memory between ticks. A restarted monitor starts from `default()`: it
/// learns who is who from PostgreSQL, and causes no failover by itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitorState {
    /// The node last seen answering as the primary, or just promoted.
    pub primary: Option<String>,
    /// When the primary last answered (or was promoted).
    pub primary_seen_at_ms: Option<u64>,
    /// The role each node last answered with (a primary also vouches for the standbys it
    /// lists as streaming).
    pub roles: BTreeMap<String, Role>,
    /// Old primaries this monitor failed over from: stale until seen as standbys.
    pub superseded: BTreeSet<String>,
    pub sync_view: Option<SyncView>,
    pub failovers: u64,
    pub last_failover_at_ms: Option<u64>,
    not_streaming_since: BTreeMap<String, u64>,
    orphan_slot_since: BTreeMap<String, u64>,
    sync_unsatisfied_since: Option<u64>,
    retries: BTreeMap<String, Retry>,
    /// Synchronous candidates' (process, answered) while the primary is out of sight.
    candidates_seen: BTreeMap<String, (Process, bool)>,
    /// The primary whose synchronous replication was read on the previous tick: its sync
    /// view was watched without a gap.
    watched: Option<String>,
    /// A promotion decided but not yet seen to take effect: (the node, the primary it
    /// replaces).
    promoting: Option<(String, Option<String>)>,
    noted: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    at_ms: u64,
    attempts: u32,
}

/// The longest wait before an action is tried again.
pub(super) const MAX_BACKOFF_MS: u64 = 60_000;

/// One tick's decision: the actions to carry out, in order (events to log among them).
pub fn decide(
    intent: &Intent,
    timing: &Timing,
    state: &mut MonitorState,
    obs: &Observation,
) -> Vec<Action> {
    let mut t = Tick {
        intent,
        timing,
        obs,
        now: obs.at_ms,
        facts: obs.facts(),
        actions: Vec::new(),
        noted_before: std::mem::take(&mut state.noted),
        noted_now: BTreeSet::new(),
        watched_before: state.watched.take(),
    };
    t.learn_roles(state);
    if obs.busy {
        // The timeout starts anew once the other command is done.
        state.primary_seen_at_ms = Some(t.now);
        t.note(
            "busy",
            None,
            "another pgrepl command holds the cluster's lock: the monitor leaves the cluster to it"
                .into(),
        );
    } else if !obs.nodes.iter().any(|n| n.answered) && !obs.nodes.iter().all(NodeObs::is_gone) {
        // Cut off from every server it should ask (its own network, most likely): it
        // cannot tell a dead primary from its own isolation, nor ask the standbys for
        // their opinion. When every node is gone, the runtime has said all there is.
        // The timeout starts anew once it sees again.
        state.primary_seen_at_ms = Some(t.now);
        t.note(
            "blind",
            None,
            "the monitor reaches no node: it does nothing until it reaches one".into(),
        );
    } else {
        let primaries: Vec<&NodeObs> = obs
            .nodes
            .iter()
            .filter(|n| n.answers_as(Role::Primary))
            .collect();
        match primaries.as_slice() {
            [] => t.without_primary(state),
            [p] => t.with_primary(state, p),
            many => t.split_brain(state, many),
        }
    }
    state.noted = t.noted_now;
    t.actions
}

struct Tick<'a> {
    intent: &'a Intent,
    timing: &'a Timing,
    obs: &'a Observation,
    now: u64,
    facts: Vec<Facts>,
    actions: Vec<Action>,
    noted_before: BTreeSet<String>,
    noted_now: BTreeSet<String>,
    watched_before: Option<String>,
}

impl<'a> Tick<'a> {
    /// Logs an observation once, when it starts being true.
    fn note(&mut self, key: &str, node: Option<&str>, message: String) {
        self.note_event(
            key,
            Event::observed(
                self.now,
                key.split(':').next().unwrap_or(key),
                node,
                message,
            ),
        );
    }

    fn note_event(&mut self, key: &str, event: Event) {
        if !self.noted_before.contains(key) {
            self.actions.push(Action::Log(event));
        }
        self.noted_now.insert(key.to_string());
    }

    fn log(&mut self, event: Event) {
        self.actions.push(Action::Log(event));
    }

    fn node(&self, name: &str) -> Option<&'a NodeObs> {
        self.obs.node(name)
    }

    /// A later promotion on another node's history left `f` behind.
    fn superseded(&self, f: &Facts) -> bool {
        self.facts
            .iter()
            .any(|o| o.name != f.name && authority::supersedes(o, f))
    }

    fn facts_of(&self, name: &str) -> Option<&Facts> {
        self.facts.iter().find(|f| f.name == name)
    }

    fn learn_roles(&mut self, state: &mut MonitorState) {
        for n in self.obs.nodes.iter().filter(|n| n.answered) {
            if let Some(role) = n.role {
                state.roles.insert(n.name.clone(), role);
                if role == Role::Standby {
                    state.superseded.remove(&n.name);
                }
            }
            if n.role == Some(Role::Primary) {
                for d in n.downstreams.iter().filter(|d| d.streaming) {
                    if let Some(s) = self.intent.by_app(&d.application_name) {
                        state.roles.insert(s.name.clone(), Role::Standby);
                    }
                }
            }
        }
    }

    /// Whether some standby still receives WAL from `node`, or (`reachable`: for the
    /// primary) reaches it: then it lives, however slowly it answers the monitor.
    fn alive_evidence(&self, node: &NodeObs, reachable: bool) -> Option<String> {
        let limit = self.timing.failover_timeout_ms;
        for s in &self.obs.nodes {
            let Some(r) = s.receiver.as_ref().filter(|_| s.answers_as(Role::Standby)) else {
                continue;
            };
            if r.upstream.as_deref() == Some(&node.name) && r.streaming {
                if let Some(age) = r.last_msg_age_ms.filter(|a| *a < limit) {
                    return Some(format!(
                        "{} still receives WAL from it (last message {age} ms ago)",
                        s.name
                    ));
                }
            }
        }
        (reachable && node.reachable_from_standbys == Some(true))
            .then(|| "its standbys still get answers from it".to_string())
    }

    /// Whether `key`'s action may be tried now (first time, or its backoff has passed).
    fn may_try(&self, state: &mut MonitorState, key: &str) -> bool {
        let base = self.timing.retry_ms.max(1);
        match state.retries.get(key).copied() {
            None => {
                state.retries.insert(
                    key.into(),
                    Retry {
                        at_ms: self.now,
                        attempts: 1,
                    },
                );
                true
            }
            Some(r) => {
                let wait = base
                    .saturating_mul(1u64 << r.attempts.saturating_sub(1).min(16))
                    .min(MAX_BACKOFF_MS);
                if self.now.saturating_sub(r.at_ms) >= wait {
                    state.retries.insert(
                        key.into(),
                        Retry {
                            at_ms: self.now,
                            attempts: r.attempts + 1,
                        },
                    );
                    true
                } else {
                    false
                }
            }
        }
    }

    // ---- two primaries or more ----

    fn split_brain(&mut self, state: &mut MonitorState, primaries: &[&NodeObs]) {
        let names: Vec<&str> = primaries.iter().map(|p| p.name.as_str()).collect();
        let stale: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| {
                let f = self.facts_of(n).cloned().unwrap_or_default();
                self.facts
                    .iter()
                    .any(|o| o.name != *n && authority::supersedes(o, &f))
                    || state.superseded.contains(*n)
            })
            .collect();
        let stale: Vec<&str> = if !stale.is_empty() && stale.len() < names.len() {
            stale
        } else if let Some(known) = state.primary.as_deref().filter(|k| names.contains(k)) {
            names.iter().copied().filter(|n| *n != known).collect()
        } else {
            self.note(
                "split_brain",
                None,
                format!(
                    "SPLIT BRAIN: {} all answer as primaries and nothing tells which is stale: the monitor leaves them to you (`pgrepl rejoin NODE --upstream NODE`)",
                    names.join(" and ")
                ),
            );
            return;
        };
        for s in stale {
            self.log(
                Event::decided(
                    self.now,
                    "fence_stale_primary",
                    Some(s),
                    format!(
                        "{} answer as primaries; {s} is the stale one (a later promotion superseded it): fencing it",
                        names.join(" and ")
                    ),
                )
                .with("primaries", names.clone()),
            );
            self.actions.push(Action::Fence { node: s.into() });
        }
    }

    // ---- no node answers as the primary ----

    fn without_primary(&mut self, state: &mut MonitorState) {
        self.resolve_promotion(state);
        if state.primary.is_none() {
            state.primary = self.presumed_primary();
        }
        self.track_candidates(state, false);
        let seen_at = *state.primary_seen_at_ms.get_or_insert(self.now);
        let silent_ms = self.now.saturating_sub(seen_at);
        // Every node that might still acknowledge a write: the primary we knew, and any node
        // that runs without answering and was never seen as a standby.
        let threats: Vec<&NodeObs> = self
            .obs
            .nodes
            .iter()
            .filter(|n| !n.is_gone() && !n.answers_as(Role::Standby))
            .filter(|n| {
                state.primary.as_deref() == Some(n.name.as_str())
                    || state.roles.get(&n.name) != Some(&Role::Standby)
            })
            .collect();
        if let Some(p) = state.primary.clone() {
            if let Some(o) = self.node(&p) {
                if o.is_gone() {
                    self.note_event(
                        &format!("primary_gone:{p}"),
                        Event::observed(
                            self.now,
                            "primary_gone",
                            Some(&p),
                            format!("the runtime says the primary {p} is gone: acting at once"),
                        ),
                    );
                } else if o.answers_as(Role::Standby) {
                    self.note(
                        &format!("primary_demoted:{p}"),
                        Some(&p),
                        format!(
                            "{p}, the primary, answers as a standby now: no node is the primary"
                        ),
                    );
                }
            }
        }

        if !threats.is_empty() {
            let mut alive = false;
            for th in &threats {
                // A node never seen in a role may be a primary nobody streams from: that
                // the standbys reach it says nothing about whether it still writes.
                let known = state.primary.as_deref() == Some(th.name.as_str());
                if let Some(why) = self.alive_evidence(th, known) {
                    alive = true;
                    self.note(
                        &format!("alive:{}", th.name),
                        Some(&th.name),
                        format!(
                            "{} does not answer the monitor, but {why}: it is alive, no failover",
                            th.name
                        ),
                    );
                }
            }
            if alive {
                return;
            }
            if silent_ms < self.timing.failover_timeout_ms {
                for th in &threats {
                    self.note(
                        &format!("unreachable:{}", th.name),
                        Some(&th.name),
                        format!(
                            "{} does not answer ({:?}); no standby receives WAL from it; failover after {} ms without an answer",
                            th.name, th.process, self.timing.failover_timeout_ms
                        ),
                    );
                }
                return;
            }
            // A fence is the first half of a failover: while no standby could take over,
            // a primary that may still run (and serve its clients) is left alone, with
            // every other node that could be one, since none of them could be replaced
            // either. A frozen primary serves nobody: fenced, it can be started again in
            // place (once every node that might be a primary is down or a standby).
            let takeover = candidates::pick(
                self.obs,
                self.intent,
                state.sync_view.as_ref(),
                state.primary.as_deref(),
            );
            let primary_may_serve = threats.iter().any(|th| {
                state.primary.as_deref() == Some(th.name.as_str()) && th.process != Process::Frozen
            });
            if let (Err(why), true) = (&takeover, primary_may_serve) {
                for th in &threats {
                    self.note(
                        &format!("no_takeover:{}", th.name),
                        Some(&th.name),
                        format!(
                            "{} has not answered for {silent_ms} ms and no standby receives WAL from it, but no standby could take over ({why}): not fencing it",
                            th.name
                        ),
                    );
                }
                return;
            }
            let names: Vec<&str> = threats.iter().map(|t| t.name.as_str()).collect();
            for th in &threats {
                let why = match th.process {
                    Process::Frozen => "it is frozen (it would write again once thawed)",
                    Process::Unknown => "the runtime cannot tell whether it runs",
                    _ => "it still runs",
                };
                self.note_event(
                    &format!("fence:{}", th.name),
                    Event::decided(
                        self.now,
                        "fence",
                        Some(&th.name),
                        format!(
                            "no primary has answered for {silent_ms} ms and no standby receives WAL from {}; {why}: fencing it before any promotion",
                            th.name
                        ),
                    )
                    .with("silent_ms", silent_ms)
                    .with("fencing", names.clone()),
                );
                self.actions.push(Action::Fence {
                    node: th.name.clone(),
                });
            }
            return;
        }
        self.take_over(state);
    }

    /// Whether a promotion decided earlier took effect, once the node tells: one that
    /// answers as a standby, or is down with its standby.signal still there, never became
    /// the primary (a promoted server cannot go back without a rejoin); then the primary
    /// it was to replace is the last one again, and that primary's synchronous replication
    /// says who may hold its commits. Taking the standby for the last primary instead would
    /// read `synchronous_standby_names` as it would have set it, without itself: it would
    /// look like an asynchronous standby, and a candidate lacking the commits only it
    /// confirmed could be promoted. One that runs without answering may be either: it
    /// stays a threat (fenced after the timeout), and tells once it is down.
    fn resolve_promotion(&mut self, state: &mut MonitorState) {
        let Some((new, old)) = state.promoting.clone() else {
            return;
        };
        let Some(n) = self.node(&new) else {
            state.promoting = None;
            return;
        };
        let failed = n.answers_as(Role::Standby) || (n.is_gone() && n.standby_signal);
        if n.is_gone() && !n.standby_signal {
            // Promoted, then down before the monitor saw it as the primary.
            state.promoting = None;
        }
        if !failed {
            return;
        }
        self.log(Event::observed(
            self.now,
            "promotion_failed",
            Some(&new),
            format!(
                "{new} is still a standby: its promotion did not take effect{}",
                old.as_ref()
                    .map(|o| format!("; {o} remains the last primary"))
                    .unwrap_or_default()
            ),
        ));
        if let Some(o) = &old {
            state.superseded.remove(o);
        }
        state.roles.insert(new, Role::Standby);
        state.primary = old;
        state.promoting = None;
    }

    /// For a monitor that never saw the primary: the node the standbys name as their
    /// upstream, else the one whose data says it was the primary last (not a standby's,
    /// superseded by nobody), the file's primary first.
    fn presumed_primary(&self) -> Option<String> {
        let mut named: BTreeMap<&str, usize> = BTreeMap::new();
        for r in self
            .obs
            .nodes
            .iter()
            .filter(|n| n.answers_as(Role::Standby))
            .filter_map(|n| n.receiver.as_ref())
        {
            if let Some(u) = r
                .upstream
                .as_deref()
                .filter(|u| self.node(u).is_some_and(|o| !o.answers_as(Role::Standby)))
            {
                *named.entry(u).or_default() += 1;
            }
        }
        if let Some((u, _)) = named.into_iter().max_by_key(|(_, k)| *k) {
            return Some(u.to_string());
        }
        let possible: Vec<&Facts> = self
            .facts
            .iter()
            .filter(|f| !f.standby)
            .filter(|f| !self.superseded(f))
            .collect();
        possible
            .iter()
            .find(|f| Some(f.name.as_str()) == self.intent.root())
            .or_else(|| {
                possible
                    .iter()
                    .max_by_key(|f| (f.path.as_ref().map(|p| p.tli), f.end))
            })
            .map(|f| f.name.clone())
    }

    /// While the primary is out of sight, a synchronous candidate that comes or goes may
    /// have taken the `sync` role: the primary's last word no longer tells who has every
    /// commit. Compared with how the candidates were when the primary was last seen
    /// (`in_sight`: record that), so that one that went silent together with the primary
    /// counts as a change.
    fn track_candidates(&mut self, state: &mut MonitorState, in_sight: bool) {
        if in_sight {
            state.candidates_seen.clear();
        }
        let Some(view) = state.sync_view.as_mut() else {
            return;
        };
        let names = parse_standby_names(&view.names)
            .map(|(_, _, l)| l)
            .unwrap_or_default();
        for n in &self.obs.nodes {
            let app = self.intent.app(&n.name);
            if n.name == view.primary
                || !names
                    .iter()
                    .any(|l| l == "*" || l.eq_ignore_ascii_case(app))
            {
                continue;
            }
            let now = (n.process, n.answered);
            match state.candidates_seen.insert(n.name.clone(), now) {
                Some(before) if before != now => view.fresh = false,
                None if !in_sight => view.fresh = false,
                _ => {}
            }
        }
    }

    /// Nothing can acknowledge a write: promote the best standby.
    fn take_over(&mut self, state: &mut MonitorState) {
        let old = state.primary.clone();
        match candidates::pick(
            self.obs,
            self.intent,
            state.sync_view.as_ref(),
            old.as_deref(),
        ) {
            Ok(pick) => self.promote(state, old, pick),
            Err(why) => {
                self.note(
                    "no_candidate",
                    None,
                    format!("no primary, and nothing to promote: {why}"),
                );
                self.restart_old_primary(state);
            }
        }
    }

    fn promote(&mut self, state: &mut MonitorState, old: Option<String>, pick: candidates::Pick) {
        let new = pick.node.clone();
        let mut event = Event::decided(
            self.now,
            "promote",
            Some(&new),
            format!(
                "promoting {new}{}: {}",
                old.as_ref()
                    .map(|o| format!(" in place of {o}"))
                    .unwrap_or_default(),
                pick.reason
            ),
        )
        .with("data_loss_accepted", pick.data_loss_accepted);
        if let Some(o) = &old {
            event = event.with("old_primary", o.clone());
        }
        self.log(event);
        self.actions.push(Action::Promote {
            node: new.clone(),
            reason: pick.reason,
        });
        self.actions.push(Action::ApplySync {
            primary: new.clone(),
        });
        let followers: Vec<String> = self
            .obs
            .nodes
            .iter()
            .filter(|n| n.name != new && n.answers_as(Role::Standby))
            .filter(|n| {
                let intended = self
                    .intent
                    .node(&n.name)
                    .and_then(|i| i.upstream.as_deref());
                let actual = n.receiver.as_ref().and_then(|r| r.upstream.as_deref());
                intended
                    .is_none_or(|u| Some(u) == old.as_deref() || !self.healthy_upstream(u, &new))
                    || (actual.is_some() && actual == old.as_deref())
            })
            .filter(|n| {
                // One that went past the fork point is rejoined later, not repointed.
                let f = n.facts();
                !matches!(
                    self.lineage_against(&new, &f),
                    Some(Lineage::Diverged { .. } | Lineage::Unrelated)
                )
            })
            .map(|n| n.name.clone())
            .collect();
        for f in followers {
            self.actions.push(Action::Repoint {
                node: f,
                upstream: new.clone(),
            });
        }
        if let Some(o) = old.as_ref().filter(|o| **o != new) {
            state.superseded.insert(o.clone());
        }
        state.promoting = Some((new.clone(), old));
        state.primary = Some(new.clone());
        state.primary_seen_at_ms = Some(self.now);
        state.roles.insert(new, Role::Primary);
        // The old primary's sync view (and how its candidates were when it was last seen)
        // stays: should the promotion not take effect, it still tells who may hold its
        // commits. A new primary gets its own view when it is first seen.
        state.failovers += 1;
        state.last_failover_at_ms = Some(self.now);
    }

    /// Whether `u` can feed a standby after `new`'s promotion: `new` itself, or a standby
    /// that streams.
    fn healthy_upstream(&self, u: &str, primary: &str) -> bool {
        u == primary || self.node(u).is_some_and(NodeObs::streams)
    }

    /// How `node` stands against `server`'s history.
    fn lineage_against(&self, server: &str, node: &Facts) -> Option<Lineage> {
        let s = self.facts_of(server)?;
        Some(timeline::lineage(
            s.path.as_ref()?,
            node.path.as_ref()?,
            node.end.unwrap_or(Lsn(u64::MAX)),
        ))
    }

    /// No standby can take over: start the old primary again where it is, if its data is
    /// still the newest (crash recovery loses nothing). Only when every node is down or a
    /// standby, so that it cannot make a second primary.
    fn restart_old_primary(&mut self, state: &mut MonitorState) {
        // Every node stopped cleanly: someone took the cluster down (`pgrepl down`), and a
        // monitor does not undo that.
        if self.obs.nodes.iter().all(|n| n.is_gone()) && self.facts.iter().all(|f| f.end.is_some())
        {
            self.note(
                "all_stopped",
                None,
                "every node was stopped cleanly: the monitor leaves the cluster down (`pgrepl up` starts it)".into(),
            );
            return;
        }
        let startable: Vec<&Facts> = self
            .facts
            .iter()
            .filter(|f| !f.running && !f.standby && f.path.is_some())
            .filter(|f| !self.superseded(f))
            .collect();
        let Some(p) = startable
            .iter()
            .find(|f| state.primary.as_deref() == Some(f.name.as_str()))
            .or_else(|| {
                startable
                    .iter()
                    .max_by_key(|f| (f.path.as_ref().map(|p| p.tli), f.end))
            })
            .map(|f| f.name.clone())
        else {
            return;
        };
        if self.may_try(state, &format!("start:{p}")) {
            self.log(Event::decided(
                self.now,
                "start_primary",
                Some(&p),
                format!("starting {p} again as the primary: no standby can take over without losing commits, and no later promotion superseded its data"),
            ));
            self.actions.push(Action::StartPrimary { node: p.clone() });
            state.primary = Some(p);
            state.primary_seen_at_ms = Some(self.now);
        }
    }

    // ---- exactly one primary answers ----

    fn with_primary(&mut self, state: &mut MonitorState, p: &'a NodeObs) {
        // A node last seen as a primary that now runs without answering may still serve:
        // one of the two must go before anything else happens.
        let silent_primaries: Vec<&NodeObs> = self
            .obs
            .nodes
            .iter()
            .filter(|x| x.name != p.name && !x.is_gone() && !x.answered)
            .filter(|x| state.roles.get(&x.name) == Some(&Role::Primary))
            .collect();
        for xo in silent_primaries {
            let x = &xo.name;
            let stale = if authority::supersedes(&xo.facts(), &p.facts())
                || state.superseded.contains(&p.name)
                || self.alive_evidence(xo, true).is_some()
            {
                p.name.clone()
            } else {
                x.clone()
            };
            self.note_event(
                &format!("fence_stale:{stale}"),
                Event::decided(
                    self.now,
                    "fence_stale_primary",
                    Some(&stale),
                    format!(
                        "{} answers as the primary while {x}, last seen as the primary, runs without answering: fencing {stale}",
                        p.name
                    ),
                ),
            );
            self.actions.push(Action::Fence {
                node: stale.clone(),
            });
            if stale == p.name {
                return;
            }
        }
        state.promoting = None;
        if state.primary.as_deref() != Some(&p.name) {
            if state.primary.is_some() {
                self.log(Event::observed(
                    self.now,
                    "new_primary",
                    Some(&p.name),
                    format!("{} is the primary now", p.name),
                ));
            }
            state.primary = Some(p.name.clone());
        }
        state.primary_seen_at_ms = Some(self.now);
        // Started again and answering: a later start is a new story, not a retry.
        state.retries.remove(&format!("start:{}", p.name));
        self.watch_sync(state, p);
        self.track_candidates(state, true);
        self.standbys(state, p);
        self.slots(state);
        self.sync(state, p);
    }

    /// Updates what the primary's synchronous replication guarantees. The floor bounds
    /// every commit acknowledged so far: the most WAL any confirming standby reported
    /// flushed, while the monitor watches without a gap and the confirming set stays the
    /// same. It must not trust a standby's position more than PostgreSQL does: a walsender
    /// is `sync` once it has *sent* the WAL, not once the standby flushed it, so a standby
    /// that took the `sync` (or `quorum`) role over may still lack commits its predecessor
    /// confirmed; and one that left between two ticks may have confirmed commits nobody saw
    /// it flush. Like Patroni, which counts a new synchronous standby only once it flushed
    /// up to the primary's position at the time it became one, the floor rises to the
    /// primary's own position whenever the monitor cannot vouch for the history: on first
    /// sight of this primary (a restarted monitor, a primary started again, one back in
    /// sight after a silence) and when a standby joins or leaves the confirming set.
    fn watch_sync(&mut self, state: &mut MonitorState, p: &NodeObs) {
        let Some(names) = &p.sync_names else {
            // Not read this tick: a gap in the watch.
            if let Some(v) = state.sync_view.as_mut().filter(|v| v.primary == p.name) {
                v.fresh = false;
            }
            return;
        };
        let confirming: Vec<&Downstream> = p
            .downstreams
            .iter()
            .filter(|d| d.streaming && matches!(d.sync_state.as_deref(), Some("sync" | "quorum")))
            .collect();
        let confirmed = confirming
            .iter()
            .filter_map(|d| d.flush)
            .max()
            .unwrap_or_default();
        let apps: BTreeSet<String> = confirming
            .iter()
            .map(|d| d.application_name.to_ascii_lowercase())
            .collect();
        let before = state.sync_view.as_ref().filter(|v| v.primary == p.name);
        let watched = self.watched_before.as_deref() == Some(p.name.as_str());
        let same_set = before.is_some_and(|v| {
            v.confirming
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect::<BTreeSet<_>>()
                == apps
        });
        let mut floor = confirmed.max(before.map(|v| v.floor).unwrap_or_default());
        if !watched || !same_set {
            // An unknown position could hide any acknowledged commit.
            floor = floor.max(p.end.unwrap_or(Lsn(u64::MAX)));
        }
        state.sync_view = Some(SyncView {
            primary: p.name.clone(),
            names: names.clone(),
            confirming: confirming
                .iter()
                .map(|d| d.application_name.clone())
                .collect(),
            fresh: true,
            floor,
        });
        state.watched = Some(p.name.clone());
    }

    fn standbys(&mut self, state: &mut MonitorState, p: &NodeObs) {
        let pf = p.facts();
        let newer: Vec<String> = authority::newer_than(&pf, &self.facts)
            .iter()
            .map(|f| f.name.clone())
            .collect();
        for n in &newer {
            self.note(
                &format!("newer_history:{n}"),
                Some(n),
                format!("{n} holds a history newer than the primary {}'s (a promotion {} never saw): the monitor will not rejoin it (that would discard commits); decide which to keep", p.name, p.name),
            );
        }
        let nodes: Vec<&NodeObs> = self
            .obs
            .nodes
            .iter()
            .filter(|n| n.name != p.name && !newer.contains(&n.name))
            .collect();
        for n in nodes {
            let name = n.name.clone();
            if n.answers_as(Role::Standby) {
                // Streaming, but not from the upstream the cluster file names while that one
                // could feed it: left behind on an old primary that was rejoined, or on a
                // node a repoint missed. Under synchronous replication the primary would wait
                // for it forever.
                let astray = self
                    .intent
                    .node(&name)
                    .and_then(|i| i.upstream.as_deref())
                    .filter(|u| !n.streams_from(u) && self.healthy_upstream(u, &p.name))
                    .map(str::to_string);
                if n.streams() && astray.is_none() {
                    state.not_streaming_since.remove(&name);
                    state.retries.remove(&format!("standby:{name}"));
                    continue;
                }
                let since = *state
                    .not_streaming_since
                    .entry(name.clone())
                    .or_insert(self.now);
                if self.now.saturating_sub(since) < self.timing.standby_grace_ms {
                    continue;
                }
                let f = n.facts();
                let diverged = match (pf.path.as_ref(), f.path.as_ref()) {
                    (Some(pp), Some(np)) => matches!(
                        timeline::lineage(pp, np, f.end.unwrap_or_default()),
                        Lineage::Diverged { .. } | Lineage::Unrelated
                    ),
                    _ => false,
                };
                let (action, why) = match (&astray, n.streams()) {
                    (Some(u), true) => (
                        Action::Repoint {
                            node: name.clone(),
                            upstream: u.clone(),
                        },
                        format!(
                            "{name} has streamed from {} for {} ms, not from {u} as the cluster file says",
                            n.receiver
                                .as_ref()
                                .and_then(|r| r.upstream.as_deref())
                                .unwrap_or("another node"),
                            self.now - since
                        ),
                    ),
                    _ if diverged => (
                        Action::Rejoin {
                            node: name.clone(),
                            upstream: p.name.clone(),
                        },
                        format!("{name} has not streamed for {} ms", self.now - since),
                    ),
                    _ => (
                        self.restart_or_repoint(n, p),
                        format!("{name} has not streamed for {} ms", self.now - since),
                    ),
                };
                if self.may_try(state, &format!("standby:{name}")) {
                    self.log(Event::decided(
                        self.now,
                        action.code(),
                        Some(&name),
                        format!("{why}: {}", action.describe()),
                    ));
                    self.actions.push(action);
                }
            } else if n.is_gone() {
                let others: Vec<Facts> = self
                    .facts
                    .iter()
                    .filter(|f| f.name != name)
                    .cloned()
                    .collect();
                let upstream = self.intent.node(&name).and_then(|i| i.upstream.clone());
                let f = n.facts();
                let (action, why) = match authority::start_as(
                    &f,
                    &p.name,
                    upstream.as_deref(),
                    &others,
                ) {
                    StartAs::Standby { .. } if n.standby_signal && f.end.is_none() => (
                        self.restart_or_rejoin(n, p),
                        "it is down after a crash".to_string(),
                    ),
                    StartAs::Standby { .. } if n.standby_signal => {
                        // Stopped cleanly: someone stopped it (`pgrepl stop`), on purpose.
                        self.note(
                                &format!("stopped:{name}"),
                                Some(&name),
                                format!("{name} was stopped cleanly: the monitor leaves it stopped (`pgrepl start {name}` starts it)"),
                            );
                        continue;
                    }
                    StartAs::Standby { note } => (
                        Action::Repoint {
                            node: name.clone(),
                            upstream: p.name.clone(),
                        },
                        note.unwrap_or_else(|| "it is down, and its data can still follow".into()),
                    ),
                    StartAs::Refuse(why) => (
                        Action::Rejoin {
                            node: name.clone(),
                            upstream: p.name.clone(),
                        },
                        why,
                    ),
                    StartAs::Primary { .. } => (
                        Action::Rejoin {
                            node: name.clone(),
                            upstream: p.name.clone(),
                        },
                        format!("{} is the primary", p.name),
                    ),
                };
                if self.may_try(state, &format!("standby:{name}")) {
                    self.log(Event::decided(
                        self.now,
                        action.code(),
                        Some(&name),
                        format!("{name}: {why}: {}", action.describe()),
                    ));
                    self.actions.push(action);
                }
            } else if !n.answered {
                state.not_streaming_since.remove(&name);
                self.note(
                    &format!("silent:{name}"),
                    Some(&name),
                    format!("{name} runs but does not answer the monitor"),
                );
            }
        }
    }

    /// A standby that does not stream: repointed when its upstream cannot feed it,
    /// restarted otherwise.
    fn restart_or_repoint(&self, n: &NodeObs, p: &NodeObs) -> Action {
        let intended = self
            .intent
            .node(&n.name)
            .and_then(|i| i.upstream.as_deref());
        match intended {
            Some(u) if self.healthy_upstream(u, &p.name) => Action::RestartStandby {
                node: n.name.clone(),
            },
            _ => Action::Repoint {
                node: n.name.clone(),
                upstream: p.name.clone(),
            },
        }
    }

    /// A standby that crashed: restarted when its upstream can feed it (crash recovery
    /// first), rejoined otherwise (its WAL end is unknown, so it cannot simply be repointed).
    fn restart_or_rejoin(&self, n: &NodeObs, p: &NodeObs) -> Action {
        match self.restart_or_repoint(n, p) {
            Action::Repoint { node, upstream } => Action::Rejoin { node, upstream },
            other => other,
        }
    }

    /// Inactive slots that no standby of the cluster file streams through from their node.
    fn slots(&mut self, state: &mut MonitorState) {
        let mut orphans = BTreeSet::new();
        for x in self.obs.nodes.iter().filter(|x| x.answered) {
            for s in x.slots.iter().filter(|s| !s.active) {
                let owner = self
                    .intent
                    .nodes
                    .iter()
                    .find(|o| o.slot == s.name && o.name != x.name);
                let used = owner.is_some_and(|o| {
                    o.upstream.as_deref() == Some(&x.name)
                        || self
                            .node(&o.name)
                            .and_then(|on| on.receiver.as_ref())
                            .is_some_and(|r| r.upstream.as_deref() == Some(&x.name))
                });
                if !used {
                    orphans.insert(format!("{}/{}", x.name, s.name));
                }
            }
        }
        state.orphan_slot_since.retain(|k, _| orphans.contains(k));
        for key in orphans {
            let since = *state
                .orphan_slot_since
                .entry(key.clone())
                .or_insert(self.now);
            if self.now.saturating_sub(since) < self.timing.standby_grace_ms
                || !self.may_try(state, &format!("slot:{key}"))
            {
                continue;
            }
            let (node, slot) = key.split_once('/').expect("node/slot");
            self.log(Event::decided(
                self.now,
                "drop_slot",
                Some(node),
                format!("the slot {slot} on {node} is unused and no standby of the cluster file streams through it from {node}: dropping it (it would keep WAL forever)"),
            ));
            self.actions.push(Action::DropSlot {
                node: node.into(),
                slot: slot.into(),
            });
        }
    }

    /// Keeps the file's `[sync]` on the primary, and does what `on_sync_loss` says when no
    /// synchronous candidate streams.
    fn sync(&mut self, state: &mut MonitorState, p: &NodeObs) {
        let (Some(sync), Some(observed)) = (self.intent.sync.as_ref(), p.sync_names.as_deref())
        else {
            state.sync_unsatisfied_since = None;
            return;
        };
        let want = for_primary(sync, self.intent.app(&p.name));
        let have = parse_standby_names(observed);
        let key = format!("sync:{}", p.name);
        let Some(want) = want else {
            // Only the primary itself is listed: nothing to wait for.
            if have.is_some() && self.may_try(state, &key) {
                self.actions.push(Action::ApplySync {
                    primary: p.name.clone(),
                });
            }
            return;
        };
        let streaming = p
            .downstreams
            .iter()
            .filter(|d| {
                d.streaming
                    && want
                        .standbys
                        .iter()
                        .any(|l| l == "*" || l.eq_ignore_ascii_case(&d.application_name))
            })
            .count();
        let enough = streaming >= want.num as usize;
        let matches = have
            .as_ref()
            .is_some_and(|(m, n, l)| *m == want.method && *n == want.num && *l == want.standbys);
        let degrade = self.intent.on_sync_loss == OnSyncLoss::Degrade;
        if matches {
            state.retries.remove(&key);
            if enough {
                state.sync_unsatisfied_since = None;
                return;
            }
            let since = *state.sync_unsatisfied_since.get_or_insert(self.now);
            let waited = self.now - since;
            if !degrade {
                self.note(&format!("sync_blocked:{}", p.name), Some(&p.name), format!("too few synchronous standbys stream to {} ('{observed}'): commits wait (on_sync_loss = block)", p.name));
            } else if waited >= self.timing.failover_timeout_ms && self.may_try(state, &key) {
                self.log(Event::decided(
                    self.now,
                    "degrade_sync",
                    Some(&p.name),
                    format!("no synchronous candidate has streamed to {} for {waited} ms: clearing synchronous_standby_names so that commits go on (on_sync_loss = degrade); acknowledged commits are on {} alone until a candidate streams again", p.name, p.name),
                ));
                self.actions.push(Action::DegradeSync {
                    primary: p.name.clone(),
                });
            }
            return;
        }
        state.sync_unsatisfied_since = None;
        if have.is_none() && !enough && degrade {
            self.note(&format!("sync_degraded:{}", p.name), Some(&p.name), format!("synchronous replication is off on {} until a synchronous candidate streams (on_sync_loss = degrade)", p.name));
            return;
        }
        if self.may_try(state, &key) {
            let why = if have.is_none() && enough {
                "a synchronous candidate streams again: restoring the cluster file's synchronous replication"
            } else {
                "its synchronous_standby_names differs from the cluster file's [sync]"
            };
            self.log(Event::decided(
                self.now,
                "apply_sync",
                Some(&p.name),
                format!("{}: {why} ('{}')", p.name, want.standby_names_setting()),
            ));
            self.actions.push(Action::ApplySync {
                primary: p.name.clone(),
            });
            // Until the primary is seen again, count on the setting having changed: who
            // confirms commits under it is unknown.
            if let Some(v) = state.sync_view.as_mut() {
                v.names = want.standby_names_setting();
                v.confirming.clear();
                v.fresh = false;
            }
        }
    }
}
