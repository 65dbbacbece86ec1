//! Reading a cluster's state back from PostgreSQL: roles, timelines, positions, lag.

pub mod authority;
pub mod lineage;
pub mod slot_health;
pub mod status;
pub mod topology;
pub mod twins;

pub use status::{ClusterStatus, NodeStatus};
