//! Which standby a failover promotes: the one on the newest history with the most WAL, under
//! synchronous replication only a synchronous one.

use crate::error::{Error, Result};
use crate::observe::authority::{self, Facts};
use crate::postgres::timeline::TimelinePath;
use crate::postgres::Lsn;

/// A standby that could be promoted, as it stands once the old primary is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub timeline: u32,
    /// Its timeline and the history that led to it (None when it could not be read).
    pub path: Option<TimelinePath>,
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

    /// What its data says, for comparing histories: where its replay ends is what
    /// PostgreSQL itself compares with a fork point.
    pub fn facts(&self) -> Facts {
        Facts {
            name: self.name.clone(),
            running: true,
            standby: true,
            path: self.path.clone(),
            end: Some(self.replayed),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub node: String,
    pub reason: String,
}

/// Whether another candidate's history went on past `c`'s timeline (a promotion `c` never
/// saw): `c` is behind it, whatever the positions say.
fn left_behind(c: &Candidate, by: &[&Candidate]) -> Option<String> {
    let mine = c.facts();
    by.iter()
        .filter(|o| o.name != c.name)
        .find(|o| authority::supersedes(&o.facts(), &mine))
        .map(|o| o.name.clone())
}

/// The standby to promote: among those on the newest history (a candidate on a history that
/// another candidate has moved past is behind it, whatever its position), the most WAL
/// received (then replayed), the earliest listed on a tie; under synchronous replication only
/// among synchronous standbys.
pub fn choose(candidates: &[Candidate], sync_required: bool) -> Result<Decision> {
    let eligible: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !sync_required || c.synchronous)
        .collect();
    let newest: Vec<&Candidate> = eligible
        .iter()
        .copied()
        .filter(|c| left_behind(c, &eligible).is_none())
        .collect();
    let mut best: Option<&Candidate> = None;
    for c in &newest {
        if best.is_none_or(|b| c.has() > b.has()) {
            best = Some(c);
        }
    }
    let Some(best) = best else {
        return Err(Error::Precondition(
            if sync_required && eligible.is_empty() {
                "no synchronous standby is running: promoting an asynchronous one could lose commits the primary acknowledged; start a synchronous standby, or name one with `pgrepl failover --to NODE` to accept that loss".into()
            } else if eligible.is_empty() {
                "no running standby to promote: start one (`pgrepl start NODE`)".into()
            } else {
                format!(
                "the standbys {} are on histories that have parted (each has WAL the others lack): pgrepl cannot tell which holds the acknowledged commits; name the one to promote with `pgrepl failover --to NODE`",
                eligible.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            )
            },
        ));
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
            let behind = if let Some(by) = left_behind(c, &eligible) {
                format!("on timeline {t}, which {by}'s history has left behind")
            } else if t == tli {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::timeline::parse_history;

    fn cand(name: &str, received: u64, synchronous: bool) -> Candidate {
        Candidate {
            name: name.into(),
            timeline: 1,
            path: Some(TimelinePath::new(1, Vec::new())),
            received: Lsn(received),
            replayed: Lsn(received),
            synchronous,
        }
    }

    fn on(mut c: Candidate, tli: u32, history: &str) -> Candidate {
        c.timeline = tli;
        c.path = Some(TimelinePath::new(tli, parse_history(history)));
        c
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
    fn a_newer_history_beats_more_bytes() {
        // pg3 followed a promotion at 0/5 that pg1, with more WAL of timeline 1, never saw.
        let newer = on(cand("pg3", 10, false), 2, "1\t0/5\tx\n");
        let d = choose(&[cand("pg1", 500, false), newer], false).unwrap();
        assert_eq!(d.node, "pg3");
        assert!(
            d.reason.contains("pg3's history has left behind"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn histories_are_compared_whole_not_by_number() {
        // Both on timeline 2, from two promotions at different points: neither is behind
        // the other, and the choice is refused rather than made on positions.
        let a = on(cand("pg1", 900, false), 2, "1\t0/100\tx\n");
        let b = on(cand("pg2", 500, false), 2, "1\t0/200\tx\n");
        let e = choose(&[a.clone(), b], false).unwrap_err();
        assert!(e.to_string().contains("parted"), "{e}");
        // A candidate on timeline 3 that went through the other's timeline 2 wins, with
        // less WAL.
        let c = on(cand("pg3", 300, false), 3, "1\t0/100\tx\n2\t0/300\tx\n");
        assert_eq!(choose(&[a, c], false).unwrap().node, "pg3");
    }

    #[test]
    fn received_wal_counts_even_when_not_yet_replayed() {
        let mut a = cand("pg1", 100, false);
        a.received = Lsn(400);
        let d = choose(&[a, cand("pg2", 300, false)], false).unwrap();
        assert_eq!(d.node, "pg1");
    }
}
