//! The docker runtime: every node is a container on a bridge network of the cluster's own
//! (for the lab, containers `pg0`..`pg3` on `pgnet`), running `postgres -D <data>` as its
//! main process (PID 1) as the OS user, its port published on the host at the node's
//! address and port. Data directories are bind mounts of the cluster directory at the same
//! path inside, so PostgreSQL's other programs (initdb, pg_basebackup, pg_rewind,
//! pg_controldata) run on the host against the same files, as with the local runtime, and
//! reach nodes through the published ports.
//!
//! A container's process state comes from the engine, never from postmaster.pid: inside, the
//! postmaster is PID 1, which on the host is init.

pub mod compose;
pub mod engine;
pub mod faults;
pub mod image;
pub mod plan;
pub mod rootfs;
pub mod subnet;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use futures::future::try_join_all;
use tokio::sync::OnceCell;

use crate::error::{Error, Result, ResultExt};
use crate::postgres::PgInstall;
use crate::progress::Progress;
use crate::runtime::netfault::rules;
use crate::runtime::{
    self, signals, Endpoint, Listen, NetFault, ProcessState, Runner, Runtime, StopMode,
};
use crate::spec::{ClusterSpec, NodeSpec, RuntimeKind};

use self::engine::Inspected;
pub use self::image::Built;
use self::plan::{ContainerPlan, PlanInput};
use self::subnet::Subnet;

/// How long a start may take until the server accepts connections, and a stop until it is
/// gone, before pgrepl calls it failed.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// Where pgrepl writes /etc/passwd and /etc/group for a user's image (in the cluster dir).
pub const ETC_DIR: &str = "docker-etc";

pub struct DockerRuntime {
    cluster: String,
    dir: PathBuf,
    pg: PgInstall,
    runner: Runner,
    subnet: Subnet,
    /// The user's image (`image = "..."`); none: pgrepl's own.
    user_image: Option<String>,
    /// Node names in the cluster file's order: a node's address is its place there.
    order: Vec<String>,
    docker: OnceCell<Docker>,
    image: OnceCell<String>,
    /// What `prepare` creates in the background (the network, the containers), while the
    /// cluster's first steps (initdb) run; awaited before anything uses it.
    pending: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<()>>>>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("cluster", &self.cluster)
            .field("dir", &self.dir)
            .field("subnet", &self.subnet)
            .field("image", &self.user_image)
            .finish()
    }
}

/// The OS user PostgreSQL runs as (us, when we are not root): name, uid, gid.
pub fn os_user(runner: &Runner) -> image::ImageUser {
    match runner.os_user() {
        Some(u) => image::ImageUser {
            name: u.name.clone(),
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        },
        None => image::ImageUser {
            name: runner.os_user_name(),
            uid: nix::unistd::Uid::effective().as_raw(),
            gid: nix::unistd::Gid::effective().as_raw(),
        },
    }
}

/// Checks an image reference before it reaches the engine or a compose file.
pub fn validate_image(image: &str) -> Result<()> {
    let ok = !image.is_empty()
        && image.len() <= 255
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        && image.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "image '{image}' is not a docker image name (such as postgres:18): fix `image` in the [cluster] section"
        )))
    }
}

/// The refusal to touch an engine object of the same name that is not this cluster's.
fn foreign(kind: &str, name: &str, cluster: &str, fix: &str) -> Error {
    Error::Precondition(format!(
        "a docker {kind} named '{name}' exists that is not cluster '{cluster}''s (its pgrepl labels differ): pgrepl leaves it alone; remove it yourself (`{fix}`), or give this cluster another name (`name` under [cluster] in its cluster file, or `pgrepl init --name NAME` for a new one)"
    ))
}

/// The server's status line in postmaster.pid (`ready`, `standby`, `starting`, `stopping`).
fn pm_status(data: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().nth(7).map(|l| l.trim().to_string())
}

impl DockerRuntime {
    pub fn new(
        spec: &ClusterSpec,
        cluster_dir: &Path,
        pg: PgInstall,
        runner: Runner,
    ) -> Result<Self> {
        let subnet = spec.cluster.subnet.as_deref().ok_or_else(|| {
            Error::Invalid(
                "the docker runtime needs the cluster's subnet: add `subnet = \"10.210.N.0/24\"` (a private /24 no docker network uses) to the [cluster] section, or write the file anew with `pgrepl init --runtime docker`".into(),
            )
        })?;
        if let Some(image) = &spec.cluster.image {
            validate_image(image)?;
        }
        Ok(DockerRuntime {
            cluster: spec.cluster.name.clone(),
            dir: cluster_dir.to_path_buf(),
            pg,
            runner,
            subnet: Subnet::parse(subnet)?,
            user_image: spec.cluster.image.clone(),
            order: spec.nodes.iter().map(|n| n.name.clone()).collect(),
            docker: OnceCell::new(),
            image: OnceCell::new(),
            pending: std::sync::Mutex::new(None),
        })
    }

    async fn docker(&self) -> Result<&Docker> {
        self.docker.get_or_try_init(engine::connect).await
    }

    fn owner(&self) -> Vec<(String, String)> {
        plan::owner_labels(&self.cluster, &self.dir)
    }

    fn container(&self, node: &NodeSpec) -> String {
        plan::container_name(&self.cluster, &node.name)
    }

    fn network(&self) -> String {
        plan::network_name(&self.cluster)
    }

    fn data(&self, node: &NodeSpec) -> PathBuf {
        runtime::data_dir(&self.dir, &node.name)
    }

    /// A node's pinned address: its place in `nodes` (the spec an operation works with, which
    /// may have just gained it), else in the cluster file this runtime was made from.
    fn ip(&self, node: &str, nodes: &[NodeSpec]) -> Result<Ipv4Addr> {
        let index = nodes
            .iter()
            .position(|n| n.name == node)
            .or_else(|| self.order.iter().position(|n| n == node))
            .ok_or_else(|| Error::Invalid(format!("node '{node}' is not in the cluster file")))?;
        self.subnet.node(index)
    }

    /// The container the engine has under the node's name, if it is this cluster's; a
    /// foreign one is refused.
    async fn inspect_own(&self, node: &NodeSpec) -> Result<Option<Inspected>> {
        let name = self.container(node);
        let found = engine::inspect_container(self.docker().await?, &name).await?;
        match found {
            Some(c) if !plan::is_owned(&c.labels, &self.owner()) => Err(foreign(
                "container",
                &name,
                &self.cluster,
                &format!("docker rm -f {name}"),
            )),
            other => Ok(other),
        }
    }

    /// The image nodes run: the user's (checked: present, same major version as the
    /// programs pgrepl runs on the host), or pgrepl's own, built when missing or stale.
    pub async fn ensure_image(&self, progress: &dyn Progress) -> Result<String> {
        self.image
            .get_or_try_init(|| async {
                let docker = self.docker().await?;
                match &self.user_image {
                    Some(img) => {
                        self.check_user_image(docker, img).await?;
                        Ok(img.clone())
                    }
                    None => {
                        progress.step(&format!("checking image {}", image::tag(&self.pg)));
                        let user = os_user(&self.runner);
                        if let Some(b) = image::ensure(docker, &self.pg, &user, false).await? {
                            progress.note(&format!(
                                "built image {} ({} files, {} MB) in {:.1} s",
                                b.tag,
                                b.files,
                                b.bytes >> 20,
                                b.took.as_secs_f64()
                            ));
                        }
                        Ok(image::tag(&self.pg))
                    }
                }
            })
            .await
            .cloned()
    }

    async fn check_user_image(&self, docker: &Docker, img: &str) -> Result<()> {
        if engine::inspect_image(docker, img).await?.is_none() {
            return Err(Error::Precondition(format!(
                "image '{img}' is not on this machine: pull it (`docker pull {img}`), or remove `image` from the [cluster] section to have pgrepl build its own"
            )));
        }
        let version =
            engine::run_once(docker, img, &["postgres", "--version"], &self.owner()).await?;
        // "postgres (PostgreSQL) 18.1 (Debian 18.1-1.pgdg12+2)"
        let major = version
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        if major != Some(self.pg.major) {
            return Err(Error::Precondition(format!(
                "image '{img}' runs {} but pgrepl runs PostgreSQL {}'s programs on this machine ({}): use an image of PostgreSQL {}, or set `postgres` in the [cluster] section to the image's version",
                version.trim(),
                self.pg.major,
                self.pg.bin.display(),
                self.pg.major
            )));
        }
        Ok(())
    }

    /// /etc/passwd and /etc/group for a user's image, naming root and the OS user (peer
    /// authentication on the local socket needs the uid to have a name).
    fn etc_files(&self) -> Result<Option<(PathBuf, PathBuf)>> {
        if self.user_image.is_none() {
            return Ok(None);
        }
        let etc = self.dir.join(ETC_DIR);
        let u = os_user(&self.runner);
        let passwd = etc.join("passwd");
        let group = etc.join("group");
        if !etc.is_dir() {
            std::fs::create_dir_all(&etc).what(|| format!("cannot create {}", etc.display()))?;
        }
        for (path, text) in [
            (
                &passwd,
                format!(
                    "root:x:0:0:root:/root:/bin/sh\n{n}:x:{u}:{g}:PostgreSQL:/var/lib/postgresql:/bin/sh\n",
                    n = u.name,
                    u = u.uid,
                    g = u.gid
                ),
            ),
            (&group, format!("root:x:0:\n{}:x:{}:\n", u.name, u.gid)),
        ] {
            if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                std::fs::write(path, text).what(|| format!("cannot write {}", path.display()))?;
            }
        }
        Ok(Some((passwd, group)))
    }

    /// What the node's container is (the same for the engine and for compose export).
    pub fn plan(&self, node: &NodeSpec, nodes: &[NodeSpec], image: &str) -> Result<ContainerPlan> {
        let u = os_user(&self.runner);
        let postgres = match self.user_image {
            Some(_) => "postgres".to_string(),
            None => self.pg.program("postgres").display().to_string(),
        };
        Ok(plan::plan(&PlanInput {
            cluster: &self.cluster,
            dir: &self.dir,
            node,
            image,
            postgres,
            uid: u.uid,
            gid: u.gid,
            ip: self.ip(&node.name, nodes)?,
            etc: self.etc_files()?,
        }))
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    pub fn network_labels(&self) -> Vec<(String, String)> {
        self.owner()
    }

    fn network_plan(&self) -> NetworkPlan {
        NetworkPlan {
            name: self.network(),
            subnet: self.subnet,
            owner: self.owner(),
            cluster: self.cluster.clone(),
        }
    }

    async fn ensure_network(&self) -> Result<()> {
        self.network_plan().ensure(self.docker().await?).await
    }

    /// The node's container, created when missing.
    async fn ensure_container(
        &self,
        node: &NodeSpec,
        nodes: &[NodeSpec],
        image: &str,
    ) -> Result<Inspected> {
        if let Some(c) = self.inspect_own(node).await? {
            return Ok(c);
        }
        let plan = self.plan(node, nodes, image)?;
        create_own(self.docker().await?, &plan, &self.owner()).await?;
        self.inspect_own(node).await?.ok_or_else(|| Error::Command {
            what: format!("creating container {}", plan.name),
            detail: "the engine does not show it".into(),
        })
    }

    /// Everything a node needs before it starts: the directory its container mounts, the
    /// image, the network, the container.
    /// Waits for what `prepare` creates in the background, and says how it went.
    async fn settle(&self) -> Result<()> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match pending {
            Some(work) => work.await.map_err(|e| Error::Command {
                what: "preparing the cluster's containers".into(),
                detail: e.to_string(),
            })?,
            None => Ok(()),
        }
    }

    async fn ensure_node(
        &self,
        node: &NodeSpec,
        nodes: &[NodeSpec],
        progress: &dyn Progress,
    ) -> Result<Inspected> {
        self.settle().await?;
        if let Some(c) = self.inspect_own(node).await? {
            return Ok(c);
        }
        crate::cluster_dir::claim(&self.dir, &self.cluster, &self.runner).await?;
        let image = self.ensure_image(progress).await?;
        self.ensure_network().await?;
        self.ensure_container(node, nodes, &image).await
    }

    /// A postmaster.pid left by a container's postgres (PID 1) or by a dead process is
    /// removed; one of a live process on the host (a single-user postgres of an interrupted
    /// rejoin) stops the start: inside its own pid namespace the container's postgres would
    /// take that lock for stale and run on a data directory in use.
    fn clear_pidfile(&self, node: &NodeSpec) -> Result<()> {
        let data = self.data(node);
        match signals::pidfile_pid(&data) {
            Some(pid) if pid != 1 && signals::alive(pid.abs()) => Err(Error::Precondition(format!(
                "{}'s data directory is in use by process {pid} on this machine (a tool pgrepl left running?): wait for it to end, or stop it",
                node.name
            ))),
            Some(_) => std::fs::remove_file(data.join("postmaster.pid"))
                .what(|| format!("cannot remove the stale postmaster.pid of {}", node.name)),
            None => Ok(()),
        }
    }

    async fn wait_ready(&self, node: &NodeSpec) -> Result<()> {
        let data = self.data(node);
        let name = self.container(node);
        let started = Instant::now();
        let mut polls = 0u32;
        loop {
            if matches!(pm_status(&data).as_deref(), Some("ready" | "standby")) {
                return Ok(());
            }
            polls += 1;
            if polls.is_multiple_of(20) && !self.inspect_own(node).await?.is_some_and(|c| c.running)
            {
                return Err(Error::Command {
                    what: format!("starting {}", node.name),
                    detail: format!(
                        "its container exited\n--- last lines of its log (docker logs {name}) ---\n{}",
                        self.log_tail(node, 15).await
                    ),
                });
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::Timeout {
                    what: format!("{} to accept connections", node.name),
                    after: START_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the container's main process has exited.
    async fn wait_exited(&self, node: &NodeSpec, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let data = self.data(node);
        let mut polls = 0u32;
        loop {
            // The server removes its lock file last of all: from then on it is down, and
            // the container's exit follows within milliseconds.
            let gone = !data.join("postmaster.pid").exists();
            if (gone || polls.is_multiple_of(20))
                && !self.inspect_own(node).await?.is_some_and(|c| c.running)
            {
                return Ok(());
            }
            polls += 1;
            if started.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("{} to shut down", node.name),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(if gone { 2 } else { 1 })).await;
        }
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    /// Checks everything first (the engine, the image, no foreign network or container of
    /// the same names, the subnet), then creates what is missing in the background.
    async fn prepare(&self, nodes: &[NodeSpec], progress: &dyn Progress) -> Result<()> {
        self.settle().await?;
        let t = Instant::now();
        crate::cluster_dir::claim(&self.dir, &self.cluster, &self.runner).await?;
        let image = self.ensure_image(progress).await?;
        let docker = self.docker().await?.clone();
        let network = self.network_plan();
        network.check(&docker).await?;
        let mut missing = Vec::new();
        for n in nodes {
            if self.inspect_own(n).await?.is_none() {
                missing.push(self.plan(n, nodes, &image)?);
            }
        }
        tracing::debug!(
            checked_ms = t.elapsed().as_millis() as u64,
            missing = missing.len(),
            "docker: prepare checked"
        );
        let owner = self.owner();
        let work = tokio::spawn(async move {
            let t = Instant::now();
            network.ensure(&docker).await?;
            try_join_all(missing.iter().map(|p| create_own(&docker, p, &owner))).await?;
            tracing::debug!(
                created_ms = t.elapsed().as_millis() as u64,
                "docker: prepared"
            );
            Ok(())
        });
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(work);
        Ok(())
    }

    async fn teardown(&self, _nodes: &[NodeSpec], _purge: bool) -> Result<Vec<String>> {
        // What a prepare is creating is removed too, once made.
        let _ = self.settle().await;
        // Containers and the network go at every `down` (the data stays in the cluster
        // directory): the cluster can then also be run by `docker-compose` from an export,
        // whose containers take the same names.
        let docker = self.docker().await?;
        let owner = self.owner();
        let mut removed = Vec::new();
        let containers = engine::containers_labelled(docker, &owner).await?;
        try_join_all(
            containers
                .iter()
                .map(|c| engine::remove_container(docker, c)),
        )
        .await?;
        removed.extend(
            containers
                .into_iter()
                .map(|c| format!("removed container {c}")),
        );
        for n in engine::networks_labelled(docker, &owner).await? {
            engine::remove_network(docker, &n).await?;
            removed.push(format!("removed network {n}"));
        }
        Ok(removed)
    }

    fn preflight(&self, node: &NodeSpec) -> Result<()> {
        engine::check_socket()?;
        runtime::local::check_port_free(node)
    }

    fn listen(&self, _node: &NodeSpec) -> Listen {
        Listen {
            addresses: "*".into(),
            port: plan::PORT,
            socket_dir: Some(plan::SOCKET_DIR.into()),
        }
    }

    fn peer_endpoint(&self, node: &NodeSpec) -> Endpoint {
        Endpoint {
            host: node.name.clone(),
            port: plan::PORT,
        }
    }

    fn client_endpoint(&self, node: &NodeSpec) -> Endpoint {
        Endpoint {
            host: node.host.to_string(),
            port: node.port,
        }
    }

    fn tool_endpoint(&self, _for_node: &NodeSpec, target: &NodeSpec) -> Endpoint {
        self.client_endpoint(target)
    }

    /// The network's subnet: containers reach each other from their own addresses, and the
    /// host through a published port from the bridge's gateway.
    fn hba_networks(&self, _nodes: &[NodeSpec]) -> Vec<String> {
        vec![self.subnet.to_string()]
    }

    fn local_socket(&self) -> bool {
        true
    }

    async fn state(&self, node: &NodeSpec) -> Result<ProcessState> {
        Ok(match self.inspect_own(node).await? {
            Some(c) if c.running && c.paused => ProcessState::Frozen,
            Some(c) if c.running => ProcessState::Running,
            _ => ProcessState::Stopped,
        })
    }

    async fn start(&self, node: &NodeSpec) -> Result<()> {
        let c = self
            .ensure_node(node, &[], &crate::progress::Silent)
            .await?;
        if c.running {
            return Ok(());
        }
        self.clear_pidfile(node)?;
        let t = Instant::now();
        engine::start_container(self.docker().await?, &self.container(node)).await?;
        let start_call_ms = t.elapsed().as_millis() as u64;
        self.wait_ready(node).await?;
        tracing::debug!(node = %node.name, start_call_ms, ready_ms = t.elapsed().as_millis() as u64, "docker: started");
        Ok(())
    }

    async fn stop(&self, node: &NodeSpec, mode: StopMode) -> Result<()> {
        let Some(c) = self.inspect_own(node).await?.filter(|c| c.running) else {
            return Ok(());
        };
        if c.paused {
            // The engine would thaw it to deliver the signal: a frozen node is not let run
            // again by a stop.
            return Err(Error::Precondition(super::frozen_refusal(&node.name)));
        }
        let signal = match mode {
            StopMode::Fast => "SIGINT",
            StopMode::Immediate => "SIGQUIT",
        };
        engine::signal(self.docker().await?, &self.container(node), signal).await?;
        self.wait_exited(node, STOP_TIMEOUT).await
    }

    async fn kill(&self, node: &NodeSpec) -> Result<bool> {
        if !self.inspect_own(node).await?.is_some_and(|c| c.running) {
            return Ok(false);
        }
        // PID 1 dies, and with it the container's whole pid namespace: every backend at
        // once. (A frozen one too: the engine thaws it to deliver the signal.)
        engine::signal(self.docker().await?, &self.container(node), "SIGKILL").await?;
        self.wait_exited(node, Duration::from_secs(10)).await?;
        self.clear_pidfile(node)?;
        Ok(true)
    }

    async fn freeze(&self, node: &NodeSpec, frozen: bool) -> Result<bool> {
        let Some(c) = self.inspect_own(node).await?.filter(|c| c.running) else {
            return Ok(false);
        };
        if c.paused != frozen {
            engine::pause(self.docker().await?, &self.container(node), frozen).await?;
        }
        Ok(true)
    }

    async fn clear_stale_lock(&self, node: &NodeSpec) -> Result<()> {
        if self.inspect_own(node).await?.is_some_and(|c| c.running) {
            return Ok(());
        }
        self.clear_pidfile(node)
    }

    fn command(&self, _node: &NodeSpec, program: &str) -> tokio::process::Command {
        self.runner.command(self.pg.program(program))
    }

    fn busy_tools(&self, node: &NodeSpec) -> Vec<i32> {
        signals::tools_on(&self.data(node))
    }

    async fn log_tail(&self, node: &NodeSpec, lines: usize) -> String {
        match self.docker().await {
            Ok(d) => engine::logs_tail(d, &self.container(node), lines)
                .await
                .unwrap_or_else(|e| e.to_string()),
            Err(e) => e.to_string(),
        }
    }

    async fn log_stream(
        &self,
        node: &NodeSpec,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<futures::stream::BoxStream<'static, Result<Vec<u8>>>> {
        if self.inspect_own(node).await?.is_none() {
            return Err(Error::Precondition(format!(
                "{} has no container, so no log (`pgrepl down` removes containers): start it with `pgrepl start {}`",
                node.name, node.name
            )));
        }
        Ok(engine::logs_stream(
            self.docker().await?,
            &self.container(node),
            tail,
            follow,
        ))
    }

    fn check_network_faults(&self) -> Result<()> {
        crate::runtime::netfault::tools::fault_preconditions()
    }

    async fn apply_fault(&self, node: &NodeSpec, fault: &NetFault) -> Result<()> {
        crate::runtime::netfault::tools::fault_preconditions()?;
        let ns = faults::netns_path(self.running_pid(node).await?);
        match fault {
            NetFault::Partition { from, host } => {
                let mut peers = Vec::new();
                for (i, name) in self.order.iter().enumerate() {
                    let named = from.iter().any(|f| f == name);
                    if name != &node.name && (named || from.is_empty()) {
                        peers.push((name.clone(), self.subnet.node(i)?));
                    }
                }
                if let Some(unknown) = from.iter().find(|f| !self.order.contains(f)) {
                    return Err(Error::UnknownNode {
                        name: unknown.clone(),
                        known: self.order.join(", "),
                    });
                }
                if *host {
                    peers.push((rules::HOST_TAG.into(), self.subnet.gateway()));
                }
                rules::partition(&ns, faults::IFACE, &peers).await
            }
            NetFault::HostPartition => {
                let peers = vec![(rules::HOST_TAG.to_string(), self.subnet.gateway())];
                rules::partition(&ns, faults::IFACE, &peers).await
            }
            NetFault::Loss { percent } => rules::loss(&ns, faults::IFACE, *percent).await,
            NetFault::Delay { delay, jitter } => {
                let log = crate::runtime::log_file(&self.dir, &format!("{}.delayer", node.name));
                rules::delay(&ns, faults::IFACE, *delay, *jitter, &log).await
            }
        }
    }

    async fn heal(&self, node: &NodeSpec) -> Result<()> {
        match self.inspect_own(node).await?.filter(|c| c.running) {
            // A stopped container has no network namespace, so no fault.
            None => Ok(()),
            Some(c) => rules::heal(&faults::netns_path(c.pid), faults::IFACE).await,
        }
    }

    async fn faults(&self, node: &NodeSpec) -> Result<Vec<NetFault>> {
        match self.inspect_own(node).await?.filter(|c| c.running) {
            None => Ok(Vec::new()),
            Some(c) => {
                let nodes: Vec<String> = self
                    .order
                    .iter()
                    .filter(|n| **n != node.name)
                    .cloned()
                    .collect();
                Ok(rules::active(&faults::netns_path(c.pid), faults::IFACE)
                    .await
                    .faults(&nodes))
            }
        }
    }

    async fn can_reach(&self, from: &NodeSpec, to: &NodeSpec, timeout: Duration) -> Result<bool> {
        let Some(c) = self
            .inspect_own(from)
            .await?
            .filter(|c| c.running && !c.paused)
        else {
            return Ok(false);
        };
        let ip = self.ip(&to.name, &[])?;
        faults::connects_from(c.pid, SocketAddr::from((ip, plan::PORT)), timeout).await
    }
}

impl DockerRuntime {
    async fn running_pid(&self, node: &NodeSpec) -> Result<i64> {
        match self.inspect_own(node).await? {
            Some(c) if c.running && c.pid > 0 => Ok(c.pid),
            _ => Err(Error::Precondition(format!(
                "{} is not running: start it first (`pgrepl start {}`); a stopped container has no network to fault",
                node.name, node.name
            ))),
        }
    }

    /// Builds pgrepl's image for this cluster's installation even when it is current: for
    /// `bench up`'s build time.
    pub async fn rebuild_image(&self) -> Result<Built> {
        let docker = self.docker().await?;
        let user = os_user(&self.runner);
        image::ensure(docker, &self.pg, &user, true)
            .await?
            .ok_or_else(|| Error::Invalid("a forced build always builds".into()))
    }
}

/// The cluster's network: checked before anything is created, created when missing.
struct NetworkPlan {
    name: String,
    subnet: Subnet,
    owner: Vec<(String, String)>,
    cluster: String,
}

impl NetworkPlan {
    /// Refuses a network of the same name that is not this cluster's, or has another
    /// subnet; whether it exists.
    async fn check(&self, docker: &Docker) -> Result<bool> {
        let name = &self.name;
        match engine::inspect_network(docker, name).await? {
            Some((labels, _)) if !plan::is_owned(&labels, &self.owner) => Err(foreign(
                "network",
                name,
                &self.cluster,
                &format!("docker network rm {name}"),
            )),
            Some((_, subnet)) if subnet.as_deref() != Some(&self.subnet.to_string()) => {
                Err(Error::Precondition(format!(
                    "network '{name}' has subnet {} but the cluster file says {}: remove the network (`pgrepl down`) and bring the cluster up again",
                    subnet.unwrap_or_default(),
                    self.subnet
                )))
            }
            found => Ok(found.is_some()),
        }
    }

    async fn ensure(&self, docker: &Docker) -> Result<()> {
        if self.check(docker).await? {
            return Ok(());
        }
        let created = engine::create_network(
            docker,
            &self.name,
            &self.subnet.to_string(),
            &self.subnet.gateway().to_string(),
            self.owner.iter().cloned().collect(),
        )
        .await;
        match created {
            Ok(()) => Ok(()),
            // Another pgrepl made it meanwhile: fine if it is ours.
            Err(_) if self.check(docker).await? => Ok(()),
            Err(Error::Command { what, detail }) if detail.contains("overlap") => {
                Err(Error::Precondition(format!(
                    "{what}: {detail}; another docker network uses this cluster's subnet {}: choose a free one (`subnet` in the [cluster] section)",
                    self.subnet
                )))
            }
            Err(e) => Err(e),
        }
    }
}

/// Creates a container; one of the same name that another pgrepl made meanwhile is fine if
/// it is this cluster's.
async fn create_own(
    docker: &Docker,
    plan: &ContainerPlan,
    owner: &[(String, String)],
) -> Result<()> {
    let Err(e) = engine::create_container(docker, plan).await else {
        return Ok(());
    };
    match engine::inspect_container(docker, &plan.name).await? {
        Some(c) if plan::is_owned(&c.labels, owner) => Ok(()),
        _ => Err(e),
    }
}

/// A free subnet for a new docker cluster whose data will be in `cluster_dir`: one no
/// docker network and no host route overlaps.
pub async fn choose_subnet(cluster_dir: &Path) -> Result<String> {
    let docker = engine::connect().await?;
    let mut used = engine::used_subnets(&docker).await?;
    used.extend(subnet::host_routes());
    let seed = cluster_dir
        .to_string_lossy()
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Ok(subnet::choose(&used, seed)?.to_string())
}

/// Checks a user's image is on this machine (at `init --image`).
pub async fn check_image_present(image: &str) -> Result<()> {
    validate_image(image)?;
    let docker = engine::connect().await?;
    if engine::inspect_image(&docker, image).await?.is_none() {
        return Err(Error::Precondition(format!(
            "image '{image}' is not on this machine: pull it (`docker pull {image}`), or leave out --image to have pgrepl build its own"
        )));
    }
    Ok(())
}

/// Builds pgrepl's node image for `pg` under `tag` (`force`: even when current); None when
/// it was there. Removes nothing: see [`remove_image`].
pub async fn build_image_as(
    pg: &PgInstall,
    runner: &Runner,
    tag: &str,
    force: bool,
) -> Result<Option<Built>> {
    let docker = engine::connect().await?;
    image::ensure_tagged(&docker, pg, &os_user(runner), tag, force).await
}

/// Removes an image by name unless a container uses it.
pub async fn remove_image(tag: &str) -> Result<()> {
    let docker = engine::connect().await?;
    engine::remove_image_if_unused(&docker, tag).await;
    Ok(())
}
