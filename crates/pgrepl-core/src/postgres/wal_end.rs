//! Where a stopped node's WAL ends, read with pg_waldump from its newest segment. pg_control
//! is no answer: a standby's last restartpoint can be far behind what it replayed, and even a
//! clean shutdown's checkpoint record ends after the location pg_control gives (its start).
//! A person expects the position the node had reached when it stopped.

use std::path::Path;

use crate::postgres::Lsn;

/// How many segments pg_waldump reads at most, newest first.
pub const SEGMENTS_TO_TRY: usize = 2;

/// The WAL segment files in `pg_wal`, newest first: by position, then by timeline (after a
/// promotion two timelines hold the segment of the switch). `.partial` files are left out:
/// a promotion renames the old timeline's last segment so, and the new timeline's copy of it
/// holds the same WAL and more.
pub fn segments_newest_first(pg_wal: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(pg_wal) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    names.sort_by(|a, b| (&b[8..], &b[..8]).cmp(&(&a[8..], &a[..8])));
    names
}

/// What one pg_waldump run over a single segment says about the end of WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Reading stopped here: no valid record starts at this position.
    At(Lsn),
    /// The segment holds no valid record: look at the one before.
    Empty,
    /// pg_waldump stopped for a reason that does not place the end (an unreadable file).
    Unknown,
}

/// Reads pg_waldump's exit and error output (run with `--quiet` over one segment). It stops
/// with an error at the first position where no valid record starts, which is where the
/// node's WAL ends; the message names that position last ("invalid record length at
/// 0/30000A0: ...", "invalid magic number 0000 in WAL segment ..., LSN 0/3002000, offset
/// 8192"). A clean exit means records fill the segment up to `segment_end`.
pub fn read_waldump(success: bool, stderr: &str, segment_end: Lsn) -> SegmentEnd {
    if success {
        return SegmentEnd::At(segment_end);
    }
    let Some(line) = stderr.lines().rev().find(|l| l.contains("error")) else {
        return SegmentEnd::Unknown;
    };
    if line.contains("could not find a valid record") {
        return SegmentEnd::Empty;
    }
    line.split(|c: char| !(c.is_ascii_hexdigit() || c == '/'))
        .filter_map(|w| w.parse::<Lsn>().ok())
        .next_back()
        .map_or(SegmentEnd::Unknown, SegmentEnd::At)
}

/// Where segment `name` (24 hex digits: timeline, log, segment) starts, for segments of
/// `segment_bytes`.
pub fn segment_start(name: &str, segment_bytes: u64) -> Option<Lsn> {
    if !segment_bytes.is_power_of_two() {
        return None;
    }
    let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
    let seg = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
    let per_log = 0x1_0000_0000 / segment_bytes;
    Some(Lsn((log * per_log + seg) * segment_bytes))
}

/// Whether a segment file's first page was written for its place (`start`): PostgreSQL
/// creates segment files ahead of need, zeroed or recycled from old ones, and those hold no
/// WAL of theirs. The page header begins with xlp_magic (2 bytes), xlp_info (2), xlp_tli (4)
/// and xlp_pageaddr (8), in the server's byte order.
pub fn holds_wal(first_page: &[u8], start: Lsn) -> bool {
    let (Some(magic), Some(addr)) = (first_page.get(0..2), first_page.get(8..16)) else {
        return false;
    };
    magic != [0, 0] && u64::from_ne_bytes(addr.try_into().expect("8 bytes")) == start.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1024 * 1024;

    #[test]
    fn the_end_is_where_reading_stopped() {
        let end = Lsn(0x400000);
        let pg15 = "pg_waldump: fatal: error in WAL record at 0/3000148: invalid record length at 0/3000180: expected at least 24, got 0\n";
        assert_eq!(
            read_waldump(false, pg15, end),
            SegmentEnd::At("0/3000180".parse().unwrap())
        );
        let pg18 = "pg_waldump: error: error in WAL record at 0/03000148: invalid magic number 0000 in WAL segment 000000010000000000000003, LSN 0/03002000, offset 8192\n";
        assert_eq!(
            read_waldump(false, pg18, end),
            SegmentEnd::At(Lsn(0x3002000))
        );
        assert_eq!(
            read_waldump(
                false,
                "pg_waldump: error: could not find a valid record after 0/4000000\n",
                end
            ),
            SegmentEnd::Empty
        );
        assert_eq!(
            read_waldump(
                false,
                "pg_waldump: error: could not open file \"x\": Permission denied",
                end
            ),
            SegmentEnd::Unknown
        );
        assert_eq!(read_waldump(true, "", end), SegmentEnd::At(end));
    }

    #[test]
    fn segment_starts_for_1_mb_and_16_mb_segments() {
        assert_eq!(
            segment_start("000000010000000000000003", MB),
            Some(Lsn(0x300000))
        );
        assert_eq!(
            segment_start("0000000200000001000000FF", 16 * MB),
            Some(Lsn(0x1_FF00_0000))
        );
        assert_eq!(segment_start("000000010000000000000003", 0), None);
    }

    #[test]
    fn a_segment_made_ahead_holds_no_wal() {
        let start = Lsn(0x300000);
        let mut page = vec![0u8; 24];
        assert!(!holds_wal(&page, start), "zeroed");
        page[0..2].copy_from_slice(&0xD118u16.to_ne_bytes());
        page[8..16].copy_from_slice(&0x100000u64.to_ne_bytes());
        assert!(!holds_wal(&page, start), "recycled from an older segment");
        page[8..16].copy_from_slice(&start.0.to_ne_bytes());
        assert!(holds_wal(&page, start));
        assert!(!holds_wal(&page[..4], start), "too short");
    }

    #[test]
    fn newest_segment_first_then_newest_timeline() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "000000010000000000000004",
            "000000010000000000000005.partial",
            "000000020000000000000005",
            "000000010000000000000005",
            "00000002.history",
            "archive_status",
        ] {
            std::fs::write(d.path().join(n), "").unwrap();
        }
        assert_eq!(
            segments_newest_first(d.path()),
            [
                "000000020000000000000005",
                "000000010000000000000005",
                "000000010000000000000004"
            ]
        );
    }
}
