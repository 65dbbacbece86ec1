//! Connections from pgrepl to a node. Passwords come from the cluster's passfile (read into
//! memory here; libpq-based tools are handed the passfile itself).

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::error::DbError;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct ConnParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub application_name: String,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host={} port={} user={} dbname={}",
            self.host, self.port, self.user, self.dbname
        )
    }
}

/// A connection plus the notices (WARNINGs) the server sent on it.
pub struct Session {
    pub client: Client,
    pub notices: mpsc::UnboundedReceiver<DbError>,
}

pub async fn connect(p: &ConnParams) -> Result<Client> {
    Ok(connect_session(p).await?.client)
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
    // connect_timeout bounds the TCP connect only: a frozen server's kernel still accepts
    // the connection, and the startup exchange would then wait forever.
    let limit = p.connect_timeout * 2;
    let (client, mut connection) = tokio::time::timeout(limit, cfg.connect(NoTls))
        .await
        .map_err(|_| Error::Timeout {
            what: format!(
                "{}:{} to answer (the connection was accepted, but the server says nothing: frozen?)",
                p.host, p.port
            ),
            after: limit,
        })?
        .map_err(|source| Error::Sql {
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
        client,
        notices: rx,
    })
}
