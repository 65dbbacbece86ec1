//! What a drill measures. The figures come from the writers' log and the event's time (pure
//! functions, unit tested); data loss and convergence are asked of the nodes themselves.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::drill::sampler::LagSample;
use crate::drill::writer::{Ack, TABLE};
use crate::error::{Result, ResultExt};
use crate::ops::wait;
use crate::postgres::{queries, Lsn};

/// The window in which clients could not commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// The last acknowledgement before the window.
    pub last_before: Duration,
    /// The first acknowledgement after it: writes work again.
    pub first_after: Duration,
    /// Commits acknowledged after the event but before the window: backends that outlived
    /// the event for a moment (under async replication such a commit may be lost).
    pub late_acks: usize,
}

impl Outage {
    /// Write unavailability: the time without any acknowledged commit.
    pub fn write_gap(&self) -> Duration {
        self.first_after.saturating_sub(self.last_before)
    }

    /// From the event to writes working again.
    pub fn recovery(&self, event: Duration) -> Duration {
        self.first_after.saturating_sub(event)
    }
}

/// The outage an event caused, from the acknowledgement times (ordered): the longest
/// interval between consecutive acknowledgements that ends after the event, starting from
/// the last one before the event (or the event itself when there was none). The longest,
/// not simply the first one after the event: a backend that survives a crash for a few
/// milliseconds can still acknowledge a commit, which does not mean writes recovered.
/// None when nothing was acknowledged after the event.
pub fn outage(acks: &[Duration], event: Duration) -> Option<Outage> {
    let first_after_event = acks.partition_point(|&a| a < event);
    let start = first_after_event
        .checked_sub(1)
        .map(|i| acks[i])
        .unwrap_or(event);
    let after = &acks[first_after_event..];
    let mut prev = start;
    let mut best: Option<(usize, Duration, Duration)> = None;
    for (i, &a) in after.iter().enumerate() {
        if best.is_none_or(|(_, b0, b1)| a - prev > b1 - b0) {
            best = Some((i, prev, a));
        }
        prev = a;
    }
    best.map(|(late_acks, last_before, first_after)| Outage {
        last_before,
        first_after,
        late_acks,
    })
}

/// An acknowledged commit the cluster lost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LostWrite {
    pub writer: i32,
    pub seq: i64,
    /// When its acknowledgement came, from the event: negative before it, positive for a
    /// backend that outlived the event for a moment (a late ack).
    pub acked_after_event_ms: f64,
}

/// Acknowledged rows that are not present: the commits clients were told succeeded and that
/// the cluster lost. Ordered by writer, then seq.
pub fn missing(acks: &[Ack], present: &HashSet<(i32, i64)>, event: Duration) -> Vec<LostWrite> {
    let mut lost: Vec<LostWrite> = acks
        .iter()
        .filter(|a| !present.contains(&(a.writer, a.seq)))
        .map(|a| LostWrite {
            writer: a.writer,
            seq: a.seq,
            acked_after_event_ms: signed_ms(a.at, event),
        })
        .collect();
    lost.sort_unstable_by_key(|l| (l.writer, l.seq));
    lost
}

/// How long after the event each late ack came (the commits acknowledged after the event but
/// before the outage), in ms.
/// `acks` ordered, as for [`outage`].
pub fn late_acks_ms(acks: &[Duration], event: Duration, outage: &Outage) -> Vec<f64> {
    let first = acks.partition_point(|&a| a < event);
    acks[first..]
        .iter()
        .take(outage.late_acks)
        .map(|&a| signed_ms(a, event))
        .collect()
}

/// `t - from` in ms, negative when `t` is earlier.
fn signed_ms(t: Duration, from: Duration) -> f64 {
    if t >= from {
        crate::drill::ms(t - from)
    } else {
        -crate::drill::ms(from - t)
    }
}

/// The highest replication lag any standby had before the event, in bytes.
pub fn max_lag_before(samples: &[LagSample], event: Duration) -> Option<u64> {
    samples
        .iter()
        .filter(|s| s.at < event)
        .map(|s| s.lag_bytes)
        .max()
}

/// Acknowledged commits per bin of `bin` from the origin up to `end`.
pub fn acks_per_bin(acks: &[Ack], bin: Duration, end: Duration) -> Vec<u32> {
    let n = (end.as_nanos() / bin.as_nanos()) as usize + 1;
    let mut bins = vec![0u32; n];
    for a in acks {
        let i = (a.at.as_nanos() / bin.as_nanos()) as usize;
        if let Some(b) = bins.get_mut(i) {
            *b += 1;
        }
    }
    bins
}

/// Every drill row on the current primary, to compare with what was acknowledged.
pub async fn present_rows(cluster: &Cluster, primary: &str) -> Result<HashSet<(i32, i64)>> {
    let c = cluster.connect(primary).await?;
    let rows = c
        .query(&format!("SELECT writer, seq FROM {TABLE}"), &[])
        .await
        .what(|| format!("cannot read {TABLE} on {primary}"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// One node's drill rows, summarized.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRows {
    pub node: String,
    pub rows: Option<i64>,
    /// md5 of every `writer:seq` in order: equal checksums, equal rows.
    pub checksum: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Convergence {
    /// Every running node holds the same drill rows as the primary.
    pub converged: bool,
    pub nodes: Vec<NodeRows>,
}

/// How long standbys may take to replay the primary's WAL before they are called behind.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until every running standby has replayed the primary's current WAL position, then
/// compares an ordered checksum of the drill rows on every running node.
pub async fn convergence(cluster: &Cluster, primary: &str) -> Result<Convergence> {
    let p = cluster.connect(primary).await?;
    let target = queries::position(&p).await?.current_lsn.unwrap_or_default();
    let mut running: Vec<&str> = Vec::new();
    for n in &cluster.spec.nodes {
        if cluster.is_running(&n.name).await {
            running.push(&n.name);
        }
    }
    let nodes = join_all(running.iter().map(|&n| node_rows(cluster, n, target))).await;
    let reference = nodes
        .iter()
        .find(|n| n.node == primary)
        .map(|n| &n.checksum);
    let converged =
        reference.is_some_and(|r| r.is_some() && nodes.iter().all(|n| &n.checksum == r));
    Ok(Convergence { converged, nodes })
}

async fn node_rows(cluster: &Cluster, node: &str, target: Lsn) -> NodeRows {
    let mut out = NodeRows {
        node: node.to_string(),
        rows: None,
        checksum: None,
        note: None,
    };
    let c = match cluster.connect(node).await {
        Ok(c) => c,
        Err(e) => {
            out.note = Some(e.to_string());
            return out;
        }
    };
    let caught_up = wait::until(
        &format!("{node} to replay up to {target}"),
        CATCH_UP_TIMEOUT,
        || async {
            let pos = queries::position(&c).await.ok()?;
            // A primary is its own reference; a standby must have replayed the target.
            (!pos.in_recovery || pos.replay_lsn.is_some_and(|r| r >= target)).then_some(())
        },
    )
    .await;
    if let Err(e) = caught_up {
        out.note = Some(e.to_string());
        return out;
    }
    match c
        .query_one(
            &format!(
                "SELECT count(*), md5(coalesce(string_agg(writer || ':' || seq, ',' ORDER BY writer, seq), '')) FROM {TABLE}"
            ),
            &[],
        )
        .await
    {
        Ok(r) => {
            out.rows = Some(r.get(0));
            out.checksum = Some(r.get(1));
        }
        Err(e) => out.note = Some(e.to_string()),
    }
    out
}

/// Each standby's lag over time, by node, for the chart and the report.
pub fn lag_by_node(samples: &[LagSample]) -> BTreeMap<String, Vec<(f64, u64)>> {
    let mut by: BTreeMap<String, Vec<(f64, u64)>> = BTreeMap::new();
    for s in samples {
        by.entry(s.node.clone())
            .or_default()
            .push((s.at.as_secs_f64() * 1000.0, s.lag_bytes));
    }
    by
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn ack(writer: i32, seq: i64, at: u64) -> Ack {
        Ack {
            writer,
            seq,
            sent: ms(at.saturating_sub(1)),
            at: ms(at),
        }
    }

    #[test]
    fn outage_spans_the_last_ack_before_to_the_first_after() {
        let acks = [ms(100), ms(110), ms(120), ms(900), ms(910)];
        let o = outage(&acks, ms(125)).unwrap();
        assert_eq!(o.last_before, ms(120));
        assert_eq!(o.first_after, ms(900));
        assert_eq!(o.write_gap(), ms(780));
        assert_eq!(o.recovery(ms(125)), ms(775));
        assert_eq!(o.late_acks, 0);
    }

    #[test]
    fn a_backend_acknowledging_just_after_a_crash_is_not_recovery() {
        // One commit acknowledged 3 ms after the kill, then nothing for 600 ms.
        let acks = [ms(100), ms(120), ms(128), ms(728), ms(738)];
        let o = outage(&acks, ms(125)).unwrap();
        assert_eq!(o.last_before, ms(128));
        assert_eq!(o.first_after, ms(728));
        assert_eq!(o.late_acks, 1);
        assert_eq!(o.recovery(ms(125)), ms(603));
    }

    #[test]
    fn no_ack_after_the_event_is_no_recovery() {
        assert_eq!(outage(&[ms(1), ms(2)], ms(5)), None);
        assert_eq!(outage(&[], ms(5)), None);
    }

    #[test]
    fn without_acks_before_the_event_the_outage_starts_at_the_event() {
        let o = outage(&[ms(400), ms(410)], ms(100)).unwrap();
        assert_eq!(o.last_before, ms(100));
        assert_eq!(o.write_gap(), ms(300));
    }

    #[test]
    fn an_event_that_changed_nothing_gives_the_normal_interval() {
        let acks: Vec<Duration> = (0..100).map(|i| ms(i * 10)).collect();
        let o = outage(&acks, ms(505)).unwrap();
        assert_eq!(o.write_gap(), ms(10));
        assert_eq!(o.recovery(ms(505)), ms(5));
    }

    #[test]
    fn missing_lists_acknowledged_rows_not_present() {
        let acks = [ack(1, 2, 10), ack(0, 1, 5), ack(0, 2, 20), ack(1, 1, 3)];
        let present: HashSet<(i32, i64)> = [(0, 1), (1, 1), (7, 7)].into_iter().collect();
        let lost = missing(&acks, &present, ms(15));
        let ids: Vec<(i32, i64)> = lost.iter().map(|l| (l.writer, l.seq)).collect();
        assert_eq!(ids, vec![(0, 2), (1, 2)]);
        // (0, 2) was acknowledged 5 ms after the event, (1, 2) 5 ms before it.
        assert_eq!(lost[0].acked_after_event_ms, 5.0);
        assert_eq!(lost[1].acked_after_event_ms, -5.0);
        let all: HashSet<(i32, i64)> = acks.iter().map(|a| (a.writer, a.seq)).collect();
        assert!(missing(&acks, &all, ms(15)).is_empty());
    }

    #[test]
    fn late_acks_are_timed_from_the_event() {
        let acks = [ms(100), ms(120), ms(127), ms(131), ms(728), ms(738)];
        let o = outage(&acks, ms(125)).unwrap();
        assert_eq!(o.late_acks, 2);
        assert_eq!(late_acks_ms(&acks, ms(125), &o), vec![2.0, 6.0]);
    }

    #[test]
    fn max_lag_counts_only_samples_before_the_event() {
        let s = |at, node: &str, lag| LagSample {
            at: ms(at),
            node: node.into(),
            lag_bytes: lag,
        };
        let samples = [
            s(100, "pg1", 500),
            s(100, "pg2", 900),
            s(300, "pg1", 99_999),
        ];
        assert_eq!(max_lag_before(&samples, ms(200)), Some(900));
        assert_eq!(max_lag_before(&samples, ms(50)), None);
        let by = lag_by_node(&samples);
        assert_eq!(by["pg1"], vec![(100.0, 500), (300.0, 99_999)]);
    }

    #[test]
    fn acks_are_binned_from_the_origin() {
        let acks = [ack(0, 1, 10), ack(0, 2, 99), ack(0, 3, 100), ack(0, 4, 250)];
        assert_eq!(acks_per_bin(&acks, ms(100), ms(250)), vec![2, 1, 1]);
    }
}
