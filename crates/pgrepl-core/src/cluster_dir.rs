//! The cluster directory and what pgrepl may do to it. pgrepl works only in a directory it
//! created or one that was empty when it took it over, and marks it as its own; it deletes
//! only what it put there, so a `data_dir` pointed at a directory with other files in it can
//! never cost those files.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, ResultExt};
use crate::ops::config::CLUSTER_CONF;
use crate::runtime::Runner;
use crate::secrets;

/// The marker file: the cluster's name, and whether pgrepl created the directory itself.
pub const MARKER: &str = ".pgrepl-cluster";
const LOCK: &str = ".lock";
pub const LOG_DIR: &str = "log";
/// Files pgrepl writes at the top of the cluster directory.
const OWN_FILES: &[&str] = &[
    MARKER,
    LOCK,
    "pgpass",
    ".initdb-pw",
    ".role-verifier",
    ".bench-pw",
    "bench-insert.sql",
    // Journals of an interrupted failover or switchover (ops::journal).
    ".failover.json",
    ".switchover.json",
    // The monitor's event log and its one-monitor-per-cluster lock.
    crate::monitor::events_log::FILE,
    crate::monitor::run::LOCK_FILE,
];
/// Directories of `bench up`'s bare steps, and the docker runtime's /etc files for a user's
/// image.
const OWN_DIRS: &[&str] = &["bare-initdb", "bare-clone", crate::runtime::docker::ETC_DIR];
/// What clusters made before the marker existed have: a passfile that starts so.
const LEGACY_PASSFILE_HEADER: &str = "# pgrepl: generated passwords";

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    cluster: String,
    /// False when pgrepl took over an existing empty directory: it then leaves the directory
    /// itself (mode, owner, existence) alone.
    created: bool,
}

fn read_marker(dir: &Path) -> Option<Marker> {
    toml::from_str(&std::fs::read_to_string(dir.join(MARKER)).ok()?).ok()
}

fn write_marker(dir: &Path, marker: &Marker, runner: &Runner) -> Result<()> {
    let text = format!(
        "# pgrepl: this directory holds a pgrepl cluster; `pgrepl down --purge` deletes only what\n\
         # pgrepl created in it.\n{}",
        toml::to_string(marker).expect("a marker serializes")
    );
    secrets::write_private(&dir.join(MARKER), &text, runner)
}

/// Whether `dir` holds a cluster of a pgrepl that predates the marker.
fn is_legacy_cluster(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("pgpass")).is_ok_and(|t| t.starts_with(LEGACY_PASSFILE_HEADER))
}

/// Makes `dir` the directory of cluster `name`, or refuses: it is created when missing
/// (private to the OS user), taken over when empty (its mode and owner left as they are),
/// and kept when it bears our marker. A directory holding anything else is not pgrepl's.
pub async fn claim(dir: &Path, name: &str, runner: &Runner) -> Result<()> {
    match read_marker(dir) {
        Some(m) if m.cluster == name => return ensure_log_dir(dir, runner),
        Some(m) => {
            return Err(Error::Precondition(format!(
                "{} holds pgrepl cluster '{}', not '{name}': set another data_dir for '{name}' in the cluster file",
                dir.display(),
                m.cluster
            )))
        }
        None => {}
    }
    let created = if dir.exists() {
        let meta = std::fs::metadata(dir).what(|| format!("cannot read {}", dir.display()))?;
        let empty = meta.is_dir()
            && std::fs::read_dir(dir)
                .what(|| format!("cannot read {}", dir.display()))?
                .next()
                .is_none();
        if is_legacy_cluster(dir) {
            true
        } else if !empty {
            return Err(Error::Precondition(format!(
                "{} is not empty and is not a pgrepl cluster directory (it has no {MARKER}): choose an empty or new directory as data_dir",
                dir.display()
            )));
        } else {
            runner.check_reachable(dir).await?;
            false
        }
    } else {
        let parent = dir.parent().unwrap_or(Path::new("/"));
        runner
            .check_reachable(&crate::runtime::runner::existing_ancestor(parent))
            .await?;
        std::fs::create_dir_all(parent).what(|| format!("cannot create {}", parent.display()))?;
        runner.check_reachable(parent).await?;
        runner.create_private_dir(dir)?;
        true
    };
    write_marker(
        dir,
        &Marker {
            cluster: name.to_string(),
            created,
        },
        runner,
    )?;
    ensure_log_dir(dir, runner)
}

fn ensure_log_dir(dir: &Path, runner: &Runner) -> Result<()> {
    let log = dir.join(LOG_DIR);
    if !log.exists() {
        runner.create_private_dir(&log)?;
    }
    Ok(())
}

/// Serializes commands on one cluster: two at once (say a rejoin and a switchover) could
/// wreck it, and one that read the cluster file before the other saved it would save a
/// stale topology.
pub struct ClusterLock {
    _file: File,
}

/// Claims the directory and takes its lock, or says who holds it.
pub async fn lock(dir: &Path, name: &str, runner: &Runner) -> Result<ClusterLock> {
    claim(dir, name, runner).await?;
    let path = dir.join(LOCK);
    let file = File::create(&path).what(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(ClusterLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Precondition(format!(
            "another pgrepl command is working on cluster '{name}' (it holds {}): wait for it to finish",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).what(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Whether some process holds the cluster's lock, asked without taking it (a lock taken
/// just to test it would make a command started at that instant fail as busy): the kernel's
/// table of flock() locks, /proc/locks, names the lock file by device and inode.
pub fn is_locked(dir: &Path) -> bool {
    is_flocked(&dir.join(LOCK))
}

/// Whether some process holds a flock() on `path` (see [`is_locked`]). Where the kernel's
/// table does not name it (a file system whose device numbers differ), this says no: the
/// callers take the lock before they act, and that is what excludes.
pub fn is_flocked(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let dev = meta.dev();
    // /proc/locks writes the device as major:minor in hex (glibc's encoding of dev_t).
    let (major, minor) = (
        ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff),
        ((dev >> 12) & 0xffff_ff00) | (dev & 0xff),
    );
    let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    std::fs::read_to_string("/proc/locks").is_ok_and(|t| {
        t.lines()
            .any(|l| l.contains("FLOCK") && l.split_whitespace().any(|f| f == id))
    })
}

/// Directory names of a node's data: its own, its clone in progress, copies a re-clone kept.
fn is_node_dir(name: &str, nodes: &[&str]) -> bool {
    nodes.iter().any(|n| {
        name == *n
            || name == format!(".{n}.clone")
            || name
                .strip_prefix(&format!("{n}.before-rejoin-"))
                .is_some_and(|stamp| !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether an entry of the cluster directory is something pgrepl made.
fn is_own(entry: &Path, nodes: &[&str]) -> bool {
    let Some(name) = entry.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if entry.is_dir() {
        return name == LOG_DIR
            || OWN_DIRS.contains(&name)
            || is_node_dir(name, nodes)
            || entry.join(CLUSTER_CONF).is_file();
    }
    OWN_FILES.contains(&name)
        // A rejoin's journal, and files a write interrupted before its rename.
        || (name.starts_with(".rejoin-") && name.ends_with(".json"))
        || name.starts_with(".tmp")
}

/// What `down --purge` deletes and what it leaves.
#[derive(Debug, Default)]
pub struct PurgePlan {
    pub delete: Vec<PathBuf>,
    pub foreign: Vec<PathBuf>,
}

/// Sorts the directory's entries into pgrepl's and foreign ones; None when it is not
/// pgrepl's directory at all.
pub fn purge_plan(dir: &Path, name: &str, nodes: &[&str]) -> Result<Option<PurgePlan>> {
    if !dir.exists() {
        return Ok(None);
    }
    match read_marker(dir) {
        Some(m) if m.cluster == name => {}
        _ if is_legacy_cluster(dir) => {}
        _ => {
            return Err(Error::Precondition(format!(
                "{} is not cluster '{name}''s directory (no {MARKER} naming it): pgrepl deletes nothing there",
                dir.display()
            )))
        }
    }
    let mut plan = PurgePlan::default();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .what(|| format!("cannot read {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .what(|| format!("cannot read {}", dir.display()))?;
    entries.sort();
    for e in entries {
        if e.file_name().is_some_and(|n| n == LOG_DIR) && e.is_dir() {
            plan_log_dir(&e, nodes, &mut plan)?;
        } else if is_own(&e, nodes) {
            plan.delete.push(e);
        } else {
            plan.foreign.push(e);
        }
    }
    // The marker goes last: an interrupted purge can be run again.
    if let Some(i) = plan.delete.iter().position(|p| p.ends_with(MARKER)) {
        let marker = plan.delete.remove(i);
        plan.delete.push(marker);
    }
    Ok(Some(plan))
}

/// The server logs are pgrepl's; the log directory goes too when nothing else is in it.
fn plan_log_dir(log: &Path, nodes: &[&str], plan: &mut PurgePlan) -> Result<()> {
    let mut foreign = false;
    for e in std::fs::read_dir(log).what(|| format!("cannot read {}", log.display()))? {
        let p = e.what(|| format!("cannot read {}", log.display()))?.path();
        // `<node>.log`, and the logs of a rejoin's steps, `<node>.rejoin-<step>.log`.
        let ours = p.is_file()
            && p.file_stem()
                .and_then(|s| s.to_str())
                // A server's log (`pg0.log`), or the log of a step of a node's rejoin
                // (`pg0.rejoin-pg_rewind.log`).
                .map(|s| s.split_once('.').map_or(s, |(node, _)| node))
                .is_some_and(|s| nodes.contains(&s) || s == "bare")
            && p.extension().is_some_and(|x| x == "log");
        if ours {
            plan.delete.push(p);
        } else {
            foreign = true;
            plan.foreign.push(p);
        }
    }
    if !foreign {
        plan.delete.push(log.to_path_buf());
    }
    Ok(())
}

/// Deletes what the plan says is pgrepl's, then the directory itself when it is empty and
/// pgrepl created it. Returns whether the directory is gone.
pub fn purge(dir: &Path, plan: &PurgePlan) -> Result<bool> {
    let created = read_marker(dir).is_none_or(|m| m.created);
    for p in &plan.delete {
        let res = if p.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).what(|| format!("cannot delete {}", p.display())),
        }
    }
    if !plan.foreign.is_empty() || !created {
        return Ok(false);
    }
    std::fs::remove_dir(dir).what(|| format!("cannot delete {}", dir.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_without_taking_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_locked(dir.path()));
        let f = File::create(dir.path().join(LOCK)).unwrap();
        assert!(!is_locked(dir.path()));
        f.try_lock().unwrap();
        assert!(is_locked(dir.path()));
        drop(f);
        assert!(!is_locked(dir.path()));
    }

    #[test]
    fn node_directories_are_recognized_by_name() {
        let nodes = ["pg0", "pg1"];
        assert!(is_node_dir("pg0", &nodes));
        assert!(is_node_dir(".pg1.clone", &nodes));
        assert!(is_node_dir("pg1.before-rejoin-1700000000", &nodes));
        assert!(!is_node_dir("pg1.before-rejoin-", &nodes));
        assert!(!is_node_dir("pg2", &nodes));
        assert!(!is_node_dir("photos", &nodes));
    }

    #[test]
    fn purge_keeps_foreign_files_and_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        std::fs::create_dir(&dir).unwrap();
        let marker = Marker {
            cluster: "lab".into(),
            created: true,
        };
        std::fs::write(dir.join(MARKER), toml::to_string(&marker).unwrap()).unwrap();
        std::fs::create_dir_all(dir.join("pg0")).unwrap();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        std::fs::write(dir.join("log/pg0.log"), "").unwrap();
        std::fs::write(dir.join("log/pg0.rejoin-pg_rewind.log"), "").unwrap();
        std::fs::write(dir.join(".switchover.json"), "{}").unwrap();
        std::fs::write(dir.join("pgpass"), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let plan = purge_plan(&dir, "lab", &["pg0"]).unwrap().unwrap();
        assert_eq!(plan.foreign, vec![dir.join("notes.txt")]);
        assert!(plan.delete.last().unwrap().ends_with(MARKER));
        assert!(!purge(&dir, &plan).unwrap());
        assert!(dir.join("notes.txt").is_file());
        assert!(!dir.join("pg0").exists() && !dir.join("log").exists());
        assert!(!dir.join(MARKER).exists());
    }

    #[test]
    fn a_directory_without_the_marker_is_not_purged() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        assert!(purge_plan(tmp.path(), "lab", &["pg0"]).is_err());
    }
}
