//! `pgrepl monitor`. Pure parts: the decision from observations to actions ([`decide`]),
//! the health endpoints for load balancers ([`http`]), Prometheus metrics ([`metrics`]) and
//! an HAProxy configuration ([`haproxy`]). The loop around them ([`run`]) observes the
//! cluster ([`observer`]), carries the actions out ([`executor`]) and writes the event log
//! ([`events_log`]); only those three do I/O on the cluster.

pub mod action;
pub mod candidates;
pub mod decide;
pub mod event;
pub mod events_log;
pub mod executor;
pub mod haproxy;
pub mod health;
pub mod http;
pub mod intent;
pub mod metrics;
pub mod observation;
pub mod observer;
pub mod run;

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
