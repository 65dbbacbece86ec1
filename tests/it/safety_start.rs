//! The start guard and readiness (issue 8, findings 1 and 4): no command that starts a node
//! makes a second writable primary, whatever the cluster file says; `up` never initializes an
//! empty primary over a cluster whose standbys hold the data; a standby is up when its
//! upstream sees it stream, not when its walreceiver says so. Who is writable is proved with
//! direct libpq writes, never read from pgrepl's own output.

use crate::common::{Pg, TestCluster};

/// Rows written on `node` before the fault, to check nothing acknowledged is lost.
fn seed(c: &TestCluster, node: &str) {
    c.sql(
        node,
        "CREATE TABLE acked (id int PRIMARY KEY); INSERT INTO acked SELECT generate_series(1, 50)",
    );
}

fn assert_only_writable(c: &TestCluster, node: &str) {
    assert_eq!(
        c.writable_nodes(),
        [node],
        "exactly one node accepts writes"
    );
}

// kill pg0; failover; start pg0 — and `up` after it: pg0 crashed on the old timeline, so it
// must never come back as a primary (it is refused with the rejoin command, or a standby).
pg_test!(a_crashed_old_primary_never_starts_as_a_primary, |pg: Pg| {
    let c = TestCluster::up(pg);
    seed(&c, "pg0");
    c.wait_sql("pg1", "SELECT count(*) FROM acked", "50");
    c.ok(&["kill", "pg0"]);
    c.ok(&["failover", "--to", "pg1"]);
    c.sql("pg1", "INSERT INTO acked SELECT generate_series(51, 60)");

    let e = c.fails(&["start", "pg0"]);
    assert!(e.contains("pgrepl rejoin pg0 --upstream pg1"), "{e}");
    assert_only_writable(&c, "pg1");
    // `up` brings up what it can (pg2, stopped meanwhile) and refuses pg0 the same way.
    c.ok(&["stop", "pg2"]);
    let out = c.run(&["up"]);
    assert!(!out.status.success(), "up must not report success");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pg0: ") && err.contains("pgrepl rejoin pg0"),
        "{err}"
    );
    assert_only_writable(&c, "pg1");
    assert_eq!(c.node_status("pg2")["streaming"], true, "{err}");
    assert_eq!(c.sql("pg1", "SELECT count(*) FROM acked"), "60");

    // The way out it names works.
    c.ok(&["rejoin", "pg0", "--upstream", "pg1"]);
    assert_only_writable(&c, "pg1");
    c.wait_sql("pg0", "SELECT count(*) FROM acked", "60");
});

// kill pg0; promote pg1; start pg0: the cluster file still names... pg1 now (promote records
// it), but pg2 and pg3 follow pg0: had pg0 come back as a primary, they would replicate its
// new rows.
pg_test!(a_superseded_primary_is_refused_after_a_promote, |pg: Pg| {
    let c = TestCluster::up(pg);
    seed(&c, "pg0");
    c.wait_sql("pg1", "SELECT count(*) FROM acked", "50");
    c.ok(&["kill", "pg0"]);
    c.ok(&["promote", "pg1"]);
    c.fails(&["start", "pg0"]);
    assert_only_writable(&c, "pg1");
});

// A primary stopped cleanly before the failover wrote nothing past the fork point: it comes
// back as a standby of the new primary, by itself.
#[test]
fn a_cleanly_stopped_old_primary_starts_as_a_standby() {
    let c = TestCluster::up(Pg::V18);
    seed(&c, "pg0");
    c.wait_sql("pg1", "SELECT count(*) FROM acked", "50");
    c.ok(&["stop", "pg0"]);
    c.ok(&["failover", "--to", "pg1"]);
    let out = c.ok(&["start", "pg0"]);
    assert!(out.contains("standby"), "{out}");
    assert_only_writable(&c, "pg1");
    c.sql("pg1", "INSERT INTO acked VALUES (51)");
    c.wait_sql("pg0", "SELECT count(*) FROM acked", "51");
}

// The cluster file names pg0 the primary, but pg1 was promoted after it (an interrupted
// failover never saved the file): pg0 is refused even with pg1 stopped.
#[test]
fn a_stale_cluster_file_cannot_bring_back_the_old_primary() {
    let c = TestCluster::up(Pg::V18);
    c.ok(&["stop", "pg0"]);
    // What an interrupted failover leaves: pg1 promoted, the file unchanged.
    let before = std::fs::read_to_string(&c.config).unwrap();
    c.ok(&["promote", "pg1"]);
    std::fs::write(&c.config, before).unwrap();
    c.ok(&["stop", "pg1"]);
    let e = c.fails(&["start", "pg0"]);
    assert!(e.contains("start pg1"), "{e}");
    assert!(c.writable_nodes().is_empty());
    c.ok(&["start", "pg1"]);
    assert_only_writable(&c, "pg1");
}

// stop pg0; rm -rf its data; up: the standbys hold the cluster's data, so pg0 is not
// initialized afresh as an empty primary.
#[test]
fn up_never_initializes_an_empty_primary_over_held_data() {
    let c = TestCluster::up(Pg::V18);
    seed(&c, "pg0");
    c.wait_sql("pg1", "SELECT count(*) FROM acked", "50");
    c.ok(&["stop", "pg0"]);
    std::fs::remove_dir_all(c.data_dir("pg0")).unwrap();
    let e = c.fails(&["up"]);
    assert!(e.contains("failover") || e.contains("promote"), "{e}");
    assert!(!c.data_dir("pg0").exists(), "pg0 was initialized");
    assert!(c.writable_nodes().is_empty());
    assert_eq!(c.sql("pg1", "SELECT count(*) FROM acked"), "50");
}

// A data directory of another database system (a fresh initdb in pg2's place) is never
// started as part of the cluster, and status says why.
#[test]
fn a_foreign_data_directory_is_refused_and_reported() {
    let c = TestCluster::up(Pg::V18);
    c.ok(&["stop", "pg2"]);
    let data = c.data_dir("pg2");
    std::fs::remove_dir_all(&data).unwrap();
    let initdb = Pg::V18.bin().join("initdb");
    let pwfile = c.path().join("pw");
    std::fs::write(&pwfile, "x").unwrap();
    let status = std::process::Command::new("setpriv")
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(initdb)
        .arg("-D")
        .arg(&data)
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["-U", "postgres", "--auth=scram-sha-256", "--wal-segsize=1"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let e = c.fails(&["start", "pg2"]);
    assert!(e.contains("another database system"), "{e}");
    assert_eq!(c.node_status("pg2")["needs_rejoin"], true);
    assert_only_writable(&c, "pg0");
}

// A switchover (or failover) killed right after its promotion leaves the cluster file naming
// the old primary, cleanly stopped with a primary's data: `start` and `up` must bring it back
// as a standby of the promoted node (its data says primary, the file gives it no upstream),
// never writable beside it. Review finding F1.
#[test]
fn the_old_primary_of_an_interrupted_switchover_starts_as_a_standby() {
    let c = TestCluster::three_nodes(Pg::V18, "");
    c.ok(&["up"]);
    seed(&c, "pg0");
    c.wait_sql("pg1", "SELECT count(*) FROM acked", "50");
    let points = [
        "switchover: journal written",
        "switchover: old primary stopped",
        "switchover: target caught up",
        "switchover: promoted",
    ]
    .map(String::from);
    c.crash_at_named(
        &["switchover", "--to", "pg1"],
        &points,
        "switchover: promoted",
    );
    assert_only_writable(&c, "pg1");
    c.sql("pg1", "INSERT INTO acked VALUES (51)");

    c.ok(&["start", "pg0"]);
    assert_only_writable(&c, "pg1");
    c.ok(&["stop", "pg0"]);
    // `up` cannot finish what the switchover began: it names the command that does.
    let out = c.run(&["up"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("pgrepl switchover --to pg1"),
        "{err}"
    );
    assert_only_writable(&c, "pg1");
    c.wait_sql("pg0", "SELECT count(*) FROM acked", "51");
    // The rerun completes the switchover.
    c.ok(&["switchover", "--to", "pg1"]);
    assert_only_writable(&c, "pg1");
    c.assert_file_topology_streams(&[]);
}
