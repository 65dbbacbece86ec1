//! The netns runtime on real clusters (PostgreSQL 18): the lab scenario with every node in a
//! network namespace of its own, network faults asserted by what PostgreSQL does under them
//! (a partitioned standby stops receiving and catches up, a partitioned synchronous standby
//! blocks commits, a delay shows in the replay lag, a partitioned primary makes a write gap
//! and loses nothing), and cleanup: nothing of a cluster left after `down`, also after a
//! killed `up`, and nothing of another cluster touched. Without root or iproute2/nftables
//! each test says SKIPPED with the reason, on stderr, and returns.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Pg, TestCluster};
use pgrepl_core::cluster::Options;
use pgrepl_core::progress::Silent;
use pgrepl_core::Cluster;
use serde_json::{json, Value};

fn netns_up(test: &str) -> Option<TestCluster> {
    TestCluster::up_on(Pg::V18, "netns", test)
}

fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().expect(prog);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The name of the cluster's host link, found by the alias that names its data directory.
fn host_link(c: &TestCluster) -> Option<String> {
    let dir = std::fs::canonicalize(c.path())
        .unwrap()
        .join(c.cluster_dir().strip_prefix(c.path()).unwrap());
    let alias = format!("pgrepl:{}", dir.display());
    let links: Value = serde_json::from_str(&run("ip", &["-j", "-d", "link", "show"])).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifalias"] == alias.as_str())
        .map(|l| l["ifname"].as_str().unwrap().to_string())
}

/// `ip netns list` names that start with `prefix`.
fn namespaces(prefix: &str) -> Vec<String> {
    run("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Everything of the cluster `ip` shows: its namespaces and its host link.
fn leftovers(link: &str) -> Vec<String> {
    let mut all = namespaces(&format!("{link}-"));
    if run("ip", &["-br", "link", "show"])
        .lines()
        .any(|l| l.split(['@', ' ']).next() == Some(link))
    {
        all.push(link.to_string());
    }
    all
}

fn postmaster(c: &TestCluster, node: &str) -> i32 {
    let text = std::fs::read_to_string(c.data_dir(node).join("postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// Whether a TCP connection from the network of `pid` reaches `addr` within 2 s.
fn reaches_from(pid: i32, addr: &str) -> bool {
    let (host, port) = addr.rsplit_once(':').unwrap();
    Command::new("nsenter")
        .args([
            "--target",
            &pid.to_string(),
            "--net",
            "timeout",
            "2",
            "bash",
            "-c",
        ])
        .arg(format!("exec 3<>/dev/tcp/{host}/{port}"))
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// `Runtime::can_reach` through the library: a connect from `from`'s network to `to`.
fn can_reach(c: &TestCluster, from: &str, to: &str) -> bool {
    let opts = Options {
        config: c.config.clone(),
        pg_bin: Some(c.pg.bin()),
        os_user: Some("postgres".into()),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cluster = Cluster::open(&opts, false, &Silent).await.unwrap();
        let (from, to) = (cluster.node(from).unwrap(), cluster.node(to).unwrap());
        cluster
            .runtime
            .can_reach(from, to, Duration::from_secs(1))
            .await
            .unwrap()
    })
}

fn address(c: &TestCluster, node: &str) -> String {
    let n = c.node_status(node);
    format!("{}:{}", n["host"].as_str().unwrap(), n["port"])
}

fn count(c: &TestCluster, node: &str, table: &str) -> String {
    c.sql(node, &format!("SELECT count(*) FROM {table}"))
}

/// A background session on `node` committing `n` one-row transactions `every` apart: the
/// steady write traffic that lag figures need.
fn committing(c: &TestCluster, node: &str, n: u32, every: Duration) -> std::process::Child {
    c.sql(node, "CREATE TABLE IF NOT EXISTS ticks (i int)");
    let sql = format!(
        "DO $$ BEGIN FOR i IN 1..{n} LOOP INSERT INTO ticks VALUES (i); COMMIT; PERFORM pg_sleep({}); END LOOP; END $$",
        every.as_secs_f64()
    );
    c.command(&["sql", node, &sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The median of `samples` readings of pg1's replay lag (ms) on the primary, 100 ms apart.
fn replay_lag_ms(c: &TestCluster, app: &str, samples: usize) -> f64 {
    let sql = format!(
        "SELECT coalesce(extract(epoch FROM replay_lag) * 1000, -1) FROM pg_stat_replication WHERE application_name = '{app}'"
    );
    let mut v: Vec<f64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while v.len() < samples && Instant::now() < deadline {
        if let Ok(ms) = c.sql("pg0", &sql).parse::<f64>() {
            if ms >= 0.0 {
                v.push(ms);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!v.is_empty(), "no replay_lag of {app}");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lab_scenario_on_netns() {
    let Some(c) = netns_up("lab_scenario_on_netns") else {
        return;
    };
    let link = host_link(&c).expect("the cluster's host link");
    assert_eq!(leftovers(&link).len(), 6, "{:?}", leftovers(&link));

    // Each node in a namespace of its own, at its address, on 5432.
    let s = c.status();
    let own_ns = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    let mut seen = Vec::new();
    for (i, n) in s["nodes"].as_array().unwrap().iter().enumerate() {
        let host = n["host"].as_str().unwrap();
        assert!(
            host.starts_with("10.") && host.ends_with(&format!(".{}", 10 + i)),
            "{n}"
        );
        assert_eq!(n["port"], 5432, "{n}");
        assert_eq!(n["faults"], json!([]), "{n}");
        let name = n["name"].as_str().unwrap();
        let ns = std::fs::metadata(format!("/proc/{}/ns/net", postmaster(&c, name)))
            .unwrap()
            .ino();
        assert!(
            ns != own_ns && !seen.contains(&ns),
            "{name} shares a network"
        );
        seen.push(ns);
    }

    // A write on the primary is read on every standby.
    c.sql(
        "pg0",
        "CREATE TABLE lab (id int PRIMARY KEY, note text); INSERT INTO lab VALUES (1, 'before')",
    );
    for n in ["pg1", "pg2", "pg3"] {
        c.wait_sql(n, "SELECT count(*) FROM lab", "1");
    }

    // Kill + promote + rejoin with pg_rewind: pg1 misses pg0's last write, so pg0 diverges.
    c.sql("pg1", "ALTER SYSTEM SET primary_conninfo = ''");
    c.sql("pg1", "SELECT pg_reload_conf()");
    c.wait_sql("pg1", "SELECT count(*) FROM pg_stat_wal_receiver", "0");
    c.sql("pg0", "INSERT INTO lab VALUES (99, 'lost with pg0')");
    c.wait_sql("pg2", "SELECT count(*) FROM lab", "2");
    c.ok(&["kill", "pg0"]);
    c.sql("pg1", "ALTER SYSTEM RESET primary_conninfo");
    c.sql("pg1", "SELECT pg_reload_conf()");
    // pg2 and pg3 hold the row pg1 missed: promoting pg1 discards it, so it takes --force.
    assert!(c.fails(&["promote", "pg1"]).contains("--force"));
    let out = c.ok(&["promote", "pg1", "--force"]);
    assert!(out.contains("timeline 2"), "{out}");
    c.sql("pg1", "INSERT INTO lab VALUES (2, 'from pg1')");
    let out = c.ok(&["rejoin", "pg0", "--upstream", "pg1"]);
    assert!(
        out.contains("pg_rewind") && out.contains("fork point"),
        "{out}"
    );
    for n in ["pg2", "pg3"] {
        c.ok(&["rejoin", n, "--upstream", "pg1"]);
    }
    for n in ["pg0", "pg2", "pg3"] {
        c.wait_sql(
            n,
            "SELECT string_agg(note, ',' ORDER BY id) FROM lab",
            "before,from pg1",
        );
    }

    // Switchover back to pg0: pg1 follows it.
    let out = c.ok(&["switchover", "--to", "pg0"]);
    assert!(out.contains("pg0"), "{out}");
    assert_eq!(c.status()["primary"], "pg0");
    c.sql("pg0", "INSERT INTO lab VALUES (3, 'after switchover')");
    c.wait_sql("pg1", "SELECT count(*) FROM lab", "3");

    // Sync: with both synchronous standbys stopped, a commit blocks and says why.
    let out = c.ok(&["sync", "enable"]);
    assert!(out.contains(r#"FIRST 1 ("sync2", "sync3")"#), "{out}");
    c.ok(&["stop", "pg2", "pg3"]);
    let e = c.fails(&[
        "sql",
        "pg0",
        "INSERT INTO lab VALUES (4, 'blocked')",
        "--timeout",
        "2s",
    ]);
    assert!(e.contains("was waiting on IPC:SyncRep"), "{e}");
    assert!(
        e.contains("sync2 (pg2): stopped") && e.contains("sync3 (pg3): stopped"),
        "{e}"
    );
    c.ok(&["sync", "disable"]);
    c.ok(&["start", "pg2", "pg3"]);
    c.wait_sql("pg3", "SELECT count(*) FROM lab", "4");

    let out = c.ok(&["down", "--purge", "--yes"]);
    assert!(out.contains("removed the cluster's network"), "{out}");
    assert_eq!(leftovers(&link), Vec::<String>::new());
}

#[test]
fn a_partitioned_async_standby_stops_receiving_and_catches_up() {
    let Some(c) = netns_up("a_partitioned_async_standby_stops_receiving_and_catches_up") else {
        return;
    };
    c.sql("pg0", "CREATE TABLE p (i int); INSERT INTO p VALUES (0)");
    c.wait_sql("pg1", "SELECT count(*) FROM p", "1");

    // The monitor's question, asked of the runtime: pg0 reaches pg1 until the partition.
    let reach = || can_reach(&c, "pg0", "pg1");
    assert!(reach());
    let out = c.ok(&["net", "partition", "pg1", "--no-host"]);
    assert!(
        out.contains("pg1: partitioned from every other node"),
        "{out}"
    );
    assert_eq!(
        c.node_status("pg1")["faults"],
        json!([{"kind": "partition", "from": [], "host": false}])
    );
    assert!(!reach(), "pg0 still reaches pg1");
    // The host still does (--no-host), and asking again changes nothing.
    assert!(c
        .ok(&["net", "partition", "pg1", "--no-host"])
        .contains("already has it"));
    // A rejoin (or a repoint) across the partition refuses at once, before any change,
    // naming the heal; it would otherwise fail at its streaming timeout.
    let t = std::time::Instant::now();
    for args in [
        &["rejoin", "pg1", "--upstream", "pg2"][..],
        &["standby", "follow", "pg1", "--upstream", "pg2"],
    ] {
        let e = c.fails(args);
        assert!(
            e.contains("cannot reach each other") && e.contains("`pgrepl net heal pg1`"),
            "{args:?}: {e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "{e}");
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(c.node_status("pg1")["upstream"], "pg0", "pg1 was changed");

    c.sql("pg0", "INSERT INTO p SELECT generate_series(1, 100)");
    c.wait_sql("pg2", "SELECT count(*) FROM p", "101");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        count(&c, "pg1", "p"),
        "1",
        "pg1 received through the partition"
    );

    let out = c.ok(&["net", "heal", "pg1"]);
    assert!(out.contains("pg1: healed"), "{out}");
    assert_eq!(c.node_status("pg1")["faults"], json!([]));
    assert!(reach());
    c.wait_sql("pg1", "SELECT count(*), sum(i) FROM p", "101|5050");
    assert!(c
        .ok(&["net", "heal", "pg1"])
        .contains("has no network fault"));
}

#[test]
fn a_partitioned_sync_standby_blocks_commits_until_healed() {
    let Some(c) = netns_up("a_partitioned_sync_standby_blocks_commits_until_healed") else {
        return;
    };
    let out = c.ok(&["sync", "enable", "--standbys", "sync2"]);
    assert!(out.contains(r#"FIRST 1 ("sync2")"#), "{out}");
    c.sql("pg0", "CREATE TABLE s (i int)");
    c.ok(&["net", "partition", "pg2", "--no-host"]);

    let e = c.fails(&["sql", "pg0", "INSERT INTO s VALUES (1)", "--timeout", "2s"]);
    assert!(e.contains("was waiting on IPC:SyncRep"), "{e}");
    assert!(
        e.contains("sync2 (pg2)")
            && e.contains("[network fault on pg2: partitioned from every other node]"),
        "{e}"
    );

    // Without a timeout the commit waits until the partition heals, then completes.
    let mut blocked = c.spawn_waiting_commit("pg0", "INSERT INTO s VALUES (2)");
    c.ok(&["net", "heal", "pg2"]);
    let status = crate::common::exit_within(
        &mut blocked,
        Duration::from_secs(60),
        "the INSERT did not complete after heal",
    );
    assert!(status.success());
    c.wait_sql(
        "pg2",
        "SELECT string_agg(i::text, ',' ORDER BY i) FROM s",
        "1,2",
    );
}

#[test]
fn a_delay_raises_the_replay_lag_by_about_that_much() {
    let Some(c) = netns_up("a_delay_raises_the_replay_lag_by_about_that_much") else {
        return;
    };
    let mut load = committing(&c, "pg0", 2000, Duration::from_millis(10));
    let before = replay_lag_ms(&c, "pg1", 10);
    let out = c.ok(&["net", "delay", "pg1", "50ms"]);
    assert!(out.contains("pg1: delay 50ms"), "{out}");
    assert_eq!(
        c.node_status("pg1")["faults"],
        json!([{"kind": "delay", "delay": "50ms", "jitter": "0s"}])
    );
    std::thread::sleep(Duration::from_secs(1));
    let during = replay_lag_ms(&c, "pg1", 10);
    c.ok(&["net", "heal", "pg1"]);
    // The delayer is gone with the fault: nothing holds packets any more.
    let pg1_ns = format!("{}-n-pg1", host_link(&c).unwrap());
    let delayers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|args| args.contains("__net-delayer") && args.contains(&pg1_ns))
        .collect();
    assert!(delayers.is_empty(), "a delayer outlived heal: {delayers:?}");
    std::thread::sleep(Duration::from_secs(1));
    let after = replay_lag_ms(&c, "pg1", 10);
    let _ = load.kill();
    let _ = load.wait();
    let rise = during - before;
    assert!(
        (25.0..=150.0).contains(&rise),
        "replay lag {before:.1} ms -> {during:.1} ms under 50 ms of delay (then {after:.1} ms)"
    );
    assert!(
        after < before + 25.0,
        "the lag stayed up after heal: {after:.1} ms"
    );
}

#[test]
fn partition_and_delay_drills_lose_nothing() {
    let Some(c) = netns_up("partition_and_delay_drills_lose_nothing") else {
        return;
    };
    let out = c.ok(&[
        "drill",
        "partition",
        "--hold",
        "2s",
        "--before",
        "1s",
        "--after",
        "500ms",
        "--json",
    ]);
    let j: Value = serde_json::from_str(&out).expect("drill --json is JSON");
    assert_eq!(j["event"], "partition");
    let run = &j["runs"][0];
    assert!(run["write_gap_ms"].as_f64().unwrap() >= 1500.0, "{run}");
    assert_eq!(run["lost_acknowledged"], 0, "{run}");
    assert_eq!(run["converged"], true, "{run}");
    assert_eq!(run["primary_after"], "pg0", "{run}");
    // Healed at the end.
    assert_eq!(c.node_status("pg0")["faults"], json!([]));

    let out = c.ok(&[
        "drill", "delay", "--delay", "50ms", "--hold", "1s", "--before", "1s", "--after", "500ms",
        "--json",
    ]);
    let j: Value = serde_json::from_str(&out).expect("drill --json is JSON");
    let run = &j["runs"][0];
    assert_eq!(run["event"]["detail"]["delay_ms"], 50.0, "{run}");
    assert_eq!(run["lost_acknowledged"], 0, "{run}");
    assert_eq!(run["converged"], true, "{run}");
    assert_eq!(c.node_status("pg0")["faults"], json!([]));
}

#[test]
fn down_removes_a_killed_ups_leftovers_and_nothing_of_another_cluster() {
    let Some(a) = netns_up("down_removes_a_killed_ups_leftovers_and_nothing_of_another_cluster")
    else {
        return;
    };
    let a_link = host_link(&a).unwrap();
    let a_objects = leftovers(&a_link);

    // B's `up` is killed as soon as its network appears.
    let b = TestCluster::on(Pg::V18, "netns", "killed up").unwrap();
    let mut up = b
        .command(&["up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("B's network", Duration::from_secs(30), || {
        host_link(&b).is_some()
    });
    let _ = up.kill();
    let _ = up.wait();
    let b_link = host_link(&b).unwrap();
    assert_ne!(a_link, b_link);

    // Two clusters on one machine do not see each other: another subnet, and no route.
    b.ok(&["up"]);
    let (a0, b0) = (postmaster(&a, "pg0"), postmaster(&b, "pg0"));
    assert_ne!(address(&a, "pg0"), address(&b, "pg0"));
    assert!(reaches_from(a0, &address(&a, "pg1")));
    assert!(!reaches_from(a0, &address(&b, "pg0")), "A reaches B");
    assert!(!reaches_from(b0, &address(&a, "pg1")), "B reaches A");

    // A half-made node network (deleted by hand while the node is down) is rebuilt by `up`.
    b.ok(&["stop", "pg3"]);
    let status = Command::new("ip")
        .args(["netns", "del", &format!("{b_link}-n-pg3")])
        .status()
        .unwrap();
    assert!(status.success());
    b.ok(&["up"]);
    assert_eq!(b.node_status("pg3")["upstream"], "pg0");

    b.ok(&["down", "--purge", "--yes"]);
    assert_eq!(leftovers(&b_link), Vec::<String>::new());
    assert_eq!(leftovers(&a_link), a_objects, "B's down touched A");
    assert_eq!(a.sql("pg0", "SELECT 1"), "1");
    assert_eq!(a.node_status("pg1")["upstream"], "pg0");
}

#[test]
fn bad_fault_input_changes_nothing_and_local_refuses_network_faults() {
    // The local runtime: network faults are refused in one line; freeze works.
    let c = TestCluster::up(Pg::V18);
    let e = c.fails(&["net", "partition", "pg1"]);
    assert!(e.contains("need the netns or docker runtime"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    c.fails(&["net", "heal"]);
    let out = c.ok(&["freeze", "pg1"]);
    assert!(out.contains("pg1 frozen"), "{out}");
    assert!(c.ok(&["freeze", "pg1"]).contains("already frozen"));
    let s = c.node_status("pg1");
    assert_eq!(
        (&s["frozen"], &s["state"]),
        (&json!(true), &json!("not answering")),
        "{s}"
    );
    assert!(c.ok(&["status"]).contains("frozen"));
    // A stop of a frozen node refuses at once (it would wait out the stop timeout), and so
    // does `down`, before it stops anything.
    let t = std::time::Instant::now();
    for args in [&["stop", "pg2", "pg1"][..], &["down"]] {
        let e = c.fails(args);
        assert!(
            e.contains("pg1 is frozen: `pgrepl thaw pg1` first, or `pgrepl kill pg1`"),
            "{args:?}: {e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "{e}");
    }
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(c.node_status("pg2")["state"], "running", "pg2 was stopped");
    c.ok(&["thaw", "pg1"]);
    assert_eq!(c.node_status("pg1")["frozen"], false);
    assert!(c.ok(&["thaw", "pg1"]).contains("not frozen"));
    let e = c.fails(&["freeze", "pg9"]);
    assert!(e.contains("no node named 'pg9'"), "{e}");

    let Some(n) = TestCluster::on(Pg::V18, "netns", "bad fault input") else {
        return;
    };
    let spec = std::fs::read_to_string(&n.config).unwrap();
    assert!(
        spec.contains("runtime = \"netns\"") && spec.contains("subnet = \"10."),
        "{spec}"
    );
    for (args, says) in [
        (&["net", "loss", "pg1", "0%"][..], "invalid loss '0%'"),
        (&["net", "loss", "pg1", "150%"], "invalid loss '150%'"),
        (&["net", "delay", "pg1", "-5ms"], "invalid delay '-5ms'"),
        (
            &["net", "delay", "pg1", "50ms", "--jitter", "80ms"],
            "larger than the delay",
        ),
        (&["net", "partition", "pg9"], "no node named 'pg9'"),
        (&["net", "partition", "pg1", "--from", "pg1"], "from itself"),
        // Well-formed, but the cluster is not up: it has no network to fault.
        (&["net", "partition", "pg1"], "pgrepl up"),
    ] {
        let e = n.fails(args);
        assert!(e.contains(says), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: {e}");
    }
    assert!(
        host_link(&n).is_none(),
        "a refused command created a network"
    );
}
