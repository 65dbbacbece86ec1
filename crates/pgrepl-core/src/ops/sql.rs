//! `pgrepl sql NODE "SQL" --timeout`: run a statement; when it does not finish in time, find
//! out what it was waiting on, cancel it, and report everything the server said.

use std::time::Duration;

use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::cluster::Cluster;
pub use crate::error::Blocked;
use crate::error::{pg_message, Error, Result, ResultExt};
use crate::postgres::conn::Conn;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SqlOutput {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows affected by the last command, when it reports any.
    pub affected: Option<u64>,
    /// WARNINGs and NOTICEs the server sent.
    pub notices: Vec<String>,
}

pub async fn run(
    cluster: &Cluster,
    node: &str,
    sql: &str,
    timeout: Option<Duration>,
) -> Result<SqlOutput> {
    let mut session = cluster.connect_session(node).await?;
    let conn = &session.conn;
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .what(|| "cannot read the backend pid".into())?
        .get(0);
    let cancel = conn.cancel_token();
    // The user's statement may rightly run long: only --timeout bounds it.
    let fut = conn.unbounded().simple_query(sql);
    tokio::pin!(fut);
    let result = match timeout {
        None => fut.await,
        Some(t) => match tokio::time::timeout(t, &mut fut).await {
            Ok(r) => r,
            Err(_) => {
                let (wait_event_type, wait_event, explanation) = diagnose(cluster, node, pid).await;
                let _ = cancel.cancel_query(NoTls).await;
                let syncrep = wait_event.as_deref() == Some("SyncRep");
                let cancel_result =
                    match tokio::time::timeout(Duration::from_secs(10), &mut fut).await {
                        Ok(Ok(_)) if syncrep => format!(
                            "the statement completed: its transaction IS committed on {node} (other sessions see it now), but no synchronous standby has confirmed it, so losing {node} now could lose it"
                        ),
                        Ok(Ok(_)) => "the statement completed".to_string(),
                        Ok(Err(e)) => pg_message(&e),
                        Err(_) => "no answer 10 s after the cancel".to_string(),
                    };
                let mut notices = Vec::new();
                while let Ok(n) = session.notices.try_recv() {
                    notices.push(notice_text(&n));
                }
                return Err(Error::Blocked(Box::new(Blocked {
                    node: node.to_string(),
                    after: t,
                    wait_event_type,
                    wait_event,
                    explanation,
                    notices,
                    cancel_result,
                })));
            }
        },
    };
    let messages = result.map_err(|e| Error::Invalid(format!("{node}: {}", pg_message(&e))))?;
    let mut out = SqlOutput::default();
    for m in messages {
        match m {
            SimpleQueryMessage::Row(r) => {
                if out.columns.is_empty() {
                    out.columns = r.columns().iter().map(|c| c.name().to_string()).collect();
                }
                out.rows
                    .push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            SimpleQueryMessage::CommandComplete(n) => out.affected = Some(n),
            _ => {}
        }
    }
    while let Ok(n) = session.notices.try_recv() {
        out.notices.push(notice_text(&n));
    }
    Ok(out)
}

fn notice_text(n: &tokio_postgres::error::DbError) -> String {
    match n.detail() {
        Some(d) => format!("{}: {}\n  DETAIL: {d}", n.severity(), n.message()),
        None => format!("{}: {}", n.severity(), n.message()),
    }
}

/// Looks at the waiting session from a second connection.
async fn diagnose(
    cluster: &Cluster,
    node: &str,
    pid: i32,
) -> (Option<String>, Option<String>, Option<String>) {
    let Ok(c) = cluster.connect(node).await else {
        return (None, None, None);
    };
    let Ok(row) = c
        .query_one(
            "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
    else {
        return (None, None, None);
    };
    let (t, e): (Option<String>, Option<String>) = (row.get(0), row.get(1));
    let explanation = match e.as_deref() {
        Some("SyncRep") => Some(explain_syncrep(cluster, &c, node).await),
        Some("Lock") | Some("relation") | Some("transactionid") | Some("tuple") => {
            Some("it was waiting for a lock held by another session (see pg_locks)".into())
        }
        _ => None,
    };
    (t, e, explanation)
}

/// Why a commit waits for synchronous replication, in words a student can follow.
pub async fn explain_syncrep(cluster: &Cluster, c: &Conn, node: &str) -> String {
    crate::ops::sync::explain_wait(cluster, c, node).await
}
