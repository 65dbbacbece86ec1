//! The cluster's docker network: a private /24, chosen at `init` against the engine's
//! networks and the host's routes, and kept in the cluster file. pg_hba.conf admits it, so a
//! network made again (after `down`, by docker-compose) must have the same one.

use std::net::Ipv4Addr;

use crate::error::{Error, Result};

/// The host's side of the bridge (docker's gateway): where connections through a published
/// port come from.
const GATEWAY: u8 = 1;
/// Node `i` of the cluster file has `.(FIRST_NODE + i)`.
const FIRST_NODE: u8 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet(Ipv4Addr);

/// An IPv4 network as (address, prefix).
fn cidr(s: &str) -> Option<(u32, u8)> {
    let (a, p) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a.parse().ok()?;
    let prefix: u8 = p.parse().ok().filter(|p| *p <= 32)?;
    Some((u32::from(addr) & mask(prefix), prefix))
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let m = mask(a.1.min(b.1));
    a.0 & m == b.0 & m
}

impl Subnet {
    /// A private /24 (`10.x.y.0/24`, `172.16-31.x.0/24`, `192.168.x.0/24`); the message names
    /// the fix.
    pub fn parse(s: &str) -> Result<Subnet> {
        let bad = || {
            Error::Invalid(format!(
                "subnet '{s}' is not a private /24 such as 10.210.7.0/24: set `subnet` in the [cluster] section to one (`pgrepl init --force --runtime docker` chooses a free one)"
            ))
        };
        let (addr, prefix) = cidr(s).ok_or_else(bad)?;
        let private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
            .iter()
            .filter_map(|p| cidr(p))
            .any(|p| overlaps(p, (addr, 24)));
        if prefix != 24 || !private || !s.contains('/') {
            return Err(bad());
        }
        Ok(Subnet(Ipv4Addr::from(addr)))
    }

    fn host(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.0) | u32::from(n))
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.host(GATEWAY)
    }

    /// The address of the node at `index` in the cluster file.
    pub fn node(&self, index: usize) -> Result<Ipv4Addr> {
        u8::try_from(index)
            .ok()
            .and_then(|i| FIRST_NODE.checked_add(i))
            .filter(|n| *n < 255)
            .map(|n| self.host(n))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the docker runtime's /24 holds at most {} nodes",
                    255 - FIRST_NODE
                ))
            })
    }

    fn range(&self) -> (u32, u8) {
        (u32::from(self.0), 24)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/24", self.0)
    }
}

/// The destinations the host routes (but the default route), from /proc/net/route.
pub fn host_routes() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let m = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The file holds them in the host's (little-endian) byte order.
            let (dest, m) = (Ipv4Addr::from(dest.swap_bytes()), m.swap_bytes());
            (m != 0).then(|| format!("{dest}/{}", m.count_ones()))
        })
        .collect()
}

/// A /24 of 10.210.0.0/16 that overlaps none of `used`, starting from a place that `seed`
/// picks (two clusters set up at once rarely try the same one).
pub fn choose(used: &[String], seed: u64) -> Result<Subnet> {
    let used: Vec<(u32, u8)> = used.iter().filter_map(|u| cidr(u)).collect();
    (0..256u64)
        .map(|k| ((seed + k) % 256) as u8)
        .map(|third| Subnet(Ipv4Addr::new(10, 210, third, 0)))
        .find(|s| !used.iter().any(|u| overlaps(*u, s.range())))
        .ok_or_else(|| {
            Error::Precondition(
                "no free /24 left in 10.210.0.0/16 for the cluster's docker network: remove unused networks (`docker network prune`), or set `subnet` in the [cluster] section yourself".into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_24s_are_accepted() {
        let s = Subnet::parse("10.210.7.0/24").unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 210, 7, 1));
        assert_eq!(s.node(2).unwrap(), Ipv4Addr::new(10, 210, 7, 12));
        assert_eq!(s.to_string(), "10.210.7.0/24");
        for bad in ["10.210.7.0/16", "8.8.8.0/24", "10.210.7.0", "x/24"] {
            let e = Subnet::parse(bad).unwrap_err().to_string();
            assert!(e.contains("private /24") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn the_choice_skips_what_is_used() {
        let used = vec!["10.210.5.0/24".to_string(), "172.17.0.0/16".into()];
        assert_eq!(choose(&used, 5).unwrap().to_string(), "10.210.6.0/24");
        assert_eq!(choose(&[], 300).unwrap().to_string(), "10.210.44.0/24");
        // A route over the whole range leaves nothing.
        assert!(choose(&["10.0.0.0/8".into()], 0).is_err());
    }
}
