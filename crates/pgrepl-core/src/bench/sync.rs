//! `pgrepl bench sync`: what synchronous replication costs. pgbench on the current primary
//! with asynchronous replication, then with each commit level and 1 or 2 synchronous
//! standbys; every row compared with the asynchronous one.

use std::time::Duration;

use serde::Serialize;

use crate::cluster::Cluster;
use crate::error::{Error, Result, ResultExt};
use crate::observe::topology;
use crate::postgres::conn::Conn;
use crate::progress::Progress;
use crate::spec::{SyncMethod, SyncSpec};

use crate::ops::sync::{apply_to_primary, configure, DEFAULT_STANDBYS};

const DATABASE: &str = "pgrepl_bench";
/// From the cheapest wait to the dearest: the standby has the WAL in memory, on disk,
/// replayed.
pub const LEVELS: &[&str] = &["remote_write", "on", "remote_apply"];

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub duration: Duration,
    pub clients: u32,
    pub scale: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// Application names of the synchronous standbys; empty for asynchronous replication.
    pub sync_standbys: Vec<String>,
    pub synchronous_commit: String,
    pub tps: f64,
    pub latency_ms: f64,
    /// This row's TPS over the asynchronous row's.
    pub tps_ratio: f64,
    pub latency_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub primary: String,
    pub postgres: String,
    pub duration_s: f64,
    pub clients: u32,
    pub scale: u32,
    pub rows: Vec<BenchRow>,
}

pub async fn sync(
    cluster: &Cluster,
    opts: &BenchOptions,
    progress: &dyn Progress,
) -> Result<BenchReport> {
    if opts.clients == 0 || opts.scale == 0 || opts.duration < Duration::from_secs(1) {
        return Err(Error::Invalid(
            "--clients and --scale must be at least 1, --duration at least 1s".into(),
        ));
    }
    let primary = topology::current_primary(cluster).await?;
    let candidates = sync_candidates(cluster, &primary).await;
    if candidates.is_empty() {
        return Err(Error::Precondition(format!(
            "no standby streams from {primary}, the primary: start one (`pgrepl up`) before benchmarking synchronous replication"
        )));
    }
    let c = cluster.connect(&primary).await?;
    // Whatever happens, the primary goes back to what the spec says.
    let result = run(cluster, &c, &primary, &candidates, opts, progress).await;
    progress.step(&format!(
        "restoring {primary}'s synchronous replication settings"
    ));
    let restored = apply_to_primary(cluster, &primary).await;
    let dropped = c
        .batch_execute_within(
            &format!("DROP DATABASE IF EXISTS {DATABASE}"),
            crate::postgres::conn::SLOW_BOUND,
        )
        .await
        .what(|| format!("cannot drop database {DATABASE}"));
    let rows = result?;
    restored?;
    dropped?;
    Ok(BenchReport {
        primary,
        postgres: cluster.pg.version.clone(),
        duration_s: opts.duration.as_secs_f64(),
        clients: opts.clients,
        scale: opts.scale,
        rows,
    })
}

/// Standbys streaming from the primary, the spec's synchronous ones (else sync2, sync3) first.
async fn sync_candidates(cluster: &Cluster, primary: &str) -> Vec<String> {
    let probe = topology::probe(cluster, primary).await;
    let preferred: Vec<String> = match &cluster.spec.sync {
        Some(s) => s.standbys.clone(),
        None => DEFAULT_STANDBYS.iter().map(|s| s.to_string()).collect(),
    };
    let mut names: Vec<String> = probe
        .downstreams
        .iter()
        .filter(|d| d.state.as_deref() == Some("streaming"))
        .map(|d| d.application_name.clone())
        .collect();
    names.sort_by_key(|n| {
        preferred
            .iter()
            .position(|p| p == n)
            .unwrap_or(preferred.len())
    });
    names.truncate(2);
    names
}

async fn run(
    cluster: &Cluster,
    c: &Conn,
    primary: &str,
    candidates: &[String],
    opts: &BenchOptions,
    progress: &dyn Progress,
) -> Result<Vec<BenchRow>> {
    progress.step(&format!(
        "creating the pgbench tables (scale {}) on {primary}",
        opts.scale
    ));
    configure(c, primary, None).await?;
    c.batch_execute_within(
        &format!("DROP DATABASE IF EXISTS {DATABASE}"),
        crate::postgres::conn::SLOW_BOUND,
    )
    .await
    .what(|| format!("cannot drop database {DATABASE}"))?;
    c.batch_execute_within(
        &format!("CREATE DATABASE {DATABASE}"),
        crate::postgres::conn::SLOW_BOUND,
    )
    .await
    .what(|| format!("cannot create database {DATABASE}"))?;
    pgbench(
        cluster,
        primary,
        &["-i", "-q", "-s", &opts.scale.to_string()],
    )
    .await?;

    let mut configs: Vec<(Vec<String>, &str)> = vec![(Vec::new(), "on")];
    for k in 1..=candidates.len() {
        for level in LEVELS {
            configs.push((candidates[..k].to_vec(), level));
        }
    }
    let total = configs.len();
    let mut rows: Vec<BenchRow> = Vec::new();
    for (i, (standbys, level)) in configs.into_iter().enumerate() {
        let label = if standbys.is_empty() {
            "asynchronous replication".to_string()
        } else {
            format!(
                "synchronous_commit = {level}, sync: {}",
                standbys.join(", ")
            )
        };
        progress.step(&format!(
            "run {}/{total}: {label} ({} s)",
            i + 1,
            opts.duration.as_secs()
        ));
        let sync = (!standbys.is_empty()).then(|| SyncSpec {
            num: standbys.len() as u32,
            standbys: standbys.clone(),
            method: SyncMethod::First,
            commit: Some(level.to_string()),
            allow_unknown: false,
        });
        configure(c, primary, sync.as_ref()).await?;
        // A checkpoint falling inside one run but not another would skew the comparison.
        c.batch_execute_within("CHECKPOINT", crate::postgres::conn::SLOW_BOUND)
            .await
            .what(|| format!("cannot checkpoint {primary}"))?;
        let (tps, latency_ms) = crate::bench::pgbench_rate(
            cluster,
            primary,
            DATABASE,
            &[
                "-n",
                "-c",
                &opts.clients.to_string(),
                "-j",
                &opts.clients.min(2).to_string(),
                "-T",
                &opts.duration.as_secs().to_string(),
            ],
        )
        .await?;
        let (base_tps, base_lat) = rows
            .first()
            .map_or((tps, latency_ms), |r| (r.tps, r.latency_ms));
        rows.push(BenchRow {
            sync_standbys: standbys,
            synchronous_commit: level.to_string(),
            tps,
            latency_ms,
            tps_ratio: tps / base_tps,
            latency_ratio: latency_ms / base_lat,
        });
    }
    Ok(rows)
}

async fn pgbench(cluster: &Cluster, primary: &str, args: &[&str]) -> Result<String> {
    crate::bench::pgbench(cluster, primary, DATABASE, args).await
}

/// `tps = 812.3 (without initial connection time)` and `latency average = 4.92 ms`.
pub fn parse_pgbench(out: &str) -> Option<(f64, f64)> {
    let value = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((value("tps = ")?, value("latency average = ")?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_pgbench_output() {
        let out = "transaction type: <builtin: TPC-B (sort of)>\nscaling factor: 4\n\
                   number of clients: 4\nlatency average = 4.921 ms\n\
                   initial connection time = 12.3 ms\n\
                   tps = 812.345678 (without initial connection time)\n";
        assert_eq!(super::parse_pgbench(out), Some((812.345678, 4.921)));
        assert_eq!(super::parse_pgbench("nothing"), None);
    }
}
