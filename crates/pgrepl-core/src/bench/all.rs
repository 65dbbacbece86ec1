//! `pgrepl bench` (or `bench all`): every benchmark in one run, each on its own scratch lab,
//! with fewer runs than alone so that the whole stays within minutes. Each report carries
//! its baseline measured in the same run where there is one (bare steps for `up`, re-clone
//! for a rejoin, asynchronous replication for the commit levels, pgbench for the writer).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::rejoin::{RejoinOptions, RejoinReport};
use crate::bench::roles::{RolesOptions, RolesReport};
use crate::bench::sync::{self as sync_bench, BenchOptions, BenchReport};
use crate::bench::up::UpReport;
use crate::bench::writer::{WriterBenchOptions, WriterReport};
use crate::bench::{rejoin, roles, up, writer, Scratch};
use crate::cluster::Options;
use crate::error::Result;
use crate::progress::Progress;

/// Runs of each benchmark in the all-run.
#[derive(Debug, Clone)]
pub struct AllOptions {
    pub up_runs: usize,
    pub role_runs: usize,
    pub failover_runs: usize,
    pub rejoin_scale: u32,
    pub sync_duration: Duration,
    pub writer_duration: Duration,
}

impl Default for AllOptions {
    fn default() -> Self {
        AllOptions {
            up_runs: 3,
            role_runs: 3,
            failover_runs: 3,
            rejoin_scale: 35,
            sync_duration: Duration::from_secs(5),
            writer_duration: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AllReport {
    pub up: UpReport,
    pub roles: RolesReport,
    pub rejoin: RejoinReport,
    pub sync: BenchReport,
    pub writer: WriterReport,
    pub took_s: f64,
}

pub async fn run(opts: &Options, o: &AllOptions, progress: &dyn Progress) -> Result<AllReport> {
    let started = Instant::now();
    progress.note("1/5 bring-up");
    let up = up::run(opts, o.up_runs, progress).await?;
    progress.note("2/5 switchover, failover, promote, rejoin");
    let roles = roles::run(
        opts,
        &RolesOptions {
            runs: o.role_runs,
            failover_runs: o.failover_runs,
            ..RolesOptions::default()
        },
        progress,
    )
    .await?;
    progress.note("3/5 rejoin: pg_rewind against re-clone");
    let rejoin = rejoin::run(
        opts,
        &RejoinOptions {
            scale: o.rejoin_scale,
            runs: 1,
        },
        progress,
    )
    .await?;
    progress.note("4/5 synchronous commit levels");
    let sync_opts = BenchOptions {
        duration: o.sync_duration,
        clients: 4,
        scale: 4,
    };
    let sync = Scratch::with(opts, true, progress, async |c| {
        sync_bench::sync(c, &sync_opts, progress).await
    })
    .await?;
    progress.note("5/5 drill writer throughput");
    let writer = writer::run(
        opts,
        &WriterBenchOptions {
            writers: 4,
            duration: o.writer_duration,
        },
        progress,
    )
    .await?;
    Ok(AllReport {
        up,
        roles,
        rejoin,
        sync,
        writer,
        took_s: started.elapsed().as_secs_f64(),
    })
}
