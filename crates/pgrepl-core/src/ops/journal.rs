//! Journals of multi-step operations (failover, switchover, rejoin): a small file in the
//! cluster directory, written before the first step whose purpose a rerun could not read back
//! from PostgreSQL, and removed once the operation is complete. A command killed in between
//! finds it and finishes the job. It holds node names only, never anything secret.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::error::{Result, ResultExt};

/// `<cluster dir>/.<name>.json`.
pub fn path(cluster: &Cluster, name: &str) -> PathBuf {
    cluster.dir.join(format!(".{name}.json"))
}

/// The journal, if there is one that can be read (an unreadable one counts as none: it can
/// only be the remains of a write that never completed, since writes are atomic).
pub fn read<T: DeserializeOwned>(cluster: &Cluster, name: &str) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path(cluster, name)).ok()?).ok()
}

pub fn write<T: Serialize>(cluster: &Cluster, name: &str, entry: &T) -> Result<()> {
    cluster.write_file(
        &path(cluster, name),
        &serde_json::to_string(entry).expect("a journal serializes"),
    )
}

/// The command that completes an interrupted failover or switchover, when a journal says
/// one was interrupted: the advice a command that finds the cluster half-changed gives.
pub fn interrupted(cluster: &Cluster) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        target: String,
    }
    if let Some(e) = read::<Entry>(cluster, "switchover") {
        return Some(format!(
            "a switchover to {} was interrupted: complete it with `pgrepl switchover --to {}`",
            e.target, e.target
        ));
    }
    read::<Entry>(cluster, "failover")
        .map(|_| "a failover was interrupted: complete it with `pgrepl failover`".to_string())
}

pub fn clear(cluster: &Cluster, name: &str) -> Result<()> {
    let p = path(cluster, name);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).what(|| format!("cannot remove {}", p.display()))
        }
        _ => Ok(()),
    }
}
