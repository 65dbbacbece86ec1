//! What a node's container is: its name, network, addresses, mounts and command. One value
//! serves both the engine (create) and `pgrepl compose export`, so the two never differ.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Labels on everything pgrepl creates in the engine: teardown removes only what carries
/// them, and pgrepl refuses a same-named object whose labels are not its own.
pub const LABEL_CLUSTER: &str = "pgrepl.cluster";
pub const LABEL_DIR: &str = "pgrepl.dir";
pub const LABEL_NODE: &str = "pgrepl.node";

/// Inside a container every node listens on PostgreSQL's own port.
pub const PORT: u16 = 5432;
/// The local socket's directory, on a tmpfs: nothing stale survives a kill, and nothing of
/// it lands in the data directory on the host. Debian's libpq looks there by default.
pub const SOCKET_DIR: &str = "/var/run/postgresql";
/// The container's stop signal: `docker stop` is then PostgreSQL's fast shutdown.
pub const STOP_SIGNAL: &str = "SIGINT";
pub const STOP_TIMEOUT_S: i64 = 60;
const SHM_BYTES: i64 = 256 << 20;

/// The cluster `lab` has the lab's own names (containers `pg0`..`pg3` on network `pgnet`);
/// any other cluster prefixes its name, so that two clusters never clash in one engine.
pub fn container_name(cluster: &str, node: &str) -> String {
    if cluster == crate::spec::DEFAULT_CLUSTER_NAME {
        node.to_string()
    } else {
        format!("{cluster}-{node}")
    }
}

pub fn network_name(cluster: &str) -> String {
    if cluster == crate::spec::DEFAULT_CLUSTER_NAME {
        "pgnet".into()
    } else {
        format!("{cluster}-pgnet")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    pub name: String,
    /// The node's name: its host name and its alias on the network (peers reach `pg0:5432`).
    pub hostname: String,
    pub image: String,
    /// `uid:gid` of the OS user, who owns the data directories.
    pub user: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub mounts: Vec<BindMount>,
    /// Where the node's port is published on the host.
    pub host_ip: String,
    pub host_port: u16,
    pub network: String,
    /// Pinned, so that fault rules by address stay right across restarts.
    pub ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    pub socket_dir: &'static str,
    /// tmpfs options of the socket directory: its owner must be given, `mode=` alone is not
    /// applied.
    pub socket_tmpfs: String,
    pub stop_signal: &'static str,
    pub stop_timeout_s: i64,
    pub shm_bytes: i64,
}

/// The labels that make an object this cluster's.
pub fn owner_labels(cluster: &str, dir: &std::path::Path) -> Vec<(String, String)> {
    vec![
        (LABEL_CLUSTER.into(), cluster.into()),
        (LABEL_DIR.into(), dir.display().to_string()),
    ]
}

/// Whether an object's labels say it is this cluster's.
pub fn is_owned(
    labels: &std::collections::HashMap<String, String>,
    owner: &[(String, String)],
) -> bool {
    owner
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
}

pub struct PlanInput<'a> {
    pub cluster: &'a str,
    pub dir: &'a std::path::Path,
    pub node: &'a crate::spec::NodeSpec,
    pub image: &'a str,
    /// The server program: an absolute host path (pgrepl's image keeps host paths) or a
    /// name the image's PATH finds (a user's image).
    pub postgres: String,
    pub uid: u32,
    pub gid: u32,
    pub ip: Ipv4Addr,
    /// /etc/passwd and /etc/group written by pgrepl, mounted over a user image's: peer
    /// authentication needs the OS user's uid to have a name inside.
    pub etc: Option<(PathBuf, PathBuf)>,
}

pub fn plan(i: &PlanInput) -> ContainerPlan {
    let data = crate::runtime::data_dir(i.dir, &i.node.name);
    // The whole cluster directory at the same path inside: primary_conninfo's passfile and
    // every path pgrepl writes resolve unchanged, and a file replaced by a rename (the
    // passfile) is seen anew, which a single-file mount (pinned to an inode) would not.
    let mut mounts = vec![BindMount {
        source: i.dir.to_path_buf(),
        target: i.dir.to_path_buf(),
        read_only: false,
    }];
    if let Some((passwd, group)) = &i.etc {
        for (src, target) in [(passwd, "/etc/passwd"), (group, "/etc/group")] {
            mounts.push(BindMount {
                source: src.clone(),
                target: target.into(),
                read_only: true,
            });
        }
    }
    let mut labels: BTreeMap<String, String> = owner_labels(i.cluster, i.dir).into_iter().collect();
    labels.insert(LABEL_NODE.into(), i.node.name.clone());
    ContainerPlan {
        name: container_name(i.cluster, &i.node.name),
        hostname: i.node.name.clone(),
        image: i.image.to_string(),
        user: format!("{}:{}", i.uid, i.gid),
        cmd: vec![i.postgres.clone(), "-D".into(), data.display().to_string()],
        // `docker exec pg0 psql` finds the socket without -h, whatever libpq's compiled-in
        // default (the provisioned 18 looks in /tmp). Not a secret.
        env: vec![format!("PGHOST={SOCKET_DIR}")],
        mounts,
        host_ip: i.node.host.to_string(),
        host_port: i.node.port,
        network: network_name(i.cluster),
        ip: i.ip,
        labels,
        socket_dir: SOCKET_DIR,
        socket_tmpfs: format!("mode=0775,uid={},gid={}", i.uid, i.gid),
        stop_signal: STOP_SIGNAL,
        stop_timeout_s: STOP_TIMEOUT_S,
        shm_bytes: SHM_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_has_the_lab_s_names_and_others_are_prefixed() {
        assert_eq!(container_name("lab", "pg0"), "pg0");
        assert_eq!(network_name("lab"), "pgnet");
        assert_eq!(container_name("t1", "pg0"), "t1-pg0");
        assert_eq!(network_name("t1"), "t1-pgnet");
    }

    #[test]
    fn a_node_runs_postgres_on_its_host_data_path() {
        let spec = crate::spec::ClusterSpec::lab("lab", 15432).unwrap();
        let p = plan(&PlanInput {
            cluster: "lab",
            dir: std::path::Path::new("/srv/c"),
            node: &spec.nodes[1],
            image: "pgrepl/postgres:18.6",
            postgres: "/pg/bin/postgres".into(),
            uid: 101,
            gid: 104,
            ip: Ipv4Addr::new(10, 210, 3, 11),
            etc: None,
        });
        assert_eq!(p.cmd, vec!["/pg/bin/postgres", "-D", "/srv/c/pg1"]);
        assert_eq!(p.mounts[0].source, p.mounts[0].target);
        assert_eq!((p.host_ip.as_str(), p.host_port), ("127.0.0.1", 15433));
        assert_eq!(p.labels[LABEL_NODE], "pg1");
        assert!(is_owned(
            &p.labels.clone().into_iter().collect(),
            &owner_labels("lab", std::path::Path::new("/srv/c"))
        ));
        assert!(!is_owned(
            &p.labels.into_iter().collect(),
            &owner_labels("lab", std::path::Path::new("/elsewhere"))
        ));
    }
}
