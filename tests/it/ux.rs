//! pgrepl feels like a PostgreSQL tool: it finds its cluster file from any folder, takes
//! its ports from a flag or the environment, passes arguments through to psql, prints
//! command tags, says where writes go, and tells scripts what it did in JSON.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{free_base_port, node, Pg, TestCluster};
use serde_json::{json, Value};

/// pgrepl as a user runs it: no -c, from `dir`, with none of pgrepl's variables set.
fn bare(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgrepl"));
    cmd.args(args)
        .current_dir(dir)
        .env("PGREPL_PG_BIN", Pg::V18.bin())
        .env_remove("PGREPL_CONFIG")
        .env_remove("PGREPL_BASE_PORT");
    cmd
}

fn stdout_of(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn stderr_of_failure(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn temp_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix("pgrepl-ux-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn lsn(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("no LSN: {v}"));
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

#[test]
fn getting_started_from_any_folder() {
    let dir = temp_dir();
    let base = free_base_port();
    // The harness's cluster, for its teardown; the file does not exist yet.
    let c = TestCluster {
        pg: Pg::V18,
        config: dir.path().join("pgrepl.toml"),
        base_port: base,
        dir,
        runtime: "local",
        name: "lab".into(),
    };
    let here = c.path().to_path_buf();
    let up = json(&stdout_of(
        &bare(&here, &["up", "--base-port", &base.to_string(), "--json"])
            .output()
            .unwrap(),
    ));
    assert_eq!(up["command"], "up");
    assert_eq!(up["changed"], true);
    assert!(up["took_ms"].as_u64().unwrap() > 0, "{up}");
    assert!(up["notes"][0].as_str().unwrap().contains("wrote"), "{up}");
    assert_eq!(node(&up, "pg0")["role"], "primary");
    for n in ["pg1", "pg2", "pg3"] {
        assert_eq!(node(&up, n)["role"], "standby", "{up}");
        assert_eq!(node(&up, n)["streaming"], true, "{up}");
    }
    let spec = std::fs::read_to_string(&c.config).unwrap();
    assert!(spec.contains(&format!("port = {}", base + 3)), "{spec}");

    // From a folder below the cluster file, as git finds its repository.
    let deep = here.join("app/src");
    std::fs::create_dir_all(&deep).unwrap();
    let s = json(&stdout_of(
        &bare(&deep, &["status", "-o", "json"]).output().unwrap(),
    ));
    assert_eq!(node(&s, "pg0")["port"], base);

    // From elsewhere: PGREPL_CONFIG names it; without it, the error says where pgrepl looked.
    let elsewhere = temp_dir();
    let s = json(&stdout_of(
        &bare(elsewhere.path(), &["status", "--json"])
            .env("PGREPL_CONFIG", &c.config)
            .output()
            .unwrap(),
    ));
    assert_eq!(s["primary"], "pg0");
    let e = stderr_of_failure(&bare(elsewhere.path(), &["status"]).output().unwrap());
    assert!(
        e.contains(&elsewhere.path().display().to_string()) && e.contains("any folder above"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");

    // --base-port is for a new cluster file: an existing one keeps its ports.
    let e = stderr_of_failure(
        &bare(&deep, &["up", "--base-port", &(base + 100).to_string()])
            .output()
            .unwrap(),
    );
    assert!(e.contains("--base-port"), "{e}");
    assert_eq!(std::fs::read_to_string(&c.config).unwrap(), spec);

    // PGREPL_BASE_PORT when init writes a file.
    let other = free_base_port();
    stdout_of(
        &bare(elsewhere.path(), &["init", "--name", "other"])
            .env("PGREPL_BASE_PORT", other.to_string())
            .output()
            .unwrap(),
    );
    let written = std::fs::read_to_string(elsewhere.path().join("pgrepl.toml")).unwrap();
    assert!(written.contains(&format!("port = {other}")), "{written}");
    // Nodes of a file that were never built are "not created", with the command that builds
    // them; not crashed, not "needs rejoin".
    let s = json(&stdout_of(
        &bare(elsewhere.path(), &["status", "--json"])
            .output()
            .unwrap(),
    ));
    for n in ["pg0", "pg1"] {
        let n = node(&s, n);
        assert_eq!(
            (&n["created"], &n["needs_rejoin"]),
            (&json!(false), &json!(false)),
            "{n}"
        );
        assert!(n["note"].as_str().unwrap().contains("`pgrepl up`"), "{n}");
    }
    let table = stdout_of(&bare(elsewhere.path(), &["status"]).output().unwrap());
    assert!(
        table.contains("not created") && !table.contains("rejoin"),
        "{table}"
    );
    assert!(table.contains("`pgrepl up` builds it"), "{table}");

    // `ps` tells this cluster's processes from another's: cluster_name is cluster/node.
    let pid = std::fs::read_to_string(c.data_dir("pg1").join("postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim();
    let ps = Command::new("ps")
        .args(["-o", "args=", "--ppid", pid])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        ps.lines().any(|l| l.starts_with("postgres: lab/pg1: ")),
        "{ps}"
    );
}

// On 15 too: pg_waldump's messages and psql differ between versions.
pg_test!(the_lab_as_psql_users_know_it, |pg: Pg| {
    let c = TestCluster::up(pg);

    // psql's own arguments after `--`.
    assert_eq!(
        c.ok(&["psql", "pg0", "--", "-At", "-c", "SELECT 40 + 2"])
            .trim(),
        "42"
    );
    // Command tags as psql prints them; rows as psql -At.
    assert_eq!(
        c.ok(&[
            "sql",
            "pg0",
            "CREATE TABLE ux (id int); INSERT INTO ux VALUES (1), (2); SELECT count(*) FROM ux; UPDATE ux SET id = id + 10",
        ]),
        "CREATE TABLE\nINSERT 0 2\n2\nUPDATE 2\n"
    );
    // A write on a standby: refused by PostgreSQL, with where writes go (once the table
    // has reached it: before, the error is that it does not exist).
    c.wait_sql("pg1", "SELECT count(*) FROM ux", "2");
    let e = c.fails(&["sql", "pg1", "INSERT INTO ux VALUES (3)"]);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("read-only transaction"), "{e}");
    assert!(e.contains("writes go to the primary, pg0"), "{e}");

    // The log's last lines.
    assert_eq!(c.ok(&["logs", "pg0", "--tail", "5"]).lines().count(), 5);
    assert!(c.ok(&["logs", "pg0"]).lines().count() <= 50);

    // Status: the default table fits 80 columns; wide, JSON and YAML say the same.
    let table = c.ok(&["status"]);
    assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");
    assert!(
        table.contains("HOST:PORT") && table.contains("streaming"),
        "{table}"
    );
    assert!(c.ok(&["status", "-o", "wide"]).contains("APP NAME"));
    let s = json(&c.ok(&["status", "-o", "json"]));
    let y: Value = serde_yaml_ng::from_str(&c.ok(&["status", "-o", "yaml"])).unwrap();
    assert_eq!(y["primary"], s["primary"]);
    assert_eq!(y["nodes"][2]["application_name"], "sync2");

    // Node names for synchronous standbys: mapped to their application names, and said so.
    let r = json(&c.ok(&["sync", "enable", "--standbys", "pg2,pg3", "--json"]));
    assert_eq!(r["command"], "sync enable");
    assert_eq!(r["changed"], true);
    assert_eq!(r["standby_names"], r#"FIRST 1 ("sync2", "sync3")"#);
    assert!(
        r["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("pg2's application name is sync2"),
        "{r}"
    );
    assert_eq!(node(&r, "pg2")["sync_state"], "sync", "{r}");
    assert_eq!(
        c.sql(
            "pg0",
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'sync2'"
        ),
        "sync"
    );
    let r = json(&c.ok(&["sync", "disable", "--json"]));
    assert_eq!(
        (&r["command"], &r["changed"]),
        (&"sync disable".into(), &true.into())
    );
    assert_eq!(c.sql("pg0", "SHOW synchronous_standby_names"), "");

    // Every standby stopped under async replication: commits are acknowledged with no copy.
    let reached: Vec<u64> = ["pg1", "pg2", "pg3"]
        .iter()
        .map(|n| lsn(&c.node_status(n)["lsn"]))
        .collect();
    let r = json(&c.ok(&["stop", "pg1", "pg2", "pg3", "--json"]));
    assert_eq!(
        (&r["command"], &r["changed"]),
        (&"stop".into(), &true.into())
    );
    for (n, before) in ["pg1", "pg2", "pg3"].iter().zip(reached) {
        let n = node(&r, n);
        assert_eq!(
            (&n["outcome"], &n["state"]),
            (&"stopped".into(), &"stopped".into())
        );
        assert!(n["took_ms"].is_u64(), "{n}");
        // A stopped node shows the end of the WAL it had reached, not an older checkpoint.
        assert!(lsn(&n["lsn"]) >= before, "{n} had reached {before:X}");
    }
    assert!(c.accepts_writes("pg0"));
    let warnings = c.status()["warnings"].to_string();
    assert!(warnings.contains("acknowledged with no copy"), "{warnings}");

    // psql on a stopped node: one line, and a failure.
    let e = c.fails(&["psql", "pg1"]);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("pg1 is not running"), "{e}");

    // A crash keeps the WAL it wrote: the killed primary shows where it had got to.
    c.sql("pg0", "INSERT INTO ux SELECT generate_series(1, 1000)");
    let written = lsn(&Value::from(c.sql("pg0", "SELECT pg_current_wal_lsn()")));
    let r = json(&c.ok(&["kill", "pg0", "--json"]));
    assert_eq!(node(&r, "pg0")["outcome"], "killed");
    assert!(lsn(&node(&r, "pg0")["lsn"]) >= written, "{r}");
    assert!(!c.accepts_writes("pg0"));

    let r = json(&c.ok(&["start", "pg0", "pg1", "pg2", "pg3", "--json"]));
    assert_eq!(r["command"], "start");
    assert_eq!(node(&r, "pg0")["role"], "primary");
    for n in ["pg1", "pg2", "pg3"] {
        let n = node(&r, n);
        assert_eq!(
            (&n["outcome"], &n["role"]),
            (&"started".into(), &"standby".into())
        );
        assert_eq!(n["streaming"], true, "{n}");
    }
    assert_eq!(c.writable_nodes(), ["pg0"]);
    assert!(!c.status()["warnings"].to_string().contains("no copy"));
});

#[test]
fn no_cluster_is_written_into_the_home_folder_itself() {
    let home = temp_dir();
    for args in [&["init"][..], &["up"]] {
        let e = stderr_of_failure(
            &bare(home.path(), args)
                .env("HOME", home.path())
                .output()
                .unwrap(),
        );
        assert!(e.contains("home folder") && e.contains("-c "), "{e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
    }
    assert_eq!(
        std::fs::read_dir(home.path()).unwrap().count(),
        0,
        "wrote something"
    );
}

/// The role changes speak JSON: one object each, the same keys whatever happened (null when
/// unknown), the figures as numbers, the nodes as status shows them afterwards.
#[test]
fn role_changes_report_in_json() {
    let c = TestCluster::up(Pg::V18);
    let r = json(&c.ok(&["switchover", "--to", "pg1", "--json"]));
    assert_eq!(
        (
            &r["command"],
            &r["changed"],
            &r["old_primary"],
            &r["new_primary"]
        ),
        (
            &"switchover".into(),
            &true.into(),
            &"pg0".into(),
            &"pg1".into()
        )
    );
    assert_eq!(r["timeline"], 2, "{r}");
    for k in [
        "writes_unavailable_ms",
        "stop_ms",
        "catch_up_ms",
        "promote_ms",
        "took_ms",
    ] {
        assert!(r[k].is_u64(), "{k} in {r}");
    }
    assert_eq!(node(&r, "pg1")["role"], "primary");
    assert_eq!(node(&r, "pg0")["role"], "standby");

    c.ok(&["kill", "pg1"]);
    let r = json(&c.ok(&["failover", "--json"]));
    assert_eq!(
        (&r["command"], &r["old_primary"]),
        (&"failover".into(), &"pg1".into())
    );
    let new = r["new_primary"].as_str().unwrap().to_string();
    assert_eq!(r["timeline"], 3, "{r}");
    assert!(r["promote_ms"].is_u64() && r["repoint_ms"].is_u64(), "{r}");
    assert!(r["reason"].is_string() && r["repointed"].is_array(), "{r}");
    assert_eq!(node(&r, &new)["role"], "primary");

    let r = json(&c.ok(&["rejoin", "pg1", "--upstream", &new, "--json"]));
    assert_eq!(
        (&r["command"], &r["node"]),
        (&"rejoin".into(), &"pg1".into())
    );
    // Every key is there; a count pg_waldump could not read is null, the bytes are known.
    for k in [
        "method",
        "discarded_wal_bytes",
        "discarded_transactions",
        "fork_lsn",
    ] {
        assert!(r.get(k).is_some(), "{k} missing: {r}");
    }
    assert!(r["discarded_wal_bytes"].is_u64(), "{r}");
    assert_eq!(node(&r, "pg1")["role"], "standby");

    let r = json(&c.ok(&["promote", "pg1", "--fence", "--json"]));
    assert_eq!(
        (&r["new_primary"], &r["timeline"]),
        (&"pg1".into(), &4.into())
    );
    assert_eq!(r["fenced"], serde_json::json!([new]));
    assert_eq!(c.writable_nodes(), ["pg1"]);
}
