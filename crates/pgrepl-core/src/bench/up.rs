//! `pgrepl bench up`: the 4-node lab from nothing to all streaming, against the bare steps
//! it is made of (initdb, one pg_basebackup, one server start) measured in the same run; or,
//! with another runtime, against the local runtime's `up` measured in the same run.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::{Scratch, Stats};
use crate::cluster::Options;
use crate::error::Result;
use crate::progress::{Progress, Silent};
use crate::runtime::{self, StopMode};
use crate::spec::RuntimeKind;

#[derive(Debug, Serialize)]
pub struct UpReport {
    pub postgres: String,
    pub up: Stats,
    pub initdb: Stats,
    pub clone: Stats,
    pub start: Stats,
    /// Median of `up` over the sum of the bare steps' medians.
    pub ratio: f64,
}

pub async fn run(opts: &Options, runs: usize, progress: &dyn Progress) -> Result<UpReport> {
    let (mut up, mut initdb, mut clone, mut start) = (vec![], vec![], vec![], vec![]);
    let mut postgres = String::new();
    for i in 0..runs {
        progress.step(&format!("run {}/{runs}: up", i + 1));
        let scratch = Scratch::lab(opts, progress).await?;
        let result = one_run(&scratch, progress, i, runs).await;
        postgres = scratch.cluster.pg.version.clone();
        scratch.teardown().await;
        let (u, d, c, s) = result?;
        up.push(u);
        initdb.push(d);
        clone.push(c);
        start.push(s);
    }
    let (up, initdb, clone, start) = (
        Stats::of(&up),
        Stats::of(&initdb),
        Stats::of(&clone),
        Stats::of(&start),
    );
    Ok(UpReport {
        postgres,
        ratio: up.median_ms / (initdb.median_ms + clone.median_ms + start.median_ms),
        up,
        initdb,
        clone,
        start,
    })
}

async fn one_run(
    scratch: &Scratch,
    progress: &dyn Progress,
    i: usize,
    runs: usize,
) -> Result<(Duration, Duration, Duration, Duration)> {
    let cluster = &scratch.cluster;
    let t = Instant::now();
    crate::ops::up::up(cluster, &Silent).await?;
    let up = t.elapsed();

    progress.step(&format!("run {}/{runs}: bare steps", i + 1));
    // Bare initdb, with the flags pgrepl uses.
    let pwfile = cluster.dir.join(".bench-pw");
    cluster.write_file(&pwfile, "bench-only-password")?;
    let root = cluster.spec.root();
    let mut bare = cluster.server(&root.name)?;
    bare.data = cluster.dir.join("bare-initdb");
    let t = Instant::now();
    bare.initdb(&pwfile).await?;
    let initdb = t.elapsed();

    // One bare clone from the running primary, fast checkpoint, WAL streamed.
    // Run for a standby, as a clone is.
    let standby = cluster
        .spec
        .nodes
        .iter()
        .find(|n| !n.is_root())
        .unwrap_or(root);
    let mut cmd = cluster.runtime.command(standby, "pg_basebackup");
    cmd.arg("-D")
        .arg(cluster.dir.join("bare-clone"))
        .args(["-X", "stream", "-c", "fast"])
        .arg(format!(
            "--dbname={}",
            cluster.tool_conninfo(
                standby,
                root,
                &cluster.spec.cluster.replication_user,
                "bench"
            )
        ));
    let t = Instant::now();
    runtime::run("pg_basebackup", &mut cmd).await?;
    let clone = t.elapsed();

    // One server start (pg_ctl -w) of the primary after a clean stop.
    let server = cluster.server(&root.name)?;
    server.stop(StopMode::Fast).await?;
    let t = Instant::now();
    server.start().await?;
    let start = t.elapsed();
    Ok((up, initdb, clone, start))
}

/// `up` on another runtime beside the local one's.
#[derive(Debug, Serialize)]
pub struct RuntimeUpReport {
    pub postgres: String,
    pub runtime: String,
    pub local: Stats,
    pub other: Stats,
    /// Median of the other runtime's `up` over the local runtime's.
    pub ratio: f64,
}

/// Runs `up` of a fresh lab on `other` and on the local runtime, alternately (each run
/// starts with the other one than the last, so that a noisy moment of a shared machine
/// weighs on both).
pub async fn compare(
    opts: &Options,
    other: RuntimeKind,
    runs: usize,
    progress: &dyn Progress,
) -> Result<RuntimeUpReport> {
    let (mut local, mut theirs) = (vec![], vec![]);
    let mut postgres = String::new();
    for i in 0..runs {
        let order = if i % 2 == 0 {
            [RuntimeKind::Local, other]
        } else {
            [other, RuntimeKind::Local]
        };
        for kind in order {
            progress.step(&format!("run {}/{runs}: up on the {kind} runtime", i + 1));
            let scratch = Scratch::lab_on(opts, kind, progress).await?;
            let t = Instant::now();
            let result = crate::ops::up::up(&scratch.cluster, &Silent).await;
            let took = t.elapsed();
            postgres = scratch.cluster.pg.version.clone();
            scratch.teardown().await;
            result?;
            if kind == RuntimeKind::Local {
                local.push(took);
            } else {
                theirs.push(took);
            }
        }
    }
    let (local, other_stats) = (Stats::of(&local), Stats::of(&theirs));
    Ok(RuntimeUpReport {
        postgres,
        runtime: other.to_string(),
        ratio: other_stats.median_ms / local.median_ms,
        local,
        other: other_stats,
    })
}
