//! `pgrepl status` for people: the default table that fits an 80-column terminal (as
//! `patronictl list` does), and what `--watch` reports as it changes.

use comfy_table::{Cell, CellAlignment, ContentArrangement};
use pgrepl_core::observe::status::{ClusterStatus, NodeStatus, Role, State};

use crate::render;

/// The width a terminal has at least; the default table and its notes stay within it.
pub const WIDTH: usize = 80;

/// One row per node: where it listens, its role (the primary clients write to is marked
/// `*`), whether it streams, its timeline, how far behind it is and its sync state.
/// Everything else is in `-o wide`.
/// "monitor: running (pid N)" with its last decision, or "monitor: not running".
pub fn monitor_line(s: &ClusterStatus) -> String {
    let Some(m) = &s.monitor else {
        return String::new();
    };
    let mut line = match (m.running, m.pid) {
        (true, Some(pid)) => format!("monitor: running (pid {pid})"),
        (true, None) => "monitor: running".to_string(),
        (false, _) => "monitor: not running".to_string(),
    };
    if let Some(d) = &m.last_decision {
        line += &format!("; last decision: {d}");
    }
    line + "\n"
}

pub fn compact(s: &ClusterStatus) -> String {
    let mut t = render::table();
    t.set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec![
            "NODE",
            "HOST:PORT",
            "ROLE",
            "STATE",
            "TL",
            "LAG",
            "SYNC",
        ]);
    for n in &s.nodes {
        t.add_row(vec![
            Cell::new(&n.name),
            Cell::new(host_port(n)),
            Cell::new(render::role(s, n)),
            Cell::new(render::state(n)),
            Cell::new(n.timeline.map_or("-".into(), |t| t.to_string()))
                .set_alignment(CellAlignment::Right),
            Cell::new(n.lag_bytes.map_or("-".into(), render::bytes))
                .set_alignment(CellAlignment::Right),
            Cell::new(n.sync_state.as_deref().unwrap_or("-")),
        ]);
    }
    // Two spaces between columns instead of three: the width 80 columns leave.
    for c in t.column_iter_mut().skip(1) {
        c.set_padding((0, 1));
    }
    let mut out = format!("cluster {}\n{t}\n", s.cluster);
    // Injected faults do not fit a column: a line each, under the table.
    for n in s.nodes.iter().filter(|n| n.frozen || !n.faults.is_empty()) {
        out += &wrap(&format!(
            "{}: {}",
            n.name,
            render::faults(n.frozen, &n.faults)
        ));
    }
    for line in render::status_footer(s).lines() {
        out += &wrap(line);
    }
    out
}

/// A footer line (note, warning) folded to the terminal's width, continuation indented.
fn wrap(line: &str) -> String {
    let opts = textwrap::Options::new(WIDTH).subsequent_indent("  ");
    let mut out = textwrap::wrap(line, opts).join("\n");
    out.push('\n');
    out
}

/// `127.0.0.1:15432`, `[::1]:15432`.
fn host_port(n: &NodeStatus) -> String {
    if n.host.contains(':') {
        format!("[{}]:{}", n.host, n.port)
    } else {
        format!("{}:{}", n.host, n.port)
    }
}

/// What changed between two readings, a line each, for `--watch`: the primary, and each
/// node's state, role, timeline, upstream and sync state; warnings that appeared. Positions
/// and lag move all the time and are left to the table.
pub fn changes(before: &ClusterStatus, after: &ClusterStatus) -> Vec<String> {
    let mut out = Vec::new();
    let name = |p: &Option<String>| p.clone().unwrap_or_else(|| "none".into());
    if before.primary != after.primary {
        out.push(format!(
            "primary: {} -> {}",
            name(&before.primary),
            name(&after.primary)
        ));
    }
    for n in &after.nodes {
        let Some(b) = before.nodes.iter().find(|b| b.name == n.name) else {
            out.push(format!("{}: new node, {}", n.name, render::state(n)));
            continue;
        };
        let mut diffs = Vec::new();
        let mut diff = |what: &str, old: String, new: String| {
            if old != new {
                diffs.push(format!("{what}{old} -> {new}"));
            }
        };
        diff("", render::state(b).into(), render::state(n).into());
        let role = |n: &NodeStatus| match n.role {
            Some(Role::Primary) => "primary".to_string(),
            Some(Role::Standby) => "standby".to_string(),
            None => "-".to_string(),
        };
        if b.role.is_some() && n.role.is_some() {
            diff("", role(b), role(n));
        }
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        if let (Some(old), Some(new)) = (b.timeline, n.timeline) {
            diff("timeline ", old.to_string(), new.to_string());
        }
        if b.state == State::Running && n.state == State::Running {
            diff(
                "upstream ",
                opt(b.upstream.clone()),
                opt(n.upstream.clone()),
            );
            diff(
                "sync ",
                opt(b.sync_state.clone()),
                opt(n.sync_state.clone()),
            );
        }
        if !diffs.is_empty() {
            out.push(format!("{}: {}", n.name, diffs.join(", ")));
        }
    }
    out.extend(
        after
            .warnings
            .iter()
            .filter(|w| !before.warnings.contains(w))
            .map(|w| format!("WARNING: {w}")),
    );
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pgrepl_core::observe::status::SyncStatus;

    pub(crate) fn node(name: &str, port: u16, app: &str) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            state: State::Running,
            role: Some(Role::Standby),
            timeline: Some(12),
            lsn: Some("1A/B374D848".parse().unwrap()),
            receive_lsn: Some("1A/B374D848".parse().unwrap()),
            replay_lsn: Some("1A/B3700000".parse().unwrap()),
            upstream: Some("pg0".into()),
            streaming: true,
            slot: Some(format!("{name}_slot")),
            application_name: app.into(),
            sync_state: Some("potential".into()),
            sync_priority: Some(2),
            lag_bytes: Some(1_048_575_000),
            write_lag_ms: Some(0.4),
            flush_lag_ms: Some(0.9),
            replay_lag_ms: Some(1012.0),
            needs_rejoin: false,
            created: true,
            note: None,
            frozen: false,
            faults: Vec::new(),
        }
    }

    /// The lab with realistic, wide values: long positions, a big lag, every sync state.
    fn lab() -> ClusterStatus {
        let mut pg0 = node("pg0", 15432, "pg0");
        pg0.role = Some(Role::Primary);
        pg0.upstream = None;
        pg0.streaming = false;
        pg0.sync_state = None;
        pg0.lag_bytes = None;
        let mut pg1 = node("pg1", 15433, "pg1");
        pg1.sync_state = Some("async".into());
        pg1.needs_rejoin = true;
        let mut pg2 = node("pg2", 15434, "sync2");
        pg2.sync_state = Some("sync".into());
        let mut pg3 = node("pg3", 15435, "sync3");
        pg3.state = State::NotAnswering;
        pg3.role = None;
        pg3.note = Some("diverged: 1234 bytes of timeline 11 past 1A/B0000000, where the primary's timeline 12 forked off: needs rejoin (`pgrepl rejoin pg3 --upstream pg0`)".into());
        ClusterStatus {
            cluster: "lab".into(),
            primary: Some("pg0".into()),
            split_brain: false,
            sync: Some(SyncStatus {
                standby_names: r#"FIRST 1 ("sync2", "sync3")"#.into(),
                commit: "remote_apply".into(),
                satisfied: true,
                sync_standbys: vec!["sync2".into()],
                waiting_sessions: 3,
                oldest_wait_ms: Some(1500.0),
            }),
            warnings: vec!["no standby streams from pg0 and replication is asynchronous: writes on pg0 are acknowledged with no copy on another node".into()],
            nodes: vec![pg0, pg1, pg2, pg3],
            monitor: None,
        }
    }

    #[test]
    fn the_default_table_fits_80_columns() {
        let out = compact(&lab());
        for line in out.lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} columns: {line}\n{out}",
                line.chars().count()
            );
        }
        let header = out.lines().nth(2).unwrap();
        let words: Vec<&str> = header
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|w| !w.is_empty())
            .collect();
        assert_eq!(
            words,
            ["NODE", "HOST:PORT", "ROLE", "STATE", "TL", "LAG", "SYNC"]
        );
        assert!(out.contains("127.0.0.1:15432"), "{out}");
        assert!(out.contains("* primary"), "{out}");
        assert!(out.contains("streaming"), "{out}");
        assert!(out.contains("needs rejoin"), "{out}");
        assert!(out.contains("not answering"), "{out}");
        assert!(out.contains("acknowledged with no copy"), "{out}");
    }

    #[test]
    fn wide_says_what_the_default_table_says() {
        let mut s = lab();
        let mut pg4 = node("pg4", 15436, "pg4");
        (pg4.state, pg4.role, pg4.created) = (State::Stopped, None, false);
        pg4.note = Some("not created (no data directory yet): create it with `pgrepl up`".into());
        s.nodes.push(pg4);
        let (compact, wide) = (compact(&s), render::status_table(&s));
        let row = |out: &str, name: &str| {
            out.lines()
                .find(|l| l.starts_with(&format!("│ {name} ")))
                .unwrap_or_else(|| panic!("no row {name}:\n{out}"))
                .to_string()
        };
        for n in &s.nodes {
            let words =
                |l: &str| -> Vec<String> { l.split("  ").map(|w| w.trim().to_string()).collect() };
            for out in [&compact, &wide] {
                let r = words(&row(out, &n.name));
                for want in [render::role(&s, n), render::state(n)] {
                    assert!(r.iter().any(|w| w == want), "{}: {want}:\n{out}", n.name);
                }
                if let Some(lag) = n.lag_bytes {
                    assert!(r.iter().any(|w| *w == render::bytes(lag)), "{out}");
                }
            }
        }
        assert!(compact.contains("not created") && !compact.contains("pg4: crashed"));
        assert!(!wide.contains("(needs rejoin)"), "{wide}");
    }

    #[test]
    fn watch_reports_what_changed() {
        let before = lab();
        let mut after = lab();
        assert!(changes(&before, &after).is_empty());
        after.nodes[2].state = State::Stopped;
        after.nodes[2].role = None;
        after.nodes[0].timeline = Some(13);
        after.primary = None;
        after.warnings.push("SPLIT BRAIN".into());
        let c = changes(&before, &after);
        assert_eq!(
            c,
            [
                "primary: pg0 -> none",
                "pg0: timeline 12 -> 13",
                "pg2: streaming -> stopped",
                "WARNING: SPLIT BRAIN"
            ]
        );
    }
}
