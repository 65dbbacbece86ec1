//! Safety at the edges: a frozen node, values that would reach configuration files, a
//! data_dir that is not pgrepl's, the cluster lock, an unbounded load, and secrets in logs.
//! One small cluster per test, on PostgreSQL 18; each asserts a property, not a message.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{node, Pg, TestCluster};

/// A cluster of `nodes` nodes (pg0 the primary, the others streaming from it), written over
/// the lab's file; `cluster_extra` goes into the [cluster] section, `node_extra(i)` into
/// node i's.
fn small(nodes: usize, cluster_extra: &str, node_extra: impl Fn(usize) -> String) -> TestCluster {
    let c = TestCluster::new(Pg::V18);
    let base = c.base_port;
    let mut spec = format!("[cluster]\nname = \"lab\"\n{cluster_extra}\n");
    for i in 0..nodes {
        spec += &format!("\n[[node]]\nname = \"pg{i}\"\nport = {}\n", base + i as u16);
        if i > 0 {
            spec += &format!("upstream = \"pg0\"\nslot = \"pg{i}_slot\"\n");
        }
        spec += &node_extra(i);
    }
    std::fs::write(&c.config, spec).unwrap();
    c
}

fn no_extra(_: usize) -> String {
    String::new()
}

/// A line for node `n` only.
fn on_node(n: usize, line: &str) -> impl Fn(usize) -> String + '_ {
    move |i| {
        if i == n {
            format!("{line}\n")
        } else {
            String::new()
        }
    }
}

/// Points the cluster file at `dir` for the cluster's data.
fn set_data_dir(c: &TestCluster, dir: &Path) {
    let spec = std::fs::read_to_string(&c.config).unwrap();
    let mut lines: Vec<String> = spec
        .lines()
        .filter(|l| !l.starts_with("data_dir"))
        .map(str::to_string)
        .collect();
    let at = lines.iter().position(|l| l.starts_with("name = ")).unwrap();
    lines.insert(at + 1, format!("data_dir = \"{}\"", dir.display()));
    std::fs::write(&c.config, lines.join("\n") + "\n").unwrap();
}

/// A node's port (pg0 has the base port, pg1 the next, ...).
fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn postmaster_pid(data: &Path) -> i32 {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Keeps a postmaster and its children frozen (SIGSTOP) until dropped, also when the test
/// fails.
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> Self {
        pgrepl_core::runtime::signals::freeze(pid, true);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        pgrepl_core::runtime::signals::freeze(self.0, false);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// #3: a frozen primary is a row in status, and failover neither hangs on it nor leaves it
/// able to write once it thaws.
#[test]
fn a_frozen_primary_is_a_status_row_and_failover_fences_it() {
    let c = small(2, "", no_extra);
    c.ok(&["up"]);
    let frozen = Frozen::new(postmaster_pid(&c.data_dir("pg0")));

    let t = Instant::now();
    let status: serde_json::Value = serde_json::from_str(&c.ok(&["status", "--json"])).unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "status took {:?}",
        t.elapsed()
    );
    assert_eq!(node(&status, "pg0")["state"], "not answering", "{status}");
    assert_eq!(node(&status, "pg1")["state"], "running", "{status}");
    assert_eq!(node(&status, "pg1")["role"], "standby", "{status}");

    let t = Instant::now();
    c.ok(&["failover"]);
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "failover took {:?}",
        t.elapsed()
    );
    drop(frozen);

    assert!(c.accepts_writes("pg1"), "pg1 is the new primary");
    assert!(
        !c.accepts_writes("pg0"),
        "the thawed old primary must not accept writes"
    );
}

/// #7: a value that would inject settings is refused with one line and changes nothing; a
/// path with a quote in it is quoted wherever it is written and works.
#[test]
fn injected_settings_are_refused_and_a_quote_survives() {
    let c = small(2, "", no_extra);
    set_data_dir(&c, &c.path().join("it's here"));
    c.ok(&["up"]);
    // pg1 found its upstream through a primary_conninfo whose passfile path holds a quote.
    c.ok(&[
        "sql",
        "pg0",
        "CREATE TABLE quoted (x int); INSERT INTO quoted VALUES (7)",
    ]);
    c.wait_sql("pg1", "SELECT x FROM quoted", "7");

    let spec_before = std::fs::read_to_string(&c.config).unwrap();
    let injection = "a'\nwork_mem=77MB\n#";
    let out = c.run(&[
        "standby",
        "add",
        "pg2",
        "--slot",
        "pg2_slot",
        "--application-name",
        injection,
    ]);
    assert!(!out.status.success());
    assert_eq!(stderr_of(&out).lines().count(), 1, "{}", stderr_of(&out));
    assert_eq!(std::fs::read_to_string(&c.config).unwrap(), spec_before);
    assert!(!c.data_dir("pg2").exists() && !c.cluster_dir().join(".pg2.clone").exists());

    // The same value in the cluster file: every command refuses the file.
    let injected = spec_before.replace(
        "slot = \"pg1_slot\"\n",
        "slot = \"pg1_slot\"\napplication_name = \"a'\\nwork_mem=77MB\\n#\"\n",
    );
    assert_ne!(injected, spec_before);
    let node_conf = c.data_dir("pg1").join("pgrepl.node.conf");
    let conf_before = std::fs::read_to_string(&node_conf).unwrap();
    std::fs::write(&c.config, &injected).unwrap();
    for args in [
        &["up"][..],
        &["standby", "follow", "pg1", "--upstream", "pg0"],
    ] {
        let out = c.run(args);
        assert!(!out.status.success(), "{args:?} accepted the injection");
        assert_eq!(stderr_of(&out).lines().count(), 1, "{}", stderr_of(&out));
    }
    assert_eq!(std::fs::read_to_string(&node_conf).unwrap(), conf_before);
    std::fs::write(&c.config, &spec_before).unwrap();
    assert_ne!(c.sql("pg1", "SHOW work_mem"), "77MB");
}

/// #8: pgrepl takes over only an empty directory, never changes one it did not create, and
/// `down --purge` deletes only what it created.
#[test]
fn data_dir_must_be_empty_or_pgrepls_and_purge_keeps_foreign_files() {
    let c = small(1, "", no_extra);

    // A directory with someone's files in it.
    let occupied = c.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::set_permissions(&occupied, std::fs::Permissions::from_mode(0o751)).unwrap();
    std::fs::write(occupied.join("thesis.tex"), "years of work").unwrap();
    set_data_dir(&c, &occupied);
    let out = c.run(&["up"]);
    assert!(!out.status.success());
    assert_eq!(stderr_of(&out).lines().count(), 1, "{}", stderr_of(&out));
    let meta = std::fs::metadata(&occupied).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o751, "mode untouched");
    assert_eq!(
        meta.uid(),
        nix::unistd::Uid::effective().as_raw(),
        "owner untouched"
    );
    let entries: Vec<_> = std::fs::read_dir(&occupied).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1, "nothing added to {}", occupied.display());
    assert_eq!(
        std::fs::read_to_string(occupied.join("thesis.tex")).unwrap(),
        "years of work"
    );
    for args in [&["down", "--purge", "--yes"][..], &["down"]] {
        assert!(!c.run(args).status.success());
    }
    assert!(occupied.join("thesis.tex").is_file());

    // An empty directory is taken over as it is.
    let empty = c.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).unwrap();
    set_data_dir(&c, &empty);
    c.ok(&["up"]);
    assert!(empty.join("pg0/PG_VERSION").is_file());
    let meta = std::fs::metadata(&empty).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o755, "mode untouched");
    assert_eq!(
        meta.uid(),
        nix::unistd::Uid::effective().as_raw(),
        "owner untouched"
    );

    // Purge deletes what pgrepl made and nothing else.
    std::fs::write(empty.join("notes.txt"), "mine").unwrap();
    c.ok(&["down", "--purge", "--yes"]);
    assert_eq!(
        std::fs::read_to_string(empty.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(!empty.join("pg0").exists() && !empty.join("pgpass").exists());
    let left: Vec<String> = std::fs::read_dir(&empty)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(left, ["notes.txt"]);
}

/// #10: a topology command run while another holds the cluster's lock refuses, and once the
/// lock is free it works from the cluster file as the other command left it.
#[test]
fn a_command_never_works_from_a_cluster_file_read_before_the_lock() {
    let c = small(3, "", on_node(2, "application_name = \"sync2\""));
    c.ok(&["up"]);
    let lock = std::fs::File::create(c.cluster_dir().join(".lock")).unwrap();
    lock.lock().unwrap();
    // What the other command saves while it holds the lock.
    let edited = std::fs::read_to_string(&c.config).unwrap() + "\n[sync]\nstandbys = [\"sync2\"]\n";
    std::fs::write(&c.config, &edited).unwrap();

    let out = c.run(&["switchover", "--to", "pg1"]);
    if out.status.success() {
        let saved = std::fs::read_to_string(&c.config).unwrap();
        assert!(saved.contains("[sync]"), "a stale view was saved:\n{saved}");
    } else {
        assert!(
            stderr_of(&out).contains("another pgrepl command"),
            "{}",
            stderr_of(&out)
        );
        assert_eq!(std::fs::read_to_string(&c.config).unwrap(), edited);
        assert!(c.accepts_writes("pg0"), "nothing changed");
        drop(lock);
        c.ok(&["switchover", "--to", "pg1"]);
    }
    let saved = std::fs::read_to_string(&c.config).unwrap();
    assert!(saved.contains("[sync]"), "a stale view was saved:\n{saved}");
    assert!(c.accepts_writes("pg1"));
    // The switchover carried the [sync] it read under the lock over to the new primary.
    assert!(
        c.sql("pg1", "SHOW synchronous_standby_names")
            .contains("sync2"),
        "{}",
        c.sql("pg1", "SHOW synchronous_standby_names")
    );
}

/// #11: `load wal` refuses what the disk cannot hold, stops on Ctrl-C, and leaves no table.
#[test]
fn load_wal_is_bounded_cancellable_and_leaves_nothing() {
    let c = small(2, "", no_extra);
    c.ok(&["up"]);
    let gone = "SELECT to_regclass('pgrepl_wal_load') IS NULL";
    let lsn = || c.sql("pg0", "SELECT pg_current_wal_lsn() - '0/0'");

    let before: u64 = lsn().parse().unwrap();
    let t = Instant::now();
    let out = c.run(&["load", "wal", "--mb", "100000000"]);
    assert!(!out.status.success());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(stderr_of(&out).lines().count(), 1, "{}", stderr_of(&out));
    let after: u64 = lsn().parse().unwrap();
    assert!(after - before < 1024 * 1024, "a refused load wrote WAL");

    for _ in 0..2 {
        c.ok(&["load", "wal", "--mb", "2"]);
        assert_eq!(c.sql("pg0", gone), "t", "the load table is left behind");
    }

    // Ctrl-C while it writes: it stops within a batch, and drops its table.
    let mut child = c
        .command(&["load", "wal", "--mb", "2000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.sql("pg0", gone) == "t" {
        assert!(Instant::now() < deadline, "the load never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("load wal did not stop on Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    assert_eq!(
        c.sql("pg0", gone),
        "t",
        "an interrupted load left its table"
    );
}

/// #12: no SCRAM verifier in any log at -vv; a node on 0.0.0.0 works but is warned about;
/// zero intervals and run counts are refused.
#[test]
fn verbose_logs_hold_no_verifier_and_zero_is_refused() {
    let c = small(2, "", on_node(0, "host = \"0.0.0.0\""));
    let out = c.run(&["-vv", "up"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), stderr_of(&out));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("SCRAM-SHA-256$") && !stderr.contains("SCRAM-SHA-256$"));
    for n in ["pg0", "pg1"] {
        let log = std::fs::read_to_string(c.cluster_dir().join(format!("log/{n}.log"))).unwrap();
        assert!(!log.contains("SCRAM-SHA-256$"), "verifier in {n}'s log");
    }
    assert!(stderr.contains("every interface"), "{stderr}");
    assert_eq!(c.node_status("pg1")["upstream"], "pg0");
    c.ok(&[
        "sql",
        "pg0",
        "CREATE TABLE reached (x int); INSERT INTO reached VALUES (1)",
    ]);
    c.wait_sql("pg1", "SELECT x FROM reached", "1");

    for args in [
        &["status", "--watch", "--interval", "0s"][..],
        &["bench", "up", "--runs", "0"],
    ] {
        let t = Instant::now();
        let out = c.run(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(t.elapsed() < Duration::from_secs(5), "{args:?} ran");
    }
}
