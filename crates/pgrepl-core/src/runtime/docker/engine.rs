//! The Docker Engine, through its API over the local unix socket (bollard): the calls the
//! docker runtime makes, each mapped to pgrepl's errors. No `docker` CLI.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig, Mount,
    MountType, NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, InspectNetworkOptions,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptions,
    ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, StartContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::runtime::docker::plan::ContainerPlan;

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// A failed API call, with what pgrepl was doing.
pub fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
    let what = what.into();
    move |e| Error::Command {
        what,
        detail: match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message,
            other => other.to_string(),
        },
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Where the engine listens: `DOCKER_HOST` when it names a unix socket, else the default.
/// A remote engine cannot work: nodes mount the cluster's directory of this machine.
pub fn socket() -> Result<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => Ok(PathBuf::from(h.trim_start_matches("unix://"))),
        Ok(h) if !h.is_empty() => Err(Error::Invalid(format!(
            "the docker runtime needs the Docker Engine of this machine (its nodes mount the cluster's directory), but DOCKER_HOST is {h}: unset it, or point it at a local unix:// socket"
        ))),
        _ => Ok(PathBuf::from(DEFAULT_SOCKET)),
    }
}

fn no_engine(socket: &std::path::Path, why: &str) -> Error {
    Error::Precondition(format!(
        "the docker runtime needs a running Docker Engine ({}): start it (`systemctl start docker`, or `dockerd &`), or use another runtime (`pgrepl init --force --runtime local`) [{why}]",
        socket.display()
    ))
}

/// Whether an engine answers on the socket (a quick check, before anything is changed).
pub fn check_socket() -> Result<()> {
    let path = socket()?;
    std::os::unix::net::UnixStream::connect(&path)
        .map(drop)
        .map_err(|e| no_engine(&path, &e.to_string()))
}

/// One engine connection, the API version negotiated down to the engine's (bollard speaks a
/// newer one than a 20.10 engine accepts). Refuses an engine that remaps uids: the data
/// directories would not belong to the OS user inside.
pub async fn connect() -> Result<Docker> {
    let path = socket()?;
    let docker =
        Docker::connect_with_unix(&path.to_string_lossy(), 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| no_engine(&path, &e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| no_engine(&path, &e.to_string()))?;
    let info = docker
        .info()
        .await
        .map_err(|e| no_engine(&path, &e.to_string()))?;
    let remapped = info
        .security_options
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.contains("name=rootless") || o.contains("name=userns"));
    if let Some(o) = remapped {
        return Err(Error::Precondition(format!(
            "the Docker Engine remaps user ids ({o}): the nodes' data directories would belong to another uid inside the containers; use a rootful engine without userns-remap, or the netns runtime"
        )));
    }
    Ok(docker)
}

/// What pgrepl needs to know of a container.
#[derive(Debug, Clone, Default)]
pub struct Inspected {
    pub labels: HashMap<String, String>,
    pub running: bool,
    pub paused: bool,
    /// The host pid of its main process (0 when not running): its network namespace.
    pub pid: i64,
    pub image: String,
}

pub async fn inspect_container(docker: &Docker, name: &str) -> Result<Option<Inspected>> {
    match docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) => {
            let state = c.state.unwrap_or_default();
            let config = c.config.unwrap_or_default();
            Ok(Some(Inspected {
                labels: config.labels.unwrap_or_default(),
                running: state.running.unwrap_or(false),
                paused: state.paused.unwrap_or(false),
                pid: state.pid.unwrap_or(0),
                image: config.image.unwrap_or_default(),
            }))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(api(format!("inspecting container {name}"))(e)),
    }
}

pub async fn create_container(docker: &Docker, plan: &ContainerPlan) -> Result<()> {
    let port_bindings = HashMap::from([(
        "5432/tcp".to_string(),
        Some(vec![PortBinding {
            host_ip: Some(plan.host_ip.clone()),
            host_port: Some(plan.host_port.to_string()),
        }]),
    )]);
    let mounts = plan
        .mounts
        .iter()
        .map(|m| Mount {
            source: Some(m.source.display().to_string()),
            target: Some(m.target.display().to_string()),
            // Mounts, not binds: a bind creates a missing source as root's directory, a
            // mount refuses.
            typ: Some(MountType::BIND),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let body = ContainerCreateBody {
        image: Some(plan.image.clone()),
        hostname: Some(plan.hostname.clone()),
        user: Some(plan.user.clone()),
        // A user image's entrypoint would initdb and chown: pgrepl runs postgres itself, on a
        // data directory made on the host.
        entrypoint: Some(vec![]),
        cmd: Some(plan.cmd.clone()),
        env: Some(plan.env.clone()),
        exposed_ports: Some(vec!["5432/tcp".into()]),
        stop_signal: Some(plan.stop_signal.into()),
        stop_timeout: Some(plan.stop_timeout_s),
        labels: Some(plan.labels.clone().into_iter().collect()),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            mounts: Some(mounts),
            network_mode: Some(plan.network.clone()),
            tmpfs: Some(HashMap::from([(
                plan.socket_dir.to_string(),
                plan.socket_tmpfs.clone(),
            )])),
            shm_size: Some(plan.shm_bytes),
            // postgres must be PID 1: a lock file naming pid 1 is then its own, and stale.
            init: Some(false),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                plan.network.clone(),
                EndpointSettings {
                    aliases: Some(vec![plan.hostname.clone()]),
                    ipam_config: Some(EndpointIpamConfig {
                        ipv4_address: Some(plan.ip.to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default()
        .name(&plan.name)
        .build();
    docker
        .create_container(Some(opts), body)
        .await
        .map_err(api(format!("creating container {}", plan.name)))?;
    Ok(())
}

pub async fn start_container(docker: &Docker, name: &str) -> Result<()> {
    docker
        .start_container(name, None::<StartContainerOptions>)
        .await
        .map_err(api(format!("starting container {name}")))
}

/// Sends a signal to the container's main process (postgres).
pub async fn signal(docker: &Docker, name: &str, signal: &str) -> Result<()> {
    let opts = KillContainerOptionsBuilder::default()
        .signal(signal)
        .build();
    docker
        .kill_container(name, Some(opts))
        .await
        .map_err(api(format!("sending {signal} to container {name}")))
}

pub async fn pause(docker: &Docker, name: &str, paused: bool) -> Result<()> {
    if paused {
        docker
            .pause_container(name)
            .await
            .map_err(api(format!("pausing container {name}")))
    } else {
        docker
            .unpause_container(name)
            .await
            .map_err(api(format!("unpausing container {name}")))
    }
}

pub async fn remove_container(docker: &Docker, name: &str) -> Result<()> {
    // v: a user image's anonymous VOLUME goes with the container.
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(opts)).await {
        Err(e) if is_not_found(&e) => Ok(()),
        r => r.map_err(api(format!("removing container {name}"))),
    }
}

/// The last `lines` lines the container's main process wrote (PostgreSQL logs to stderr).
pub async fn logs_tail(docker: &Docker, name: &str, lines: usize) -> Result<String> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let mut stream = docker.logs(name, Some(opts));
    let mut out = String::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => out.push_str(&String::from_utf8_lossy(&c.into_bytes())),
            Err(e) if is_not_found(&e) => break,
            Err(e) => return Err(api(format!("reading the log of {name}"))(e)),
        }
    }
    Ok(out)
}

/// The container's whole log, then (with `follow`) what it writes next.
pub fn logs_stream(
    docker: &Docker,
    name: &str,
    tail: Option<usize>,
    follow: bool,
) -> futures::stream::BoxStream<'static, Result<Vec<u8>>> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .tail(&tail.map_or("all".to_string(), |n| n.to_string()))
        .build();
    let what = format!("reading the log of {name}");
    docker
        .logs(name, Some(opts))
        .map(move |c| {
            c.map(|c| c.into_bytes().to_vec())
                .map_err(api(what.clone()))
        })
        .boxed()
}

fn label_filter(labels: &[(String, String)]) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )])
}

/// Names of the containers that carry every one of these labels.
pub async fn containers_labelled(
    docker: &Docker,
    labels: &[(String, String)],
) -> Result<Vec<String>> {
    let filters = label_filter(labels);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api("listing containers"))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            c.names?
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
        })
        .collect())
}

/// Names of the networks that carry every one of these labels.
pub async fn networks_labelled(
    docker: &Docker,
    labels: &[(String, String)],
) -> Result<Vec<String>> {
    let filters = label_filter(labels);
    let list = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api("listing networks"))?;
    Ok(list.into_iter().filter_map(|n| n.name).collect())
}

/// Every subnet the engine's networks use (a new cluster's must not overlap them).
pub async fn used_subnets(docker: &Docker) -> Result<Vec<String>> {
    let list = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(api("listing networks"))?;
    Ok(list
        .into_iter()
        .flat_map(|n| n.ipam.and_then(|i| i.config).unwrap_or_default())
        .filter_map(|c| c.subnet)
        .collect())
}

/// A network's labels and subnet; None when there is no such network.
pub async fn inspect_network(
    docker: &Docker,
    name: &str,
) -> Result<Option<(HashMap<String, String>, Option<String>)>> {
    match docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
    {
        Ok(n) => Ok(Some((
            n.labels.unwrap_or_default(),
            n.ipam
                .and_then(|i| i.config)
                .and_then(|c| c.into_iter().find_map(|c| c.subnet)),
        ))),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(api(format!("inspecting network {name}"))(e)),
    }
}

pub async fn create_network(
    docker: &Docker,
    name: &str,
    subnet: &str,
    gateway: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    docker
        .create_network(NetworkCreateRequest {
            name: name.into(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.into()),
                    gateway: Some(gateway.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(api(format!("creating network {name} on {subnet}")))?;
    Ok(())
}

pub async fn remove_network(docker: &Docker, name: &str) -> Result<()> {
    match docker.remove_network(name).await {
        Err(e) if is_not_found(&e) => Ok(()),
        r => r.map_err(api(format!("removing network {name}"))),
    }
}

/// An image's labels and id; None when the engine has no such image.
pub async fn inspect_image(
    docker: &Docker,
    name: &str,
) -> Result<Option<(HashMap<String, String>, String)>> {
    match docker.inspect_image(name).await {
        Ok(img) => Ok(Some((
            img.config.and_then(|c| c.labels).unwrap_or_default(),
            img.id.unwrap_or_default(),
        ))),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(api(format!("inspecting image {name}"))(e)),
    }
}

/// Removes an image by id unless a container still uses it (then it stays, untagged).
pub async fn remove_image_if_unused(docker: &Docker, id: &str) {
    let opts = RemoveImageOptionsBuilder::default().build();
    let _ = docker.remove_image(id, Some(opts), None).await;
}

/// Runs a command in a throwaway container of `image` (no network) and returns what it
/// printed; the container is removed whatever happened.
pub async fn run_once(
    docker: &Docker,
    image: &str,
    cmd: &[&str],
    labels: &[(String, String)],
) -> Result<String> {
    let name = format!(
        "pgrepl-probe-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let body = ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(vec![]),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        labels: Some(labels.iter().cloned().collect()),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default().name(&name).build();
    docker
        .create_container(Some(opts), body)
        .await
        .map_err(api(format!("creating a container of {image}")))?;
    let result = async {
        start_container(docker, &name).await?;
        let mut wait = docker.wait_container(
            &name,
            None::<bollard::query_parameters::WaitContainerOptions>,
        );
        while let Some(r) = wait.next().await {
            // A non-zero exit comes as an error; the log says what it printed either way.
            if r.is_err() {
                break;
            }
        }
        logs_tail(docker, &name, 50).await
    }
    .await;
    remove_container(docker, &name).await?;
    result
}
