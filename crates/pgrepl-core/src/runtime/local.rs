//! The local runtime: every node is a postmaster on this machine, listening on its spec's
//! host and port, run as the OS user. Its processes are found through postmaster.pid and
//! /proc, and controlled by signals.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::postgres::PgInstall;
use crate::progress::Progress;
use crate::runtime::{self, signals, Endpoint, Listen, ProcessState, Runner, Runtime, StopMode};
use crate::spec::{ClusterSpec, NodeSpec, RuntimeKind};

/// How long pg_ctl may wait for a start, and we for a stop, before we call it failed.
const PG_CTL_TIMEOUT_SECS: u64 = 120;

#[derive(Debug, Clone)]
pub struct LocalRuntime {
    dir: PathBuf,
    pg: PgInstall,
    runner: Runner,
}

impl LocalRuntime {
    pub fn new(cluster_dir: &Path, pg: PgInstall, runner: Runner) -> Self {
        LocalRuntime {
            dir: cluster_dir.to_path_buf(),
            pg,
            runner,
        }
    }

    fn data(&self, node: &NodeSpec) -> PathBuf {
        runtime::data_dir(&self.dir, &node.name)
    }

    fn log(&self, node: &NodeSpec) -> PathBuf {
        runtime::log_file(&self.dir, &node.name)
    }

    /// The running postmaster's pid, from postmaster.pid, if that process is alive.
    fn pid(&self, node: &NodeSpec) -> Option<i32> {
        let pid = signals::pidfile_pid(&self.data(node))?;
        signals::alive(pid).then_some(pid)
    }
}

#[async_trait::async_trait]
impl Runtime for LocalRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Local
    }

    async fn prepare(&self, _nodes: &[NodeSpec], _progress: &dyn Progress) -> Result<()> {
        Ok(())
    }

    async fn teardown(&self, _nodes: &[NodeSpec], _purge: bool) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn preflight(&self, node: &NodeSpec) -> Result<()> {
        check_port_free(node)
    }

    fn listen(&self, node: &NodeSpec) -> Listen {
        Listen {
            addresses: node.host.to_string(),
            port: node.port,
            socket_dir: None,
        }
    }

    fn peer_endpoint(&self, node: &NodeSpec) -> Endpoint {
        on_host(node)
    }

    fn client_endpoint(&self, node: &NodeSpec) -> Endpoint {
        on_host(node)
    }

    fn tool_endpoint(&self, _for_node: &NodeSpec, target: &NodeSpec) -> Endpoint {
        on_host(target)
    }

    fn hba_networks(&self, nodes: &[NodeSpec]) -> Vec<String> {
        // A node listening on every interface (0.0.0.0, ::) is reached from this machine, so
        // from the loopback address.
        let mut hosts: Vec<IpAddr> = nodes
            .iter()
            .map(|n| match n.host {
                IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
                h => h,
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
            .iter()
            .map(|h| match h {
                IpAddr::V4(_) => format!("{h}/32"),
                IpAddr::V6(_) => format!("{h}/128"),
            })
            .collect()
    }

    fn local_socket(&self) -> bool {
        false
    }

    async fn state(&self, node: &NodeSpec) -> Result<ProcessState> {
        Ok(match self.pid(node) {
            None => ProcessState::Stopped,
            Some(pid) if signals::is_stopped(pid) => ProcessState::Frozen,
            Some(_) => ProcessState::Running,
        })
    }

    async fn start(&self, node: &NodeSpec) -> Result<()> {
        let data = self.data(node);
        let log = self.log(node);
        signals::remove_stale_pidfile(&data);
        let mut cmd = self.runner.command(self.pg.program("pg_ctl"));
        cmd.arg("-D").arg(&data).arg("-l").arg(&log).args([
            "-w",
            "-t",
            &PG_CTL_TIMEOUT_SECS.to_string(),
            "start",
        ]);
        runtime::run("pg_ctl start", &mut cmd)
            .await
            .map_err(|e| Error::Command {
                what: format!("starting {}", data.display()),
                detail: format!(
                    "{e}\n--- last lines of {} ---\n{}",
                    log.display(),
                    runtime::tail(&log, 15)
                ),
            })?;
        Ok(())
    }

    /// By signal, as pg_ctl does, but watched every millisecond: pg_ctl looks only every
    /// 100 ms, which would be most of a switchover's write gap.
    async fn stop(&self, node: &NodeSpec, mode: StopMode) -> Result<()> {
        let Some(pid) = self.pid(node) else {
            return Ok(());
        };
        signals::shutdown(pid, mode).map_err(|e| Error::Command {
            what: format!("shutdown of {} (postmaster {pid})", node.name),
            detail: e.to_string(),
        })?;
        let timeout = Duration::from_secs(PG_CTL_TIMEOUT_SECS);
        let start = Instant::now();
        while signals::alive(pid) {
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("{} (postmaster {pid}) to shut down", node.name),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    async fn kill(&self, node: &NodeSpec) -> Result<bool> {
        let Some(pid) = self.pid(node) else {
            return Ok(false);
        };
        signals::crash(pid);
        for _ in 0..500 {
            if !signals::alive(pid) {
                signals::remove_stale_pidfile(&self.data(node));
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(Error::Timeout {
            what: format!("postmaster {pid} to die after SIGKILL"),
            after: Duration::from_secs(5),
        })
    }

    async fn freeze(&self, node: &NodeSpec, frozen: bool) -> Result<bool> {
        let Some(pid) = self.pid(node) else {
            return Ok(false);
        };
        signals::freeze(pid, frozen);
        Ok(true)
    }

    async fn clear_stale_lock(&self, node: &NodeSpec) -> Result<()> {
        signals::remove_stale_pidfile(&self.data(node));
        Ok(())
    }

    fn command(&self, _node: &NodeSpec, program: &str) -> tokio::process::Command {
        self.runner.command(self.pg.program(program))
    }

    fn busy_tools(&self, node: &NodeSpec) -> Vec<i32> {
        signals::tools_on(&self.data(node))
    }

    async fn log_tail(&self, node: &NodeSpec, lines: usize) -> String {
        runtime::tail(&self.log(node), lines)
    }
}

fn on_host(node: &NodeSpec) -> Endpoint {
    Endpoint {
        host: node.host.to_string(),
        port: node.port,
    }
}

/// A port that something else listens on makes the start fail later: say it now.
fn check_port_free(node: &NodeSpec) -> Result<()> {
    match std::net::TcpListener::bind((node.host, node.port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::Invalid(format!(
            "port {} of node '{}' is already in use by another program: choose another port in the cluster file (or `pgrepl init --force --base-port P`)",
            node.port, node.name
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Err(Error::Invalid(format!(
            "node '{}' has host {}, which is not an address of this machine: use 127.0.0.1 (or an address of this machine) in the cluster file",
            node.name, node.host
        ))),
        Err(_) => Ok(()),
    }
}

/// The lab's ports must be free before its file is written; the error suggests free ones.
pub(super) fn check_lab_ports(spec: &ClusterSpec, fix: &str) -> Result<()> {
    for n in &spec.nodes {
        if check_port_free(n).is_err() {
            let first = spec.root().port;
            let hint = free_base_port(n.host, first + 10, 4)
                .map(|p| format!("`{fix} {p}` (ports {p}-{} are free)", p + 3))
                .unwrap_or_else(|| format!("`{fix} P` with another port"));
            return Err(Error::Invalid(format!(
                "port {} (for {}) is already in use by another program: choose other ports with {hint}",
                n.port, n.name
            )));
        }
    }
    Ok(())
}

/// The first base port at or after `from` with `count` free consecutive ports, below the
/// kernel's ephemeral range: a suggestion when the asked-for ports are taken.
fn free_base_port(host: IpAddr, from: u16, count: u16) -> Option<u16> {
    (from..32768u16.saturating_sub(count))
        .step_by(10)
        .find(|b| (0..count).all(|i| std::net::TcpListener::bind((host, b + i)).is_ok()))
}
