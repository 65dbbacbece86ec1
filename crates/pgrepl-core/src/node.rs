//! One node's server as operations see it: its data directory (files pgrepl reads and writes
//! on the host) and its processes, through the cluster's runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::postgres::server::{self, ControlData};
use crate::postgres::wal_end::{self, SegmentEnd};
use crate::postgres::Lsn;
use crate::runtime::{self, ProcessState, Runtime, StopMode};
use crate::spec::NodeSpec;

#[derive(Debug, Clone)]
pub struct Server {
    runtime: Arc<dyn Runtime>,
    pub node: NodeSpec,
    pub data: PathBuf,
}

impl Server {
    pub fn new(runtime: Arc<dyn Runtime>, node: NodeSpec, data: PathBuf) -> Self {
        Server {
            runtime,
            node,
            data,
        }
    }

    pub fn exists(&self) -> bool {
        has_data(&self.data)
    }

    pub async fn state(&self) -> Result<ProcessState> {
        self.runtime.state(&self.node).await
    }

    /// Whether the server runs (a frozen one does): a node the runtime cannot tell about
    /// counts as not running.
    pub async fn is_running(&self) -> bool {
        self.state().await.is_ok_and(|s| s != ProcessState::Stopped)
    }

    pub async fn start(&self) -> Result<()> {
        self.runtime.start(&self.node).await
    }

    pub async fn stop(&self, mode: StopMode) -> Result<()> {
        self.runtime.stop(&self.node, mode).await
    }

    /// The whole node at once (a crash); false when it was not running.
    pub async fn kill(&self) -> Result<bool> {
        self.runtime.kill(&self.node).await
    }

    pub fn newest_wal_timeline(&self) -> Option<u32> {
        server::newest_wal_timeline(&self.data)
    }

    pub async fn log_tail(&self, lines: usize) -> String {
        self.runtime.log_tail(&self.node, lines).await
    }

    /// initdb with the superuser password from `pwfile` and data checksums on (pg_rewind
    /// needs checksums or wal_log_hints; 18 enables them by default, 15 does not). WAL
    /// segments of 1 MB instead of 16: pg_rewind copies every segment file of the source,
    /// and each promotion leaves a whole segment file per timeline behind.
    ///
    /// Into `into` (a staging directory: a data directory appears only once it is complete),
    /// killed with pgrepl.
    pub async fn initdb(&self, into: &Path, pwfile: &Path) -> Result<()> {
        let mut cmd = self.runtime.command(&self.node, "initdb");
        runtime::die_with_parent(&mut cmd);
        cmd.arg("-D")
            .arg(into)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--data-checksums",
                "--wal-segsize=1",
                // One syncfs afterwards instead of an fsync per file: half of initdb's time.
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        runtime::run("initdb", &mut cmd).await?;
        runtime::sync_filesystem(into)
    }

    pub async fn controldata(&self) -> Result<ControlData> {
        let mut cmd = self.runtime.command(&self.node, "pg_controldata");
        cmd.arg("-D").arg(&self.data);
        let out = runtime::run("pg_controldata", &mut cmd).await?;
        Ok(ControlData::parse(&String::from_utf8_lossy(&out.stdout)))
    }
}

impl Server {
    /// Where the WAL of this stopped server ends: the position it had reached (pg_waldump
    /// over its newest segments). None when that cannot be told: better no figure than an
    /// older one.
    pub async fn wal_end(&self) -> Option<Lsn> {
        use std::io::Read;
        let pg_wal = self.data.join("pg_wal");
        let mut tried = 0;
        for name in wal_end::segments_newest_first(&pg_wal) {
            let path = pg_wal.join(&name);
            let mut file = std::fs::File::open(&path).ok()?;
            // Every segment file has the cluster's segment size.
            let size = file.metadata().ok()?.len();
            let start = wal_end::segment_start(&name, size)?;
            let mut page = [0u8; 16];
            if file.read_exact(&mut page).is_err() || !wal_end::holds_wal(&page, start) {
                continue;
            }
            if tried == wal_end::SEGMENTS_TO_TRY {
                return None;
            }
            tried += 1;
            let mut cmd = self.runtime.command(&self.node, "pg_waldump");
            cmd.arg("--quiet").arg("--path").arg(&pg_wal).arg(&name);
            let out = cmd.output().await.ok()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            match wal_end::read_waldump(out.status.success(), &stderr, Lsn(start.0 + size)) {
                SegmentEnd::At(end) => return Some(end),
                SegmentEnd::Empty => continue,
                SegmentEnd::Unknown => {
                    tracing::debug!(node = %self.node.name, %stderr, "pg_waldump cannot tell where WAL ends");
                    return None;
                }
            }
        }
        None
    }
}

/// Whether a data directory holds a cluster (initdb or a clone made it).
pub fn has_data(data: &Path) -> bool {
    data.join("PG_VERSION").is_file()
}
