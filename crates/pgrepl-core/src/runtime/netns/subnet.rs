//! The cluster's /24: chosen so that it clashes with nothing the machine already routes or
//! has as an address, and checked again before anything is created.

use std::net::Ipv4Addr;

/// An IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net4 {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// The host's address on the cluster's bridge.
pub const HOST: u8 = 1;
/// Node `i` (in the cluster file's order) has address `.(FIRST_NODE + i)`.
pub const FIRST_NODE: u8 = 10;
/// How many nodes a /24 holds from FIRST_NODE to .254.
pub const MAX_NODES: usize = 255 - FIRST_NODE as usize;

impl Net4 {
    /// `A.B.C.D/P` (the host part is cleared) or a bare address (/32).
    pub fn parse(s: &str) -> Option<Net4> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse().ok()?),
            None => (s, 32),
        };
        let addr: Ipv4Addr = a.parse().ok()?;
        (p <= 32).then_some(Net4 { addr, prefix: p }.network())
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    pub fn network(self) -> Net4 {
        Net4 {
            addr: Ipv4Addr::from(u32::from(self.addr) & Self::mask(self.prefix)),
            prefix: self.prefix,
        }
    }

    /// Either holds the other (a /24 inside a larger route, or a larger net around it).
    pub fn overlaps(&self, other: &Net4) -> bool {
        let m = Self::mask(self.prefix.min(other.prefix));
        (u32::from(self.addr) & m) == (u32::from(other.addr) & m)
    }

    pub fn host(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | n as u32)
    }

    /// The address of the node at `index` in the cluster file.
    pub fn node(&self, index: usize) -> Ipv4Addr {
        self.host(FIRST_NODE + index.min(MAX_NODES - 1) as u8)
    }

    /// Whether it is a /24 of a private range (RFC 1918): the cluster's addresses must never
    /// shadow a real destination.
    pub fn is_private_24(&self) -> bool {
        let private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
        self.prefix == 24
            && private
                .iter()
                .filter_map(|p| Net4::parse(p))
                .any(|p| p.overlaps(self))
    }
}

impl std::fmt::Display for Net4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Checks a `subnet` of the cluster file; the message names the fix.
pub fn validate(s: &str) -> Result<Net4, String> {
    let bad = || {
        format!("invalid subnet '{s}': use a private /24 such as \"10.42.7.0/24\" (or remove it: `pgrepl init --runtime netns` picks a free one)")
    };
    let net = Net4::parse(s).ok_or_else(bad)?;
    if !s.contains('/') || net.to_string() != s || !net.is_private_24() {
        return Err(bad());
    }
    Ok(net)
}

/// A route or an address the machine already has, and the interface it is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Used {
    pub net: Net4,
    pub dev: String,
}

/// Everything IPv4 the machine uses, from `ip -j -4 route show table all` and `ip -j -4
/// addr`: routes of every table except default routes (every more specific route beats
/// them), and the networks of its addresses.
pub fn occupied(routes_json: &str, addrs_json: &str) -> Vec<Used> {
    let mut out = Vec::new();
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    if let Ok(serde_json::Value::Array(routes)) = serde_json::from_str(routes_json) {
        for r in routes {
            match text(&r, "dst").as_deref() {
                None | Some("default") => {}
                Some(dst) => {
                    if let Some(net) = Net4::parse(dst) {
                        out.push(Used {
                            net,
                            dev: text(&r, "dev").unwrap_or_default(),
                        });
                    }
                }
            }
        }
    }
    if let Ok(serde_json::Value::Array(links)) = serde_json::from_str(addrs_json) {
        for l in links {
            let dev = text(&l, "ifname").unwrap_or_default();
            for a in l
                .get("addr_info")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
            {
                let (Some(local), Some(len)) = (
                    text(a, "local"),
                    a.get("prefixlen").and_then(|x| x.as_u64()),
                ) else {
                    continue;
                };
                if text(a, "family").as_deref() != Some("inet") {
                    continue;
                }
                if let Some(net) = Net4::parse(&format!("{local}/{len}")) {
                    out.push(Used {
                        net,
                        dev: dev.clone(),
                    });
                }
            }
        }
    }
    out
}

/// The first thing `net` would clash with, leaving out what is on `own_dev` (the cluster's
/// own host veth, when its network exists already).
pub fn clash<'a>(net: &Net4, used: &'a [Used], own_dev: &str) -> Option<&'a Used> {
    used.iter()
        .find(|u| u.dev != own_dev && u.net.overlaps(net))
}

/// The first free 10.a.b.0/24 from the one the cluster id points at, so that the same
/// directory usually gets the same subnet and two clusters rarely start from the same one.
/// 10.0.x and 10.255.x are skipped: the ranges most often used by hand on real networks.
pub fn choose(id: &str, used: &[Used]) -> Option<Net4> {
    let seed = u32::from_str_radix(&id[..4.min(id.len())], 16).unwrap_or(0);
    let slots = 254 * 256u32;
    (0..slots).find_map(|k| {
        let s = (seed + k) % slots;
        let candidate = Net4 {
            addr: Ipv4Addr::new(10, (1 + s / 256) as u8, (s % 256) as u8, 0),
            prefix: 24,
        };
        clash(&candidate, used, "").is_none().then_some(candidate)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_routes_and_addresses_but_not_default() {
        let routes = r#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"},{"dst":"10.0.0.0/9","dev":"eth0"},{"dst":"10.200.3.0/24","dev":"x"}]"#;
        let addrs = r#"[{"ifname":"eth1","addr_info":[{"family":"inet","local":"10.128.0.5","prefixlen":16},{"family":"inet6","local":"fd00::2","prefixlen":64}]}]"#;
        let used = occupied(routes, addrs);
        assert_eq!(used.len(), 3);
        let n = choose("0001", &used).unwrap();
        assert!(clash(&n, &used, "").is_none(), "{n}");
        assert!(n.addr.octets()[1] >= 128);
        let taken = Net4::parse("10.200.3.0/24").unwrap();
        assert!(clash(&taken, &used, "").is_some());
        // Its own interface does not count against it.
        assert!(clash(&taken, &used, "x").is_none());
        assert!(Net4::parse("10.0.0.0/8").unwrap().overlaps(&taken));
        assert!(!Net4::parse("10.200.4.0/24").unwrap().overlaps(&taken));
    }

    #[test]
    fn addresses_of_host_and_nodes() {
        let n = Net4::parse("10.7.9.77/24").unwrap();
        assert_eq!(n.to_string(), "10.7.9.0/24");
        assert_eq!(n.host(HOST), Ipv4Addr::new(10, 7, 9, 1));
        assert_eq!(n.node(0), Ipv4Addr::new(10, 7, 9, 10));
        assert_eq!(n.node(3), Ipv4Addr::new(10, 7, 9, 13));
    }

    #[test]
    fn the_cluster_files_subnet_is_a_private_24() {
        assert!(validate("10.42.7.0/24").is_ok());
        assert!(validate("192.168.3.0/24").is_ok());
        for bad in [
            "10.42.7.5/24",
            "10.42.0.0/16",
            "8.8.8.0/24",
            "10.42.7.0",
            "nonsense",
        ] {
            let e = validate(bad).unwrap_err();
            assert!(e.contains("private /24"), "{bad}: {e}");
        }
    }
}
