//! Drills that measure: a real write workload runs, an event is injected, and what clients
//! saw is reported: the write gap, the time to recover, acknowledged commits lost, failed
//! writes, the replication lag before the event, and whether every node converged.
//! [`matrix`] runs the failover drill under each replication mode.

pub mod chart;
pub mod event;
pub mod hooks;
pub mod matrix;
pub mod measure;
pub mod sampler;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::Spread;
use crate::cluster::Cluster;
use crate::error::{Error, Result, ResultExt};
use crate::observe::topology;
use crate::ops::{standby, wait};
use crate::postgres::queries;
use crate::progress::Progress;

pub use event::Event;
pub use hooks::Operations;
use measure::Convergence;
use sampler::Sampler;
use writer::{Writer, WriterOptions};

/// How often replication lag is sampled, and the width of a bar in the chart.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub runs: usize,
    pub writers: usize,
    /// Commits per second, all writers together.
    pub rate: f64,
    /// Steady load before the event (the lag baseline).
    pub before: Duration,
    /// Steady load after writes resumed (the chart shows the recovery settle).
    pub after: Duration,
    /// Writes that have not resumed this long after the event fail the drill.
    pub recovery_timeout: Duration,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions {
            runs: 1,
            writers: 4,
            rate: 200.0,
            before: Duration::from_secs(2),
            after: Duration::from_secs(1),
            recovery_timeout: Duration::from_secs(60),
        }
    }
}

impl DrillOptions {
    pub fn validate(&self) -> Result<()> {
        if self.runs == 0 {
            return Err(Error::Invalid("--runs must be at least 1".into()));
        }
        if self.writers == 0 {
            return Err(Error::Invalid(
                "--writers must be at least 1: the drill measures what writing clients see".into(),
            ));
        }
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err(Error::Invalid(
                "--rate must be a positive number of commits per second (e.g. --rate 200)".into(),
            ));
        }
        Ok(())
    }
}

/// One run's figures: the keys of `pgrepl drill --json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub run: usize,
    pub primary_before: String,
    pub primary_after: String,
    /// Longest time without an acknowledged commit around the event.
    pub write_gap_ms: f64,
    /// From the event to the first acknowledged commit after the outage.
    pub recovery_ms: f64,
    /// Acknowledged commits missing on the primary afterwards: the real data loss.
    pub lost_acknowledged: usize,
    /// The (writer, seq) ids of those commits.
    pub lost_ids: Vec<(i32, i64)>,
    /// The same commits with when they were acknowledged, relative to the event.
    pub lost_writes: Vec<measure::LostWrite>,
    /// INSERTs sent that failed (their outcome on the server is unknown).
    pub failed_writes: usize,
    /// Connection attempts that found no read-write node.
    pub connect_errors: usize,
    /// Commits acknowledged after the event but before the outage: backends that outlived
    /// the event for a moment. Under asynchronous replication these are the likeliest to be
    /// lost, since the standby may never have received them.
    pub late_acks: usize,
    /// How long after the event each late ack came.
    pub late_acks_ms: Vec<f64>,
    pub acknowledged: usize,
    /// Highest replication lag of any standby before the event.
    pub max_lag_bytes: Option<u64>,
    pub converged: bool,
    pub event: event::Injected,
    pub convergence: Convergence,
}

/// What a run leaves for the chart and the report: the workload and the lag over time.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub run: usize,
    pub bin_ms: f64,
    /// Acknowledged commits in each bin, from the run's start.
    pub acks_per_bin: Vec<u32>,
    /// Each standby's replay lag: (ms from the start, bytes).
    pub lag: BTreeMap<String, Vec<(f64, u64)>>,
    pub event_ms: f64,
    pub event_end_ms: f64,
    pub first_ack_after_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub write_gap_ms: Option<Spread>,
    pub recovery_ms: Option<Spread>,
    pub lost_acknowledged: Option<Spread>,
    pub failed_writes: Option<Spread>,
    pub late_acks: Option<Spread>,
    pub max_lag_bytes: Option<Spread>,
    /// 1 for a converged run, 0 otherwise: min 1 means every run converged.
    pub converged: Option<Spread>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub event: String,
    /// The replication mode the drill ran under: `async`, or the synchronous_standby_names
    /// setting (`FIRST 1 ("sync2", "sync3")`). Not `mode`: the matrix's report, which
    /// flattens this one, has its own.
    pub replication: String,
    /// The nodes the setting names (every standby for `*`): commits waited for them.
    pub sync_standbys: Vec<String>,
    pub writers: usize,
    pub rate: f64,
    pub runs: Vec<RunResult>,
    pub summary: Summary,
    #[serde(skip)]
    pub traces: Vec<Trace>,
}

impl Summary {
    pub fn of(runs: &[RunResult]) -> Summary {
        let of = |f: &dyn Fn(&RunResult) -> Option<f64>| {
            Spread::of(&runs.iter().filter_map(f).collect::<Vec<f64>>())
        };
        Summary {
            write_gap_ms: of(&|r| Some(r.write_gap_ms)),
            recovery_ms: of(&|r| Some(r.recovery_ms)),
            lost_acknowledged: of(&|r| Some(r.lost_acknowledged as f64)),
            failed_writes: of(&|r| Some(r.failed_writes as f64)),
            late_acks: of(&|r| Some(r.late_acks as f64)),
            max_lag_bytes: of(&|r| r.max_lag_bytes.map(|b| b as f64)),
            converged: of(&|r| Some(if r.converged { 1.0 } else { 0.0 })),
        }
    }
}

/// Runs the drill `opts.runs` times: load, event, measurements, restore.
pub async fn run(
    cluster: &Cluster,
    event: Event,
    opts: &DrillOptions,
    ops: &Operations,
    progress: &dyn Progress,
) -> Result<DrillReport> {
    opts.validate()?;
    event.check(ops)?;
    let found = Found::read(cluster).await?;
    let mut runs = Vec::new();
    let mut traces = Vec::new();
    let mut failed = None;
    for i in 1..=opts.runs {
        match one_run(cluster, event, opts, ops, progress, i).await {
            Ok((result, trace)) => {
                progress.note(&result_line(&event, &result));
                runs.push(result);
                traces.push(trace);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Also after a failed run: the cluster goes back to its primary and sync setting.
    let restored = found.restore(cluster, ops, progress).await;
    if let Some(e) = failed {
        if let Err(r) = restored {
            progress.note(&r.to_string());
        }
        return Err(e);
    }
    progress.note(&restored?);
    Ok(DrillReport {
        event: event.name().to_string(),
        replication: found
            .sync
            .as_ref()
            .map_or("async".into(), |s| s.standby_names_setting()),
        sync_standbys: found.sync_standbys(cluster),
        writers: opts.writers,
        rate: opts.rate,
        summary: Summary::of(&runs),
        runs,
        traces,
    })
}

/// The cluster as a drill found it: the primary and the `[sync]` intent.
struct Found {
    primary: String,
    sync: Option<crate::spec::SyncSpec>,
}

impl Found {
    fn sync_standbys(&self, cluster: &Cluster) -> Vec<String> {
        let Some(s) = &self.sync else {
            return Vec::new();
        };
        cluster
            .spec
            .nodes
            .iter()
            .filter(|n| n.name != self.primary)
            .filter(|n| {
                s.standbys
                    .iter()
                    .any(|a| a == "*" || a == n.application_name())
            })
            .map(|n| n.name.clone())
            .collect()
    }

    async fn read(cluster: &Cluster) -> Result<Found> {
        Ok(Found {
            primary: topology::current_primary(cluster).await?,
            sync: cluster.reloaded()?.spec.sync,
        })
    }

    /// Puts the primary back (a switchover: an odd number of switchovers leaves another one)
    /// and the sync setting; says what it did, or in one line why it could not.
    async fn restore(
        &self,
        cluster: &Cluster,
        ops: &Operations,
        progress: &dyn Progress,
    ) -> Result<String> {
        let cannot = |what: &str, e: &dyn std::fmt::Display| {
            Error::Precondition(format!(
                "the drill could not leave the cluster as it found it: {what} ({e})"
            ))
        };
        let now = topology::current_primary(cluster)
            .await
            .map_err(|e| cannot(&format!("{} is not the primary again", self.primary), &e))?;
        let mut done = Vec::new();
        if now != self.primary {
            progress.step(&format!(
                "switching over from {now} back to {}, the primary the drill found",
                self.primary
            ));
            let switchover = ops.switchover()?;
            let back = |e| {
                cannot(
                    &format!(
                        "{now} is the primary; `pgrepl switchover --to {}` puts {} back",
                        self.primary, self.primary
                    ),
                    &e,
                )
            };
            // A standby that a failed run left stopped or behind first streams again.
            ready(cluster).await.map_err(back)?;
            switchover(cluster, &self.primary, progress)
                .await
                .map_err(back)?;
            done.push(format!("switched over back to {}", self.primary));
        }
        if cluster.reloaded()?.spec.sync != self.sync {
            match &self.sync {
                Some(s) => ops.sync_enable()?(cluster, s, progress).await,
                None => ops.sync_disable()?(cluster, progress).await,
            }
            .map_err(|e| cannot("synchronous replication differs from before", &e))?;
            done.push("synchronous replication set back".into());
        }
        let sync = match &self.sync {
            Some(s) => format!(
                "synchronous_standby_names = '{}'",
                s.standby_names_setting()
            ),
            None => "asynchronous".into(),
        };
        Ok(format!(
            "cluster left as the drill found it: primary {}, {sync}{}",
            self.primary,
            if done.is_empty() {
                String::new()
            } else {
                format!(" ({})", done.join("; "))
            }
        ))
    }
}

/// One line per run, for people.
pub fn result_line(event: &Event, r: &RunResult) -> String {
    let detail = r
        .event
        .detail
        .iter()
        .map(|(k, v)| match v.as_f64() {
            Some(n) => format!(", {} {n:.0}", k.replace('_', " ")),
            None => format!(", {} {v}", k.replace('_', " ")),
        })
        .collect::<String>();
    format!(
        "run {}: {event} of {}: write gap {:.0} ms, recovered in {:.0} ms, {} lost acknowledged{}, {} failed writes{}, max lag before {}{}{}",
        r.run,
        r.primary_before,
        r.write_gap_ms,
        r.recovery_ms,
        r.lost_acknowledged,
        lost_detail(&r.lost_writes),
        r.failed_writes,
        late_detail(&r.late_acks_ms),
        r.max_lag_bytes
            .map(|b| format!("{b} B"))
            .unwrap_or_else(|| "-".into()),
        if r.converged {
            format!(", {} nodes converged", r.convergence.nodes.len())
        } else {
            ", NOT converged".into()
        },
        detail
    )
}

/// The lost commits by id, with when each was acknowledged: a loss acknowledged after the
/// event is the late ack of a backend that outlived it.
fn lost_detail(lost: &[measure::LostWrite]) -> String {
    const SHOWN: usize = 10;
    if lost.is_empty() {
        return String::new();
    }
    let mut ids: Vec<String> = lost
        .iter()
        .take(SHOWN)
        .map(|l| {
            format!(
                "writer {} seq {} acknowledged {:.1} ms {} the event",
                l.writer,
                l.seq,
                l.acked_after_event_ms.abs(),
                if l.acked_after_event_ms < 0.0 {
                    "before"
                } else {
                    "after"
                }
            )
        })
        .collect();
    if lost.len() > SHOWN {
        ids.push(format!("and {} more", lost.len() - SHOWN));
    }
    format!(" ({})", ids.join("; "))
}

/// A count and a range: the full list is in the JSON report.
fn late_detail(late_ms: &[f64]) -> String {
    match Spread::of(late_ms) {
        None => String::new(),
        Some(s) if late_ms.len() == 1 => format!(", 1 late ack {:.1} ms after the event", s.min),
        Some(s) => format!(
            ", {} late acks {:.1}-{:.1} ms after the event",
            late_ms.len(),
            s.min,
            s.max
        ),
    }
}

/// Why writes may not have resumed: commits on the primary waiting for synchronous standbys
/// that do not stream from it.
async fn sync_stall(cluster: &Cluster) -> Option<String> {
    let primary = topology::current_primary(cluster).await.ok()?;
    let c = cluster.connect(&primary).await.ok()?;
    let (waiting, _) = queries::syncrep_waiters(&c).await.ok()?;
    if waiting == 0 {
        return None;
    }
    let names = queries::show(&c, "synchronous_standby_names").await.ok()?;
    Some(format!(
        ": {waiting} commit(s) on {primary} are waiting for synchronous replication (synchronous_standby_names = '{names}') and not enough of those standbys stream from it; they finish once one does (`pgrepl rejoin`, `pgrepl start`) or after `pgrepl sync disable`"
    ))
}

/// The cluster as a run needs it: one primary, every node running, every standby streaming.
async fn ready(cluster: &Cluster) -> Result<String> {
    // Runs change the topology (and save it): who follows whom is in the file as it is now.
    let cluster = &cluster.reloaded()?;
    let primary = topology::current_primary(cluster).await?;
    for n in &cluster.spec.nodes {
        if !cluster.is_running(&n.name).await {
            return Err(Error::Precondition(format!(
                "{} is not running, so runs would not be comparable: start it (`pgrepl start {}`) or bring the cluster up (`pgrepl up`)",
                n.name, n.name
            )));
        }
    }
    for n in cluster.spec.nodes.iter().filter(|n| n.name != primary) {
        standby::wait_streaming_for(cluster, &n.name, Duration::from_secs(30)).await?;
    }
    Ok(primary)
}

async fn one_run(
    cluster: &Cluster,
    event: Event,
    opts: &DrillOptions,
    ops: &Operations,
    progress: &dyn Progress,
    i: usize,
) -> Result<(RunResult, Trace)> {
    progress.step(&format!("run {i}/{}: checking the cluster", opts.runs));
    let primary = ready(cluster).await?;
    let origin = Instant::now();
    let ctx = event::Ctx {
        cluster,
        primary: &primary,
        ops,
        progress,
        origin,
    };
    event.preflight(&ctx).await?;
    let sampler = Sampler::start(cluster, origin, SAMPLE_INTERVAL)?;
    let writer = match Writer::start(
        cluster,
        WriterOptions {
            writers: opts.writers,
            rate: Some(opts.rate),
            origin,
            ..WriterOptions::default()
        },
    )
    .await
    {
        Ok(w) => w,
        Err(e) => {
            sampler.stop().await;
            return Err(e);
        }
    };

    // Until the writers stop, every exit goes through here so that no task is left behind.
    let outcome = async {
        progress.step(&format!(
            "run {i}/{}: writing at {}/s",
            opts.runs, opts.rate
        ));
        wait::until(
            "the drill writers' first commit",
            Duration::from_secs(30),
            || async { writer.last_ack() },
        )
        .await?;
        tokio::time::sleep(opts.before).await;
        let injected = event.inject(&ctx).await?;
        progress.step(&format!(
            "run {i}/{}: waiting for writes to resume",
            opts.runs
        ));
        let resumed = wait::until(
            &format!("writes to resume after the {}", event.name()),
            opts.recovery_timeout,
            || async { writer.last_ack().filter(|&t| t > injected.end) },
        )
        .await;
        if resumed.is_ok() {
            tokio::time::sleep(opts.after).await;
        }
        Ok::<_, Error>((injected, resumed))
    }
    .await;
    let end = origin.elapsed();
    let log = writer.stop().await;
    let lags = sampler.stop().await;
    let (injected, resumed) = outcome?;
    if let Err(e) = resumed {
        return Err(Error::Precondition(format!(
            "{e}: the cluster did not recover by itself{}; look at `pgrepl status` and the logs",
            sync_stall(cluster).await.unwrap_or_default()
        )));
    }

    let ack_times: Vec<Duration> = log.acks.iter().map(|a| a.at).collect();
    let outage = measure::outage(&ack_times, injected.at)
        .ok_or_else(|| Error::Precondition("no commit was acknowledged after the event".into()))?;

    progress.step(&format!("run {i}/{}: checking for lost writes", opts.runs));
    let primary_after = topology::current_primary(cluster).await?;
    let present = measure::present_rows(cluster, &primary_after).await?;
    let lost = measure::missing(&log.acks, &present, injected.at);

    event.restore(&ctx).await?;
    progress.step(&format!(
        "run {i}/{}: waiting for the standbys to catch up",
        opts.runs
    ));
    // The restore may have moved the primary back.
    let restored = ready(cluster).await?;
    let convergence = measure::convergence(cluster, &restored).await?;

    let trace = Trace {
        run: i,
        bin_ms: SAMPLE_INTERVAL.as_secs_f64() * 1000.0,
        acks_per_bin: measure::acks_per_bin(&log.acks, SAMPLE_INTERVAL, end),
        lag: measure::lag_by_node(&lags),
        event_ms: ms(injected.at),
        event_end_ms: ms(injected.end),
        first_ack_after_ms: ms(outage.first_after),
    };
    let result = RunResult {
        run: i,
        primary_before: primary,
        primary_after,
        write_gap_ms: ms(outage.write_gap()),
        recovery_ms: ms(outage.recovery(injected.at)),
        lost_acknowledged: lost.len(),
        lost_ids: lost.iter().map(|l| (l.writer, l.seq)).collect(),
        lost_writes: lost,
        failed_writes: log.failed_writes(),
        connect_errors: log.errors.len() - log.failed_writes(),
        late_acks: outage.late_acks,
        late_acks_ms: measure::late_acks_ms(&ack_times, injected.at, &outage),
        acknowledged: log.acks.len(),
        max_lag_bytes: measure::max_lag_before(&lags, injected.at),
        converged: convergence.converged,
        event: injected,
        convergence,
    };
    Ok((result, trace))
}

/// Milliseconds to 0.1 ms: finer would be noise.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

pub(crate) fn ser_ms<S: serde::Serializer>(
    d: &Duration,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(ms(*d))
}

/// Writes `report.json` and one chart per run (`run-N.svg`, `run-N.png`) into `dir`;
/// returns the files written.
pub fn write_report(report: &DrillReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).what(|| format!("cannot create {}", dir.display()))?;
    let mut files = Vec::new();
    let json = dir.join("report.json");
    let mut value = serde_json::to_value(report).expect("a report serializes");
    value["traces"] = serde_json::to_value(&report.traces).expect("traces serialize");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&value).expect("JSON prints"),
    )
    .what(|| format!("cannot write {}", json.display()))?;
    files.push(json);
    for t in &report.traces {
        for ext in ["svg", "png"] {
            let path = dir.join(format!("run-{}.{ext}", t.run));
            chart::draw(report, t, &path)?;
            files.push(path);
        }
    }
    Ok(files)
}
