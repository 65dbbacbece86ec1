//! `pgrepl net ...`, `pgrepl freeze`/`thaw`, and the hidden delayer process.

use std::process::ExitCode;

use anyhow::Result;
use pgrepl_core::cluster::Options;
use pgrepl_core::ops;
use pgrepl_core::runtime::netfault::delayer;

use crate::cli::{NetCmd, NetDelayerArgs};

pub async fn run(opts: &Options, cmd: NetCmd) -> Result<ExitCode> {
    if let NetCmd::Show { json } = cmd {
        let cluster = super::open(opts).await?;
        let faults = ops::net::show(&cluster).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&faults)?);
        } else {
            for n in &faults {
                println!(
                    "{:<8} {}",
                    n.node,
                    crate::render::faults(n.frozen, &n.faults)
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (cluster, _lock) = super::open_locked(opts).await?;
    let outcomes = match cmd {
        NetCmd::Partition(a) => {
            vec![ops::net::partition(&cluster, &a.node, &a.from, a.no_host).await?]
        }
        NetCmd::Delay(a) => {
            vec![ops::net::delay(&cluster, &a.node, &a.delay, a.jitter.as_deref()).await?]
        }
        NetCmd::Loss(a) => vec![ops::net::loss(&cluster, &a.node, &a.percent).await?],
        NetCmd::Heal(a) => ops::net::heal(&cluster, a.node.as_deref()).await?,
        NetCmd::Show { .. } => unreachable!("handled above"),
    };
    for o in outcomes {
        println!("{}", o.message());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn freeze(opts: &Options, node: &str, frozen: bool) -> Result<ExitCode> {
    let (cluster, _lock) = super::open_locked(opts).await?;
    super::print(ops::net::freeze(&cluster, node, frozen).await?)
}

/// The delayer process: runs until SIGTERM.
pub fn delayer(a: &NetDelayerArgs) -> ExitCode {
    let d = delayer::Delay {
        queue: a.queue,
        delay: a.delay,
        jitter: a.jitter,
    };
    match delayer::run_process(&a.netns, &d) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: delayer in {}: {e}", a.netns);
            ExitCode::FAILURE
        }
    }
}
