//! The failover lifecycle on real clusters: the lab's failover scenario, the split-brain guard,
//! a switchover under a steady writer, failover's choice, and rejoin's idempotence and resume.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{node, Pg, TestCluster};

fn spec_upstream(c: &TestCluster, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(&c.config).unwrap();
    let spec: toml_like::Spec = toml_like::parse(&text);
    spec.upstream_of(name)
}

/// Just enough of the cluster file to read who follows whom (the tests have no toml crate).
mod toml_like {
    pub struct Spec(Vec<(String, Option<String>)>);
    pub fn parse(text: &str) -> Spec {
        let mut nodes = Vec::new();
        for block in text.split("[[node]]").skip(1) {
            let get = |key: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{key} = ")))
                    .map(|v| v.trim().trim_matches('"').to_string())
            };
            nodes.push((get("name").unwrap(), get("upstream")));
        }
        Spec(nodes)
    }
    impl Spec {
        pub fn upstream_of(&self, name: &str) -> Option<String> {
            self.0.iter().find(|(n, _)| n == name).unwrap().1.clone()
        }
    }
}

fn assert_streams_from(c: &TestCluster, name: &str, upstream: &str, tli: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = c.node_status(name);
        if n["role"] == "standby" && n["upstream"] == upstream && n["timeline"] == tli {
            assert_eq!(n["needs_rejoin"], false, "{n}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} does not stream from {upstream} on timeline {tli}: {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pg_test!(lab_failover_kill_promote_rejoin, |pg: Pg| {
    let c = TestCluster::up(pg);
    c.sql(
        "pg0",
        "CREATE TABLE lab (id int PRIMARY KEY, note text); INSERT INTO lab VALUES (1, 'before')",
    );
    c.wait_sql("pg1", "SELECT count(*) FROM lab", "1");
    // pg0 writes once more and pg1 never receives it: pg0 diverges from what pg1 will become,
    // so the rejoin has to rewind it (and its crash recovery first).
    c.detach("pg1");
    c.sql("pg0", "INSERT INTO lab VALUES (99, 'lost with pg0')");
    c.wait_sql("pg2", "SELECT count(*) FROM lab", "2");
    c.ok(&["kill", "pg0"]);
    c.reattach("pg1");

    // pg2 and pg3 hold pg0's last commit, which pg1 lacks: promoting pg1 discards it, so
    // it takes --force.
    let e = c.fails(&["promote", "pg1"]);
    assert!(
        e.contains("pg2") && e.contains("pg3") && e.contains("promote pg1 --force"),
        "{e}"
    );
    assert!(c.writable_nodes().is_empty(), "the refusal changed nothing");
    let out = c.ok(&["promote", "pg1", "--force"]);
    assert!(out.contains("timeline 2"), "{out}");
    let s = c.status();
    assert_eq!(s["primary"], "pg1");
    assert_eq!(node(&s, "pg1")["timeline"], 2);
    assert_eq!(node(&s, "pg0")["needs_rejoin"], true, "{s}");
    assert_eq!(spec_upstream(&c, "pg1"), None);
    assert_eq!(spec_upstream(&c, "pg0").as_deref(), Some("pg1"));
    c.sql("pg1", "INSERT INTO lab VALUES (2, 'from pg1')");

    let out = c.ok(&["rejoin", "pg0", "--upstream", "pg1"]);
    assert!(out.contains("pg_rewind"), "{out}");
    assert!(out.contains("fork point"), "{out}");
    assert!(out.contains("1 committed transaction,"), "{out}");
    assert_streams_from(&c, "pg0", "pg1", 2);

    // pg2 and pg3 received the lost row too: they have diverged as well.
    let e = c.fails(&["standby", "follow", "pg2", "--upstream", "pg1"]);
    assert!(e.contains("rejoin pg2"), "{e}");
    for n in ["pg2", "pg3"] {
        c.ok(&["rejoin", n, "--upstream", "pg1"]);
        assert_streams_from(&c, n, "pg1", 2);
        assert_eq!(spec_upstream(&c, n).as_deref(), Some("pg1"));
    }
    for n in ["pg0", "pg2", "pg3"] {
        c.wait_sql(
            n,
            "SELECT string_agg(note, ',' ORDER BY id) FROM lab",
            "before,from pg1",
        );
    }
    assert_eq!(c.status()["warnings"], serde_json::json!([]));
});

pg_test!(
    promote_guards_against_split_brain_and_rejoin_reports_the_discarded_writes,
    |pg: Pg| {
        let c = TestCluster::up(pg);
        c.sql("pg0", "CREATE TABLE sb (id int PRIMARY KEY)");
        let spec_before = std::fs::read_to_string(&c.config).unwrap();

        let e = c.fails(&["promote", "pg1"]);
        for hint in ["split brain", "switchover --to pg1", "--fence", "--force"] {
            assert!(e.contains(hint), "{hint} missing: {e}");
        }
        assert_eq!(
            c.node_status("pg1")["role"],
            "standby",
            "refused, nothing changed"
        );
        assert_eq!(std::fs::read_to_string(&c.config).unwrap(), spec_before);
        assert!(c.ok(&["promote", "pg0"]).contains("already a primary"));
        c.ok(&["stop", "pg3"]);
        let e = c.fails(&["promote", "pg3"]);
        assert!(e.contains("not running"), "{e}");

        let out = c.ok(&["promote", "pg1", "--force"]);
        assert!(out.contains("split brain"), "{out}");
        let s = c.status();
        assert_eq!(s["split_brain"], true);
        assert!(
            s["warnings"][0].as_str().unwrap().contains("SPLIT BRAIN"),
            "{s}"
        );
        assert_eq!(node(&s, "pg0")["needs_rejoin"], true);
        assert!(c.ok(&["status"]).contains("SPLIT BRAIN"));

        // Both accept writes; pg0's are the ones a rejoin throws away.
        c.sql("pg0", "INSERT INTO sb SELECT generate_series(100, 104)");
        c.sql("pg0", "INSERT INTO sb VALUES (200)");
        c.sql("pg1", "INSERT INTO sb VALUES (1)");
        let out = c.ok(&["rejoin", "pg0", "--upstream", "pg1"]);
        assert!(out.contains("2 committed transactions"), "{out}");
        assert!(out.contains("6 row changes"), "{out}");
        assert!(out.contains("discarded"), "{out}");
        assert_streams_from(&c, "pg0", "pg1", 2);
        c.wait_sql("pg0", "SELECT string_agg(id::text, ',') FROM sb", "1");
        assert_eq!(c.status()["split_brain"], false);
    }
);

/// Inserts ids as fast as it can through a multi-host connection string that only accepts a
/// read-write server, reconnecting on failure; records every id whose commit was acknowledged
/// and the longest time between two acknowledgements.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    gaps: Arc<Mutex<Vec<Duration>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(c: &TestCluster) -> Writer {
        let pgpass =
            std::fs::read_to_string(c.path().join(".pgrepl/lab/pgpass")).expect("passfile");
        let password = pgpass
            .lines()
            .find(|l| l.contains(":postgres:"))
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        let mut cfg = tokio_postgres::Config::new();
        for i in 0..4 {
            cfg.host("127.0.0.1").port(c.base_port + i);
        }
        cfg.user("postgres")
            .password(password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(1))
            .target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let gaps = Arc::new(Mutex::new(Vec::new()));
        let (s, a, g) = (stop.clone(), acked.clone(), gaps.clone());
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut client: Option<tokio_postgres::Client> = None;
                let mut id = 0i64;
                let mut last_ack = Instant::now();
                while !s.load(Ordering::SeqCst) {
                    if client.is_none() {
                        match cfg.connect(tokio_postgres::NoTls).await {
                            Ok((cl, conn)) => {
                                tokio::spawn(conn);
                                client = Some(cl);
                            }
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                continue;
                            }
                        }
                    }
                    id += 1;
                    let res = client
                        .as_ref()
                        .unwrap()
                        .execute("INSERT INTO w VALUES ($1)", &[&id])
                        .await;
                    match res {
                        Ok(_) => {
                            let gap = last_ack.elapsed();
                            last_ack = Instant::now();
                            g.lock().unwrap().push(gap);
                            a.lock().unwrap().push(id);
                        }
                        Err(_) => client = None,
                    }
                }
            });
        });
        Writer {
            stop,
            acked,
            gaps,
            handle: Some(handle),
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// The longest time without an acknowledged write since the last call.
    fn take_max_gap(&self) -> Duration {
        let mut g = self.gaps.lock().unwrap();
        let max = g.iter().copied().max().unwrap_or_default();
        g.clear();
        max
    }

    fn finish(mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap();
        self.acked.lock().unwrap().clone()
    }
}

pg_test!(
    switchover_under_a_steady_writer_loses_no_acknowledged_write,
    |pg: Pg| {
        let c = TestCluster::up(pg);
        c.sql("pg0", "CREATE TABLE w (id bigint PRIMARY KEY)");
        let writer = Writer::start(&c);
        let wait_for_writes = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while writer.acked() < n {
                assert!(Instant::now() < deadline, "the writer is stuck");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for_writes(50);
        let mut tli = 1;
        for (to, from) in [("pg1", "pg0"), ("pg0", "pg1"), ("pg1", "pg0")] {
            writer.take_max_gap();
            let before = writer.acked();
            let out = c.ok(&["switchover", "--to", to]);
            tli += 1;
            assert!(out.contains("writes were unavailable for"), "{out}");
            wait_for_writes(before + 50);
            eprintln!(
                "switchover {from} -> {to}: longest gap between acknowledged writes {:.3} s; {}",
                writer.take_max_gap().as_secs_f64(),
                out.lines().next().unwrap()
            );
            let s = c.status();
            assert_eq!(s["primary"], to, "{s}");
            assert_eq!(node(&s, to)["timeline"], tli);
            assert_streams_from(&c, from, to, tli);
            for other in ["pg2", "pg3"] {
                assert_streams_from(&c, other, to, tli);
            }
            assert_eq!(spec_upstream(&c, to), None);
            assert_eq!(spec_upstream(&c, from).as_deref(), Some(to));
        }
        let acked = writer.finish();
        let present: Vec<i64> = c
            .sql("pg1", "SELECT id FROM w ORDER BY id")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let present: std::collections::HashSet<i64> = present.into_iter().collect();
        let missing: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged ids missing after 3 switchovers: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        assert!(c
            .ok(&["switchover", "--to", "pg1"])
            .contains("already the primary"));
        let e = c.fails(&["switchover", "--to", "pg9"]);
        assert!(e.contains("no node named 'pg9'"), "{e}");
    }
);

pg_test!(failover_picks_the_standby_with_the_most_wal, |pg: Pg| {
    let c = TestCluster::up(pg);
    c.sql("pg0", "CREATE TABLE f (id int)");
    c.wait_sql("pg3", "SELECT count(*) FROM f", "0");
    c.detach("pg1");
    c.detach("pg3");
    c.sql("pg0", "INSERT INTO f VALUES (1)");
    c.wait_sql("pg2", "SELECT count(*) FROM f", "1");
    c.ok(&["kill", "pg0"]);
    c.reattach("pg1");
    c.reattach("pg3");

    let out = c.ok(&["failover"]);
    assert!(
        out.contains("promoting pg2: pg2 has received the most WAL"),
        "{out}"
    );
    assert!(out.contains("bytes behind"), "{out}");
    let s = c.status();
    assert_eq!(s["primary"], "pg2");
    for n in ["pg1", "pg3"] {
        assert_streams_from(&c, n, "pg2", 2);
        c.wait_sql(n, "SELECT count(*) FROM f", "1");
    }
    assert_eq!(spec_upstream(&c, "pg0").as_deref(), Some("pg2"));
    c.ok(&["rejoin", "pg0", "--upstream", "pg2"]);
    assert_streams_from(&c, "pg0", "pg2", 2);
});

pg_test!(
    failover_under_sync_replication_picks_a_synchronous_standby,
    |pg: Pg| {
        let c = TestCluster::up(pg);
        let spec = std::fs::read_to_string(&c.config).unwrap();
        std::fs::write(&c.config, spec + "\n[sync]\nstandbys = [\"sync3\"]\n").unwrap();
        c.sql(
            "pg0",
            "ALTER SYSTEM SET synchronous_standby_names = 'sync3'",
        );
        c.sql("pg0", "SELECT pg_reload_conf()");
        c.sql("pg0", "CREATE TABLE s (id int); INSERT INTO s VALUES (1)");
        c.wait_sql("pg3", "SELECT count(*) FROM s", "1");
        // pg1 and pg2 get a commit that pg3 never acknowledged (synchronous_commit = local): it
        // may be lost, acknowledged ones may not.
        c.detach("pg3");
        c.sql(
            "pg0",
            "SET synchronous_commit = local; INSERT INTO s VALUES (2)",
        );
        c.wait_sql("pg1", "SELECT count(*) FROM s", "2");
        c.ok(&["kill", "pg0"]);
        c.reattach("pg3");

        let out = c.ok(&["failover"]);
        assert!(out.contains("promoting pg3"), "{out}");
        assert!(out.contains("asynchronous"), "{out}");
        assert_eq!(c.status()["primary"], "pg3");
        assert_eq!(c.sql("pg3", "SELECT count(*) FROM s"), "1");
        // The asynchronous standbys went past the fork point: failover says so, rejoin fixes it.
        assert!(out.contains("rejoin pg1"), "{out}");
        c.ok(&["rejoin", "pg1", "--upstream", "pg3"]);
        c.wait_sql("pg1", "SELECT count(*) FROM s", "1");
    }
);

pg_test!(
    rejoin_resumes_after_a_kill_is_idempotent_and_reclones,
    |pg: Pg| {
        let c = TestCluster::up(pg);
        c.sql("pg0", "CREATE TABLE r (id int)");
        c.wait_sql("pg1", "SELECT count(*) FROM r", "0");
        c.detach("pg1");
        c.sql("pg0", "INSERT INTO r VALUES (1)");
        c.ok(&["kill", "pg0"]);
        c.reattach("pg1");
        // pg2 and pg3 hold the row pg1 lacks: promoting pg1 discards it.
        c.ok(&["promote", "pg1", "--force"]);

        // Kill pgrepl (and only it) once pg_rewind has started: the rerun must complete.
        let journal = c.path().join(".pgrepl/lab/.rejoin-pg0.json");
        let mut child = c
            .command(&["rejoin", "pg0", "--upstream", "pg1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !journal.exists() {
            assert!(Instant::now() < deadline, "rejoin never reached pg_rewind");
            if child.try_wait().unwrap().is_some() {
                panic!("rejoin finished before it could be killed");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        child.wait().unwrap();

        let out = c.ok(&["rejoin", "pg0", "--upstream", "pg1"]);
        assert!(out.contains("rejoined"), "{out}");
        // pg_rewind outlived the killed pgrepl; the rerun finished its work, no re-clone.
        assert!(!out.contains("re-cloning"), "{out}");
        assert_streams_from(&c, "pg0", "pg1", 2);
        assert!(!journal.exists());
        c.sql("pg1", "INSERT INTO r VALUES (2)");
        c.wait_sql("pg0", "SELECT string_agg(id::text, ',') FROM r", "2");

        let out = c.ok(&["rejoin", "pg0", "--upstream", "pg1"]);
        assert!(out.contains("already"), "{out}");

        let out = c.ok(&["rejoin", "pg0", "--upstream", "pg1", "--reclone"]);
        let kept = out
            .lines()
            .find_map(|l| l.strip_prefix("the old data directory is kept in "))
            .unwrap_or_else(|| panic!("no kept directory in: {out}"));
        assert!(
            std::path::Path::new(kept).join("PG_VERSION").is_file(),
            "{kept}"
        );
        assert_streams_from(&c, "pg0", "pg1", 2);
        c.wait_sql("pg0", "SELECT string_agg(id::text, ',') FROM r", "2");
    }
);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The seconds in `... {label} X s` of a command's output.
fn seconds_after(out: &str, label: &str) -> f64 {
    let rest = out
        .split(label)
        .nth(1)
        .unwrap_or_else(|| panic!("no '{label}' in: {out}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// The issue's figures: switchover write gap seen by a reconnecting client (median of 5),
/// promote alone, rejoin alone (crashed primary with diverged WAL, by pg_rewind), and pg_rewind
/// against a re-clone at a 500 MB database. Run it on an optimized build:
/// `cargo test --release --test failover bench -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: prints figures, takes a few minutes"]
fn bench_failover_lifecycle() {
    let c = TestCluster::up(Pg::V18);
    c.sql("pg0", "CREATE TABLE w (id bigint PRIMARY KEY)");
    let writer = Writer::start(&c);
    let wait_for_writes = |n: usize| {
        while writer.acked() < n {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for_writes(100);
    let (mut client_gaps, mut windows) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let to = if i % 2 == 0 { "pg1" } else { "pg0" };
        writer.take_max_gap();
        let before = writer.acked();
        let out = c.ok(&["switchover", "--to", to]);
        wait_for_writes(before + 100);
        client_gaps.push(writer.take_max_gap().as_secs_f64());
        windows.push(seconds_after(&out, "writes were unavailable for"));
    }
    writer.finish();
    // pg1 is the primary now; alternate pg1 and pg0 through crash, promote, rejoin.
    let (mut promotes, mut rejoins) = (Vec::new(), Vec::new());
    let mut primary = "pg1";
    for _ in 0..3 {
        let target = if primary == "pg1" { "pg0" } else { "pg1" };
        c.detach(target);
        c.sql(primary, "INSERT INTO w VALUES (-1) ON CONFLICT DO NOTHING");
        c.ok(&["kill", primary]);
        c.reattach(target);
        let out = c.ok(&["promote", target]);
        promotes.push(seconds_after(&out, "promotion took"));
        let t = Instant::now();
        let out = c.ok(&["rejoin", primary, "--upstream", target]);
        rejoins.push(t.elapsed().as_secs_f64());
        assert!(out.contains("pg_rewind copied"), "{out}");
        c.sql(target, "DELETE FROM w WHERE id = -1");
        primary = target;
    }

    // pg_rewind against a re-clone at a database of about 500 MB.
    let pgbench = c.pg.bin().join("pgbench");
    let n = c.node_status(primary)["port"].as_u64().unwrap();
    let conninfo = format!(
        "host=127.0.0.1 port={n} user=postgres dbname=postgres passfile={}",
        c.path().join(".pgrepl/lab/pgpass").display()
    );
    let ok = std::process::Command::new(&pgbench)
        .args(["-i", "-s", "34", "-q", &conninfo])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A database that has been running has checkpointed since its last big change.
    c.sql(primary, "CHECKPOINT");
    let size = c.sql(primary, "SELECT pg_database_size('postgres') / 1048576");
    let target = if primary == "pg1" { "pg0" } else { "pg1" };
    let lsn = c.sql(primary, "SELECT pg_current_wal_lsn()");
    c.wait_sql(
        target,
        &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'"),
        "t",
    );
    c.detach(target);
    c.sql(
        primary,
        "UPDATE pgbench_branches SET bbalance = bbalance + 1",
    );
    c.ok(&["kill", primary]);
    c.reattach(target);
    c.ok(&["promote", target]);
    let t = Instant::now();
    c.ok(&["rejoin", primary, "--upstream", target]);
    let rewind = t.elapsed().as_secs_f64();
    let t = Instant::now();
    c.ok(&["rejoin", primary, "--upstream", target, "--reclone"]);
    let reclone = t.elapsed().as_secs_f64();

    println!("\nfailover lifecycle on PostgreSQL 18 (this machine):");
    println!(
        "  switchover write gap seen by a reconnecting client: median {:.3} s of {client_gaps:.3?} (target < 0.3 s)",
        median(client_gaps.clone())
    );
    println!(
        "  switchover write-unavailability window (pgrepl's own measure): median {:.3} s",
        median(windows)
    );
    println!(
        "  promote alone: median {:.3} s of {promotes:.3?}",
        median(promotes.clone())
    );
    println!(
        "  rejoin alone (crashed primary, diverged, pg_rewind, to streaming): median {:.3} s of {rejoins:.3?} (target < 0.7 s)",
        median(rejoins.clone())
    );
    println!(
        "  {size} MB database: rejoin by pg_rewind {rewind:.2} s, by re-clone {reclone:.2} s: pg_rewind {:.1}x faster",
        reclone / rewind
    );
}
