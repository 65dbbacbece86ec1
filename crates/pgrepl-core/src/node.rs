//! One node's server as operations see it: its data directory (files pgrepl reads and writes
//! on the host) and its processes, through the cluster's runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::postgres::server::{self, ControlData};
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
    pub async fn initdb(&self, pwfile: &Path) -> Result<()> {
        let mut cmd = self.runtime.command(&self.node, "initdb");
        cmd.arg("-D")
            .arg(&self.data)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--data-checksums",
                "--wal-segsize=1",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        runtime::run("initdb", &mut cmd).await?;
        Ok(())
    }

    pub async fn controldata(&self) -> Result<ControlData> {
        let mut cmd = self.runtime.command(&self.node, "pg_controldata");
        cmd.arg("-D").arg(&self.data);
        let out = runtime::run("pg_controldata", &mut cmd).await?;
        Ok(ControlData::parse(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// Whether a data directory holds a cluster (initdb or a clone made it).
pub fn has_data(data: &Path) -> bool {
    data.join("PG_VERSION").is_file()
}
