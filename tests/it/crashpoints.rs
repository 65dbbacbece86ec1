//! Every multi-step command finishes when it is run again after being killed (SIGKILL) at any
//! of its step boundaries. Each command runs once whole to enumerate its crash points
//! (PGREPL_CRASH_LOG), then once killed at each (PGREPL_CRASH_AT=n) and again without; after
//! the rerun: exactly one node accepts a write, it holds every row acknowledged before, and
//! every standby the cluster file names streams from its upstream (status agrees).
//! PostgreSQL 18, three nodes; one cluster per command, reused from one run to the next.

use std::time::Instant;

use crate::common::{Pg, TestCluster};

fn cluster() -> (TestCluster, Vec<i64>) {
    let c = TestCluster::three_nodes(Pg::V18, "");
    c.ok(&["up"]);
    c.sql("pg0", "CREATE TABLE t (id bigint PRIMARY KEY)");
    let acked = c.insert_acked("t", 1, 10);
    (c, acked)
}

/// The properties every run must leave, `down` being nodes expected to be down.
fn check(c: &TestCluster, acked: &[i64], down: &[&str]) -> String {
    let primary = c.assert_one_primary_holding("t", acked);
    c.assert_file_topology_streams(down);
    primary
}

/// Runs `args` killed at crash point `n`, which must be `expected` (the path from the same
/// kind of state is the same; None: any, when steps run side by side and their crash points
/// interleave), then again, which must succeed.
fn crash_and_rerun(c: &TestCluster, args: &[&str], n: usize, expected: Option<&String>) {
    let reached = c.run_crashing_at(args, n);
    assert!(
        reached.is_some(),
        "pgrepl {} was not killed",
        args.join(" ")
    );
    if let Some(name) = expected {
        assert_eq!(reached.as_ref(), Some(name), "pgrepl {}", args.join(" "));
    }
    c.ok(args);
}

#[test]
fn switchover_and_sync_enable_finish_after_a_kill_at_any_step() {
    let t0 = Instant::now();
    let (c, mut acked) = cluster();

    let enable = ["sync", "enable", "--standbys", "sync2"];
    let points = c.crash_points(&enable);
    assert!(!points.is_empty());
    c.ok(&["sync", "disable"]);
    for (i, name) in points.iter().enumerate() {
        crash_and_rerun(&c, &enable, i + 1, Some(name));
        let primary = check(&c, &acked, &[]);
        assert_eq!(
            c.sql(&primary, "SHOW synchronous_standby_names"),
            "FIRST 1 (\"sync2\")"
        );
        assert!(c.spec().sync.is_some(), "the cluster file records [sync]");
        // A commit completes: the synchronous standby confirms it.
        acked.extend(c.insert_acked("t", 100 + i as i64 * 10, 1));
        c.ok(&["sync", "disable"]);
    }
    eprintln!(
        "sync enable: {} crash points in {:.1} s",
        points.len(),
        t0.elapsed().as_secs_f64()
    );

    let t1 = Instant::now();
    let points = c.crash_points(&["switchover", "--to", "pg1"]);
    check(&c, &acked, &[]);
    let mut primary = "pg1";
    for (i, name) in points.iter().enumerate() {
        let to = if primary == "pg0" { "pg1" } else { "pg0" };
        acked.extend(c.insert_acked("t", 1000 + i as i64 * 10, 5));
        crash_and_rerun(&c, &["switchover", "--to", to], i + 1, Some(name));
        assert_eq!(check(&c, &acked, &[]), to, "after a kill at {name}");
        primary = to;
    }
    eprintln!(
        "switchover: {} crash points {points:?} in {:.1} s",
        points.len(),
        t1.elapsed().as_secs_f64()
    );
}

/// The primary is lost with WAL its standbys never received (a checkpoint: no acknowledged
/// commit), so that its rejoin has to rewind it. Returns the lost primary.
fn lose_the_primary(c: &TestCluster, acked: &mut Vec<i64>, from: i64) -> String {
    let old = c.the_writable();
    acked.extend(c.insert_acked("t", from, 5));
    c.wait_replicated();
    let standbys: Vec<String> = c.node_names().into_iter().filter(|n| *n != old).collect();
    for s in &standbys {
        c.detach(s);
    }
    c.sql(&old, "CHECKPOINT");
    c.ok(&["kill", &old]);
    for s in &standbys {
        c.reattach(s);
    }
    old
}

#[test]
fn failover_and_rejoin_finish_after_a_kill_at_any_step() {
    let t0 = Instant::now();
    let (c, mut acked) = cluster();

    // A whole cycle first: the crash points of each command.
    let old = lose_the_primary(&c, &mut acked, 100);
    let failover = c.crash_points(&["failover"]);
    let new = check(&c, &acked, &[old.as_str()]);
    let rejoin = c.crash_points(&["rejoin", &old, "--upstream", &new]);
    check(&c, &acked, &[]);
    assert!(!failover.is_empty() && !rejoin.is_empty());

    for i in 0..failover.len().max(rejoin.len()) {
        let old = lose_the_primary(&c, &mut acked, 1000 + i as i64 * 10);
        match failover.get(i) {
            Some(name) => crash_and_rerun(&c, &["failover"], i + 1, Some(name)),
            None => {
                c.ok(&["failover"]);
            }
        }
        let new = check(&c, &acked, &[old.as_str()]);
        let args = ["rejoin", old.as_str(), "--upstream", new.as_str()];
        match rejoin.get(i) {
            Some(name) => crash_and_rerun(&c, &args, i + 1, Some(name)),
            None => {
                c.ok(&args);
            }
        }
        check(&c, &acked, &[]);
    }
    eprintln!(
        "failover: {} crash points {failover:?}; rejoin: {} crash points {rejoin:?}; {:.1} s",
        failover.len(),
        rejoin.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn up_finishes_after_a_kill_at_any_step() {
    let t0 = Instant::now();
    let c = TestCluster::three_nodes(Pg::V18, "");
    let points = c.crash_points(&["up"]);
    check_up(&c);
    drop(c);
    // The standbys of a wave are cloned side by side: their crash points interleave.
    for i in 0..points.len() {
        let c = TestCluster::three_nodes(Pg::V18, "");
        crash_and_rerun(&c, &["up"], i + 1, None);
        check_up(&c);
    }
    eprintln!(
        "up: {} crash points {points:?} in {:.1} s",
        points.len(),
        t0.elapsed().as_secs_f64()
    );
}

fn check_up(c: &TestCluster) {
    assert_eq!(c.the_writable(), "pg0");
    c.assert_file_topology_streams(&[]);
}

/// Ctrl-C (SIGINT, as a terminal sends it) halfway through `up` says how to finish, and the
/// re-run it names completes the cluster.
#[test]
fn ctrl_c_halfway_says_to_run_it_again_and_the_rerun_completes() {
    let c = TestCluster::three_nodes(Pg::V18, "");
    let child = c
        .command(&["up"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once pg0's data directory exists, up is past its first steps.
    let t = Instant::now();
    while !c.data_dir("pg0").exists() && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // The standbys were still to come: it stopped at a step boundary, and said how to go on.
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("stopped after:") && err.contains("run `pgrepl"),
        "{err}"
    );
    c.ok(&["up"]);
    assert_eq!(c.writable_nodes(), ["pg0"]);
    c.assert_file_topology_streams(&[]);
}
