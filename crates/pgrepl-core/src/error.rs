use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Errors a caller may want to tell apart. Every message is meant for a human: it names the
/// problem and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something invalid; nothing was changed.
    #[error("{0}")]
    Invalid(String),

    /// The cluster is not in a state where the operation can run; nothing was changed.
    #[error("{0}")]
    Precondition(String),

    #[error("no node named '{name}' in the cluster (nodes: {known})")]
    UnknownNode { name: String, known: String },

    #[error("no PostgreSQL {wanted} found: {hint}")]
    NoPostgres { wanted: String, hint: String },

    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A node that does not answer in time (frozen, overloaded, or its machine gone): a
    /// running server always answers within the bound.
    #[error("{node} is not answering: no reply within {} while {doing} (is it frozen, or overloaded?)", humantime::format_duration(*after))]
    NotAnswering {
        node: String,
        doing: String,
        after: std::time::Duration,
    },

    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },

    /// The user interrupted the operation (Ctrl-C); the message says what was left as it was.
    #[error("{0}")]
    Interrupted(String),

    /// A statement that did not finish in time; it was cancelled.
    #[error("{0}")]
    Blocked(Box<Blocked>),

    #[error("cannot read cluster file {path}: {detail}")]
    SpecFile { path: PathBuf, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// PostgreSQL refused the connection because it is starting up, shutting down or still
    /// in recovery before a consistent state (SQLSTATE 57P03).
    pub fn is_starting_up(&self) -> bool {
        matches!(self, Error::Sql { source, .. }
            if source.code() == Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW))
    }
}

/// Attach a human description to io and SQL errors, in the manner of `anyhow::Context`.
pub trait ResultExt<T> {
    fn what(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, std::io::Error> {
    fn what(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}

impl<T> ResultExt<T> for std::result::Result<T, tokio_postgres::Error> {
    fn what(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sql {
            what: what(),
            source,
        })
    }
}

/// For results of pgrepl's own bounded connections: the description replaces the generic one
/// of a failed statement, and says what a node that did not answer was doing.
impl<T> ResultExt<T> for std::result::Result<T, Error> {
    fn what(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| match e {
            Error::Sql { source, .. } => Error::Sql {
                what: what(),
                source,
            },
            Error::NotAnswering { node, after, .. } => Error::NotAnswering {
                node,
                doing: as_attempt(&what()),
                after,
            },
            other => other,
        })
    }
}

/// "cannot read X" -> "trying to read X".
fn as_attempt(what: &str) -> String {
    match what.strip_prefix("cannot ") {
        Some(rest) => format!("trying to {rest}"),
        None => what.to_string(),
    }
}

/// The message PostgreSQL itself gave, when there is one: `tokio_postgres::Error`'s Display
/// says only "db error".
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// A statement that did not finish in time, and what we learned about why.
#[derive(Debug, Clone)]
pub struct Blocked {
    pub node: String,
    pub after: Duration,
    pub wait_event_type: Option<String>,
    pub wait_event: Option<String>,
    /// A plain-language account of the wait, where we can give one.
    pub explanation: Option<String>,
    /// What the server said when the statement was cancelled.
    pub notices: Vec<String>,
    pub cancel_result: String,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wait = match (&self.wait_event_type, &self.wait_event) {
            (Some(t), Some(e)) => format!("{t}:{e}"),
            (None, Some(e)) => e.clone(),
            _ => "nothing (it was running)".into(),
        };
        write!(
            f,
            "the statement on {} did not finish within {} and was cancelled; it was waiting on {wait}",
            self.node,
            humantime::format_duration(self.after)
        )?;
        if let Some(x) = &self.explanation {
            write!(f, "\n{x}")?;
        }
        for n in &self.notices {
            write!(f, "\nPostgreSQL said after the cancel: {n}")?;
        }
        write!(f, "\nafter the cancel: {}", self.cancel_result)
    }
}
