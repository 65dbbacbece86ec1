//! How results look: aligned tables for people, JSON for programs.

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use pgrepl_core::observe::status::{ClusterStatus, NodeStatus, Role, State};
use pgrepl_core::postgres::PgInstall;
use pgrepl_core::runtime::NetFault;

/// A table in pgrepl's style: a border around, a rule under the header, aligned columns.
pub fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_BORDERS_ONLY);
    t
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
        None => "-".into(),
    }
}

/// A standby's position: what it received, and what it replayed when that is behind. After
/// a restart the walreceiver reports where it resumed streaming (a segment's start, before
/// the replay position) until new WAL arrives: that is not a position it fell back to.
fn lsn(n: &NodeStatus) -> String {
    match (n.role, n.receive_lsn, n.replay_lsn) {
        (Some(Role::Standby), Some(r), Some(p)) if r > p => format!("{r} / {p}"),
        (Some(Role::Standby), _, Some(p)) => p.to_string(),
        _ => dash(n.lsn),
    }
}

/// The node's role, the same word in every table: `*` marks the primary clients write to.
pub fn role(s: &ClusterStatus, n: &NodeStatus) -> &'static str {
    match n.role {
        Some(Role::Primary) if s.primary.as_deref() == Some(n.name.as_str()) => "* primary",
        Some(Role::Primary) => "primary",
        Some(Role::Standby) => "standby",
        None => "-",
    }
}

/// The node's state in a word, the same in every table: `streaming` for a standby WAL flows
/// to, `needs rejoin` for one that left the primary's history, `not created` for a node of
/// the cluster file that has no data directory yet.
pub fn state(n: &NodeStatus) -> &'static str {
    match n.state {
        _ if n.frozen => "frozen",
        _ if !n.created => "not created",
        _ if n.needs_rejoin => "needs rejoin",
        State::Running if n.role == Some(Role::Standby) && n.streaming => "streaming",
        State::Running => "running",
        State::Stopped => "stopped",
        State::Unreachable => "unreachable",
        State::NotAnswering => "not answering",
    }
}

/// A node's injected faults in a few words ("-" for none).
pub fn faults(frozen: bool, faults: &[NetFault]) -> String {
    let mut all: Vec<String> = faults.iter().map(ToString::to_string).collect();
    if frozen {
        all.insert(0, "frozen".into());
    }
    if all.is_empty() {
        "-".into()
    } else {
        all.join("; ")
    }
}

pub fn status_table(s: &ClusterStatus) -> String {
    let mut t = table();
    // Where every node has an address of its own (netns), the address tells them apart.
    let one_host = s.nodes.windows(2).all(|w| w[0].host == w[1].host);
    let any_fault = s.nodes.iter().any(|n| n.frozen || !n.faults.is_empty());
    let mut header = vec![
        "NODE",
        if one_host { "PORT" } else { "ADDRESS" },
        "ROLE",
        "STATE",
        "TL",
        "LSN",
        "UPSTREAM",
        "SLOT",
        "APP NAME",
        "SYNC",
        "LAG",
        "LAG w/f/r ms",
    ];
    if any_fault {
        header.push("FAULTS");
    }
    t.set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for n in &s.nodes {
        let lag_times = if n.write_lag_ms.is_some() || n.replay_lag_ms.is_some() {
            format!(
                "{}/{}/{}",
                ms(n.write_lag_ms),
                ms(n.flush_lag_ms),
                ms(n.replay_lag_ms)
            )
        } else {
            "-".into()
        };
        let sync = match (&n.sync_state, n.sync_priority) {
            (Some(st), Some(p)) if st != "async" => format!("{st} ({p})"),
            (Some(st), _) => st.clone(),
            _ => "-".into(),
        };
        let address = if one_host {
            n.port.to_string()
        } else {
            format!("{}:{}", n.host, n.port)
        };
        let mut row = vec![
            Cell::new(&n.name),
            Cell::new(address).set_alignment(CellAlignment::Right),
            Cell::new(role(s, n)),
            Cell::new(state(n)),
            Cell::new(dash(n.timeline)).set_alignment(CellAlignment::Right),
            Cell::new(lsn(n)),
            Cell::new(dash(n.upstream.as_ref())),
            Cell::new(dash(n.slot.as_ref())),
            Cell::new(&n.application_name),
            Cell::new(sync),
            Cell::new(n.lag_bytes.map(bytes).unwrap_or_else(|| "-".into()))
                .set_alignment(CellAlignment::Right),
            Cell::new(lag_times).set_alignment(CellAlignment::Right),
        ];
        if any_fault {
            row.push(Cell::new(faults(n.frozen, &n.faults)));
        }
        t.add_row(row);
    }
    format!("cluster {}\n{t}\n{}", s.cluster, status_footer(s))
}

/// What status says under its table: synchronous replication, notes, warnings; a line each.
pub fn status_footer(s: &ClusterStatus) -> String {
    let mut out = String::new();
    if let Some(sync) = &s.sync {
        out += &format!(
            "synchronous replication: {} (synchronous_commit = {}): {}",
            sync.standby_names,
            sync.commit,
            if sync.satisfied {
                format!("satisfied by {}", sync.sync_standbys.join(", "))
            } else {
                "NOT satisfied: commits wait".into()
            }
        );
        if sync.waiting_sessions > 0 {
            out += &format!(
                "; {} session(s) waiting on SyncRep, oldest for {} ms",
                sync.waiting_sessions,
                ms(sync.oldest_wait_ms)
            );
        }
        out.push('\n');
    }
    for n in s.nodes.iter().filter(|n| n.note.is_some()) {
        out += &format!(
            "note: {}: {}\n",
            n.name,
            n.note.as_deref().unwrap_or_default()
        );
    }
    for w in &s.warnings {
        out += &format!("WARNING: {w}\n");
    }
    out
}

pub fn postgres_list(list: &[PgInstall]) -> String {
    let mut t = table();
    t.set_header(vec!["VERSION", "MAJOR", "FOUND BY", "BIN DIRECTORY"]);
    for i in list {
        t.add_row(vec![
            i.version.clone(),
            i.major.to_string(),
            i.origin.clone(),
            i.bin.display().to_string(),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::lsn;

    #[test]
    fn a_standby_shows_replay_apart_only_when_it_is_behind_receive() {
        let mut n = crate::status_view::tests::node("pg1", 15433, "pg1");
        // After a restart the walreceiver reports where streaming resumed: behind replay.
        n.receive_lsn = Some("0/3000000".parse().unwrap());
        n.replay_lsn = Some("0/3000100".parse().unwrap());
        assert_eq!(lsn(&n), "0/3000100");
        n.receive_lsn = Some("0/3000200".parse().unwrap());
        assert_eq!(lsn(&n), "0/3000200 / 0/3000100");
    }
}
