//! The operations of other parts of pgrepl that some drill events need: switchover,
//! failover and rejoin (the failover lifecycle), sync enable/disable (synchronous
//! replication). They are a table of functions so that the drill does not depend on where
//! they live; an event whose operation is missing refuses to start, changing nothing.
//!
//! Wiring an operation is one line in [`AVAILABLE`], e.g.
//! `switchover: Some(|c, to, p| Box::pin(async move { ops::switchover::switchover(c, to, p).await.map(drop) }))`.

use futures::future::BoxFuture;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Planned switchover to the standby `to`; returns once `to` is the primary and the old
/// primary follows it.
pub type SwitchoverFn =
    for<'a> fn(&'a Cluster, &'a str, &'a dyn Progress) -> BoxFuture<'a, Result<()>>;

/// Failover after the primary was lost: promote `to` (the best candidate when None) and
/// point the other running standbys at it.
pub type FailoverFn =
    for<'a> fn(&'a Cluster, Option<&'a str>, &'a dyn Progress) -> BoxFuture<'a, Result<()>>;

/// Turn `node` (a failed or demoted primary) into a streaming standby of `upstream`.
pub type RejoinFn =
    for<'a> fn(&'a Cluster, &'a str, &'a str, &'a dyn Progress) -> BoxFuture<'a, Result<()>>;

/// Synchronous replication on the current primary: `synchronous_standby_names` as given
/// (`FIRST 1 (sync2, sync3)`), or off.
pub type SyncEnableFn =
    for<'a> fn(&'a Cluster, &'a str, &'a dyn Progress) -> BoxFuture<'a, Result<()>>;
pub type SyncDisableFn = for<'a> fn(&'a Cluster, &'a dyn Progress) -> BoxFuture<'a, Result<()>>;

#[derive(Clone, Copy, Default)]
pub struct Operations {
    pub switchover: Option<SwitchoverFn>,
    pub failover: Option<FailoverFn>,
    pub rejoin: Option<RejoinFn>,
    pub sync_enable: Option<SyncEnableFn>,
    pub sync_disable: Option<SyncDisableFn>,
}

/// What this build of pgrepl provides. The failover lifecycle and sync enable/disable are
/// wired here once they are merged.
pub const AVAILABLE: Operations = Operations {
    switchover: None,
    failover: None,
    rejoin: None,
    sync_enable: None,
    sync_disable: None,
};

impl Operations {
    pub fn switchover(&self) -> Result<SwitchoverFn> {
        self.switchover.ok_or_else(|| missing("switchover"))
    }
    pub fn failover(&self) -> Result<FailoverFn> {
        self.failover.ok_or_else(|| missing("failover"))
    }
    pub fn rejoin(&self) -> Result<RejoinFn> {
        self.rejoin.ok_or_else(|| missing("rejoin"))
    }
    pub fn sync_enable(&self) -> Result<SyncEnableFn> {
        self.sync_enable.ok_or_else(|| missing("sync enable"))
    }
    pub fn sync_disable(&self) -> Result<SyncDisableFn> {
        self.sync_disable.ok_or_else(|| missing("sync disable"))
    }
}

fn missing(op: &str) -> Error {
    Error::Precondition(format!(
        "this drill needs `pgrepl {op}`, which is not available yet in this build: use the crash or freeze drill meanwhile"
    ))
}
