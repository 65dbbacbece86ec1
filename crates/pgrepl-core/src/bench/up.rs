//! `pgrepl bench up`: the 4-node lab from nothing to all streaming, against the bare steps
//! it is made of (initdb, one pg_basebackup, one server start) measured in the same run.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::{Scratch, Stats};
use crate::cluster::Options;
use crate::error::Result;
use crate::progress::{Progress, Silent};
use crate::runtime::{self, StopMode};

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
