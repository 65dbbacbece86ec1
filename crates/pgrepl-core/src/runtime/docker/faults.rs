//! Network faults of a container, made from the host inside the container's network
//! namespace (entered through its main process): nft rules in a table of pgrepl's own,
//! tagged with whom they cut off, so that the faults in force are read back from the kernel
//! and heal removes exactly what pgrepl added. Docker's own rules in the same namespace (its
//! embedded DNS) are never touched.
//!
//! The table is in the netdev family, on the container's interface: its ingress and egress
//! hooks sit below IP, so a drop is silent to the node's stack, as loss on a wire is.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result, ResultExt};
use crate::runtime::NetFault;

const TABLE: &str = "pgrepl";
/// A container on one network has one interface.
const IFACE: &str = "eth0";
/// The tag of the host (pgrepl, clients through the published port, docker-proxy).
pub const HOST_TAG: &str = "host";

fn netns_of(pid: i64) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/ns/net");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .what(|| format!("cannot open the container's network namespace ({path})"))
}

/// Runs `nft` inside the network namespace of `pid`.
async fn nft(pid: i64, args: &[&str], script: Option<&str>) -> Result<String> {
    let ns = netns_of(pid)?;
    let mut cmd = tokio::process::Command::new("nft");
    cmd.args(args)
        .stdin(if script.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setns is async-signal-safe, on a descriptor opened in the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Precondition(
                "network faults need nft on this machine: install it (`apt-get install nftables`)"
                    .into(),
            )
        } else {
            Error::Io {
                what: "cannot run nft".into(),
                source: e,
            }
        }
    })?;
    if let (Some(text), Some(mut stdin)) = (script, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .what(|| "cannot write to nft".into())?;
    }
    let out = child
        .wait_with_output()
        .await
        .what(|| "cannot run nft".into())?;
    if !out.status.success() {
        return Err(Error::Command {
            what: format!("nft {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The table and its chains; `add` of what exists is a no-op, so every script starts so.
fn skeleton() -> String {
    format!(
        "add table netdev {TABLE}\n\
         add chain netdev {TABLE} ingress {{ type filter hook ingress device \"{IFACE}\" priority 0; policy accept; }}\n\
         add chain netdev {TABLE} egress {{ type filter hook egress device \"{IFACE}\" priority 0; policy accept; }}\n"
    )
}

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

async fn rules(pid: i64) -> Vec<Rule> {
    // No table: no fault.
    nft(pid, &["-j", "list", "table", "netdev", TABLE], None)
        .await
        .map(|o| parse_rules(&o))
        .unwrap_or_default()
}

/// Cuts both directions between the container and each `(tag, address)`, in one
/// transaction; peers already cut stay as they are.
pub async fn partition(pid: i64, peers: &[(String, Ipv4Addr)]) -> Result<()> {
    let existing = rules(pid).await;
    let mut script = skeleton();
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
    nft(pid, &["-f", "-"], Some(&script)).await.map(drop)
}

/// Drops `percent` % of what the container sends, replacing an earlier loss.
pub async fn loss(pid: i64, percent: f32) -> Result<()> {
    let mut script = skeleton();
    for r in rules(pid)
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
    nft(pid, &["-f", "-"], Some(&script)).await.map(drop)
}

/// Removes every fault (the whole table, nothing else).
pub async fn heal(pid: i64) -> Result<()> {
    if nft(pid, &["list", "table", "netdev", TABLE], None)
        .await
        .is_ok()
    {
        nft(pid, &["delete", "table", "netdev", TABLE], None).await?;
    }
    Ok(())
}

/// The faults in force, read from the kernel.
pub async fn active(pid: i64) -> Vec<NetFault> {
    faults_of(&rules(pid).await)
}

fn faults_of(rules: &[Rule]) -> Vec<NetFault> {
    let mut from: Vec<String> = Vec::new();
    let mut host = false;
    let mut out = Vec::new();
    for r in rules {
        if let Some(tag) = r.comment.strip_prefix("partition:") {
            if tag == HOST_TAG {
                host = true;
            } else if !from.iter().any(|t| t == tag) {
                from.push(tag.to_string());
            }
        } else if let Some(p) = r.comment.strip_prefix("loss:") {
            if let Ok(percent) = p.trim_end_matches('%').parse() {
                out.push(NetFault::Loss { percent });
            }
        }
    }
    if !from.is_empty() || host {
        out.insert(0, NetFault::Partition { from, host });
    }
    out
}

/// Whether a TCP connection made inside the network namespace of `pid` reaches `to` within
/// `timeout`: on a thread of its own, since a namespace belongs to the thread that enters it.
pub async fn connects_from(pid: i64, to: SocketAddr, timeout: Duration) -> Result<bool> {
    let ns = netns_of(pid)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map(|()| TcpStream::connect_timeout(&to, timeout).is_ok());
        let _ = tx.send(result);
    });
    match rx.await {
        Ok(Ok(reached)) => Ok(reached),
        Ok(Err(e)) => Err(Error::Io {
            what: "cannot enter the container's network namespace".into(),
            source: e.into(),
        }),
        Err(_) => Err(Error::Invalid("the namespace thread died".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_read_back_from_the_rules_tags() {
        let json = r#"{"nftables":[{"metainfo":{}},{"table":{"family":"netdev","name":"pgrepl"}},
        {"rule":{"family":"netdev","table":"pgrepl","chain":"ingress","handle":5,"comment":"partition:pg0"}},
        {"rule":{"family":"netdev","table":"pgrepl","chain":"egress","handle":6,"comment":"partition:pg0"}},
        {"rule":{"family":"netdev","table":"pgrepl","chain":"ingress","handle":7,"comment":"partition:host"}},
        {"rule":{"family":"netdev","table":"pgrepl","chain":"egress","handle":9,"comment":"loss:2.5%"}}]}"#;
        assert_eq!(
            faults_of(&parse_rules(json)),
            vec![
                NetFault::Partition {
                    from: vec!["pg0".into()],
                    host: true
                },
                NetFault::Loss { percent: 2.5 }
            ]
        );
        assert!(faults_of(&parse_rules("")).is_empty());
    }
}
