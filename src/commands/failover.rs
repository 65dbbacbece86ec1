//! Handlers of the failover lifecycle: promote, failover, switchover, rejoin, standby follow.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use pgrepl_core::cluster::{Cluster, Options};
use pgrepl_core::observe;
use pgrepl_core::ops::{self, Outcome};
use pgrepl_core::progress::Progress;
use serde_json::Value;

use super::{open_locked, print};
use crate::cli::*;
use crate::progress::{Collect, Spinner};
use crate::report::{CommandReport, NodeReport};

/// The figures each command's JSON always has (null when unknown or not applicable), so that
/// a script finds the same keys whatever path the command took.
const PROMOTE: &[&str] = &[
    "old_primary",
    "new_primary",
    "timeline",
    "promote_ms",
    "fenced",
    "fence_ms",
];
const FAILOVER: &[&str] = &[
    "old_primary",
    "new_primary",
    "reason",
    "timeline",
    "fenced",
    "fence_ms",
    "promote_ms",
    "repointed",
    "repoint_ms",
];
const SWITCHOVER: &[&str] = &[
    "old_primary",
    "new_primary",
    "timeline",
    "checkpoint_ms",
    "writes_unavailable_ms",
    "stop_ms",
    "catch_up_ms",
    "promote_ms",
];
const REJOIN: &[&str] = &[
    "node",
    "upstream",
    "timeline",
    "method",
    "rewind_ms",
    "fork_lsn",
    "discarded_wal_bytes",
    "discarded_transactions",
    "discarded_row_changes",
];
const FOLLOW: &[&str] = &["node", "upstream"];

/// Where a command's progress goes: the terminal, or the JSON report.
enum Output {
    Human(Spinner),
    Json(Collect),
}

impl Output {
    fn new(json: bool) -> Self {
        if json {
            Output::Json(Collect::default())
        } else {
            Output::Human(Spinner::new())
        }
    }

    fn progress(&self) -> &dyn Progress {
        match self {
            Output::Human(s) => s,
            Output::Json(c) => c,
        }
    }

    /// Prints the outcome: its lines, or one JSON object with the figures the operation
    /// reported and the nodes it acted on as `status` shows them now.
    async fn finish(
        self,
        cluster: &Cluster,
        command: &str,
        keys: &[&str],
        started: Instant,
        outcome: Outcome,
    ) -> Result<ExitCode> {
        let collected = match self {
            Output::Human(spinner) => {
                drop(spinner);
                return print(outcome);
            }
            Output::Json(c) => c,
        };
        let figures = collected.figures.into_inner().expect("not poisoned");
        let status = observe::status::status(cluster).await;
        let mut r = CommandReport::new(command, started);
        r.changed = outcome.changed();
        r.message = outcome.message().to_string();
        r.warnings = status.warnings.clone();
        r.notes = collected.notes.into_inner().expect("not poisoned");
        for k in keys {
            r.figures.insert(k.to_string(), Value::Null);
        }
        // What each named node had done to it; a node named twice keeps its first word.
        let roles = [
            ("new_primary", "promoted"),
            ("node", command_word(command)),
            ("old_primary", "replaced as primary"),
            ("repointed", "repointed"),
            ("fenced", "fenced"),
        ];
        for (key, word) in roles {
            let names: Vec<String> = match figures.get(key) {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            for n in names {
                if r.nodes.iter().all(|x| x.node != n) {
                    let word = if outcome.changed() { word } else { "unchanged" };
                    r.nodes
                        .push(NodeReport::acted_on(&n, &outcome, word, &status, None));
                }
            }
        }
        r.figures.extend(figures);
        r.print()
    }
}

fn command_word(command: &str) -> &'static str {
    match command {
        "rejoin" => "rejoined",
        "standby follow" => "repointed",
        _ => "acted on",
    }
}

pub async fn promote(opts: &Options, a: PromoteArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let (mut cluster, _lock) = open_locked(opts).await?;
    let out = Output::new(a.json);
    let outcome =
        ops::promote::promote(&mut cluster, &a.node, a.fence, a.force, out.progress()).await?;
    out.finish(&cluster, "promote", PROMOTE, started, outcome)
        .await
}

pub async fn failover(opts: &Options, a: FailoverArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let (mut cluster, _lock) = open_locked(opts).await?;
    let out = Output::new(a.json);
    let outcome =
        ops::failover::failover(&mut cluster, a.to.as_deref(), a.force, out.progress()).await?;
    out.finish(&cluster, "failover", FAILOVER, started, outcome)
        .await
}

pub async fn switchover(opts: &Options, a: SwitchoverArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let (mut cluster, _lock) = open_locked(opts).await?;
    let out = Output::new(a.json);
    let outcome = ops::switchover::switchover(&mut cluster, &a.to, out.progress()).await?;
    out.finish(&cluster, "switchover", SWITCHOVER, started, outcome)
        .await
}

pub async fn rejoin(opts: &Options, a: RejoinArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let (mut cluster, _lock) = open_locked(opts).await?;
    let out = Output::new(a.json);
    let outcome = ops::rejoin::rejoin(
        &mut cluster,
        &a.node,
        &a.upstream,
        a.slot.as_deref(),
        a.reclone,
        a.force,
        out.progress(),
    )
    .await?;
    out.finish(&cluster, "rejoin", REJOIN, started, outcome)
        .await
}

pub async fn follow(opts: &Options, a: StandbyFollowArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let (mut cluster, _lock) = open_locked(opts).await?;
    let out = Output::new(a.json);
    let outcome = ops::follow::follow(&mut cluster, &a.node, &a.upstream, out.progress()).await?;
    out.finish(&cluster, "standby follow", FOLLOW, started, outcome)
        .await
}
