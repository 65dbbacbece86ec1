//! pgrepl: build, operate and drill PostgreSQL streaming-replication clusters.
//!
//! The crate is laid out the way a cluster is: the [`spec`] says what the cluster should be,
//! [`postgres`] knows PostgreSQL itself (binaries, server control, SQL), [`runtime`] knows where
//! a node lives (its processes, its addresses; behind one trait), [`node`] is one node's server
//! as operations see it, [`ops`] changes the
//! cluster, and [`observe`] reads its state back from PostgreSQL. Nothing about a node's role is
//! stored by pgrepl: it is always asked of PostgreSQL.

pub mod bench;
pub mod cluster;
pub mod cluster_dir;
pub mod crashpoint;
pub mod drill;
pub mod error;
pub mod monitor;
pub mod node;
pub mod observe;
pub mod ops;
pub mod postgres;
pub mod progress;
pub mod runtime;
pub mod secrets;
pub mod spec;

pub use cluster::Cluster;
pub use error::{Error, Result};
