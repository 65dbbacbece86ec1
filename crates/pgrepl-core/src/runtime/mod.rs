//! Where a node lives. Everything that depends on it sits behind one trait, [`Runtime`]: how
//! its server is started, stopped, killed and frozen, how pgrepl, the other nodes and
//! PostgreSQL's tools reach it, where its programs run. Code outside this module talks to
//! `Arc<dyn Runtime>` only and never knows which runtime it has.
//!
//! Runtimes: `local` (processes on this machine, as an unprivileged OS user when pgrepl is
//! root), `netns` (the same processes, each node in a network namespace of its own, on a
//! bridge of the cluster's own), `docker` (one container per node on a network of the
//! cluster's own).

pub mod docker;
pub mod enter;
pub mod fault;
pub mod local;
pub mod netfault;
pub mod netns;
pub mod runner;
pub mod signals;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;

use crate::error::{Error, Result};
use crate::postgres::PgInstall;
use crate::progress::Progress;
use crate::spec::{ClusterSpec, NodeSpec, RuntimeKind};

pub use fault::NetFault;
pub use runner::{die_with_parent, run, sync_filesystem, OsUser, Runner};

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

/// The one-line refusal to stop a frozen node: a stop would wait out its timeout (or, on
/// docker, thaw it to deliver the signal).
pub fn frozen_refusal(node: &str) -> String {
    format!("{node} is frozen: `pgrepl thaw {node}` first, or `pgrepl kill {node}`")
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
    /// The server's log (its last `tail` lines; all of it with None), then (with `follow`)
    /// what it writes next, for as long as the stream is read.
    async fn log_stream(
        &self,
        node: &NodeSpec,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<Vec<u8>>>>;

    /// Whether this runtime can apply network faults here (and what is missing if not): for
    /// checks before a drill or a command changes anything.
    fn check_network_faults(&self) -> Result<()> {
        Err(no_network_faults())
    }
    /// Applies a network fault to the node, adding to the faults it has (a new delay or loss
    /// replaces the old one).
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
    /// Whether a TCP connection from `from`'s network reaches `to`'s peer endpoint within
    /// `timeout` (what a monitor asks to tell a dead node from a cut-off one).
    async fn can_reach(&self, from: &NodeSpec, to: &NodeSpec, timeout: Duration) -> Result<bool>;
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
        RuntimeKind::Docker => Ok(Arc::new(docker::DockerRuntime::new(
            spec,
            cluster_dir,
            pg.clone(),
            runner.clone(),
        )?)),
        RuntimeKind::Netns => Ok(Arc::new(netns::NetnsRuntime::new(
            spec,
            cluster_dir,
            pg.clone(),
            runner.clone(),
        )?)),
    }
}

/// Checks a spec's nodes could be created, before there is a cluster to open (`pgrepl init`,
/// `up` writing the lab's file); `fix` is the command that picks other ports. For runtimes
/// where each node has its own network, ports cannot clash: nothing to check.
pub fn check_new_spec(spec: &ClusterSpec, fix: &str) -> Result<()> {
    match spec.cluster.runtime {
        // Docker publishes every node's port on the host.
        RuntimeKind::Local | RuntimeKind::Docker => local::check_lab_ports(spec, fix),
        _ => Ok(()),
    }
}

/// Fills in what a new cluster file needs from this machine for its runtime (netns and
/// docker: a free subnet for the cluster whose data will live in `cluster_dir`, unless it has
/// one; a user's docker image must be on this machine).
pub async fn complete_new_spec(spec: &mut ClusterSpec, cluster_dir: &Path) -> Result<()> {
    if spec.cluster.runtime == RuntimeKind::Docker {
        if let Some(image) = &spec.cluster.image {
            docker::check_image_present(image).await?;
        }
        if spec.cluster.subnet.is_none() {
            spec.cluster.subnet = Some(docker::choose_subnet(cluster_dir).await?);
        }
    }
    if spec.cluster.runtime == RuntimeKind::Netns && spec.cluster.subnet.is_none() {
        spec.cluster.subnet = Some(
            netns::network::choose_subnet(cluster_dir)
                .await?
                .to_string(),
        );
    }
    Ok(())
}

/// The last `n` lines of `text` (all of it when it has fewer).
pub fn last_lines(text: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    // A final newline ends the last line; it does not start another.
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map_or(0, |(i, _)| i + 1);
    &text[start..]
}

/// A log file (its last `tail` lines), then (with `follow`) what is appended to it, polled every 200 ms. The
/// stream ends after an error.
pub fn file_log_stream(
    path: PathBuf,
    tail: Option<usize>,
    follow: bool,
) -> BoxStream<'static, Result<Vec<u8>>> {
    use futures::StreamExt;
    use std::io::{Read, Seek};
    // (read so far, first read done); None once an error was yielded.
    futures::stream::unfold(Some((0u64, false)), move |state| {
        let path = path.clone();
        async move {
            let (pos, started) = state?;
            if started {
                if !follow {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let read = (|| {
                let mut f = std::fs::File::open(&path)?;
                // Truncated or replaced: from the start again.
                let pos = if f.metadata()?.len() < pos { 0 } else { pos };
                f.seek(std::io::SeekFrom::Start(pos))?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                Ok::<_, std::io::Error>((pos + buf.len() as u64, buf))
            })();
            Some(match read {
                Ok((next, buf)) => {
                    let shown = match tail {
                        Some(n) if !started => last_lines(&buf, n).to_vec(),
                        _ => buf,
                    };
                    (Ok(shown), Some((next, true)))
                }
                Err(e) if !started && e.kind() == std::io::ErrorKind::NotFound => (
                    Err(Error::Precondition(format!(
                        "there is no log yet ({}): the node has never been started",
                        path.display()
                    ))),
                    None,
                ),
                Err(source) => (
                    Err(Error::Io {
                        what: format!("cannot read {}", path.display()),
                        source,
                    }),
                    None,
                ),
            })
        }
    })
    .boxed()
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
    fn tail_keeps_the_last_lines() {
        let log = b"one\ntwo\nthree\n";
        assert_eq!(last_lines(log, 2), b"two\nthree\n");
        assert_eq!(last_lines(log, 3), log);
        assert_eq!(last_lines(log, 50), log);
        assert_eq!(last_lines(log, 0), b"");
        assert_eq!(last_lines(b"a\nb", 1), b"b");
    }

    #[test]
    fn docker_without_a_subnet_refuses_at_open() {
        let mut spec = ClusterSpec::lab("lab", 15432).unwrap();
        spec.cluster.runtime = RuntimeKind::Docker;
        let e = for_cluster(&spec, Path::new("/c"), &pg(), &Runner::new(None).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("pgrepl init --runtime docker"), "{e}");
    }

    #[test]
    fn netns_nodes_listen_on_5432_at_their_place_in_the_file() {
        let mut spec = ClusterSpec::lab("lab", 15432).unwrap();
        spec.cluster.runtime = RuntimeKind::Netns;
        spec.cluster.subnet = Some("10.77.3.0/24".into());
        let rt = for_cluster(&spec, Path::new("/c"), &pg(), &Runner::new(None).unwrap()).unwrap();
        let (pg0, pg2) = (&spec.nodes[0], &spec.nodes[2]);
        let at = |h: &str| Endpoint {
            host: h.into(),
            port: 5432,
        };
        assert_eq!(rt.peer_endpoint(pg0), at("10.77.3.10"));
        assert_eq!(rt.client_endpoint(pg2), at("10.77.3.12"));
        assert_eq!(rt.tool_endpoint(pg2, pg0), at("10.77.3.10"));
        assert_eq!(rt.listen(pg2).addresses, "10.77.3.12");
        assert_eq!(rt.hba_networks(&spec.nodes), vec!["10.77.3.0/24"]);
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
