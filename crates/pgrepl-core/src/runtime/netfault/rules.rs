//! A node's network faults as kernel rules inside its namespace, each tagged so that the
//! faults in force are read back from the kernel (derive, don't store), and so that heal
//! removes exactly what pgrepl added.
//!
//! Partition and loss live in one nftables table, `netdev pgrepl`, on the node's interface.
//! The netdev family's ingress/egress hooks sit below IP, so a drop there is silent to the
//! node's own stack, as loss on a wire is; a drop in IP's `output` hook is not (UDP's
//! sendto() gets EPERM, and TCP resends at once instead of after a retransmission timeout).
//!
//! Delay is an iptables rule sending what the node sends to NFQUEUE, where the delayer holds
//! it: this kernel has no `nft_queue`, but iptables-nft reaches the same queue through the xt
//! NFQUEUE target. `--queue-bypass`: without a delayer listening, packets pass.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use crate::error::Result;
use crate::runtime::netfault::delayer::{self, Delay};
use crate::runtime::netfault::tools::exec;
use crate::runtime::NetFault;

const TABLE: &str = "pgrepl";
/// The tag of the host's side of a partition (pgrepl itself, clients on this machine).
pub const HOST_TAG: &str = "host";
const DELAY_TAG: &str = "pgrepl:delay";

/// What is in force in a namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Active {
    /// Tags of the peers cut off (node names, or `host`).
    pub partitioned_from: Vec<String>,
    pub loss_percent: Option<f32>,
    /// A delay rule with its delayer running.
    pub delay: Option<Delay>,
    /// A delay rule with no delayer (packets pass: no delay is in force).
    pub delay_rule_without_delayer: bool,
}

impl Active {
    /// The faults these rules amount to, for a node whose peers are `nodes` (the other
    /// nodes' tags): one partition (from every other node when all of them are cut, which
    /// `from: []` says), the delay, the loss.
    pub fn faults(&self, nodes: &[String]) -> Vec<NetFault> {
        let mut out = Vec::new();
        let cut = &self.partitioned_from;
        let host = cut.iter().any(|t| t == HOST_TAG);
        let from: Vec<String> = nodes.iter().filter(|t| cut.contains(t)).cloned().collect();
        let every_node = nodes.iter().all(|t| cut.contains(t));
        if host && from.is_empty() && !every_node {
            out.push(NetFault::HostPartition);
        } else if host || !from.is_empty() {
            out.push(NetFault::Partition {
                from: if every_node { Vec::new() } else { from },
                host,
            });
        }
        if let Some(d) = &self.delay {
            out.push(NetFault::Delay {
                delay: d.delay,
                jitter: d.jitter,
            });
        }
        if let Some(percent) = self.loss_percent {
            out.push(NetFault::Loss { percent });
        }
        out
    }
}

/// The table on `iface`; `add` of what exists is a no-op for nft, so every script starts so.
fn skeleton(iface: &str) -> String {
    format!(
        "add table netdev {TABLE}\n\
         add chain netdev {TABLE} ingress {{ type filter hook ingress device \"{iface}\" priority 0; policy accept; }}\n\
         add chain netdev {TABLE} egress {{ type filter hook egress device \"{iface}\" priority 0; policy accept; }}\n"
    )
}

async fn nft(ns: &str, args: &[&str], script: Option<&str>) -> Result<String> {
    exec("nft", args, script, Some(ns)).await
}

/// One rule of the table: its comment, chain and handle.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    comment: String,
    chain: String,
    handle: u64,
}

fn parse_rules(json: &str) -> Vec<Rule> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v.get("nftables")
        .and_then(|n| n.as_array())
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let rule = item.get("rule")?;
            Some(Rule {
                comment: rule.get("comment")?.as_str()?.to_string(),
                chain: rule.get("chain")?.as_str()?.to_string(),
                handle: rule.get("handle")?.as_u64()?,
            })
        })
        .collect()
}

async fn rules(ns: &str) -> Vec<Rule> {
    // No table: no partition and no loss.
    nft(ns, &["-j", "list", "table", "netdev", TABLE], None)
        .await
        .map(|o| parse_rules(&o))
        .unwrap_or_default()
}

/// Cuts both directions between the node and each `(tag, address)` peer, in one transaction;
/// peers already cut are left as they are.
pub async fn partition(ns: &str, iface: &str, peers: &[(String, Ipv4Addr)]) -> Result<()> {
    let existing = rules(ns).await;
    let mut script = skeleton(iface);
    for (tag, ip) in peers {
        let comment = format!("partition:{tag}");
        if existing.iter().any(|r| r.comment == comment) {
            continue;
        }
        script.push_str(&format!(
            "add rule netdev {TABLE} ingress ip saddr {ip} counter drop comment \"{comment}\"\n\
             add rule netdev {TABLE} egress ip daddr {ip} counter drop comment \"{comment}\"\n"
        ));
    }
    nft(ns, &["-f", "-"], Some(&script)).await.map(drop)
}

/// Drops `percent` % of what the node sends (in steps of 0.01 %), replacing an earlier loss.
pub async fn loss(ns: &str, iface: &str, percent: f32) -> Result<()> {
    let mut script = skeleton(iface);
    for r in rules(ns)
        .await
        .iter()
        .filter(|r| r.comment.starts_with("loss:"))
    {
        script.push_str(&format!(
            "delete rule netdev {TABLE} {} handle {}\n",
            r.chain, r.handle
        ));
    }
    let per_10k = (percent * 100.0).round() as u32;
    script.push_str(&format!(
        "add rule netdev {TABLE} egress numgen random mod 10000 < {per_10k} counter drop comment \"loss:{percent}%\"\n"
    ));
    nft(ns, &["-f", "-"], Some(&script)).await.map(drop)
}

fn delay_rule(op: &str, iface: &str) -> Vec<String> {
    [
        "-w",
        op,
        "OUTPUT",
        "-o",
        iface,
        "-m",
        "comment",
        "--comment",
        DELAY_TAG,
        "-j",
        "NFQUEUE",
        "--queue-num",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([delayer::QUEUE.to_string(), "--queue-bypass".to_string()])
    .collect()
}

async fn iptables(ns: &str, args: &[String]) -> Result<String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    exec("iptables", &args, None, Some(ns)).await
}

async fn has_delay_rule(ns: &str, iface: &str) -> bool {
    iptables(ns, &delay_rule("-C", iface)).await.is_ok()
}

/// Delays what the node sends by `d` (replacing an earlier delay): the delayer first, then
/// the rule that feeds it.
pub async fn delay(ns: &str, iface: &str, d: Duration, jitter: Duration, log: &Path) -> Result<()> {
    heal_delay(ns, iface).await?;
    let spec = Delay {
        queue: delayer::QUEUE,
        delay: d,
        jitter,
    };
    delayer::spawn(ns, &spec, log).await?;
    if let Err(e) = iptables(ns, &delay_rule("-A", iface)).await {
        delayer::stop(ns).await;
        return Err(e);
    }
    Ok(())
}

/// The rule first (no new packet is queued), then the delayer, which lets what it holds go.
async fn heal_delay(ns: &str, iface: &str) -> Result<()> {
    while has_delay_rule(ns, iface).await {
        iptables(ns, &delay_rule("-D", iface)).await?;
    }
    delayer::stop(ns).await;
    Ok(())
}

/// Every fault of the node gone.
pub async fn heal(ns: &str, iface: &str) -> Result<()> {
    if nft(ns, &["list", "table", "netdev", TABLE], None)
        .await
        .is_ok()
    {
        nft(ns, &["delete", "table", "netdev", TABLE], None).await?;
    }
    heal_delay(ns, iface).await
}

/// What is in force now, read from the kernel and the process table.
pub async fn active(ns: &str, iface: &str) -> Active {
    let mut a = Active::default();
    for r in rules(ns).await {
        if let Some(tag) = r.comment.strip_prefix("partition:") {
            if !a.partitioned_from.iter().any(|t| t == tag) {
                a.partitioned_from.push(tag.to_string());
            }
        } else if let Some(p) = r.comment.strip_prefix("loss:") {
            a.loss_percent = p.trim_end_matches('%').parse().ok();
        }
    }
    if has_delay_rule(ns, iface).await {
        match delayer::find(ns).into_iter().next() {
            Some((_, d)) => a.delay = Some(d),
            None => a.delay_rule_without_delayer = true,
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_read_back_by_their_comments() {
        let json = r#"{"nftables":[{"metainfo":{}},{"table":{"family":"netdev","name":"pgrepl"}},
        {"rule":{"family":"netdev","table":"pgrepl","chain":"ingress","handle":5,"comment":"partition:pg0",
          "expr":[{"match":{}},{"counter":{"packets":3,"bytes":180}},{"drop":null}]}},
        {"rule":{"family":"netdev","table":"pgrepl","chain":"egress","handle":9,"expr":[{"accept":null}]}}]}"#;
        assert_eq!(
            parse_rules(json),
            vec![Rule {
                comment: "partition:pg0".into(),
                chain: "ingress".into(),
                handle: 5
            }]
        );
    }

    #[test]
    fn the_delay_rule_is_one_spec_for_add_check_and_delete() {
        let add = delay_rule("-A", "eth0");
        let del = delay_rule("-D", "eth0");
        assert_eq!(add[2..], del[2..]);
        assert!(add
            .join(" ")
            .contains("--comment pgrepl:delay -j NFQUEUE --queue-num 0 --queue-bypass"));
    }
}
