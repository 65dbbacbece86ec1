//! Slots whose WAL is gone or about to go (`max_slot_wal_keep_size`): the standby behind
//! such a slot can no longer stream from where it is, and only a fresh clone brings it back.

use crate::cluster::Cluster;
use crate::observe::topology::Probe;

/// One warning per slot whose `wal_status` is `unreserved` or `lost`, naming the standby
/// that streams (or streamed) through it and the command that brings it back.
pub fn warnings(cluster: &Cluster, probes: &[Probe]) -> Vec<String> {
    let mut out = Vec::new();
    for p in probes {
        for slot in p.slots.iter().filter(|s| s.losing_wal()) {
            // The standby the file sends through this slot on this node, else any node the
            // slot is named after.
            let standby = cluster
                .spec
                .downstream_of(&p.name)
                .find(|n| n.slot_or_default() == slot.name)
                .or_else(|| {
                    cluster
                        .spec
                        .nodes
                        .iter()
                        .find(|n| n.slot_or_default() == slot.name)
                })
                .map(|n| n.name.as_str());
            let who = standby.unwrap_or("NODE");
            let state = if slot.wal_status.as_deref() == Some("lost") {
                "lost the WAL its standby needs"
            } else {
                "no longer reserves the WAL its standby needs (it goes at the next checkpoint)"
            };
            out.push(format!(
                "slot {} on {} {state}: max_slot_wal_keep_size ({}) was exceeded while {} was behind; {} will need a fresh clone: `pgrepl rejoin {who} --upstream {} --reclone`",
                slot.name,
                p.name,
                cluster.spec.cluster.max_slot_wal_keep_size,
                standby.unwrap_or("its standby"),
                standby.unwrap_or("that standby"),
                p.name
            ));
        }
    }
    out
}
