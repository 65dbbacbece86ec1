//! `pgrepl drill matrix`: the failover drill under asynchronous replication, then under
//! `FIRST 1 (sync2, sync3)` and `ANY 1 (sync2, sync3)`. The lab's lesson in numbers: async
//! can lose acknowledged commits, sync must not.
//!
//! Every mode starts from the same primary (the one the matrix found), so that the modes
//! differ only in their replication setting; the cluster's own synchronous replication
//! setting is put back at the end, also when a mode failed.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cluster::Cluster;
use crate::drill::{self, DrillOptions, DrillReport, Event, Operations};
use crate::error::{Error, Result, ResultExt};
use crate::observe::topology;
use crate::ops::sync::DEFAULT_STANDBYS;
use crate::progress::Progress;
use crate::spec::{validate_sync_names, ClusterSpec, SyncMethod, SyncSpec};

/// A replication mode the failover drill runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct Mode {
    /// `async`, `FIRST 1 (sync2, sync3)`, ...
    pub label: String,
    /// A file-name-safe label: `async`, `first-1`, `any-1`.
    pub slug: String,
    /// None: asynchronous replication.
    pub sync: Option<SyncSpec>,
}

/// The matrix's modes over the candidate synchronous standbys `standbys`.
pub fn modes(standbys: &[String]) -> Vec<Mode> {
    let sync = |method: SyncMethod| {
        let word = match method {
            SyncMethod::First => "FIRST",
            SyncMethod::Any => "ANY",
        };
        Mode {
            label: format!("{word} 1 ({})", standbys.join(", ")),
            slug: format!("{}-1", word.to_lowercase()),
            sync: Some(SyncSpec {
                standbys: standbys.to_vec(),
                method,
                num: 1,
                // The default level, so that the modes differ only in who must confirm.
                commit: None,
                allow_unknown: false,
            }),
        }
    };
    vec![
        Mode {
            label: "async".into(),
            slug: "async".into(),
            sync: None,
        },
        sync(SyncMethod::First),
        sync(SyncMethod::Any),
    ]
}

/// One mode's drill.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: String,
    /// The setting as the spec's `[sync]` held it; None under async replication.
    pub synchronous_standby_names: Option<String>,
    #[serde(flatten)]
    pub report: DrillReport,
    #[serde(skip)]
    pub slug: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatrixReport {
    pub event: String,
    pub writers: usize,
    pub rate: f64,
    pub modes: Vec<ModeReport>,
    /// The primary every mode started from, and that the matrix left.
    pub primary: String,
    /// The cluster's synchronous replication setting, put back at the end (None: async).
    pub restored_sync: Option<String>,
}

/// Runs the failover drill `opts.runs` times under each mode, then restores the primary and
/// the original synchronous replication setting.
pub async fn run(
    cluster: &Cluster,
    opts: &DrillOptions,
    ops: &Operations,
    progress: &dyn Progress,
) -> Result<MatrixReport> {
    opts.validate()?;
    check(ops)?;
    let standbys: Vec<String> = DEFAULT_STANDBYS.iter().map(|s| s.to_string()).collect();
    let modes = modes(&standbys);
    // The file, not the caller's copy: earlier operations may have changed it.
    let original = ClusterSpec::load(&cluster.spec_path)?.sync;
    let home = topology::current_primary(cluster).await?;
    preflight(cluster, &home, &modes)?;

    let outcome = run_modes(cluster, &home, &modes, opts, ops, progress).await;
    let restored = restore(
        cluster,
        &home,
        original.as_ref(),
        ops,
        progress,
        outcome.is_ok(),
    )
    .await;
    let reports = match (outcome, restored) {
        (Ok(r), Ok(())) => r,
        (Err(e), Ok(())) => return Err(e),
        (Ok(_), Err(r)) => {
            return Err(Error::Precondition(format!(
                "the matrix ran, but putting the cluster back failed: {r}; {}",
                restore_hint(original.as_ref(), &home)
            )))
        }
        (Err(e), Err(r)) => {
            return Err(Error::Precondition(format!(
                "{e}; putting the cluster back also failed: {r}; {}",
                restore_hint(original.as_ref(), &home)
            )))
        }
    };
    Ok(MatrixReport {
        event: Event::Failover.name().into(),
        writers: opts.writers,
        rate: opts.rate,
        modes: reports,
        primary: home,
        restored_sync: original.map(|s| s.standby_names_setting()),
    })
}

/// The operations the matrix needs, before anything runs.
fn check(ops: &Operations) -> Result<()> {
    Event::Failover.check(ops)?;
    ops.switchover()?;
    ops.sync_enable()?;
    ops.sync_disable()?;
    Ok(())
}

/// Refuses, changing nothing, a cluster the synchronous modes cannot run on.
fn preflight(cluster: &Cluster, home: &str, modes: &[Mode]) -> Result<()> {
    let home_app = cluster.node(home)?.application_name();
    for sync in modes.iter().filter_map(|m| m.sync.as_ref()) {
        validate_sync_names(&cluster.spec, sync, false).map_err(|e| {
            Error::Precondition(format!(
                "the matrix runs the failover drill under '{}', which this cluster cannot do: {e}",
                sync.standby_names_setting()
            ))
        })?;
        if sync.standbys.iter().any(|s| s == home_app) {
            let other = cluster
                .spec
                .nodes
                .iter()
                .find(|n| !sync.standbys.iter().any(|s| s == n.application_name()))
                .map(|n| n.name.as_str())
                .unwrap_or("another node");
            return Err(Error::Precondition(format!(
                "{home} ({home_app}) is the primary, but the matrix's synchronous modes need it as a standby ('{}'): switch over first (`pgrepl switchover --to {other}`)",
                sync.standby_names_setting()
            )));
        }
    }
    Ok(())
}

async fn run_modes(
    cluster: &Cluster,
    home: &str,
    modes: &[Mode],
    opts: &DrillOptions,
    ops: &Operations,
    progress: &dyn Progress,
) -> Result<Vec<ModeReport>> {
    let mut reports = Vec::new();
    for mode in modes {
        let labeled = Labeled {
            label: &mode.label,
            inner: progress,
        };
        back_home(cluster, home, ops, &labeled).await?;
        match &mode.sync {
            Some(s) => (ops.sync_enable()?)(cluster, s, &labeled).await?,
            None => (ops.sync_disable()?)(cluster, &labeled).await?,
        }
        let report = drill::run(cluster, Event::Failover, opts, ops, &labeled).await?;
        reports.push(ModeReport {
            mode: mode.label.clone(),
            synchronous_standby_names: mode.sync.as_ref().map(|s| s.standby_names_setting()),
            report,
            slug: mode.slug.clone(),
        });
    }
    Ok(reports)
}

/// A switchover back to `home` when a failover moved the primary away.
async fn back_home(
    cluster: &Cluster,
    home: &str,
    ops: &Operations,
    progress: &dyn Progress,
) -> Result<()> {
    let primary = topology::current_primary(cluster).await?;
    if primary == home {
        return Ok(());
    }
    progress.note(&format!(
        "switching over from {primary} back to {home}, the primary the matrix started from"
    ));
    (ops.switchover()?)(cluster, home, progress).await
}

/// The primary back where it was (only after a successful matrix: after a failure the
/// cluster may not be healthy enough for a switchover), then the original sync setting.
async fn restore(
    cluster: &Cluster,
    home: &str,
    original: Option<&SyncSpec>,
    ops: &Operations,
    progress: &dyn Progress,
    healthy: bool,
) -> Result<()> {
    if healthy {
        back_home(cluster, home, ops, progress).await?;
    }
    progress.step("restoring the original synchronous replication setting");
    match original {
        Some(s) => (ops.sync_enable()?)(cluster, s, progress).await,
        None => (ops.sync_disable()?)(cluster, progress).await,
    }
}

fn restore_hint(original: Option<&SyncSpec>, home: &str) -> String {
    let sync = match original {
        Some(s) => format!(
            "`pgrepl sync enable --method {} --num {} --standbys {}`",
            match s.method {
                SyncMethod::First => "first",
                SyncMethod::Any => "any",
            },
            s.num,
            s.standbys.join(",")
        ),
        None => "`pgrepl sync disable`".into(),
    };
    format!(
        "check the cluster with `pgrepl status`; the matrix started with {home} as the primary, and the original setting is restored with {sync}"
    )
}

/// Prefixes a mode's progress lines with the mode.
struct Labeled<'a> {
    label: &'a str,
    inner: &'a dyn Progress,
}

impl Progress for Labeled<'_> {
    fn step(&self, msg: &str) {
        self.inner.step(&format!("[{}] {msg}", self.label));
    }
    fn note(&self, msg: &str) {
        self.inner.note(&format!("[{}] {msg}", self.label));
    }
}

/// Writes `matrix.json` into `dir` and each mode's report (`report.json` and its charts) into
/// `dir/<mode>`; returns the files written.
pub fn write_report(report: &MatrixReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).what(|| format!("cannot create {}", dir.display()))?;
    let json = dir.join("matrix.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(report).expect("a report serializes"),
    )
    .what(|| format!("cannot write {}", json.display()))?;
    let mut files = vec![json];
    for m in &report.modes {
        files.extend(drill::write_report(&m.report, &dir.join(&m.slug))?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_runs_async_then_first_then_any() {
        let names = vec!["sync2".to_string(), "sync3".to_string()];
        let m = modes(&names);
        let labels: Vec<&str> = m.iter().map(|m| m.label.as_str()).collect();
        assert_eq!(
            labels,
            ["async", "FIRST 1 (sync2, sync3)", "ANY 1 (sync2, sync3)"]
        );
        let slugs: Vec<&str> = m.iter().map(|m| m.slug.as_str()).collect();
        assert_eq!(slugs, ["async", "first-1", "any-1"]);
        assert_eq!(m[0].sync, None);
        assert_eq!(
            m[2].sync.as_ref().unwrap().standby_names_setting(),
            r#"ANY 1 ("sync2", "sync3")"#
        );
    }
}
