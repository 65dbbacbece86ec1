//! Where a node lives. Everything that depends on it sits behind one trait, [`Runtime`]: how
//! its server is started, stopped, killed and frozen, how pgrepl, the other nodes and
//! PostgreSQL's tools reach it, where its programs run. Code outside this module talks to
//! `Arc<dyn Runtime>` only and never knows which runtime it has.
//!
//! Runtimes: `local` (processes on this machine, as an unprivileged OS user when pgrepl is
//! root). `netns` and `docker` are named in the spec but not implemented yet.

pub mod fault;
pub mod local;
pub mod runner;
pub mod signals;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::postgres::PgInstall;
use crate::progress::Progress;
use crate::spec::{ClusterSpec, NodeSpec, RuntimeKind};

pub use fault::NetFault;
pub use runner::{run, OsUser, Runner};

/// Where a node can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// What a node's settings say about listening (written into pgrepl.node.conf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addresses: String,
    pub port: u16,
    /// A directory for a local socket; none: TCP only.
    pub socket_dir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    Stopped,
    Running,
    /// Running but stopped by a freeze: it holds its connections and answers nothing.
    Frozen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnects clients, writes a shutdown checkpoint: no WAL lost.
    Fast,
    /// Exits without a checkpoint: crash recovery at the next start.
    Immediate,
}

/// The one-line refusal of network faults by a runtime where all nodes share one network.
pub fn no_network_faults() -> Error {
    Error::Invalid(
        "network faults need the netns or docker runtime (`pgrepl init --runtime netns|docker`): the local runtime has one network for all nodes".into(),
    )
}

/// Where a node lives. Methods take the node's spec: the runtime keeps no topology, only the
/// cluster's own facts (its directory, PostgreSQL's binaries, the OS user).
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> RuntimeKind;

    /// Everything nodes need before one starts (local: nothing). Idempotent.
    async fn prepare(&self, nodes: &[NodeSpec], progress: &dyn Progress) -> Result<()>;
    /// Removes what prepare()/start() created for this cluster, and only that (local:
    /// nothing); `purge` when the cluster's data goes too. Says what it removed.
    async fn teardown(&self, nodes: &[NodeSpec], purge: bool) -> Result<Vec<String>>;
    /// Checks before creating or starting a node (local: its port is free on the host and
    /// its host is an address of this machine).
    fn preflight(&self, node: &NodeSpec) -> Result<()>;

    /// What the node's settings say about listening.
    fn listen(&self, node: &NodeSpec) -> Listen;
    /// How other nodes reach it (primary_conninfo).
    fn peer_endpoint(&self, node: &NodeSpec) -> Endpoint;
    /// How pgrepl, on the host, reaches it.
    fn client_endpoint(&self, node: &NodeSpec) -> Endpoint;
    /// How a program run with `command(for_node, ..)` reaches `target` (pg_basebackup,
    /// pg_rewind, pgbench).
    fn tool_endpoint(&self, for_node: &NodeSpec, target: &NodeSpec) -> Endpoint;
    /// Addresses (CIDR) pg_hba.conf must admit: the cluster's own.
    fn hba_networks(&self, nodes: &[NodeSpec]) -> Vec<String>;
    /// Whether the node also has a local socket with peer authentication (then pg_hba.conf
    /// admits the OS user and root as `postgres` on it).
    fn local_socket(&self) -> bool;

    async fn state(&self, node: &NodeSpec) -> Result<ProcessState>;
    /// Starts the node's server and returns once it accepts connections (primary) or has
    /// reached consistency (standby), and fails with the end of its log when it dies instead.
    async fn start(&self, node: &NodeSpec) -> Result<()>;
    /// Fast: shutdown checkpoint, no WAL lost. Immediate: no checkpoint. Returns once the
    /// server is gone (at once when it was not running). Polls closely: a switchover's write
    /// gap includes the time between the server's exit and our noticing it.
    async fn stop(&self, node: &NodeSpec, mode: StopMode) -> Result<()>;
    /// The whole node at once, like losing the machine; returns once it is dead. false: it
    /// was not running.
    async fn kill(&self, node: &NodeSpec) -> Result<bool>;
    /// Stops (or resumes) every process of the node at once. false: it was not running.
    async fn freeze(&self, node: &NodeSpec, frozen: bool) -> Result<bool>;
    /// Clears what a dead server left that would stop another program from using its data
    /// directory (local: a postmaster.pid whose process is gone but not yet reaped).
    async fn clear_stale_lock(&self, _node: &NodeSpec) -> Result<()> {
        Ok(())
    }

    /// A command for one of PostgreSQL's programs (initdb, pg_basebackup, pg_rewind,
    /// pg_controldata, pg_waldump, postgres --single, pgbench, psql) run for `node`, as the
    /// OS user, in the node's context, with a clean environment. Paths in its arguments are
    /// host paths.
    fn command(&self, node: &NodeSpec, program: &str) -> tokio::process::Command;
    /// Processes of programs an interrupted pgrepl left working on the node's data directory
    /// (pg_rewind, single-user postgres).
    fn busy_tools(&self, node: &NodeSpec) -> Vec<i32>;
    /// The last `lines` lines of the server's log.
    async fn log_tail(&self, node: &NodeSpec, lines: usize) -> String;

    /// Applies a network fault to the node.
    async fn apply_fault(&self, _node: &NodeSpec, _fault: &NetFault) -> Result<()> {
        Err(no_network_faults())
    }
    /// Removes every network fault of the node.
    async fn heal(&self, _node: &NodeSpec) -> Result<()> {
        Err(no_network_faults())
    }
    /// The network faults the node has now.
    async fn faults(&self, _node: &NodeSpec) -> Result<Vec<NetFault>> {
        Ok(Vec::new())
    }
}

/// The runtime the spec asks for, for the cluster in `cluster_dir`.
pub fn for_cluster(
    spec: &ClusterSpec,
    cluster_dir: &Path,
    pg: &PgInstall,
    runner: &Runner,
) -> Result<Arc<dyn Runtime>> {
    match spec.cluster.runtime {
        RuntimeKind::Local => Ok(Arc::new(local::LocalRuntime::new(
            cluster_dir,
            pg.clone(),
            runner.clone(),
        ))),
        other => Err(not_available(other)),
    }
}

fn not_available(kind: RuntimeKind) -> Error {
    Error::Invalid(format!(
        "the {kind} runtime is not available yet: use the local runtime (remove `runtime = \"{kind}\"` from the [cluster] section of the cluster file)"
    ))
}

/// Checks a spec's nodes could be created, before there is a cluster to open (`pgrepl init`,
/// `up` writing the lab's file); `fix` is the command that picks other ports. For runtimes
/// where each node has its own network, ports cannot clash: nothing to check.
pub fn check_new_spec(spec: &ClusterSpec, fix: &str) -> Result<()> {
    match spec.cluster.runtime {
        RuntimeKind::Local => local::check_lab_ports(spec, fix),
        _ => Ok(()),
    }
}

/// A node's data directory: one rule for the cluster and every runtime.
pub fn data_dir(cluster_dir: &Path, node: &str) -> PathBuf {
    cluster_dir.join(node)
}

/// A node's server log.
pub fn log_file(cluster_dir: &Path, node: &str) -> PathBuf {
    cluster_dir.join("log").join(format!("{node}.log"))
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

    fn pg() -> PgInstall {
        PgInstall {
            bin: PathBuf::from("/nonexistent/bin"),
            major: 18,
            version: "18.6".into(),
            origin: "test".into(),
        }
    }

    fn local(spec: &ClusterSpec) -> Arc<dyn Runtime> {
        for_cluster(spec, Path::new("/c"), &pg(), &Runner::new(None).unwrap()).unwrap()
    }

    #[test]
    fn unimplemented_runtimes_refuse_at_open() {
        let mut spec = ClusterSpec::lab("lab", 15432).unwrap();
        spec.cluster.runtime = RuntimeKind::Netns;
        let e = for_cluster(&spec, Path::new("/c"), &pg(), &Runner::new(None).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the netns runtime is not available yet"),
            "{e}"
        );
    }

    #[test]
    fn local_nodes_are_reached_where_the_spec_says() {
        let spec = ClusterSpec::lab("lab", 15432).unwrap();
        let rt = local(&spec);
        let (pg0, pg1) = (&spec.nodes[0], &spec.nodes[1]);
        let at = Endpoint {
            host: "127.0.0.1".into(),
            port: 15432,
        };
        assert_eq!(rt.peer_endpoint(pg0), at);
        assert_eq!(rt.client_endpoint(pg0), at);
        assert_eq!(rt.tool_endpoint(pg1, pg0), at);
        assert_eq!(
            rt.listen(pg1),
            Listen {
                addresses: "127.0.0.1".into(),
                port: 15433,
                socket_dir: None
            }
        );
        assert_eq!(rt.hba_networks(&spec.nodes), vec!["127.0.0.1/32"]);
        assert!(!rt.local_socket());
        assert_eq!(data_dir(Path::new("/c"), "pg1"), PathBuf::from("/c/pg1"));
        assert_eq!(
            log_file(Path::new("/c"), "pg1"),
            PathBuf::from("/c/log/pg1.log")
        );
    }

    #[tokio::test]
    async fn local_refuses_network_faults_in_one_line() {
        let spec = ClusterSpec::lab("lab", 15432).unwrap();
        let rt = local(&spec);
        let fault = NetFault::Loss { percent: 1.0 };
        let e = rt.apply_fault(&spec.nodes[0], &fault).await.unwrap_err();
        assert!(e.to_string().contains("need the netns or docker runtime"));
        assert!(!e.to_string().contains('\n'));
        assert!(rt.faults(&spec.nodes[0]).await.unwrap().is_empty());
    }
}
