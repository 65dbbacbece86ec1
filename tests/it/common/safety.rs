//! What the safety tests assert, asked of PostgreSQL directly, not through pgrepl: which
//! nodes accept a write, which rows a node has, who streams from whom. And the crash-point
//! driver: running a command killed at a chosen step boundary.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use pgrepl_core::secrets::Secrets;
use pgrepl_core::spec::ClusterSpec;

use super::{Pg, TestCluster};

/// Runs a future on a runtime of its own (the tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

impl TestCluster {
    /// Three nodes, written by hand: pg0 the primary, pg1 and pg2 (application name sync2)
    /// its standbys; `extra` goes into the [cluster] section. Not started.
    pub fn three_nodes(pg: Pg, extra: &str) -> TestCluster {
        let c = TestCluster::new(pg);
        let base = c.base_port;
        let text = format!(
            "[cluster]\nname = \"lab\"\n{extra}\n\
             [[node]]\nname = \"pg0\"\nhost = \"127.0.0.1\"\nport = {base}\n\n\
             [[node]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\nport = {}\nupstream = \"pg0\"\nslot = \"pg1_slot\"\n\n\
             [[node]]\nname = \"pg2\"\nhost = \"127.0.0.1\"\nport = {}\nupstream = \"pg0\"\nslot = \"pg2_slot\"\napplication_name = \"sync2\"\n",
            base + 1,
            base + 2
        );
        std::fs::write(&c.config, text).unwrap();
        c
    }

    pub fn spec(&self) -> ClusterSpec {
        ClusterSpec::load(&self.config).expect("the cluster file loads")
    }

    pub fn spec_text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.spec().nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// A superuser connection straight to a node, the password read from the passfile;
    /// None when the node does not accept one.
    pub async fn direct(&self, node: &str) -> Option<tokio_postgres::Client> {
        let spec = self.spec();
        let n = spec.node(node).ok()?;
        let secrets = Secrets::load(&self.cluster_dir().join("pgpass"), "repluser")
            .ok()
            .flatten()?;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(n.host.to_string())
            .port(n.port)
            .user("postgres")
            .password(&secrets.superuser)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(3));
        let (client, conn) =
            tokio::time::timeout(Duration::from_secs(5), cfg.connect(tokio_postgres::NoTls))
                .await
                .ok()?
                .ok()?;
        tokio::spawn(conn);
        Some(client)
    }

    /// The nodes that accept a write now (a direct libpq write to each).
    pub fn writable(&self) -> Vec<String> {
        self.writable_nodes()
    }

    /// The one node that accepts writes; fails the test when there are none or several.
    pub fn the_writable(&self) -> String {
        let w = self.writable();
        assert_eq!(w.len(), 1, "exactly one node must accept writes: {w:?}");
        w[0].clone()
    }

    /// Inserts `n` rows into `table` (id bigint) on the writable node straight through
    /// libpq, returns their ids once acknowledged.
    pub fn insert_acked(&self, table: &str, from: i64, n: i64) -> Vec<i64> {
        let primary = self.the_writable();
        block_on(async {
            let c = self.direct(&primary).await.expect("the primary answers");
            let mut ids = Vec::new();
            for id in from..from + n {
                c.execute(&format!("INSERT INTO {table} VALUES ($1)"), &[&id])
                    .await
                    .unwrap_or_else(|e| panic!("insert {id} on {primary}: {e}"));
                ids.push(id);
            }
            ids
        })
    }

    /// The ids in `table` on `node`, asked directly.
    pub fn ids(&self, node: &str, table: &str) -> Vec<i64> {
        block_on(async {
            let c = self.direct(node).await.expect("the node answers");
            c.query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, i64>(0))
                .collect()
        })
    }

    /// Exactly one node accepts writes, and it holds every id in `acked`. Returns it.
    pub fn assert_one_primary_holding(&self, table: &str, acked: &[i64]) -> String {
        let primary = self.the_writable();
        let have: std::collections::HashSet<i64> = self.ids(&primary, table).into_iter().collect();
        let missing: Vec<&i64> = acked.iter().filter(|i| !have.contains(i)).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged rows missing on the primary {primary}: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        primary
    }

    /// Waits until every running standby has replayed everything the writable node wrote.
    pub fn wait_replicated(&self) {
        let primary = self.the_writable();
        block_on(async {
            let p = self.direct(&primary).await.unwrap();
            let lsn: String = p
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await
                .unwrap()
                .get(0);
            for n in self.node_names().iter().filter(|n| **n != primary) {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let Some(c) = self.direct(n).await else {
                        break;
                    };
                    let done: Option<bool> = c
                        .query_one(
                            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                            &[&lsn],
                        )
                        .await
                        .ok()
                        .and_then(|r| r.get(0));
                    if done == Some(true) {
                        break;
                    }
                    assert!(Instant::now() < deadline, "{n} does not replay {lsn}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    }

    /// Every standby the cluster file names (but those in `down`) streams from the upstream
    /// the file gives it: the upstream's pg_stat_replication shows it streaming, it is in
    /// recovery, and `status --json` says the same.
    pub fn assert_file_topology_streams(&self, down: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let problems = self.topology_problems(down);
            if problems.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster file's standbys do not all stream: {problems:?}\nstatus: {}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn topology_problems(&self, down: &[&str]) -> Vec<String> {
        let spec = self.spec();
        let status = self.status();
        let mut problems = Vec::new();
        for n in spec
            .nodes
            .iter()
            .filter(|n| !down.contains(&n.name.as_str()))
        {
            let Some(up) = &n.upstream else { continue };
            let streaming = block_on(async {
                let Some(u) = self.direct(up).await else {
                    return false;
                };
                let seen = u
                    .query_one(
                        "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
                        &[&n.application_name()],
                    )
                    .await
                    .is_ok_and(|r| r.get::<_, i64>(0) == 1);
                let Some(me) = self.direct(&n.name).await else {
                    return false;
                };
                let recovering = me
                    .query_one("SELECT pg_is_in_recovery()", &[])
                    .await
                    .is_ok_and(|r| r.get::<_, bool>(0));
                seen && recovering
            });
            if !streaming {
                problems.push(format!("{} does not stream from {up}", n.name));
                continue;
            }
            let row = status["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == n.name.as_str())
                .cloned()
                .unwrap();
            if row["role"] != "standby" || row["upstream"] != up.as_str() {
                problems.push(format!("status disagrees about {}: {row}", n.name));
            }
        }
        problems
    }

    /// Cuts a standby off its upstream (its walreceiver stops), so that the primary's next
    /// WAL reaches only the others.
    pub fn detach(&self, node: &str) {
        self.sql(node, "ALTER SYSTEM SET primary_conninfo = ''");
        self.sql(node, "SELECT pg_reload_conf()");
        self.wait_sql(node, "SELECT count(*) FROM pg_stat_wal_receiver", "0");
    }

    /// Undoes `detach`: the node's own settings (pgrepl.node.conf) apply again.
    pub fn reattach(&self, node: &str) {
        self.sql(node, "ALTER SYSTEM RESET primary_conninfo");
        self.sql(node, "SELECT pg_reload_conf()");
    }

    /// Runs pgrepl with `PGREPL_CRASH_AT=n`. Returns the crash point it was killed at (by
    /// SIGKILL, asserted), or None when it finished first (successfully, asserted).
    pub fn run_crashing_at(&self, args: &[&str], n: usize) -> Option<String> {
        let log = self.path().join(format!("crash-{n}.log"));
        let _ = std::fs::remove_file(&log);
        let out = self
            .command(args)
            .env("PGREPL_CRASH_AT", n.to_string())
            .env("PGREPL_CRASH_LOG", &log)
            .output()
            .expect("run pgrepl");
        let reached = crash_log(&log);
        if out.status.success() {
            return None;
        }
        assert_eq!(
            out.status.signal(),
            Some(9),
            "pgrepl {} with PGREPL_CRASH_AT={n} should have been killed at crash point {n} (it reached {reached:?}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(reached.last().cloned().expect("killed at a crash point"))
    }

    /// Runs pgrepl to completion (asserted) and returns the crash points it passed.
    pub fn crash_points(&self, args: &[&str]) -> Vec<String> {
        let log = self.path().join("crash-all.log");
        let _ = std::fs::remove_file(&log);
        let out = self
            .command(args)
            .env("PGREPL_CRASH_LOG", &log)
            .output()
            .expect("run pgrepl");
        assert!(
            out.status.success(),
            "pgrepl {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        crash_log(&log)
    }

    /// Runs pgrepl killed at the crash point `name`, whose place on the command's path is
    /// learned from `points`: the crash points of a complete run from the same kind of
    /// starting state (`crash_points`).
    pub fn crash_at_named(&self, args: &[&str], points: &[String], name: &str) {
        let n = points
            .iter()
            .position(|p| p == name)
            .unwrap_or_else(|| panic!("no crash point {name} in {points:?}"))
            + 1;
        let reached = self.run_crashing_at(args, n);
        assert_eq!(reached.as_deref(), Some(name), "{points:?}");
    }
}

/// The crash points a run passed, from its PGREPL_CRASH_LOG (`N<TAB>name` lines).
fn crash_log(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(_, name)| name.to_string()))
        .collect()
}
