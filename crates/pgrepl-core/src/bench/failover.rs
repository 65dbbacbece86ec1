//! `pgrepl bench failover`: automatic failover as a client sees it. A scratch lab with the
//! monitor running in this process at its defaults, the drill writer doing one INSERT every
//! 10 ms through every node (`target_session_attrs=read-write`), SIGKILL of the primary's
//! node through the runtime; measured from the kill to the first write acknowledged by the
//! new primary. Printed beside the figures measured for the other tools (issue 10).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::{Scratch, Stats};
use crate::cluster::{Cluster, Options};
use crate::drill::writer::{Writer, WriterOptions};
use crate::error::{Error, Result};
use crate::monitor::run;
use crate::observe::{status, topology};
use crate::ops::wait;
use crate::progress::{Progress, Silent};
use crate::spec::RuntimeKind;

#[derive(Debug, Clone)]
pub struct FailoverOptions {
    pub runs: usize,
    pub runtime: RuntimeKind,
    /// The pgrepl binary: its `monitor` runs on the scratch cluster for a few seconds, as a
    /// process of its own, to read its resident memory. None: this process's is reported.
    pub pgrepl: Option<std::path::PathBuf>,
}

/// Another tool's figure, measured on this kind of machine with the same kind of client.
#[derive(Debug, Clone, Serialize)]
pub struct Anchor {
    pub tool: &'static str,
    /// With its default settings.
    pub default_s: f64,
    /// With its fastest settings that still worked.
    pub fastest_s: f64,
    pub note: &'static str,
}

pub const ANCHORS: &[Anchor] = &[
    Anchor {
        tool: "Patroni",
        default_s: 24.0,
        fastest_s: 4.9,
        note: "plus etcd",
    },
    Anchor {
        tool: "repmgr",
        default_s: 50.8,
        fastest_s: 0.44,
        note: "fastest: after one failed ping, so it fails over on any blip",
    },
    Anchor {
        tool: "pg_auto_failover",
        default_s: 52.8,
        fastest_s: 3.5,
        note: "",
    },
];

#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub postgres: String,
    pub runtime: String,
    /// SIGKILL of the primary to the first write acknowledged by the new primary, per run.
    pub gaps_ms: Vec<f64>,
    pub gap: Stats,
    /// The resident memory of this process, where the monitor ran (with the writer and the
    /// benchmark itself: an upper bound of the monitor's own).
    pub rss_kb: Option<u64>,
    pub rss_of: &'static str,
    pub anchors: &'static [Anchor],
}

pub async fn run(
    opts: &Options,
    o: &FailoverOptions,
    progress: &dyn Progress,
) -> Result<FailoverReport> {
    if o.runs == 0 {
        return Err(Error::Invalid("--runs must be at least 1".into()));
    }
    let scratch = Scratch::lab_on(opts, o.runtime, progress).await?;
    progress.step("bringing the scratch lab up");
    let result = match crate::ops::up::up(&scratch.cluster, &Silent).await {
        Ok(_) => measure(&scratch.cluster, o, progress).await,
        Err(e) => Err(e),
    };
    scratch.teardown().await;
    result
}

async fn measure(
    cluster: &Cluster,
    o: &FailoverOptions,
    progress: &dyn Progress,
) -> Result<FailoverReport> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let monitor = tokio::spawn(run::run(
        cluster.clone(),
        run::Options::default(),
        async {
            let _ = stopped.await;
        },
        Arc::new(|r| tracing::info!("{}", r.line())),
    ));
    let result = runs(cluster, o, progress).await;
    let in_process = rss_kb();
    let _ = stop.send(());
    match monitor.await {
        Ok(Err(e)) => return Err(e),
        Err(e) => {
            return Err(Error::Precondition(format!(
                "the monitor's task failed: {e}"
            )))
        }
        Ok(Ok(())) => {}
    }
    let gaps_ms = result?;
    let (rss_kb, rss_of) = match &o.pgrepl {
        Some(exe) => {
            progress.step("the monitor's own memory: `pgrepl monitor` as a process of its own");
            (
                child_rss_kb(cluster, exe).await?,
                "a `pgrepl monitor` process on the same cluster, after 3 s of watching it",
            )
        }
        None => (
            in_process,
            "this process (monitor in-process, with the writer and the benchmark)",
        ),
    };
    Ok(FailoverReport {
        postgres: cluster.pg.version.clone(),
        runtime: o.runtime.to_string(),
        gap: Stats::of_ms(&gaps_ms),
        gaps_ms,
        rss_kb,
        rss_of,
        anchors: ANCHORS,
    })
}

async fn runs(cluster: &Cluster, o: &FailoverOptions, progress: &dyn Progress) -> Result<Vec<f64>> {
    let mut gaps = Vec::new();
    for i in 1..=o.runs {
        let cluster = cluster.reloaded()?;
        progress.step(&format!(
            "run {i}/{}: waiting for every node to stream",
            o.runs
        ));
        healthy(&cluster).await?;
        let primary = topology::current_primary(&cluster).await?;
        let writer = Writer::start(
            &cluster,
            WriterOptions {
                writers: 1,
                rate: Some(100.0),
                origin: Instant::now(),
                ..WriterOptions::default()
            },
        )
        .await?;
        wait::until(
            "the writer's first commit",
            Duration::from_secs(30),
            || async { writer.last_ack() },
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        progress.step(&format!(
            "run {i}/{}: SIGKILL of the primary {primary}",
            o.runs
        ));
        let kill_started = writer.origin().elapsed();
        cluster.runtime.kill(cluster.node(&primary)?).await?;
        // The old primary is dead once kill returns, but an acknowledgement it sent just
        // before may still be on its way: only an INSERT sent after its death proves the new
        // primary. The one writer has at most one in flight, so two more acknowledgements
        // include such a one.
        let dead = writer.origin().elapsed();
        let before = writer.acked();
        let back = wait::until(
            "a write acknowledged by the new primary",
            Duration::from_secs(60),
            || async { (writer.acked() >= before + 2).then_some(()) },
        )
        .await;
        let log = writer.stop().await;
        back?;
        let first = log
            .acks
            .iter()
            .find(|a| a.sent > dead)
            .map(|a| a.at)
            .ok_or_else(|| {
                Error::Precondition("no write sent after the kill was acknowledged".into())
            })?;
        let gap = first.saturating_sub(kill_started);
        progress.note(&format!(
            "run {i}/{}: {primary} killed, writes acknowledged again after {:.0} ms",
            o.runs,
            gap.as_secs_f64() * 1000.0
        ));
        gaps.push(gap.as_secs_f64() * 1000.0);
    }
    Ok(gaps)
}

/// Waits until one primary runs and every other node streams (the monitor rejoins the
/// killed primary between runs).
async fn healthy(cluster: &Cluster) -> Result<()> {
    wait::until(
        "every node to stream from one primary (the monitor rejoins the old one)",
        Duration::from_secs(120),
        || async {
            let s = status::status(&cluster.reloaded().ok()?).await;
            let ok = s.primary.is_some()
                && !s.split_brain
                && s.nodes.iter().all(|n| {
                    s.primary.as_deref() == Some(n.name.as_str())
                        || (n.streaming && !n.needs_rejoin)
                });
            ok.then_some(())
        },
    )
    .await
}

/// Runs `pgrepl monitor` on the cluster for a few ticks and reads its resident memory.
async fn child_rss_kb(cluster: &Cluster, exe: &std::path::Path) -> Result<Option<u64>> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("-c")
        .arg(&cluster.spec_path)
        .arg("--pg-bin")
        .arg(&cluster.pg.bin)
        .arg("monitor")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Precondition(format!("cannot run {}: {e}", exe.display())))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = child
        .id()
        .and_then(|pid| proc_rss_kb(&format!("/proc/{pid}/status")));
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    Ok(rss)
}

/// This process's resident memory (VmRSS), in kB.
pub fn rss_kb() -> Option<u64> {
    proc_rss_kb("/proc/self/status")
}

fn proc_rss_kb(status: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
