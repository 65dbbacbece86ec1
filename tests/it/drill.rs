//! Drills on a real cluster: the crash drill measures, loses nothing, converges, and draws;
//! switchover loses nothing, and the loss check catches a row deleted on purpose; failover
//! under synchronous replication loses nothing; the matrix compares the replication modes.
//! PostgreSQL 18 only: the drills exercise pgrepl's operations, which the failover and sync
//! suites already cover on 15 too. Each run carries about a second and a half of load.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::common::{Pg, TestCluster};
use pgrepl_core::cluster::Options;
use pgrepl_core::drill::{self, hooks::AVAILABLE, DrillOptions, Event, Operations};
use pgrepl_core::progress::Silent;
use pgrepl_core::{Cluster, Error};
use serde_json::Value;

/// Short drills: enough load for a lag baseline and to see writes resume.
const SHORT: [&str; 4] = ["--before", "1s", "--after", "500ms"];

fn drill_json(c: &TestCluster, args: &[&str]) -> Value {
    let mut all = vec!["drill"];
    all.extend_from_slice(args);
    all.extend_from_slice(&SHORT);
    all.push("--json");
    serde_json::from_str(&c.ok(&all)).expect("drill --json is JSON")
}

/// A PNG's signature, and its size from the IHDR chunk (big-endian, after the chunk header).
fn png_size(path: &Path) -> (u32, u32) {
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &png[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&png[12..16], b"IHDR", "{}", path.display());
    (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    )
}

#[test]
fn crash_drill_loses_no_acknowledged_write_and_reports() {
    let c = TestCluster::up(Pg::V18);

    // Bad input is refused before anything runs.
    let e = c.fails(&["drill", "earthquake"]);
    assert!(
        e.contains("unknown drill event 'earthquake'") && e.contains("crash"),
        "{e}"
    );
    let e = c.fails(&["drill", "crash", "--writers", "0"]);
    assert!(e.contains("--writers must be at least 1"), "{e}");
    let e = c.fails(&["drill", "crash", "--rate", "0"]);
    assert!(e.contains("--rate must be a positive number"), "{e}");
    // sync-block needs synchronous replication, which the lab does not enable by default.
    let e = c.fails(&["drill", "sync-block"]);
    assert!(e.contains("needs synchronous replication"), "{e}");
    // A [sync] that lists the primary itself would leave the promoted standby waiting for
    // the primary the drill kills: refused up front, in one line naming the fix.
    let spec = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(
        &c.config,
        format!("{spec}\n[sync]\nstandbys = [\"pg0\", \"sync2\"]\n"),
    )
    .unwrap();
    let e = c.fails(&["drill", "failover", "--writers", "1"]);
    assert!(
        e.contains("lists the primary pg0 itself") && e.contains("`pgrepl sync enable --standbys"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    std::fs::write(&c.config, spec).unwrap();

    let report = c.path().join("report");
    let out = c.ok(&[
        "drill",
        "crash",
        "--runs",
        "1",
        "--before",
        "1s",
        "--after",
        "500ms",
        "--json",
        "--report",
        report.to_str().unwrap(),
    ]);
    let j: Value = serde_json::from_str(&out).expect("drill --json is JSON");
    assert_eq!(j["event"], "crash");
    let run = &j["runs"][0];
    // The primary restarts in place with its WAL: every acknowledged commit survives.
    assert_eq!(run["lost_acknowledged"], 0, "{run}");
    assert_eq!(run["converged"], true, "{run}");
    assert!(run["recovery_ms"].as_f64().unwrap() > 0.0, "{run}");
    assert!(
        run["write_gap_ms"].as_f64().unwrap()
            >= run["event"]["detail"]["crash_recovery_ms"]
                .as_f64()
                .unwrap()
                * 0.5,
        "{run}"
    );
    // Each writer's connection died with the primary: its next INSERT failed.
    assert!(run["failed_writes"].as_u64().unwrap() >= 1, "{run}");
    assert!(run["acknowledged"].as_u64().unwrap() > 0, "{run}");
    assert_eq!(run["primary_after"], "pg0");
    for key in [
        "write_gap_ms",
        "recovery_ms",
        "lost_acknowledged",
        "failed_writes",
        "max_lag_bytes",
        "converged",
    ] {
        assert!(
            j["summary"][key]["median"].is_number(),
            "summary.{key}: {}",
            j["summary"]
        );
    }
    // Every node holds the same rows.
    let nodes = run["convergence"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    assert!(
        nodes.iter().all(|n| n["checksum"] == nodes[0]["checksum"]),
        "{nodes:?}"
    );

    // The report: the same JSON plus the traces, and the chart in both formats.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(saved["runs"][0]["run"], 1);
    assert!(saved["traces"][0]["acks_per_bin"].as_array().unwrap().len() > 10);
    let svg = std::fs::read_to_string(report.join("run-1.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("Acknowledged commits per 100 ms"),
        "{}",
        &svg[..200.min(svg.len())]
    );
    assert_eq!(png_size(&report.join("run-1.png")), (1280, 800));

    // The cluster is back as it was: pg0 primary, every standby streaming from it.
    let s = c.status();
    assert_eq!(s["primary"], "pg0");
    for n in s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["name"] != "pg0")
    {
        assert_eq!(n["upstream"], "pg0", "{n}");
    }
}

/// The row the corrupting switchover deleted.
static DELETED: Mutex<Option<(i32, i64)>> = Mutex::new(None);

/// The real switchover, then the first acknowledged row deleted on the new primary: a loss
/// the drill has to report, or its check proves nothing.
const CORRUPTING: Operations = Operations {
    switchover: Some(|c, to, p| {
        Box::pin(async move {
            (AVAILABLE.switchover.expect("switchover is available"))(c, to, p).await?;
            let client = c.connect(to).await?;
            let row = client
                .query_one(
                    "DELETE FROM pgrepl_drill WHERE (writer, seq) = \
                     (SELECT writer, seq FROM pgrepl_drill ORDER BY writer, seq LIMIT 1) \
                     RETURNING writer, seq",
                    &[],
                )
                .await
                .map_err(|e| Error::Invalid(format!("the corrupting DELETE failed: {e}")))?;
            // The first only: the drill's own switchover back at its end comes here too.
            DELETED
                .lock()
                .unwrap()
                .get_or_insert((row.get(0), row.get(1)));
            Ok(())
        })
    }),
    ..AVAILABLE
};

#[test]
fn switchover_drill_loses_nothing_and_the_check_catches_a_deleted_row() {
    let c = TestCluster::up(Pg::V18);

    let j = drill_json(&c, &["switchover", "--runs", "1"]);
    let run = &j["runs"][0];
    assert_eq!(run["lost_acknowledged"], 0, "{run}");
    assert_eq!(run["lost_ids"], serde_json::json!([]), "{run}");
    assert_eq!(run["converged"], true, "{run}");
    assert_eq!(run["primary_before"], "pg0");
    assert_ne!(run["primary_after"], "pg0", "{run}");
    assert!(run["acknowledged"].as_u64().unwrap() > 100, "{run}");
    assert_eq!(run["convergence"]["nodes"].as_array().unwrap().len(), 4);

    // The same drill through the library, with a switchover that deletes an acknowledged row.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt
        .block_on(async {
            let opts = Options {
                config: c.config.clone(),
                pg_bin: Some(c.pg.bin()),
                os_user: Some("postgres".into()),
            };
            let cluster = Cluster::open(&opts, false, &Silent).await?;
            let options = DrillOptions {
                runs: 1,
                before: Duration::from_secs(1),
                after: Duration::from_millis(500),
                ..DrillOptions::default()
            };
            drill::run(&cluster, Event::Switchover, &options, &CORRUPTING, &Silent).await
        })
        .expect("the corrupted drill still runs");
    let deleted = DELETED.lock().unwrap().expect("the hook deleted a row");
    let run = &report.runs[0];
    assert_eq!(run.lost_acknowledged, 1, "{run:?}");
    assert_eq!(run.lost_ids, vec![deleted]);
    // It was acknowledged at the start of the run, long before the switchover.
    assert!(run.lost_writes[0].acked_after_event_ms < -500.0, "{run:?}");
    // The delete replicated: the nodes still agree with each other.
    assert!(run.converged, "{run:?}");
}

#[test]
fn switchover_drill_with_odd_runs_leaves_the_primary_and_sync_as_found() {
    let c = TestCluster::up(Pg::V18);
    c.ok(&["sync", "enable"]);
    let before = c.sql("pg0", "SHOW synchronous_standby_names");

    let j = drill_json(&c, &["switchover", "--runs", "3"]);
    let runs = j["runs"].as_array().unwrap();
    // A synchronous standby is the first choice: pg2 or pg3 under the lab's FIRST 1.
    let first = runs[0]["event"]["detail"]["new_primary"].as_str().unwrap();
    assert!(["pg2", "pg3"].contains(&first), "switched over to {first}");
    assert!(runs.iter().all(|r| r["lost_acknowledged"] == 0), "{j}");
    // Three switchovers left another primary: the drill put pg0 back, and the setting.
    assert_eq!(c.status()["primary"], "pg0");
    assert_eq!(c.writable_nodes(), ["pg0"]);
    assert_eq!(c.sql("pg0", "SHOW synchronous_standby_names"), before);
}

#[test]
fn failover_drill_under_first_1_sync_loses_nothing_over_3_runs() {
    let c = TestCluster::up(Pg::V18);
    c.ok(&["sync", "enable"]);

    let j = drill_json(&c, &["failover", "--runs", "3"]);
    let runs = j["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for run in runs {
        // Every commit waited for a synchronous standby, and failover promoted one of them.
        assert_eq!(run["lost_acknowledged"], 0, "{run}");
        assert_eq!(run["converged"], true, "{run}");
        let new = run["event"]["detail"]["new_primary"].as_str().unwrap();
        assert!(["pg2", "pg3"].contains(&new), "promoted {new}: {run}");
        assert_ne!(run["primary_after"], run["primary_before"], "{run}");
        // Late acks are reported (a count, and when each came).
        assert_eq!(
            run["late_acks"].as_u64().unwrap() as usize,
            run["late_acks_ms"].as_array().unwrap().len(),
            "{run}"
        );
        assert!(run["recovery_ms"].as_f64().unwrap() > 0.0, "{run}");
    }
    assert_eq!(j["summary"]["lost_acknowledged"]["max"], 0.0);
    // Each run switched back to the primary it crashed, so each failed the same node over.
    assert!(runs.iter().all(|r| r["primary_before"] == "pg0"), "{j}");
    assert_eq!(c.status()["primary"], "pg0");
}

#[test]
fn drill_matrix_sync_modes_lose_nothing_and_the_setting_is_restored() {
    let c = TestCluster::up(Pg::V18);
    // A setting that is none of the matrix's modes, to see that it comes back.
    c.ok(&["sync", "enable", "--num", "2"]);

    // Bad input is refused before anything runs.
    let e = c.fails(&["drill", "matrix", "--writers", "0"]);
    assert!(e.contains("--writers must be at least 1"), "{e}");

    let report = c.path().join("matrix");
    let j = drill_json(
        &c,
        &[
            "matrix",
            "--runs",
            "1",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let modes = j["modes"].as_array().unwrap();
    let labels: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        ["async", "FIRST 1 (sync2, sync3)", "ANY 1 (sync2, sync3)"]
    );
    for m in modes {
        let run = &m["runs"][0];
        assert_eq!(run["converged"], true, "{}: {run}", m["mode"]);
        // Async may lose a commit (that is the lesson); it must say which.
        assert_eq!(
            run["lost_acknowledged"].as_u64().unwrap() as usize,
            run["lost_ids"].as_array().unwrap().len(),
            "{run}"
        );
    }
    for m in &modes[1..] {
        assert_eq!(m["runs"][0]["lost_acknowledged"], 0, "{}", m["mode"]);
    }

    // Put back: the same primary, the original setting.
    assert_eq!(j["primary"], "pg0");
    assert_eq!(c.status()["primary"], "pg0");
    let names = c.sql("pg0", "SHOW synchronous_standby_names");
    assert!(names.starts_with("FIRST 2"), "{names}");

    // The report: the matrix, and each mode's drill with its charts.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("matrix.json")).unwrap())
            .unwrap();
    assert_eq!(saved["modes"].as_array().unwrap().len(), 3);
    for mode in ["async", "first-1", "any-1"] {
        let r: Value = serde_json::from_str(
            &std::fs::read_to_string(report.join(mode).join("report.json")).unwrap(),
        )
        .unwrap();
        assert!(r["runs"][0]["recovery_ms"].is_number(), "{mode}: {r}");
        assert_eq!(png_size(&report.join(mode).join("run-1.png")), (1280, 800));
        assert!(report.join(mode).join("run-1.svg").is_file());
    }
}
