//! `pgrepl monitor` on real clusters (PostgreSQL 18): it runs as a child process with short
//! timings while the test kills, freezes and restarts things, and every verdict is asked of
//! PostgreSQL directly (a libpq write) or of the health endpoints' status codes.

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::common::{free_base_port, Pg, TestCluster};

/// A running `pgrepl monitor`; stopped (SIGTERM, then SIGKILL) when dropped.
struct Monitor {
    child: Option<Child>,
    out: std::path::PathBuf,
}

impl Monitor {
    fn start(c: &TestCluster, extra: &[&str]) -> Monitor {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let out = c.path().join(format!("monitor-{seq}.out"));
        let mut args = vec!["monitor", "--interval", "200ms"];
        args.extend_from_slice(extra);
        let child = c
            .command(&args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
            .spawn()
            .expect("start pgrepl monitor");
        let m = Monitor {
            child: Some(child),
            out,
        };
        m.wait_output("monitor started", Duration::from_secs(20));
        m
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait_output(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the monitor did not print {text:?} within {within:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the exit status once it stopped.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        crate::common::exit_within(
            &mut child,
            Duration::from_secs(30),
            "the monitor stops on SIGTERM",
        )
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// pg0 primary; pg1 and pg2 (sync2) standbys, under FIRST 1 (pg1, sync2): pg1 confirms
/// every commit.
fn sync_cluster(pg: Pg) -> TestCluster {
    let c = TestCluster::three_nodes(pg, "");
    let text = std::fs::read_to_string(&c.config).unwrap()
        + "\n[sync]\nstandbys = [\"pg1\", \"sync2\"]\nmethod = \"first\"\nnum = 1\n";
    std::fs::write(&c.config, text).unwrap();
    c.ok(&["up"]);
    c.sql("pg0", "CREATE TABLE t (id bigint PRIMARY KEY)");
    c
}

fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The status code of GET `path` on 127.0.0.1:`port` (HTTP/1.0 by hand: the tests have no
/// HTTP client).
fn http_status(port: u16, path: &str) -> u16 {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Each node's (/primary, /replica) status codes, on base + i.
fn health(base: u16) -> Vec<(u16, u16)> {
    (0..3)
        .map(|i| {
            (
                http_status(base + i, "/primary"),
                http_status(base + i, "/replica"),
            )
        })
        .collect()
}

fn events(c: &TestCluster) -> Vec<serde_json::Value> {
    std::fs::read_to_string(c.cluster_dir().join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn has_event(c: &TestCluster, kind: &str, code: &str) -> bool {
    events(c)
        .iter()
        .any(|e| e["kind"] == kind && e["code"] == code)
}

/// Waits until `node` answers as a standby that its upstream lists as streaming.
fn wait_streaming_standby(c: &TestCluster, node: &str, within: Duration) {
    wait_for(&format!("{node} streams as a standby"), within, || {
        let n = c.node_status(node);
        (n["role"] == "standby" && n["streaming"] == true && n["needs_rejoin"] == false)
            .then_some(())
    });
}

#[test]
fn kill_primary_fails_over_rejoins_and_health_follows() {
    let c = sync_cluster(Pg::V18);
    let base = free_base_port();
    let mut m = Monitor::start(
        &c,
        &[
            "--failover-timeout",
            "1500ms",
            "--http-base-port",
            &base.to_string(),
        ],
    );
    // Before: pg0 answers /primary, the standbys /replica.
    let before = wait_for(
        "the health endpoints answer",
        Duration::from_secs(10),
        || {
            let h = health(base);
            (h == [(200, 503), (503, 200), (503, 200)]).then_some(h)
        },
    );
    assert_eq!(before[0], (200, 503));

    let acked = c.insert_acked("t", 1, 200);
    c.ok(&["kill", "pg0"]);
    let killed = Instant::now();
    let new = wait_for("a new writable primary", Duration::from_secs(15), || {
        let w = c.writable_nodes();
        (w.len() == 1 && w[0] != "pg0").then(|| w[0].clone())
    });
    eprintln!("kill -> writable {new}: {:?}", killed.elapsed());
    assert_eq!(
        new, "pg1",
        "under FIRST 1 the synchronous standby is promoted"
    );
    // Every acknowledged row is on the one primary.
    assert_eq!(c.assert_one_primary_holding("t", &acked), "pg1");

    // The old primary comes back as a standby of the new one (the monitor rejoins it), and
    // no node but pg1 ever accepts a write.
    if c.node_status("pg0")["state"] == "stopped" {
        let _ = c.run(&["start", "pg0"]);
    }
    wait_streaming_standby(&c, "pg0", Duration::from_secs(60));
    wait_streaming_standby(&c, "pg2", Duration::from_secs(30));
    assert_eq!(c.writable_nodes(), ["pg1"]);
    assert!(
        has_event(&c, "done", "promote"),
        "the event log has the promotion:\n{}",
        m.output()
    );
    assert!(has_event(&c, "done", "rejoin"), "{}", m.output());

    // After: pg1 answers /primary, pg0 and pg2 /replica.
    wait_for(
        "the health endpoints follow the failover",
        Duration::from_secs(10),
        || (health(base) == [(503, 200), (200, 503), (503, 200)]).then_some(()),
    );

    // `pgrepl events` prints the history; `status` says the monitor runs.
    let history = c.ok(&["events"]);
    assert!(history.contains("promoted"), "{history}");
    assert!(c.ok(&["status"]).contains("monitor: running (pid"));
    assert!(m.stop().success());
    assert!(c.ok(&["status"]).contains("monitor: not running"));
}

#[test]
fn freeze_shorter_than_the_timeout_is_no_failover_longer_is() {
    let c = sync_cluster(Pg::V18);
    let m = Monitor::start(&c, &["--failover-timeout", "3s"]);
    let acked = c.insert_acked("t", 1, 50);

    // A short freeze (a VM pause): nobody takes over.
    c.ok(&["freeze", "pg0"]);
    std::thread::sleep(Duration::from_millis(1500));
    c.ok(&["thaw", "pg0"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.writable_nodes(), ["pg0"], "{}", m.output());
    assert!(!has_event(&c, "decided", "promote"), "{}", m.output());

    // A long one: the frozen primary is killed (not thawed), a standby takes over.
    c.ok(&["freeze", "pg0"]);
    let new = wait_for("a new writable primary", Duration::from_secs(20), || {
        let w = c.writable_nodes();
        (w.len() == 1 && w[0] != "pg0").then(|| w[0].clone())
    });
    assert_eq!(c.assert_one_primary_holding("t", &acked), new);
    // The thaw finds nothing to resume: the old primary never acknowledges a write again.
    let _ = c.run(&["thaw", "pg0"]);
    assert!(!c.accepts_writes("pg0"));
    if c.node_status("pg0")["state"] == "stopped" {
        let _ = c.run(&["start", "pg0"]);
    }
    wait_streaming_standby(&c, "pg0", Duration::from_secs(60));
    assert_eq!(c.writable_nodes(), [new]);
    assert!(has_event(&c, "done", "fence"), "{}", m.output());
}

#[test]
fn restarted_monitor_causes_no_failover_and_a_second_is_refused() {
    let c = sync_cluster(Pg::V18);
    let mut m = Monitor::start(&c, &["--failover-timeout", "1500ms"]);
    // A second monitor on the same cluster: one line naming the first one's pid.
    let refused = c.fails(&["monitor"]);
    let pid = m.child.as_ref().unwrap().id();
    assert!(
        refused.contains("a monitor already runs") && refused.contains(&format!("pid {pid}")),
        "{refused}"
    );
    assert_eq!(refused.trim().lines().count(), 1, "{refused}");

    assert!(m.stop().success());
    let m2 = Monitor::start(&c, &["--failover-timeout", "1500ms"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.writable_nodes(), ["pg0"], "{}", m2.output());
    assert!(!has_event(&c, "decided", "promote"), "{}", m2.output());
    assert!(has_event(&c, "observed", "monitor_stopped"));

    // A standby stopped by hand stays stopped; `down` is refused while the monitor runs.
    c.ok(&["stop", "pg2"]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(c.node_status("pg2")["state"], "stopped", "{}", m2.output());
    let e = c.fails(&["down"]);
    assert!(e.contains("a monitor runs") && e.contains("kill"), "{e}");
    assert_eq!(c.writable_nodes(), ["pg0"]);
}

/// A primary partitioned from everyone (netns): only the timeout can tell, and then the
/// standbys' walreceivers and `pg_isready` from their namespaces say nobody hears it.
#[test]
fn netns_primary_partitioned_from_everyone_fails_over_without_split_brain() {
    let test = "netns_primary_partitioned_from_everyone_fails_over_without_split_brain";
    let Some(c) = TestCluster::up_on(Pg::V18, "netns", test) else {
        return;
    };
    let m = Monitor::start(&c, &[]);
    c.ok(&["net", "partition", "pg0"]);
    let cut = Instant::now();
    let new = wait_for("a new writable primary", Duration::from_secs(30), || {
        let w = c.writable_nodes();
        (w.len() == 1 && w[0] != "pg0").then(|| w[0].clone())
    });
    eprintln!("partition -> writable {new}: {:?}", cut.elapsed());
    // Fenced (killed: it answered nobody) before the promotion.
    let ev = events(&c);
    let fenced = ev
        .iter()
        .position(|e| e["kind"] == "done" && e["code"] == "fence");
    let promoted = ev
        .iter()
        .position(|e| e["kind"] == "done" && e["code"] == "promote");
    assert!(
        fenced.is_some() && fenced < promoted,
        "the fence comes before the promotion:\n{}",
        m.output()
    );
    // Healed: the old primary never comes back as a primary; the monitor rejoins it.
    // (The monitor holds the cluster's lock while it tries to rejoin pg0: a command may have
    // to wait for it.)
    wait_for("net heal pg0", Duration::from_secs(60), || {
        c.run(&["net", "heal", "pg0"])
            .status
            .success()
            .then_some(())
    });
    assert!(!c.accepts_writes("pg0"));
    wait_streaming_standby(&c, "pg0", Duration::from_secs(90));
    assert_eq!(c.writable_nodes(), [new]);
}

/// HAProxy (Debian's package, installed when missing) started with `pgrepl haproxy-config`
/// sends a writer's connections to the primary, and to the new one after a failover.
#[test]
fn haproxy_routes_writes_to_the_new_primary_after_a_failover() {
    let test = "haproxy_routes_writes_to_the_new_primary_after_a_failover";
    let Some(haproxy) = haproxy_binary() else {
        crate::common::skipped(test, "HAProxy is not installed and could not be installed");
        return;
    };
    let c = TestCluster::three_nodes(Pg::V18, "");
    c.ok(&["up"]);
    let base = free_base_port();
    let (rw, ro) = (base + 5, base + 6);
    let _m = Monitor::start(&c, &["--http-base-port", &base.to_string()]);
    let cfg = c.ok(&[
        "haproxy-config",
        "--http-base-port",
        &base.to_string(),
        "--rw-port",
        &rw.to_string(),
        "--ro-port",
        &ro.to_string(),
    ]);
    let cfg_path = c.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let _proxy = Proxy(
        std::process::Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(std::fs::File::create(c.path().join("haproxy.out")).unwrap())
            .stderr(std::fs::File::create(c.path().join("haproxy.err")).unwrap())
            .spawn()
            .expect("start haproxy"),
    );
    let port_of = |n: &str| c.endpoint(n).1.to_string();
    let pg0 = port_of("pg0");
    let before = wait_for(
        "HAProxy routes writes to pg0",
        Duration::from_secs(20),
        || write_through(&c, rw).filter(|p| *p == pg0),
    );
    assert_eq!(before, pg0);

    c.ok(&["kill", "pg0"]);
    let after = wait_for(
        "HAProxy routes writes to the new primary",
        Duration::from_secs(30),
        || write_through(&c, rw).filter(|p| *p != pg0),
    );
    let new = c.the_writable();
    assert_eq!(after, port_of(&new), "HAProxy sends writes to {new}");
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy_binary() -> Option<&'static str> {
    const BIN: &str = "/usr/sbin/haproxy";
    if !std::path::Path::new(BIN).exists() {
        let _ = std::process::Command::new("apt-get")
            .args(["install", "-y", "-q", "haproxy"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
    }
    std::path::Path::new(BIN).exists().then_some(BIN)
}

/// A write through HAProxy's read-write port; the port of the server that took it.
fn write_through(c: &TestCluster, port: u16) -> Option<String> {
    let password = c.superuser_password();
    crate::common::safety::block_on(async move {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port)
            .user("postgres")
            .password(password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(2));
        let bound = Duration::from_secs(3);
        let (client, conn) = tokio::time::timeout(bound, cfg.connect(tokio_postgres::NoTls))
            .await
            .ok()?
            .ok()?;
        tokio::spawn(conn);
        let write = async {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS via_haproxy (x int); INSERT INTO via_haproxy VALUES (1)",
                )
                .await?;
            client
                .query_one("SELECT current_setting('port')", &[])
                .await
        };
        let r = tokio::time::timeout(bound, write).await.ok()?.ok()?;
        Some(r.get::<_, String>(0))
    })
}

/// The new primary dies right after a failover: a second failover, and under FIRST 1 no
/// acknowledged write is lost across both.
#[test]
fn new_primary_killed_right_after_a_failover_fails_over_again() {
    let c = sync_cluster(Pg::V18);
    let m = Monitor::start(&c, &["--failover-timeout", "1500ms"]);
    let mut acked = c.insert_acked("t", 1, 100);
    c.ok(&["kill", "pg0"]);
    let first = wait_for("a first new primary", Duration::from_secs(15), || {
        let w = c.writable_nodes();
        (w.len() == 1 && w[0] != "pg0").then(|| w[0].clone())
    });
    acked.extend(c.insert_acked("t", 101, 50));
    c.ok(&["kill", &first]);
    let second = wait_for("a second new primary", Duration::from_secs(20), || {
        let w = c.writable_nodes();
        (w.len() == 1 && w[0] != first).then(|| w[0].clone())
    });
    assert_eq!(c.assert_one_primary_holding("t", &acked), second);
    let promotions = events(&c)
        .iter()
        .filter(|e| e["kind"] == "done" && e["code"] == "promote")
        .count();
    assert!(promotions >= 2, "two promotions:\n{}", m.output());
}

/// `on_sync_loss = "degrade"`: when the only synchronous standby stops streaming, the
/// monitor clears synchronous_standby_names so that commits go on, and restores the file's
/// `[sync]` once the standby streams again.
#[test]
fn sync_loss_degrades_then_restores_when_the_file_says_so() {
    let c = TestCluster::three_nodes(Pg::V18, "");
    let text = std::fs::read_to_string(&c.config).unwrap()
        + "\n[sync]\nstandbys = [\"sync2\"]\n\n[monitor]\non_sync_loss = \"degrade\"\n";
    std::fs::write(&c.config, text).unwrap();
    c.ok(&["up"]);
    let names = || c.sql("pg0", "SHOW synchronous_standby_names");
    let set = names();
    assert!(set.contains("sync2"), "{set}");
    let m = Monitor::start(&c, &["--failover-timeout", "1500ms"]);
    c.detach("pg2");
    wait_for(
        "synchronous replication degraded",
        Duration::from_secs(20),
        || names().is_empty().then_some(()),
    );
    // A commit no longer waits for the missing standby.
    c.sql(
        "pg0",
        "CREATE TABLE after_degrade (x int); INSERT INTO after_degrade VALUES (1)",
    );
    assert!(has_event(&c, "done", "degrade_sync"), "{}", m.output());
    c.reattach("pg2");
    wait_for(
        "synchronous replication restored",
        Duration::from_secs(30),
        || (names() == set).then_some(()),
    );
}

/// A promotion the cluster file missed (a monitor stopped between the promotion and saving
/// the file, or a promotion outside pgrepl): a monitor started afterwards records it and
/// brings the old primary back as a standby.
#[test]
fn a_monitor_records_a_promotion_the_file_missed() {
    let c = TestCluster::three_nodes(Pg::V18, "");
    c.ok(&["up"]);
    c.ok(&["kill", "pg0"]);
    c.sql("pg1", "SELECT pg_promote()");
    wait_for("pg1 writable", Duration::from_secs(10), || {
        c.accepts_writes("pg1").then_some(())
    });
    assert_eq!(c.spec().root().name, "pg0");
    let m = Monitor::start(&c, &[]);
    wait_for("the file records pg1", Duration::from_secs(10), || {
        (c.spec().root().name == "pg1").then_some(())
    });
    assert!(has_event(&c, "done", "record_primary"), "{}", m.output());
    wait_streaming_standby(&c, "pg0", Duration::from_secs(60));
    // (It may cascade from pg0 once pg0 is back: the decision leaves a standby that streams
    // on the primary's history alone.)
    wait_streaming_standby(&c, "pg2", Duration::from_secs(30));
    assert_eq!(c.writable_nodes(), ["pg1"]);
}

/// The primary cut off from the host alone (the monitor, pgrepl, clients here) still streams
/// to its standbys: they vouch for it, and the monitor does not fail over.
#[test]
fn netns_primary_partitioned_from_the_monitor_only_is_no_failover() {
    let test = "netns_primary_partitioned_from_the_monitor_only_is_no_failover";
    let Some(c) = TestCluster::up_on(Pg::V18, "netns", test) else {
        return;
    };
    let m = Monitor::start(&c, &[]);
    c.ok(&["net", "partition", "pg0", "--from", "host"]);
    let faults = c.node_status("pg0")["faults"].to_string();
    assert!(faults.contains("host"), "{faults}");
    // Five failover timeouts (2 s by default): the standbys keep streaming from pg0.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        assert!(c.writable_nodes().is_empty(), "{}", m.output());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        c.sql("pg1", "SELECT status FROM pg_stat_wal_receiver"),
        "streaming"
    );
    assert!(
        !events(&c).iter().any(|e| e["code"] == "promote"),
        "{}",
        m.output()
    );
    c.ok(&["net", "heal", "pg0"]);
    assert_eq!(c.writable_nodes(), ["pg0"]);
}

/// Five kills of whichever node is the primary, under FIRST 1: each time exactly one node
/// takes writes, every acknowledged row is on it, and the killed node comes back as a
/// standby before the next kill.
#[test]
fn five_kills_under_first_1_lose_no_acknowledged_write() {
    let c = sync_cluster(Pg::V18);
    let m = Monitor::start(&c, &["--failover-timeout", "1500ms"]);
    let mut acked = Vec::new();
    let mut primary = "pg0".to_string();
    for run in 0..5i64 {
        acked.extend(c.insert_acked("t", 1 + run * 1000, 100));
        c.ok(&["kill", &primary]);
        let old = primary.clone();
        primary = wait_for("a new writable primary", Duration::from_secs(20), || {
            let w = c.writable_nodes();
            (w.len() == 1 && w[0] != old).then(|| w[0].clone())
        });
        assert_eq!(
            c.assert_one_primary_holding("t", &acked),
            primary,
            "run {run}:\n{}",
            m.output()
        );
        if c.node_status(&old)["state"] == "stopped" {
            let _ = c.run(&["start", &old]);
        }
        for n in ["pg0", "pg1", "pg2"].iter().filter(|n| **n != primary) {
            wait_streaming_standby(&c, n, Duration::from_secs(60));
        }
    }
    assert_eq!(c.writable_nodes(), [primary]);
}
