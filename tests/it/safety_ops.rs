//! Safety of the failover lifecycle (issue 8: #2, #5, #6, #9), each finding's sequence on a
//! real cluster, asserting properties asked of PostgreSQL directly: how many nodes accept a
//! write, which acknowledged rows the primary holds, who streams from whom.

use crate::common::{Pg, TestCluster};

/// A three-node cluster, up, with a table `t (id bigint)` holding ids 1..=20 on every node.
fn cluster_with_rows(pg: Pg, extra: &str) -> (TestCluster, Vec<i64>) {
    let c = TestCluster::three_nodes(pg, extra);
    c.ok(&["up"]);
    c.sql("pg0", "CREATE TABLE t (id bigint PRIMARY KEY)");
    let acked = c.insert_acked("t", 1, 20);
    c.wait_replicated();
    (c, acked)
}

fn spec_root(c: &TestCluster) -> String {
    c.spec().root().name.clone()
}

// #2: a failover killed right after its promotion. The rerun completes it: it neither fences
// the new primary nor promotes another standby, and the commits acknowledged on the new
// primary in between survive.
pg_test!(interrupted_failover_is_completed_not_redone, |pg: Pg| {
    let (c, mut acked) = cluster_with_rows(pg, "");
    // A first failover, run whole, tells where its crash points are.
    c.ok(&["kill", "pg0"]);
    let points = c.crash_points(&["failover"]);
    let first = c.the_writable();
    c.ok(&["rejoin", "pg0", "--upstream", &first]);
    c.assert_file_topology_streams(&[]);
    acked.extend(c.insert_acked("t", 100, 10));
    c.wait_replicated();

    c.ok(&["kill", &first]);
    c.crash_at_named(&["failover"], &points, "failover: promoted");
    let promoted = c.the_writable();
    assert_ne!(promoted, first);
    // The cluster file still names the killed node: the failover was cut short.
    assert_eq!(spec_root(&c), first);
    acked.extend(c.insert_acked("t", 1000, 50));

    let out = c.ok(&["failover"]);
    assert!(out.contains("completing"), "{out}");
    let primary = c.assert_one_primary_holding("t", &acked);
    assert_eq!(primary, promoted, "the rerun must not promote another node");
    assert_eq!(spec_root(&c), promoted);
    c.assert_file_topology_streams(&[first.as_str()]);

    // Once complete, a failover has nothing to fail over: it refuses and changes nothing.
    let spec = c.spec_text();
    let e = c.fails(&["failover"]);
    assert!(e.contains("switchover --to"), "{e}");
    assert_eq!(c.the_writable(), promoted);
    assert_eq!(c.spec_text(), spec);

    c.ok(&["rejoin", &first, "--upstream", &promoted]);
    c.assert_file_topology_streams(&[]);
    let want = c.ids(&promoted, "t").len().to_string();
    for n in c.node_names() {
        c.wait_sql(&n, "SELECT count(*) FROM t", &want);
    }
    c.assert_one_primary_holding("t", &acked);
});

// #2: two promotions to timeline 2 without knowledge of each other (the second forced): the
// histories are identical files, the WAL is not. A rejoin must never call that "not
// diverged"; pg_rewind cannot tell the two apart, so it refuses and names --reclone.
pg_test!(two_timelines_2_are_never_taken_for_one, |pg: Pg| {
    let (c, acked) = cluster_with_rows(pg, "");
    c.ok(&["kill", "pg0"]);
    c.ok(&["promote", "pg1"]);
    let on_pg1 = c.insert_acked("t", 500, 50);
    c.ok(&["stop", "pg1"]);

    // pg2 never saw pg1's promotion: promoting it would discard pg1's acknowledged commits.
    let e = c.fails(&["promote", "pg2"]);
    assert!(
        e.contains("pg1 (stopped)") && e.contains("pgrepl start pg1"),
        "{e}"
    );
    assert!(c.writable().is_empty(), "refused: nothing promoted");
    c.ok(&["promote", "pg2", "--force"]);
    assert_eq!(c.the_writable(), "pg2");

    let spec = c.spec_text();
    let e = c.fails(&["rejoin", "pg1", "--upstream", "pg2"]);
    assert!(e.contains("--reclone"), "{e}");
    assert!(!e.contains("no rewind needed"), "{e}");
    assert_eq!(
        c.spec_text(),
        spec,
        "refused: the cluster file is unchanged"
    );
    assert_eq!(c.writable(), ["pg2"]);
    assert!(c.status()["nodes"][1]["state"] == "stopped");

    let out = c.ok(&["rejoin", "pg1", "--upstream", "pg2", "--reclone"]);
    assert!(out.contains("kept"), "{out}");
    c.assert_file_topology_streams(&["pg0"]);
    // pg1 now holds pg2's history: what the forced promotion kept, and not pg1's own rows.
    let on_pg1_now = c.ids("pg1", "t");
    assert!(acked.iter().all(|i| on_pg1_now.contains(i)));
    assert!(on_pg1.iter().all(|i| !on_pg1_now.contains(i)));
});

// #2, the other shape: two timelines 2 that forked at different points.
#[test]
fn same_timeline_number_forked_elsewhere_is_diverged() {
    let (c, _) = cluster_with_rows(Pg::V18, "");
    c.detach("pg2");
    c.insert_acked("t", 300, 5);
    c.wait_sql("pg1", "SELECT count(*) FROM t", "25");
    c.ok(&["kill", "pg0"]);
    c.ok(&["promote", "pg1"]);
    c.ok(&["stop", "pg1"]);
    c.ok(&["promote", "pg2", "--force"]);
    let e = c.fails(&["rejoin", "pg1", "--upstream", "pg2"]);
    assert!(
        e.contains("different histories") && e.contains("--reclone"),
        "{e}"
    );
    assert_eq!(c.writable(), ["pg2"]);
}

// #5: a switchover killed right after its promotion. The rerun completes it: the old primary
// streams as a standby of the new one, and starting every node later makes one primary.
#[test]
fn interrupted_switchover_is_completed_by_rerunning_it() {
    let (c, mut acked) = cluster_with_rows(Pg::V18, "");
    let points = c.crash_points(&["switchover", "--to", "pg1"]);
    c.assert_file_topology_streams(&[]);

    c.crash_at_named(
        &["switchover", "--to", "pg0"],
        &points,
        "switchover: promoted",
    );
    assert_eq!(c.the_writable(), "pg0");
    acked.extend(c.insert_acked("t", 200, 20));
    let out = c.ok(&["switchover", "--to", "pg0"]);
    assert!(out.contains("completing"), "{out}");
    c.assert_one_primary_holding("t", &acked);
    c.assert_file_topology_streams(&[]);
    assert_eq!(spec_root(&c), "pg0");
    let again = c.ok(&["switchover", "--to", "pg0"]);
    assert!(again.contains("already the primary"), "{again}");

    // Killed at the same point again, and its journal lost: what is left is derived from
    // PostgreSQL alone.
    c.crash_at_named(
        &["switchover", "--to", "pg1"],
        &points,
        "switchover: promoted",
    );
    std::fs::remove_file(c.cluster_dir().join(".switchover.json")).unwrap();
    acked.extend(c.insert_acked("t", 300, 20));
    c.ok(&["switchover", "--to", "pg1"]);
    c.assert_one_primary_holding("t", &acked);
    c.assert_file_topology_streams(&[]);

    // Every node stopped and started again: still one primary.
    c.ok(&["stop", "pg0", "pg1", "pg2"]);
    c.ok(&["start", "pg0", "pg1", "pg2"]);
    assert_eq!(c.writable(), ["pg1"]);
    c.assert_one_primary_holding("t", &acked);
    c.assert_file_topology_streams(&[]);
}

// #6: the wrong target. Rejoining the healthy primary, or failing over a healthy cluster,
// is refused before anything changes, naming switchover; --force does it.
pg_test!(wrong_targets_are_refused_before_any_change, |pg: Pg| {
    let (c, acked) = cluster_with_rows(pg, "");
    let spec = c.spec_text();

    let e = c.fails(&["rejoin", "pg0", "--upstream", "pg1"]);
    assert!(
        e.contains("switchover --to pg1") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(c.writable(), ["pg0"]);
    assert_eq!(c.spec_text(), spec);
    c.assert_file_topology_streams(&[]);

    let e = c.fails(&["failover"]);
    assert!(
        e.contains("switchover --to") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(c.writable(), ["pg0"]);
    assert_eq!(c.spec_text(), spec);
    c.assert_file_topology_streams(&[]);

    let out = c.ok(&["failover", "--force"]);
    assert!(out.contains("promoted"), "{out}");
    let primary = c.assert_one_primary_holding("t", &acked);
    assert_ne!(primary, "pg0");
    c.assert_file_topology_streams(&["pg0"]);
    c.ok(&["rejoin", "pg0", "--upstream", &primary]);
    c.assert_file_topology_streams(&[]);

    // A data directory of another database system is refused, and kept as it is.
    let other = TestCluster::three_nodes(pg, "");
    other.ok(&["up"]);
    other.ok(&["down"]);
    c.ok(&["stop", "pg2"]);
    let data = c.data_dir("pg2");
    std::fs::rename(&data, c.cluster_dir().join("pg2.mine")).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(other.data_dir("pg2"))
        .arg(&data)
        .status()
        .unwrap();
    assert!(copied.success());
    let spec = c.spec_text();
    let e = c.fails(&["rejoin", "pg2", "--upstream", &primary]);
    assert!(
        e.contains("another database system") && e.contains("--reclone"),
        "{e}"
    );
    assert_eq!(c.spec_text(), spec);
    assert!(data.join("PG_VERSION").is_file(), "the directory is kept");
    c.ok(&["rejoin", "pg2", "--upstream", &primary, "--reclone"]);
    c.assert_file_topology_streams(&[]);
    c.assert_one_primary_holding("t", &acked);
});

/// The physical slots on `node`: (name, active, wal_status).
fn slots(c: &TestCluster, node: &str) -> Vec<(String, bool, Option<String>)> {
    crate::common::safety::block_on(async {
        let cl = c.direct(node).await.unwrap();
        cl.query(
            "SELECT slot_name::text, active, wal_status FROM pg_replication_slots WHERE slot_type = 'physical'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    })
}

// #9: after a switchover and back no node holds a slot nobody streams through; the slot
// limit is in effect (on an existing cluster too, once the file changes it), and status
// warns of a slot that lost its WAL, naming the re-clone.
#[test]
fn slots_serve_standbys_only_and_are_bounded() {
    let (c, _) = cluster_with_rows(Pg::V18, "");
    for n in c.node_names() {
        assert_eq!(c.sql(&n, "SHOW max_slot_wal_keep_size"), "1GB");
    }
    c.ok(&["switchover", "--to", "pg1"]);
    // The limit changes in the file: the next role change applies it.
    // (pgrepl wrote the default into the file when the switchover saved it.)
    let text = c.spec_text().replace(
        "max_slot_wal_keep_size = \"1GB\"",
        "max_slot_wal_keep_size = \"2MB\"",
    );
    assert!(text.contains("\"2MB\""), "{text}");
    std::fs::write(&c.config, text).unwrap();
    c.ok(&["switchover", "--to", "pg0"]);
    c.assert_file_topology_streams(&[]);
    let spec = c.spec();
    for n in c.node_names() {
        let wanted: Vec<String> = spec
            .downstream_of(&n)
            .map(|d| d.slot_or_default())
            .collect();
        for (slot, active, _) in slots(&c, &n) {
            assert!(
                active || wanted.contains(&slot),
                "{n} holds slot {slot} that nobody streams through"
            );
        }
    }
    assert!(slots(&c, "pg1").is_empty(), "{:?}", slots(&c, "pg1"));
    assert_eq!(c.sql("pg0", "SHOW max_slot_wal_keep_size"), "2MB");
    // `up` applies a change too, without a role change.
    std::fs::write(&c.config, c.spec_text().replace("\"2MB\"", "\"3MB\"")).unwrap();
    c.ok(&["up"]);
    assert_eq!(c.sql("pg0", "SHOW max_slot_wal_keep_size"), "3MB");

    // A standby down while more WAL than that is written loses its slot.
    c.ok(&["stop", "pg2"]);
    c.ok(&["load", "wal", "--mb", "40"]);
    c.sql("pg0", "CHECKPOINT");
    let lost = slots(&c, "pg0")
        .into_iter()
        .find(|(s, ..)| s == "pg2_slot")
        .and_then(|(_, _, w)| w);
    assert!(
        matches!(lost.as_deref(), Some("lost" | "unreserved")),
        "{lost:?}"
    );
    let warnings = c.status()["warnings"].to_string();
    assert!(
        warnings.contains("pg2_slot on pg0")
            && warnings.contains("pgrepl rejoin pg2 --upstream pg0 --reclone"),
        "{warnings}"
    );
    c.ok(&["rejoin", "pg2", "--upstream", "pg0", "--reclone"]);
    c.assert_file_topology_streams(&[]);
    assert!(!c.status()["warnings"].to_string().contains("pg2_slot"));
}

// Review F3 and F4: the primary, stopped cleanly with commits its standbys never received
// (they were stopped first), is the answer to "is there a primary?": failover refuses and
// names `start`; promote of a standby that lacks WAL another node holds refuses too. Nothing
// changes; starting the primary again keeps every acknowledged row.
#[test]
fn a_stopped_primary_ahead_of_every_standby_is_not_failed_over() {
    let (c, mut acked) = cluster_with_rows(Pg::V18, "");
    c.ok(&["stop", "pg2"]);
    acked.extend(c.insert_acked("t", 100, 10));
    c.wait_sql("pg1", "SELECT count(*) FROM t", "30");
    c.ok(&["stop", "pg1"]);
    acked.extend(c.insert_acked("t", 200, 50));
    c.ok(&["stop", "pg0"]);
    c.ok(&["start", "pg1", "pg2"]);
    let spec = c.spec_text();

    let e = c.fails(&["failover"]);
    assert!(e.contains("pgrepl start pg0"), "{e}");
    let e = c.fails(&["promote", "pg2"]);
    assert!(e.contains("pg1") && e.contains("--force"), "{e}");
    assert!(c.writable_nodes().is_empty());
    assert_eq!(c.spec_text(), spec);

    c.ok(&["start", "pg0"]);
    c.assert_one_primary_holding("t", &acked);
}

// Review F2: an interrupted failover's journal outlives the interruption when the operator
// finishes the job by hand (follow, rejoin). The next failover must not trust it: the
// journal's old primary is a streaming standby by then, not the failed primary.
#[test]
fn a_failover_journal_finished_by_hand_is_not_trusted_later() {
    let (c, mut acked) = cluster_with_rows(Pg::V18, "");
    c.ok(&["stop", "pg0"]);
    let points = [
        "failover: journal written".to_string(),
        "failover: promoted".to_string(),
    ];
    c.crash_at_named(&["failover"], &points, "failover: promoted");
    let first = c.the_writable();
    let other = if first == "pg1" { "pg2" } else { "pg1" };
    c.ok(&["standby", "follow", other, "--upstream", &first]);
    c.ok(&["rejoin", "pg0", "--upstream", &first]);
    acked.extend(c.insert_acked("t", 100, 10));
    c.wait_replicated();

    c.ok(&["kill", &first]);
    let out = c.ok(&["failover"]);
    assert!(!out.contains("the old primary pg0"), "{out}");
    let primary = c.assert_one_primary_holding("t", &acked);
    assert_ne!(primary, first);
    c.assert_file_topology_streams(&[first.as_str()]);
}

// Review F10: `promote NODE --fence` stops the primary, then must not promote a standby that
// lacks what the primary acknowledged (here pg2 cascades from pg1, which is stopped): it
// starts the primary again and refuses.
#[test]
fn promote_with_fence_never_discards_the_fenced_primarys_commits() {
    let (c, mut acked) = cluster_with_rows(Pg::V18, "");
    c.ok(&["standby", "follow", "pg2", "--upstream", "pg1"]);
    c.ok(&["stop", "pg1"]);
    acked.extend(c.insert_acked("t", 100, 50));
    let e = c.fails(&["promote", "pg2", "--fence"]);
    assert!(e.contains("pg0") && e.contains("--force"), "{e}");
    assert_eq!(c.assert_one_primary_holding("t", &acked), "pg0");
}

// Review F9: a frozen standby would hold the old primary's fast shutdown (and the cluster's
// writes) for a minute: switchover refuses before it stops anything.
#[test]
fn switchover_refuses_at_once_while_a_standby_is_frozen() {
    let (c, acked) = cluster_with_rows(Pg::V18, "");
    c.ok(&["freeze", "pg2"]);
    let t = std::time::Instant::now();
    let e = c.fails(&["switchover", "--to", "pg1"]);
    assert!(e.contains("pgrepl thaw pg2"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(c.assert_one_primary_holding("t", &acked), "pg0");
    c.ok(&["thaw", "pg2"]);
    c.ok(&["switchover", "--to", "pg1"]);
    assert_eq!(c.assert_one_primary_holding("t", &acked), "pg1");
}

// Review F7: a failover onto the only synchronous standby leaves nothing synchronous: said
// loudly by the failover and by status, not silently.
#[test]
fn losing_the_only_synchronous_standby_to_a_failover_is_said() {
    let (c, acked) = cluster_with_rows(Pg::V18, "");
    c.ok(&["sync", "enable", "--standbys", "pg1"]);
    c.ok(&["kill", "pg0"]);
    let out = c.ok(&["failover"]);
    assert!(out.contains("synchronous replication is off"), "{out}");
    assert_eq!(c.assert_one_primary_holding("t", &acked), "pg1");
    let warnings = c.status()["warnings"].to_string();
    assert!(
        warnings.contains("synchronous replication is off"),
        "{warnings}"
    );
}

// Review F8: the running primary removed from the cluster file by hand. The standbys still
// stream from it: failover must not promote a second primary.
#[test]
fn failover_asks_the_standbys_whether_a_primary_runs() {
    let (c, acked) = cluster_with_rows(Pg::V18, "");
    let before = c.spec_text();
    let mut spec = c.spec();
    spec.nodes.retain(|n| n.name != "pg0");
    for n in &mut spec.nodes {
        n.upstream = (n.name != "pg1").then(|| "pg1".to_string());
        n.slot = None;
    }
    spec.save(&c.config).unwrap();
    let e = c.fails(&["failover"]);
    assert!(e.contains("no node of the cluster file"), "{e}");
    let e = c.fails(&["promote", "pg1"]);
    assert!(e.contains("no node of the cluster file"), "{e}");
    // The file back as it was, to ask every node who is writable.
    std::fs::write(&c.config, before).unwrap();
    assert_eq!(c.assert_one_primary_holding("t", &acked), "pg0");
}
