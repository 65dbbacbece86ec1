//! `pgrepl drill EVENT`: run it, print one line per run and the spread, or JSON.

use std::process::ExitCode;

use anyhow::Result;
use comfy_table::{presets, CellAlignment, Table};
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

pub async fn run(opts: &Options, a: DrillArgs) -> Result<ExitCode> {
    let event = Event::parse(&a.event, a.hold)?;
    let options = DrillOptions {
        runs: a.runs,
        writers: a.writers,
        rate: a.rate,
        before: a.before,
        after: a.after,
        ..DrillOptions::default()
    };
    // Bad input is refused before the cluster is even opened.
    options.validate()?;
    event.check(&drill::hooks::AVAILABLE)?;
    let (cluster, _lock) = super::open_locked(opts).await?;
    let progress: Box<dyn Progress> = if a.json {
        Box::new(StepsOnly(Spinner::new()))
    } else {
        Box::new(Spinner::new())
    };
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
        println!("{}", serde_json::to_string_pretty(&report)?);
        for f in &files {
            eprintln!("wrote {}", f.display());
        }
        return Ok(ExitCode::SUCCESS);
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
    let mut t = Table::new();
    t.load_preset(presets::UTF8_BORDERS_ONLY)
        .set_header(vec!["", "MIN", "MEDIAN", "MAX"]);
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
