//! `pgrepl net ...`, `pgrepl freeze`/`thaw`: faults injected into one node, through the
//! runtime, and read back from it. Every input is checked before anything changes.

use std::time::Duration;

use serde::Serialize;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::ops::Outcome;
use crate::runtime::{NetFault, ProcessState};

/// How `--from` names the host (pgrepl itself, and every client on this machine).
pub const HOST: &str = "host";

/// The longest delay accepted: the delayer holds every packet that long, in memory.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// A duration of the command line ("50ms", "1s"), more than zero and at most 10 s.
pub fn parse_delay(what: &str, text: &str, zero_ok: bool) -> Result<Duration> {
    let bad = |why: &str| {
        Error::Invalid(format!(
            "invalid {what} '{text}': {why} (e.g. 50ms, at most {})",
            humantime::format_duration(MAX_DELAY)
        ))
    };
    let d = humantime::parse_duration(text.trim()).map_err(|_| bad("give a positive duration"))?;
    if d.is_zero() && !zero_ok {
        return Err(bad("it must be more than 0"));
    }
    if d > MAX_DELAY {
        return Err(bad("too long"));
    }
    Ok(d)
}

/// A share of packets ("5%" or "5"), above 0 and at most 100.
pub fn parse_percent(text: &str) -> Result<f32> {
    let p: Option<f32> = text.trim().trim_end_matches('%').trim().parse().ok();
    match p {
        Some(p) if p.is_finite() && p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(Error::Invalid(format!(
            "invalid loss '{text}': give a share above 0% and at most 100%, e.g. 5%"
        ))),
    }
}

/// What `--from` asks for: node names (checked), and the host.
fn partition_of(cluster: &Cluster, node: &str, from: &[String], no_host: bool) -> Result<NetFault> {
    if from.is_empty() {
        return Ok(NetFault::Partition {
            from: Vec::new(),
            host: !no_host,
        });
    }
    let mut nodes = Vec::new();
    let mut host = false;
    for name in from {
        if name == HOST {
            host = true;
            continue;
        }
        cluster.node(name)?;
        if name == node {
            return Err(Error::Invalid(format!(
                "{node} cannot be partitioned from itself: name other nodes in --from"
            )));
        }
        if !nodes.contains(name) {
            nodes.push(name.clone());
        }
    }
    if nodes.is_empty() {
        // Only `host` named: `from: []` would mean every node.
        return if no_host {
            Err(Error::Invalid(format!(
                "--from host with --no-host leaves nothing to cut {node} off from: drop one of them"
            )))
        } else {
            Ok(NetFault::HostPartition)
        };
    }
    Ok(NetFault::Partition {
        from: nodes,
        host: host && !no_host,
    })
}

fn list(faults: &[NetFault]) -> String {
    faults
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies `fault` to `node` after the checks every fault shares; AlreadyDone when the
/// kernel shows the same faults before and after.
async fn apply(cluster: &Cluster, node: &str, fault: NetFault) -> Result<Outcome> {
    let spec = cluster.node(node)?;
    cluster.runtime.check_network_faults()?;
    let before = cluster.runtime.faults(spec).await?;
    cluster.runtime.apply_fault(spec, &fault).await?;
    let after = cluster.runtime.faults(spec).await?;
    if before == after {
        return Ok(Outcome::AlreadyDone(format!(
            "{node} already has it: {}",
            list(&after)
        )));
    }
    Ok(Outcome::Done(format!("{node}: {}", list(&after))))
}

/// Cuts `node` off (both directions) from the nodes in `from` and the host; with no `from`,
/// from every other node and from the host unless `no_host`.
pub async fn partition(
    cluster: &Cluster,
    node: &str,
    from: &[String],
    no_host: bool,
) -> Result<Outcome> {
    cluster.node(node)?;
    let fault = partition_of(cluster, node, from, no_host)?;
    if matches!(&fault, NetFault::Partition { from, host: false } if from.is_empty())
        && cluster.spec.nodes.len() < 2
    {
        return Err(Error::Invalid(format!(
            "{node} has no other node to be partitioned from"
        )));
    }
    apply(cluster, node, fault).await
}

/// Delays every packet `node` sends by `delay` ± `jitter` (replacing an earlier delay).
pub async fn delay(
    cluster: &Cluster,
    node: &str,
    delay: &str,
    jitter: Option<&str>,
) -> Result<Outcome> {
    let delay = parse_delay("delay", delay, false)?;
    let jitter = match jitter {
        Some(j) => parse_delay("jitter", j, true)?,
        None => Duration::ZERO,
    };
    if jitter > delay {
        return Err(Error::Invalid(format!(
            "--jitter {} is larger than the delay {}: a packet cannot leave before it was sent; give at most the delay",
            humantime::format_duration(jitter),
            humantime::format_duration(delay)
        )));
    }
    apply(cluster, node, NetFault::Delay { delay, jitter }).await
}

/// Drops `percent` of the packets `node` sends (replacing an earlier loss).
pub async fn loss(cluster: &Cluster, node: &str, percent: &str) -> Result<Outcome> {
    let percent = parse_percent(percent)?;
    apply(cluster, node, NetFault::Loss { percent }).await
}

/// Removes every network fault of `node`, or of every node.
pub async fn heal(cluster: &Cluster, node: Option<&str>) -> Result<Vec<Outcome>> {
    let nodes = match node {
        Some(n) => vec![cluster.node(n)?.clone()],
        None => cluster.spec.nodes.clone(),
    };
    cluster.runtime.check_network_faults()?;
    let mut out = Vec::new();
    for n in &nodes {
        let before = cluster.runtime.faults(n).await?;
        cluster.runtime.heal(n).await?;
        out.push(if before.is_empty() {
            Outcome::AlreadyDone(format!("{} has no network fault", n.name))
        } else {
            Outcome::Done(format!("{}: healed ({} removed)", n.name, list(&before)))
        });
    }
    Ok(out)
}

/// A node's faults now.
#[derive(Debug, Clone, Serialize)]
pub struct NodeFaults {
    pub node: String,
    pub frozen: bool,
    pub faults: Vec<NetFault>,
}

pub async fn show(cluster: &Cluster) -> Result<Vec<NodeFaults>> {
    let mut out = Vec::new();
    for n in &cluster.spec.nodes {
        out.push(NodeFaults {
            node: n.name.clone(),
            frozen: cluster.runtime.state(n).await? == ProcessState::Frozen,
            faults: cluster.runtime.faults(n).await?,
        });
    }
    Ok(out)
}

/// Refuses, before anything changes, an operation that needs `a` and `b` to talk (a standby
/// streaming from its upstream) while a partition injected on either cuts them apart: it
/// would only fail after its changes, at its timeout. `doing` says what was asked.
pub async fn refuse_partitioned(cluster: &Cluster, a: &str, b: &str, doing: &str) -> Result<()> {
    for (on, other) in [(a, b), (b, a)] {
        // A runtime that cannot tell has no faults to name; the operation's own waits remain.
        let faults = cluster
            .runtime
            .faults(cluster.node(on)?)
            .await
            .unwrap_or_default();
        let cut = faults.iter().find(|f| {
            matches!(f, NetFault::Partition { from, .. } if from.is_empty() || from.iter().any(|n| n == other))
        });
        if let Some(f) = cut {
            return Err(Error::Precondition(format!(
                "cannot {doing}: {a} and {b} cannot reach each other ({on} is {f}); end the partition first with `pgrepl net heal {on}`"
            )));
        }
    }
    Ok(())
}

/// Stops (SIGSTOP, or the runtime's equivalent) or resumes every process of `node`.
pub async fn freeze(cluster: &Cluster, node: &str, frozen: bool) -> Result<Outcome> {
    let spec = cluster.node(node)?;
    let (verb, done) = if frozen {
        ("freeze", "frozen")
    } else {
        ("thaw", "thawed")
    };
    match cluster.runtime.state(spec).await? {
        ProcessState::Stopped => {
            return Err(Error::Precondition(format!(
                "{node} is not running: nothing to {verb}"
            )))
        }
        ProcessState::Frozen if frozen => {
            return Ok(Outcome::AlreadyDone(format!("{node} is already frozen")))
        }
        ProcessState::Running if !frozen => {
            return Ok(Outcome::AlreadyDone(format!("{node} is not frozen")))
        }
        _ => {}
    }
    if !cluster.runtime.freeze(spec, frozen).await? {
        return Err(Error::Precondition(format!(
            "{node} stopped meanwhile: nothing to {verb}"
        )));
    }
    Ok(Outcome::Done(if frozen {
        format!("{node} {done}: every process stopped; `pgrepl thaw {node}` resumes it")
    } else {
        format!("{node} {done}")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_shares_and_durations_are_named() {
        assert_eq!(parse_percent("5%").unwrap(), 5.0);
        assert_eq!(parse_percent("2.5").unwrap(), 2.5);
        for bad in ["0%", "150%", "-3%", "x", "NaN"] {
            assert!(parse_percent(bad)
                .unwrap_err()
                .to_string()
                .contains(&format!("'{bad}'")));
        }
        assert_eq!(
            parse_delay("delay", "50ms", false).unwrap(),
            Duration::from_millis(50)
        );
        for bad in ["-5ms", "0ms", "1h", "soon"] {
            let e = parse_delay("delay", bad, false).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid delay '{bad}'")), "{e}");
        }
        assert!(parse_delay("jitter", "0ms", true).is_ok());
    }
}
