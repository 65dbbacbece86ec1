//! Property tests: the decision driven over generated sequences of faults against a small
//! simulated cluster that carries its actions out. Checked at every action: never two
//! primaries that can acknowledge writes, never a promotion unless every former primary was
//! observed gone, and under synchronous replication (without `allow_data_loss`) never an
//! asynchronous standby promoted, nor one that lacks a commit acknowledged under sync.

use proptest::prelude::*;

use super::*;
use crate::postgres::timeline::{self, HistoryEntry, Lineage, TimelinePath};
use crate::postgres::Lsn;
use crate::spec::{SyncMethod, SyncSpec};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Life {
    Running,
    Frozen,
    Dead,
}

#[derive(Debug, Clone)]
struct Node {
    name: String,
    app: String,
    life: Life,
    primary: bool,
    path: TimelinePath,
    lsn: u64,
    upstream: Option<usize>,
    cut_monitor: bool,
    cut_all: bool,
    last_msg_at: u64,
    /// Its last stop was clean: where its WAL ends is known.
    clean: bool,
    /// As a primary: synchronous_standby_names is set.
    sync_on: bool,
}

#[derive(Debug, Clone)]
enum Ev {
    Write { bytes: u64, lagging: u8 },
    Kill(usize),
    Freeze(usize),
    Thaw(usize),
    CutMonitor(usize),
    CutAll(usize),
    Heal(usize),
    Revive(usize),
    RestartMonitor,
    Idle,
}

struct Sim {
    nodes: Vec<Node>,
    now: u64,
    method: Option<SyncMethod>,
    listed: Vec<String>,
    /// The highest position a client saw committed while synchronous replication was on.
    protected: u64,
    next_tli: u32,
    intent: Intent,
    last_obs: Option<Observation>,
    promotions: usize,
    /// The node promoted last (or the first primary).
    last_primary: usize,
}

impl Sim {
    fn new(method: Option<SyncMethod>, allow_data_loss: bool, on_sync_loss: OnSyncLoss) -> Sim {
        let names = ["pg0", "pg1", "pg2", "pg3"];
        let apps = ["pg0", "pg1", "sync2", "sync3"];
        let nodes = (0..4)
            .map(|i| Node {
                name: names[i].into(),
                app: apps[i].into(),
                life: Life::Running,
                primary: i == 0,
                path: TimelinePath::new(1, Vec::new()),
                lsn: 1000,
                upstream: (i > 0).then_some(0),
                cut_monitor: false,
                cut_all: false,
                last_msg_at: 0,
                clean: true,
                sync_on: i == 0 && method.is_some(),
            })
            .collect();
        let sync = method.map(|method| SyncSpec {
            standbys: vec!["sync2".into(), "sync3".into()],
            method,
            num: 1,
            commit: None,
            allow_unknown: false,
        });
        let mut spec = crate::spec::ClusterSpec::lab("sim", 20000).unwrap();
        spec.sync = sync;
        Sim {
            nodes,
            now: 0,
            method,
            listed: vec!["sync2".into(), "sync3".into()],
            protected: 1000,
            next_tli: 2,
            intent: Intent::from_spec(&spec, on_sync_loss, allow_data_loss),
            last_obs: None,
            promotions: 0,
            last_primary: 0,
        }
    }

    fn idx(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    /// Standby `i` streams from its upstream: both up, connected, and its WAL a prefix of
    /// the upstream's history.
    fn streams(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        let Some(u) = n.upstream else { return false };
        let up = &self.nodes[u];
        !n.primary
            && n.life == Life::Running
            && !n.cut_all
            && up.life != Life::Dead
            && !up.cut_all
            && (up.primary || self.streams(u))
            && matches!(
                timeline::lineage(&up.path, &n.path, Lsn(n.lsn)),
                Lineage::Follows { .. }
            )
    }

    fn sync_names(&self, i: usize) -> String {
        match self.method {
            Some(m) if self.nodes[i].sync_on => {
                let listed: Vec<String> = self
                    .listed
                    .iter()
                    .filter(|a| **a != self.nodes[i].app)
                    .map(|a| format!("\"{a}\""))
                    .collect();
                let kw = if m == SyncMethod::First {
                    "FIRST"
                } else {
                    "ANY"
                };
                format!("{kw} 1 ({})", listed.join(", "))
            }
            _ => String::new(),
        }
    }

    /// Synchronous candidates streaming from primary `p`, in priority order.
    fn sync_standbys(&self, p: usize) -> Vec<usize> {
        if self.sync_names(p).is_empty() {
            return Vec::new();
        }
        self.listed
            .iter()
            .filter_map(|a| self.nodes.iter().position(|n| n.app == *a))
            .filter(|s| *s != p && self.nodes[*s].upstream == Some(p) && self.streams(*s))
            .collect()
    }

    fn observe(&mut self) -> Observation {
        let mut nodes = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let process = match n.life {
                Life::Running => Process::Running,
                Life::Frozen => Process::Frozen,
                Life::Dead => Process::Gone,
            };
            let mut o = NodeObs::new(&n.name, process);
            o.system_id = Some(1);
            o.standby_signal = !n.primary;
            o.reachable_from_standbys = Some(n.life == Life::Running && !n.cut_all);
            if n.life == Life::Dead {
                o.path = Some(n.path.clone());
                o.end = n.clean.then_some(Lsn(n.lsn));
            } else if n.life == Life::Running && !n.cut_monitor && !n.cut_all {
                o.answered = true;
                o.path = Some(n.path.clone());
                o.end = Some(Lsn(n.lsn));
                if n.primary {
                    o.role = Some(Role::Primary);
                    o.sync_names = Some(self.sync_names(i));
                    let sync = self.sync_standbys(i);
                    o.downstreams = (0..self.nodes.len())
                        .filter(|s| self.nodes[*s].upstream == Some(i) && self.streams(*s))
                        .map(|s| Downstream {
                            application_name: self.nodes[s].app.clone(),
                            streaming: true,
                            sync_state: Some(
                                match (self.method, sync.iter().position(|x| *x == s)) {
                                    (_, None) => "async",
                                    (Some(SyncMethod::Any), Some(_)) => "quorum",
                                    (_, Some(0)) => "sync",
                                    _ => "potential",
                                }
                                .into(),
                            ),
                            flush: Some(Lsn(self.nodes[s].lsn)),
                        })
                        .collect();
                } else {
                    o.role = Some(Role::Standby);
                    o.received = Some(Lsn(n.lsn));
                    o.replayed = Some(Lsn(n.lsn));
                    o.receiver = n.upstream.map(|u| Receiver {
                        upstream: Some(self.nodes[u].name.clone()),
                        streaming: self.streams(i),
                        last_msg_age_ms: Some(self.now - n.last_msg_at),
                    });
                }
            }
            nodes.push(o);
        }
        let o = Observation {
            at_ms: self.now,
            busy: false,
            nodes,
        };
        self.last_obs = Some(o.clone());
        o
    }

    fn alive_primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].primary && self.nodes[*i].life != Life::Dead)
            .collect()
    }

    fn env(&mut self, ev: &Ev, state: &mut MonitorState) {
        let n = self.nodes.len();
        match *ev {
            Ev::Write { bytes, lagging } => {
                let ps = self.alive_primaries();
                let [p] = ps.as_slice() else { return };
                let p = *p;
                if self.nodes[p].life != Life::Running {
                    return;
                }
                self.nodes[p].lsn += bytes;
                let lsn = self.nodes[p].lsn;
                let path = self.nodes[p].path.clone();
                for s in 0..n {
                    if self.nodes[s].upstream == Some(p)
                        && self.streams(s)
                        && lagging & (1 << s) == 0
                    {
                        self.nodes[s].lsn = lsn;
                        self.nodes[s].path = path.clone();
                    }
                }
                let sync = self.sync_standbys(p);
                if self.sync_names(p).is_empty() {
                    return;
                }
                // A commit returns once a synchronous standby has it (FIRST: the first in
                // priority; ANY 1: any).
                let confirmer = match self.method {
                    Some(SyncMethod::Any) => sync
                        .iter()
                        .copied()
                        .find(|s| self.nodes[*s].lsn == lsn)
                        .or(sync.first().copied()),
                    _ => sync.first().copied(),
                };
                if let Some(c) = confirmer {
                    self.nodes[c].lsn = lsn;
                    self.nodes[c].path = path;
                    self.protected = self.protected.max(lsn);
                }
            }
            Ev::Kill(i) => {
                if self.nodes[i % n].life != Life::Dead {
                    self.nodes[i % n].life = Life::Dead;
                    self.nodes[i % n].clean = false;
                }
            }
            Ev::Freeze(i) => {
                if self.nodes[i % n].life == Life::Running {
                    self.nodes[i % n].life = Life::Frozen;
                }
            }
            Ev::Thaw(i) => {
                if self.nodes[i % n].life == Life::Frozen {
                    self.nodes[i % n].life = Life::Running;
                }
            }
            Ev::CutMonitor(i) => self.nodes[i % n].cut_monitor = true,
            Ev::CutAll(i) => self.nodes[i % n].cut_all = true,
            Ev::Heal(i) => {
                self.nodes[i % n].cut_all = false;
                self.nodes[i % n].cut_monitor = false;
            }
            // The runtime restarts a dead standby (a container's restart policy).
            Ev::Revive(i) => {
                let x = &mut self.nodes[i % n];
                if x.life == Life::Dead && !x.primary {
                    x.life = Life::Running;
                }
            }
            Ev::RestartMonitor => *state = MonitorState::default(),
            Ev::Idle => {}
        }
    }

    fn keepalives(&mut self) {
        for s in 0..self.nodes.len() {
            if self.streams(s) {
                let u = self.nodes[s].upstream.unwrap();
                if self.nodes[u].life == Life::Running {
                    self.nodes[s].last_msg_at = self.now;
                }
            }
        }
    }

    fn set_upstream(&mut self, node: usize, up: Option<usize>) {
        self.nodes[node].upstream = up;
        let name = self.nodes[node].name.clone();
        let up = up.map(|u| self.nodes[u].name.clone());
        for ni in self.intent.nodes.iter_mut().filter(|ni| ni.name == name) {
            ni.upstream = up.clone();
        }
    }

    /// Carries one action out; panics when it breaks a safety property.
    fn apply(&mut self, a: &Action) {
        match a {
            Action::Log(_) | Action::DropSlot { .. } => {}
            Action::Fence { node } => {
                let i = self.idx(node);
                let x = &mut self.nodes[i];
                if x.life != Life::Dead {
                    x.clean = x.life == Life::Running;
                    x.life = Life::Dead;
                }
            }
            Action::Promote { node, .. } => {
                let i = self.idx(node);
                self.check_nobody_can_write(&format!("promoting {node}"));
                if self.nodes[i].life != Life::Running || self.nodes[i].primary {
                    return;
                }
                let old_sync = self.nodes[self.last_primary].sync_on;
                if !self.intent.allow_data_loss && old_sync {
                    assert!(
                        self.listed.contains(&self.nodes[i].app),
                        "an asynchronous standby {node} was promoted under synchronous replication"
                    );
                    assert!(
                        self.nodes[i].lsn >= self.protected,
                        "{node} promoted at {} without the commit acknowledged at {}",
                        self.nodes[i].lsn,
                        self.protected
                    );
                }
                self.last_primary = i;
                let x = &mut self.nodes[i];
                let mut history = x.path.history.clone();
                history.retain(|e| e.tli < x.path.tli);
                history.push(HistoryEntry {
                    tli: x.path.tli,
                    switchpoint: Lsn(x.lsn),
                    reason: String::new(),
                });
                x.path = TimelinePath::new(self.next_tli, history);
                x.primary = true;
                x.sync_on = false;
                self.next_tli += 1;
                self.protected = self.protected.min(self.nodes[i].lsn);
                self.set_upstream(i, None);
                self.promotions += 1;
            }
            Action::StartPrimary { node } => {
                self.check_nobody_can_write(&format!("starting {node} as the primary"));
                let i = self.idx(node);
                let x = &mut self.nodes[i];
                if x.life == Life::Dead && x.primary && !x.cut_all {
                    x.life = Life::Running;
                }
            }
            Action::Repoint { node, upstream } => {
                // A stopped node is started only when it shut down cleanly and can follow
                // (`ops::follow::repoint` checks both).
                let (i, u) = (self.idx(node), self.idx(upstream));
                let follows = matches!(
                    timeline::lineage(
                        &self.nodes[u].path,
                        &self.nodes[i].path,
                        Lsn(self.nodes[i].lsn)
                    ),
                    Lineage::Follows { .. }
                );
                if self.nodes[i].life == Life::Dead && !(self.nodes[i].clean && follows) {
                    return;
                }
                self.set_upstream(i, Some(u));
                let x = &mut self.nodes[i];
                if x.life == Life::Dead {
                    x.primary = false;
                    x.life = Life::Running;
                }
            }
            Action::Rejoin { node, upstream } => {
                let (i, u) = (self.idx(node), self.idx(upstream));
                if self.nodes[i].cut_all || self.nodes[u].life != Life::Running {
                    return;
                }
                let (path, lsn) = (self.nodes[u].path.clone(), self.nodes[u].lsn);
                let x = &mut self.nodes[i];
                x.path = path;
                x.lsn = lsn;
                x.primary = false;
                x.sync_on = false;
                x.life = Life::Running;
                x.clean = true;
                self.set_upstream(i, Some(u));
            }
            Action::RestartStandby { node } => {
                let i = self.idx(node);
                let x = &mut self.nodes[i];
                if x.life == Life::Dead && !x.primary {
                    x.life = Life::Running;
                }
            }
            Action::ApplySync { primary } => {
                let i = self.idx(primary);
                self.nodes[i].sync_on = self.method.is_some();
            }
            Action::DegradeSync { primary } => {
                let i = self.idx(primary);
                self.nodes[i].sync_on = false;
            }
        }
    }

    /// Before a node becomes a primary: no other can acknowledge a write, and each former
    /// primary was seen gone by the observation this decision was made on.
    fn check_nobody_can_write(&self, what: &str) {
        let alive = self.alive_primaries();
        assert!(
            alive.is_empty(),
            "{what} while {:?} can still write",
            alive
                .iter()
                .map(|i| &self.nodes[*i].name)
                .collect::<Vec<_>>()
        );
        let obs = self.last_obs.as_ref().unwrap();
        for p in self.nodes.iter().filter(|n| n.primary) {
            assert_eq!(
                obs.node(&p.name).unwrap().process,
                Process::Gone,
                "{what} before {} was observed gone",
                p.name
            );
        }
    }
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        6 => (1u64..500, any::<u8>()).prop_map(|(bytes, lagging)| Ev::Write { bytes, lagging }),
        2 => (0usize..4).prop_map(Ev::Kill),
        1 => (0usize..4).prop_map(Ev::Freeze),
        1 => (0usize..4).prop_map(Ev::Thaw),
        1 => (0usize..4).prop_map(Ev::CutMonitor),
        1 => (0usize..4).prop_map(Ev::CutAll),
        2 => (0usize..4).prop_map(Ev::Heal),
        1 => (0usize..4).prop_map(Ev::Revive),
        1 => Just(Ev::RestartMonitor),
        4 => Just(Ev::Idle),
    ]
}

/// PROPTEST_CASES=N for a longer search.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(600)
}

fn run(method: Option<SyncMethod>, allow: bool, degrade: bool, steps: &[(Ev, u64)]) -> Sim {
    let policy = if degrade {
        OnSyncLoss::Degrade
    } else {
        OnSyncLoss::Block
    };
    let mut sim = Sim::new(method, allow, policy);
    let timing = Timing {
        failover_timeout_ms: 2_000,
        standby_grace_ms: 3_000,
        retry_ms: 1_000,
    };
    let mut state = MonitorState::default();
    for (ev, dt) in steps {
        sim.now += dt;
        sim.env(ev, &mut state);
        sim.keepalives();
        let o = sim.observe();
        let intent = sim.intent.clone();
        let trace = std::env::var_os("SIM_TRACE").is_some();
        if trace {
            eprintln!("t={} {ev:?}", sim.now);
            for n in &sim.nodes {
                eprintln!(
                    "   {} {:?} primary={} tli={} lsn={} up={:?} cut={}/{} clean={} sync_on={}",
                    n.name,
                    n.life,
                    n.primary,
                    n.path.tli,
                    n.lsn,
                    n.upstream,
                    n.cut_monitor,
                    n.cut_all,
                    n.clean,
                    n.sync_on
                );
            }
        }
        for a in decide(&intent, &timing, &mut state, &o) {
            if trace {
                eprintln!("  -> {}", a.describe());
            }
            sim.apply(&a);
        }
        assert!(sim.alive_primaries().len() <= 1, "two primaries can write");
    }
    sim
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn safety_holds_over_any_sequence_of_faults(
        method in prop_oneof![Just(None), Just(Some(SyncMethod::First)), Just(Some(SyncMethod::Any))],
        allow in any::<bool>(),
        degrade in any::<bool>(),
        steps in proptest::collection::vec((event(), 20u64..1_500), 1..80),
    ) {
        run(method, allow, degrade, &steps);
    }

    #[test]
    fn once_the_faults_end_the_cluster_gets_one_primary_again(
        method in prop_oneof![Just(None), Just(Some(SyncMethod::First)), Just(Some(SyncMethod::Any))],
        allow in any::<bool>(),
        steps in proptest::collection::vec((event(), 20u64..1_500), 1..60),
    ) {
        let mut steps = steps;
        steps.extend((0..4).flat_map(|i| [(Ev::Heal(i), 100), (Ev::Thaw(i), 100)]));
        steps.extend((0..60).map(|_| (Ev::Idle, 500)));
        let sim = run(method, allow, false, &steps);
        let alive = sim.alive_primaries();
        prop_assert_eq!(alive.len(), 1, "{:#?}", sim.nodes);
        let p = alive[0];
        for (i, n) in sim.nodes.iter().enumerate() {
            prop_assert!(i == p || n.life != Life::Running || sim.streams(i) || n.upstream.is_some(), "{:#?}", sim.nodes);
        }
    }
}

#[test]
fn a_killed_primary_is_replaced_and_rejoins() {
    let steps = [
        (
            Ev::Write {
                bytes: 10,
                lagging: 0,
            },
            100,
        ),
        (Ev::Kill(0), 100),
        (Ev::Idle, 100),
        (Ev::Idle, 100),
        (
            Ev::Write {
                bytes: 10,
                lagging: 0,
            },
            100,
        ),
        (Ev::Idle, 1_100),
    ];
    for method in [None, Some(SyncMethod::First), Some(SyncMethod::Any)] {
        let sim = run(method, false, false, &steps);
        assert_eq!(sim.promotions, 1, "{method:?}");
        assert!(
            sim.nodes.iter().all(|n| n.life == Life::Running),
            "{:?}",
            sim.nodes
        );
        assert_eq!(sim.alive_primaries().len(), 1);
    }
}

#[test]
fn a_frozen_primary_is_fenced_after_the_timeout_and_replaced() {
    let mut steps = vec![(Ev::Freeze(0), 100)];
    steps.extend((0..25).map(|_| (Ev::Idle, 100)));
    let sim = run(None, false, false, &steps);
    assert_eq!(sim.promotions, 1);
    assert_eq!(
        sim.nodes[0].life,
        Life::Running,
        "rejoined: {:?}",
        sim.nodes[0]
    );
    assert!(!sim.nodes[0].primary);
}

#[test]
fn a_primary_cut_off_from_the_monitor_alone_keeps_its_role() {
    let mut steps = vec![(Ev::CutMonitor(0), 100)];
    steps.extend((0..100).map(|_| {
        (
            Ev::Write {
                bytes: 1,
                lagging: 0,
            },
            500,
        )
    }));
    let sim = run(Some(SyncMethod::First), false, false, &steps);
    assert_eq!(sim.promotions, 0);
}

#[test]
fn a_sync_setting_applied_after_the_last_view_still_counts() {
    // The new primary's setting was restored by ApplySync after the monitor last saw it;
    // then it was cut off and fenced: only a synchronous standby may follow it.
    let steps = [
        (Ev::Kill(0), 20),
        (
            Ev::Write {
                bytes: 1,
                lagging: 208,
            },
            20,
        ),
        (
            Ev::Write {
                bytes: 1,
                lagging: 0,
            },
            1139,
        ),
        (Ev::Idle, 1416),
        (Ev::Idle, 445),
        (
            Ev::Write {
                bytes: 1,
                lagging: 8,
            },
            555,
        ),
        (Ev::CutAll(2), 1144),
        (
            Ev::Write {
                bytes: 1,
                lagging: 0,
            },
            294,
        ),
        (
            Ev::Write {
                bytes: 1,
                lagging: 0,
            },
            562,
        ),
        (
            Ev::Write {
                bytes: 1,
                lagging: 0,
            },
            20,
        ),
    ];
    run(Some(SyncMethod::First), false, true, &steps);
}

/// A monitor restarted while the primary it cannot reach was cut off from everyone else:
/// once the faults end, it starts the newest primary again.
#[test]
fn a_restarted_monitor_recovers_a_cluster_left_all_down() {
    let w = |lagging| (Ev::Write { bytes: 1, lagging }, 20);
    let mut steps = vec![
        w(202),
        (Ev::CutAll(0), 653),
        (Ev::Heal(1), 1032),
        (
            Ev::Write {
                bytes: 1,
                lagging: 0,
            },
            315,
        ),
        (Ev::Heal(1), 20),
        w(20),
        (Ev::Freeze(2), 20),
        (
            Ev::Write {
                bytes: 1,
                lagging: 0,
            },
            489,
        ),
        (Ev::Idle, 1491),
        w(0),
        (Ev::Heal(1), 20),
        (Ev::Kill(1), 20),
        (Ev::CutAll(3), 510),
        (
            Ev::Write {
                bytes: 1,
                lagging: 0,
            },
            1470,
        ),
        w(0),
        (Ev::CutMonitor(2), 20),
        (Ev::RestartMonitor, 20),
        (
            Ev::Write {
                bytes: 1,
                lagging: 0,
            },
            743,
        ),
        (
            Ev::Write {
                bytes: 1,
                lagging: 0,
            },
            857,
        ),
    ];
    steps.extend((0..4).flat_map(|i| [(Ev::Heal(i), 100), (Ev::Thaw(i), 100)]));
    steps.extend((0..60).map(|_| (Ev::Idle, 500)));
    run(None, false, false, &steps);
}
