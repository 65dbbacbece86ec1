//! `pgrepl rejoin` (the lab's 12_failover.sh): a failed or demoted node becomes a standby of
//! the new primary, by pg_rewind when it has diverged, by a fresh clone on request. It says
//! what the rewind threw away: WAL the old timeline had past the fork point.
//!
//! A rejoin can be killed at any point and run again. pg_rewind (a child that outlives us)
//! is the one step that cannot be repeated safely: a journal file says it was started, and a
//! rerun either finds it finished (the control file says so), waits for it, or, when it was
//! interrupted, re-clones (the old directory is kept).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::crashpoint;
use crate::error::{Error, Result, ResultExt};
use crate::observe::authority::{self, Facts};
use crate::observe::lineage::{self, History, WalEnd};
use crate::observe::topology::{self, Probe};
use crate::observe::twins::{self, WalSource};
use crate::ops::{config, follow, journal, slots, standby, wait, Outcome};
use crate::postgres::conn::Conn;
use crate::postgres::queries::Position;
use crate::postgres::timeline::{self, Lineage, TimelinePath};
use crate::postgres::{queries, Lsn};
use crate::progress::{figure, Progress};
use crate::runtime::StopMode;
use crate::secrets::SUPERUSER;
use crate::spec::NodeSpec;

/// WAL of the old timeline that a rewind discards: what the node wrote after the fork point,
/// which the new primary never received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    pub tli: u32,
    pub fork: Lsn,
    /// Where that WAL ends; None when neither pg_waldump nor the node's end of WAL could tell
    /// (then the amount is unknown, never reported as 0).
    pub end: Option<Lsn>,
    /// Commit records (transactions) among the discarded WAL, when pg_waldump could read it.
    pub transactions: Option<u64>,
    /// Heap inserts, updates and deletes among it.
    pub row_changes: Option<u64>,
}

impl Discarded {
    /// Bytes of WAL past the fork point; None when unknown.
    pub fn bytes(&self) -> Option<u64> {
        self.end.map(|end| end.bytes_after(self.fork))
    }

    /// Whether it is known that nothing was written past the fork point.
    pub fn known_empty(&self) -> bool {
        self.transactions.is_some() && self.bytes() == Some(0)
    }

    /// For `--json`: the bytes always (both ends are known), the transactions and row changes
    /// when pg_waldump could read the WAL (else null).
    pub fn figures(&self, progress: &dyn Progress) {
        figure(progress, "discarded_wal_bytes", self.bytes());
        figure(progress, "fork_lsn", self.fork.to_string());
        figure(progress, "discarded_transactions", self.transactions);
        figure(progress, "discarded_row_changes", self.row_changes);
    }

    pub fn describe(&self) -> String {
        let (fork, tli) = (self.fork, self.tli);
        let mut s = match self.end {
            Some(end) => format!(
                "fork point {fork} on timeline {tli}; discarded {} bytes of WAL of timeline {tli} past it (up to {end})",
                end.bytes_after(fork)
            ),
            None => format!(
                "fork point {fork} on timeline {tli}; discarded an unknown amount of WAL of timeline {tli} past it (pg_waldump could not read it)"
            ),
        };
        match (self.transactions, self.row_changes) {
            (Some(t), Some(r)) => {
                s += &format!(
                    ": {t} committed {}, {r} row {} that never reached the new primary",
                    if t == 1 {
                        "transaction"
                    } else {
                        "transactions"
                    },
                    if r == 1 { "change" } else { "changes" }
                );
            }
            _ if self.end.is_some() => {
                s += ": how many transactions it held is unknown (pg_waldump could not read it)"
            }
            _ => {}
        }
        s
    }
}

/// Marks a rewind in progress (kept next to the data, not in it: pg_rewind rewrites it).
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    upstream: String,
    rewind_started: bool,
}

/// The journal's name: `.rejoin-<node>.json` in the cluster directory.
fn journal_name(node: &str) -> String {
    format!("rejoin-{node}")
}

/// `pgrepl rejoin NODE --upstream NODE [--slot SLOT] [--reclone] [--force]`.
pub async fn rejoin(
    cluster: &mut Cluster,
    node: &str,
    upstream: &str,
    slot: Option<&str>,
    reclone: bool,
    force: bool,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let started = Instant::now();
    cluster.node(node)?;
    cluster.node(upstream)?;
    if node == upstream {
        return Err(Error::Invalid(format!("{node} cannot rejoin itself")));
    }
    if let Some(s) = slot {
        crate::spec::validate_slot_name(s)?;
    }
    let mut next = cluster.spec.clone();
    next.set_upstream(node, upstream, slot)?;
    crate::ops::net::refuse_partitioned(
        cluster,
        node,
        upstream,
        &format!("rejoin {node} to {upstream}"),
    )
    .await?;
    let up = cluster.connect(upstream).await.map_err(|e| {
        Error::Precondition(format!(
            "cannot rejoin {node}: its new upstream {upstream} is not reachable ({e}); start it (`pgrepl start {upstream}`) or name another with --upstream"
        ))
    })?;
    let history = History::read(&up, upstream).await?;
    let up_pos = queries::position(&up).await?;

    // Every refusal comes before the first change.
    let probes = topology::probe_all(cluster).await;
    refuse_wrong_target(cluster, node, upstream, &probes, &up_pos, reclone, force)?;
    if !reclone
        && probes
            .iter()
            .any(|p| p.name == node && p.position.is_some())
    {
        let c = cluster.connect(node).await?;
        if let Some(end) = lineage::running_end(&c).await? {
            let src = WalSource::Running(&c);
            refuse_unrewindable(node, &up, &history, &src, &end).await?;
        }
    }
    if up_pos.in_recovery {
        progress.note(&format!(
            "{upstream} is a standby: {node} will cascade from it"
        ));
    }
    drop(up);

    let journal = journal_name(node);
    wait_for_leftovers(cluster, node, progress).await?;
    let server = cluster.server(node)?;
    if !server.exists() && !reclone {
        return Err(Error::Precondition(format!(
            "{node} has no data directory: re-clone it with `pgrepl rejoin {node} --upstream {upstream} --reclone`"
        )));
    }
    figure(progress, "node", node);
    figure(progress, "upstream", upstream);
    figure(progress, "timeline", history.tli());
    let previous = cluster.swap_spec(next);
    let result = rejoin_inner(cluster, node, &history, reclone, &journal, progress).await;
    let outcome = cluster.settle_spec(previous, result)?;
    journal::clear(cluster, &journal)?;
    Ok(match outcome {
        Outcome::Done(m) => Outcome::Done(format!(
            "{m}\nrejoined in {:.2} s",
            started.elapsed().as_secs_f64()
        )),
        o => o,
    })
}

/// Refusals that need no more than a look at every node: rejoining the primary that serves
/// (nothing would be left to write to), a data directory of another database system, and an
/// upstream that a newer promotion has left behind.
fn refuse_wrong_target(
    cluster: &Cluster,
    node: &str,
    upstream: &str,
    probes: &[Probe],
    up_pos: &Position,
    reclone: bool,
    force: bool,
) -> Result<()> {
    let facts = authority::of_probes(cluster, probes);
    let fact = |n: &str| facts.iter().find(|f| f.name == n).expect("probed");
    let (me, up) = (fact(node), fact(upstream));
    let probe = probes.iter().find(|p| p.name == node).expect("probed");

    // A primary is rejoined only as the stale side of a split brain: another primary was
    // promoted after it, and the upstream is on that newer history (the primary itself, or
    // one of its standbys).
    let newer_primary = probes
        .iter()
        .any(|p| p.is_primary() && p.name != node && authority::supersedes(fact(&p.name), me));
    let stale_side = newer_primary && authority::supersedes(up, me);
    if probe.is_primary() && !force && !stale_side {
        let what = if !up_pos.in_recovery {
            format!("{upstream} is a primary too, and no promotion after {node}'s put it ahead")
        } else if cluster.streams_from(up_pos, node) {
            format!("{upstream} is its standby")
        } else {
            format!("{upstream} is a standby")
        };
        return Err(Error::Precondition(format!(
            "{node} is the running primary ({what}): rejoining it would leave no primary; for a planned change use `pgrepl switchover --to {upstream}`; `pgrepl rejoin {node} --upstream {upstream} --force` demotes {node} anyway"
        )));
    }

    if let (Some(mine), Some(theirs)) = (probe.system_id(), up_pos.system_id) {
        if mine != theirs && !reclone {
            return Err(Error::Precondition(format!(
                "{node}'s data directory belongs to another database system (identifier {mine}) than {upstream}'s ({theirs}): it was not cloned from it, so neither streaming nor pg_rewind can bring it back; re-clone it with `pgrepl rejoin {node} --upstream {upstream} --reclone` (the old directory is kept)"
            )));
        }
    }

    let newer: Vec<&Facts> = facts
        .iter()
        .filter(|o| o.name != node && o.name != upstream && authority::supersedes(o, up))
        .collect();
    if let Some(n) = newer
        .iter()
        .max_by_key(|f| (f.path.as_ref().map_or(0, |p| p.tli), f.end))
    {
        let start = if n.running {
            String::new()
        } else {
            format!(" (start it first: `pgrepl start {}`)", n.name)
        };
        return Err(Error::Precondition(format!(
            "{upstream} is not on the newest history: {} was promoted after {upstream}'s timeline {} (it is on timeline {}), so a node rejoined to {upstream} would follow a history that has been left behind; rejoin {node} to it: `pgrepl rejoin {node} --upstream {}`{start}",
            n.name,
            up.path.as_ref().map_or(0, |p| p.tli),
            n.path.as_ref().map_or(0, |p| p.tli),
            n.name
        )));
    }
    Ok(())
}

/// Refuses, before anything changes, a node whose WAL neither streaming nor pg_rewind can
/// reconcile with the upstream's: newer than it, unrelated to it, or on the same timeline
/// number with another history (pg_rewind then sees "the same timeline" and rewinds nothing).
async fn refuse_unrewindable(
    node: &str,
    up: &Conn,
    history: &History,
    src: &WalSource<'_>,
    end: &WalEnd,
) -> Result<()> {
    let upstream = &history.node;
    let reclone = format!("`pgrepl rejoin {node} --upstream {upstream} --reclone`");
    match history.lineage(end) {
        Lineage::Ahead | Lineage::Unrelated => {
            let tli = end.tli();
            Err(Error::Precondition(format!(
                "pg_rewind cannot bring {node} back: its timeline {tli} is {} {upstream}'s history (timeline {}); re-clone it with {reclone}",
                if tli > history.tli() { "newer than" } else { "not in" },
                history.tli()
            )))
        }
        Lineage::Diverged { fork, .. } if end.tli() == history.tli() => Err(Error::Precondition(format!(
            "{node} and {upstream} are both on timeline {}, but with different histories (they parted at {fork}): pg_rewind compares timeline numbers only and would rewind nothing; re-clone {node} with {reclone} (the old directory is kept)",
            end.tli()
        ))),
        Lineage::Diverged { .. } => Ok(()),
        Lineage::Follows { .. } => match twins::refusal(node, up, history, src, end).await {
            Some(why) => Err(Error::Precondition(why)),
            None => Ok(()),
        },
    }
}

async fn rejoin_inner(
    cluster: &Cluster,
    node: &str,
    history: &History,
    reclone: bool,
    journal: &str,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let upstream = history.node.as_str();
    let spec = cluster.node(node)?.clone();
    let server = cluster.server(node)?;

    if server.is_running().await {
        let c = cluster.connect(node).await?;
        let pos = queries::position(&c).await?;
        if pos.in_recovery && !reclone {
            let end = lineage::running_end(&c).await?;
            let diverged = end.and_then(|e| lineage::cannot_follow(node, history, &e));
            if diverged.is_none() {
                // Not diverged: a repoint is all it takes (and "already" when it streams).
                figure(progress, "method", "repoint");
                figure(progress, "discarded_wal_bytes", 0);
                return match follow::repoint(cluster, node, progress).await? {
                    Outcome::AlreadyDone(_) => Ok(Outcome::AlreadyDone(format!(
                        "{node} is already a standby streaming from {upstream}: nothing to do"
                    ))),
                    Outcome::Done(m) => Ok(Outcome::Done(format!(
                        "{m} (it had not diverged: no rewind needed)"
                    ))),
                };
            }
        }
        drop(c);
        progress.step(&format!("stopping {node} (fast shutdown)"));
        server.stop(StopMode::Fast).await?;
        progress.note(&format!("stopped {node} (fast shutdown)"));
        crashpoint::reached("rejoin: stopped");
    }

    if reclone {
        figure(progress, "method", "reclone");
        return reclone_node(cluster, node, progress).await;
    }

    let control = server.controldata().await?;
    if journal::read::<Journal>(cluster, journal).is_some_and(|j| j.rewind_started) {
        // pg_rewind updates the control file last: "in archive recovery" means it finished.
        if control.state == "in archive recovery" {
            progress.note(&format!(
                "an earlier rejoin of {node} finished its pg_rewind: completing it"
            ));
            return finish(cluster, &spec, None, None, progress).await;
        }
        if rewind_log(cluster, node).is_some_and(|t| started_copying(&t)) {
            progress.note(&format!(
                "an earlier rejoin of {node} was interrupted while pg_rewind copied files, so its data directory cannot be trusted: re-cloning it instead"
            ));
            return reclone_node(cluster, node, progress).await;
        }
        progress.note(&format!(
            "an earlier rejoin of {node} was interrupted before pg_rewind changed anything: running it again"
        ));
        journal::clear(cluster, journal)?;
    }

    let clean = control.cleanly_shut_down();
    let probe = topology::probe(cluster, node).await;
    let end = if clean {
        lineage::stopped_end(&probe)
    } else {
        None
    };
    let tli = end
        .as_ref()
        .map(WalEnd::tli)
        .or_else(|| server.newest_wal_timeline())
        .or(control.checkpoint_timeline)
        .unwrap_or(1);
    // After a crash the end of WAL is unknown: compare as if it went on for ever, so that any
    // fork on its path counts as passed.
    let node_path = match &end {
        Some(e) => e.path.clone(),
        None => probe
            .path
            .clone()
            .unwrap_or_else(|| TimelinePath::new(tli, Vec::new())),
    };
    let node_end = end.as_ref().map(|e| e.end).unwrap_or(Lsn(u64::MAX));
    let known_end = WalEnd {
        path: node_path.clone(),
        end: node_end,
    };
    {
        let up = cluster.connect(upstream).await?;
        let src = WalSource::Stopped(&server.data);
        refuse_unrewindable(node, &up, history, &src, &known_end).await?;
    }
    let fork = match timeline::lineage(&history.path, &node_path, node_end) {
        Lineage::Ahead | Lineage::Unrelated => unreachable!("refused above"),
        Lineage::Follows { .. } if clean => {
            // Its WAL stops at or before the fork point: it can stream as it is.
            figure(progress, "method", "none");
            figure(progress, "discarded_wal_bytes", 0);
            return finish(
                cluster,
                &spec,
                None,
                Some("it had not diverged: no rewind needed"),
                progress,
            )
            .await;
        }
        Lineage::Follows { fork } => fork,
        Lineage::Diverged { fork, .. } => Some(fork),
    };

    // What the rewind will throw away, read before crash recovery adds its own checkpoint.
    let discarded = match fork {
        Some(fork) => {
            let known = end.as_ref().map(|e| e.end);
            Some(discarded_wal(cluster, &spec, &server.data, tli, fork, known).await)
        }
        None => None,
    };
    if !clean {
        // A crash that left no WAL past the fork point (or a standby on the upstream's
        // timeline) needs no rewind: started as a standby, it replays its own WAL first
        // (crash recovery) and then follows the new timeline.
        let nothing_past = discarded.as_ref().is_none_or(Discarded::known_empty);
        if nothing_past {
            figure(progress, "method", "crash recovery");
            if let Some(d) = &discarded {
                d.figures(progress);
            }
            let what = discarded.map(|d| d.describe());
            return finish(
                cluster,
                &spec,
                what,
                Some("crashed, but it wrote nothing past the fork point: no rewind needed"),
                progress,
            )
            .await;
        }
        crash_recovery(cluster, node, progress).await?;
        crashpoint::reached("rejoin: crash recovery done");
    }

    // The new primary's own checkpoint after its promotion must be done, or the rewound node
    // may refuse to start ("requested timeline does not contain minimum recovery point").
    progress.step(&format!("checkpoint on {upstream}"));
    cluster
        .connect(upstream)
        .await?
        .batch_execute_within("CHECKPOINT", crate::postgres::conn::SLOW_BOUND)
        .await
        .what(|| format!("cannot checkpoint {upstream}"))?;
    crashpoint::reached("rejoin: checkpoint on the upstream");

    let t = Instant::now();
    let report = rewind(cluster, node, upstream, journal, progress).await?;
    figure(progress, "method", "pg_rewind");
    figure(progress, "rewind_ms", t.elapsed().as_millis() as u64);
    crashpoint::reached("rejoin: rewound");
    let mut what = vec![report.summary()];
    if let Some(mut d) = discarded {
        if let Some(f) = report.diverged_at {
            d.fork = f;
        }
        d.figures(progress);
        what.push(d.describe());
    }
    finish(cluster, &spec, Some(what.join("; ")), None, progress).await
}

/// The node's settings from the spec, its slot on the upstream, a start, and streaming.
async fn finish(
    cluster: &Cluster,
    spec: &NodeSpec,
    rewound: Option<String>,
    note: Option<&str>,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let node = spec.name.as_str();
    let upstream = spec.upstream.as_deref().expect("set_upstream gave it one");
    let slot = spec.slot_or_default();
    let server = cluster.server(node)?;
    // pg_rewind copied the upstream's settings (its port, its primary_conninfo): ours replace
    // them, and a copied postmaster.opts would mislead pg_ctl.
    config::write_node_files(cluster, spec, &server.data)?;
    let _ = std::fs::remove_file(server.data.join("postmaster.opts"));
    crashpoint::reached("rejoin: settings written");
    let up = cluster.connect(upstream).await?;
    queries::ensure_slot(&up, &slot).await?;
    crashpoint::reached("rejoin: slot created");
    progress.step(&format!("starting {node} as a standby of {upstream}"));
    server.start().await?;
    crashpoint::reached("rejoin: started");
    standby::wait_streaming_from(
        cluster,
        node,
        Some(cluster.node(upstream)?),
        standby::STREAM_TIMEOUT,
    )
    .await?;
    crashpoint::reached("rejoin: streaming");
    let tidied = tidy_slots(cluster, node).await;
    let mut msg =
        format!("{node} rejoined as a standby of {upstream}, streaming through slot {slot}");
    if let Some(r) = rewound {
        msg += &format!("\n{r}");
    }
    if let Some(n) = note {
        msg += &format!("\n{n}");
    }
    if let Some(t) = tidied {
        msg += &format!("\n{t}");
    }
    Ok(Outcome::Done(msg))
}

/// Slots on the rejoined node: the ones its spec downstreams stream through are created (a
/// cascade works at once); others, left from its time as a primary, are dropped, since they
/// would hold WAL on it.
async fn tidy_slots(cluster: &Cluster, node: &str) -> Option<String> {
    if let Ok(c) = cluster.connect(node).await {
        for n in cluster.spec.downstream_of(node) {
            let s = n.slot_or_default();
            if let Err(e) = queries::ensure_slot(&c, &s).await {
                tracing::debug!(node, slot = s, error = %e, "could not create a cascade slot");
            }
        }
    }
    slots::note(node, &slots::tidy(cluster, node).await)
}

/// What pg_rewind said.
#[derive(Debug, Default)]
struct RewindReport {
    no_rewind_required: bool,
    diverged_at: Option<Lsn>,
    to_copy: Option<String>,
    took: Duration,
}

impl RewindReport {
    fn parse(text: &str) -> Self {
        let mut r = RewindReport {
            no_rewind_required: text.contains("no rewind required"),
            ..Default::default()
        };
        for line in text.lines() {
            if let Some(rest) = line.split("servers diverged at WAL location ").nth(1) {
                r.diverged_at = rest.split_whitespace().next().and_then(|l| l.parse().ok());
            }
            if let Some(rest) = line.split("need to copy ").nth(1) {
                r.to_copy = rest.split(" (").next().map(str::to_string);
            }
        }
        r
    }

    fn summary(&self) -> String {
        if self.no_rewind_required {
            return format!(
                "pg_rewind: no rewind required ({:.2} s)",
                self.took.as_secs_f64()
            );
        }
        format!(
            "pg_rewind copied {} in {:.2} s",
            self.to_copy.as_deref().unwrap_or("?"),
            self.took.as_secs_f64()
        )
    }
}

/// Runs pg_rewind against the upstream as the superuser (it reads files with
/// pg_read_binary_file), the password through the passfile.
async fn rewind(
    cluster: &Cluster,
    node: &str,
    upstream: &str,
    journal: &str,
    progress: &dyn Progress,
) -> Result<RewindReport> {
    let spec = cluster.node(node)?;
    let conninfo = format!(
        "{} dbname=postgres",
        cluster.tool_conninfo(spec, cluster.node(upstream)?, SUPERUSER, "pgrepl_rewind")
    );
    let mut cmd = cluster.runtime.command(spec, "pg_rewind");
    cmd.arg("-D")
        .arg(cluster.data_dir(node))
        .arg(format!("--source-server={conninfo}"))
        .arg("--progress");
    if cluster.pg.major >= 17 {
        // One syncfs() of the file system instead of an fsync() per file: as safe, faster.
        cmd.arg("--sync-method=syncfs");
    }
    // A log from an earlier rejoin must not speak for this one.
    let _ = std::fs::remove_file(rewind_log_path(cluster, node));
    journal::write(
        cluster,
        journal,
        &Journal {
            upstream: upstream.to_string(),
            rewind_started: true,
        },
    )?;
    crashpoint::reached("rejoin: journal written");
    progress.step(&format!("pg_rewind {node} from {upstream}"));
    let started = Instant::now();
    let (status, text) = run_detached(cluster, node, "pg_rewind", &mut cmd).await?;
    if !status.success() {
        let copying = started_copying(&text);
        if !copying {
            journal::clear(cluster, journal)?;
        }
        let last = text
            .lines()
            .rfind(|l| l.contains("pg_rewind:"))
            .unwrap_or(text.trim());
        return Err(Error::Command {
            what: format!("pg_rewind of {node} from {upstream}"),
            detail: format!(
                "{last}; {}",
                if copying {
                    format!("it had started copying, so {node}'s data directory cannot be trusted: run `pgrepl rejoin {node} --upstream {upstream} --reclone` (the old directory is kept)")
                } else {
                    format!("{node} is unchanged; `pgrepl rejoin {node} --upstream {upstream} --reclone` takes a fresh copy instead")
                }
            ),
        });
    }
    let mut r = RewindReport::parse(&text);
    r.took = started.elapsed();
    Ok(r)
}

fn rewind_log_path(cluster: &Cluster, node: &str) -> PathBuf {
    cluster
        .dir
        .join("log")
        .join(format!("{node}.rejoin-pg_rewind.log"))
}

fn rewind_log(cluster: &Cluster, node: &str) -> Option<String> {
    std::fs::read_to_string(rewind_log_path(cluster, node)).ok()
}

/// Until it says how much it will copy, pg_rewind has only read: the target is untouched.
fn started_copying(pg_rewind_output: &str) -> bool {
    pg_rewind_output.contains("need to copy") || pg_rewind_output.contains("copied")
}

/// Runs a step that must be able to outlive us (a killed rejoin leaves it to finish): its
/// output goes to a log file, not to a pipe whose closing would kill it with SIGPIPE.
async fn run_detached(
    cluster: &Cluster,
    node: &str,
    what: &str,
    cmd: &mut tokio::process::Command,
) -> Result<(std::process::ExitStatus, String)> {
    let log = cluster
        .dir
        .join("log")
        .join(format!("{node}.rejoin-{what}.log"));
    let file = std::fs::File::create(&log).what(|| format!("cannot create {}", log.display()))?;
    let err = file
        .try_clone()
        .what(|| format!("cannot open {}", log.display()))?;
    tracing::debug!(?cmd, "running");
    let status = cmd
        .stdout(file)
        .stderr(err)
        .status()
        .await
        .what(|| format!("cannot run {what}"))?;
    Ok((status, std::fs::read_to_string(&log).unwrap_or_default()))
}

/// Brings a crashed data directory to a clean shutdown without ever accepting connections:
/// a single-user backend replays its WAL and writes a shutdown checkpoint (pg_rewind needs
/// that). Single-user mode refuses standby.signal; the spec's files are written afterwards.
async fn crash_recovery(cluster: &Cluster, node: &str, progress: &dyn Progress) -> Result<()> {
    let data = cluster.data_dir(node);
    let spec = cluster.node(node)?;
    cluster.runtime.clear_stale_lock(spec).await?;
    for signal in ["standby.signal", "recovery.signal"] {
        let p = data.join(signal);
        if p.exists() {
            std::fs::remove_file(&p).what(|| format!("cannot remove {}", p.display()))?;
        }
    }
    progress.step(&format!("crash recovery of {node} (single-user mode)"));
    let mut cmd = cluster.runtime.command(spec, "postgres");
    cmd.args(["--single", "-F", "-c", "exit_on_error=false", "-D"])
        .arg(&data)
        .arg("template1");
    let (status, text) = run_detached(cluster, node, "crash-recovery", &mut cmd).await?;
    if !status.success() {
        return Err(Error::Command {
            what: format!("crash recovery of {node}"),
            detail: format!("{} ({status})", text.trim()),
        });
    }
    progress.note(&format!(
        "{node} had crashed: ran it through crash recovery (single-user mode, no connections)"
    ));
    Ok(())
}

/// Reads the old timeline's WAL past the fork point with pg_waldump: how much there is and
/// how many transactions and row changes it holds. Best effort: on failure only the bytes up
/// to the node's known end of WAL (`known_end`, None after a crash) are known, and without
/// that the amount is unknown.
pub(crate) async fn discarded_wal(
    cluster: &Cluster,
    node: &NodeSpec,
    data: &Path,
    tli: u32,
    fork: Lsn,
    known_end: Option<Lsn>,
) -> Discarded {
    let unknown = Discarded {
        tli,
        fork,
        end: known_end.map(|e| e.max(fork)),
        transactions: None,
        row_changes: None,
    };
    let mut cmd = cluster.runtime.command(node, "pg_waldump");
    cmd.arg("-p")
        .arg(data.join("pg_wal"))
        .args(["-t", &tli.to_string(), "-s", &fork.to_string()]);
    // pg_waldump exits non-zero at the end of the WAL it can read, which is always here.
    let Ok(out) = cmd.output().await else {
        return unknown;
    };
    let w = WaldumpSummary::parse(&String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    if w.records == 0 && !err.contains("could not find a valid record") {
        tracing::debug!(%err, "pg_waldump could not read the discarded WAL");
        return unknown;
    }
    Discarded {
        end: Some(w.end.unwrap_or(fork).max(fork)),
        transactions: Some(w.commits),
        row_changes: Some(w.row_changes),
        ..unknown
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct WaldumpSummary {
    records: u64,
    commits: u64,
    row_changes: u64,
    end: Option<Lsn>,
}

impl WaldumpSummary {
    /// Lines look like `rmgr: Heap len (rec/tot): 59/59, tx: 755, lsn: 0/05020B18, prev
    /// 0/05020AE0, desc: INSERT off: 2, flags: 0x08, ...`.
    fn parse(text: &str) -> Self {
        let mut s = WaldumpSummary::default();
        for line in text.lines().filter(|l| l.starts_with("rmgr:")) {
            s.records += 1;
            let rmgr = line[5..].split_whitespace().next().unwrap_or("");
            let desc = line.split("desc: ").nth(1).unwrap_or("");
            let op = desc.split_whitespace().next().unwrap_or("");
            if rmgr == "Transaction" && op.starts_with("COMMIT") {
                s.commits += 1;
            }
            if (rmgr == "Heap" || rmgr == "Heap2")
                && matches!(
                    op,
                    "INSERT"
                        | "INSERT+INIT"
                        | "UPDATE"
                        | "UPDATE+INIT"
                        | "HOT_UPDATE"
                        | "HOT_UPDATE+INIT"
                        | "DELETE"
                )
            {
                s.row_changes += 1;
            } else if rmgr == "Heap2" && op.starts_with("MULTI_INSERT") {
                s.row_changes += desc
                    .split("ntuples: ")
                    .nth(1)
                    .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
            }
            let lsn = line
                .split("lsn: ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .and_then(|l| l.trim().parse::<Lsn>().ok());
            let tot = line
                .split("len (rec/tot): ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .and_then(|r| r.split('/').nth(1))
                .and_then(|t| t.trim().parse::<u64>().ok());
            if let (Some(l), Some(t)) = (lsn, tot) {
                // Records start on 8-byte boundaries: the next one (the end) too.
                s.end = Some(Lsn((l.0 + t + 7) & !7));
            }
        }
        s
    }
}

/// Processes a killed rejoin left behind on this data directory (pg_rewind, or a single-user
/// crash recovery): they finish on their own; wait for them rather than race them.
async fn wait_for_leftovers(cluster: &Cluster, node: &str, progress: &dyn Progress) -> Result<()> {
    let spec = cluster.node(node)?;
    let busy = || cluster.runtime.busy_tools(spec);
    if busy().is_empty() {
        return Ok(());
    }
    progress.note(&format!(
        "waiting for processes an interrupted rejoin of {node} left running: {:?}",
        busy()
    ));
    wait::until(
        &format!("processes left on {node}'s data directory to finish"),
        Duration::from_secs(600),
        || async { busy().is_empty().then_some(()) },
    )
    .await
}

/// Moves the data directory aside (kept, never deleted) and takes a fresh clone.
async fn reclone_node(cluster: &Cluster, node: &str, progress: &dyn Progress) -> Result<Outcome> {
    let server = cluster.server(node)?;
    let mut kept = None;
    if server.exists() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = cluster.dir.join(format!("{node}.before-rejoin-{stamp}"));
        std::fs::rename(&server.data, &aside).what(|| {
            format!(
                "cannot move {} aside to {}",
                server.data.display(),
                aside.display()
            )
        })?;
        progress.note(&format!(
            "moved {node}'s old data directory aside: {} (kept)",
            aside.display()
        ));
        crashpoint::reached("rejoin: old data directory moved aside");
        kept = Some(aside);
    }
    let outcome = standby::clone(cluster, node, progress).await?;
    crashpoint::reached("rejoin: cloned");
    tidy_slots(cluster, node).await;
    Ok(Outcome::Done(format!(
        "{}{}",
        outcome.message(),
        kept.map(|k| format!("\nthe old data directory is kept in {}", k.display()))
            .unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_pg_waldump_output() {
        let text = "\
rmgr: Heap        len (rec/tot):     59/    59, tx:        755, lsn: 0/05020B18, prev 0/05020AE0, desc: INSERT off: 2, flags: 0x08, blkref #0: rel 1663/5/16384 blk 0
rmgr: Transaction len (rec/tot):     34/    34, tx:        755, lsn: 0/05020B58, prev 0/05020B18, desc: COMMIT 2026-11-26 12:56:08.1 UTC
rmgr: Heap2       len (rec/tot):    100/   100, tx:        756, lsn: 0/05020B80, prev 0/05020B58, desc: MULTI_INSERT+INIT ntuples: 3, flags: 0x02
rmgr: Heap        len (rec/tot):     72/    72, tx:        756, lsn: 0/05020BE8, prev 0/05020B80, desc: HOT_UPDATE old_xmax: 756, old_off: 1
rmgr: Transaction len (rec/tot):     34/    34, tx:        756, lsn: 0/05020C30, prev 0/05020BE8, desc: COMMIT 2026-11-26 12:56:09.1 UTC
rmgr: XLOG        len (rec/tot):    114/   114, tx:          0, lsn: 0/05020C58, prev 0/05020C30, desc: CHECKPOINT_SHUTDOWN redo 0/5020C58
";
        let s = WaldumpSummary::parse(text);
        assert_eq!(s.records, 6);
        assert_eq!(s.commits, 2);
        assert_eq!(s.row_changes, 1 + 3 + 1);
        assert_eq!(s.end, Some(Lsn(0x05020C58 + 120)));
    }

    #[test]
    fn an_unknown_discard_is_never_zero_bytes() {
        let fork = Lsn(0x5020B18);
        let mut d = Discarded {
            tli: 1,
            fork,
            end: None,
            transactions: None,
            row_changes: None,
        };
        assert!(d.describe().contains("unknown amount"), "{}", d.describe());
        assert!(!d.describe().contains("0 bytes"), "{}", d.describe());
        assert_eq!(d.bytes(), None);
        assert!(!d.known_empty());
        // The end known from the control data, the contents not.
        d.end = Some(Lsn(0x5020C18));
        assert!(
            d.describe().contains("discarded 256 bytes"),
            "{}",
            d.describe()
        );
        assert!(d.describe().contains("transactions it held is unknown"));
        d.end = Some(fork);
        assert!(
            !d.known_empty(),
            "no pg_waldump figures: not known to be empty"
        );
        d.transactions = Some(0);
        d.row_changes = Some(0);
        assert!(d.known_empty());
    }

    #[test]
    fn reads_what_pg_rewind_said() {
        let r = RewindReport::parse(
            "pg_rewind: servers diverged at WAL location 0/5020B18 on timeline 1\n\
             pg_rewind: need to copy 83 MB (total source directory size is 102 MB)\n\
             pg_rewind: Done!\n",
        );
        assert_eq!(r.diverged_at, Some(Lsn(0x5020B18)));
        assert_eq!(r.to_copy.as_deref(), Some("83 MB"));
        assert!(!r.no_rewind_required);
        assert!(RewindReport::parse("pg_rewind: no rewind required\n").no_rewind_required);
    }
}
