//! `pgrepl monitor`'s pure parts: the decision from observations to actions ([`decide`]),
//! the health endpoints for load balancers ([`http`]), Prometheus metrics ([`metrics`]) and
//! an HAProxy configuration ([`haproxy`]). The loop that observes the cluster and carries
//! the actions out drives them; nothing here does I/O on the cluster.

pub mod action;
pub mod candidates;
pub mod decide;
pub mod event;
pub mod haproxy;
pub mod health;
pub mod http;
pub mod intent;
pub mod metrics;
pub mod observation;

#[cfg(test)]
mod decide_tests;
#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod sim;

pub use action::Action;
pub use decide::{decide, MonitorState};
pub use event::{Event, EventKind};
pub use health::Snapshot;
pub use intent::{Intent, NodeIntent, OnSyncLoss, Timing};
pub use observation::{Downstream, NodeObs, Observation, Process, Receiver, Role, Slot};
