//! Server control for one data directory: initdb, start, stop, crash, and control data.
//! Readiness comes from PostgreSQL itself (`pg_ctl -w` reads postmaster.pid's status line).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::postgres::{Lsn, PgInstall};
use crate::runtime::{signals, Runner};

/// How long pg_ctl may wait for a start or a stop before we call it failed.
const PG_CTL_TIMEOUT_SECS: &str = "120";

pub struct Server<'a> {
    pub pg: &'a PgInstall,
    pub runner: &'a Runner,
    pub data: PathBuf,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnects clients, writes a shutdown checkpoint: no WAL lost.
    Fast,
    /// Exits without a checkpoint: crash recovery at the next start.
    Immediate,
}

/// What `pg_controldata` says about a data directory, readable while the server is down.
#[derive(Debug, Clone, Default)]
pub struct ControlData {
    /// `shut down`, `shut down in recovery`, `in production`, `in archive recovery`, ...
    pub state: String,
    /// initdb's identifier of the database system; every clone keeps it.
    pub system_id: Option<u64>,
    pub checkpoint_lsn: Option<Lsn>,
    pub checkpoint_timeline: Option<u32>,
    pub min_recovery_lsn: Option<Lsn>,
    pub min_recovery_timeline: Option<u32>,
    pub checksums: bool,
    pub wal_log_hints: bool,
}

impl ControlData {
    pub fn parse(text: &str) -> ControlData {
        let mut c = ControlData::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "Database cluster state" => c.state = v.to_string(),
                "Database system identifier" => c.system_id = v.parse().ok(),
                "Latest checkpoint location" => c.checkpoint_lsn = v.parse().ok(),
                "Latest checkpoint's TimeLineID" => c.checkpoint_timeline = v.parse().ok(),
                "Minimum recovery ending location" => c.min_recovery_lsn = v.parse().ok(),
                "Min recovery ending loc's timeline" => c.min_recovery_timeline = v.parse().ok(),
                "Data page checksum version" => c.checksums = v != "0",
                "wal_log_hints setting" => c.wal_log_hints = v == "on",
                _ => {}
            }
        }
        c
    }

    /// Whether the last shutdown was clean (pg_rewind needs that of its target).
    pub fn cleanly_shut_down(&self) -> bool {
        self.state == "shut down" || self.state == "shut down in recovery"
    }
}

impl<'a> Server<'a> {
    pub fn exists(&self) -> bool {
        self.data.join("PG_VERSION").is_file()
    }

    /// The running postmaster's pid, from postmaster.pid, if that process is alive.
    pub fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        signals::alive(pid).then_some(pid)
    }

    /// Removes a postmaster.pid whose process is gone. PostgreSQL clears a stale one itself,
    /// unless its pid is a zombie not yet reaped (kill(pid, 0) still succeeds): then it
    /// refuses to start with "lock file already exists".
    pub fn remove_stale_pidfile(&self) {
        let path = self.data.join("postmaster.pid");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let pid: Option<i32> = text.lines().next().and_then(|l| l.trim().parse().ok());
        if pid.is_some_and(|p| !signals::alive(p.abs())) {
            let _ = std::fs::remove_file(&path);
        }
    }

    /// The timeline of the newest WAL segment in pg_wal, readable while the server is down.
    /// pg_control's checkpoint timeline can be several promotions old (a node that crashed
    /// soon after becoming primary has not checkpointed on its new timeline yet).
    pub fn newest_wal_timeline(&self) -> Option<u32> {
        std::fs::read_dir(self.data.join("pg_wal"))
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .max()
            .and_then(|n| u32::from_str_radix(&n[..8], 16).ok())
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// initdb with the superuser password from `pwfile` and data checksums on (pg_rewind
    /// needs checksums or wal_log_hints; 18 enables them by default, 15 does not). WAL
    /// segments of 1 MB instead of 16: pg_rewind copies every segment file of the source,
    /// and each promotion leaves a whole segment file per timeline behind.
    pub async fn initdb(&self, pwfile: &Path) -> Result<()> {
        let mut cmd = self.runner.command(self.pg.program("initdb"));
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
        self.runner.run("initdb", &mut cmd).await?;
        Ok(())
    }

    /// Starts the server and waits until it accepts connections (or, for a standby, has
    /// reached a consistent state). A failed start carries the end of the server log.
    pub async fn start(&self) -> Result<()> {
        self.remove_stale_pidfile();
        let mut cmd = self.runner.command(self.pg.program("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "start"]);
        self.runner
            .run("pg_ctl start", &mut cmd)
            .await
            .map_err(|e| Error::Command {
                what: format!("starting {}", self.data.display()),
                detail: format!(
                    "{e}\n--- last lines of {} ---\n{}",
                    self.log.display(),
                    tail(&self.log, 15)
                ),
            })?;
        Ok(())
    }

    pub async fn stop(&self, mode: StopMode) -> Result<()> {
        let mut cmd = self.runner.command(self.pg.program("pg_ctl"));
        cmd.arg("-D").arg(&self.data).args([
            "-m",
            match mode {
                StopMode::Fast => "fast",
                StopMode::Immediate => "immediate",
            },
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "stop",
        ]);
        self.runner.run("pg_ctl stop", &mut cmd).await?;
        Ok(())
    }

    /// SIGKILL of the postmaster and all its backends at once: a node crash. Returns once
    /// the postmaster is gone.
    pub async fn crash(&self) -> Result<bool> {
        let Some(pid) = self.pid() else {
            return Ok(false);
        };
        signals::crash(pid);
        for _ in 0..500 {
            if !signals::alive(pid) {
                self.remove_stale_pidfile();
                return Ok(true);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(Error::Timeout {
            what: format!("postmaster {pid} to die after SIGKILL"),
            after: std::time::Duration::from_secs(5),
        })
    }

    pub async fn controldata(&self) -> Result<ControlData> {
        let mut cmd = self.runner.command(self.pg.program("pg_controldata"));
        cmd.arg("-D").arg(&self.data);
        let out = self.runner.run("pg_controldata", &mut cmd).await?;
        Ok(ControlData::parse(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_controldata() {
        let c = ControlData::parse(
            "Database system identifier:           7442281797235735552\n\
             Database cluster state:               in archive recovery\n\
             Latest checkpoint location:           0/3000080\n\
             Latest checkpoint's TimeLineID:       2\n\
             Minimum recovery ending location:     0/3000100\n\
             Min recovery ending loc's timeline:   2\n\
             Data page checksum version:           1\n",
        );
        assert_eq!(c.state, "in archive recovery");
        assert_eq!(c.system_id, Some(7442281797235735552));
        assert_eq!(c.checkpoint_lsn, Some(Lsn(0x3000080)));
        assert_eq!(c.checkpoint_timeline, Some(2));
        assert!(c.checksums);
        assert!(!c.cleanly_shut_down());
    }
}
