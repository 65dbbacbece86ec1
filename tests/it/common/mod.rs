//! Test clusters: real PostgreSQL on free ports in temp dirs, driven through the real
//! `pgrepl` binary, always torn down (also when the test panics).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;

use serde_json::Value;

pub mod safety;

/// The PostgreSQL versions the suite covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pg {
    /// Provisioned by pgrepl itself when the machine lacks it.
    V18,
    /// Debian's PostgreSQL 15.
    V15,
}

pub const PG15_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Pg {
    pub fn bin(self) -> PathBuf {
        match self {
            Pg::V15 => pg15_bin().clone(),
            Pg::V18 => pg18_bin().clone(),
        }
    }
    pub fn major(self) -> u32 {
        match self {
            Pg::V18 => 18,
            Pg::V15 => 15,
        }
    }
}

/// PostgreSQL 18, provisioned once per test process through `pgrepl postgres install 18`
/// (which is idempotent and locked against concurrent installers).
fn pg18_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_pgrepl"))
            .args(["postgres", "install", "18"])
            .output()
            .expect("run pgrepl postgres install");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "provisioning PostgreSQL 18 failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        // "PostgreSQL 18.6 is installed in /path/bin"
        PathBuf::from(
            stdout
                .trim()
                .rsplit(" in ")
                .next()
                .expect("install prints the path"),
        )
    })
}

/// Debian's PostgreSQL 15. On a fresh Debian machine where the tests run as root it is
/// installed with apt-get (under a lock, once); elsewhere its absence is a clear failure.
fn pg15_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = PathBuf::from(PG15_BIN);
        if bin.join("postgres").is_file() {
            return bin;
        }
        let lock = std::fs::File::create(std::env::temp_dir().join("pgrepl-test-pg15.lock")).unwrap();
        lock.lock().unwrap();
        if !bin.join("postgres").is_file() && nix::unistd::Uid::effective().is_root() && Path::new("/usr/bin/apt-get").exists() {
            let ok = Command::new("sh")
                .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "apt-get install postgresql-15 failed");
        }
        assert!(
            bin.join("postgres").is_file(),
            "PostgreSQL 15 is not installed at {PG15_BIN}: install Debian's postgresql-15 (the suite covers 15 and 18)"
        );
        bin
    })
}

/// Ports for one cluster: a block of 10 below the kernel's ephemeral range (32768-60999),
/// where a client socket could take a port between our check and the server's start;
/// spread by process id so that parallel test processes (nextest) rarely collide, and
/// checked free.
pub fn free_base_port() -> u16 {
    const FIRST: u16 = 16000;
    const LAST: u16 = 32000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        FIRST + (std::process::id() % 1500) as u16 * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let mut base = NEXT.fetch_add(10, Ordering::SeqCst);
        if base > LAST {
            base = FIRST + base % (LAST - FIRST);
        }
        if (0..10).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

pub struct TestCluster {
    pub pg: Pg,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub base_port: u16,
    /// `local`, `netns` or `docker`.
    pub runtime: &'static str,
    /// The cluster's name (unique per test cluster on the other runtimes, whose engine
    /// objects are named after it).
    pub name: String,
}

/// Why a runtime cannot run on this machine (its prerequisite is missing), or None.
pub fn runtime_missing(runtime: &str) -> Option<String> {
    match runtime {
        "docker" => {
            let socket = Path::new("/var/run/docker.sock");
            if std::os::unix::net::UnixStream::connect(socket).is_err() {
                return Some(format!("no Docker Engine answers on {}", socket.display()));
            }
            if !nix::unistd::Uid::effective().is_root() {
                return Some("the docker runtime's tests run as root (they enter containers' network namespaces)".into());
            }
            None
        }
        "netns" if !nix::unistd::Uid::effective().is_root() => {
            Some("the netns runtime needs root".into())
        }
        "netns" => ["ip", "nft", "iptables"]
            .into_iter()
            .find(|t| {
                !["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                    .iter()
                    .any(|d| Path::new(d).join(t).exists())
            })
            .map(|t| format!("the netns runtime needs `{t}`, which is not installed")),
        _ => None,
    }
}

/// Skips the calling test, loudly, when `runtime` cannot run here: returns true then.
pub fn skip_without(runtime: &str) -> bool {
    match runtime_missing(runtime) {
        Some(reason) => {
            skipped(&format!("the {runtime} runtime"), &reason);
            true
        }
        None => false,
    }
}

/// Says loudly that a test did not run: straight to the process's stderr, past the test
/// harness's capture (which would hide it for a test that returns).
pub fn skipped(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {test}: {reason} ***\n");
}

impl TestCluster {
    /// A cluster file for the lab (not started).
    pub fn new(pg: Pg) -> Self {
        Self::with_runtime(pg, "local")
    }

    /// A cluster file for the lab on `runtime` (not started); on the others than local it
    /// gets a name of its own, since their objects (containers, networks) are named after it.
    pub fn with_runtime(pg: Pg, runtime: &'static str) -> Self {
        static SEQ: AtomicU16 = AtomicU16::new(0);
        let name = if runtime == "local" {
            "lab".to_string()
        } else {
            format!(
                "t{}x{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::SeqCst)
            )
        };
        Self::named(pg, runtime, &name)
    }

    /// A cluster file for the lab on `runtime`, or None (said loudly, with the reason) when
    /// that runtime cannot run here: the caller returns.
    pub fn on(pg: Pg, runtime: &'static str, test: &str) -> Option<Self> {
        if let Some(reason) = runtime_missing(runtime) {
            skipped(test, &reason);
            return None;
        }
        Some(Self::with_runtime(pg, runtime))
    }

    /// The lab on `runtime`, up and streaming (None: skipped, see [`TestCluster::on`]).
    pub fn up_on(pg: Pg, runtime: &'static str, test: &str) -> Option<Self> {
        let c = Self::on(pg, runtime, test)?;
        c.ok(&["up"]);
        Some(c)
    }

    /// A cluster file for the lab named `name` on `runtime` (not started).
    pub fn named(pg: Pg, runtime: &'static str, name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pgrepl-test-")
            .tempdir()
            .expect("temp dir");
        // The OS user that runs PostgreSQL (when tests run as root) must be able to enter it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = dir.path().join("pgrepl.toml");
        let base_port = free_base_port();
        let c = TestCluster {
            pg,
            dir,
            config,
            base_port,
            runtime,
            name: name.to_string(),
        };
        c.ok(&[
            "init",
            "--base-port",
            &base_port.to_string(),
            "--runtime",
            runtime,
            "--name",
            name,
        ]);
        c
    }

    /// The lab cluster, up and streaming.
    pub fn up(pg: Pg) -> Self {
        let c = Self::new(pg);
        c.ok(&["up"]);
        c
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgrepl"));
        cmd.arg("-c")
            .arg(&self.config)
            .arg("--pg-bin")
            .arg(self.pg.bin())
            .args(args);
        cmd.current_dir(self.dir.path());
        cmd.env_remove("PGREPL_PG_BIN");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run pgrepl")
    }

    /// Runs pgrepl, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "pgrepl {} failed ({}):\nstdout: {stdout}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs pgrepl, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success(),
            "pgrepl {} should have failed:\nstdout: {}\nstderr: {stderr}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status --json is JSON")
    }

    pub fn node_status(&self, node: &str) -> Value {
        self.status()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .cloned()
            .unwrap_or_else(|| panic!("no node {node} in status"))
    }

    /// `pgrepl sql NODE SQL`, trimmed stdout.
    pub fn sql(&self, node: &str, sql: &str) -> String {
        self.ok(&["sql", node, sql]).trim().to_string()
    }

    /// Polls a query on a node until it returns `expected` (replication is asynchronous).
    pub fn wait_sql(&self, node: &str, sql: &str, expected: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let out = self.run(&["sql", node, sql]);
            let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && got == expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{node}: `{sql}` gave {got:?}, expected {expected:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Where the cluster file puts the cluster's data (`.pgrepl/<name>` unless it sets
    /// data_dir, or when it cannot be read).
    pub fn cluster_dir(&self) -> PathBuf {
        match pgrepl_core::spec::ClusterSpec::load(&self.config) {
            Ok(spec) => pgrepl_core::cluster::cluster_dir(&spec, &self.config),
            Err(_) => self.dir.path().join(".pgrepl").join(&self.name),
        }
    }

    /// The superuser's password, read from the cluster's passfile (tests connect directly,
    /// not through pgrepl).
    pub fn superuser_password(&self) -> String {
        std::fs::read_to_string(self.cluster_dir().join("pgpass"))
            .expect("the cluster has a passfile")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let f: Vec<&str> = l.splitn(5, ':').collect();
                (f.len() == 5 && f[3] == "postgres").then(|| f[4].to_string())
            })
            .expect("the passfile has the superuser's password")
    }

    /// Where pgrepl reaches a node from the host, as the cluster file and runtime say.
    pub fn endpoint(&self, node: &str) -> (String, u16) {
        let n = self.node_status(node);
        (
            n["host"].as_str().expect("host").to_string(),
            n["port"].as_u64().expect("port") as u16,
        )
    }

    /// Whether a direct libpq connection to `node` can write: the proof of who is a primary,
    /// independent of what pgrepl reports.
    pub fn accepts_writes(&self, node: &str) -> bool {
        let (host, port) = self.endpoint(node);
        let password = self.superuser_password();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut cfg = tokio_postgres::Config::new();
            cfg.host(&host)
                .port(port)
                .user("postgres")
                .password(password)
                .dbname("postgres")
                .connect_timeout(std::time::Duration::from_secs(3));
            let bound = std::time::Duration::from_secs(5);
            let Ok(Ok((client, conn))) =
                tokio::time::timeout(bound, cfg.connect(tokio_postgres::NoTls)).await
            else {
                return false;
            };
            tokio::spawn(conn);
            let write = client.batch_execute(
                "CREATE TABLE IF NOT EXISTS pgrepl_write_probe (x int); INSERT INTO pgrepl_write_probe VALUES (1)",
            );
            matches!(tokio::time::timeout(bound, write).await, Ok(Ok(())))
        })
    }

    /// The nodes that accept a direct write: exactly one, or the cluster is in trouble.
    pub fn writable_nodes(&self) -> Vec<String> {
        let names: Vec<String> = self.status()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect();
        names
            .into_iter()
            .filter(|n| self.accepts_writes(n))
            .collect()
    }

    /// Starts `pgrepl sql NODE SQL` for a commit that must wait on synchronous replication,
    /// and returns once the node shows it waiting.
    pub fn spawn_waiting_commit(&self, node: &str, sql: &str) -> std::process::Child {
        let mut child = self
            .command(&["sql", node, sql])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        self.wait_sql(
            node,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
            "1",
        );
        assert!(child.try_wait().unwrap().is_none(), "`{sql}` must wait");
        child
    }

    pub fn data_dir(&self, node: &str) -> PathBuf {
        self.cluster_dir().join(node)
    }

    /// Every postmaster this cluster may have started.
    fn postmaster_pids(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir(self.cluster_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("postmaster.pid")).ok())
            .filter_map(|t| t.lines().next()?.trim().parse().ok())
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.runtime == "docker" {
            // Nothing of the cluster may outlive the test: its engine objects included.
            let _ = self.command(&["down", "--purge", "--yes"]).output();
            docker_remove_labelled(&self.cluster_dir());
            return;
        }
        // A clean stop first; whatever survives (a frozen or half-started node) is killed.
        let _ = self.command(&["down"]).output();
        for pid in self.postmaster_pids() {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        // Once nothing runs, what the runtime made (netns: the network) goes for sure.
        if self.runtime != "local" {
            let _ = self.command(&["down", "--purge", "--yes"]).output();
        }
    }
}

/// Removes, with the docker CLI, whatever carries the label of the cluster in `dir` (what a
/// failed `down --purge` may have left: a frozen container, say).
pub fn docker_remove_labelled(dir: &Path) {
    let label = format!("label=pgrepl.dir={}", dir.display());
    for (list, rm) in [
        (
            vec!["ps", "-aq", "--filter", &label],
            vec!["rm", "-f", "-v"],
        ),
        (
            vec!["network", "ls", "-q", "--filter", &label],
            vec!["network", "rm"],
        ),
    ] {
        let Ok(out) = Command::new("docker").args(&list).output() else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").args(&rm).args(&ids).output();
        }
    }
}

/// Declares a test once per PostgreSQL version: `pg_test!(name, |pg| { ... })`.
#[macro_export]
macro_rules! pg_test {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn pg18() {
                ($body)($crate::common::Pg::V18)
            }
            #[test]
            fn pg15() {
                ($body)($crate::common::Pg::V15)
            }
        }
    };
}

/// Waits until `child` exits, at most `within` (`what` names it in the failure).
pub fn exit_within(
    child: &mut std::process::Child,
    within: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A node's entry in a status or command report (`nodes`, by `name` or `node`).
pub fn node<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {report}"))
        .iter()
        .find(|n| n["node"] == name || n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {report}"))
}
