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
use crate::ops;
use crate::progress::Progress;
use crate::spec::SyncSpec;

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

/// Synchronous replication as the cluster's intent (the spec's `[sync]`, saved), applied to
/// the current primary the way `up` and a failover apply it: a primary named in the list is
/// left out of its own setting rather than refused, so that a drill can restore the original
/// setting wherever the primary ended up.
pub type SyncEnableFn =
    for<'a> fn(&'a Cluster, &'a SyncSpec, &'a dyn Progress) -> BoxFuture<'a, Result<()>>;
pub type SyncDisableFn = for<'a> fn(&'a Cluster, &'a dyn Progress) -> BoxFuture<'a, Result<()>>;

#[derive(Clone, Copy, Default)]
pub struct Operations {
    pub switchover: Option<SwitchoverFn>,
    pub failover: Option<FailoverFn>,
    pub rejoin: Option<RejoinFn>,
    pub sync_enable: Option<SyncEnableFn>,
    pub sync_disable: Option<SyncDisableFn>,
}

/// What this build of pgrepl provides. Each operation runs on a reloaded copy of the
/// cluster: it saves the topology it changes to the cluster file.
pub const AVAILABLE: Operations = Operations {
    switchover: Some(|c, to, p| {
        Box::pin(async move {
            ops::switchover::switchover(&mut c.reloaded()?, to, p)
                .await
                .map(drop)
        })
    }),
    failover: Some(|c, to, p| {
        Box::pin(async move {
            ops::failover::failover(&mut c.reloaded()?, to, false, p)
                .await
                .map(drop)
        })
    }),
    rejoin: Some(|c, node, upstream, p| {
        Box::pin(async move {
            ops::rejoin::rejoin(&mut c.reloaded()?, node, upstream, None, false, false, p)
                .await
                .map(drop)
        })
    }),
    sync_enable: Some(|c, sync, p| {
        Box::pin(async move {
            // An empty request takes everything from the spec's [sync]: set it in memory,
            // and save it only once it was applied.
            let mut c = c.reloaded()?;
            c.spec.sync = Some(sync.clone());
            ops::sync::enable(&mut c, &ops::sync::EnableRequest::default(), p).await?;
            c.save_spec()
        })
    }),
    sync_disable: Some(|c, p| {
        Box::pin(async move { ops::sync::disable(&mut c.reloaded()?, p).await.map(drop) })
    }),
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
