//! `pgrepl bench writer`: the drill writer's throughput, so that a drill measures the
//! cluster and not its own client. A lone local primary with `synchronous_commit=off`; the
//! unpaced writer's acknowledged single-row commits per second, beside pgbench running the
//! same INSERT (prepared, one row a transaction, as many clients) in the same run.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::{pgbench_rate, Scratch};
use crate::cluster::{Cluster, Options};
use crate::drill::writer::{Writer, WriterOptions};
use crate::error::{Error, Result, ResultExt};
use crate::ops::{primary, wait};
use crate::postgres::conn::Conn;
use crate::postgres::queries;
use crate::progress::{Progress, Silent};

/// Issue 5's target for the writer on this 2-core machine.
pub const TARGET_COMMITS_PER_S: f64 = 5000.0;

/// pgbench's table: the drill table's shape, so that both write the same rows.
const PGBENCH_TABLE: &str = "pgrepl_bench_insert";

#[derive(Debug, Clone)]
pub struct WriterBenchOptions {
    pub writers: usize,
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct WriterReport {
    pub postgres: String,
    pub writers: usize,
    pub duration_s: f64,
    /// Acknowledged commits per second of the drill writer (after its first commit).
    pub writer_commits_per_s: f64,
    pub writer_errors: usize,
    /// pgbench's tps for the same INSERT, same number of clients.
    pub pgbench_tps: f64,
    pub pgbench_latency_ms: f64,
    /// The writer's rate over pgbench's.
    pub ratio: f64,
}

pub async fn run(
    opts: &Options,
    o: &WriterBenchOptions,
    progress: &dyn Progress,
) -> Result<WriterReport> {
    if o.writers == 0 || o.duration < Duration::from_secs(1) {
        return Err(Error::Invalid(
            "--writers must be at least 1 and --duration at least 1s".into(),
        ));
    }
    Scratch::with(opts, false, progress, async |c| {
        measure(c, o, progress).await
    })
    .await
}

async fn measure(
    cluster: &Cluster,
    o: &WriterBenchOptions,
    progress: &dyn Progress,
) -> Result<WriterReport> {
    let node = cluster.spec.root().name.clone();
    progress.step(&format!("initializing a lone primary {node}"));
    primary::init(cluster, &node, &Silent).await?;
    let c = cluster.connect(&node).await?;
    // One statement a call: a multi-statement batch is a transaction, which ALTER SYSTEM
    // refuses.
    for sql in [
        "ALTER SYSTEM SET synchronous_commit = off".to_string(),
        "SELECT pg_reload_conf()".to_string(),
        format!(
            "CREATE TABLE {PGBENCH_TABLE} (writer int NOT NULL, seq bigint NOT NULL, \
             sent_at timestamptz NOT NULL, PRIMARY KEY (writer, seq))"
        ),
    ] {
        c.batch_execute(&sql)
            .await
            .what(|| format!("cannot prepare {node}: {sql}"))?;
    }
    // A reload is asynchronous: new sessions must see it before anything is timed.
    wait::until(
        "synchronous_commit = off to take effect",
        Duration::from_secs(10),
        || async {
            let c = cluster.connect(&node).await.ok()?;
            (queries::show(&c, "synchronous_commit").await.ok()? == "off").then_some(())
        },
    )
    .await?;

    progress.step(&format!(
        "drill writer: {} unpaced writers for {} s",
        o.writers,
        o.duration.as_secs()
    ));
    checkpoint(&c, &node).await?;
    let writer = Writer::start(
        cluster,
        WriterOptions {
            writers: o.writers,
            rate: None,
            origin: Instant::now(),
            ..WriterOptions::default()
        },
    )
    .await?;
    // Counted from the first commit: connecting is not writing (pgbench's tps likewise
    // leaves out its initial connection time).
    let first = wait::until(
        "the drill writer's first commit",
        Duration::from_secs(30),
        || async { writer.last_ack() },
    )
    .await;
    let (n0, t0) = (writer.acked(), Instant::now());
    if first.is_ok() {
        tokio::time::sleep(o.duration).await;
    }
    let (n1, elapsed) = (writer.acked(), t0.elapsed());
    let log = writer.stop().await;
    first?;
    let writer_commits_per_s = (n1 - n0) as f64 / elapsed.as_secs_f64();

    progress.step(&format!(
        "pgbench: the same INSERT, {} clients for {} s",
        o.writers,
        o.duration.as_secs()
    ));
    checkpoint(&c, &node).await?;
    let script = cluster.dir.join("bench-insert.sql");
    // Random keys: pgbench has no per-client counter, and a collision among 2^63 is
    // not going to happen in a few seconds.
    cluster.write_file(
        &script,
        &format!(
            "\\set seq random(1, 9223372036854775806)\n\
             INSERT INTO {PGBENCH_TABLE} (writer, seq, sent_at) VALUES (:client_id, :seq, now());\n"
        ),
    )?;
    let w = o.writers.to_string();
    let (pgbench_tps, pgbench_latency_ms) = pgbench_rate(
        cluster,
        &node,
        "postgres",
        &[
            "-n",
            "-M",
            "prepared",
            "-f",
            &script.to_string_lossy(),
            "-c",
            &w,
            "-j",
            &w,
            "-T",
            &o.duration.as_secs().to_string(),
        ],
    )
    .await?;
    Ok(WriterReport {
        postgres: cluster.pg.version.clone(),
        writers: o.writers,
        duration_s: elapsed.as_secs_f64(),
        writer_commits_per_s,
        writer_errors: log.errors.len(),
        pgbench_tps,
        pgbench_latency_ms,
        ratio: writer_commits_per_s / pgbench_tps,
    })
}

/// A checkpoint falling inside one run but not the other would skew the comparison.
async fn checkpoint(c: &Conn, node: &str) -> Result<()> {
    c.batch_execute_within("CHECKPOINT", crate::postgres::conn::SLOW_BOUND)
        .await
        .what(|| format!("cannot checkpoint {node}"))
}
