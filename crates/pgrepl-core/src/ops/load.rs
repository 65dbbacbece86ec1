//! `pgrepl load wal` (the lab's 03_generate_wal.sql): write WAL on the primary, then time
//! how long each standby takes to replay it.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::error::{Result, ResultExt};
use crate::observe::topology;
use crate::postgres::{queries, Lsn};
use crate::progress::Progress;

#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub primary: String,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub wal_bytes: u64,
    pub write_ms: f64,
    pub standbys: Vec<ReplayTime>,
}

#[derive(Debug, Serialize)]
pub struct ReplayTime {
    pub node: String,
    /// From the end of the writes to the standby having replayed them; None if it did not
    /// within the timeout.
    pub replay_ms: Option<f64>,
}

pub async fn wal(cluster: &Cluster, mb: u64, progress: &dyn Progress) -> Result<LoadReport> {
    let primary = topology::current_primary(cluster).await?;
    let c = cluster.connect(&primary).await?;
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS pgrepl_wal_load (id bigserial PRIMARY KEY, payload text)",
    )
    .await
    .what(|| "cannot create pgrepl_wal_load".into())?;
    // Connect to the standbys first: connecting is not replaying.
    let standbys: Vec<String> = cluster
        .spec
        .nodes
        .iter()
        .filter(|n| n.name != primary)
        .map(|n| n.name.clone())
        .collect();
    let clients = join_all(standbys.iter().map(|n| cluster.connect(n))).await;
    let start_lsn = current_lsn(&c).await?;
    let target = mb * 1024 * 1024;
    let started = Instant::now();
    let mut end_lsn = start_lsn;
    while end_lsn.bytes_after(start_lsn) < target {
        progress.step(&format!(
            "writing WAL on {primary}: {} of {mb} MB",
            end_lsn.bytes_after(start_lsn) / (1024 * 1024)
        ));
        // About 1 MB of WAL a batch: 1000 rows of 960 bytes, too short to be TOAST-compressed.
        c.batch_execute("INSERT INTO pgrepl_wal_load (payload) SELECT repeat(md5(random()::text), 30) FROM generate_series(1, 1000)")
            .await
            .what(|| "cannot write load".into())?;
        end_lsn = current_lsn(&c).await?;
    }
    let write_ms = started.elapsed().as_secs_f64() * 1000.0;
    let written = Instant::now();

    progress.step("waiting for the standbys to replay it");
    let times = join_all(standbys.iter().zip(clients).map(|(n, c)| async move {
        let Ok(c) = c else {
            return ReplayTime {
                node: n.clone(),
                replay_ms: None,
            };
        };
        let deadline = written + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(p) = queries::position(&c).await {
                if p.replay_lsn.is_some_and(|r| r >= end_lsn) {
                    return ReplayTime {
                        node: n.clone(),
                        replay_ms: Some(written.elapsed().as_secs_f64() * 1000.0),
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ReplayTime {
            node: n.clone(),
            replay_ms: None,
        }
    }))
    .await;
    Ok(LoadReport {
        primary,
        start_lsn,
        end_lsn,
        wal_bytes: end_lsn.bytes_after(start_lsn),
        write_ms,
        standbys: times,
    })
}

async fn current_lsn(c: &tokio_postgres::Client) -> Result<Lsn> {
    let s: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .what(|| "cannot read the WAL position".into())?
        .get(0);
    Ok(s.parse().unwrap_or_default())
}
