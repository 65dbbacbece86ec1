//! Names of a cluster's network objects. Everything but one host-side veth lives inside the
//! cluster's own namespaces, so only that veth is bound by IFNAMSIZ (15 bytes); namespace
//! names are file names under /run/netns and may be longer.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Prefix of every pgrepl namespace and host veth.
pub const PREFIX: &str = "pgrepl-";
pub use crate::runtime::netfault::tools::{ns_path, NETNS_DIR};

/// Fixed names inside the cluster's namespaces, where nothing else lives to clash with them.
pub const BRIDGE: &str = "br0";
pub const SWITCH_HOST_PORT: &str = "host";
pub const NODE_IF: &str = "eth0";

/// A cluster's network identity: a short id from its directory (8 hex digits of SHA-256: a
/// clash between two clusters of one machine is negligible), and the directory itself,
/// written as the host veth's and the bridge's alias so that nothing is deleted before its
/// alias proves it is this cluster's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNet {
    pub id: String,
    pub dir: String,
}

impl ClusterNet {
    /// For the cluster whose data lives in `dir` (which need not exist yet: the part that
    /// exists is resolved, so `up` before and `down` after its creation agree).
    pub fn for_dir(dir: &Path) -> ClusterNet {
        Self::for_canonical(&canonical(dir).to_string_lossy())
    }

    pub fn for_canonical(dir: &str) -> ClusterNet {
        let digest = Sha256::digest(dir.as_bytes());
        ClusterNet {
            id: digest[..4].iter().map(|b| format!("{b:02x}")).collect(),
            dir: dir.to_string(),
        }
    }

    /// The namespace holding the cluster's bridge (its "switch").
    pub fn switch_ns(&self) -> String {
        format!("{}sw", self.ns_prefix())
    }

    pub fn node_ns(&self, node: &str) -> String {
        format!("{}n-{node}", self.ns_prefix())
    }

    /// The one interface in the host's namespace: 7 + 8 = 15 bytes, IFNAMSIZ - 1.
    pub fn host_veth(&self) -> String {
        format!("{PREFIX}{}", self.id)
    }

    /// Every namespace of this cluster starts with it, and no other's does.
    pub fn ns_prefix(&self) -> String {
        format!("{PREFIX}{}-", self.id)
    }

    pub fn alias(&self) -> String {
        format!("pgrepl:{}", self.dir)
    }
}

/// The bridge port (in the switch namespace) of the node at `index` in the cluster file.
pub fn switch_port(index: usize) -> String {
    format!("n{index}")
}

/// The existing part of `p` resolved (symlinks, `..`), the rest appended as it is.
fn canonical(p: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&cur) {
            return missing.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (cur.file_name().map(|f| f.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_belong_to_the_cluster() {
        let c = ClusterNet::for_canonical("/tmp/some/cluster");
        assert_eq!(c.host_veth().len(), 15, "{}", c.host_veth());
        assert!(c.node_ns("pg3").starts_with(&c.ns_prefix()));
        assert!(c.switch_ns().starts_with(&c.ns_prefix()));
        assert_eq!(c.alias(), "pgrepl:/tmp/some/cluster");
    }

    #[test]
    fn id_is_stable_and_differs_by_dir() {
        let a = ClusterNet::for_canonical("/srv/a");
        assert_eq!(a, ClusterNet::for_canonical("/srv/a"));
        assert_ne!(a.id, ClusterNet::for_canonical("/srv/b").id);
    }

    #[test]
    fn a_directory_not_created_yet_gets_the_id_it_will_have() {
        let tmp = tempfile::tempdir().unwrap();
        let later = tmp.path().join(".pgrepl/lab");
        let before = ClusterNet::for_dir(&later);
        std::fs::create_dir_all(&later).unwrap();
        assert_eq!(before, ClusterNet::for_dir(&later));
    }
}
