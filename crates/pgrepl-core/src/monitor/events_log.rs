//! The event log: one JSON line per event in `<cluster_dir>/events.jsonl` (mode 0600,
//! created by pgrepl), each with the wall-clock time it was written; and its reader for
//! `pgrepl events`.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::event::Event;
use crate::error::{Result, ResultExt};

/// The log's file name in the cluster directory.
pub const FILE: &str = "events.jsonl";

pub fn path(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join(FILE)
}

/// One line of the log: when, and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    pub fn now(event: Event) -> Record {
        Record {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            event,
        }
    }

    /// `2026-12-01 05:40:01.123  done     pg1  promote: pg1 promoted ...`
    pub fn line(&self) -> String {
        let time = self
            .time
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_string();
        // One line per event: an operation's report of several lines is joined.
        let text = self.event.to_string().replace('\n', "; ");
        format!(
            "{time}  {:<4} {text}",
            self.event.node.as_deref().unwrap_or("-"),
        )
    }
}

/// Appends one event (the file is created 0600 on first use; a line is written at once, so
/// a reader following the file sees whole lines).
pub fn append(cluster_dir: &Path, event: &Event) -> Result<Record> {
    let p = path(cluster_dir);
    let record = Record::now(event.clone());
    let mut line = serde_json::to_string(&record).expect("an event always serializes");
    line.push('\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&p)
        .what(|| format!("cannot open {}", p.display()))?;
    f.write_all(line.as_bytes())
        .what(|| format!("cannot write {}", p.display()))?;
    Ok(record)
}

/// Every record in the log (lines that do not parse are skipped: a line cut by a full disk
/// must not hide the rest), and the offset where the file ended.
pub fn read(cluster_dir: &Path) -> Result<(Vec<Record>, u64)> {
    read_from(cluster_dir, 0)
}

/// The records from byte `offset` on, and the offset after the last whole line.
pub fn read_from(cluster_dir: &Path, offset: u64) -> Result<(Vec<Record>, u64)> {
    let p = path(cluster_dir);
    let mut f = match std::fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e).what(|| format!("cannot read {}", p.display())),
    };
    f.seek(SeekFrom::Start(offset))
        .what(|| format!("cannot read {}", p.display()))?;
    let mut reader = BufReader::new(f);
    let mut out = Vec::new();
    let mut at = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .what(|| format!("cannot read {}", p.display()))?;
        if n == 0 || !line.ends_with('\n') {
            // The end, or a line still being written: read again from its start.
            break;
        }
        at += n as u64;
        if let Ok(r) = serde_json::from_str::<Record>(line.trim_end()) {
            out.push(r);
        }
    }
    Ok((out, at))
}

/// The records in the last `bytes` of the log (for `events -n N` and `status`, which need
/// only the end of a log that grows for as long as the cluster lives).
pub fn tail(cluster_dir: &Path, bytes: u64) -> Result<Vec<Record>> {
    let p = path(cluster_dir);
    let len = std::fs::metadata(&p).map_or(0, |m| m.len());
    let mut start = len.saturating_sub(bytes);
    if start > 0 {
        // From the start of the first whole line after `start`.
        let mut f = std::fs::File::open(&p).what(|| format!("cannot read {}", p.display()))?;
        f.seek(SeekFrom::Start(start - 1))
            .what(|| format!("cannot read {}", p.display()))?;
        let mut skipped = String::new();
        BufReader::new(f)
            .read_line(&mut skipped)
            .what(|| format!("cannot read {}", p.display()))?;
        start = start - 1 + skipped.len() as u64;
    }
    Ok(read_from(cluster_dir, start)?.0)
}

/// The monitor's last decision, if its log has one near its end.
pub fn last_decision(cluster_dir: &Path) -> Option<Record> {
    tail(cluster_dir, 64 * 1024)
        .ok()?
        .into_iter()
        .rev()
        .find(|r| r.event.kind == super::event::EventKind::Decided)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::event::EventKind;

    #[test]
    fn events_round_trip_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let e = Event::new(
            5,
            EventKind::Done,
            "promote",
            Some("pg1"),
            "pg1 promoted".into(),
        )
        .with("timeline", 2);
        append(dir.path(), &e).unwrap();
        let mode = std::fs::metadata(path(dir.path())).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let (records, end) = read(dir.path()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].event, e);
        assert!(records[0].line().contains("done    pg1 promoted"));
        // A line without its newline is not read yet.
        let mut f = OpenOptions::new()
            .append(true)
            .open(path(dir.path()))
            .unwrap();
        f.write_all(b"{\"time\":").unwrap();
        let (more, end2) = read_from(dir.path(), end).unwrap();
        assert!(more.is_empty());
        assert_eq!(end2, end);
    }
}
