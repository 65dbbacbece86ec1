//! A cluster as pgrepl works on it: the spec, where its files are, which PostgreSQL runs it,
//! and as whom.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster_dir;
pub use crate::cluster_dir::ClusterLock;
use crate::error::{Error, Result};
use crate::node::Server;
use crate::postgres::binaries::{self, Wanted};
use crate::postgres::conn::{self, Conn, ConnParams, Session};
use crate::postgres::queries::Position;
use crate::postgres::PgInstall;
use crate::progress::Progress;
use crate::runtime::{self, Endpoint, Runner, Runtime};
use crate::secrets::{self, Secrets, SUPERUSER};
use crate::spec::{ClusterSpec, NodeSpec};

/// What every command gets from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub config: PathBuf,
    pub pg_bin: Option<PathBuf>,
    pub os_user: Option<String>,
}

#[derive(Clone)]
pub struct Cluster {
    pub spec: ClusterSpec,
    pub spec_path: PathBuf,
    /// `.pgrepl/<name>` next to the spec unless the spec says otherwise.
    pub dir: PathBuf,
    pub pg: PgInstall,
    /// Where the nodes live: everything about their processes and addresses goes through it.
    pub runtime: Arc<dyn Runtime>,
    /// Host-side file ownership (the cluster directory, the files pgrepl writes).
    runner: Runner,
}

impl Cluster {
    /// Loads the spec and finds PostgreSQL. With `provision`, PostgreSQL 18 is installed into
    /// the cache when missing.
    pub async fn open(opts: &Options, provision: bool, progress: &dyn Progress) -> Result<Cluster> {
        let spec = ClusterSpec::load(&opts.config)?;
        Self::with_spec(spec, opts, provision, progress).await
    }

    pub async fn with_spec(
        spec: ClusterSpec,
        opts: &Options,
        provision: bool,
        progress: &dyn Progress,
    ) -> Result<Cluster> {
        let runner = Runner::new(opts.os_user.as_deref())?;
        let spec_path = absolute(&opts.config);
        let spec_dir = spec_path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let dir = cluster_dir(&spec, &spec_path);
        crate::spec::validate_data_path(&dir)?;
        for w in spec.warnings() {
            tracing::warn!("{w}");
        }
        let wanted =
            Wanted::from_settings(opts.pg_bin.as_deref(), &spec.cluster.postgres, &spec_dir)?;
        let pg = binaries::resolve(&wanted, provision, &runner, progress).await?;
        let runtime = runtime::for_cluster(&spec, &dir, &pg, &runner)?;
        Ok(Cluster {
            spec,
            spec_path,
            dir,
            pg,
            runtime,
            runner,
        })
    }

    /// A copy with the spec read again from its file: for an operation that changes (and
    /// saves) the topology while a caller such as a drill holds the cluster, so that two
    /// operations in a row never save each other's stale view.
    pub fn reloaded(&self) -> Result<Cluster> {
        let mut c = self.clone();
        c.spec = ClusterSpec::load(&self.spec_path)?;
        Ok(c)
    }

    pub fn name(&self) -> &str {
        &self.spec.cluster.name
    }

    pub fn node(&self, name: &str) -> Result<&NodeSpec> {
        self.spec.node(name)
    }

    pub fn data_dir(&self, node: &str) -> PathBuf {
        runtime::data_dir(&self.dir, node)
    }

    pub fn log_file(&self, node: &str) -> PathBuf {
        runtime::log_file(&self.dir, node)
    }

    pub fn passfile(&self) -> PathBuf {
        self.dir.join("pgpass")
    }

    pub fn server(&self, node: &str) -> Result<Server> {
        Ok(Server::new(
            self.runtime.clone(),
            self.node(node)?.clone(),
            self.data_dir(node),
        ))
    }

    /// Whether the node's server runs (an unknown node does not).
    pub async fn is_running(&self, node: &str) -> bool {
        match self.server(node) {
            Ok(s) => s.is_running().await,
            Err(_) => false,
        }
    }

    /// Every host name a libpq program of this cluster may connect to: the walreceivers (peer
    /// endpoints), pgrepl's tools and psql. The passfile needs a line for each.
    pub fn libpq_hosts(&self) -> Vec<String> {
        let rt = &self.runtime;
        let nodes = &self.spec.nodes;
        let mut hosts: Vec<String> = nodes
            .iter()
            .flat_map(|n| {
                let tools = nodes.iter().map(move |t| rt.tool_endpoint(n, t).host);
                [rt.peer_endpoint(n).host, rt.client_endpoint(n).host]
                    .into_iter()
                    .chain(tools)
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Fails with advice when the OS user cannot reach the cluster directory's parent.
    pub async fn check_reachable(&self) -> Result<()> {
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        self.runner
            .check_reachable(&runtime::runner::existing_ancestor(parent))
            .await
    }

    /// A directory that belongs to the OS user, mode 0700 (a data directory, a clone's staging).
    pub fn create_private_dir(&self, dir: &Path) -> Result<()> {
        self.runner.create_private_dir(dir)
    }

    /// Runs PostgreSQL's programs and owns the files pgrepl writes.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// The name of the OS user PostgreSQL runs as.
    pub fn os_user_name(&self) -> String {
        self.runner.os_user_name()
    }

    /// Makes the cluster directory pgrepl's (see [`cluster_dir::claim`]): created, or taken
    /// over when empty, or refused when it holds anything else.
    pub async fn ensure_dir(&self) -> Result<()> {
        cluster_dir::claim(&self.dir, self.name(), &self.runner).await
    }

    pub fn secrets(&self) -> Result<Secrets> {
        Secrets::load(&self.passfile(), &self.spec.cluster.replication_user)?.ok_or_else(|| {
            Error::Precondition(format!(
                "cluster '{}' has not been initialized (no {}): run `pgrepl up` or `pgrepl primary init {}`",
                self.name(),
                self.passfile().display(),
                self.spec.root().name
            ))
        })
    }

    /// Writes a file inside the cluster directory, owned by the OS user.
    pub fn write_file(&self, path: &Path, text: &str) -> Result<()> {
        secrets::write_private(path, text, &self.runner)
    }

    /// Writes the passfile, with a line for every host libpq programs connect to.
    pub fn write_passfile(&self, secrets: &Secrets) -> Result<()> {
        secrets.write(
            &self.passfile(),
            &self.libpq_hosts(),
            &self.spec.cluster.replication_user,
            &self.runner,
        )
    }

    pub fn superuser_params(&self, node: &NodeSpec, secrets: &Secrets) -> ConnParams {
        let at = self.runtime.client_endpoint(node);
        ConnParams {
            node: node.name.clone(),
            host: at.host,
            port: at.port,
            user: SUPERUSER.into(),
            password: secrets.superuser.clone(),
            dbname: "postgres".into(),
            application_name: "pgrepl".into(),
            connect_timeout: conn::CONNECT_BOUND,
        }
    }

    /// A superuser connection to a node, every exchange on it bounded.
    pub async fn connect(&self, node: &str) -> Result<Conn> {
        let n = self.node(node)?;
        conn::connect(&self.superuser_params(n, &self.secrets()?))
            .await
            .map_err(|e| with_node(e, node))
    }

    /// Connects to a node that may still be starting (an earlier run started it and was
    /// killed before it answered): "the database system is starting up" is waited out, for
    /// as long as its server runs, up to `bound`; any other failure is returned at once.
    pub async fn connect_once_started(&self, node: &str, bound: Duration) -> Result<Conn> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            match self.connect(node).await {
                Err(e)
                    if e.is_starting_up()
                        && tokio::time::Instant::now() < deadline
                        && self.server(node)?.is_running().await =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                r => return r,
            }
        }
    }

    pub async fn connect_session(&self, node: &str) -> Result<Session> {
        let n = self.node(node)?;
        conn::connect_session(&self.superuser_params(n, &self.secrets()?))
            .await
            .map_err(|e| with_node(e, node))
    }

    /// How a node connects to `upstream` (primary_conninfo), password through the passfile.
    pub fn peer_conninfo(&self, upstream: &NodeSpec, user: &str, application_name: &str) -> String {
        self.conninfo_at(
            &self.runtime.peer_endpoint(upstream),
            user,
            application_name,
        )
    }

    /// How a program run for `for_node` (pg_basebackup, pg_rewind, pgbench) connects to
    /// `target`.
    pub fn tool_conninfo(
        &self,
        for_node: &NodeSpec,
        target: &NodeSpec,
        user: &str,
        application_name: &str,
    ) -> String {
        let at = self.runtime.tool_endpoint(for_node, target);
        self.conninfo_at(&at, user, application_name)
    }

    /// How a client on the host (psql) connects to `node`.
    pub fn client_conninfo(&self, node: &NodeSpec, user: &str, application_name: &str) -> String {
        self.conninfo_at(&self.runtime.client_endpoint(node), user, application_name)
    }

    fn conninfo_at(&self, at: &Endpoint, user: &str, application_name: &str) -> String {
        format!(
            "host={} port={} user={} passfile={} application_name={} connect_timeout=3",
            quote(&at.host),
            at.port,
            quote(user),
            quote(&self.passfile().to_string_lossy()),
            quote(application_name)
        )
    }

    /// The node a walreceiver streams from, by the sender it reports: the node whose peer
    /// endpoint it is (where every node listens on the same port, the host tells them apart).
    pub fn sender(&self, pos: &Position) -> Option<&NodeSpec> {
        let port = u16::try_from(pos.sender_port?).ok()?;
        let host = pos.sender_host.as_deref()?;
        self.spec.nodes.iter().find(|n| {
            let at = self.runtime.peer_endpoint(n);
            at.port == port && (at.host == host || host == "localhost")
        })
    }

    /// Whether a walreceiver's sender is `upstream`.
    pub fn streams_from(&self, pos: &Position, upstream: &str) -> bool {
        self.sender(pos).is_some_and(|n| n.name == upstream)
    }

    /// Puts `next` in place of the spec for an operation; `settle_spec` then keeps or undoes it.
    pub fn swap_spec(&mut self, next: ClusterSpec) -> ClusterSpec {
        std::mem::replace(&mut self.spec, next)
    }

    /// After an operation run under `swap_spec`: its spec is kept (and saved) when it
    /// succeeded, `previous` is restored when it failed, so a failed operation leaves the
    /// cluster file as it was.
    pub fn settle_spec<T>(&mut self, previous: ClusterSpec, result: Result<T>) -> Result<T> {
        match result {
            Ok(v) => {
                if self.spec != previous {
                    self.save_spec()?;
                }
                Ok(v)
            }
            Err(e) => {
                self.spec = previous;
                Err(e)
            }
        }
    }

    /// Saves the spec (the topology intent) after an operation changed it.
    pub fn save_spec(&self) -> Result<()> {
        self.spec.save(&self.spec_path)
    }

    /// Takes the cluster's lock, then reads the cluster file: a command that read it before
    /// another command saved it would work from, and save, a stale topology.
    pub async fn open_locked(
        opts: &Options,
        provision: bool,
        progress: &dyn Progress,
    ) -> Result<(Cluster, ClusterLock)> {
        let runner = Runner::new(opts.os_user.as_deref())?;
        // The file names the directory that holds the lock: read it once to find the lock,
        // and again under it.
        let first = ClusterSpec::load(&opts.config)?;
        let dir = cluster_dir(&first, &opts.config);
        crate::spec::validate_data_path(&dir)?;
        let lock = cluster_dir::lock(&dir, &first.cluster.name, &runner).await?;
        let spec = ClusterSpec::load(&opts.config)?;
        if cluster_dir(&spec, &opts.config) != dir || spec.cluster.name != first.cluster.name {
            return Err(Error::Precondition(format!(
                "{} changed its cluster name or data_dir while this command started: run it again",
                opts.config.display()
            )));
        }
        let cluster = Self::with_spec(spec, opts, provision, progress).await?;
        Ok((cluster, lock))
    }
}

fn with_node(e: Error, node: &str) -> Error {
    match e {
        Error::Sql { what, source } => Error::Sql {
            what: format!("{what} ({node})"),
            source,
        },
        other => other,
    }
}

/// Where a cluster's data lives: the spec's `data_dir` (relative to the spec file), else
/// `.pgrepl/<name>` next to the spec.
pub fn cluster_dir(spec: &ClusterSpec, spec_path: &Path) -> PathBuf {
    let spec_path = absolute(spec_path);
    let spec_dir = spec_path.parent().unwrap_or(Path::new("/"));
    match &spec.cluster.data_dir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => spec_dir.join(d),
        None => spec_dir.join(".pgrepl").join(&spec.cluster.name),
    }
}

/// Quotes a libpq conninfo value when it needs it.
pub fn quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}
