//! `pgrepl drill EVENT`: run it, print one line per run and the spread, or JSON.
//! `pgrepl drill matrix`: the failover drill under each replication mode, one table.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use comfy_table::{CellAlignment, Table};
use pgrepl_core::bench::Spread;
use pgrepl_core::cluster::Options;
use pgrepl_core::drill::{self, DrillOptions, Event};
use pgrepl_core::progress::Progress;

use crate::cli::DrillArgs;
use crate::progress::Spinner;

/// The spinner without printed lines: with --json, stdout carries the JSON only.
struct StepsOnly(Spinner);

impl Progress for StepsOnly {
    fn step(&self, msg: &str) {
        self.0.step(msg);
    }
    fn note(&self, _msg: &str) {}
}

fn progress(json: bool) -> Box<dyn Progress> {
    if json {
        Box::new(StepsOnly(Spinner::new()))
    } else {
        Box::new(Spinner::new())
    }
}

pub async fn run(opts: &Options, a: DrillArgs) -> Result<ExitCode> {
    let options = DrillOptions {
        runs: a.runs,
        writers: a.writers,
        rate: a.rate,
        before: a.before,
        after: a.after,
        ..DrillOptions::default()
    };
    if a.event == drill::event::MATRIX {
        return matrix(opts, &a, &options).await;
    }
    let event = Event::parse(&a.event, a.hold, a.delay)?;
    // Bad input is refused before the cluster is even opened.
    options.validate()?;
    event.check(&drill::hooks::AVAILABLE)?;
    let (cluster, _lock) = super::open_locked(opts).await?;
    let progress = progress(a.json);
    let report = tokio::select! {
        r = drill::run(&cluster, event, &options, &drill::hooks::AVAILABLE, progress.as_ref()) => r?,
        // Dropping the drill thaws a frozen primary and stops the writers.
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: the drill stopped; check the cluster with `pgrepl status`"),
    };
    drop(progress);
    let files = match &a.report {
        Some(dir) => drill::write_report(&report, dir)?,
        None => Vec::new(),
    };
    if a.json {
        return print_json(&report, &files);
    }
    println!(
        "{event} drill, {} writers at {}/s, over {} run(s):",
        report.writers,
        report.rate,
        report.runs.len()
    );
    println!("{}", summary_table(&report.summary, report.runs.len()));
    for f in &files {
        println!("wrote {}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn summary_table(s: &drill::Summary, runs: usize) -> Table {
    let mut t = crate::render::table();
    t.set_header(vec!["", "MIN", "MEDIAN", "MAX"]);
    let mut row = |name: &str, v: Option<Spread>, digits: usize| {
        let f = |x: f64| format!("{x:.digits$}");
        t.add_row(match v {
            Some(v) => vec![name.to_string(), f(v.min), f(v.median), f(v.max)],
            None => vec![name.to_string(), "-".into(), "-".into(), "-".into()],
        });
    };
    row("write gap (ms)", s.write_gap_ms, 0);
    row("time to recover (ms)", s.recovery_ms, 0);
    row("lost acknowledged writes", s.lost_acknowledged, 0);
    row("failed writes", s.failed_writes, 0);
    row("late acks (after the event)", s.late_acks, 0);
    row("max lag before the event (bytes)", s.max_lag_bytes, 0);
    let converged = s.converged.map(|c| (c.min, c.max));
    t.add_row(vec![
        "converged".to_string(),
        match converged {
            Some((min, _)) if min >= 1.0 => format!("all {runs} runs"),
            Some((_, max)) if max < 1.0 => "no run".to_string(),
            _ => "some runs only".to_string(),
        },
    ]);
    for c in 1..4 {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

async fn matrix(opts: &Options, a: &DrillArgs, options: &DrillOptions) -> Result<ExitCode> {
    options.validate()?;
    let (cluster, _lock) = super::open_locked(opts).await?;
    let progress = progress(a.json);
    let report = tokio::select! {
        r = drill::matrix::run(&cluster, options, &drill::hooks::AVAILABLE, progress.as_ref()) => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!(
            "interrupted: the matrix stopped without restoring the primary or the synchronous replication setting; check the cluster with `pgrepl status` and `pgrepl sync enable`/`disable`"
        ),
    };
    drop(progress);
    let files = match &a.report {
        Some(dir) => drill::matrix::write_report(&report, dir)?,
        None => Vec::new(),
    };
    if a.json {
        return print_json(&report, &files);
    }
    println!(
        "failover drill per replication mode, {} writers at {}/s, {} run(s) each (min / median / max):",
        report.writers, report.rate, options.runs
    );
    println!("{}", matrix_table(&report));
    for m in &report.modes {
        for r in m.report.runs.iter().filter(|r| r.lost_acknowledged > 0) {
            let ids: Vec<String> = r
                .lost_writes
                .iter()
                .map(|l| {
                    format!(
                        "writer {} seq {} ({:+.1} ms)",
                        l.writer, l.seq, l.acked_after_event_ms
                    )
                })
                .collect();
            println!(
                "{} run {}: lost {} (acknowledged at, from the crash)",
                m.mode,
                r.run,
                ids.join(", ")
            );
        }
    }
    println!(
        "primary {} again; synchronous replication restored to {}",
        report.primary,
        report.restored_sync.as_deref().unwrap_or("off (async)")
    );
    for f in &files {
        println!("wrote {}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// stdout carries the JSON alone; the files written go to stderr.
fn print_json(report: &impl serde::Serialize, files: &[PathBuf]) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(report)?);
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// "min / median / max", or one figure when they are equal.
fn spread(v: Option<Spread>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.min == v.max => format!("{:.0}", v.min),
        Some(v) => format!("{:.0} / {:.0} / {:.0}", v.min, v.median, v.max),
    }
}

fn matrix_table(report: &drill::matrix::MatrixReport) -> Table {
    let mut t = crate::render::table();
    t.set_header(vec![
        "MODE",
        "LOST ACKNOWLEDGED",
        "TIME TO RECOVER (ms)",
        "WRITE GAP (ms)",
        "LATE ACKS",
        "FAILED WRITES",
        "CONVERGED",
    ]);
    for m in &report.modes {
        let s = &m.report.summary;
        let runs = m.report.runs.len();
        let converged = m.report.runs.iter().filter(|r| r.converged).count();
        t.add_row(vec![
            m.mode.clone(),
            spread(s.lost_acknowledged),
            spread(s.recovery_ms),
            spread(s.write_gap_ms),
            spread(s.late_acks),
            spread(s.failed_writes),
            format!("{converged}/{runs}"),
        ]);
    }
    for c in 1..7 {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}
