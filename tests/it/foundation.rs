//! The foundation: the lab comes up, status tells the truth, commands are idempotent, bad
//! input changes nothing.

use crate::common::{Pg, TestCluster};
use serde_json::Value;

pg_test!(lab_comes_up_and_replicates, |pg: Pg| {
    let c = TestCluster::up(pg);
    let s = c.status();
    assert_eq!(s["primary"], "pg0");
    for n in s["nodes"].as_array().unwrap() {
        assert_eq!(n["state"], "running", "{n}");
        if n["name"] == "pg0" {
            assert_eq!(n["role"], "primary");
        } else {
            assert_eq!(n["role"], "standby", "{n}");
            assert_eq!(n["upstream"], "pg0", "{n}");
        }
    }
    c.sql(
        "pg0",
        "CREATE TABLE lab (id int PRIMARY KEY, note text); INSERT INTO lab VALUES (1, 'from pg0')",
    );
    for node in ["pg1", "pg2", "pg3"] {
        c.wait_sql(node, "SELECT note FROM lab WHERE id = 1", "from pg0");
    }
    // The server version is the one asked for.
    let v = c.sql("pg2", "SHOW server_version_num");
    assert!(v.starts_with(&pg.major().to_string()), "{v}");
    // Data checksums are on everywhere (pg_rewind needs them).
    assert_eq!(c.sql("pg3", "SHOW data_checksums"), "on");
});

pg_test!(status_fields_for_primary_standby_and_stopped, |pg: Pg| {
    let c = TestCluster::up(pg);
    c.ok(&["stop", "pg3"]);
    let s = c.status();
    let node = |name: &str| -> Value {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()
            .clone()
    };

    let p = node("pg0");
    assert_eq!(p["port"], c.base_port);
    assert_eq!(p["timeline"], 1);
    assert!(p["lsn"].as_str().unwrap().contains('/'));
    assert_eq!(p["upstream"], Value::Null);
    assert_eq!(p["sync_state"], Value::Null);

    let sb = node("pg2");
    assert_eq!(sb["role"], "standby");
    assert_eq!(sb["timeline"], 1);
    assert_eq!(sb["upstream"], "pg0");
    assert_eq!(sb["slot"], "pg2_slot");
    assert_eq!(sb["application_name"], "sync2");
    assert_eq!(sb["sync_state"], "async");
    assert!(sb["lag_bytes"].is_u64(), "{sb}");

    let st = node("pg3");
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["role"], Value::Null);
    assert_eq!(st["upstream"], Value::Null);
    assert_eq!(st["lag_bytes"], Value::Null);

    // The human table has a row per node.
    let table = c.ok(&["status"]);
    for n in ["pg0", "pg1", "pg2", "pg3"] {
        assert!(table.contains(n), "{table}");
    }
    assert!(table.contains("stopped"), "{table}");
});

pg_test!(up_twice_is_a_no_op, |pg: Pg| {
    let c = TestCluster::up(pg);
    let pid_before = std::fs::read_to_string(c.data_dir("pg1").join("postmaster.pid")).unwrap();
    let out = c.ok(&["up"]);
    assert!(out.contains("already up"), "{out}");
    let pid_after = std::fs::read_to_string(c.data_dir("pg1").join("postmaster.pid")).unwrap();
    assert_eq!(pid_before, pid_after, "up restarted a node");
    // Each step on its own is idempotent too.
    assert!(c.ok(&["primary", "init", "pg0"]).contains("already"));
    assert!(c
        .ok(&["standby", "add", "pg1", "--slot", "pg1_slot"])
        .contains("already streaming"));
    assert!(c.ok(&["start", "pg2"]).contains("already running"));
    c.ok(&["stop", "pg2"]);
    assert!(c.ok(&["stop", "pg2"]).contains("already stopped"));
});

pg_test!(bad_input_is_refused_and_changes_nothing, |pg: Pg| {
    let c = TestCluster::up(pg);
    let spec_before = std::fs::read_to_string(&c.config).unwrap();

    let e = c.fails(&["stop", "pg0", "pg9"]);
    assert!(e.contains("no node named 'pg9'"), "{e}");
    assert_eq!(
        c.node_status("pg0")["state"],
        "running",
        "an unknown node in the list must stop nothing"
    );

    let e = c.fails(&["standby", "add", "pg5", "--slot", "Bad-Slot"]);
    assert!(
        e.contains("invalid replication slot name 'Bad-Slot'"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&c.config).unwrap(), spec_before);

    let e = c.fails(&["sql", "pg0", "SELEC 1"]);
    assert!(e.contains("syntax error"), "{e}");
    assert_eq!(e.lines().count(), 1, "one line: {e}");
});

pg_test!(invalid_spec_taken_port_and_missing_postgres, |pg: Pg| {
    let c = TestCluster::new(pg);
    let spec = std::fs::read_to_string(&c.config).unwrap();

    std::fs::write(
        &c.config,
        spec.replace(
            "upstream = \"pg0\"\nslot = \"pg1_slot\"",
            "upstream = \"pg7\"\nslot = \"pg1_slot\"",
        ),
    )
    .unwrap();
    let e = c.fails(&["up"]);
    assert!(e.contains("unknown upstream 'pg7'"), "{e}");
    assert!(
        !c.data_dir("pg0").exists(),
        "an invalid spec must create nothing"
    );
    std::fs::write(&c.config, &spec).unwrap();

    // Something else listens on pg2's port.
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", c.base_port + 2)).unwrap();
    let e = c.fails(&["up"]);
    assert!(
        e.contains(&format!(
            "port {} of node 'pg2' is already in use",
            c.base_port + 2
        )),
        "{e}"
    );
    assert!(
        !c.data_dir("pg0").exists(),
        "a taken port must be found before anything starts"
    );

    let out = c
        .command(&["up"])
        .arg("--pg-bin")
        .arg(c.path().join("nowhere"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(e.contains("no PostgreSQL"), "{e}");
    assert!(!c.data_dir("pg0").exists());
});

#[test]
fn kill_crashes_and_start_recovers() {
    let c = TestCluster::up(Pg::V18);
    c.sql("pg0", "CREATE TABLE k (id int); INSERT INTO k VALUES (1)");
    let out = c.ok(&["kill", "pg0"]);
    assert!(out.contains("killed"), "{out}");
    assert_eq!(c.node_status("pg0")["state"], "stopped");
    c.ok(&["start", "pg0"]);
    assert_eq!(c.sql("pg0", "SELECT count(*) FROM k"), "1");
}

#[test]
fn secrets_stay_out_of_argv_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let c = TestCluster::up(Pg::V18);
    let passfile = c.path().join(".pgrepl/lab/pgpass");
    let mode = std::fs::metadata(&passfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&passfile).unwrap();
    let password = text
        .lines()
        .find(|l| l.contains(":repluser:"))
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    // Not in the spec, not in any server log, not in the settings.
    assert!(!std::fs::read_to_string(&c.config)
        .unwrap()
        .contains(password));
    for n in ["pg0", "pg1"] {
        let log =
            std::fs::read_to_string(c.path().join(format!(".pgrepl/lab/log/{n}.log"))).unwrap();
        assert!(!log.contains(password), "password in {n}'s log");
        let conf = std::fs::read_to_string(c.data_dir(n).join("pgrepl.node.conf")).unwrap();
        assert!(!conf.contains(password));
    }
    let conninfo = c.sql("pg1", "SHOW primary_conninfo");
    assert!(conninfo.contains("passfile="), "{conninfo}");
    assert!(!conninfo.contains(password));
}

#[test]
fn down_purge_needs_confirmation() {
    let c = TestCluster::up(Pg::V18);
    let e = c.fails(&["down", "--purge"]);
    assert!(e.contains("--yes"), "{e}");
    assert!(
        c.data_dir("pg0").exists(),
        "nothing deleted without confirmation"
    );
    c.ok(&["down", "--purge", "--yes"]);
    assert!(!c.data_dir("pg0").exists());
}

/// As root, PostgreSQL runs as an unprivileged OS user: a missing user and a cluster
/// directory that user cannot reach are clear errors that change nothing.
#[test]
fn root_runs_postgres_as_an_os_user_that_must_exist_and_reach_the_data() {
    if !nix::unistd::Uid::effective().is_root() {
        return; // these paths exist only for root
    }
    let c = TestCluster::new(Pg::V18);
    let e = c.fails(&["up", "--os-user", "no_such_user_here"]);
    assert!(
        e.contains("OS user 'no_such_user_here' does not exist"),
        "{e}"
    );
    assert!(!c.data_dir("pg0").exists());

    // A spec inside a directory only root can enter (like /root).
    use std::os::unix::fs::PermissionsExt;
    let hidden = c.path().join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = hidden.join("pgrepl.toml");
    std::fs::copy(&c.config, &config).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgrepl"))
            .arg("-c")
            .arg(&config)
            .arg("--pg-bin")
            .arg(c.pg.bin())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["up"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(e.contains("cannot reach") && e.contains("data_dir"), "{e}");
    assert!(
        !hidden.join(".pgrepl/lab/pg0").exists(),
        "nothing may be created"
    );

    // The suggested fix works: data_dir somewhere the OS user can reach.
    let data = c.path().join("reachable");
    let spec = std::fs::read_to_string(&config).unwrap().replace(
        "replication_user = \"repluser\"",
        &format!(
            "replication_user = \"repluser\"\ndata_dir = \"{}\"",
            data.display()
        ),
    );
    std::fs::write(&config, spec).unwrap();
    let out = run(&["up"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("pg3/PG_VERSION").exists());
    let out = run(&["down"]);
    assert!(out.status.success());
}

#[test]
fn verification_scenario_commands() {
    let c = TestCluster::up(Pg::V18);

    // A new node is cloned through its slot, streams (here in cascade from pg1), and is
    // added to the cluster file.
    let out = c.ok(&[
        "standby",
        "add",
        "pg4",
        "--slot",
        "pg4_slot",
        "--upstream",
        "pg1",
    ]);
    assert!(out.contains("streaming"), "{out}");
    let pg4 = c.node_status("pg4");
    assert_eq!(pg4["upstream"], "pg1");
    assert_eq!(pg4["role"], "standby");
    let spec = std::fs::read_to_string(&c.config).unwrap();
    assert!(
        spec.contains("name = \"pg4\"") && spec.contains("slot = \"pg4_slot\""),
        "{spec}"
    );

    // WAL load reaches every standby, including the cascaded one.
    let report: serde_json::Value =
        serde_json::from_str(&c.ok(&["load", "wal", "--mb", "4", "--json"])).unwrap();
    assert!(
        report["wal_bytes"].as_u64().unwrap() >= 4 * 1024 * 1024,
        "{report}"
    );
    for s in report["standbys"].as_array().unwrap() {
        assert!(s["replay_ms"].is_number(), "{s} did not replay");
    }

    let log = c.ok(&["logs", "pg0"]);
    assert!(
        log.contains("database system is ready to accept connections"),
        "{log}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["sql", "pg2", "SELECT 1 AS one, NULL AS nothing", "--json"]))
            .unwrap();
    assert_eq!(json["rows"][0]["one"], "1");
    assert_eq!(json["rows"][0]["nothing"], serde_json::Value::Null);

    // A statement that outlives --timeout is cancelled and says what it waited on.
    let started = std::time::Instant::now();
    let e = c.fails(&["sql", "pg0", "SELECT pg_sleep(30)", "--timeout", "1s"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert!(
        e.contains("did not finish within 1s") && e.contains("PgSleep"),
        "{e}"
    );
    assert!(e.contains("canceling statement due to user request"), "{e}");
}
