//! Drills on a real cluster: the crash drill measures, loses nothing, converges, and draws.

mod common;

use common::{Pg, TestCluster};
use serde_json::Value;

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
    let png = std::fs::read(report.join("run-1.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // IHDR: width and height, big-endian, right after the chunk header.
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1280, 800));

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
