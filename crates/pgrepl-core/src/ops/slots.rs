//! Replication slots that serve nobody. A slot holds WAL for its standby until the standby
//! confirms it; one that nobody streams through any more (a demoted primary keeps the slots
//! of its standbys, a repointed standby leaves its slot on the old upstream) holds WAL until
//! `max_slot_wal_keep_size`, and without that limit until the disk is full.

use crate::cluster::Cluster;
use crate::postgres::conn::Conn;
use crate::postgres::queries;
use crate::spec::default_slot;

/// Drops, on `node`, every inactive physical slot of pgrepl's (a slot the cluster file names,
/// or named after one of its nodes) through which no node of the file streams from `node`.
/// Slots pgrepl did not name are left alone, as are active ones. Best effort: a node that
/// does not answer keeps its slots until the next role change. Returns the slots dropped.
pub async fn tidy(cluster: &Cluster, node: &str) -> Vec<String> {
    let Ok(c) = cluster.connect(node).await else {
        return Vec::new();
    };
    let Ok(slots) = queries::slots(&c).await else {
        return Vec::new();
    };
    let spec = &cluster.spec;
    let wanted: Vec<String> = spec
        .downstream_of(node)
        .map(|n| n.slot_or_default())
        .collect();
    let ours = |slot: &str| {
        spec.nodes
            .iter()
            .any(|n| n.slot_or_default() == slot || default_slot(&n.name) == slot)
    };
    let mut dropped = Vec::new();
    for s in slots {
        if s.active || !ours(&s.name) || wanted.contains(&s.name) {
            continue;
        }
        match drop_inactive(&c, &s.name).await {
            Ok(true) => dropped.push(s.name),
            Ok(false) => {}
            Err(e) => tracing::debug!(node, slot = s.name, error = %e, "could not drop a slot"),
        }
    }
    if !dropped.is_empty() {
        tracing::info!(
            node,
            ?dropped,
            "dropped slots that no standby streams through"
        );
    }
    dropped
}

/// Drops the slot when it is inactive. A standby may have connected since the slot list was
/// read: the drop is for an inactive slot only. false: no such inactive slot.
pub async fn drop_inactive(c: &Conn, slot: &str) -> crate::error::Result<bool> {
    let n = c
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE slot_name = $1 AND NOT active",
            &[&slot],
        )
        .await?;
    Ok(n == 1)
}

/// The line an operation prints about slots it dropped, if any.
pub fn note(node: &str, dropped: &[String]) -> Option<String> {
    (!dropped.is_empty()).then(|| {
        format!(
            "{node}: dropped {} {} that no standby streams through (they held WAL back)",
            if dropped.len() == 1 { "slot" } else { "slots" },
            dropped.join(", ")
        )
    })
}
