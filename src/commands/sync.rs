//! `pgrepl sync enable|disable` and `pgrepl bench sync`.

use std::process::ExitCode;

use anyhow::Result;
use comfy_table::{Cell, CellAlignment};
use pgrepl_core::bench::sync as bench;
use pgrepl_core::cluster::Options;
use pgrepl_core::ops::sync::{self, EnableRequest, SyncReport};
use pgrepl_core::progress::{Progress, Silent};
use pgrepl_core::spec::SyncMethod;

use super::open_locked;
use crate::cli::{BenchSyncArgs, SyncCmd, SyncMethodArg};
use crate::progress::Spinner;

pub async fn run(opts: &Options, cmd: SyncCmd) -> Result<ExitCode> {
    let (mut cluster, _lock) = open_locked(opts).await?;
    let json = match &cmd {
        SyncCmd::Enable(a) => a.json,
        SyncCmd::Disable(a) => a.json,
    };
    // JSON carries the warnings itself; the terminal shows them as they happen.
    let progress: Box<dyn Progress> = if json {
        Box::new(Silent)
    } else {
        Box::new(Spinner::new())
    };
    let report = match cmd {
        SyncCmd::Enable(a) => {
            let req = EnableRequest {
                standbys: a.standbys,
                method: a.method.map(|m| match m {
                    SyncMethodArg::First => SyncMethod::First,
                    SyncMethodArg::Any => SyncMethod::Any,
                }),
                num: a.num,
                commit: a.commit,
                allow_unknown: a.allow_unknown,
            };
            sync::enable(&mut cluster, &req, progress.as_ref()).await?
        }
        SyncCmd::Disable(_) => sync::disable(&mut cluster, progress.as_ref()).await?,
    };
    drop(progress);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report_text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn report_text(r: &SyncReport) -> String {
    let mut t = crate::render::table();
    t.set_header(vec![
        "NODE",
        "APP NAME",
        "STATE",
        "SYNC PRIORITY",
        "SYNC STATE",
    ]);
    for s in &r.standbys {
        t.add_row(vec![
            Cell::new(s.node.as_deref().unwrap_or("-")),
            Cell::new(&s.application_name),
            Cell::new(s.state.as_deref().or(s.note.as_deref()).unwrap_or("-")),
            Cell::new(
                s.sync_priority
                    .map_or_else(|| "-".into(), |p| p.to_string()),
            )
            .set_alignment(CellAlignment::Right),
            Cell::new(s.sync_state.as_deref().unwrap_or("-")),
        ]);
    }
    format!(
        "{}\nstandbys of {} (pg_stat_replication):\n{t}\n",
        r.message, r.primary
    )
}

pub async fn bench(opts: &Options, a: BenchSyncArgs) -> Result<ExitCode> {
    let (cluster, _lock) = open_locked(opts).await?;
    let options = bench::BenchOptions {
        duration: a.duration,
        clients: a.clients,
        scale: a.scale,
    };
    let report = bench::sync(&cluster, &options, &Spinner::new()).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_bench(&report);
    Ok(ExitCode::SUCCESS)
}

/// The commit levels table, each row against asynchronous replication.
pub fn print_bench(report: &bench::BenchReport) {
    println!(
        "pgbench (TPC-B-like, scale {}, {} clients, {} s a run) on {}, PostgreSQL {}",
        report.scale, report.clients, report.duration_s, report.primary, report.postgres
    );
    let mut t = crate::render::table();
    t.set_header(vec![
        "REPLICATION",
        "synchronous_commit",
        "SYNC STANDBYS",
        "TPS",
        "LATENCY ms",
        "TPS vs async",
        "LATENCY vs async",
    ]);
    for r in &report.rows {
        let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
        t.add_row(vec![
            Cell::new(if r.sync_standbys.is_empty() {
                "async"
            } else {
                "sync"
            }),
            Cell::new(&r.synchronous_commit),
            Cell::new(if r.sync_standbys.is_empty() {
                "-".into()
            } else {
                format!("{} ({})", r.sync_standbys.len(), r.sync_standbys.join(", "))
            }),
            right(format!("{:.0}", r.tps)),
            right(format!("{:.2}", r.latency_ms)),
            right(format!("{:.2}", r.tps_ratio)),
            right(format!("{:.2}", r.latency_ratio)),
        ]);
    }
    println!("{t}");
}
