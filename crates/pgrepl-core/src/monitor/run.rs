//! `pgrepl monitor`'s loop: every interval, observe the cluster, decide, carry the actions
//! out, publish a snapshot for the health endpoints. One monitor per cluster (a lock file);
//! a restarted monitor starts from `MonitorState::default()` and learns who is who from
//! PostgreSQL, so that a restart causes no failover by itself.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::action::Action;
use super::decide::{decide, MonitorState};
use super::event::{Event, EventKind};
use super::events_log::{self, Record};
use super::health::Snapshot;
use super::intent::{Intent, Timing};
use super::observation::{NodeObs, Observation, Role};
use super::{executor, http, observer};
use crate::cluster::Cluster;
use crate::cluster_dir;
use crate::error::{Error, Result, ResultExt};
use crate::observe::{authority, status};

/// The one-monitor-per-cluster lock, in the cluster directory; it holds the pid.
pub const LOCK_FILE: &str = ".monitor.lock";
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// How often to look (None: the cluster file's, else 500 ms).
    pub interval: Option<Duration>,
    /// None: the cluster file's, else [`Timing`]'s default (2 s).
    pub failover_timeout: Option<Duration>,
    /// One shared listener; a node is named in the path (`/node/<name>/primary`).
    pub http: Option<SocketAddr>,
    /// Node i of the cluster file answers on this port + i, on `http_host`.
    pub http_base_port: Option<u16>,
    pub http_host: Option<IpAddr>,
}

/// Where each event goes besides the log file (the CLI prints it).
pub type Emit = Arc<dyn Fn(&Record) + Send + Sync>;

/// Held while the monitor runs.
pub struct MonitorLock {
    _file: File,
}

/// Takes the monitor lock of the cluster in `dir`, or says which process holds it.
pub fn lock(dir: &Path, cluster: &str) -> Result<MonitorLock> {
    let path = dir.join(LOCK_FILE);
    // Not truncated before the lock is ours: the file holds the running monitor's pid.
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .what(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = read_pid(&mut file)
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            return Err(Error::Precondition(format!(
                "a monitor already runs for cluster '{cluster}'{pid}: only one may run per cluster; stop it first (Ctrl-C, or kill{})",
                read_pid(&mut file).map(|p| format!(" {p}")).unwrap_or_default()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).what(|| format!("cannot lock {}", path.display()))
        }
    }
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .what(|| format!("cannot write {}", path.display()))?;
    Ok(MonitorLock { _file: file })
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// The pid of the monitor that runs for the cluster in `dir`, if one does: told by the lock
/// (a pid left in the file by a monitor that died says nothing).
pub fn running(dir: &Path) -> Option<u32> {
    let path = dir.join(LOCK_FILE);
    // Asked of the kernel, not by taking the lock: a monitor starting at that instant
    // would find it taken.
    if !cluster_dir::is_flocked(&path) {
        return None;
    }
    let mut file = File::open(&path).ok()?;
    Some(read_pid(&mut file).unwrap_or(0))
}

/// The settings in force: the command line's, else the cluster file's `[monitor]`, else
/// the defaults.
fn settings(cluster: &Cluster, options: &Options) -> Result<(Intent, Timing, Duration)> {
    let m = cluster.spec.monitor.clone().unwrap_or_default();
    let interval = match options.interval {
        Some(i) => i,
        None => m.interval()?.unwrap_or(DEFAULT_INTERVAL),
    };
    let mut timing = Timing::default();
    if let Some(t) = options.failover_timeout.or(m.failover_timeout()?) {
        timing.failover_timeout_ms = t.as_millis() as u64;
    }
    Ok((
        Intent::from_spec(&cluster.spec, m.on_sync_loss, m.allow_data_loss),
        timing,
        interval,
    ))
}

/// How long one node's observation may take: a node that answers slower than that did not
/// answer (a tick must not outlast the failover timeout).
fn probe_bound(timing: &Timing) -> Duration {
    Duration::from_millis(timing.failover_timeout_ms / 4)
        .clamp(Duration::from_millis(300), Duration::from_secs(2))
}

/// The node the cluster file should name as the primary, when it names another: exactly one
/// node answers as the primary, and it was promoted after the file's primary's timeline.
pub fn unrecorded_primary(root: &str, obs: &Observation) -> Option<String> {
    let primaries: Vec<&NodeObs> = obs
        .nodes
        .iter()
        .filter(|n| n.answers_as(Role::Primary))
        .collect();
    let [p] = primaries.as_slice() else {
        return None;
    };
    let r = obs.node(root).filter(|_| p.name != root)?;
    authority::supersedes(&p.facts(), &r.facts()).then(|| p.name.clone())
}

/// Records `node` as the primary in the cluster file (under the cluster's lock, the file
/// read again).
fn record_primary(cluster: &mut Cluster, node: &str, at_ms: u64) -> Event {
    let result = cluster.reloaded().and_then(|c| {
        *cluster = c;
        // As `pgrepl failover` records a promotion: the old primary's standbys follow the
        // new one.
        let old = cluster.spec.root().name.clone();
        let mut next = cluster.spec.clone();
        next.set_primary(node)?;
        let followers: Vec<String> = cluster
            .spec
            .downstream_of(&old)
            .map(|n| n.name.clone())
            .filter(|n| n != node)
            .collect();
        for f in followers {
            next.set_upstream(&f, node, None)?;
        }
        if next != cluster.spec {
            cluster.spec = next;
            cluster.save_spec()?;
        }
        Ok(())
    });
    let (kind, message) = match result {
        Ok(()) => (
            EventKind::Done,
            format!("the cluster file records {node} as the primary (PostgreSQL says it is; the file named another)"),
        ),
        Err(e) => (
            EventKind::Failed,
            format!("cannot record {node} as the primary in the cluster file: {e}"),
        ),
    };
    Event::new(at_ms, kind, "record_primary", Some(node), message)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs the monitor until `shutdown` completes; the action under way is finished first.
pub async fn run(
    cluster: Cluster,
    options: Options,
    shutdown: impl Future<Output = ()>,
    emit: Emit,
) -> Result<()> {
    let dir = cluster.dir.clone();
    let name = cluster.name().to_string();
    if options.interval.is_some_and(|i| i.is_zero()) {
        return Err(Error::Invalid(
            "--interval 0 would spin: give a duration such as 500ms".into(),
        ));
    }
    settings(&cluster, &options)?;
    let _lock = lock(&dir, &name)?;

    let log = |event: &Event| match events_log::append(&dir, event) {
        Ok(r) => emit(&r),
        Err(e) => {
            tracing::error!(error = %e, "cannot write the event log");
            emit(&Record::now(event.clone()));
        }
    };

    // The health endpoints answer from the first snapshot on; they are bound before the
    // monitor acts, so that a port in use stops it before it changes anything.
    let first = Snapshot::new(status::status(&cluster).await);
    let (tx, rx) = watch::channel(Arc::new(first));
    let mut servers = Vec::new();
    if let Some(addr) = options.http {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Precondition(format!("cannot listen on {addr} (--http): {e}")))?;
        servers.push(tokio::spawn(http::serve(l, rx.clone(), None)));
    }
    if let Some(base) = options.http_base_port {
        let host = options.http_host.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let names: Vec<String> = cluster.spec.nodes.iter().map(|n| n.name.clone()).collect();
        for (l, node) in http::bind_nodes(host, base, &names)
            .await
            .map_err(|e| Error::Precondition(format!("{e} (--http-base-port)")))?
        {
            servers.push(tokio::spawn(http::serve(l, rx.clone(), Some(node))));
        }
    }

    let (_, timing, interval) = settings(&cluster, &options)?;
    log(&Event::new(
        0,
        EventKind::Observed,
        "monitor_started",
        None,
        format!(
            "monitor started (pid {}): every {} ms, failover timeout {} ms",
            std::process::id(),
            interval.as_millis(),
            timing.failover_timeout_ms
        ),
    ));

    let started = Instant::now();
    let mut state = MonitorState::default();
    let mut promoted_at = std::collections::BTreeMap::new();
    let mut cluster = cluster;
    tokio::pin!(shutdown);
    let mut spec_error: Option<String> = None;
    // A tick starts `interval` after the previous one started, or at once when that one took
    // longer (a silent node holds a tick for its bound): the timeout is counted in ticks.
    let mut next_tick = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep_until(next_tick) => {}
        }
        next_tick = tokio::time::Instant::now() + interval;
        let at_ms = started.elapsed().as_millis() as u64;
        // The cluster file as it is now: commands run beside the monitor change it.
        match cluster.reloaded() {
            Ok(c) => {
                cluster = c;
                spec_error = None;
            }
            Err(e) => {
                let e = e.to_string();
                if spec_error.as_ref() != Some(&e) {
                    log(&Event::observed(
                        at_ms,
                        "cluster_file",
                        None,
                        format!("cannot read the cluster file, so the monitor waits: {e}"),
                    ));
                    spec_error = Some(e);
                }
                continue;
            }
        }
        let (intent, timing, _) = match settings(&cluster, &options) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "the cluster file's [monitor] section");
                continue;
            }
        };
        // Another command at work holds the cluster's lock: the monitor leaves the cluster
        // to it. The monitor holds the lock only while it acts, so that commands typed
        // beside it run.
        let busy = cluster_dir::is_locked(&dir);
        let seen = observer::observe(&cluster, at_ms, busy, probe_bound(&timing)).await;
        let actions = decide(&intent, &timing, &mut state, &seen.obs);

        let observed = started.elapsed().as_millis() as u64 - at_ms;
        let mut snapshot = Snapshot::new(status::of_probes(&cluster, &seen.probes).await);
        tracing::debug!(
            at_ms,
            observed,
            snapshot = started.elapsed().as_millis() as u64 - at_ms - observed,
            actions = actions.len(),
            "tick"
        );
        snapshot.failovers = state.failovers;
        snapshot.promoted_at = promoted_at.clone();
        let _ = tx.send(Arc::new(snapshot));

        let mut cluster_lock = None;
        // The file names another primary than PostgreSQL does (a monitor stopped between a
        // promotion and saving the file, a promotion outside pgrepl): the file records it,
        // as `pgrepl failover` completes an interrupted failover.
        if let Some(p) = unrecorded_primary(&cluster.spec.root().name, &seen.obs).filter(|_| !busy)
        {
            if let Ok(l) = cluster_dir::lock(&dir, &name, cluster.runner()).await {
                cluster_lock = Some(l);
                log(&record_primary(&mut cluster, &p, at_ms));
            }
        }
        for action in &actions {
            if let Action::Log(e) = action {
                log(e);
                continue;
            }
            if cluster_lock.is_none() {
                match cluster_dir::lock(&dir, &name, cluster.runner()).await {
                    Ok(l) => cluster_lock = Some(l),
                    Err(e) => {
                        // A command started since the observation: it goes first, and the
                        // next tick decides again.
                        log(&Event::observed(
                            at_ms,
                            "busy",
                            action.node(),
                            format!("{} postponed: {e}", action.describe()),
                        ));
                        break;
                    }
                }
                // The cluster file as it is under the lock.
                if let Ok(c) = cluster.reloaded() {
                    cluster = c;
                }
            }
            let event = executor::execute(&mut cluster, action, at_ms).await;
            log(&event);
            if event.kind == EventKind::Failed {
                // The rest of the tick may have depended on it (a repoint after a
                // promotion): the next observation decides again.
                break;
            }
            if let Action::Promote { node, .. } = action {
                promoted_at.insert(node.clone(), unix_now());
            }
        }
        drop(cluster_lock);
    }
    log(&Event::new(
        started.elapsed().as_millis() as u64,
        EventKind::Observed,
        "monitor_stopped",
        None,
        "monitor stopped".into(),
    ));
    for s in servers {
        s.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::observation::Process;
    use crate::postgres::timeline::{parse_history, TimelinePath};
    use crate::postgres::Lsn;

    fn node(name: &str, role: Option<Role>, tli: u32, history: &str, end: Option<u64>) -> NodeObs {
        let mut n = NodeObs::new(name, Process::Running);
        n.answered = role.is_some();
        n.role = role;
        n.path = Some(TimelinePath::new(tli, parse_history(history)));
        n.end = end.map(Lsn);
        n
    }

    #[test]
    fn the_file_follows_a_promotion_it_missed_and_nothing_else() {
        let promoted = node(
            "pg1",
            Some(Role::Primary),
            2,
            "1\t0/3000000\tno recovery target\n",
            Some(0x3000100),
        );
        let mut old = node("pg0", None, 1, "", None);
        old.process = Process::Gone;
        let obs = |nodes: Vec<NodeObs>| Observation {
            at_ms: 0,
            busy: false,
            nodes,
        };
        assert_eq!(
            unrecorded_primary("pg0", &obs(vec![old.clone(), promoted.clone()])),
            Some("pg1".into())
        );
        // The file's primary is the one that answers: nothing to record.
        let pg0 = node("pg0", Some(Role::Primary), 1, "", Some(0x3000000));
        let pg1 = node("pg1", Some(Role::Standby), 1, "", Some(0x3000000));
        assert_eq!(
            unrecorded_primary("pg0", &obs(vec![pg0.clone(), pg1])),
            None
        );
        // Two primaries: a split brain is the decision's, not the file's.
        assert_eq!(
            unrecorded_primary("pg0", &obs(vec![pg0, promoted.clone()])),
            None
        );
        // A primary on the same history as the file's (no later promotion): not recorded.
        let same = node("pg1", Some(Role::Primary), 1, "", Some(0x3000000));
        assert_eq!(unrecorded_primary("pg0", &obs(vec![old, same])), None);
    }
}
