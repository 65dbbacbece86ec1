//! `pgrepl haproxy-config`: an HAProxy configuration for the cluster, with a read-write
//! frontend routed to the node whose `/primary` check answers 200 and a read-only frontend
//! balanced over the nodes whose `/replica` check does. The checks ask the monitor's health
//! endpoints (node i on the HTTP base port + i), as Patroni setups do.

use std::fmt::Write;
use std::net::IpAddr;

use crate::spec::ClusterSpec;

/// Patroni's REST API port: node i's health endpoints listen on this + i by default.
pub const DEFAULT_HTTP_BASE_PORT: u16 = 8008;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where the monitor's health endpoints listen.
    pub http_host: IpAddr,
    pub http_base_port: u16,
    /// Where HAProxy listens for clients.
    pub bind: IpAddr,
    pub rw_port: u16,
    pub ro_port: u16,
    /// The read-only frontend also sends reads to the primary (`/read-only` instead of
    /// `/replica`).
    pub ro_includes_primary: bool,
}

impl Options {
    /// Frontends at the cluster's lowest node port + 100 (read-write) and + 101 (read-only).
    pub fn for_spec(spec: &ClusterSpec) -> Options {
        let base = spec
            .nodes
            .iter()
            .map(|n| n.port)
            .min()
            .unwrap_or(crate::spec::DEFAULT_BASE_PORT);
        let local = IpAddr::from([127, 0, 0, 1]);
        Options {
            http_host: local,
            http_base_port: DEFAULT_HTTP_BASE_PORT,
            bind: local,
            rw_port: base.saturating_add(100),
            ro_port: base.saturating_add(101),
            ro_includes_primary: false,
        }
    }
}

fn host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    }
}

/// The configuration text. Errors when a node's health port would not fit.
pub fn config(spec: &ClusterSpec, o: &Options) -> Result<String, String> {
    let name = &spec.cluster.name;
    let mut servers = String::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let check = u16::try_from(usize::from(o.http_base_port) + i).map_err(|_| {
            format!(
                "--http-base-port {} leaves no health port for {}: choose one at most {}",
                o.http_base_port,
                n.name,
                65536 - spec.nodes.len()
            )
        })?;
        writeln!(
            servers,
            "    server {} {} check addr {} port {check}",
            n.name,
            host_port(n.host, n.port),
            o.http_host
        )
        .expect("writing to a String");
    }
    let ro_check = if o.ro_includes_primary {
        "/read-only"
    } else {
        "/replica"
    };
    let checks = |path: &str| {
        format!(
            "    option httpchk GET {path}\n    http-check expect status 200\n    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n"
        )
    };
    Ok(format!(
        "# HAProxy configuration for the pgrepl cluster '{name}' (pgrepl haproxy-config).\n\
         # Health checks ask `pgrepl monitor --http-base-port {base}`: node i answers on {base}+i.\n\
         global\n    maxconn 1000\n\n\
         defaults\n    mode tcp\n    retries 2\n    timeout connect 4s\n    timeout client 30m\n    timeout server 30m\n    timeout check 2s\n\n\
         # Writes: the node whose /primary check answers 200.\n\
         frontend {name}_read_write\n    bind {rw}\n    default_backend {name}_primary\n\n\
         backend {name}_primary\n{primary_checks}{servers}\n\
         # Reads: round robin over the nodes whose {ro_check} check answers 200.\n\
         frontend {name}_read_only\n    bind {ro}\n    default_backend {name}_replicas\n\n\
         backend {name}_replicas\n    balance roundrobin\n{ro_checks}{servers}",
        base = o.http_base_port,
        rw = host_port(o.bind, o.rw_port),
        ro = host_port(o.bind, o.ro_port),
        primary_checks = checks("/primary"),
        ro_checks = checks(ro_check),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str =
        "# HAProxy configuration for the pgrepl cluster 'lab' (pgrepl haproxy-config).
# Health checks ask `pgrepl monitor --http-base-port 8008`: node i answers on 8008+i.
global
    maxconn 1000

defaults
    mode tcp
    retries 2
    timeout connect 4s
    timeout client 30m
    timeout server 30m
    timeout check 2s

# Writes: the node whose /primary check answers 200.
frontend lab_read_write
    bind 127.0.0.1:15532
    default_backend lab_primary

backend lab_primary
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
    server pg0 127.0.0.1:15432 check addr 127.0.0.1 port 8008
    server pg1 127.0.0.1:15433 check addr 127.0.0.1 port 8009
    server pg2 127.0.0.1:15434 check addr 127.0.0.1 port 8010
    server pg3 127.0.0.1:15435 check addr 127.0.0.1 port 8011

# Reads: round robin over the nodes whose /replica check answers 200.
frontend lab_read_only
    bind 127.0.0.1:15533
    default_backend lab_replicas

backend lab_replicas
    balance roundrobin
    option httpchk GET /replica
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
    server pg0 127.0.0.1:15432 check addr 127.0.0.1 port 8008
    server pg1 127.0.0.1:15433 check addr 127.0.0.1 port 8009
    server pg2 127.0.0.1:15434 check addr 127.0.0.1 port 8010
    server pg3 127.0.0.1:15435 check addr 127.0.0.1 port 8011
";

    fn lab() -> ClusterSpec {
        ClusterSpec::lab("lab", 15432).unwrap()
    }

    #[test]
    fn the_lab_config() {
        let spec = lab();
        assert_eq!(config(&spec, &Options::for_spec(&spec)).unwrap(), LAB);
        let mut o = Options::for_spec(&spec);
        o.ro_includes_primary = true;
        assert!(config(&spec, &o)
            .unwrap()
            .contains("option httpchk GET /read-only"));
        o.http_base_port = 65534;
        let e = config(&spec, &o).unwrap_err();
        assert!(e.contains("choose one at most 65532"), "{e}");
    }

    /// `haproxy -c` accepts it (skipped, loudly, where HAProxy is not installed).
    #[test]
    fn haproxy_accepts_it() {
        let Some(bin) = [
            "/usr/sbin/haproxy",
            "/usr/bin/haproxy",
            "/usr/local/sbin/haproxy",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists()) else {
            eprintln!(
                "SKIPPED haproxy_accepts_it: HAProxy is not installed (apt-get install haproxy)"
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("haproxy.cfg");
        let spec = lab();
        std::fs::write(&file, config(&spec, &Options::for_spec(&spec)).unwrap()).unwrap();
        let out = std::process::Command::new(bin)
            .arg("-c")
            .arg("-f")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
