//! The drill's workload: W concurrent clients inserting `(writer, seq, sent_at)` rows at a
//! target rate, each connected through every node with `target_session_attrs=read-write`
//! the way an application would be, and reconnecting on error. Every acknowledged commit and
//! every error is recorded with its time, so that what clients saw can be measured afterwards.
//!
//! Benchmarks use it too (the switchover write gap): `Writer::start`, then `handle.stop()`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::cluster::Cluster;
use crate::error::{pg_message, Error, Result, ResultExt};
use crate::secrets::SUPERUSER;

/// The table the drill writes. Rows are never updated: a row is there or it is not.
pub const TABLE: &str = "pgrepl_drill";

#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Concurrent clients, each with its own connection.
    pub writers: usize,
    /// Target commits per second, all writers together; None writes as fast as it can.
    pub rate: Option<f64>,
    /// Per host: a dead or frozen node must not hold a reconnect for long.
    pub connect_timeout: Duration,
    /// The instant times in the log are counted from (the drill's start).
    pub origin: Instant,
    /// Empty the drill table first, so that a run's checks see only its own rows.
    pub truncate: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            writers: 4,
            rate: Some(200.0),
            connect_timeout: Duration::from_millis(500),
            origin: Instant::now(),
            truncate: true,
        }
    }
}

/// An acknowledged commit: COMMIT returned success to the client.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ack {
    pub writer: i32,
    pub seq: i64,
    /// When the INSERT was sent, from the origin.
    #[serde(serialize_with = "crate::drill::ser_ms")]
    pub sent: Duration,
    /// When its success came back, from the origin.
    #[serde(serialize_with = "crate::drill::ser_ms")]
    pub at: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// No read-write node could be connected to: nothing was sent.
    Connect,
    /// An INSERT was sent and failed (its outcome on the server is unknown).
    Write,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WriteError {
    pub writer: i32,
    pub kind: ErrorKind,
    /// The row the failed INSERT carried (None for a connect error).
    pub seq: Option<i64>,
    #[serde(serialize_with = "crate::drill::ser_ms")]
    pub at: Duration,
    pub message: String,
}

/// Everything the writers saw, each list ordered by time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteLog {
    pub acks: Vec<Ack>,
    pub errors: Vec<WriteError>,
}

impl WriteLog {
    pub fn failed_writes(&self) -> usize {
        self.errors
            .iter()
            .filter(|e| e.kind == ErrorKind::Write)
            .count()
    }
}

pub struct Writer;

pub struct WriterHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<WriteLog>>,
    progress: Arc<Shared>,
    origin: Instant,
}

/// What the running writers publish for whoever waits on them.
#[derive(Default)]
struct Shared {
    acks: AtomicU64,
    /// Nanoseconds from the origin of the latest acknowledgement, 0 before the first.
    last_ack_ns: AtomicU64,
}

impl Writer {
    /// Creates the drill table on the primary if missing (emptied when `opts.truncate`), then
    /// starts the writers. Returns once the table is ready; the writers connect on their own.
    pub async fn start(cluster: &Cluster, opts: WriterOptions) -> Result<WriterHandle> {
        if opts.writers == 0 {
            return Err(Error::Invalid(
                "the workload needs at least one writer: pass --writers 1 or more".into(),
            ));
        }
        if opts.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(Error::Invalid(
                "the write rate must be a positive number of commits per second (e.g. --rate 200)"
                    .into(),
            ));
        }
        let config = config(cluster, &opts)?;
        let (client, _conn) = connect(&config).await.map_err(|e| {
            Error::Precondition(format!(
                "the drill workload cannot reach a read-write node ({}): start the primary (`pgrepl up`)",
                pg_message(&e)
            ))
        })?;
        let mut ddl = format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (writer int NOT NULL, seq bigint NOT NULL, \
             sent_at timestamptz NOT NULL, PRIMARY KEY (writer, seq));"
        );
        if opts.truncate {
            ddl += &format!("TRUNCATE {TABLE};");
        }
        client
            .batch_execute(&ddl)
            .await
            .what(|| format!("cannot prepare the drill table {TABLE}"))?;
        drop(client);

        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared::default());
        // Each writer runs at its share of the rate.
        let interval = opts
            .rate
            .map(|r| Duration::from_secs_f64(opts.writers as f64 / r));
        let tasks = (0..opts.writers)
            .map(|w| {
                let task = WriterTask {
                    id: w as i32,
                    config: config.clone(),
                    interval,
                    origin: opts.origin,
                    shared: shared.clone(),
                };
                tokio::spawn(task.run(stopped.clone()))
            })
            .collect();
        Ok(WriterHandle {
            stop,
            tasks,
            progress: shared,
            origin: opts.origin,
        })
    }
}

impl WriterHandle {
    /// Acknowledged commits so far.
    pub fn acked(&self) -> u64 {
        self.progress.acks.load(Ordering::Relaxed)
    }

    /// Time (from the origin) of the latest acknowledged commit.
    pub fn last_ack(&self) -> Option<Duration> {
        match self.progress.last_ack_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Stops every writer (an INSERT still in flight is abandoned: it was not acknowledged)
    /// and returns what they saw, ordered by time.
    pub async fn stop(self) -> WriteLog {
        let _ = self.stop.send(true);
        let mut log = WriteLog::default();
        for t in self.tasks {
            if let Ok(part) = t.await {
                log.acks.extend(part.acks);
                log.errors.extend(part.errors);
            }
        }
        log.acks.sort_by_key(|a| a.at);
        log.errors.sort_by_key(|e| e.at);
        log
    }
}

/// A multi-host configuration over every node of the cluster: libpq's
/// `host=a,b,c target_session_attrs=read-write`, so that the client finds the primary
/// wherever it is.
fn config(cluster: &Cluster, opts: &WriterOptions) -> Result<Config> {
    let secrets = cluster.secrets()?;
    let mut cfg = Config::new();
    for n in &cluster.spec.nodes {
        let at = cluster.runtime.client_endpoint(n);
        cfg.host(&at.host).port(at.port);
    }
    cfg.user(SUPERUSER)
        .password(secrets.superuser.as_str())
        .dbname("postgres")
        .application_name("pgrepl-drill")
        .connect_timeout(opts.connect_timeout)
        .target_session_attrs(TargetSessionAttrs::ReadWrite);
    Ok(cfg)
}

async fn connect(
    config: &Config,
) -> std::result::Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    let conn = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, conn))
}

struct WriterTask {
    id: i32,
    config: Config,
    interval: Option<Duration>,
    origin: Instant,
    shared: Arc<Shared>,
}

/// Reconnect delays: short enough to see recovery within tens of milliseconds, long enough
/// that W writers retrying against every standby do not swamp a 2-core machine with SCRAM
/// handshakes.
const RETRY_MIN: Duration = Duration::from_millis(5);
const RETRY_MAX: Duration = Duration::from_millis(50);

impl WriterTask {
    async fn run(self, mut stopped: watch::Receiver<bool>) -> WriteLog {
        let mut log = WriteLog::default();
        let mut session: Option<(Client, Statement)> = None;
        let mut seq: i64 = 0;
        let mut retry = RETRY_MIN;
        let mut next = Instant::now();
        while !*stopped.borrow() {
            if session.is_none() {
                match self.open().await {
                    Ok(s) => {
                        session = Some(s);
                        retry = RETRY_MIN;
                    }
                    Err(e) => {
                        log.errors.push(self.error(ErrorKind::Connect, None, &e));
                        tokio::select! {
                            _ = tokio::time::sleep(retry) => {}
                            _ = stopped.changed() => break,
                        }
                        retry = (retry * 2).min(RETRY_MAX);
                        continue;
                    }
                }
            }
            if let Some(interval) = self.interval {
                // Keep the pace, but after an outage do not burst to catch up: clients that
                // could not write simply wrote less.
                let now = Instant::now();
                if next + interval < now {
                    next = now;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => {}
                    _ = stopped.changed() => break,
                }
                next += interval;
            }
            let Some((client, stmt)) = &session else {
                continue;
            };
            seq += 1;
            let sent = self.origin.elapsed();
            let sent_at = std::time::SystemTime::now();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                [&self.id, &seq, &sent_at];
            let result = tokio::select! {
                r = client.execute(stmt, &params) => r,
                // Abandoned in flight: not acknowledged, so not claimed.
                _ = stopped.changed() => break,
            };
            match result {
                Ok(_) => {
                    let at = self.origin.elapsed();
                    log.acks.push(Ack {
                        writer: self.id,
                        seq,
                        sent,
                        at,
                    });
                    self.shared.acks.fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .last_ack_ns
                        .fetch_max(at.as_nanos() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    log.errors.push(self.error(ErrorKind::Write, Some(seq), &e));
                    // The session may be fine (a constraint error, a cancelled statement) but
                    // it is usually gone: reconnecting is always safe.
                    session = None;
                }
            }
        }
        log
    }

    async fn open(&self) -> std::result::Result<(Client, Statement), tokio_postgres::Error> {
        let (client, _conn) = connect(&self.config).await?;
        let stmt = client
            .prepare(&format!(
                "INSERT INTO {TABLE} (writer, seq, sent_at) VALUES ($1, $2, $3)"
            ))
            .await?;
        Ok((client, stmt))
    }

    fn error(&self, kind: ErrorKind, seq: Option<i64>, e: &tokio_postgres::Error) -> WriteError {
        WriteError {
            writer: self.id,
            kind,
            seq,
            at: self.origin.elapsed(),
            message: pg_message(e),
        }
    }
}
