//! Synchronous replication, asserted the way PostgreSQL's own
//! src/test/recovery/t/007_sync_rep.pl does it: the exact (application_name, sync_priority,
//! sync_state) rows of the primary's pg_stat_replication for each setting.

use std::time::Duration;

use crate::common::{Pg, TestCluster};
use serde_json::json;

const ROWS: &str = "SELECT application_name, sync_priority, sync_state FROM pg_stat_replication ORDER BY application_name";

/// The primary's pg_stat_replication as `app|priority|state` lines.
fn rows(c: &TestCluster, node: &str) -> String {
    c.sql(node, ROWS)
}

fn spec_text(c: &TestCluster) -> String {
    std::fs::read_to_string(&c.config).unwrap()
}

/// An INSERT that must block on SyncRep: cancelled by --timeout, and explained.
fn assert_blocked(c: &TestCluster, sql: &str) -> String {
    let e = c.fails(&["sql", "pg0", sql, "--timeout", "2s"]);
    assert!(e.contains("was waiting on IPC:SyncRep"), "{e}");
    assert!(e.contains("waiting for synchronous replication"), "{e}");
    assert!(
        e.contains("canceling wait for synchronous replication"),
        "PostgreSQL's own WARNING: {e}"
    );
    assert!(e.contains("already committed locally"), "{e}");
    e
}

pg_test!(lab_scenario_first_1_sync2_sync3, |pg: Pg| {
    let c = TestCluster::up(pg);
    let out = c.ok(&["sync", "enable"]);
    assert!(out.contains(r#"FIRST 1 ("sync2", "sync3")"#), "{out}");
    assert_eq!(
        rows(&c, "pg0"),
        "pg1|0|async\nsync2|1|sync\nsync3|2|potential"
    );
    assert!(spec_text(&c).contains("[sync]"), "recorded in the spec");

    let s = c.status();
    assert_eq!(s["sync"]["standby_names"], r#"FIRST 1 ("sync2", "sync3")"#);
    assert_eq!(s["sync"]["satisfied"], true);
    assert_eq!(s["sync"]["sync_standbys"], json!(["sync2"]));
    for (name, state, priority) in [
        ("pg1", "async", 0),
        ("pg2", "sync", 1),
        ("pg3", "potential", 2),
    ] {
        let n = c.node_status(name);
        assert_eq!(
            (&n["sync_state"], &n["sync_priority"]),
            (&json!(state), &json!(priority)),
            "{n}"
        );
    }

    // pg2 goes: pg3 takes over as the synchronous standby and writes go on.
    c.sql("pg0", "CREATE TABLE sync_test (id int)");
    c.ok(&["stop", "pg2"]);
    c.wait_sql("pg0", ROWS, "pg1|0|async\nsync3|2|sync");
    c.ok(&[
        "sql",
        "pg0",
        "INSERT INTO sync_test VALUES (1)",
        "--timeout",
        "10s",
    ]);

    // pg3 goes too: a commit cannot complete, and says why.
    c.ok(&["stop", "pg3"]);
    c.wait_sql("pg0", ROWS, "pg1|0|async");
    let e = assert_blocked(&c, "INSERT INTO sync_test VALUES (2)");
    assert!(e.contains("sync2 (pg2): stopped"), "{e}");
    assert!(e.contains("sync3 (pg3): stopped"), "{e}");
    // The cancelled commit had committed locally.
    assert_eq!(
        c.sql("pg0", "SELECT count(*) FROM sync_test WHERE id = 2"),
        "1"
    );

    // Without a timeout it waits, seen by status, until synchronous replication is off.
    let mut blocked = c.spawn_waiting_commit("pg0", "INSERT INTO sync_test VALUES (3)");
    let s = c.status();
    assert_eq!(s["sync"]["satisfied"], false, "{}", s["sync"]);
    assert_eq!(s["sync"]["waiting_sessions"], 1);
    assert!(s["sync"]["oldest_wait_ms"].as_f64().unwrap() >= 0.0);

    let out = c.ok(&["sync", "disable"]);
    assert!(out.contains("1 commit(s)"), "{out}");
    let status = crate::common::exit_within(
        &mut blocked,
        Duration::from_secs(10),
        "the INSERT did not complete after sync disable",
    );
    assert!(status.success(), "{:?}", blocked.wait_with_output());
    assert_eq!(
        c.sql(
            "pg0",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM sync_test"
        ),
        "1,2,3"
    );
    assert_eq!(c.sql("pg0", "SHOW synchronous_standby_names"), "");
    assert!(!spec_text(&c).contains("[sync]"), "removed from the spec");
    assert!(c.status()["sync"].is_null());
    assert!(c.ok(&["sync", "disable"]).contains("already off"));
});

pg_test!(quorum_first_2_and_wildcard, |pg: Pg| {
    let c = TestCluster::up(pg);
    c.ok(&["sync", "enable", "--method", "any"]);
    assert_eq!(
        rows(&c, "pg0"),
        "pg1|0|async\nsync2|1|quorum\nsync3|1|quorum"
    );
    assert_eq!(c.status()["sync"]["satisfied"], true);

    c.ok(&["sync", "enable", "--method", "first", "--num", "2"]);
    assert_eq!(rows(&c, "pg0"), "pg1|0|async\nsync2|1|sync\nsync3|2|sync");
    c.sql("pg0", "CREATE TABLE t (id int)");
    c.ok(&["sql", "pg0", "INSERT INTO t VALUES (1)", "--timeout", "10s"]);

    // One of the two down: the other still shows `sync`, but commits need both.
    c.ok(&["stop", "pg3"]);
    c.wait_sql("pg0", ROWS, "pg1|0|async\nsync2|1|sync");
    assert_eq!(c.status()["sync"]["satisfied"], false);
    let e = assert_blocked(&c, "INSERT INTO t VALUES (2)");
    assert!(e.contains("Only 1 of the 2"), "{e}");

    // PostgreSQL's own spelling, `2 (a, b)` (FIRST implied), as the lab's SQL sets it.
    c.sql(
        "pg0",
        "ALTER SYSTEM SET synchronous_standby_names = '2 (sync2, sync3)'",
    );
    c.sql("pg0", "SELECT pg_reload_conf()");
    c.wait_sql("pg0", "SHOW synchronous_standby_names", "2 (sync2, sync3)");
    let s = c.status();
    assert_eq!(s["sync"]["standby_names"], "2 (sync2, sync3)");
    assert_eq!(s["sync"]["satisfied"], false);
    assert_blocked(&c, "INSERT INTO t VALUES (3)");
    c.ok(&["start", "pg3"]);
    c.wait_sql("pg0", ROWS, "pg1|0|async\nsync2|1|sync\nsync3|2|sync");
    assert_eq!(c.status()["sync"]["satisfied"], true);
    c.ok(&["sql", "pg0", "INSERT INTO t VALUES (4)", "--timeout", "10s"]);

    // `*` matches every standby, with the same priority.
    c.ok(&["sync", "enable", "--standbys", "*"]);
    let by_state = "SELECT sync_priority, sync_state FROM pg_stat_replication ORDER BY sync_state";
    assert_eq!(c.sql("pg0", by_state), "1|potential\n1|potential\n1|sync");
    c.ok(&[
        "sync",
        "enable",
        "--standbys",
        "*",
        "--method",
        "any",
        "--num",
        "2",
    ]);
    assert_eq!(c.sql("pg0", by_state), "1|quorum\n1|quorum\n1|quorum");
    assert_eq!(c.status()["sync"]["satisfied"], true);
    c.ok(&["sync", "disable"]);
    assert_eq!(rows(&c, "pg0"), "pg1|0|async\nsync2|0|async\nsync3|0|async");
});

// The spec's `[sync]` applied by `up`, remote_apply, a cascaded standby refused, and bad
// input that changes nothing, on one cluster where pg3 streams from pg2.
pg_test!(
    up_applies_spec_remote_apply_cascade_and_bad_input,
    |pg: Pg| {
        let c = TestCluster::new(pg);
        let spec = spec_text(&c).replace(
            "upstream = \"pg0\"\nslot = \"pg3_slot\"",
            "upstream = \"pg2\"\nslot = \"pg3_slot\"",
        );
        assert!(spec.contains("upstream = \"pg2\""), "{spec}");
        std::fs::write(
            &c.config,
            spec + "\n[sync]\nstandbys = [\"sync2\"]\ncommit = \"remote_apply\"\n",
        )
        .unwrap();
        c.ok(&["up"]);
        assert_eq!(c.sql("pg0", "SHOW synchronous_commit"), "remote_apply");
        assert_eq!(rows(&c, "pg0"), "pg1|0|async\nsync2|1|sync");
        assert_eq!(rows(&c, "pg2"), "sync3|0|async");

        // remote_apply: once the commit returns, the synchronous standby shows the row.
        c.sql("pg0", "CREATE TABLE ra (id int)");
        for i in 1..=5 {
            c.sql("pg0", &format!("INSERT INTO ra VALUES ({i})"));
            assert_eq!(c.sql("pg2", "SELECT count(*) FROM ra"), i.to_string());
        }

        let names = c.sql("pg0", "SHOW synchronous_standby_names");
        assert_eq!(names, r#"FIRST 1 ("sync2")"#);
        let spec_before = spec_text(&c);
        for (args, expected) in [
            (&["--num", "0"][..], "--num 0 is out of range"),
            (
                &["--standbys", "sync2,pg1", "--num", "3"][..],
                "--num 3 is out of range",
            ),
            (
                &["--standbys", "sync2,nope"][..],
                "'nope' is not the application name",
            ),
            (
                &["--commit", "sometimes"][..],
                "invalid commit level 'sometimes'",
            ),
            (&["--standbys", "pg0"][..], "the current primary"),
            (
                &["--standbys", "sync2,sync3"][..],
                "sync3 (pg3) streams from pg2, not from pg0",
            ),
        ] {
            let e = c.fails(&[&["sync", "enable"][..], args].concat());
            assert!(e.contains(expected), "{args:?}: {e}");
            assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
            assert_eq!(c.sql("pg0", "SHOW synchronous_standby_names"), names);
            assert_eq!(c.sql("pg0", "SHOW synchronous_commit"), "remote_apply");
            assert_eq!(spec_text(&c), spec_before, "{args:?} changed the spec");
        }

        // A standby pgrepl does not manage, on request; the spec keeps loading.
        let out = c.ok(&["sync", "enable", "--standbys", "outside", "--allow-unknown"]);
        assert!(out.contains("writes on pg0 will block"), "{out}");
        assert!(spec_text(&c).contains("allow_unknown = true"));
        assert_eq!(c.status()["sync"]["satisfied"], false);

        c.ok(&["sync", "disable"]);
        assert_eq!(c.sql("pg0", "SHOW synchronous_commit"), "on");
        assert_eq!(rows(&c, "pg0"), "pg1|0|async\nsync2|0|async");
    }
);
