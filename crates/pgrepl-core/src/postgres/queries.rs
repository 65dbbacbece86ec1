//! The SQL pgrepl asks of a node. One query shape per question, so that a node's role and
//! position are always read the same way.

use serde::Serialize;
use tokio_postgres::Row;

use crate::postgres::conn::Conn;

use crate::error::{Result, ResultExt};
use crate::postgres::Lsn;

fn lsn(row: &Row, col: &str) -> Option<Lsn> {
    row.get::<_, Option<String>>(col)
        .and_then(|s| s.parse().ok())
}

/// Where a node is: its role and its WAL positions.
#[derive(Debug, Clone, Serialize)]
pub struct Position {
    pub in_recovery: bool,
    pub server_version_num: i32,
    /// initdb's identifier of the database system (pg_control_system()).
    pub system_id: Option<u64>,
    /// Primary: from the current WAL file's name (pg_control's checkpoint timeline lags
    /// behind for a while after a promotion). Standby: the received timeline, else that of
    /// the newest WAL segment it holds.
    pub timeline: Option<u32>,
    pub current_lsn: Option<Lsn>,
    pub receive_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    pub last_replay_at: Option<String>,
    /// The walreceiver's status (`streaming`, `waiting`, ...), None when there is none.
    pub receiver_status: Option<String>,
    pub sender_host: Option<String>,
    pub sender_port: Option<i32>,
    pub slot_name: Option<String>,
    /// Milliseconds since the walreceiver last heard from its sender
    /// (`last_msg_receipt_time`): a sender that still talks lives.
    pub last_msg_age_ms: Option<f64>,
}

pub async fn position(c: &Conn) -> Result<Position> {
    let row = c
        .query_one(
            "SELECT pg_is_in_recovery() AS rec,
                    current_setting('server_version_num')::int AS ver,
                    (SELECT system_identifier FROM pg_control_system())::text AS sysid,
                    CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END AS cur,
                    CASE WHEN NOT pg_is_in_recovery()
                         THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS cur_tli,
                    pg_last_wal_receive_lsn()::text AS recv,
                    pg_last_wal_replay_lsn()::text AS replay,
                    pg_last_xact_replay_timestamp()::text AS replay_at,
                    (SELECT timeline_id FROM pg_control_checkpoint()) AS ckpt_tli,
                    CASE WHEN pg_is_in_recovery() THEN
                         (SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) FROM pg_ls_waldir()
                          WHERE name ~ '^[0-9A-F]{24}$') END AS wal_tli,
                    r.status, r.received_tli, r.sender_host, r.sender_port, r.slot_name,
                    (extract(epoch FROM clock_timestamp() - r.last_msg_receipt_time) * 1000)::float8 AS msg_age
             FROM (SELECT 1) AS one
             LEFT JOIN pg_stat_wal_receiver r ON true",
            &[],
        )
        .await
        .what(|| "cannot read the node's position".into())?;
    let in_recovery: bool = row.get("rec");
    let timeline = if in_recovery {
        // Without a walreceiver, the newest WAL segment it holds: pg_control's timeline
        // lags until the next restartpoint, which made a standby that had followed a
        // promotion look stuck on the old timeline.
        row.get::<_, Option<i32>>("received_tli")
            .or(row.get::<_, Option<i32>>("wal_tli"))
            .or(row.get::<_, Option<i32>>("ckpt_tli"))
    } else {
        row.get::<_, Option<i32>>("cur_tli")
    };
    Ok(Position {
        in_recovery,
        server_version_num: row.get("ver"),
        system_id: row
            .get::<_, Option<String>>("sysid")
            .and_then(|s| s.parse().ok()),
        timeline: timeline.map(|t| t as u32),
        current_lsn: lsn(&row, "cur"),
        receive_lsn: lsn(&row, "recv"),
        replay_lsn: lsn(&row, "replay"),
        last_replay_at: row.get("replay_at"),
        receiver_status: row.get("status"),
        sender_host: row.get("sender_host"),
        sender_port: row.get("sender_port"),
        slot_name: row.get("slot_name"),
        last_msg_age_ms: row.get("msg_age"),
    })
}

/// One row of `pg_stat_replication`: a standby as its upstream sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Downstream {
    pub application_name: String,
    pub state: Option<String>,
    pub sent_lsn: Option<Lsn>,
    pub write_lsn: Option<Lsn>,
    pub flush_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    pub write_lag_ms: Option<f64>,
    pub flush_lag_ms: Option<f64>,
    pub replay_lag_ms: Option<f64>,
    pub sync_priority: Option<i32>,
    pub sync_state: Option<String>,
}

pub async fn downstreams(c: &Conn) -> Result<Vec<Downstream>> {
    let rows = c
        .query(
            "SELECT application_name, state,
                    sent_lsn::text AS sent, write_lsn::text AS w, flush_lsn::text AS f, replay_lsn::text AS r,
                    (extract(epoch FROM write_lag) * 1000)::float8 AS wl,
                    (extract(epoch FROM flush_lag) * 1000)::float8 AS fl,
                    (extract(epoch FROM replay_lag) * 1000)::float8 AS rl,
                    sync_priority, sync_state
             FROM pg_stat_replication ORDER BY application_name",
            &[],
        )
        .await
        .what(|| "cannot read pg_stat_replication".into())?;
    Ok(rows
        .iter()
        .map(|r| Downstream {
            application_name: r.get("application_name"),
            state: r.get("state"),
            sent_lsn: lsn(r, "sent"),
            write_lsn: lsn(r, "w"),
            flush_lsn: lsn(r, "f"),
            replay_lsn: lsn(r, "r"),
            write_lag_ms: r.get("wl"),
            flush_lag_ms: r.get("fl"),
            replay_lag_ms: r.get("rl"),
            sync_priority: r.get("sync_priority"),
            sync_state: r.get("sync_state"),
        })
        .collect())
}

/// A physical replication slot on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub name: String,
    pub active: bool,
    /// `reserved`, `extended`, `unreserved` (its WAL goes at the next checkpoint) or `lost`
    /// (gone: the standby can no longer stream through it); None for a slot that never
    /// reserved WAL.
    pub wal_status: Option<String>,
}

impl Slot {
    /// Whether the WAL its standby needs is gone, or about to go.
    pub fn losing_wal(&self) -> bool {
        matches!(self.wal_status.as_deref(), Some("unreserved" | "lost"))
    }
}

/// Physical replication slots on a node.
pub async fn slots(c: &Conn) -> Result<Vec<Slot>> {
    let rows = c
        .query(
            "SELECT slot_name::text, active, wal_status FROM pg_replication_slots
             WHERE slot_type = 'physical' ORDER BY 1",
            &[],
        )
        .await
        .what(|| "cannot read pg_replication_slots".into())?;
    Ok(rows
        .iter()
        .map(|r| Slot {
            name: r.get(0),
            active: r.get(1),
            wal_status: r.get(2),
        })
        .collect())
}

/// Creates a physical slot unless it exists. `immediately_reserve` so that WAL from now on is
/// kept for the standby that will use it. A slot that lost its WAL (max_slot_wal_keep_size)
/// can serve nobody any more, not even a fresh clone: it is made again.
pub async fn ensure_slot(c: &Conn, slot: &str) -> Result<bool> {
    let found = c
        .query(
            "SELECT wal_status = 'lost' AND NOT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .what(|| format!("cannot look up slot {slot}"))?;
    match found.first().map(|r| r.get::<_, Option<bool>>(0)) {
        Some(Some(true)) => {
            c.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await
                .what(|| format!("cannot drop slot {slot}, which lost its WAL"))?;
        }
        Some(_) => return Ok(false),
        None => {}
    }
    c.execute(
        "SELECT pg_create_physical_replication_slot($1, true)",
        &[&slot],
    )
    .await
    .what(|| format!("cannot create slot {slot}"))?;
    Ok(true)
}

/// Sessions waiting for synchronous replication, and the oldest wait's age.
pub async fn syncrep_waiters(c: &Conn) -> Result<(i64, Option<f64>)> {
    let row = c
        .query_one(
            "SELECT count(*), (extract(epoch FROM max(now() - state_change)) * 1000)::float8
             FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
            &[],
        )
        .await
        .what(|| "cannot read pg_stat_activity".into())?;
    Ok((row.get(0), row.get(1)))
}

pub async fn show(c: &Conn, setting: &str) -> Result<String> {
    Ok(c.query_one("SELECT current_setting($1)", &[&setting])
        .await
        .what(|| format!("cannot read setting {setting}"))?
        .get(0))
}
