//! `pgrepl load wal` (the lab's 03_generate_wal.sql): write WAL on the primary, then time
//! how long each standby takes to replay it.
//!
//! The WAL is what matters, not the rows: the table that carries them is made fresh for each
//! run and dropped at its end (also when it fails or is interrupted), so runs do not add up
//! on disk. A request is bounded by the free space of the cluster's filesystem, and is
//! written in batches of about 1 MB, so an interruption stops it within one batch.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;
use tokio_postgres::NoTls;

use crate::cluster::Cluster;
use crate::error::{Error, Result, ResultExt};
use crate::observe::topology;
use crate::postgres::conn::Conn;
use crate::postgres::{queries, Lsn};
use crate::progress::Progress;

const TABLE: &str = "pgrepl_wal_load";
const MB: u64 = 1024 * 1024;

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

/// Writes about `mb` MB of WAL on the current primary and times each standby's replay.
/// When `interrupted` completes (Ctrl-C), the statement under way is cancelled, the table
/// dropped, and the load ends with `Error::Interrupted`.
pub async fn wal(
    cluster: &Cluster,
    mb: u64,
    progress: &dyn Progress,
    interrupted: impl Future<Output = ()>,
) -> Result<LoadReport> {
    if mb == 0 {
        return Err(Error::Invalid(
            "--mb must be at least 1 (MB of WAL to write)".into(),
        ));
    }
    check_free_space(&cluster.dir, mb, cluster.spec.nodes.len() as u64)?;
    let primary = topology::current_primary(cluster).await?;
    let c = cluster.connect(&primary).await?;
    // A run that was killed left its table: this one starts from nothing.
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, payload text)"
    ))
    .await
    .what(|| format!("cannot create {TABLE}"))?;
    tokio::pin!(interrupted);
    let result = tokio::select! {
        r = load(cluster, &c, &primary, mb, progress) => r,
        _ = &mut interrupted => {
            let _ = c.cancel_token().cancel_query(NoTls).await;
            Err(Error::Interrupted(format!(
                "interrupted: the WAL load on {primary} stopped"
            )))
        }
    };
    // The connection runs its statements in order: the drop waits for the cancelled insert.
    let dropped = c
        .batch_execute(&format!("DROP TABLE IF EXISTS {TABLE}"))
        .await
        .what(|| format!("cannot drop {TABLE} on {primary}: drop it with `pgrepl sql {primary} \"DROP TABLE {TABLE}\"`"));
    let report = result?;
    dropped?;
    Ok(report)
}

/// Each node keeps a copy of what is written, as WAL and as table data, until the table is
/// dropped and the WAL recycled: a request that would fill the disk is refused up front.
fn check_free_space(dir: &Path, mb: u64, nodes: u64) -> Result<()> {
    let at = crate::runtime::runner::existing_ancestor(dir);
    let st = nix::sys::statvfs::statvfs(&at).map_err(|e| Error::Io {
        what: format!("cannot read the free space of {}", at.display()),
        source: e.into(),
    })?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let per_mb = 2 * nodes.max(1);
    let budget = free / 2;
    if mb.saturating_mul(MB).saturating_mul(per_mb) > budget {
        return Err(Error::Invalid(format!(
            "--mb {mb} would need about {} MB on disk ({mb} MB of WAL and as much table data on each of {nodes} nodes), but the filesystem of {} has {} MB free; pgrepl uses at most half of it: ask for at most --mb {}",
            mb.saturating_mul(per_mb),
            at.display(),
            free / MB,
            budget / MB / per_mb
        )));
    }
    Ok(())
}

async fn load(
    cluster: &Cluster,
    c: &Conn,
    primary: &str,
    mb: u64,
    progress: &dyn Progress,
) -> Result<LoadReport> {
    // Connect to the standbys first: connecting is not replaying.
    let standbys: Vec<String> = cluster
        .spec
        .nodes
        .iter()
        .filter(|n| n.name != primary)
        .map(|n| n.name.clone())
        .collect();
    let clients = join_all(standbys.iter().map(|n| cluster.connect(n))).await;
    let start_lsn = current_lsn(c).await?;
    let target = mb * MB;
    let started = Instant::now();
    let mut end_lsn = start_lsn;
    while end_lsn.bytes_after(start_lsn) < target {
        progress.step(&format!(
            "writing WAL on {primary}: {} of {mb} MB",
            end_lsn.bytes_after(start_lsn) / MB
        ));
        // About 1 MB of WAL a batch: 1000 rows of 960 bytes, too short to be TOAST-compressed.
        c.batch_execute(&format!("INSERT INTO {TABLE} (payload) SELECT repeat(md5(random()::text), 30) FROM generate_series(1, 1000)"))
            .await
            .what(|| "cannot write load".into())?;
        end_lsn = current_lsn(c).await?;
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
        primary: primary.to_string(),
        start_lsn,
        end_lsn,
        wal_bytes: end_lsn.bytes_after(start_lsn),
        write_ms,
        standbys: times,
    })
}

async fn current_lsn(c: &Conn) -> Result<Lsn> {
    let s: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .what(|| "cannot read the WAL position".into())?
        .get(0);
    Ok(s.parse().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_beyond_half_the_free_space_is_refused() {
        let dir = std::env::temp_dir();
        let e = check_free_space(&dir, u64::MAX / MB, 4).unwrap_err();
        assert!(e.to_string().contains("ask for at most --mb"), "{e}");
        check_free_space(&dir, 1, 1).unwrap();
    }
}
