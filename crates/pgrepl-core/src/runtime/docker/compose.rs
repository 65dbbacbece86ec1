//! `pgrepl compose export`: a docker-compose file (format 2.4, which docker-compose 1.x
//! needs) that reproduces the cluster's containers, network, mounts and ports, from the same
//! plans the runtime creates containers from. After `pgrepl down`, `docker-compose -f FILE up
//! -d` brings the same nodes back on the same data, and pgrepl recognizes them by their
//! labels.

use std::fmt::Write as _;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::runtime::docker::plan::{ContainerPlan, LABEL_CLUSTER};
use crate::runtime::docker::DockerRuntime;
use crate::spec::RuntimeKind;

/// A YAML scalar: JSON's double-quoted strings are YAML's too, escapes included.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|i| q(i)).collect::<Vec<_>>().join(", ")
    )
}

/// The compose file for `cluster` (whose image is built first when it is pgrepl's).
pub async fn export(cluster: &Cluster, progress: &dyn Progress) -> Result<String> {
    if cluster.spec.cluster.runtime != RuntimeKind::Docker {
        return Err(Error::Invalid(format!(
            "compose export writes the containers of a docker cluster, and cluster '{}' runs on the {} runtime: create a docker cluster with `pgrepl init --runtime docker`",
            cluster.name(),
            cluster.spec.cluster.runtime
        )));
    }
    let rt = DockerRuntime::new(
        &cluster.spec,
        &cluster.dir,
        cluster.pg.clone(),
        cluster.runner().clone(),
    )?;
    let image = rt.ensure_image(progress).await?;
    let nodes = &cluster.spec.nodes;
    let plans = nodes
        .iter()
        .map(|n| rt.plan(n, nodes, &image))
        .collect::<Result<Vec<_>>>()?;
    let upstreams: Vec<Option<String>> = nodes.iter().map(|n| n.upstream.clone()).collect();
    Ok(render(
        cluster.name(),
        &plans,
        &upstreams,
        &rt.subnet().to_string(),
        &rt.network_labels(),
    ))
}

pub fn render(
    cluster: &str,
    plans: &[ContainerPlan],
    upstreams: &[Option<String>],
    subnet: &str,
    network_labels: &[(String, String)],
) -> String {
    let network = plans.first().map(|p| p.network.clone()).unwrap_or_default();
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Written by `pgrepl compose export` for cluster '{cluster}'. After `pgrepl down`:\n\
         #   docker-compose -f THIS_FILE up -d     (and `docker-compose -f THIS_FILE down` to stop)\n\
         # The data directories are the cluster directory's, mounted at the same path; the\n\
         # subnet is pinned because pg_hba.conf admits it.\n\
         version: \"2.4\"\n\
         services:"
    );
    for (p, upstream) in plans.iter().zip(upstreams) {
        let _ = writeln!(y, "  {}:", q(&p.hostname));
        let _ = writeln!(y, "    container_name: {}", q(&p.name));
        let _ = writeln!(y, "    hostname: {}", q(&p.hostname));
        let _ = writeln!(y, "    image: {}", q(&p.image));
        let _ = writeln!(y, "    user: {}", q(&p.user));
        let _ = writeln!(y, "    entrypoint: []");
        let _ = writeln!(y, "    command: {}", list(&p.cmd));
        let _ = writeln!(y, "    environment:");
        for e in &p.env {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            let _ = writeln!(y, "      {}: {}", q(k), q(v));
        }
        let _ = writeln!(y, "    stop_signal: {}", p.stop_signal);
        let _ = writeln!(y, "    stop_grace_period: {}s", p.stop_timeout_s);
        let _ = writeln!(y, "    shm_size: {}", p.shm_bytes);
        let _ = writeln!(y, "    init: false");
        let _ = writeln!(y, "    tmpfs:");
        let _ = writeln!(
            y,
            "      - {}",
            q(&format!("{}:{}", p.socket_dir, p.socket_tmpfs))
        );
        let _ = writeln!(y, "    volumes:");
        for m in &p.mounts {
            let _ = writeln!(y, "      - type: bind");
            let _ = writeln!(y, "        source: {}", q(&m.source.display().to_string()));
            let _ = writeln!(y, "        target: {}", q(&m.target.display().to_string()));
            let _ = writeln!(y, "        read_only: {}", m.read_only);
        }
        let _ = writeln!(y, "    ports:");
        let _ = writeln!(
            y,
            "      - {}",
            q(&format!(
                "{}:{}:{}",
                p.host_ip,
                p.host_port,
                super::plan::PORT
            ))
        );
        let _ = writeln!(y, "    labels:");
        for (k, v) in &p.labels {
            let _ = writeln!(y, "      {}: {}", q(k), q(v));
        }
        let _ = writeln!(y, "    networks:");
        let _ = writeln!(y, "      {}:", q(&network));
        let _ = writeln!(
            y,
            "        aliases: {}",
            list(std::slice::from_ref(&p.hostname))
        );
        let _ = writeln!(y, "        ipv4_address: {}", q(&p.ip.to_string()));
        if let Some(up) = upstream {
            let _ = writeln!(y, "    depends_on: {}", list(std::slice::from_ref(up)));
        }
    }
    let _ = writeln!(y, "networks:");
    let _ = writeln!(y, "  {}:", q(&network));
    let _ = writeln!(y, "    name: {}", q(&network));
    let _ = writeln!(y, "    driver: bridge");
    let _ = writeln!(y, "    labels:");
    for (k, v) in network_labels {
        let _ = writeln!(y, "      {}: {}", q(k), q(v));
    }
    let _ = writeln!(y, "    ipam:");
    let _ = writeln!(y, "      config:");
    let _ = writeln!(y, "        - subnet: {}", q(subnet));
    debug_assert!(y.contains(LABEL_CLUSTER));
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::docker::plan::{plan, PlanInput};

    #[test]
    fn the_file_names_every_part_of_a_node() {
        let spec = crate::spec::ClusterSpec::lab("lab", 15432).unwrap();
        let dir = std::path::Path::new("/srv/lab");
        let plans: Vec<ContainerPlan> = spec
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                plan(&PlanInput {
                    cluster: "lab",
                    dir,
                    node: n,
                    image: "pgrepl/postgres:18.6",
                    postgres: "/pg/bin/postgres".into(),
                    uid: 101,
                    gid: 104,
                    ip: std::net::Ipv4Addr::new(10, 210, 3, 10 + i as u8),
                    etc: None,
                })
            })
            .collect();
        let ups: Vec<Option<String>> = spec.nodes.iter().map(|n| n.upstream.clone()).collect();
        let y = render(
            "lab",
            &plans,
            &ups,
            "10.210.3.0/24",
            &crate::runtime::docker::plan::owner_labels("lab", dir),
        );
        for want in [
            "version: \"2.4\"",
            "container_name: \"pg0\"",
            "command: [\"/pg/bin/postgres\", \"-D\", \"/srv/lab/pg1\"]",
            "- \"127.0.0.1:15435:5432\"",
            "ipv4_address: \"10.210.3.12\"",
            "stop_signal: SIGINT",
            "- \"/var/run/postgresql:mode=0775,uid=101,gid=104\"",
            "name: \"pgnet\"",
            "- subnet: \"10.210.3.0/24\"",
            "depends_on: [\"pg0\"]",
            "\"pgrepl.dir\": \"/srv/lab\"",
        ] {
            assert!(y.contains(want), "missing {want} in\n{y}");
        }
    }
}
