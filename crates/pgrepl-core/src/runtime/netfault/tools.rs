//! The network tools pgrepl runs as root (ip, nft, iptables), in a network namespace when
//! asked: a named one (`/run/netns/NAME`) or a process's (`/proc/PID/ns/net`, a container's).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result, ResultExt};
use crate::runtime::enter::Enter;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The file of a named namespace; a path (a container's `/proc/PID/ns/net`) is its own file.
pub fn ns_path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        Path::new(NETNS_DIR).join(name)
    }
}

/// The programs the netns runtime runs, and the Debian package of each.
const TOOLS: [(&str, &str); 3] = [
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("iptables", "iptables"),
];

/// Where a tool is, or None.
fn find_tool(name: &str) -> Option<PathBuf> {
    // iptables-nft reaches the kernel's nf_tables: the delay rule needs its NFQUEUE target
    // (nft_compat), which the legacy iptables backend would put elsewhere.
    let names: &[&str] = if name == "iptables" {
        &["iptables-nft", "iptables"]
    } else {
        &[name]
    };
    names.iter().find_map(|n| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(n))
            .find(|p| p.is_file())
    })
}

pub fn tool(name: &str) -> PathBuf {
    static FOUND: OnceLock<Vec<(String, Option<PathBuf>)>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            TOOLS
                .iter()
                .map(|(t, _)| (t.to_string(), find_tool(t)))
                .collect()
        })
        .iter()
        .find(|(t, _)| t == name)
        .and_then(|(_, p)| p.clone())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Root and the tools, before anything is changed: one line each, naming the fix.
pub fn preconditions() -> Result<()> {
    needs("the netns runtime", "it creates network namespaces")
}

/// The same for network faults in a container's namespace.
pub fn fault_preconditions() -> Result<()> {
    needs(
        "network faults",
        "they change a node's network from the host",
    )
}

fn needs(what: &str, why: &str) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(Error::Precondition(format!(
            "{what} need root ({why}): run pgrepl as root, or use the local runtime (`pgrepl init --force --runtime local`)"
        )));
    }
    for (name, package) in TOOLS {
        if find_tool(name).is_none() {
            return Err(Error::Precondition(format!(
                "{what} need `{name}`, which is not installed: install it with `apt-get install -y {package}`"
            )));
        }
    }
    Ok(())
}

/// Runs a network tool as root, in namespace `netns` when given, feeding `stdin`; a failure
/// carries its stderr.
pub async fn exec(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    netns: Option<&str>,
) -> Result<String> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(tool(program));
    cmd.args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = netns {
        Enter::netns(&ns_path(ns))
            .what(|| format!("cannot enter network namespace {ns}"))?
            .install(&mut cmd);
    }
    let what = format!("{program} {}", args.join(" "));
    tracing::debug!(%what, ?netns, stdin, "running");
    let mut child = cmd.spawn().what(|| format!("cannot run {program}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .what(|| format!("cannot write to {program}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .what(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        return Err(Error::Command {
            what: match netns {
                Some(ns) => format!("{what} (in {ns})"),
                None => what,
            },
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
