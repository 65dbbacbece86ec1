//! `pgrepl bench ...`: run a benchmark, print its figures.

use std::process::ExitCode;

use anyhow::Result;
use comfy_table::Table;
use pgrepl_core::bench::all::{AllOptions, AllReport};
use pgrepl_core::bench::rejoin::{RejoinOptions, RejoinReport};
use pgrepl_core::bench::roles::{self, RolesOptions, RolesReport};
use pgrepl_core::bench::up::{RuntimeUpReport, UpReport};
use pgrepl_core::bench::writer::{self, WriterBenchOptions, WriterReport};
use pgrepl_core::bench::{self, Stats};
use pgrepl_core::cluster::Options;
use serde::Serialize;

use crate::cli::{BenchArgs, BenchCmd};
use crate::progress::Spinner;

/// Said under every figure: the machine is shared, so they are indicative.
const CAVEAT: &str = "(figures from a shared 2-core machine: indicative, not a guarantee)";

pub async fn run(opts: &Options, args: BenchArgs) -> Result<ExitCode> {
    let cmd = args.cmd.unwrap_or(BenchCmd::All { json: args.json });
    let spinner = Spinner::new();
    match cmd {
        BenchCmd::Sync(a) => super::sync::bench(opts, a).await,
        BenchCmd::Up {
            runs,
            runtime: Some(kind),
            json,
        } if !kind.is_local() => {
            let r = bench::up::compare(opts, kind, runs.unwrap_or(3).max(1), &spinner).await?;
            show(json, &r, print_runtime_up)
        }
        BenchCmd::Up { runs, json, .. } => {
            let r = bench::up::run(opts, runs.unwrap_or(5).max(1), &spinner).await?;
            show(json, &r, print_up)
        }
        BenchCmd::Switchover {
            runs,
            failover_runs,
            json,
        } => {
            let o = RolesOptions {
                runs,
                failover_runs,
                ..RolesOptions::default()
            };
            let r = roles::run(opts, &o, &spinner).await?;
            show(json, &r, print_roles)
        }
        BenchCmd::Rejoin { scale, runs, json } => {
            let r = bench::rejoin::run(opts, &RejoinOptions { scale, runs }, &spinner).await?;
            show(json, &r, print_rejoin)
        }
        BenchCmd::Writer {
            writers,
            duration,
            json,
        } => {
            let o = WriterBenchOptions { writers, duration };
            let r = writer::run(opts, &o, &spinner).await?;
            show(json, &r, print_writer)
        }
        BenchCmd::Failover {
            runs,
            runtime,
            json,
        } => {
            let o = bench::failover::FailoverOptions {
                runs,
                runtime,
                pgrepl: std::env::current_exe().ok(),
            };
            let r = bench::failover::run(opts, &o, &spinner).await?;
            show(json, &r, print_failover)
        }
        BenchCmd::All { json } => {
            let r = bench::all::run(opts, &AllOptions::default(), &spinner).await?;
            show(json, &r, print_all)
        }
    }
}

fn print_failover(r: &bench::failover::FailoverReport) {
    println!(
        "automatic failover (pgrepl monitor, defaults), PostgreSQL {}, {} runtime, {} runs",
        r.postgres, r.runtime, r.gap.runs
    );
    println!(
        "  SIGKILL of the primary -> first acknowledged write on the new primary: median {:.2} s (min {:.2} s, max {:.2} s)",
        r.gap.median_ms / 1000.0,
        r.gap.min_ms / 1000.0,
        r.gap.max_ms / 1000.0
    );
    println!(
        "  runs: {}",
        r.gaps_ms
            .iter()
            .map(|g| format!("{:.0} ms", g))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  measured for the other tools (same kind of machine and client):");
    for a in r.anchors {
        println!(
            "    {:<17} default {:>5.1} s, fastest that worked {:>5.2} s{}",
            a.tool,
            a.default_s,
            a.fastest_s,
            if a.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", a.note)
            }
        );
    }
    match r.rss_kb {
        Some(kb) => println!(
            "  resident memory: {:.1} MB, of {}",
            kb as f64 / 1024.0,
            r.rss_of
        ),
        None => println!("  resident memory: unknown (no /proc/self/status)"),
    }
}

fn show<R: Serialize>(json: bool, report: &R, print: fn(&R)) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print(report);
        println!("{CAVEAT}");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_all(r: &AllReport) {
    println!(
        "pgrepl bench: every benchmark, fewer runs each (took {:.0} s)\n",
        r.took_s
    );
    print_up(&r.up);
    println!();
    print_roles(&r.roles);
    println!();
    print_rejoin(&r.rejoin);
    println!();
    super::sync::print_bench(&r.sync);
    println!();
    print_writer(&r.writer);
}

fn print_up(r: &UpReport) {
    let mut t = stats_table();
    for (name, s) in [
        ("pgrepl up (4 nodes, all streaming)", r.up),
        ("bare initdb", r.initdb),
        ("bare pg_basebackup -c fast", r.clone),
        ("bare server start (pg_ctl -w)", r.start),
    ] {
        add(&mut t, name, s);
    }
    println!(
        "bench up: PostgreSQL {}, {} runs\n{t}",
        r.postgres, r.up.runs
    );
    let sum = r.initdb.median_ms + r.clone.median_ms + r.start.median_ms;
    println!(
        "up / (initdb + clone + start) = {:.0} ms / {:.0} ms = {:.2}x   (target: at most 1.5x and under 2000 ms)",
        r.up.median_ms, sum, r.ratio
    );
}

fn print_runtime_up(r: &RuntimeUpReport) {
    if let Some(b) = &r.image_build {
        println!(
            "image {}: built in {:.1} s ({} files, {} MB; forced rebuild; target: under 10 s)",
            b.tag,
            b.took.as_secs_f64(),
            b.files,
            b.bytes >> 20
        );
    }
    let mut t = stats_table();
    add(&mut t, "pgrepl up on the local runtime", r.local);
    add(
        &mut t,
        &format!("pgrepl up on the {} runtime", r.runtime),
        r.other,
    );
    println!(
        "bench up --runtime {}: PostgreSQL {}, 4-node lab to all streaming, {} runs each, alternating\n{t}",
        r.runtime, r.postgres, r.local.runs
    );
    println!(
        "{} / local = {:.0} ms / {:.0} ms = {:.2}x   (target: at most 1.5x)",
        r.runtime, r.other.median_ms, r.local.median_ms, r.ratio
    );
}

fn print_roles(r: &RolesReport) {
    println!(
        "bench switchover: PostgreSQL {}, 4-node lab; {} drill writers at {:.0} commits/s in all, each reconnecting through every node (target_session_attrs=read-write)",
        r.postgres, r.writers, r.rate
    );
    let mut t = crate::render::table();
    let mut header = vec!["WHAT", "RUNS", "MEDIAN ms", "MIN ms", "MAX ms", "TARGET ms"];
    header.extend(r.references.iter().map(|x| x.tool));
    t.set_header(header);
    let refs = |f: fn(&roles::Reference) -> f64| -> Vec<String> {
        r.references
            .iter()
            .map(|x| format!("{:.0}", f(x)))
            .collect()
    };
    let none = || vec!["-".to_string(); r.references.len()];
    let mut row = |name: &str, s: Stats, target: Option<f64>, refs: Vec<String>| {
        let mut cells = vec![name.to_string(), s.runs.to_string()];
        cells.extend(figures(s));
        cells.push(target.map_or("-".into(), |v| format!("< {v:.0}")));
        cells.extend(refs);
        t.add_row(cells);
    };
    row(
        "switchover: write gap seen by the client (last commit acknowledged before -> first after)",
        r.switchover_gap,
        Some(roles::TARGET_SWITCHOVER_GAP_MS),
        refs(|x| x.switchover_gap_ms),
    );
    row(
        "switchover: write gap seen by an external libpq client (multi-host, target_session_attrs=read-write, an INSERT per 10 ms)",
        r.libpq_gap,
        Some(roles::TARGET_SWITCHOVER_GAP_MS),
        refs(|x| x.switchover_gap_ms),
    );
    row(
        "switchover: from its start (stop signal to the old primary) to the first commit after",
        r.switchover_recovery,
        None,
        none(),
    );
    if let (Some(gap), Some(rec)) = (r.failover_gap, r.failover_recovery) {
        row(
            "failover: write gap seen by the client (primary SIGKILLed, then pgrepl failover)",
            gap,
            Some(roles::TARGET_FAILOVER_GAP_MS),
            none(),
        );
        row(
            "failover: from the SIGKILL to the first commit after",
            rec,
            None,
            none(),
        );
    }
    row(
        "promote alone: pgrepl promote of a streaming standby (probe, pg_promote) until it accepts writes",
        r.promote,
        None,
        none(),
    );
    row(
        "rejoin alone: diverged old primary: stop + checkpoint + pg_rewind + start, until streaming",
        r.rejoin,
        Some(roles::TARGET_REJOIN_MS),
        refs(|x| x.rejoin_ms),
    );
    println!("{t}");
    println!(
        "acknowledged commits lost: {} over the switchovers, {} of the libpq client's ({} errors, reconnected) (must be 0){}",
        r.switchover_lost,
        r.libpq_lost,
        r.libpq_errors,
        r.failover_lost
            .map(|n| format!(", {n} over the failovers (async replication may lose some)"))
            .unwrap_or_default()
    );
    if let Some(first) = r.rewound.first() {
        println!("first rejoin: {first}");
    }
    println!("other tools: measured by hand on this machine with the same client (issue 3); bare pg_promote there: 150 ms, stop + pg_rewind + start: 690 ms");
}

fn print_rejoin(r: &RejoinReport) {
    println!(
        "bench rejoin: PostgreSQL {}, pgbench -i -s {}: database of {} MB; a diverged old primary rejoins the new one",
        r.postgres,
        r.scale,
        r.database_bytes / (1024 * 1024)
    );
    let mut t = stats_table();
    add(
        &mut t,
        "by pg_rewind: stop + checkpoint + pg_rewind + start, until streaming",
        r.rewind,
    );
    add(
        &mut t,
        "by re-clone: stop + pg_basebackup -c fast + start, until streaming",
        r.reclone,
    );
    println!("{t}");
    println!(
        "re-clone / pg_rewind = {:.0} ms / {:.0} ms = {:.1}x",
        r.reclone.median_ms, r.rewind.median_ms, r.ratio
    );
    if let Some(first) = r.rewound.first() {
        println!("pg_rewind: {first}");
    }
}

fn print_writer(r: &WriterReport) {
    println!(
        "bench writer: PostgreSQL {}, a lone local primary, synchronous_commit=off, {} clients, {:.0} s each",
        r.postgres, r.writers, r.duration_s
    );
    let mut t = crate::render::table();
    t.set_header(vec!["WHAT", "COMMITS/s", "TARGET"]);
    t.add_row(vec![
        "drill writer (unpaced, single-row commits, prepared INSERT)".to_string(),
        format!("{:.0}", r.writer_commits_per_s),
        format!(">= {:.0}", writer::TARGET_COMMITS_PER_S),
    ]);
    t.add_row(vec![
        format!(
            "pgbench -n -M prepared -f insert.sql -c {0} -j {0} (same INSERT; latency {1:.2} ms)",
            r.writers, r.pgbench_latency_ms
        ),
        format!("{:.0}", r.pgbench_tps),
        "-".into(),
    ]);
    println!("{t}");
    println!(
        "writer / pgbench = {:.2}x ({} writer errors)",
        r.ratio, r.writer_errors
    );
}

fn figures(s: Stats) -> [String; 3] {
    [
        format!("{:.0}", s.median_ms),
        format!("{:.0}", s.min_ms),
        format!("{:.0}", s.max_ms),
    ]
}

fn stats_table() -> Table {
    let mut t = crate::render::table();
    t.set_header(vec!["WHAT", "MEDIAN ms", "MIN ms", "MAX ms"]);
    t
}

fn add(t: &mut Table, name: &str, s: Stats) {
    let mut cells = vec![name.to_string()];
    cells.extend(figures(s));
    t.add_row(cells);
}
