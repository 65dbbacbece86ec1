//! The start guard. Every command that starts a node that is down (`start`, `up`, a standby
//! whose data exists, `primary init`) comes through here: what the node may start as is
//! decided from the nodes' own data (their timeline histories, where their WAL ends, their
//! database system), not from the cluster file alone, which a command killed halfway may have
//! left stale. A node that a later promotion superseded never comes back as a primary.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::observe::authority::{self, Facts, StartAs};
use crate::observe::topology;
use crate::ops::{config, standby, wait};
use crate::postgres::queries;
use crate::progress::Progress;

/// How long a started standby may take to stream before `start` says it does not yet.
const STANDBY_SETTLE: Duration = Duration::from_secs(10);
/// How long a started primary may take to answer. pg_ctl has already waited for "ready": this
/// catches a server that died right after it said so (seen on a full disk).
const PRIMARY_SETTLE: Duration = Duration::from_secs(15);

/// How a node came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    Primary {
        /// Why it is the primary although the cluster file names another node.
        note: Option<String>,
    },
    Standby {
        /// Why it is a standby when its data alone would have made it a primary, or why it is
        /// one although the cluster file names it the primary.
        note: Option<String>,
        /// Whether it streams from its upstream (it may be down).
        streaming: bool,
    },
}

impl Started {
    /// A line for the user: "pg1 started and streaming", with the guard's note.
    pub fn describe(&self, node: &str) -> String {
        match self {
            Started::Primary { note: None } => format!("{node} started as the primary"),
            Started::Primary { note: Some(n) } => format!("{node} started as the primary\n{n}"),
            Started::Standby { note, streaming } => {
                let mut s = if *streaming {
                    format!("{node} started and streaming")
                } else {
                    format!("{node} started as a standby, but is not streaming yet")
                };
                if let Some(n) = note {
                    s += &format!("\n{n}");
                }
                s
            }
        }
    }
}

/// What every node's data says, with `node`'s own facts first.
async fn facts(cluster: &Cluster, node: &str) -> (Facts, Vec<Facts>) {
    let probes = topology::probe_all(cluster).await;
    let mut mine = None;
    let mut others = Vec::new();
    for p in &probes {
        let signal = cluster.data_dir(&p.name).join("standby.signal").exists();
        let f = Facts::from_probe(p, signal);
        if p.name == node {
            mine = Some(f);
        } else {
            others.push(f);
        }
    }
    (mine.expect("every node is probed"), others)
}

/// Decides what `node` (down, with data) may start as, without changing anything.
pub async fn decide(cluster: &Cluster, node: &str) -> Result<StartAs> {
    Ok(decide_with_facts(cluster, node).await?.0)
}

async fn decide_with_facts(cluster: &Cluster, node: &str) -> Result<(StartAs, Facts, Vec<Facts>)> {
    let spec = cluster.node(node)?;
    let (me, others) = facts(cluster, node).await;
    let decision = authority::start_as(
        &me,
        &cluster.spec.root().name,
        spec.upstream.as_deref(),
        &others,
    );
    Ok((decision, me, others))
}

/// The node a standby start follows when the cluster file gives it no upstream: the file
/// names it the primary, but a later promotion superseded it (a failover or switchover
/// killed before it saved the file). Its data is a primary's, so without settings of its
/// own it would start writable: it follows the running primary, else the newest history.
fn superseder(me: &Facts, others: &[Facts]) -> Option<String> {
    if me.standby {
        // Its data already starts it as a standby, with the settings it has.
        return None;
    }
    others
        .iter()
        .find(|o| o.primary)
        .or_else(|| authority::newest(others))
        .map(|o| o.name.clone())
}

/// Starts `node`, which is down and has data, as what the guard allows, then waits for the
/// real outcome: a primary that answers as one, a standby that streams (or says it does not).
pub async fn start(cluster: &Cluster, node: &str, progress: &dyn Progress) -> Result<Started> {
    let mut spec = cluster.node(node)?.clone();
    let server = cluster.server(node)?;
    let (decision, me, others) = decide_with_facts(cluster, node).await?;
    let (as_standby, note) = match decision {
        StartAs::Refuse(why) => return Err(Error::Precondition(why)),
        StartAs::Primary { note } => (false, note),
        StartAs::Standby { note } => (true, note),
    };
    if as_standby && spec.upstream.is_none() {
        spec.upstream = superseder(&me, &others);
    }
    cluster.runtime.preflight(&spec)?;
    cluster
        .runtime
        .prepare(&cluster.spec.nodes, progress)
        .await?;
    // The node's settings from the cluster file, and its role marker, when the file agrees
    // with what it starts as; otherwise its own files stay (the file's would make a standby
    // a primary at start, or the newest primary a standby).
    if as_standby == spec.upstream.is_some() {
        config::write_node_files(cluster, &spec, &server.data)?;
    }
    if let (true, Some(up)) = (as_standby, &spec.upstream) {
        // Its slot on the upstream (a demoted primary never had one there). Best effort: an
        // upstream that is down gets it when the standby is repointed or rejoined.
        if let Ok(c) = cluster.connect(up).await {
            if let Err(e) = queries::ensure_slot(&c, &spec.slot_or_default()).await {
                tracing::debug!(node, upstream = %up, error = %e, "could not create the slot");
            }
        }
    }
    crate::crashpoint::reached("start: settings written");
    progress.step(&format!("starting {node}"));
    server.start().await?;
    if !as_standby {
        confirm_primary(cluster, node).await?;
        return Ok(Started::Primary { note });
    }
    confirm_standby(cluster, node).await?;
    let upstream = spec
        .upstream
        .as_deref()
        .map(|u| cluster.node(u))
        .transpose()?;
    // An upstream that is down cannot feed it: no point waiting.
    let upstream_runs = match upstream {
        Some(u) => cluster.server(&u.name)?.is_running().await,
        None => false,
    };
    let streaming = upstream_runs
        && standby::wait_streaming_from(cluster, node, upstream, STANDBY_SETTLE)
            .await
            .is_ok();
    if !streaming && !server.is_running().await {
        return Err(Error::Command {
            what: format!("starting {node}"),
            detail: format!(
                "it stopped right after it started\n--- last lines of its log ---\n{}",
                server.log_tail(15).await
            ),
        });
    }
    let note = match (streaming, upstream) {
        (false, Some(up)) => {
            let why = why_not_streaming(cluster, node, &up.name).await;
            Some(match note {
                Some(n) => format!("{n}\n{why}"),
                None => why,
            })
        }
        _ => note,
    };
    Ok(Started::Standby { note, streaming })
}

/// Why a started standby does not stream: its upstream is down, or (read from its log) the
/// WAL it needs is gone from the upstream, which only a re-clone repairs.
async fn why_not_streaming(cluster: &Cluster, node: &str, upstream: &str) -> String {
    let up_running = match cluster.server(upstream) {
        Ok(s) => s.is_running().await,
        Err(_) => false,
    };
    if !up_running {
        return format!("its upstream {upstream} is not running: it streams once `pgrepl start {upstream}` has run");
    }
    let log = match cluster.server(node) {
        Ok(s) => s.log_tail(40).await,
        Err(_) => String::new(),
    };
    if log.contains("has already been removed") {
        return format!(
            "{upstream} no longer has the WAL {node} needs (its slot lost it, or it was never kept): re-clone it with `pgrepl rejoin {node} --upstream {upstream} --reclone`"
        );
    }
    format!(
        "{upstream} runs, but {node} does not stream from it yet: `pgrepl logs {node}` says why"
    )
}

/// A node started as a standby must be one: should it answer as a primary (its settings did
/// not take), it is stopped at once, before anyone's write is acknowledged there for long.
async fn confirm_standby(cluster: &Cluster, node: &str) -> Result<()> {
    let server = cluster.server(node)?;
    let answered = wait::until(&format!("{node} to answer"), PRIMARY_SETTLE, || async {
        if !server.is_running().await {
            return Some(None);
        }
        let c = cluster.connect(node).await.ok()?;
        let pos = queries::position(&c).await.ok()?;
        Some(Some(pos.in_recovery))
    })
    .await;
    if let Ok(Some(false)) = answered {
        if let Err(e) = server.stop(crate::runtime::StopMode::Immediate).await {
            tracing::warn!(node, error = %e, "could not stop a node that came up writable");
        }
        return Err(Error::Command {
            what: format!("starting {node}"),
            detail: "it came up as a primary although it was started as a standby: it was stopped again; `pgrepl status` shows who the primary is".into(),
        });
    }
    Ok(())
}

/// A started primary must answer as one; a server that died right after pg_ctl saw it ready
/// is a failed start, with the end of its log.
async fn confirm_primary(cluster: &Cluster, node: &str) -> Result<()> {
    let server = cluster.server(node)?;
    let answered = wait::until(
        &format!("{node} to answer as the primary"),
        PRIMARY_SETTLE,
        || async {
            if !server.is_running().await {
                return Some(false);
            }
            let c = cluster.connect(node).await.ok()?;
            let pos = queries::position(&c).await.ok()?;
            Some(!pos.in_recovery)
        },
    )
    .await;
    match answered {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) if !server.is_running().await => Err(Error::Command {
            what: format!("starting {node}"),
            detail: format!(
                "it stopped right after it started\n--- last lines of its log ---\n{}",
                server.log_tail(15).await
            ),
        }),
        Ok(false) => Err(Error::Command {
            what: format!("starting {node}"),
            detail: "it came up in recovery although it was started as the primary".into(),
        }),
        Err(e) => Err(e),
    }
}
