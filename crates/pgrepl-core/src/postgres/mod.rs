//! PostgreSQL itself: where its binaries are, how a server is started and stopped, how we
//! connect, and the SQL we ask it.

pub mod binaries;
pub mod conn;
pub mod lsn;
pub mod queries;
pub mod quote;
pub mod server;
pub mod timeline;

pub use binaries::PgInstall;
pub use lsn::Lsn;
