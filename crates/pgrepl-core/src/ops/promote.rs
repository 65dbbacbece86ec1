//! `pgrepl promote` (the lab's 11_promote_standby.sh), guarded against the split brain the
//! lab walked into: a promotion does not stop the old primary.

use std::time::{Duration, Instant};

use crate::postgres::conn::Conn;

use crate::cluster::Cluster;
use crate::crashpoint;
use crate::error::{Error, Result, ResultExt};
use crate::observe::authority::{self, Facts};
use crate::observe::topology::{self, Probe};
use crate::ops::{config, slots, sync, wait, Outcome};
use crate::postgres::queries;
use crate::progress::{figure, Progress};
use crate::runtime::StopMode;
use crate::spec::ClusterSpec;

/// How long a promotion may take before we call it failed.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a promoting node is asked whether it is done: the promotion itself takes
/// 20-50 ms, so a coarser poll would be a large part of the write gap.
pub(crate) const HOT_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
pub struct Promoted {
    pub node: String,
    pub timeline: u32,
    pub took: Duration,
}

impl Promoted {
    /// The figures every promoting command reports.
    pub fn figures(&self, progress: &dyn Progress) {
        figure(progress, "timeline", self.timeline);
        figure(progress, "promote_ms", self.took.as_millis() as u64);
    }
}

/// Promotes the standby behind `c` and returns once it accepts writes. pg_promote(wait =>
/// true) checks only every 100 ms; asking pg_is_in_recovery() ourselves shortens the write
/// gap of a switchover.
pub async fn promote_now(c: &Conn, node: &str) -> Result<Promoted> {
    let started = Instant::now();
    let asked = c
        .execute("SELECT pg_promote(wait => false)", &[])
        .await
        .what(|| format!("cannot promote {node}"));
    if let Err(e) = asked {
        // An earlier, interrupted run may have asked already and the promotion finished
        // since: PostgreSQL then says "recovery is not in progress".
        let in_recovery = c
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map(|r| r.get::<_, bool>(0));
        if !matches!(in_recovery, Ok(false)) {
            return Err(e);
        }
    }
    wait::until_every(
        &format!("{node} to finish its promotion"),
        PROMOTE_TIMEOUT,
        HOT_POLL,
        || async {
            let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?;
            (!row.get::<_, bool>(0)).then_some(())
        },
    )
    .await?;
    let took = started.elapsed();
    let timeline = queries::position(c)
        .await?
        .timeline
        .ok_or_else(|| Error::Precondition(format!("{node} does not report its timeline")))?;
    Ok(Promoted {
        node: node.to_string(),
        timeline,
        took,
    })
}

/// Once `target` is the primary: the cluster file records `next` (saved when it changed) and
/// the new primary gets the cluster's shared settings and its `[sync]`. `op` names the
/// operation's crash points. Returns what it says about synchronous replication.
pub(crate) async fn record_primary(
    cluster: &mut Cluster,
    next: ClusterSpec,
    target: &str,
    op: &str,
) -> Result<Option<String>> {
    save_primary(cluster, next, op)?;
    apply_primary(cluster, target, op).await
}

/// The first half of `record_primary`: the cluster file.
pub(crate) fn save_primary(cluster: &mut Cluster, next: ClusterSpec, op: &str) -> Result<()> {
    if next != cluster.spec {
        cluster.spec = next;
        cluster.save_spec()?;
    }
    crashpoint::reached(&format!("{op}: cluster file saved"));
    Ok(())
}

/// The second half: the new primary's shared settings and `[sync]`.
pub(crate) async fn apply_primary(
    cluster: &Cluster,
    target: &str,
    op: &str,
) -> Result<Option<String>> {
    config::apply_shared(cluster, target).await?;
    let line = match sync::apply_to_primary(cluster, target).await? {
        Some(setting) => Some(format!("{target}: synchronous_standby_names = '{setting}'")),
        None => sync::lost_warning(cluster, target),
    };
    crashpoint::reached(&format!("{op}: synchronous replication applied"));
    Ok(line)
}

/// Running nodes other than `except` that are, or may be, primaries: a node that runs but does
/// not answer could be one.
pub fn other_primaries<'a>(probes: &'a [Probe], except: &str) -> Vec<&'a Probe> {
    probes
        .iter()
        .filter(|p| p.name != except && (p.is_primary() || (p.running && p.position.is_none())))
        .collect()
}

/// How long a fenced node may take to shut down cleanly before it is killed.
const FENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops nodes cleanly (a fast shutdown sends their standbys everything they wrote); one that
/// does not stop in time (frozen, hung) is killed, since it must not accept writes any more.
pub async fn fence(cluster: &Cluster, nodes: &[&str], progress: &dyn Progress) -> Result<()> {
    fence_within(cluster, nodes, FENCE_TIMEOUT, progress).await
}

/// [`fence`], with the time a clean shutdown is given before the kill.
pub async fn fence_within(
    cluster: &Cluster,
    nodes: &[&str],
    patience: Duration,
    progress: &dyn Progress,
) -> Result<()> {
    for n in nodes {
        progress.step(&format!("fencing {n} (fast shutdown)"));
        let server = cluster.server(n)?;
        if !server.is_running().await {
            progress.note(&format!("fenced {n}: it had stopped"));
            continue;
        }
        match tokio::time::timeout(patience, server.stop(StopMode::Fast)).await {
            Ok(Ok(())) => progress.note(&format!("fenced {n}: stopped it (fast shutdown)")),
            Ok(Err(e)) if server.is_running().await => {
                server.kill().await?;
                progress.note(&format!(
                    "fenced {n}: a fast shutdown failed ({e}), so it was killed"
                ));
            }
            Ok(Err(_)) => progress.note(&format!("fenced {n}: it had stopped")),
            Err(_) => {
                server.kill().await?;
                progress.note(&format!(
                    "fenced {n}: it did not shut down within {} ms, so it was killed",
                    patience.as_millis()
                ));
            }
        }
    }
    Ok(())
}

/// The refusal when promoting `candidate` would throw away a newer history: nodes whose
/// timeline goes on past everything `candidate` has (a promotion it never saw, with the
/// commits acknowledged there). `force` is the command that promotes anyway.
pub(crate) fn newer_history_refusal(candidate: &Facts, newer: &[&Facts], force: &str) -> Error {
    let describe = |f: &Facts| {
        let what = match (f.running, f.primary, f.standby) {
            (false, ..) => "stopped",
            (true, true, _) => "the primary",
            (true, false, true) => "a standby",
            (true, false, false) => "not answering",
        };
        format!("{} ({what})", f.name)
    };
    let names: Vec<String> = newer.iter().map(|f| describe(f)).collect();
    let tli = |f: &Facts| f.path.as_ref().map_or(0, |p| p.tli);
    let newest = newer
        .iter()
        .max_by_key(|f| (tli(f), f.end))
        .expect("not empty");
    let n = &newest.name;
    let advice = match (newest.running, newest.standby) {
        _ if newest.primary => format!("{n} is running as the primary: keep it"),
        (true, true) => format!("promote {n} instead (`pgrepl failover --to {n}`)"),
        (false, true) => format!(
            "start {n} (`pgrepl start {n}`) and promote it instead (`pgrepl failover --to {n}`)"
        ),
        (false, false) => {
            format!("start {n} (`pgrepl start {n}`): it is the newest primary")
        }
        (true, false) => format!("wait until {n} answers: it may be the newest primary"),
    };
    Error::Precondition(format!(
        "{} {} on a newer history than {c}: timeline {} began after {c}'s timeline {}, so promoting {c} would start yet another history and discard that one, commits acknowledged there included; {advice}; `{force}` promotes {c} anyway and discards it",
        names.join(" and "),
        if names.len() > 1 { "are" } else { "is" },
        tli(newest),
        tli(candidate),
        c = candidate.name
    ))
}

/// Of the nodes whose WAL goes further than `candidate`'s on its timeline, those whose WAL
/// past `candidate`'s end holds a commit, or could not be read: only those would lose an
/// acknowledged commit. A few bytes of bookkeeping (a running-transactions record a killed
/// primary sent to some standbys only) are not worth a refusal.
pub(crate) async fn holding_commits<'a>(
    cluster: &Cluster,
    candidate: &Facts,
    further: Vec<&'a Facts>,
) -> Vec<&'a Facts> {
    let (Some(from), Some(tli)) = (candidate.end, candidate.path.as_ref().map(|p| p.tli)) else {
        return further;
    };
    let mut out = Vec::new();
    for f in further {
        let (Ok(spec), Ok(server)) = (cluster.node(&f.name), cluster.server(&f.name)) else {
            out.push(f);
            continue;
        };
        let d = super::rejoin::discarded_wal(cluster, spec, &server.data, tli, from, f.end).await;
        if d.transactions != Some(0) {
            out.push(f);
        }
    }
    out
}

/// A standby's facts with its end at what it has received, not only replayed: a promotion
/// replays all it received before it completes.
fn holdings(probes: &[Probe], facts: &[Facts], node: &str) -> Facts {
    let received = probes
        .iter()
        .find(|p| p.name == node)
        .and_then(|p| p.position.as_ref())
        .and_then(|p| p.receive_lsn);
    let mine = facts.iter().find(|f| f.name == node).expect("probed");
    Facts {
        end: mine.end.max(received),
        ..mine.clone()
    }
}

/// How long a standby may take to receive what a fenced primary sent before it stopped.
const FENCED_CATCH_UP: Duration = Duration::from_secs(3);

/// After `promote --fence`: the fenced primaries stopped cleanly, and their last WAL went to
/// the standbys that stream from them. `node` must have received it all (a standby that does
/// not stream from them, say it cascades from a stopped node, has not): otherwise the fenced
/// primaries are started again and the promotion is refused, before anything else changed.
async fn fenced_lose_nothing(cluster: &Cluster, node: &str, fenced: &[&str]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + FENCED_CATCH_UP;
    loop {
        let probes = topology::probe_all(cluster).await;
        let facts = authority::of_probes(cluster, &probes);
        let holds = holdings(&probes, &facts, node);
        let stopped: Vec<Facts> = facts
            .iter()
            .filter(|f| fenced.contains(&f.name.as_str()) && !f.running)
            .cloned()
            .collect();
        let further = authority::further_than(&holds, &stopped);
        if further.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let further = holding_commits(cluster, &holds, further).await;
            if further.is_empty() {
                return Ok(());
            }
            let refusal = further_refusal(
                &holds,
                &further,
                &format!("pgrepl promote {node} --fence --force"),
            );
            for f in &further {
                cluster.server(&f.name)?.start().await?;
            }
            return Err(Error::Precondition(format!(
                "{}; {} started again as before",
                refusal,
                further
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The refusal to promote `candidate` while `further` hold WAL of the same timeline past its
/// end: the commits there would be discarded.
pub(crate) fn further_refusal(candidate: &Facts, further: &[&Facts], force: &str) -> Error {
    let c = &candidate.name;
    let best = further.iter().max_by_key(|f| f.end).expect("not empty");
    let n = &best.name;
    let end = best.end.unwrap_or_default();
    let mine = candidate.end.unwrap_or_default();
    let advice = match (best.running, best.standby) {
        (false, false) => format!(
            "{n} is a cleanly stopped primary with all of its data: start it again (`pgrepl start {n}`)"
        ),
        (false, true) => format!("start {n} (`pgrepl start {n}`) and promote it instead"),
        (true, _) => format!("promote {n} instead (`pgrepl failover --to {n}`)"),
    };
    let names: Vec<String> = further
        .iter()
        .map(|f| {
            format!(
                "{} ({}to {})",
                f.name,
                if f.running { "" } else { "stopped, " },
                f.end.unwrap_or_default()
            )
        })
        .collect();
    Error::Precondition(format!(
        "{} {} WAL of timeline {} that {c} lacks, with committed transactions in it ({c} ends at {mine}, {n} {} bytes further): promoting {c} would discard them, and they may have been acknowledged; {advice}; `{force}` promotes {c} anyway and discards them",
        names.join(" and "),
        if names.len() > 1 { "hold" } else { "holds" },
        candidate.path.as_ref().map_or(0, |p| p.tli),
        end.bytes_after(mine),
    ))
}

/// The refusal of a split brain, naming the stale side: the primary another one supersedes.
pub(crate) fn split_brain(cluster: &Cluster, probes: &[Probe], primaries: &[&Probe]) -> Error {
    let names: Vec<&str> = primaries.iter().map(|p| p.name.as_str()).collect();
    let facts = authority::of_probes(cluster, probes);
    let fact = |n: &str| facts.iter().find(|f| f.name == n).expect("probed");
    let stale = names.iter().find_map(|s| {
        names
            .iter()
            .find(|n| authority::supersedes(fact(n), fact(s)))
            .map(|n| (*s, *n))
    });
    Error::Precondition(match stale {
        Some((stale, newer)) => format!(
            "split brain: {} are all primaries; {stale} is the stale one ({newer} was promoted after it): rejoin it with `pgrepl rejoin {stale} --upstream {newer}` (its writes since then are discarded)",
            names.join(" and ")
        ),
        None => format!(
            "split brain: {} are all primaries; keep one and rejoin the other (`pgrepl rejoin NODE --upstream NODE`): the rejoined one's writes since the split are discarded",
            names.join(" and ")
        ),
    })
}

/// The ways out when a promotion would make a second primary.
fn split_brain_refusal(node: &str, others: &[&Probe]) -> Error {
    let names: Vec<&str> = others.iter().map(|p| p.name.as_str()).collect();
    let them = names.join(" and ");
    Error::Precondition(format!(
        "{them} {} still running as a primary: promoting {node} now makes two primaries that both accept writes (a split brain), and whatever is written to {them} from then on is lost when it is rejoined; for a planned change use `pgrepl switchover --to {node}` (no data lost), to stop {them} first use `pgrepl promote {node} --fence`, to make the split brain on purpose use `--force`",
        if names.len() > 1 { "are" } else { "is" }
    ))
}

/// `pgrepl promote NODE [--fence] [--force]`.
pub async fn promote(
    cluster: &mut Cluster,
    node: &str,
    fence_others: bool,
    force: bool,
    progress: &dyn Progress,
) -> Result<Outcome> {
    cluster.node(node)?;
    let probes = topology::probe_all(cluster).await;
    let me = probes.iter().find(|p| p.name == node).expect("probed");
    let others = other_primaries(&probes, node);
    if me.is_primary() {
        return Ok(Outcome::AlreadyDone(format!(
            "{node} is already a primary (timeline {})",
            me.timeline().unwrap_or(0)
        )));
    }
    if !me.running {
        return Err(Error::Precondition(format!(
            "{node} is not running, so it cannot be promoted: start it first (`pgrepl start {node}`)"
        )));
    }
    if !me.is_standby() {
        return Err(Error::Precondition(format!(
            "{node} does not answer ({}): only a running standby can be promoted",
            me.error.as_deref().unwrap_or("no reply")
        )));
    }
    if !others.is_empty() && !fence_others && !force {
        return Err(split_brain_refusal(node, &others));
    }
    if !force {
        if let Some(refusal) = super::failover::unknown_sender(cluster, &probes) {
            return Err(refusal);
        }
    }
    let facts = authority::of_probes(cluster, &probes);
    let mine = facts.iter().find(|f| f.name == node).expect("probed");
    let newer = authority::newer_than(mine, &facts);
    if !newer.is_empty() && !force {
        return Err(newer_history_refusal(
            mine,
            &newer,
            &format!("pgrepl promote {node} --force"),
        ));
    }
    // What it has received counts: it is replayed before the promotion completes. The old
    // primaries, fenced or not, are not compared: they are being replaced on purpose.
    let holds = holdings(&probes, &facts, node);
    let compared: Vec<Facts> = facts
        .iter()
        .filter(|f| !others.iter().any(|o| o.name == f.name))
        .cloned()
        .collect();
    let further = authority::further_than(&holds, &compared);
    let further = if force {
        Vec::new()
    } else {
        holding_commits(cluster, &holds, further).await
    };
    if !further.is_empty() {
        return Err(further_refusal(
            &holds,
            &further,
            &format!("pgrepl promote {node} --force"),
        ));
    }
    let old_primaries: Vec<String> = others.iter().map(|p| p.name.clone()).collect();
    figure(progress, "old_primary", cluster.spec.root().name.clone());
    figure(progress, "new_primary", node);
    if fence_others {
        let names: Vec<&str> = old_primaries.iter().map(String::as_str).collect();
        let t = Instant::now();
        fence(cluster, &names, progress).await?;
        figure(progress, "fenced", &old_primaries);
        figure(progress, "fence_ms", t.elapsed().as_millis() as u64);
        if !force {
            fenced_lose_nothing(cluster, node, &names).await?;
        }
    }

    progress.step(&format!("promoting {node}"));
    let c = cluster.connect(node).await?;
    let p = promote_now(&c, node).await?;
    p.figures(progress);
    let mut lines = vec![format!(
        "{node} promoted: it is a primary on timeline {} (promotion took {:.3} s)",
        p.timeline,
        p.took.as_secs_f64()
    )];
    let old_root = cluster.spec.root().name.clone();
    let mut next = cluster.spec.clone();
    next.set_primary(node)?;
    lines.extend(record_primary(cluster, next, node, "promote").await?);
    lines.extend(slots::note(node, &slots::tidy(cluster, node).await));
    if !fence_others && !old_primaries.is_empty() {
        figure(progress, "split_brain_with", &old_primaries);
        lines.push(format!(
            "WARNING: split brain: {} still accepts writes as a primary; rejoin it with `pgrepl rejoin {} --upstream {node}` (its writes since the promotion will be discarded)",
            old_primaries.join(" and "),
            old_primaries[0]
        ));
    } else if old_root != node {
        lines.push(format!(
            "next: rejoin the old primary with `pgrepl rejoin {old_root} --upstream {node}`"
        ));
    }
    let siblings: Vec<&str> = probes
        .iter()
        .filter(|q| q.name != node && q.is_standby())
        .map(|q| q.name.as_str())
        .collect();
    if let Some(w) = sync::blocked_commits_warning(cluster, node).await {
        lines.push(w);
    }
    if !siblings.is_empty() {
        lines.push(format!(
            "{} still follow their old upstream: repoint them with `pgrepl standby follow NODE --upstream {node}` (next time, `pgrepl failover` does all of this)",
            siblings.join(", ")
        ));
    }
    Ok(Outcome::Done(lines.join("\n")))
}
