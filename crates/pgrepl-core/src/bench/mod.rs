//! Benchmarks that print figures: each measures pgrepl and, in the same run, a baseline made
//! of the bare PostgreSQL steps, so that ratios compare like with like on this machine.

pub mod all;
pub mod failover;
pub mod libpq;
pub mod rejoin;
pub mod roles;
pub mod sync;
pub mod up;
pub mod writer;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::{Cluster, Options};
use crate::error::{Error, Result, ResultExt};
use crate::progress::{Progress, Silent};
use crate::runtime::{self, StopMode};
use crate::secrets::SUPERUSER;
use crate::spec::ClusterSpec;

/// Min, median and max of a set of timings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
    pub runs: usize,
}

impl Stats {
    pub fn of(samples: &[Duration]) -> Stats {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        Stats::of_ms(&ms)
    }

    /// From figures already in milliseconds (a drill's).
    pub fn of_ms(ms: &[f64]) -> Stats {
        let s = Spread::of(ms).unwrap_or_default();
        Stats {
            min_ms: s.min,
            median_ms: s.median,
            max_ms: s.max,
            runs: ms.len(),
        }
    }
}

/// Min, median and max of a set of figures (the median of an even count is the mean of the
/// middle two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// None for no figures.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Some(Spread {
            min: v[0],
            median,
            max: v[n - 1],
        })
    }
}

/// A first port of `count` consecutive free ones, between 10000 and 15000: below the lab's
/// default ports and the kernel's ephemeral range (32768-60999), where a client socket could
/// take a node's port between this check and the server's start.
pub fn free_ports(count: u16) -> u16 {
    let mut base = 10000 + (std::process::id() % 200) as u16 * 20;
    loop {
        if (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
        base = if base > 15000 { 10000 } else { base + count };
    }
}

/// A scratch lab cluster in a temp dir the OS user can enter; deleted with the guard.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub cluster: Cluster,
}

impl Scratch {
    pub async fn lab(opts: &Options, progress: &dyn Progress) -> Result<Scratch> {
        Scratch::lab_on(opts, crate::spec::RuntimeKind::Local, progress).await
    }

    /// A scratch lab on the given runtime (named after this process on the others, whose
    /// objects are named after the cluster: two benchmarks at once do not clash).
    pub async fn lab_on(
        opts: &Options,
        kind: crate::spec::RuntimeKind,
        progress: &dyn Progress,
    ) -> Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix("pgrepl-bench-")
            .tempdir()
            .what(|| "cannot create a temp dir".into())?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .what(|| "cannot open the temp dir to the OS user".into())?;
        let name = if kind.is_local() {
            "bench".to_string()
        } else {
            format!("bench-{}", std::process::id())
        };
        let mut spec = ClusterSpec::lab(&name, free_ports(4))?;
        spec.cluster.runtime = kind;
        let opts = Options {
            config: dir.path().join("pgrepl.toml"),
            ..opts.clone()
        };
        let cluster_dir = crate::cluster::cluster_dir(&spec, &opts.config);
        runtime::complete_new_spec(&mut spec, &cluster_dir).await?;
        spec.save(&opts.config)?;
        let cluster = Cluster::with_spec(spec, &opts, true, progress).await?;
        Ok(Scratch { dir, cluster })
    }

    /// A scratch lab with every node up and streaming.
    pub async fn lab_up(opts: &Options, progress: &dyn Progress) -> Result<Scratch> {
        let scratch = Scratch::lab(opts, progress).await?;
        progress.step("bringing the scratch lab up");
        match crate::ops::up::up(&scratch.cluster, &Silent).await {
            Ok(_) => Ok(scratch),
            Err(e) => {
                scratch.teardown().await;
                Err(e)
            }
        }
    }

    /// Runs `f` on a scratch lab (brought up first when `up`), then tears it down whatever
    /// `f` returned.
    pub async fn with<T>(
        opts: &Options,
        up: bool,
        progress: &dyn Progress,
        f: impl AsyncFnOnce(&mut Cluster) -> Result<T>,
    ) -> Result<T> {
        let mut scratch = if up {
            Scratch::lab_up(opts, progress).await?
        } else {
            Scratch::lab(opts, progress).await?
        };
        let result = f(&mut scratch.cluster).await;
        scratch.teardown().await;
        result
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Stops every node (immediately: the data is thrown away) and removes what the runtime
    /// made for them.
    pub async fn teardown(self) {
        let c = &self.cluster;
        for n in &c.spec.nodes {
            let _ = c.runtime.stop(n, StopMode::Immediate).await;
        }
        let _ = c.runtime.teardown(&c.spec.nodes, true).await;
    }
}

/// Runs pgbench against `node`'s database `dbname` as the OS user that runs PostgreSQL; the
/// password comes from the passfile named in the conninfo, which pgbench takes in place of a
/// database name. Returns its standard output.
pub async fn pgbench(cluster: &Cluster, node: &str, dbname: &str, args: &[&str]) -> Result<String> {
    let spec = cluster.node(node)?;
    let conninfo = format!(
        "{} dbname={dbname}",
        cluster.tool_conninfo(spec, spec, SUPERUSER, "pgrepl_bench")
    );
    let mut cmd = cluster.runtime.command(spec, "pgbench");
    cmd.args(args).arg(conninfo);
    let out = runtime::run("pgbench", &mut cmd).await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs pgbench (see [`pgbench`]) and returns its tps and average latency in ms.
pub async fn pgbench_rate(
    cluster: &Cluster,
    node: &str,
    dbname: &str,
    args: &[&str],
) -> Result<(f64, f64)> {
    let out = pgbench(cluster, node, dbname, args).await?;
    sync::parse_pgbench(&out).ok_or_else(|| Error::Command {
        what: "pgbench".into(),
        detail: format!("no tps/latency in its output:\n{out}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_median_of_milliseconds() {
        let s = Stats::of_ms(&[300.0, 100.0, 200.0]);
        assert_eq!(
            (s.min_ms, s.median_ms, s.max_ms, s.runs),
            (100.0, 200.0, 300.0, 3)
        );
        // An even count: the mean of the middle two.
        let d = Stats::of(&[Duration::from_millis(10), Duration::from_millis(30)]);
        assert_eq!(d.median_ms, 20.0);
        assert_eq!(Stats::of_ms(&[]).runs, 0);
    }
}
