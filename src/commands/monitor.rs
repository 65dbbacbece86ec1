//! `pgrepl monitor` and `pgrepl events`: parse, start the library's loop, print.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use pgrepl_core::cluster::Options;
use pgrepl_core::monitor::{events_log, run};

use crate::cli::{EventsArgs, MonitorArgs};

pub async fn monitor(opts: &Options, a: MonitorArgs) -> Result<ExitCode> {
    let cluster = super::open(opts).await?;
    let options = run::Options {
        interval: a.interval,
        failover_timeout: a.failover_timeout,
        http: a.http,
        http_base_port: a.http_base_port,
        http_host: Some(a.http_host),
    };
    // Each event as one line on stdout, as it happens (tracing's logs go to stderr).
    let emit: run::Emit = Arc::new(|r: &events_log::Record| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", r.line());
        let _ = out.flush();
    });
    run::run(cluster, options, shutdown(), emit).await?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub async fn events(opts: &Options, a: EventsArgs) -> Result<ExitCode> {
    let spec = pgrepl_core::spec::ClusterSpec::load(&opts.config)?;
    let dir = pgrepl_core::cluster::cluster_dir(&spec, &opts.config);
    let show = |r: &events_log::Record| {
        if a.json {
            serde_json::to_string(r).expect("a record serializes")
        } else {
            r.line()
        }
    };
    let (mut records, mut offset) = events_log::read(&dir)?;
    if let Some(n) = a.last {
        let skip = records.len().saturating_sub(n);
        records.drain(..skip);
    }
    if records.is_empty() && !a.follow && !a.json {
        println!(
            "no events yet: `pgrepl monitor` writes them to {}",
            events_log::path(&dir).display()
        );
    }
    for r in &records {
        println!("{}", show(r));
    }
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        let (more, next) = events_log::read_from(&dir, offset)?;
        for r in &more {
            println!("{}", show(r));
        }
        offset = next;
    }
}
