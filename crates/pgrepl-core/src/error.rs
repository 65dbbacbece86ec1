use std::path::PathBuf;

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

    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },

    /// A statement that did not finish in time; it was cancelled.
    #[error("{0}")]
    Blocked(Box<crate::ops::sql::Blocked>),

    #[error("cannot read cluster file {path}: {detail}")]
    SpecFile { path: PathBuf, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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

/// The message PostgreSQL itself gave, when there is one: `tokio_postgres::Error`'s Display
/// says only "db error".
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}
