//! `pgrepl bench rejoin`: rejoining a diverged old primary by pg_rewind against rejoining it
//! by a fresh clone, on a database of a realistic size (pgbench -i). pg_rewind copies what
//! changed since the fork point; a clone copies everything, so the ratio grows with the data.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::roles::split_brain;
use crate::bench::{pgbench, Scratch, Stats};
use crate::cluster::{Cluster, Options};
use crate::error::{Error, Result, ResultExt};
use crate::ops::{control, rejoin, wait};
use crate::postgres::queries;
use crate::progress::{Progress, Silent};

#[derive(Debug, Clone)]
pub struct RejoinOptions {
    /// pgbench's scale factor: about 15 MB each (35 makes about 520 MB).
    pub scale: u32,
    /// Rejoins of each kind.
    pub runs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RejoinReport {
    pub postgres: String,
    pub scale: u32,
    pub database_bytes: i64,
    /// Stop, checkpoint on the new primary, pg_rewind, start, until streaming.
    pub rewind: Stats,
    /// Stop, move the data aside, pg_basebackup, start, until streaming.
    pub reclone: Stats,
    /// Re-clone's median over pg_rewind's.
    pub ratio: f64,
    /// What pg_rewind said it copied, per rewind.
    pub rewound: Vec<String>,
}

pub async fn run(
    opts: &Options,
    o: &RejoinOptions,
    progress: &dyn Progress,
) -> Result<RejoinReport> {
    if o.scale == 0 || o.runs == 0 {
        return Err(Error::Invalid(
            "--scale and --runs must be at least 1".into(),
        ));
    }
    Scratch::with(opts, true, progress, async |c| {
        measure(c, o, progress).await
    })
    .await
}

async fn measure(
    cluster: &mut Cluster,
    o: &RejoinOptions,
    progress: &dyn Progress,
) -> Result<RejoinReport> {
    let (mut a, mut b) = ("pg0".to_string(), "pg1".to_string());
    // Two nodes are enough; the others would only follow the diverging primary.
    for n in ["pg2", "pg3"] {
        control::stop(cluster, n, &Silent).await?;
    }
    progress.step(&format!("pgbench -i -s {} on {a}", o.scale));
    pgbench(
        cluster,
        &a,
        "postgres",
        &["-i", "-q", "-s", &o.scale.to_string()],
    )
    .await?;
    let c = cluster.connect(&a).await?;
    let database_bytes: i64 = c
        .query_one("SELECT pg_database_size('postgres')", &[])
        .await
        .what(|| format!("cannot read the database size on {a}"))?
        .get(0);
    // pg_rewind reads the old primary's WAL back to the last checkpoint before the fork;
    // without a checkpoint after the load that is the one before it, whose WAL the old
    // primary's shutdown checkpoint recycles (the rewind then fails with "could not find
    // previous WAL record"). A real primary checkpoints every checkpoint_timeout.
    c.batch_execute_within("CHECKPOINT", crate::postgres::conn::SLOW_BOUND)
        .await
        .what(|| format!("cannot checkpoint {a}"))?;
    progress.step(&format!("waiting for {b} to replay the pgbench tables"));
    caught_up(cluster, &a, &b).await?;

    let (mut rewinds, mut reclones, mut rewound) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=o.runs {
        for reclone in [false, true] {
            progress.step(&format!(
                "run {i}/{}: rejoining {a} by {}",
                o.runs,
                if reclone { "re-clone" } else { "pg_rewind" }
            ));
            split_brain(cluster, &a, &b).await?;
            let t = Instant::now();
            let outcome = rejoin::rejoin(cluster, &a, &b, None, reclone, &Silent).await?;
            let took = t.elapsed();
            if reclone {
                reclones.push(took);
            } else {
                rewinds.push(took);
                rewound.push(super::roles::rewind_line(&outcome));
            }
            std::mem::swap(&mut a, &mut b);
        }
    }
    let (rewind, reclone) = (Stats::of(&rewinds), Stats::of(&reclones));
    Ok(RejoinReport {
        postgres: cluster.pg.version.clone(),
        scale: o.scale,
        database_bytes,
        ratio: reclone.median_ms / rewind.median_ms,
        rewind,
        reclone,
        rewound,
    })
}

/// Until `standby` has replayed everything `primary` wrote so far: a promotion before that
/// would leave the data behind, and the rewind would copy it.
async fn caught_up(cluster: &Cluster, primary: &str, standby: &str) -> Result<()> {
    let p = cluster.connect(primary).await?;
    let target = queries::position(&p).await?.current_lsn.unwrap_or_default();
    let s = cluster.connect(standby).await?;
    wait::until(
        &format!("{standby} to replay up to {target}"),
        Duration::from_secs(600),
        || async {
            let pos = queries::position(&s).await.ok()?;
            pos.replay_lsn.is_some_and(|r| r >= target).then_some(())
        },
    )
    .await
}
