//! Handlers of the failover lifecycle: promote, failover, switchover, rejoin, standby follow.

use std::process::ExitCode;

use anyhow::Result;
use pgrepl_core::cluster::Options;
use pgrepl_core::ops;

use super::{open_locked, print};
use crate::cli::*;
use crate::progress::Spinner;

pub async fn promote(opts: &Options, a: PromoteArgs) -> Result<ExitCode> {
    let (mut cluster, _lock) = open_locked(opts).await?;
    let spinner = Spinner::new();
    let outcome = ops::promote::promote(&mut cluster, &a.node, a.fence, a.force, &spinner).await?;
    drop(spinner);
    print(outcome)
}

pub async fn failover(opts: &Options, a: FailoverArgs) -> Result<ExitCode> {
    let (mut cluster, _lock) = open_locked(opts).await?;
    let spinner = Spinner::new();
    let outcome = ops::failover::failover(&mut cluster, a.to.as_deref(), a.force, &spinner).await?;
    drop(spinner);
    print(outcome)
}

pub async fn switchover(opts: &Options, a: SwitchoverArgs) -> Result<ExitCode> {
    let (mut cluster, _lock) = open_locked(opts).await?;
    let spinner = Spinner::new();
    let outcome = ops::switchover::switchover(&mut cluster, &a.to, &spinner).await?;
    drop(spinner);
    print(outcome)
}

pub async fn rejoin(opts: &Options, a: RejoinArgs) -> Result<ExitCode> {
    let (mut cluster, _lock) = open_locked(opts).await?;
    let spinner = Spinner::new();
    let outcome = ops::rejoin::rejoin(
        &mut cluster,
        &a.node,
        &a.upstream,
        a.slot.as_deref(),
        a.reclone,
        a.force,
        &spinner,
    )
    .await?;
    drop(spinner);
    print(outcome)
}

pub async fn follow(opts: &Options, a: StandbyFollowArgs) -> Result<ExitCode> {
    let (mut cluster, _lock) = open_locked(opts).await?;
    let spinner = Spinner::new();
    let outcome = ops::follow::follow(&mut cluster, &a.node, &a.upstream, &spinner).await?;
    drop(spinner);
    print(outcome)
}
