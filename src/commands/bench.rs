//! `pgrepl bench ...`: run a benchmark, print its figures.

use std::process::ExitCode;

use anyhow::Result;
use comfy_table::{presets, Table};
use pgrepl_core::bench::{self, Stats};
use pgrepl_core::cluster::Options;

use crate::cli::BenchCmd;
use crate::progress::Spinner;

pub async fn run(opts: &Options, cmd: BenchCmd) -> Result<ExitCode> {
    match cmd {
        BenchCmd::Sync(a) => super::sync::bench(opts, a).await,
        BenchCmd::Up { runs, json } => {
            let r = bench::up::run(opts, runs.max(1), &Spinner::new()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
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
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn stats_table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_BORDERS_ONLY).set_header(vec![
        "WHAT",
        "MEDIAN ms",
        "MIN ms",
        "MAX ms",
    ]);
    t
}

pub fn add(t: &mut Table, name: &str, s: Stats) {
    t.add_row(vec![
        name.to_string(),
        format!("{:.0}", s.median_ms),
        format!("{:.0}", s.min_ms),
        format!("{:.0}", s.max_ms),
    ]);
}
