//! The netns runtime: every node is a postmaster of this machine (the local runtime's process
//! control as it is: one pid namespace, so postmaster.pid, signals and freeze work), in a
//! network namespace of its own with an address of the cluster's /24 on a bridge of the
//! cluster's own, listening on 5432 like a real host. pgrepl, on the host, reaches every
//! node; nothing is routed outside the machine. PostgreSQL's programs run inside their
//! node's namespace, so pg_basebackup and pg_rewind connect from the node's own network.
//!
//! Node addresses follow the order of the nodes in the cluster file: the first is `.10`, the
//! next `.11`, and so on; the host is `.1`.

pub mod naming;
pub mod network;
pub mod subnet;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::postgres::PgInstall;
use crate::progress::Progress;
use crate::runtime::enter::{self, Enter};
use crate::runtime::local::LocalRuntime;
use crate::runtime::netfault::rules::{self, HOST_TAG};
use crate::runtime::{Endpoint, Listen, NetFault, ProcessState, Runner, Runtime, StopMode};
use crate::spec::{ClusterSpec, NodeSpec, RuntimeKind};

use naming::{ClusterNet, NODE_IF};
use subnet::Net4;

/// Every node listens on PostgreSQL's own port, as a real host would.
pub const PORT: u16 = 5432;

#[derive(Debug)]
pub struct NetnsRuntime {
    local: LocalRuntime,
    runner: Runner,
    dir: PathBuf,
    net: ClusterNet,
    subnet: Net4,
    /// Node names in the cluster file's order, which gives their addresses; a node added by
    /// `standby add` comes last (prepare() is told of it before it is used).
    order: RwLock<Vec<String>>,
}

impl NetnsRuntime {
    pub fn new(
        spec: &ClusterSpec,
        cluster_dir: &Path,
        pg: PgInstall,
        runner: Runner,
    ) -> Result<NetnsRuntime> {
        let net = ClusterNet::for_dir(cluster_dir);
        let subnet = match &spec.cluster.subnet {
            Some(s) => subnet::validate(s).map_err(Error::Invalid)?,
            None => return Err(missing_subnet(&net)),
        };
        Ok(NetnsRuntime {
            local: LocalRuntime::new(cluster_dir, pg, runner.clone()),
            runner,
            dir: cluster_dir.to_path_buf(),
            net,
            subnet,
            order: RwLock::new(spec.nodes.iter().map(|n| n.name.clone()).collect()),
        })
    }

    fn remember(&self, nodes: &[NodeSpec]) {
        let mut order = self.order.write().expect("not poisoned");
        for n in nodes {
            if !order.contains(&n.name) {
                order.push(n.name.clone());
            }
        }
    }

    fn index(&self, node: &str) -> usize {
        if let Some(i) = self
            .order
            .read()
            .expect("not poisoned")
            .iter()
            .position(|n| n == node)
        {
            return i;
        }
        let mut order = self.order.write().expect("not poisoned");
        order.push(node.to_string());
        order.len() - 1
    }

    fn address(&self, node: &NodeSpec) -> Ipv4Addr {
        self.subnet.node(self.index(&node.name))
    }

    fn at(&self, node: &NodeSpec) -> Endpoint {
        Endpoint {
            host: self.address(node).to_string(),
            port: PORT,
        }
    }

    fn ns(&self, node: &NodeSpec) -> String {
        self.net.node_ns(&node.name)
    }

    fn ns_file(&self, node: &NodeSpec) -> PathBuf {
        naming::ns_path(&self.ns(node))
    }

    /// A network fault needs the node's namespace.
    fn require_network(&self, node: &NodeSpec) -> Result<String> {
        network::preconditions()?;
        let ns = self.ns(node);
        if !naming::ns_path(&ns).exists() {
            return Err(Error::Precondition(format!(
                "{} has no network now (the cluster is down): bring it up with `pgrepl up` first",
                node.name
            )));
        }
        Ok(ns)
    }

    /// Peers of `node` by tag: every other node by name, and the host.
    fn peers(&self, node: &NodeSpec) -> Vec<(String, Ipv4Addr)> {
        let order = self.order.read().expect("not poisoned").clone();
        order
            .iter()
            .enumerate()
            .filter(|(_, n)| **n != node.name)
            .map(|(i, n)| (n.clone(), self.subnet.node(i)))
            .chain([(HOST_TAG.to_string(), self.subnet.host(subnet::HOST))])
            .collect()
    }
}

fn missing_subnet(net: &ClusterNet) -> Error {
    let slot = u32::from_str_radix(&net.id[..4], 16).unwrap_or(0) % (254 * 256);
    Error::Invalid(format!(
        "the netns runtime needs the cluster's subnet: add `subnet = \"10.{}.{}.0/24\"` (or another free private /24) to the [cluster] section of the cluster file, or rewrite the file with `pgrepl init --force --runtime netns`, which picks a free one",
        1 + slot / 256,
        slot % 256
    ))
}

#[async_trait::async_trait]
impl Runtime for NetnsRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Netns
    }

    async fn prepare(&self, nodes: &[NodeSpec], progress: &dyn Progress) -> Result<()> {
        self.remember(nodes);
        let order = self.order.read().expect("not poisoned").clone();
        let plan = network::Plan {
            net: &self.net,
            subnet: self.subnet,
            nodes: &order,
        };
        if let Some(built) = network::ensure(&plan).await? {
            progress.step(&built);
            tracing::info!("{built}");
        }
        Ok(())
    }

    async fn teardown(&self, _nodes: &[NodeSpec], _purge: bool) -> Result<Vec<String>> {
        network::teardown(&self.net).await
    }

    fn preflight(&self, node: &NodeSpec) -> Result<()> {
        network::preconditions()?;
        if self.index(&node.name) >= subnet::MAX_NODES {
            return Err(Error::Invalid(format!(
                "node '{}' is node number {} of the cluster file: the netns runtime's /24 holds {} nodes",
                node.name,
                self.index(&node.name) + 1,
                subnet::MAX_NODES
            )));
        }
        Ok(())
    }

    fn listen(&self, node: &NodeSpec) -> Listen {
        Listen {
            addresses: self.address(node).to_string(),
            port: PORT,
            // Unix sockets are not per network namespace: every node's 5432 socket would be
            // the same file. pgrepl.conf turns them off.
            socket_dir: None,
        }
    }

    fn peer_endpoint(&self, node: &NodeSpec) -> Endpoint {
        self.at(node)
    }

    fn client_endpoint(&self, node: &NodeSpec) -> Endpoint {
        self.at(node)
    }

    fn tool_endpoint(&self, _for_node: &NodeSpec, target: &NodeSpec) -> Endpoint {
        self.at(target)
    }

    fn hba_networks(&self, _nodes: &[NodeSpec]) -> Vec<String> {
        // The nodes and the host (.1, where pgrepl's own connections come from).
        vec![self.subnet.to_string()]
    }

    fn local_socket(&self) -> bool {
        false
    }

    async fn state(&self, node: &NodeSpec) -> Result<ProcessState> {
        self.local.state(node).await
    }

    async fn start(&self, node: &NodeSpec) -> Result<()> {
        if !self.ns_file(node).exists() {
            return Err(Error::Precondition(format!(
                "{} has no network now (the cluster is down): start it with `pgrepl start {}` or `pgrepl up`, which build the network first",
                node.name, node.name
            )));
        }
        self.local
            .start_with(node, self.command(node, "pg_ctl"))
            .await
    }

    async fn stop(&self, node: &NodeSpec, mode: StopMode) -> Result<()> {
        self.local.stop(node, mode).await
    }

    async fn kill(&self, node: &NodeSpec) -> Result<bool> {
        self.local.kill(node).await
    }

    async fn freeze(&self, node: &NodeSpec, frozen: bool) -> Result<bool> {
        self.local.freeze(node, frozen).await
    }

    async fn clear_stale_lock(&self, node: &NodeSpec) -> Result<()> {
        self.local.clear_stale_lock(node).await
    }

    /// Inside the node's namespace while it exists; on the host otherwise (initdb,
    /// pg_controldata and single-user postgres need no network, and nothing that does can
    /// work without it).
    fn command(&self, node: &NodeSpec, program: &str) -> tokio::process::Command {
        let path = self.local.program(program);
        match Enter::netns(&self.ns_file(node)) {
            Ok(enter) => self.runner.command_in(path, enter),
            Err(_) => self.runner.command(path),
        }
    }

    fn busy_tools(&self, node: &NodeSpec) -> Vec<i32> {
        self.local.busy_tools(node)
    }

    async fn log_tail(&self, node: &NodeSpec, lines: usize) -> String {
        self.local.log_tail(node, lines).await
    }

    async fn log_stream(
        &self,
        node: &NodeSpec,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<futures::stream::BoxStream<'static, Result<Vec<u8>>>> {
        self.local.log_stream(node, tail, follow).await
    }

    fn check_network_faults(&self) -> Result<()> {
        network::preconditions()
    }

    async fn apply_fault(&self, node: &NodeSpec, fault: &NetFault) -> Result<()> {
        let ns = self.require_network(node)?;
        match fault {
            NetFault::Partition { from, host } => {
                let peers: Vec<(String, Ipv4Addr)> = self
                    .peers(node)
                    .into_iter()
                    .filter(|(tag, _)| {
                        if tag == HOST_TAG {
                            *host
                        } else {
                            from.is_empty() || from.contains(tag)
                        }
                    })
                    .collect();
                rules::partition(&ns, NODE_IF, &peers).await
            }
            NetFault::HostPartition => {
                let peers: Vec<(String, Ipv4Addr)> = self
                    .peers(node)
                    .into_iter()
                    .filter(|(tag, _)| tag == HOST_TAG)
                    .collect();
                rules::partition(&ns, NODE_IF, &peers).await
            }
            NetFault::Loss { percent } => rules::loss(&ns, NODE_IF, *percent).await,
            NetFault::Delay { delay, jitter } => {
                let log = crate::runtime::log_file(&self.dir, &format!("{}.delayer", node.name));
                rules::delay(&ns, NODE_IF, *delay, *jitter, &log).await
            }
        }
    }

    async fn heal(&self, node: &NodeSpec) -> Result<()> {
        if !self.ns_file(node).exists() {
            return Ok(());
        }
        network::preconditions()?;
        rules::heal(&self.ns(node), NODE_IF).await
    }

    async fn faults(&self, node: &NodeSpec) -> Result<Vec<NetFault>> {
        if !self.ns_file(node).exists() || !nix::unistd::Uid::effective().is_root() {
            return Ok(Vec::new());
        }
        let active = rules::active(&self.ns(node), NODE_IF).await;
        if active.delay_rule_without_delayer {
            tracing::warn!(
                "{}: a delay rule without its delayer (no delay is in force): `pgrepl net heal {}` removes it",
                node.name,
                node.name
            );
        }
        let nodes: Vec<String> = self
            .peers(node)
            .into_iter()
            .map(|(t, _)| t)
            .filter(|t| t != HOST_TAG)
            .collect();
        Ok(active.faults(&nodes))
    }

    async fn can_reach(&self, from: &NodeSpec, to: &NodeSpec, timeout: Duration) -> Result<bool> {
        let target = std::net::SocketAddr::from((self.address(to), PORT));
        enter::on_thread_in(&self.ns_file(from), move || {
            std::net::TcpStream::connect_timeout(&target, timeout).is_ok()
        })
        .await
        .map_err(|e| Error::Io {
            what: format!("cannot enter the network of {}", from.name),
            source: e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> Vec<(String, Ipv4Addr)> {
        let net = Net4::parse("10.1.2.0/24").unwrap();
        vec![
            ("pg0".into(), net.node(0)),
            ("pg2".into(), net.node(2)),
            (HOST_TAG.into(), net.host(1)),
        ]
    }

    fn node_tags() -> Vec<String> {
        peers()
            .into_iter()
            .map(|(t, _)| t)
            .filter(|t| t != HOST_TAG)
            .collect()
    }

    fn cut(tags: &[&str]) -> rules::Active {
        rules::Active {
            partitioned_from: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn rules_read_back_as_fault_values() {
        assert_eq!(
            cut(&["pg0", "pg2", "host"]).faults(&node_tags()),
            vec![NetFault::Partition {
                from: vec![],
                host: true
            }]
        );
        assert_eq!(
            cut(&["pg0", "pg2"]).faults(&node_tags()),
            vec![NetFault::Partition {
                from: vec![],
                host: false
            }]
        );
        assert_eq!(
            cut(&["pg2"]).faults(&node_tags()),
            vec![NetFault::Partition {
                from: vec!["pg2".into()],
                host: false
            }]
        );
        assert!(cut(&[]).faults(&node_tags()).is_empty());
        let a = rules::Active {
            loss_percent: Some(5.0),
            delay: Some(crate::runtime::netfault::delayer::Delay {
                queue: 0,
                delay: Duration::from_millis(50),
                jitter: Duration::ZERO,
            }),
            ..Default::default()
        };
        assert_eq!(
            a.faults(&node_tags()),
            vec![
                NetFault::Delay {
                    delay: Duration::from_millis(50),
                    jitter: Duration::ZERO
                },
                NetFault::Loss { percent: 5.0 }
            ]
        );
    }

    #[test]
    fn a_file_without_subnet_is_told_how_to_get_one() {
        let e = missing_subnet(&ClusterNet::for_canonical("/srv/x")).to_string();
        assert!(
            e.contains("subnet = ") && e.contains("init --force --runtime netns"),
            "{e}"
        );
    }
}
