//! The cluster's network: built by `up` (idempotent, and repairing what a killed `up` left
//! half made), removed by `down`, and nothing touched that is not provably this cluster's.
//!
//! Topology: the bridge lives in a namespace of the cluster's own (its "switch"), not in the
//! host's: a bridge in the host's namespace is subject to the host's iptables FORWARD chain
//! (br_netfilter), which Docker sets to DROP, so node-to-node frames would vanish. The host
//! joins the bridge through one veth; nodes have no default route, so nothing they send
//! leaves the machine.
//!
//! ```text
//! host:               pgrepl-<id> (.1/24, alias "pgrepl:<dir>", forwarding off)
//! pgrepl-<id>-sw:     br0 (alias too) <- host, n0, n1, ...
//! pgrepl-<id>-n-pg0:  eth0 .10/24          pgrepl-<id>-n-pg1: eth0 .11/24 ...
//! ```
//!
//! The network is built with batched `ip -b -` (2 + N processes, tens of milliseconds), text
//! a human can replay by hand.

use std::path::Path;

use crate::error::{Error, Result, ResultExt};
use crate::runtime::enter;
use crate::runtime::netfault::delayer;
pub use crate::runtime::netfault::tools::{exec, preconditions};
use crate::runtime::netns::naming::{self, ClusterNet, BRIDGE, NODE_IF, SWITCH_HOST_PORT};
use crate::runtime::netns::subnet::{self, Net4};

/// Serializes "check the subnet, then create" between pgrepl processes: two `up`s of
/// different clusters must not both take a /24 the other is about to create.
const LOCK_FILE: &str = "/run/pgrepl/net.lock";

/// The lock of [`LOCK_FILE`], held until dropped.
pub struct NetLock(#[allow(dead_code)] std::fs::File);

pub async fn lock() -> Result<NetLock> {
    tokio::task::spawn_blocking(|| {
        let path = Path::new(LOCK_FILE);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).what(|| format!("cannot create {}", dir.display()))?;
        }
        let file = std::fs::File::create(path).what(|| format!("cannot create {LOCK_FILE}"))?;
        file.lock().what(|| format!("cannot lock {LOCK_FILE}"))?;
        Ok(NetLock(file))
    })
    .await
    .map_err(|e| Error::Invalid(format!("the lock task failed: {e}")))?
}

/// What the machine routes and has as addresses now.
pub async fn used() -> Result<Vec<subnet::Used>> {
    let routes = exec(
        "ip",
        &["-j", "-4", "route", "show", "table", "all"],
        None,
        None,
    )
    .await?;
    let addrs = exec("ip", &["-j", "-4", "addr"], None, None).await?;
    Ok(subnet::occupied(&routes, &addrs))
}

/// A free /24 for the cluster in `dir` (for `init --runtime netns`), under the lock.
pub async fn choose_subnet(dir: &Path) -> Result<Net4> {
    preconditions()?;
    let net = ClusterNet::for_dir(dir);
    let _lock = lock().await?;
    subnet::choose(&net.id, &used().await?).ok_or_else(|| {
        Error::Precondition(
            "no free 10.x.y.0/24 on this machine: set `subnet` in the [cluster] section of the cluster file to a free private /24".into(),
        )
    })
}

/// The cluster's namespaces that exist now (the names in /run/netns: no process needed).
pub fn namespaces(net: &ClusterNet) -> Vec<String> {
    let prefix = net.ns_prefix();
    let mut out: Vec<String> = std::fs::read_dir(naming::NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    out.sort();
    out
}

/// One link as `ip -j -d addr` shows it.
#[derive(Debug, Default)]
struct Link {
    alias: Option<String>,
    up: bool,
    master: Option<String>,
    inet: Vec<String>,
}

fn links(json: &str) -> Vec<(String, Link)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let s = |l: &serde_json::Value, k: &str| l.get(k).and_then(|x| x.as_str()).map(str::to_string);
    v.as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let flags: Vec<&str> = l
                .get("flags")
                .and_then(|f| f.as_array())
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .collect();
            let inet = l
                .get("addr_info")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
                .filter(|a| a.get("family").and_then(|f| f.as_str()) == Some("inet"))
                .filter_map(|a| {
                    Some(format!(
                        "{}/{}",
                        a.get("local")?.as_str()?,
                        a.get("prefixlen")?.as_u64()?
                    ))
                })
                .collect();
            (
                s(l, "ifname").unwrap_or_default(),
                Link {
                    alias: s(l, "ifalias"),
                    up: flags.contains(&"UP"),
                    master: s(l, "master"),
                    inet,
                },
            )
        })
        .collect()
}

/// The host veth as it is now, when it exists (whoever's it is).
async fn host_veth(net: &ClusterNet) -> Option<Link> {
    let out = exec(
        "ip",
        &["-j", "-d", "addr", "show", "dev", &net.host_veth()],
        None,
        None,
    )
    .await
    .ok()?;
    links(&out).into_iter().next().map(|(_, l)| l)
}

/// The cluster's /24 as the kernel has it (read back from the host veth), when its network
/// exists.
pub async fn current_subnet(net: &ClusterNet) -> Option<Net4> {
    let link = host_veth(net).await?;
    if link.alias.as_deref() != Some(net.alias().as_str()) {
        return None;
    }
    link.inet.iter().find_map(|a| Net4::parse(a))
}

/// A planned network: the cluster, its subnet, its nodes in the cluster file's order.
pub struct Plan<'a> {
    pub net: &'a ClusterNet,
    pub subnet: Net4,
    pub nodes: &'a [String],
}

impl Plan<'_> {
    fn host_addr(&self) -> String {
        format!("{}/24", self.subnet.host(subnet::HOST))
    }

    fn node_addr(&self, i: usize) -> String {
        format!("{}/24", self.subnet.node(i))
    }

    /// Whether the shared part (host veth, switch, bridge) is complete; an error when the
    /// host veth's name is taken by something that is not this cluster's.
    async fn core_ok(&self, existing: &[String]) -> Result<bool> {
        let host = host_veth(self.net).await;
        if let Some(h) = &host {
            if h.alias.as_deref() != Some(self.net.alias().as_str()) {
                return Err(Error::Precondition(format!(
                    "the interface {} exists but is not this cluster's (its alias is {:?}, not {:?}): pgrepl leaves it alone; remove it yourself if it is a leftover (`ip link del {}`)",
                    self.net.host_veth(),
                    h.alias.as_deref().unwrap_or(""),
                    self.net.alias(),
                    self.net.host_veth()
                )));
            }
        }
        let Some(host) = host else { return Ok(false) };
        if !existing.contains(&self.net.switch_ns())
            || !host.up
            || !host.inet.contains(&self.host_addr())
        {
            return Ok(false);
        }
        let sw = self.switch_links().await;
        let br = sw.iter().find(|(n, _)| n == BRIDGE);
        let port = sw.iter().find(|(n, _)| n == SWITCH_HOST_PORT);
        Ok(br.is_some_and(|(_, l)| l.up)
            && port.is_some_and(|(_, l)| l.master.as_deref() == Some(BRIDGE)))
    }

    async fn switch_links(&self) -> Vec<(String, Link)> {
        exec(
            "ip",
            &["-j", "-d", "link", "show"],
            None,
            Some(&self.net.switch_ns()),
        )
        .await
        .map(|o| links(&o))
        .unwrap_or_default()
    }

    /// Whether node `i`'s namespace has its address, up, and is plugged into the bridge.
    async fn node_ok(&self, i: usize, existing: &[String], switch: &[(String, Link)]) -> bool {
        let ns = self.net.node_ns(&self.nodes[i]);
        if !existing.contains(&ns) {
            return false;
        }
        let plugged = switch
            .iter()
            .any(|(n, l)| *n == naming::switch_port(i) && l.master.as_deref() == Some(BRIDGE));
        let eth = exec(
            "ip",
            &["-j", "addr", "show", "dev", NODE_IF],
            None,
            Some(&ns),
        )
        .await
        .map(|o| links(&o))
        .unwrap_or_default();
        plugged
            && eth
                .first()
                .is_some_and(|(_, l)| l.up && l.inet.contains(&self.node_addr(i)))
    }

    /// The shared part, from nothing.
    async fn build_core(&self) -> Result<()> {
        let (sw, veth) = (self.net.switch_ns(), self.net.host_veth());
        let host = format!(
            "netns add {sw}\n\
             link add {veth} type veth peer name {SWITCH_HOST_PORT} netns {sw}\n\
             link set {veth} alias \"{alias}\"\n\
             addr add {addr} dev {veth}\n\
             link set {veth} up\n",
            alias = self.net.alias(),
            addr = self.host_addr(),
        );
        exec("ip", &["-b", "-"], Some(&host), None).await?;
        // The host must never route between the cluster's range and anywhere else.
        let forwarding = format!("/proc/sys/net/ipv4/conf/{veth}/forwarding");
        std::fs::write(&forwarding, "0").what(|| format!("cannot write {forwarding}"))?;
        let switch = format!(
            "link set lo up\n\
             link add {BRIDGE} type bridge\n\
             link set {BRIDGE} alias \"{alias}\" up\n\
             link set {SWITCH_HOST_PORT} master {BRIDGE} up\n",
            alias = self.net.alias(),
        );
        exec("ip", &["-b", "-"], Some(&switch), Some(&sw)).await?;
        Ok(())
    }

    /// Node `i`'s namespace, its veth pair, its address.
    async fn build_node(&self, i: usize) -> Result<()> {
        let ns = self.net.node_ns(&self.nodes[i]);
        let port = naming::switch_port(i);
        exec("ip", &["netns", "add", &ns], None, None).await?;
        let switch = format!(
            "link add {port} type veth peer name {NODE_IF} netns {ns}\n\
             link set {port} master {BRIDGE} up\n"
        );
        exec(
            "ip",
            &["-b", "-"],
            Some(&switch),
            Some(&self.net.switch_ns()),
        )
        .await?;
        let node = format!(
            "link set lo up\n\
             addr add {addr} dev {NODE_IF}\n\
             link set {NODE_IF} up\n",
            addr = self.node_addr(i)
        );
        exec("ip", &["-b", "-"], Some(&node), Some(&ns)).await?;
        Ok(())
    }

    /// Removes node `i`'s half-made namespace and bridge port.
    async fn remove_node(&self, i: usize) -> Result<()> {
        let ns = self.net.node_ns(&self.nodes[i]);
        refuse_if_servers(self.net, std::slice::from_ref(&ns))?;
        kill_all_in(std::slice::from_ref(&ns)).await;
        let _ = exec(
            "ip",
            &["link", "del", &naming::switch_port(i)],
            None,
            Some(&self.net.switch_ns()),
        )
        .await;
        if naming::ns_path(&ns).exists() {
            exec("ip", &["netns", "del", &ns], None, None).await?;
        }
        Ok(())
    }
}

/// Makes the network whole: nothing done when it is, missing nodes added, a half-built one
/// (a killed `up`) torn down and rebuilt. The subnet is checked against the machine's routes
/// and addresses, under the lock, before anything is created. Returns what it did.
pub async fn ensure(plan: &Plan<'_>) -> Result<Option<String>> {
    preconditions()?;
    let _lock = lock().await?;
    let mut existing = namespaces(plan.net);
    let core = plan.core_ok(&existing).await?;
    let mut built = Vec::new();
    if !core {
        if !existing.is_empty() || host_veth(plan.net).await.is_some() {
            // Leftovers of a killed `up` (or of a namespace deleted by hand): only this
            // cluster's, and only with no server in them.
            refuse_if_servers(plan.net, &existing)?;
            teardown_locked(plan.net).await?;
            existing.clear();
        }
        check_subnet(plan).await?;
        plan.build_core().await?;
        built.push(format!(
            "switch and host link {}",
            plan.subnet.host(subnet::HOST)
        ));
    }
    let switch = plan.switch_links().await;
    for i in 0..plan.nodes.len() {
        if plan.node_ok(i, &existing, &switch).await {
            continue;
        }
        if existing.contains(&plan.net.node_ns(&plan.nodes[i]))
            || switch.iter().any(|(n, _)| *n == naming::switch_port(i))
        {
            plan.remove_node(i).await?;
        }
        plan.build_node(i).await?;
        built.push(format!("{} {}", plan.nodes[i], plan.subnet.node(i)));
    }
    Ok((!built.is_empty()).then(|| {
        format!(
            "network {} of the cluster: {}",
            plan.subnet,
            built.join(", ")
        )
    }))
}

async fn check_subnet(plan: &Plan<'_>) -> Result<()> {
    let used = used().await?;
    if let Some(u) = subnet::clash(&plan.subnet, &used, &plan.net.host_veth()) {
        let free = subnet::choose(&plan.net.id, &used)
            .map(|n| format!(" ({n} is free)"))
            .unwrap_or_default();
        return Err(Error::Precondition(format!(
            "the cluster's subnet {} clashes with {} on {}, which this machine already uses: set another `subnet` in the [cluster] section of the cluster file{free}",
            plan.subnet,
            u.net,
            if u.dev.is_empty() { "?" } else { &u.dev }
        )));
    }
    Ok(())
}

/// A namespace with a PostgreSQL server in it is never deleted: its node would crash.
fn refuse_if_servers(net: &ClusterNet, names: &[String]) -> Result<()> {
    for ns in names {
        let servers: Vec<i32> = enter::pids_in(&naming::ns_path(ns))
            .into_iter()
            .filter(|p| !delayer::is_delayer(*p))
            .collect();
        if !servers.is_empty() {
            return Err(Error::Precondition(format!(
                "the network of the cluster in {} is incomplete while processes still run in {ns} (pids {servers:?}): stop the cluster with `pgrepl down`, then `pgrepl up` rebuilds it",
                net.dir
            )));
        }
    }
    Ok(())
}

/// SIGKILL to every process in these namespaces, until they are gone: a namespace with a
/// process left in it outlives `ip netns del` invisibly, and so do its veths.
async fn kill_all_in(names: &[String]) {
    for _ in 0..200 {
        let pids: Vec<i32> = names
            .iter()
            .flat_map(|n| enter::pids_in(&naming::ns_path(n)))
            .filter(|p| crate::runtime::signals::alive(*p))
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Removes this cluster's network and nothing else; says what went. Processes still in its
/// namespaces (a delayer; normally no server, `down` stops them first) are killed.
pub async fn teardown(net: &ClusterNet) -> Result<Vec<String>> {
    if !nix::unistd::Uid::effective().is_root() {
        // Nothing of ours can exist without root; `down` must still work.
        return Ok(Vec::new());
    }
    let _lock = lock().await?;
    teardown_locked(net).await
}

async fn teardown_locked(net: &ClusterNet) -> Result<Vec<String>> {
    let names = namespaces(net);
    kill_all_in(&names).await;
    let mut removed = Vec::new();
    let ours = host_veth(net)
        .await
        .filter(|l| l.alias.as_deref() == Some(net.alias().as_str()));
    let subnet = ours
        .as_ref()
        .and_then(|l| l.inet.iter().find_map(|a| Net4::parse(a)));
    // Deleting the host end removes its peer in the switch too; it is ours by its alias.
    if ours.is_some() {
        exec("ip", &["link", "del", &net.host_veth()], None, None).await?;
    }
    if !names.is_empty() {
        let batch: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
        exec("ip", &["-b", "-"], Some(&batch), None).await?;
        removed.push(format!(
            "removed the cluster's network{}: {} namespaces ({})",
            subnet.map(|s| format!(" {s}")).unwrap_or_default(),
            names.len(),
            names.join(", ")
        ));
    } else if ours.is_some() {
        removed.push(format!(
            "removed the cluster's host link {}",
            net.host_veth()
        ));
    }
    Ok(removed)
}
