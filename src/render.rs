//! How results look: aligned tables for people, JSON for programs.

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use pgrepl_core::observe::status::{ClusterStatus, NodeStatus, Role, State};
use pgrepl_core::postgres::PgInstall;

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

fn lsn(n: &NodeStatus) -> String {
    match (n.role, n.receive_lsn, n.replay_lsn) {
        (Some(Role::Standby), Some(r), Some(p)) if r != p => format!("{r} / {p}"),
        _ => dash(n.lsn),
    }
}

fn role(n: &NodeStatus) -> String {
    match n.role {
        Some(Role::Primary) => "primary".into(),
        Some(Role::Standby) => "standby".into(),
        None => "-".into(),
    }
}

fn state(s: State) -> &'static str {
    match s {
        State::Running => "running",
        State::Stopped => "stopped",
        State::Unreachable => "unreachable",
        State::NotAnswering => "not answering",
    }
}

pub fn status_table(s: &ClusterStatus) -> String {
    let mut t = table();
    t.set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec![
            "NODE",
            "PORT",
            "STATE",
            "ROLE",
            "TL",
            "LSN",
            "UPSTREAM",
            "SLOT",
            "APP NAME",
            "SYNC",
            "LAG",
            "LAG w/f/r ms",
        ]);
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
        let mut st = state(n.state).to_string();
        if n.needs_rejoin {
            st += " (needs rejoin)";
        }
        t.add_row(vec![
            Cell::new(&n.name),
            Cell::new(n.port).set_alignment(CellAlignment::Right),
            Cell::new(st),
            Cell::new(role(n)),
            Cell::new(dash(n.timeline)).set_alignment(CellAlignment::Right),
            Cell::new(lsn(n)),
            Cell::new(dash(n.upstream.as_ref())),
            Cell::new(dash(n.slot.as_ref())),
            Cell::new(&n.application_name),
            Cell::new(sync),
            Cell::new(n.lag_bytes.map(bytes).unwrap_or_else(|| "-".into()))
                .set_alignment(CellAlignment::Right),
            Cell::new(lag_times).set_alignment(CellAlignment::Right),
        ]);
    }
    let mut out = format!("cluster {}\n{t}\n", s.cluster);
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
