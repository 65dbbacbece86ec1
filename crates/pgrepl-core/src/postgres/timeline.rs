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

/// How a node's WAL relates to a server's timeline: whether the node can stream from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lineage {
    /// The node's WAL is a prefix of the server's history: it can follow as it is.
    /// `fork` is where its timeline ended in that history (None on the same timeline).
    Follows { fork: Option<Lsn> },
    /// The node wrote WAL past the point where the server's history left its timeline:
    /// only a rewind (or a re-clone) brings it back.
    Diverged { fork: Lsn, past_by: u64 },
    /// The node is on a newer timeline than the server: the server is the stale one.
    Ahead,
    /// The node's timeline is not in the server's history at all.
    Unrelated,
}

/// Where a node whose WAL ends at `node_end` on timeline `node_tli` stands against a server on
/// timeline `server_tli` whose history is `history`.
pub fn lineage(history: &[HistoryEntry], server_tli: u32, node_tli: u32, node_end: Lsn) -> Lineage {
    if node_tli == server_tli {
        return Lineage::Follows { fork: None };
    }
    if node_tli > server_tli {
        return Lineage::Ahead;
    }
    match history.iter().find(|e| e.tli == node_tli) {
        Some(e) if node_end > e.switchpoint => Lineage::Diverged {
            fork: e.switchpoint,
            past_by: node_end.bytes_after(e.switchpoint),
        },
        Some(e) => Lineage::Follows {
            fork: Some(e.switchpoint),
        },
        None => Lineage::Unrelated,
    }
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

    #[test]
    fn a_node_up_to_the_fork_follows_one_past_it_diverged() {
        let h = parse_history(HISTORY_3);
        assert_eq!(
            lineage(&h, 3, 1, lsn("0/5020B18")),
            Lineage::Follows {
                fork: Some(lsn("0/5020B18"))
            }
        );
        assert_eq!(
            lineage(&h, 3, 1, lsn("0/5020C00")),
            Lineage::Diverged {
                fork: lsn("0/5020B18"),
                past_by: 0xE8
            }
        );
        assert_eq!(
            lineage(&h, 3, 2, lsn("0/6000000")),
            Lineage::Follows {
                fork: Some(lsn("0/7000000"))
            }
        );
        assert_eq!(
            lineage(&h, 3, 3, lsn("9/0")),
            Lineage::Follows { fork: None }
        );
        assert_eq!(lineage(&h, 3, 4, lsn("0/1")), Lineage::Ahead);
        assert_eq!(
            lineage(&[], 1, 1, lsn("0/1")),
            Lineage::Follows { fork: None }
        );
        assert_eq!(
            lineage(&parse_history("2\t0/1\tx\n"), 3, 1, lsn("0/1")),
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
