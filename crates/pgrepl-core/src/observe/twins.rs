//! Twin timelines: two promotions that made the same timeline number at the same switch point
//! (two standbys that had replayed the same WAL, each promoted without knowing of the other).
//! Their history files are then identical, so timeline paths cannot tell them apart, and
//! neither can pg_rewind, which sees "the same timeline" and rewinds nothing; a standby of the
//! other twin then loops on "record with incorrect prev-link" while it looks connected.
//!
//! The WAL tells them apart: the first record a promotion writes on its new timeline
//! (END_OF_RECOVERY) holds the time of the promotion, so the bytes at the start of two twin
//! timelines differ, while a node that streamed a timeline holds exactly its primary's bytes.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Result, ResultExt};
use crate::observe::lineage::{History, WalEnd};
use crate::postgres::conn::Conn;
use crate::postgres::timeline::TimelinePath;
use crate::postgres::Lsn;

/// How much WAL is compared from the start of a timeline: a page header, the first record's
/// header (with its CRC, which covers the promotion's time) and its data.
const COMPARED: u64 = 256;

/// Where a node's WAL is read: over SQL from a running server, from pg_wal of a stopped one.
pub enum WalSource<'a> {
    Running(&'a Conn),
    Stopped(&'a Path),
}

/// The timelines both paths claim to share that a promotion began (not the first), with the
/// position where each began, as far as the node has WAL on them.
pub fn shared_promotions(
    server: &TimelinePath,
    node: &TimelinePath,
    node_end: Lsn,
) -> Vec<(u32, Lsn)> {
    let (s, n) = (server.legs(), node.legs());
    let mut out = Vec::new();
    for i in 1..s.len().min(n.len()) {
        // Both paths left the previous timeline at the same point for the same timeline.
        let (Some(a), Some(b)) = (s[i - 1].1, n[i - 1].1) else {
            break;
        };
        if a != b || s[i].0 != n[i].0 || node_end <= a {
            break;
        }
        out.push((s[i].0, a));
    }
    out
}

/// The timeline, and where it began, that `node` and `server` both hold under the same number
/// and history but from two different promotions; None when their WAL agrees (or could not be
/// read: a segment already removed).
pub async fn twin(
    server: &WalSource<'_>,
    server_path: &TimelinePath,
    node: &WalSource<'_>,
    node_path: &TimelinePath,
    node_end: Lsn,
    segment_size: u64,
) -> Option<(u32, Lsn)> {
    for (tli, start) in shared_promotions(server_path, node_path, node_end) {
        // Only what the node has: past its end, its segment holds zeros.
        let len = COMPARED.min(node_end.bytes_after(start));
        let a = read(server, tli, start, len, segment_size).await;
        let b = read(node, tli, start, len, segment_size).await;
        match (a, b) {
            (Ok(Some(a)), Ok(Some(b))) if a != b => return Some((tli, start)),
            (Ok(Some(_)), Ok(Some(_))) => {}
            other => {
                tracing::debug!(tli, %start, ?other, "cannot compare the start of the timeline");
            }
        }
    }
    None
}

/// Why `node` (its WAL ending at `end`, read from `node_src`) cannot follow the server of
/// `history` (connected as `server`): None unless they are twins.
pub async fn refusal(
    node: &str,
    server: &Conn,
    history: &History,
    node_src: &WalSource<'_>,
    end: &WalEnd,
) -> Option<String> {
    let size = segment_size(server).await.ok()?;
    let (tli, at) = twin(
        &WalSource::Running(server),
        &history.path,
        node_src,
        &end.path,
        end.end,
        size,
    )
    .await?;
    let up = &history.node;
    Some(format!(
        "{node} and {up} both have a timeline {tli} from {at}, made by two different promotions (their WAL differs from there): pg_rewind cannot tell the two apart and would rewind nothing; re-clone {node} with `pgrepl rejoin {node} --upstream {up} --reclone` (the old directory is kept)"
    ))
}

/// The segment file holding `lsn` on timeline `tli`.
pub fn segment_file(tli: u32, lsn: Lsn, segment_size: u64) -> String {
    let segno = lsn.0 / segment_size;
    let per_id = 0x1_0000_0000 / segment_size;
    format!("{tli:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// `len` bytes of WAL from `lsn` (cut at the end of its segment); None when the segment is
/// gone or shorter.
async fn read(
    src: &WalSource<'_>,
    tli: u32,
    lsn: Lsn,
    len: u64,
    segment_size: u64,
) -> Result<Option<Vec<u8>>> {
    let offset = lsn.0 % segment_size;
    let len = len.min(segment_size - offset);
    let file = format!("pg_wal/{}", segment_file(tli, lsn, segment_size));
    match src {
        WalSource::Running(c) => {
            let row = c
                .query_one(
                    "SELECT pg_read_binary_file($1, $2, $3, true)",
                    &[&file, &(offset as i64), &(len as i64)],
                )
                .await
                .what(|| format!("cannot read {file}"))?;
            Ok(row
                .get::<_, Option<Vec<u8>>>(0)
                .filter(|b| b.len() as u64 == len))
        }
        WalSource::Stopped(data) => {
            let path = data.join(&file);
            let Ok(mut f) = std::fs::File::open(&path) else {
                return Ok(None);
            };
            let mut buf = vec![0; len as usize];
            f.seek(SeekFrom::Start(offset))
                .and_then(|_| f.read_exact(&mut buf))
                .map(|_| Some(buf))
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => Ok(None),
                    _ => Err(e),
                })
                .what(|| format!("cannot read {}", path.display()))
        }
    }
}

/// The wal segment size of a running server, in bytes.
pub async fn segment_size(c: &Conn) -> Result<u64> {
    let size: String = c
        .query_one(
            "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'",
            &[],
        )
        .await
        .what(|| "cannot read wal_segment_size".into())?
        .get(0);
    size.parse().map_err(|_| {
        crate::error::Error::Precondition(format!("unexpected wal_segment_size '{size}'"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::timeline::parse_history;

    fn path(tli: u32, history: &str) -> TimelinePath {
        TimelinePath::new(tli, parse_history(history))
    }

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    #[test]
    fn the_shared_promoted_timelines_are_compared() {
        let a = path(2, "1\t0/5000000\tx\n");
        let b = path(2, "1\t0/5000000\tx\n");
        assert_eq!(
            shared_promotions(&a, &b, lsn("0/5000100")),
            [(2, lsn("0/5000000"))]
        );
        // The node has nothing on timeline 2 yet: nothing to compare.
        assert!(shared_promotions(&a, &b, lsn("0/5000000")).is_empty());
        // Timeline 1 alone is never a promotion.
        assert!(shared_promotions(&path(1, ""), &path(1, ""), lsn("0/9000000")).is_empty());
        // A longer shared path: both promotions.
        let c = path(3, "1\t0/5000000\tx\n2\t0/6000000\tx\n");
        assert_eq!(
            shared_promotions(&c, &c, lsn("0/7000000")),
            [(2, lsn("0/5000000")), (3, lsn("0/6000000"))]
        );
        // Forks at different points are the lineage's business, not twins.
        let d = path(2, "1\t0/4000000\tx\n");
        assert!(shared_promotions(&a, &d, lsn("0/9000000")).is_empty());
    }

    #[test]
    fn names_segment_files_as_postgres_does() {
        assert_eq!(
            segment_file(2, lsn("0/5020B18"), 16 * 1024 * 1024),
            "000000020000000000000005"
        );
        assert_eq!(
            segment_file(3, lsn("1/00300000"), 1024 * 1024),
            "000000030000000100000003"
        );
    }
}
