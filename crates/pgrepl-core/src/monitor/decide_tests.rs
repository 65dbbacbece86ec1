//! One example per rule of the decision.

use super::*;
use crate::postgres::timeline::{parse_history, TimelinePath};
use crate::postgres::Lsn;
use crate::spec::{ClusterSpec, SyncMethod, SyncSpec};

const T: u64 = 2_000;

fn timing() -> Timing {
    Timing {
        failover_timeout_ms: T,
        standby_grace_ms: 3_000,
        retry_ms: 1_000,
    }
}

fn intent(sync: Option<SyncMethod>) -> Intent {
    let mut spec = ClusterSpec::lab("lab", 15432).unwrap();
    spec.sync = sync.map(|method| SyncSpec {
        standbys: vec!["sync2".into(), "sync3".into()],
        method,
        num: 1,
        commit: None,
        allow_unknown: false,
    });
    Intent::from_spec(&spec, OnSyncLoss::Block, false)
}

fn tl(tli: u32, history: &str) -> TimelinePath {
    TimelinePath::new(tli, parse_history(history))
}

fn primary(name: &str, lsn: u64) -> NodeObs {
    let mut n = NodeObs::new(name, Process::Running);
    n.answered = true;
    n.role = Some(Role::Primary);
    n.system_id = Some(7);
    n.path = Some(tl(1, ""));
    n.end = Some(Lsn(lsn));
    n.sync_names = Some(String::new());
    n
}

fn standby(name: &str, upstream: &str, lsn: u64, age_ms: u64) -> NodeObs {
    let mut n = NodeObs::new(name, Process::Running);
    n.answered = true;
    n.role = Some(Role::Standby);
    n.system_id = Some(7);
    n.path = Some(tl(1, ""));
    n.end = Some(Lsn(lsn));
    n.received = Some(Lsn(lsn));
    n.replayed = Some(Lsn(lsn));
    n.receiver = Some(Receiver {
        upstream: Some(upstream.into()),
        streaming: true,
        last_msg_age_ms: Some(age_ms),
    });
    n
}

/// A standby whose upstream is gone: its walreceiver stopped.
fn orphan(name: &str, lsn: u64) -> NodeObs {
    let mut n = standby(name, "pg0", lsn, 0);
    n.receiver = None;
    n
}

fn silent(name: &str, process: Process) -> NodeObs {
    NodeObs::new(name, process)
}

fn gone(name: &str, tli_path: TimelinePath, end: Option<u64>, standby_signal: bool) -> NodeObs {
    let mut n = NodeObs::new(name, Process::Gone);
    n.system_id = Some(7);
    n.path = Some(tli_path);
    n.end = end.map(Lsn);
    n.standby_signal = standby_signal;
    n
}

fn downstream(app: &str, state: &str, flush: u64) -> Downstream {
    Downstream {
        application_name: app.into(),
        streaming: true,
        sync_state: Some(state.into()),
        flush: Some(Lsn(flush)),
    }
}

fn obs(at_ms: u64, nodes: Vec<NodeObs>) -> Observation {
    Observation {
        at_ms,
        busy: false,
        nodes,
    }
}

fn healthy(at: u64) -> Observation {
    let mut p = primary("pg0", 1000);
    p.downstreams = vec![
        downstream("pg1", "async", 1000),
        downstream("sync2", "async", 1000),
        downstream("sync3", "async", 1000),
    ];
    obs(
        at,
        vec![
            p,
            standby("pg1", "pg0", 1000, 10),
            standby("sync2", "pg0", 1000, 10),
            standby("sync3", "pg0", 1000, 10),
        ],
    )
}

/// pg1, sync2, sync3 streaming from pg0 at these positions.
fn streaming(lsn: [u64; 3]) -> [NodeObs; 3] {
    [
        standby("pg1", "pg0", lsn[0], 0),
        standby("sync2", "pg0", lsn[1], 0),
        standby("sync3", "pg0", lsn[2], 0),
    ]
}

/// pg1, sync2, sync3 once pg0 is gone: at these positions, or gone too (None).
fn orphans(lsn: [Option<u64>; 3]) -> [NodeObs; 3] {
    let n = |name: &str, l: Option<u64>| match l {
        Some(l) => orphan(name, l),
        None => silent(name, Process::Gone),
    };
    [n("pg1", lsn[0]), n("sync2", lsn[1]), n("sync3", lsn[2])]
}

/// The lab after pg0 crashed.
fn primary_died(at: u64, s: [NodeObs; 3]) -> Observation {
    fix_names(lab(at, gone("pg0", tl(1, ""), None, false), s))
}

/// The lab with the standbys named as the intent names them.
fn lab(at: u64, p: NodeObs, s: [NodeObs; 3]) -> Observation {
    let [a, b, c] = s;
    obs(at, vec![p, a, b, c])
}

fn fix_names(mut o: Observation) -> Observation {
    for (n, name) in o.nodes.iter_mut().zip(["pg0", "pg1", "pg2", "pg3"]) {
        n.name = name.into();
    }
    o
}

fn acts(intent: &Intent, state: &mut MonitorState, o: &Observation) -> Vec<Action> {
    decide(intent, &timing(), state, o)
}

fn only_actions(a: &[Action]) -> Vec<&Action> {
    a.iter().filter(|a| !matches!(a, Action::Log(_))).collect()
}

fn promoted(a: &[Action]) -> Option<&str> {
    a.iter().find_map(|a| match a {
        Action::Promote { node, .. } => Some(node.as_str()),
        _ => None,
    })
}

fn fenced(a: &[Action]) -> Vec<&str> {
    a.iter()
        .filter_map(|a| match a {
            Action::Fence { node } => Some(node.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_healthy_cluster_needs_nothing_also_from_a_restarted_monitor() {
    let i = intent(None);
    let mut st = MonitorState::default();
    for at in [0, 100, 5_000, 60_000] {
        let a = acts(&i, &mut st, &fix_names(healthy(at)));
        assert!(only_actions(&a).is_empty(), "{a:?}");
    }
    assert_eq!(st.primary.as_deref(), Some("pg0"));
}

#[test]
fn a_primary_the_runtime_calls_gone_is_replaced_at_once() {
    let i = intent(None);
    let mut st = MonitorState::default();
    acts(&i, &mut st, &fix_names(healthy(0)));
    let o = primary_died(100, orphans([Some(900), Some(1000), Some(950)]));
    let a = acts(&i, &mut st, &o);
    assert_eq!(promoted(&a), Some("pg2"), "{a:?}");
    assert!(fenced(&a).is_empty());
    let rest = only_actions(&a);
    assert!(rest.contains(&&Action::ApplySync {
        primary: "pg2".into()
    }));
    for n in ["pg1", "pg3"] {
        assert!(
            rest.contains(&&Action::Repoint {
                node: n.into(),
                upstream: "pg2".into()
            }),
            "{rest:?}"
        );
    }
    assert_eq!(st.failovers, 1);
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Log(e) if e.code == "promote")));
}

#[test]
fn an_unreachable_primary_is_fenced_after_the_timeout_then_promoted_once_gone() {
    let i = intent(None);
    let mut st = MonitorState::default();
    acts(&i, &mut st, &fix_names(healthy(0)));
    let silent_primary = |at: u64, p: NodeObs| {
        fix_names(lab(
            at,
            p,
            [
                standby("pg1", "pg0", 1000, at),
                standby("sync2", "pg0", 1000, at),
                standby("sync3", "pg0", 1000, at),
            ],
        ))
    };
    // The standbys' walreceivers still say streaming, but have heard nothing since.
    let a = acts(
        &i,
        &mut st,
        &silent_primary(1_000, silent("pg0", Process::Running)),
    );
    assert!(only_actions(&a).is_empty(), "{a:?}");
    let a = acts(
        &i,
        &mut st,
        &silent_primary(2_100, silent("pg0", Process::Running)),
    );
    assert_eq!(fenced(&a), ["pg0"], "{a:?}");
    assert_eq!(promoted(&a), None);
    // The fence did not finish yet: fence again, never promote.
    let a = acts(
        &i,
        &mut st,
        &silent_primary(2_200, silent("pg0", Process::Running)),
    );
    assert_eq!(fenced(&a), ["pg0"]);
    assert_eq!(promoted(&a), None);
    let a = acts(
        &i,
        &mut st,
        &silent_primary(2_300, gone("pg0", tl(1, ""), Some(1000), false)),
    );
    assert_eq!(promoted(&a), Some("pg1"), "{a:?}");
}

#[test]
fn a_freeze_shorter_than_the_timeout_changes_nothing() {
    let i = intent(None);
    let mut st = MonitorState::default();
    acts(&i, &mut st, &fix_names(healthy(0)));
    for at in [300, 900, 1_500, 1_900] {
        let o = fix_names(lab(
            at,
            silent("pg0", Process::Frozen),
            [
                standby("pg1", "pg0", 1000, at),
                standby("sync2", "pg0", 1000, at),
                standby("sync3", "pg0", 1000, at),
            ],
        ));
        assert!(only_actions(&acts(&i, &mut st, &o)).is_empty());
    }
    assert!(only_actions(&acts(&i, &mut st, &fix_names(healthy(2_000)))).is_empty());
    // A longer freeze: the frozen primary is fenced (killed), not thawed.
    let o = fix_names(lab(
        4_100,
        silent("pg0", Process::Frozen),
        [
            standby("pg1", "pg0", 1000, 2_100),
            standby("sync2", "pg0", 1000, 2_100),
            standby("sync3", "pg0", 1000, 2_100),
        ],
    ));
    assert_eq!(fenced(&acts(&i, &mut st, &o)), ["pg0"]);
}

#[test]
fn a_primary_cut_off_from_the_monitor_alone_is_not_failed_over() {
    let i = intent(None);
    let mut st = MonitorState::default();
    acts(&i, &mut st, &fix_names(healthy(0)));
    for at in (1..50).map(|k| k * 1_000) {
        let o = fix_names(lab(
            at,
            silent("pg0", Process::Running),
            [
                standby("pg1", "pg0", 1000, 20),
                standby("sync2", "pg0", 1000, 20),
                standby("sync3", "pg0", 1000, 20),
            ],
        ));
        assert!(only_actions(&acts(&i, &mut st, &o)).is_empty());
    }
    // Nobody receives, but a standby still gets answers from it: alive as well.
    let mut p = silent("pg0", Process::Running);
    p.reachable_from_standbys = Some(true);
    let o = fix_names(lab(
        60_000,
        p,
        orphans([Some(1000), Some(1000), Some(1000)]),
    ));
    assert!(only_actions(&acts(&i, &mut st, &o)).is_empty());
}

#[test]
fn a_monitor_that_reaches_no_node_does_nothing() {
    let i = intent(None);
    let mut st = MonitorState::default();
    acts(&i, &mut st, &fix_names(healthy(0)));
    let o = obs(
        10_000,
        ["pg0", "pg1", "pg2", "pg3"]
            .iter()
            .map(|n| silent(n, Process::Unknown))
            .collect(),
    );
    let a = acts(&i, &mut st, &o);
    assert!(only_actions(&a).is_empty());
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Log(e) if e.code == "blind")));
    // Said once, not every tick.
    let o2 = Observation { at_ms: 10_100, ..o };
    assert!(acts(&i, &mut st, &o2).is_empty());
}

#[test]
fn another_commands_lock_pauses_the_monitor() {
    let i = intent(None);
    let mut st = MonitorState::default();
    acts(&i, &mut st, &fix_names(healthy(0)));
    let mut o = fix_names(lab(
        10_000,
        gone("pg0", tl(1, ""), Some(1000), false),
        orphans([Some(1000), Some(1000), Some(1000)]),
    ));
    o.busy = true;
    assert!(only_actions(&acts(&i, &mut st, &o)).is_empty());
}

fn sync_primary(at: u64, sync_state: [&str; 2], flush: [u64; 2]) -> NodeObs {
    let mut p = primary("pg0", 1000);
    p.sync_names = Some("FIRST 1 (\"sync2\", \"sync3\")".into());
    p.downstreams = vec![
        downstream("pg1", "async", 1000),
        downstream("sync2", sync_state[0], flush[0]),
        downstream("sync3", sync_state[1], flush[1]),
    ];
    let _ = at;
    p
}

#[test]
fn under_sync_only_a_synchronous_standby_is_promoted() {
    let i = intent(Some(SyncMethod::First));
    let mut st = MonitorState::default();
    let o = fix_names(lab(
        0,
        sync_primary(0, ["sync", "potential"], [1000, 900]),
        streaming([1000, 1000, 900]),
    ));
    let mut running = st.clone();
    acts(&i, &mut running, &o);
    // sync3 died with the primary: it may have taken the `sync` role over in between
    // (sync2 lost its connection for a moment) and confirmed commits sync2 lacks.
    let o = primary_died(100, orphans([Some(1200), Some(1000), None]));
    assert_eq!(promoted(&acts(&i, &mut running.clone(), &o)), None);

    // sync3 was already gone when the primary was last seen: only sync2 confirmed since.
    let [a, b, _] = streaming([1000, 1000, 900]);
    let mut p = sync_primary(0, ["sync", "potential"], [1000, 900]);
    p.downstreams.retain(|d| d.application_name != "sync3");
    acts(
        &i,
        &mut st,
        &fix_names(lab(0, p, [a, b, silent("sync3", Process::Gone)])),
    );
    // pg1 (async) received the most.
    assert_eq!(promoted(&acts(&i, &mut st.clone(), &o)), Some("pg2"));

    // Only the async standby is left: no promotion; the old primary is started again.
    let o = primary_died(100, orphans([Some(1200), None, None]));
    let a = acts(&i, &mut st.clone(), &o);
    assert_eq!(promoted(&a), None, "{a:?}");
    assert!(only_actions(&a).contains(&&Action::StartPrimary { node: "pg0".into() }));
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Log(e) if e.code == "no_candidate")));

    // With the user's consent, the async standby takes over.
    let mut lossy = i.clone();
    lossy.allow_data_loss = true;
    let a = acts(&lossy, &mut st.clone(), &o);
    assert_eq!(promoted(&a), Some("pg1"));
    assert!(a.iter().any(
        |a| matches!(a, Action::Log(e) if e.fields.get("data_loss_accepted") == Some(&true.into()))
    ));
}

#[test]
fn a_standby_that_took_the_sync_role_over_must_have_caught_up() {
    let i = intent(Some(SyncMethod::First));
    let mut st = MonitorState::default();
    // sync2 acknowledged up to 1000, then left; sync3 became `sync` at 900.
    acts(
        &i,
        &mut st,
        &fix_names(lab(
            0,
            sync_primary(0, ["sync", "potential"], [1000, 900]),
            streaming([1000, 1000, 900]),
        )),
    );
    let mut p = sync_primary(100, ["sync", "potential"], [0, 900]);
    p.downstreams.retain(|d| d.application_name != "sync2");
    p.downstreams[1].sync_state = Some("sync".into());
    acts(
        &i,
        &mut st,
        &fix_names(lab(
            100,
            p,
            [
                standby("pg1", "pg0", 1000, 0),
                silent("sync2", Process::Gone),
                standby("sync3", "pg0", 900, 0),
            ],
        )),
    );
    let o = primary_died(200, orphans([Some(1000), None, Some(900)]));
    assert_eq!(promoted(&acts(&i, &mut st.clone(), &o)), None);
    // Once it had caught up, it may.
    let o = primary_died(200, orphans([Some(1000), None, Some(1000)]));
    assert_eq!(promoted(&acts(&i, &mut st, &o)), Some("pg3"));
}

#[test]
fn under_any_a_missing_quorum_member_may_hold_the_only_copy() {
    let i = intent(Some(SyncMethod::Any));
    let mut st = MonitorState::default();
    let mut p = sync_primary(0, ["quorum", "quorum"], [1000, 1000]);
    p.sync_names = Some("ANY 1 (\"sync2\", \"sync3\")".into());
    acts(
        &i,
        &mut st,
        &fix_names(lab(0, p, streaming([1000, 1000, 1000]))),
    );
    let o = primary_died(100, orphans([Some(1000), None, Some(1000)]));
    assert_eq!(promoted(&acts(&i, &mut st.clone(), &o)), None);
    let o = primary_died(100, orphans([Some(1000), Some(990), Some(1000)]));
    assert_eq!(promoted(&acts(&i, &mut st, &o)), Some("pg3"));
}

#[test]
fn a_candidate_that_missed_a_newer_promotion_is_never_promoted() {
    let i = intent(None);
    let mut st = MonitorState::default();
    st.primary = Some("pg1".into());
    // pg1 was promoted at 1000 (timeline 2) and died; pg2 never followed it.
    let tl2 = tl(2, "1\t0/3E8\tx\n");
    let mut pg3 = orphan("sync3", 1100);
    pg3.path = Some(tl2.clone());
    let o = fix_names(lab(
        0,
        gone("pg0", tl(1, ""), Some(1000), false),
        [gone("pg1", tl2, None, false), orphan("sync2", 1000), pg3],
    ));
    assert_eq!(promoted(&acts(&i, &mut st.clone(), &o)), Some("pg3"));
    let mut o2 = o.clone();
    o2.nodes[3] = silent("pg3", Process::Gone);
    let a = acts(&i, &mut st, &o2);
    assert_eq!(promoted(&a), None, "{a:?}");
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Log(e) if e.message.contains("missed the promotion of pg1"))));
}

#[test]
fn two_failures_in_a_row_are_handled() {
    let i = intent(None);
    let mut st = MonitorState::default();
    acts(&i, &mut st, &fix_names(healthy(0)));
    let o = primary_died(100, orphans([Some(900), Some(1000), Some(950)]));
    assert_eq!(promoted(&acts(&i, &mut st, &o)), Some("pg2"));
    // pg2 died before anyone saw it as the primary; pg3 had followed it to timeline 2.
    let tl2 = tl(2, "1\t0/3E8\tx\n");
    let mut pg3 = orphan("sync3", 1100);
    pg3.path = Some(tl2.clone());
    let o = primary_died(
        200,
        [orphan("pg1", 900), gone("pg2", tl2, None, false), pg3],
    );
    let a = acts(&i, &mut st, &o);
    assert_eq!(promoted(&a), Some("pg3"), "{a:?}");
    assert_eq!(st.failovers, 2);
}

#[test]
fn a_newly_promoted_primary_that_goes_silent_is_fenced_before_another_promotion() {
    let i = intent(None);
    let mut st = MonitorState::default();
    acts(&i, &mut st, &fix_names(healthy(0)));
    let o = primary_died(100, orphans([Some(900), Some(1000), Some(950)]));
    assert_eq!(promoted(&acts(&i, &mut st, &o)), Some("pg2"));
    let o = primary_died(
        200,
        [
            orphan("pg1", 900),
            silent("pg2", Process::Running),
            orphan("sync3", 950),
        ],
    );
    assert!(only_actions(&acts(&i, &mut st, &o)).is_empty());
    let o = Observation { at_ms: 2_200, ..o };
    let a = acts(&i, &mut st, &o);
    assert_eq!(fenced(&a), ["pg2"]);
    assert_eq!(promoted(&a), None);
}

#[test]
fn the_old_primary_is_rejoined_when_it_can_be() {
    let i = intent(None);
    let mut st = MonitorState::default();
    let tl2 = tl(2, "1\t0/3E8\tx\n");
    let mut p = primary("pg2", 1100);
    p.path = Some(tl2.clone());
    let mut s1 = standby("pg1", "pg2", 1100, 0);
    s1.path = Some(tl2.clone());
    let mut s3 = standby("pg3", "pg2", 1100, 0);
    s3.path = Some(tl2);
    // pg0 crashed past the fork point: its end is unknown.
    let o = obs(0, vec![gone("pg0", tl(1, ""), None, false), s1, p, s3]);
    let a = acts(&i, &mut st, &o);
    assert_eq!(
        only_actions(&a),
        [&Action::Rejoin {
            node: "pg0".into(),
            upstream: "pg2".into()
        }]
    );
    // Tried again only after the backoff.
    let o1 = Observation {
        at_ms: 500,
        ..o.clone()
    };
    assert!(only_actions(&acts(&i, &mut st, &o1)).is_empty());
    let o2 = Observation { at_ms: 1_000, ..o };
    assert_eq!(only_actions(&acts(&i, &mut st, &o2)).len(), 1);
}

#[test]
fn a_standby_that_stops_streaming_is_restarted_or_rejoined() {
    let i = intent(None);
    let mut st = MonitorState::default();
    let mut o = fix_names(healthy(0));
    o.nodes[1].receiver.as_mut().unwrap().streaming = false;
    assert!(only_actions(&acts(&i, &mut st, &o)).is_empty());
    o.at_ms = 3_000;
    assert_eq!(
        only_actions(&acts(&i, &mut st, &o)),
        [&Action::RestartStandby { node: "pg1".into() }]
    );
    // Diverged: on a timeline of its own past the primary's switch point.
    let mut st = MonitorState::default();
    let mut o = fix_names(healthy(0));
    o.nodes[0].path = Some(tl(2, "1\t0/3E8\tx\n"));
    o.nodes[1].receiver.as_mut().unwrap().streaming = false;
    o.nodes[1].end = Some(Lsn(1100));
    acts(&i, &mut st, &o);
    o.at_ms = 3_000;
    assert_eq!(
        only_actions(&acts(&i, &mut st, &o)),
        [&Action::Rejoin {
            node: "pg1".into(),
            upstream: "pg0".into()
        }]
    );
}

#[test]
fn slots_nobody_streams_through_are_dropped() {
    let i = intent(None);
    let mut st = MonitorState::default();
    let mut o = fix_names(healthy(0));
    o.nodes[0].slots = vec![
        Slot {
            name: "pg1_slot".into(),
            active: true,
        },
        Slot {
            name: "pg2_slot".into(),
            active: false,
        },
        Slot {
            name: "pg9_slot".into(),
            active: false,
        },
    ];
    // On a standby: a leftover of the time it was the primary.
    o.nodes[3].slots = vec![Slot {
        name: "pg1_slot".into(),
        active: false,
    }];
    assert!(only_actions(&acts(&i, &mut st, &o)).is_empty());
    o.at_ms = 3_000;
    let a = acts(&i, &mut st, &o);
    assert_eq!(
        only_actions(&a),
        [
            &Action::DropSlot {
                node: "pg0".into(),
                slot: "pg9_slot".into()
            },
            &Action::DropSlot {
                node: "pg3".into(),
                slot: "pg1_slot".into()
            },
        ]
    );
}

#[test]
fn two_primaries_the_stale_one_is_fenced() {
    let i = intent(None);
    let mut st = MonitorState::default();
    let mut p2 = primary("pg2", 1100);
    p2.path = Some(tl(2, "1\t0/3E8\tx\n"));
    let o = obs(
        0,
        vec![
            primary("pg0", 1200),
            standby("pg1", "pg2", 1100, 0),
            p2,
            standby("pg3", "pg2", 1100, 0),
        ],
    );
    let a = acts(&i, &mut st, &o);
    assert_eq!(only_actions(&a), [&Action::Fence { node: "pg0".into() }]);
}

#[test]
fn on_sync_loss_degrade_clears_and_restores_synchronous_replication() {
    let mut i = intent(Some(SyncMethod::First));
    i.on_sync_loss = OnSyncLoss::Degrade;
    let mut st = MonitorState::default();
    let names = "FIRST 1 (\"sync2\", \"sync3\")";
    let mut p = primary("pg0", 1000);
    p.sync_names = Some(names.into());
    p.downstreams = vec![downstream("pg1", "async", 1000)];
    let o = |at, p: &NodeObs| {
        obs(
            at,
            vec![
                p.clone(),
                standby("pg1", "pg0", 1000, 0),
                silent("pg2", Process::Gone),
                silent("pg3", Process::Gone),
            ],
        )
    };
    let a = acts(&i, &mut st, &o(0, &p));
    assert!(!only_actions(&a)
        .iter()
        .any(|a| matches!(a, Action::DegradeSync { .. })));
    let a = acts(&i, &mut st, &o(2_000, &p));
    assert!(only_actions(&a).contains(&&Action::DegradeSync {
        primary: "pg0".into()
    }));
    // Degraded, still no candidate: stays so.
    p.sync_names = Some(String::new());
    let a = acts(&i, &mut st, &o(4_000, &p));
    assert!(!only_actions(&a)
        .iter()
        .any(|a| matches!(a, Action::ApplySync { .. })));
    // sync2 streams again: restored.
    p.downstreams.push(downstream("sync2", "async", 1000));
    let a = acts(&i, &mut st, &o(5_000, &p));
    assert!(only_actions(&a).contains(&&Action::ApplySync {
        primary: "pg0".into()
    }));

    // Under block nothing is cleared.
    let mut i = i.clone();
    i.on_sync_loss = OnSyncLoss::Block;
    let mut st = MonitorState::default();
    let mut p = primary("pg0", 1000);
    p.sync_names = Some(names.into());
    for at in [0, 3_000, 60_000] {
        let a = acts(&i, &mut st, &o(at, &p));
        assert!(!only_actions(&a)
            .iter()
            .any(|a| matches!(a, Action::DegradeSync { .. })));
    }
}

#[test]
fn events_are_json_lines() {
    let e = Event::decided(5, "promote", Some("pg2"), "promoting pg2".into())
        .with("old_primary", "pg0");
    let line = e.to_json_line();
    assert!(!line.contains('\n'));
    assert_eq!(Event::from_json_line(&line).unwrap(), e);
    let a = serde_json::to_value(Action::Promote {
        node: "pg2".into(),
        reason: "r".into(),
    })
    .unwrap();
    assert_eq!(a["action"], "promote");
}

#[test]
fn a_former_primary_that_runs_without_answering_next_to_a_new_one_is_fenced() {
    let i = intent(None);
    let mut st = MonitorState::default();
    acts(&i, &mut st, &fix_names(healthy(0)));
    // pg2 answers as a primary (promoted by someone else); pg0 runs but is out of sight.
    let tl2 = tl(2, "1\t0/3E8\tx\n");
    let mut p = primary("pg2", 1100);
    p.path = Some(tl2);
    let o = obs(
        100,
        vec![
            silent("pg0", Process::Running),
            standby("pg1", "pg2", 1100, 0),
            p,
            standby("pg3", "pg2", 1100, 0),
        ],
    );
    let a = acts(&i, &mut st, &o);
    assert_eq!(fenced(&a), ["pg0"], "{a:?}");
    // Still there next tick: fenced again, logged once.
    let a = acts(&i, &mut st, &Observation { at_ms: 200, ..o });
    assert_eq!(only_actions(&a), [&Action::Fence { node: "pg0".into() }]);
    assert!(!a.iter().any(|a| matches!(a, Action::Log(_))));
}

/// The lab under FIRST 1 (sync2, sync3) with the primary at `end`.
fn first_primary(end: u64, downstreams: Vec<Downstream>) -> NodeObs {
    let mut p = primary("pg0", end);
    p.sync_names = Some("FIRST 1 (\"sync2\", \"sync3\")".into());
    p.downstreams = downstreams;
    p
}

/// The lab streaming under FIRST 1: pg1, sync2, sync3 at `lsn`, the candidates in these
/// sync states.
fn first_lab(end: u64, sync_state: [&str; 2], lsn: [u64; 3]) -> (NodeObs, [NodeObs; 3]) {
    let p = first_primary(
        end,
        vec![
            downstream("pg1", "async", lsn[0]),
            downstream("sync2", sync_state[0], lsn[1]),
            downstream("sync3", sync_state[1], lsn[2]),
        ],
    );
    (p, streaming(lsn))
}

/// One tick of the lab (standbys named as the intent names them).
fn watch(i: &Intent, st: &mut MonitorState, at: u64, p: NodeObs, s: [NodeObs; 3]) -> Vec<Action> {
    acts(i, st, &fix_names(lab(at, p, s)))
}

fn has_event(a: &[Action], code: &str) -> bool {
    a.iter()
        .any(|a| matches!(a, Action::Log(e) if e.code == code))
}

#[test]
fn a_restarted_monitor_does_not_trust_a_sync_standby_for_commits_confirmed_before_it_looked() {
    // sync2 confirmed 1001 and died; sync3 took the `sync` role over while still at 1000
    // (PostgreSQL calls it `sync` once the WAL is sent, not flushed). The monitor was
    // restarted in between: it first sees the primary now.
    let i = intent(Some(SyncMethod::First));
    let mut st = MonitorState::default();
    let o = fix_names(lab(
        0,
        first_primary(
            1001,
            vec![
                downstream("pg1", "async", 1001),
                downstream("sync3", "sync", 1000),
            ],
        ),
        [
            standby("pg1", "pg0", 1001, 0),
            silent("sync2", Process::Gone),
            standby("sync3", "pg0", 1000, 0),
        ],
    ));
    acts(&i, &mut st, &o);
    let o = primary_died(100, orphans([Some(1001), None, Some(1000)]));
    let a = acts(&i, &mut st.clone(), &o);
    assert_eq!(promoted(&a), None, "{a:?}");
    // Once it has flushed what the primary had when first seen, it may take over.
    let o = primary_died(100, orphans([Some(1001), None, Some(1001)]));
    assert_eq!(promoted(&acts(&i, &mut st, &o)), Some("pg3"));
}

#[test]
fn a_standby_that_leaves_the_confirming_set_may_have_confirmed_more_than_was_seen() {
    // Under ANY 1 both candidates confirm; between two ticks sync2 confirmed 1001 alone
    // and died: the tick after shows only sync3, at 1000, and the primary at 1001.
    let i = intent(Some(SyncMethod::Any));
    let mut st = MonitorState::default();
    let any = |end: u64, d: Vec<Downstream>| {
        let mut p = primary("pg0", end);
        p.sync_names = Some("ANY 1 (\"sync2\", \"sync3\")".into());
        p.downstreams = d;
        p
    };
    watch(
        &i,
        &mut st,
        0,
        any(
            1000,
            vec![
                downstream("sync2", "quorum", 1000),
                downstream("sync3", "quorum", 1000),
            ],
        ),
        streaming([1000, 1000, 1000]),
    );
    watch(
        &i,
        &mut st,
        100,
        any(1001, vec![downstream("sync3", "quorum", 1000)]),
        [
            standby("pg1", "pg0", 1000, 0),
            silent("sync2", Process::Gone),
            standby("sync3", "pg0", 1000, 0),
        ],
    );
    let o = primary_died(200, orphans([Some(1000), None, Some(1000)]));
    assert_eq!(promoted(&acts(&i, &mut st, &o)), None);
}

#[test]
fn a_promotion_that_did_not_take_effect_leaves_the_old_primary_the_last_one() {
    // sync2 confirmed 1001; sync3 lags at 1000. The promotion of sync2 fails: it still
    // answers as a standby. Taking it for the last primary would make sync3 the only
    // synchronous candidate (sync2 is not its own standby) and lose 1001.
    let i = intent(Some(SyncMethod::First));
    let mut st = MonitorState::default();
    let (p, s) = first_lab(1001, ["sync", "potential"], [1001, 1001, 1000]);
    watch(&i, &mut st, 0, p, s);
    let o = primary_died(100, orphans([Some(1001), Some(1001), Some(1000)]));
    assert_eq!(promoted(&acts(&i, &mut st, &o)), Some("pg2"));
    let o = primary_died(1_100, orphans([Some(1001), Some(1001), Some(1000)]));
    let a = acts(&i, &mut st, &o);
    assert!(has_event(&a, "promotion_failed"), "{a:?}");
    assert_eq!(promoted(&a), Some("pg2"), "{a:?}");
    assert_eq!(st.primary.as_deref(), Some("pg2"));

    // Promoted, then down before anyone saw it as the primary: it was the primary, and
    // the standbys that did not follow it yet cannot take over from it.
    let o = primary_died(
        2_100,
        [
            orphan("pg1", 1001),
            gone("pg2", tl(2, "1\t0/3E9\tx\n"), None, false),
            orphan("sync3", 1000),
        ],
    );
    let a = acts(&i, &mut st, &o);
    assert!(!has_event(&a, "promotion_failed"), "{a:?}");
    assert_eq!(promoted(&a), None, "{a:?}");
    assert!(only_actions(&a).contains(&&Action::StartPrimary { node: "pg2".into() }));
}

#[test]
fn a_monitor_cut_off_from_every_server_does_nothing_though_the_runtime_reports_one_gone() {
    let i = intent(None);
    let mut st = MonitorState::default();
    acts(&i, &mut st, &fix_names(healthy(0)));
    let o = |at| {
        fix_names(lab(
            at,
            silent("pg0", Process::Running),
            [
                silent("pg1", Process::Running),
                silent("sync2", Process::Running),
                silent("sync3", Process::Gone),
            ],
        ))
    };
    for at in [5_000, 10_000, 60_000] {
        let a = acts(&i, &mut st, &o(at));
        assert!(only_actions(&a).is_empty(), "{a:?}");
    }
    // It sees a standby again: the timeout starts then.
    let mut back = o(61_000);
    back.nodes[1] = orphan("pg1", 1000);
    assert!(only_actions(&acts(&i, &mut st, &back)).is_empty());
    let back = Observation {
        at_ms: 61_000 + T,
        ..back
    };
    assert_eq!(fenced(&acts(&i, &mut st, &back)), ["pg0"]);
}

#[test]
fn a_silent_primary_nobody_could_replace_is_left_alone_a_frozen_one_is_restarted() {
    // Partition {pg0, sync2} | {monitor, pg1, sync3}: sync2 may confirm pg0's commits on
    // the far side, so sync3 may lack them; nothing could take over.
    let i = intent(Some(SyncMethod::First));
    let mut st = MonitorState::default();
    let (p, s) = first_lab(1000, ["potential", "sync"], [1000, 1000, 1000]);
    watch(&i, &mut st, 0, p, s);
    let cut = |at, process| {
        fix_names(lab(
            at,
            silent("pg0", process),
            [
                orphan("pg1", 1000),
                silent("sync2", Process::Running),
                orphan("sync3", 1000),
            ],
        ))
    };
    let mut running = st.clone();
    acts(&i, &mut running, &cut(100, Process::Running));
    let a = acts(&i, &mut running, &cut(100 + T, Process::Running));
    assert!(only_actions(&a).is_empty(), "{a:?}");
    assert!(has_event(&a, "no_takeover"), "{a:?}");

    // Frozen, it serves nobody: fenced, then (still no candidate) started again in place.
    acts(&i, &mut st, &cut(100, Process::Frozen));
    let a = acts(&i, &mut st, &cut(100 + T, Process::Frozen));
    assert_eq!(fenced(&a), ["pg0"]);
    let o = fix_names(lab(
        200 + T,
        gone("pg0", tl(1, ""), None, false),
        [
            orphan("pg1", 1000),
            silent("sync2", Process::Running),
            orphan("sync3", 1000),
        ],
    ));
    let a = acts(&i, &mut st, &o);
    assert_eq!(promoted(&a), None, "{a:?}");
    assert!(only_actions(&a).contains(&&Action::StartPrimary { node: "pg0".into() }));
}

#[test]
fn a_failover_while_sync_is_degraded_keeps_the_commits_confirmed_before() {
    let mut i = intent(Some(SyncMethod::First));
    i.on_sync_loss = OnSyncLoss::Degrade;
    let mut st = MonitorState::default();
    // sync2 confirmed 1001, then died with sync3 already gone; the primary was degraded.
    watch(
        &i,
        &mut st,
        0,
        first_primary(
            1001,
            vec![
                downstream("pg1", "async", 1000),
                downstream("sync2", "sync", 1001),
            ],
        ),
        [
            standby("pg1", "pg0", 1000, 0),
            standby("sync2", "pg0", 1001, 0),
            silent("sync3", Process::Gone),
        ],
    );
    let mut p = first_primary(1001, vec![downstream("pg1", "async", 1000)]);
    p.sync_names = Some(String::new());
    watch(
        &i,
        &mut st,
        100,
        p,
        [
            standby("pg1", "pg0", 1000, 0),
            silent("sync2", Process::Gone),
            silent("sync3", Process::Gone),
        ],
    );
    let o = primary_died(200, orphans([Some(1000), None, None]));
    assert_eq!(promoted(&acts(&i, &mut st.clone(), &o)), None);
    // The async standby had it all: the loss degrading accepts is not this one.
    let o = primary_died(200, orphans([Some(1001), None, None]));
    assert_eq!(promoted(&acts(&i, &mut st, &o)), Some("pg1"));
}

/// A standby left streaming from the wrong node (a rejoined old primary, a repoint that
/// missed it) is pointed back at its upstream once the grace has passed; under synchronous
/// replication the primary would otherwise wait for it forever.
#[test]
fn a_standby_streaming_from_the_wrong_node_is_repointed_after_the_grace() {
    let i = intent(None);
    let mut st = MonitorState::default();
    let astray = |at| {
        let mut o = fix_names(healthy(at));
        o.nodes[2] = standby("pg2", "pg1", 1000, 10);
        o
    };
    let a = acts(&i, &mut st, &astray(0));
    assert!(only_actions(&a).is_empty(), "{a:?}");
    let a = acts(&i, &mut st, &astray(3_500));
    assert!(
        only_actions(&a).contains(&&Action::Repoint {
            node: "pg2".into(),
            upstream: "pg0".into()
        }),
        "{a:?}"
    );
}

/// Nodes stopped cleanly were stopped on purpose (`pgrepl stop`, `pgrepl down`): the
/// monitor leaves them down.
#[test]
fn cleanly_stopped_nodes_are_left_stopped() {
    let i = intent(None);
    let mut st = MonitorState::default();
    acts(&i, &mut st, &fix_names(healthy(0)));
    let mut o = fix_names(healthy(100));
    o.nodes[2] = gone("pg2", tl(1, ""), Some(900), true);
    for at in [100, 5_000, 20_000] {
        o.at_ms = at;
        let a = acts(&i, &mut st, &o);
        assert!(only_actions(&a).is_empty(), "{a:?}");
    }
    let down = obs(
        30_000,
        vec![
            gone("pg0", tl(1, ""), Some(1000), false),
            gone("pg1", tl(1, ""), Some(1000), true),
            gone("pg2", tl(1, ""), Some(900), true),
            gone("pg3", tl(1, ""), Some(1000), true),
        ],
    );
    for at in [30_000, 40_000, 90_000] {
        let mut d = down.clone();
        d.at_ms = at;
        let a = acts(&i, &mut st, &d);
        assert!(only_actions(&a).is_empty(), "{a:?}");
    }
}
