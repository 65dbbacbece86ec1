//! Timeline histories: where one timeline forked off another, and whether a node's WAL can
//! still be followed by a server on a newer timeline or has gone past the fork point.

use crate::postgres::conn::Conn;

use crate::error::{Result, ResultExt};
use crate::postgres::Lsn;

/// One line of a `0000000N.history` file: timeline `tli` ended at `switchpoint`, where the
/// next timeline of this history begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub tli: u32,
    pub switchpoint: Lsn,
    pub reason: String,
}

/// Parses a timeline history file (`parentTLI <TAB> switchpoint <TAB> reason`); comments and
/// blank lines are skipped, as PostgreSQL does.
pub fn parse_history(text: &str) -> Vec<HistoryEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.splitn(3, char::is_whitespace);
            let tli = f.next()?.parse().ok()?;
            let switchpoint = f.next()?.trim().parse().ok()?;
            Some(HistoryEntry {
                tli,
                switchpoint,
                reason: f.next().unwrap_or("").trim().to_string(),
            })
        })
        .collect()
}

/// The history of timeline `tli` as the server sees it (empty for timeline 1, which has no
/// history file). Needs a superuser (pg_read_file).
pub async fn read_history(c: &Conn, tli: u32) -> Result<Vec<HistoryEntry>> {
    if tli <= 1 {
        return Ok(Vec::new());
    }
    let path = format!("pg_wal/{tli:08X}.history");
    let text: String = c
        .query_one("SELECT pg_read_file($1)", &[&path])
        .await
        .what(|| format!("cannot read the timeline history {path}"))?
        .get(0);
    Ok(parse_history(&text))
}

/// A timeline and the history that led to it: the path a server's WAL has taken since
/// initdb. Two servers can carry the same timeline number with different histories (each
/// promoted without knowing of the other), so paths are compared whole, never by number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimelinePath {
    pub tli: u32,
    /// The history file of `tli` (empty for timeline 1).
    pub history: Vec<HistoryEntry>,
}

impl TimelinePath {
    pub fn new(tli: u32, history: Vec<HistoryEntry>) -> Self {
        TimelinePath { tli, history }
    }

    /// Each timeline of the path with the position where the path left it (None for the
    /// last, which is still open).
    fn legs(&self) -> Vec<(u32, Option<Lsn>)> {
        let mut legs: Vec<(u32, Option<Lsn>)> = self
            .history
            .iter()
            .filter(|e| e.tli < self.tli)
            .map(|e| (e.tli, Some(e.switchpoint)))
            .collect();
        legs.push((self.tli, None));
        legs
    }
}

/// How a node's WAL relates to a server's timeline: whether the node can stream from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lineage {
    /// The node's WAL is a prefix of the server's history: it can follow as it is.
    /// `fork` is where its timeline ended in that history (None on the same timeline).
    Follows { fork: Option<Lsn> },
    /// The node wrote WAL past the point where the server's history left the node's path:
    /// only a rewind (or a re-clone) brings it back.
    Diverged { fork: Lsn, past_by: u64 },
    /// The server's history is a prefix of the node's: the node is newer, the server is the
    /// stale one.
    Ahead,
    /// The two paths share no timeline: they are not one cluster's history.
    Unrelated,
}

/// Where a node whose WAL ends at `node_end` on the path `node` stands against a server on
/// the path `server`.
///
/// The two paths are walked timeline by timeline from the first. While both leave a timeline
/// at the same point they agree; the first place they part is the fork. A node that ends on a
/// timeline the server left later (or not at all) follows; one that wrote past the fork has
/// diverged. Comparing timeline numbers alone is not enough: a second promotion made without
/// knowledge of the first reuses the number with a different switch point.
pub fn lineage(server: &TimelinePath, node: &TimelinePath, node_end: Lsn) -> Lineage {
    let s = server.legs();
    let n = node.legs();
    if s[0].0 != n[0].0 {
        return Lineage::Unrelated;
    }
    let mut i = 0;
    loop {
        let (s_tli, s_end) = s[i];
        let (n_tli, n_end) = n[i];
        if s_tli != n_tli {
            // Both left the previous timeline at the same point, for different timelines.
            let fork = s[i - 1].1.expect("only the last leg is open");
            return diverged_past(fork, node_end);
        }
        match (s_end, n_end) {
            // The node is still on this timeline.
            (None, None) => return Lineage::Follows { fork: None },
            (Some(fork), None) => {
                return if node_end > fork {
                    Lineage::Diverged {
                        fork,
                        past_by: node_end.bytes_after(fork),
                    }
                } else {
                    Lineage::Follows { fork: Some(fork) }
                }
            }
            // The server is still on this timeline and the node went on to a later one.
            (None, Some(_)) => return Lineage::Ahead,
            (Some(a), Some(b)) if a == b => i += 1,
            // Both left this timeline, at different points: their WAL differs from there on.
            (Some(a), Some(b)) => return diverged_past(a.min(b), node_end),
        }
    }
}

fn diverged_past(fork: Lsn, node_end: Lsn) -> Lineage {
    Lineage::Diverged {
        fork,
        past_by: node_end.bytes_after(fork),
    }
}

/// Reads the history of timeline `tli` from a data directory's pg_wal (for a server that is
/// down). Timeline 1 has none; a missing file reads as None.
pub fn read_history_file(data: &std::path::Path, tli: u32) -> Option<Vec<HistoryEntry>> {
    if tli <= 1 {
        return Some(Vec::new());
    }
    let text =
        std::fs::read_to_string(data.join("pg_wal").join(format!("{tli:08X}.history"))).ok()?;
    Some(parse_history(&text))
}

/// The newest timeline a data directory knows of: the highest history file in its pg_wal, or
/// the newest segment's timeline. A promotion writes its history file first.
pub fn newest_timeline(data: &std::path::Path) -> Option<u32> {
    std::fs::read_dir(data.join("pg_wal"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            match name.strip_suffix(".history") {
                Some(t) if t.len() == 8 => u32::from_str_radix(t, 16).ok(),
                _ => segment_timeline(&name),
            }
        })
        .max()
}

/// The path of a data directory whose server is down, from its pg_wal.
pub fn path_on_disk(data: &std::path::Path) -> Option<TimelinePath> {
    let tli = newest_timeline(data)?;
    Some(TimelinePath::new(tli, read_history_file(data, tli)?))
}

/// The timeline a WAL segment file name (`TTTTTTTTXXXXXXXXYYYYYYYY`) belongs to.
pub fn segment_timeline(file_name: &str) -> Option<u32> {
    let name = file_name.strip_suffix(".partial").unwrap_or(file_name);
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(&name[..8], 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    const HISTORY_3: &str = "1\t0/5020B18\tno recovery target specified\n\
                             \n\
                             2\t0/7000000\tno recovery target specified\n";

    #[test]
    fn parses_a_history_file() {
        let h = parse_history(HISTORY_3);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].tli, 1);
        assert_eq!(h[0].switchpoint, lsn("0/5020B18"));
        assert_eq!(h[0].reason, "no recovery target specified");
        assert_eq!(h[1].tli, 2);
        assert!(parse_history("# comment\n\n").is_empty());
    }

    fn path(tli: u32, history: &str) -> TimelinePath {
        TimelinePath::new(tli, parse_history(history))
    }

    #[test]
    fn a_node_up_to_the_fork_follows_one_past_it_diverged() {
        let server = path(3, HISTORY_3);
        let on_1 = path(1, "");
        assert_eq!(
            lineage(&server, &on_1, lsn("0/5020B18")),
            Lineage::Follows {
                fork: Some(lsn("0/5020B18"))
            }
        );
        assert_eq!(
            lineage(&server, &on_1, lsn("0/5020C00")),
            Lineage::Diverged {
                fork: lsn("0/5020B18"),
                past_by: 0xE8
            }
        );
        let on_2 = path(2, "1\t0/5020B18\tx\n");
        assert_eq!(
            lineage(&server, &on_2, lsn("0/6000000")),
            Lineage::Follows {
                fork: Some(lsn("0/7000000"))
            }
        );
        assert_eq!(
            lineage(&server, &server, lsn("9/0")),
            Lineage::Follows { fork: None }
        );
        assert_eq!(
            lineage(&on_1, &on_1, lsn("0/1")),
            Lineage::Follows { fork: None }
        );
    }

    #[test]
    fn a_newer_node_is_ahead_of_a_stale_server() {
        let server = path(1, "");
        let node = path(2, "1\t0/5000000\tx\n");
        assert_eq!(lineage(&server, &node, lsn("0/6000000")), Lineage::Ahead);
        let server2 = path(2, "1\t0/5000000\tx\n");
        let node4 = path(4, "1\t0/5000000\tx\n2\t0/6000000\tx\n3\t0/7000000\tx\n");
        assert_eq!(lineage(&server2, &node4, lsn("0/8000000")), Lineage::Ahead);
    }

    #[test]
    fn the_same_timeline_number_with_another_history_has_diverged() {
        // pg1 was promoted at 0/5000000; later pg2, which never heard of it, at 0/4000000:
        // both are on timeline 2.
        let pg1 = path(2, "1\t0/5000000\tx\n");
        let pg2 = path(2, "1\t0/4000000\tx\n");
        assert_eq!(
            lineage(&pg2, &pg1, lsn("0/5100000")),
            Lineage::Diverged {
                fork: lsn("0/4000000"),
                past_by: 0x1100000
            }
        );
        // Both promoted at the same point: only what came after differs.
        let twin = path(2, "1\t0/5000000\tother\n");
        assert_eq!(
            lineage(&pg1, &twin, lsn("0/5000000")),
            Lineage::Follows { fork: None }
        );
        // pg2 on timeline 3 after its own 2: pg1's timeline 2 is not on pg2's path.
        let pg2_3 = path(3, "1\t0/4000000\tx\n2\t0/6000000\tx\n");
        assert_eq!(
            lineage(&pg2_3, &pg1, lsn("0/5100000")),
            Lineage::Diverged {
                fork: lsn("0/4000000"),
                past_by: 0x1100000
            }
        );
    }

    #[test]
    fn paths_that_forked_to_different_timelines_diverged_at_the_switch() {
        let a = path(3, "1\t0/5000000\tx\n");
        let b = path(2, "1\t0/5000000\tx\n");
        assert_eq!(
            lineage(&a, &b, lsn("0/5000100")),
            Lineage::Diverged {
                fork: lsn("0/5000000"),
                past_by: 0x100
            }
        );
    }

    #[test]
    fn paths_without_a_common_first_timeline_are_unrelated() {
        assert_eq!(
            lineage(&path(3, "2\t0/1\tx\n"), &path(1, ""), lsn("0/1")),
            Lineage::Unrelated
        );
    }

    #[test]
    fn reads_a_segment_files_timeline() {
        assert_eq!(segment_timeline("000000020000000000000005"), Some(2));
        assert_eq!(
            segment_timeline("0000000A0000000000000005.partial"),
            Some(10)
        );
        assert_eq!(segment_timeline("00000002.history"), None);
        assert_eq!(segment_timeline("archive_status"), None);
    }
}
