//! Who may be the primary, decided from what the nodes' own data says: their timeline paths,
//! where their WAL ends, and their database system. The cluster file says what the user
//! intends; a node that a later promotion has superseded must never come back as a primary,
//! whatever the file says (it may be stale: a command killed before it saved the file).
//!
//! Pure functions over [`Facts`], so that every rule is unit-tested without servers.

use crate::cluster::Cluster;
use crate::observe::lineage::{self};
use crate::observe::topology::Probe;
use crate::postgres::timeline::{self, Lineage, TimelinePath};
use crate::postgres::Lsn;

/// What one node's data says, running or not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    pub name: String,
    /// Its server process exists (it may still not answer).
    pub running: bool,
    /// It answers, as a primary (not in recovery).
    pub primary: bool,
    /// It answers, as a standby; or, when it is down, its data would start as one
    /// (standby.signal).
    pub standby: bool,
    pub system_id: Option<u64>,
    pub path: Option<TimelinePath>,
    /// Where its WAL ends; None when unknown (it crashed, or runs without answering).
    pub end: Option<Lsn>,
}

impl Facts {
    pub fn from_probe(p: &Probe, standby_signal: bool) -> Facts {
        let pos = p.position.as_ref();
        let end = match pos {
            Some(x) if x.in_recovery => x.replay_lsn,
            Some(x) => x.current_lsn,
            None if !p.running => lineage::stopped_end(p).map(|e| e.end),
            None => None,
        };
        Facts {
            name: p.name.clone(),
            running: p.running,
            primary: p.is_primary(),
            standby: p.is_standby() || (!p.running && standby_signal),
            system_id: p.system_id(),
            path: p.path.clone(),
            end,
        }
    }

    fn tli(&self) -> u32 {
        self.path.as_ref().map(|p| p.tli).unwrap_or(0)
    }
}

/// Every probed node's facts (a stopped node's standby.signal read from its data directory).
pub fn of_probes(cluster: &Cluster, probes: &[Probe]) -> Vec<Facts> {
    probes
        .iter()
        .map(|p| {
            let signal = cluster.data_dir(&p.name).join("standby.signal").exists();
            Facts::from_probe(p, signal)
        })
        .collect()
}

/// How `node` stands against `other`'s history, if both paths are known.
fn against(other: &Facts, node: &Facts) -> Option<Lineage> {
    let (op, np) = (other.path.as_ref()?, node.path.as_ref()?);
    // An unknown end (a crash) is compared as if the WAL went on: any fork on its path is
    // passed, which is what crash recovery would do.
    Some(timeline::lineage(op, np, node.end.unwrap_or(Lsn(u64::MAX))))
}

/// Whether a promotion on `other`'s path happened after `node`'s timeline: `other` has
/// moved on from where `node` is.
pub fn supersedes(other: &Facts, node: &Facts) -> bool {
    matches!(
        against(other, node),
        Some(Lineage::Follows { fork: Some(_) }) | Some(Lineage::Diverged { .. })
    )
}

/// The node whose history every other known history leads to: the most recent primary, or
/// the node that will hold its data. None when no path is known.
pub fn newest(facts: &[Facts]) -> Option<&Facts> {
    facts
        .iter()
        .filter(|f| f.path.is_some())
        .filter(|f| !facts.iter().any(|o| o.name != f.name && supersedes(o, f)))
        // Among nodes on the newest history: a running primary first, then the most WAL.
        .max_by_key(|f| (f.primary, f.tli(), f.end.unwrap_or_default()))
}

/// Nodes whose history goes on past everything `candidate` has: a promotion `candidate`
/// never saw. Promoting `candidate` would start yet another history and throw theirs away,
/// commits acknowledged there included.
pub fn newer_than<'a>(candidate: &Facts, others: &'a [Facts]) -> Vec<&'a Facts> {
    others
        .iter()
        .filter(|o| o.name != candidate.name)
        .filter(|o| matches!(against(candidate, o), Some(Lineage::Ahead)))
        .collect()
}

/// Nodes on `candidate`'s own timeline whose WAL goes on past where `candidate`'s ends:
/// promoting `candidate` ends that timeline at its own end, and their WAL beyond it (commits
/// acknowledged there included) is discarded when they rejoin. Only known ends count (a
/// crashed node's is unknown: nothing can be said of it).
pub fn further_than<'a>(candidate: &Facts, others: &'a [Facts]) -> Vec<&'a Facts> {
    let Some(mine) = candidate.end else {
        return Vec::new();
    };
    others
        .iter()
        .filter(|o| o.name != candidate.name && o.tli() == candidate.tli())
        .filter(|o| o.end.is_some_and(|e| e > mine))
        .filter(|o| matches!(against(candidate, o), Some(Lineage::Follows { fork: None })))
        .collect()
}

/// The database system most nodes belong to, and the nodes that belong to another one.
pub fn foreign_systems(facts: &[Facts]) -> Vec<(&str, u64)> {
    let mut counts: Vec<(u64, usize)> = Vec::new();
    for id in facts.iter().filter_map(|f| f.system_id) {
        match counts.iter_mut().find(|(i, _)| *i == id) {
            Some((_, n)) => *n += 1,
            None => counts.push((id, 1)),
        }
    }
    // A running primary's system wins a tie: it is the one serving.
    let main = facts
        .iter()
        .find(|f| f.primary)
        .and_then(|f| f.system_id)
        .filter(|id| {
            let n = counts.iter().find(|(i, _)| i == id).map_or(0, |c| c.1);
            counts.iter().all(|(_, m)| *m <= n)
        })
        .or_else(|| counts.iter().max_by_key(|(_, n)| *n).map(|(i, _)| *i));
    facts
        .iter()
        .filter_map(|f| Some((f.name.as_str(), f.system_id?)))
        .filter(|(_, id)| Some(*id) != main)
        .collect()
}

/// How a node that is down may be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAs {
    /// As the primary: nothing supersedes it, and the cluster file names it, or names a node
    /// it superseded (the file is stale: the note says so).
    Primary { note: Option<String> },
    /// As a standby (its settings and standby.signal written from the cluster file first).
    /// The note says why, when the data alone would have started it as a primary.
    Standby { note: Option<String> },
    /// Not at all: starting it would make a second primary or lose track of its data.
    Refuse(String),
}

/// Decides how `node` (down, with data) may start, from every other node's facts.
/// `spec_root` is the primary the cluster file names; `upstream` the node it names as this
/// one's upstream.
pub fn start_as(
    node: &Facts,
    spec_root: &str,
    upstream: Option<&str>,
    others: &[Facts],
) -> StartAs {
    let name = &node.name;
    if let Some(id) = node.system_id {
        let mine_alone = others.iter().filter_map(|o| o.system_id).any(|o| o != id)
            && !others.iter().any(|o| o.system_id == Some(id));
        if mine_alone {
            let main = others.iter().find(|o| o.primary).or_else(|| others.first());
            return StartAs::Refuse(format!(
                "{name}'s data directory belongs to another database system (identifier {id}) than the rest of the cluster: it was not cloned from it; re-clone it with `pgrepl rejoin {name} --upstream {} --reclone` (the old directory is kept)",
                main.map(|m| m.name.as_str()).unwrap_or(spec_root)
            ));
        }
    }
    if node.standby {
        let note = (spec_root == name).then(|| {
            format!(
                "the cluster file names {name} the primary, but its data is a standby's: it started as a standby; promote it with `pgrepl promote {name}` if it should be the primary"
            )
        });
        return StartAs::Standby { note };
    }

    // Its data would start it as a primary.
    let serving = others.iter().find(|o| o.primary);
    let superseder = serving.filter(|p| supersedes(p, node)).or_else(|| {
        // The newest history; on it, the node that was promoted (its data is a primary's)
        // and runs, rather than a standby that merely followed it: that is the node to name.
        others
            .iter()
            .filter(|o| supersedes(o, node))
            .max_by_key(|o| (o.tli(), !o.standby, o.running))
    });
    let rejoin = |up: &str| format!("`pgrepl rejoin {name} --upstream {up}`");

    match (serving, superseder) {
        (Some(p), Some(s)) if p.name == s.name => {
            follow_or_refuse(node, p, &format!("{} is the primary now", p.name), rejoin(&p.name))
        }
        (Some(p), _) => StartAs::Refuse(format!(
            "{} is already running as the primary: starting {name} as a primary too would make two primaries that both accept writes; to make {name} a standby of it use {}, to make {name} the primary again use `pgrepl switchover --to {name}` once it is a standby",
            p.name,
            rejoin(&p.name)
        )),
        (None, Some(s)) if spec_root == name => StartAs::Refuse(format!(
            "{name} must not start as the primary: {} was promoted after it (timeline {}), so {name}'s data is out of date although the cluster file still names it (a command may have been interrupted before saving it); start {} (`pgrepl start {}`), then rejoin {name} with {}",
            s.name,
            s.tli(),
            s.name,
            s.name,
            rejoin(&s.name)
        )),
        (None, Some(s)) => follow_or_refuse(
            node,
            s,
            &format!("{} was promoted after it (timeline {})", s.name, s.tli()),
            rejoin(&s.name),
        ),
        (None, None) if spec_root == name => StartAs::Primary { note: None },
        (None, None) if others.iter().any(|o| o.name == spec_root && supersedes(node, o)) => {
            StartAs::Primary {
                note: Some(format!(
                    "the cluster file names {spec_root} the primary, but {name} was promoted after it: {name} is the newest primary; `pgrepl failover` records it in the cluster file and repoints the standbys"
                )),
            }
        }
        (None, None) => {
            let ahead_of_upstream = upstream
                .and_then(|u| others.iter().find(|o| o.name == u))
                .is_some_and(|u| {
                    matches!(against(u, node), Some(Lineage::Ahead))
                        || supersedes(node, u)
                        // Further along the upstream's own timeline: it would ask the
                        // upstream for WAL the upstream never had.
                        || !further_than(u, std::slice::from_ref(node)).is_empty()
                });
            if ahead_of_upstream {
                let up = upstream.unwrap_or(spec_root);
                StartAs::Refuse(format!(
                    "{name}'s data is a primary's and newer than {up}'s, which the cluster file names as its upstream: started as a standby it could not follow {up}; start {name} as the primary by making it the cluster file's primary (`pgrepl failover --to {name}` once it runs), or re-clone it with `pgrepl rejoin {name} --upstream {up} --reclone`"
                ))
            } else {
                StartAs::Standby {
                    note: Some(format!(
                        "{name}'s data is a primary's, but the cluster file names {spec_root} the primary: {name} started as a standby"
                    )),
                }
            }
        }
    }
}

/// A superseded primary can come back as a standby only if it wrote nothing past the point
/// where the newer history left it, and we know where its WAL ends (a clean shutdown).
fn follow_or_refuse(node: &Facts, newer: &Facts, why: &str, rejoin: String) -> StartAs {
    let name = &node.name;
    match (against(newer, node), node.end) {
        (Some(Lineage::Follows { .. }), Some(_)) => StartAs::Standby {
            note: Some(format!("{why}: {name} started as a standby")),
        },
        (Some(Lineage::Diverged { fork, past_by }), Some(_)) => StartAs::Refuse(format!(
            "{name} must not start as a primary: {why}, and {name} has {past_by} bytes of WAL past {fork}, where {}'s history left it; rejoin it with {rejoin} (pg_rewind discards that WAL)",
            newer.name
        )),
        _ => StartAs::Refuse(format!(
            "{name} must not start as a primary: {why}, and {name} did not shut down cleanly, so whether it wrote past the fork point is unknown; rejoin it with {rejoin}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::timeline::parse_history;

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    fn f(name: &str, tli: u32, history: &str, end: Option<&str>) -> Facts {
        Facts {
            name: name.into(),
            system_id: Some(7),
            path: Some(TimelinePath::new(tli, parse_history(history))),
            end: end.map(lsn),
            ..Default::default()
        }
    }

    fn running_primary(mut x: Facts) -> Facts {
        x.running = true;
        x.primary = true;
        x
    }

    fn standby(mut x: Facts) -> Facts {
        x.standby = true;
        x
    }

    const TL2: &str = "1\t0/5000000\tx\n";

    #[test]
    fn the_named_primary_starts_as_primary_when_nothing_superseded_it() {
        let pg0 = f("pg0", 1, "", Some("0/6000000"));
        let others = [standby(f("pg1", 1, "", Some("0/6000000")))];
        assert_eq!(
            start_as(&pg0, "pg0", None, &others),
            StartAs::Primary { note: None }
        );
    }

    #[test]
    fn a_primary_superseded_by_a_running_one_never_starts_as_primary() {
        // kill pg0; failover (pg1 promoted at 0/5000000); start pg0.
        let pg1 = running_primary(f("pg1", 2, TL2, Some("0/5100000")));
        // pg0 crashed: its end is unknown.
        let crashed = f("pg0", 1, "", None);
        for root in ["pg0", "pg1"] {
            match start_as(&crashed, root, Some("pg1"), std::slice::from_ref(&pg1)) {
                StartAs::Refuse(m) => {
                    assert!(m.contains("pgrepl rejoin pg0 --upstream pg1"), "{m}")
                }
                other => panic!("{other:?}"),
            }
        }
        // pg0 shut down cleanly at the fork point: it can follow.
        let clean = f("pg0", 1, "", Some("0/5000000"));
        assert!(matches!(
            start_as(&clean, "pg0", Some("pg1"), std::slice::from_ref(&pg1)),
            StartAs::Standby { .. }
        ));
        // It wrote past the fork point: refuse.
        let past = f("pg0", 1, "", Some("0/5000100"));
        assert!(matches!(
            start_as(&past, "pg1", Some("pg1"), std::slice::from_ref(&pg1)),
            StartAs::Refuse(_)
        ));
    }

    #[test]
    fn a_stopped_newer_primary_still_supersedes_the_named_one() {
        // failover promoted pg1 and was killed before saving the file; then pg1 stopped.
        let pg1 = f("pg1", 2, TL2, Some("0/5100000"));
        let pg0 = f("pg0", 1, "", Some("0/5000000"));
        match start_as(&pg0, "pg0", None, std::slice::from_ref(&pg1)) {
            StartAs::Refuse(m) => assert!(m.contains("start pg1"), "{m}"),
            other => panic!("{other:?}"),
        }
        // And pg1, which the stale file makes a standby of pg0, starts as the primary.
        assert!(matches!(
            start_as(&pg1, "pg0", Some("pg0"), &[pg0]),
            StartAs::Primary { note: Some(_) }
        ));
    }

    #[test]
    fn never_a_second_primary_next_to_a_running_one() {
        let pg1 = running_primary(f("pg1", 1, "", Some("0/5000000")));
        let pg0 = f("pg0", 1, "", Some("0/5000000"));
        assert!(matches!(
            start_as(&pg0, "pg0", None, &[pg1]),
            StartAs::Refuse(m) if m.contains("already running as the primary")
        ));
    }

    #[test]
    fn standbys_start_as_standbys() {
        let pg2 = standby(f("pg2", 1, "", Some("0/5000000")));
        let pg0 = running_primary(f("pg0", 1, "", Some("0/6000000")));
        assert_eq!(
            start_as(&pg2, "pg0", Some("pg0"), &[pg0]),
            StartAs::Standby { note: None }
        );
    }

    #[test]
    fn a_foreign_data_directory_is_refused() {
        let mut fresh = f("pg0", 1, "", Some("0/1000000"));
        fresh.system_id = Some(99);
        let others = [
            standby(f(
                "pg1",
                3,
                "1\t0/5000000\tx\n2\t0/6000000\tx\n",
                Some("0/7000000"),
            )),
            standby(f(
                "pg2",
                3,
                "1\t0/5000000\tx\n2\t0/6000000\tx\n",
                Some("0/7000000"),
            )),
        ];
        assert!(matches!(
            start_as(&fresh, "pg0", None, &others),
            StartAs::Refuse(m) if m.contains("another database system")
        ));
        assert_eq!(foreign_systems(&[fresh, others[0].clone()]).len(), 1);
    }

    #[test]
    fn a_candidate_that_missed_a_promotion_would_lose_it() {
        // pg1 was promoted (and acknowledged commits) and stopped before pg2 learned of it.
        let pg1 = f("pg1", 2, TL2, Some("0/5100000"));
        let pg2 = standby(f("pg2", 1, "", Some("0/5000000")));
        let pg0 = f("pg0", 1, "", Some("0/5000100"));
        let facts = [pg0, pg1, pg2.clone()];
        let newer: Vec<&str> = newer_than(&pg2, &facts)
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(newer, ["pg1"]);
        // The old primary on the same timeline, a little ahead (async lag), is not a newer
        // history.
        let later = standby(f("pg3", 2, TL2, Some("0/5100000")));
        assert!(newer_than(&later, &facts).is_empty());
    }

    #[test]
    fn newest_is_the_node_whose_history_leads_everywhere() {
        let pg0 = f("pg0", 1, "", Some("0/5000000"));
        let pg1 = f("pg1", 2, TL2, Some("0/5100000"));
        let pg2 = standby(f("pg2", 1, "", Some("0/4000000")));
        let facts = [pg0, pg1, pg2];
        assert_eq!(newest(&facts).unwrap().name, "pg1");
        assert!(supersedes(&facts[1], &facts[0]));
        assert!(!supersedes(&facts[0], &facts[1]));
        assert!(supersedes(&facts[1], &facts[2]));
    }

    #[test]
    fn only_known_ends_of_the_same_timeline_count_as_further() {
        let cand = standby(f("pg1", 2, TL2, Some("0/5200000")));
        let stopped_primary = f("pg0", 2, TL2, Some("0/5300000"));
        let crashed = f("pg2", 2, TL2, None);
        let old_timeline = f("pg3", 1, "", Some("0/5400000"));
        let behind = standby(f("pg4", 2, TL2, Some("0/5100000")));
        let others = [stopped_primary, crashed, old_timeline, behind];
        let further: Vec<&str> = further_than(&cand, &others)
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(further, ["pg0"]);
    }

    #[test]
    fn a_primary_further_than_its_named_upstream_is_not_started_behind_it() {
        // The file was edited to make pg2 (a standby that lags) the primary and pg1 its
        // standby, though pg1 is the last primary and ahead of pg2 on the same timeline.
        let pg1 = f("pg1", 1, "", Some("0/6000000"));
        let pg2 = standby(f("pg2", 1, "", Some("0/5000000")));
        match start_as(&pg1, "pg2", Some("pg2"), &[pg2]) {
            StartAs::Refuse(why) => assert!(why.contains("newer than pg2"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
