//! Connections from pgrepl to a node. Passwords come from the cluster's passfile (read into
//! memory here; libpq-based tools are handed the passfile itself).
//!
//! Every exchange is bounded on our side: a frozen server (SIGSTOP, a hung machine) still has
//! its TCP connections accepted by the kernel and its packets acknowledged, so neither the
//! TCP connect timeout nor any server-side setting can notice that nobody answers. A node
//! that does not answer in time is `Error::NotAnswering`, never a hang.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::error::DbError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, CancelToken, Client, Config, NoTls, Row, ToStatement};

use crate::error::{Error, Result};

/// Connecting, the startup and authentication handshake included.
pub const CONNECT_BOUND: Duration = Duration::from_secs(5);
/// One statement of pgrepl's own (reading positions, settings, creating a slot, ...).
pub const QUERY_BOUND: Duration = Duration::from_secs(10);
/// Statements whose work grows with the data (CHECKPOINT, CREATE DATABASE): as long as
/// pg_ctl is given for a start or a stop.
pub const SLOW_BOUND: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct ConnParams {
    /// The node's name, for messages.
    pub node: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub application_name: String,
    /// Bounds the whole connect: TCP, startup, authentication.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node={} host={} port={} user={} dbname={}",
            self.node, self.host, self.port, self.user, self.dbname
        )
    }
}

/// A connection whose statements are each bounded by [`QUERY_BOUND`] (or a bound the caller
/// names for a statement known to be long, such as a CHECKPOINT).
pub struct Conn {
    client: Client,
    node: String,
}

impl Conn {
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The unbounded client, for a statement whose wait the caller bounds itself (the user's
    /// own SQL under `pgrepl sql --timeout`).
    pub fn unbounded(&self) -> &Client {
        &self.client
    }

    pub fn cancel_token(&self) -> CancelToken {
        self.client.cancel_token()
    }

    async fn within<T>(
        &self,
        bound: Duration,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(bound, fut).await {
            Ok(r) => r.map_err(|source| Error::Sql {
                what: format!("a statement on {} failed", self.node),
                source,
            }),
            Err(_) => {
                // A server that is alive but slow would otherwise go on with a statement
                // nobody waits for. The cancel request is itself a connection that a frozen
                // server never answers: it is bounded, and not waited for.
                let token = self.client.cancel_token();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CONNECT_BOUND, token.cancel_query(NoTls)).await;
                });
                Err(Error::NotAnswering {
                    node: self.node.clone(),
                    doing: "a statement".into(),
                    after: bound,
                })
            }
        }
    }

    pub async fn query<T: ?Sized + ToStatement>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.within(QUERY_BOUND, self.client.query(statement, params))
            .await
    }

    pub async fn query_one<T: ?Sized + ToStatement>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row> {
        self.within(QUERY_BOUND, self.client.query_one(statement, params))
            .await
    }

    pub async fn execute<T: ?Sized + ToStatement>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64> {
        self.within(QUERY_BOUND, self.client.execute(statement, params))
            .await
    }

    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        self.within(QUERY_BOUND, self.client.batch_execute(sql))
            .await
    }

    /// A statement that legitimately takes longer than [`QUERY_BOUND`] (CHECKPOINT, CREATE
    /// DATABASE), with its own bound.
    pub async fn batch_execute_within(&self, sql: &str, bound: Duration) -> Result<()> {
        self.within(bound, self.client.batch_execute(sql)).await
    }
}

/// A connection plus the notices (WARNINGs) the server sent on it.
pub struct Session {
    pub conn: Conn,
    pub notices: mpsc::UnboundedReceiver<DbError>,
}

pub async fn connect(p: &ConnParams) -> Result<Conn> {
    Ok(connect_session(p).await?.conn)
}

pub async fn connect_session(p: &ConnParams) -> Result<Session> {
    let mut cfg = Config::new();
    cfg.host(&p.host)
        .port(p.port)
        .user(&p.user)
        .password(&p.password)
        .dbname(&p.dbname)
        .application_name(&p.application_name)
        .connect_timeout(p.connect_timeout);
    let connected = tokio::time::timeout(p.connect_timeout, cfg.connect(NoTls))
        .await
        .map_err(|_| Error::NotAnswering {
            node: p.node.clone(),
            doing: format!("connecting to {}:{}", p.host, p.port),
            after: p.connect_timeout,
        })?;
    let (client, mut connection) = connected.map_err(|source| Error::Sql {
        what: format!("cannot connect to {}:{}", p.host, p.port),
        source,
    })?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(msg) = messages.next().await {
            match msg {
                Ok(AsyncMessage::Notice(n)) => {
                    tracing::debug!(severity = n.severity(), message = n.message(), "notice");
                    let _ = tx.send(n);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "connection closed");
                    break;
                }
            }
        }
    });
    Ok(Session {
        conn: Conn {
            client,
            node: p.node.clone(),
        },
        notices: rx,
    })
}
