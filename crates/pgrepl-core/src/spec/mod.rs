//! The cluster file (`pgrepl.toml`): the topology the user intends. Roles are not stored here;
//! who is primary *now* is always read from PostgreSQL.

pub mod locate;
mod moves;
mod validate;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use locate::{locate, Located};
pub use moves::default_slot;
pub use validate::{validate_data_path, validate_name, validate_slot_name, validate_sync_names};

pub const DEFAULT_FILE: &str = "pgrepl.toml";
/// Below Linux's ephemeral port range (32768-60999), where an outgoing connection could take a
/// node's port while it is down.
pub const DEFAULT_BASE_PORT: u16 = 15432;
pub const DEFAULT_CLUSTER_NAME: &str = "lab";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub cluster: ClusterSection,
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncSpec>,
    /// `pgrepl monitor`'s settings (`[monitor]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorSpec>,
}

/// `[monitor]`: what the monitor may do unattended, and its timing (the command line's
/// `--interval` and `--failover-timeout` win).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// What to do when synchronous replication would block every commit: "block" (as
    /// PostgreSQL does) or "degrade" (clear synchronous_standby_names until a synchronous
    /// standby streams again).
    #[serde(default)]
    pub on_sync_loss: crate::monitor::OnSyncLoss,
    /// Consent to promote an asynchronous standby under synchronous replication.
    #[serde(default)]
    pub allow_data_loss: bool,
    /// How often the monitor looks, e.g. "500ms".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long an unreachable primary may be unheard before the failover, e.g. "2s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_timeout: Option<String>,
}

impl MonitorSpec {
    /// `interval` read, or None when unset.
    pub fn interval(&self) -> crate::error::Result<Option<std::time::Duration>> {
        parse_monitor_duration("interval", self.interval.as_deref())
    }

    pub fn failover_timeout(&self) -> crate::error::Result<Option<std::time::Duration>> {
        parse_monitor_duration("failover_timeout", self.failover_timeout.as_deref())
    }
}

fn parse_monitor_duration(
    key: &str,
    text: Option<&str>,
) -> crate::error::Result<Option<std::time::Duration>> {
    let Some(t) = text else { return Ok(None) };
    match humantime::parse_duration(t.trim()) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(crate::error::Error::Invalid(format!(
            "[monitor] {key} = \"{t}\" is no duration: write one such as \"500ms\" or \"2s\""
        ))),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub name: String,
    /// A major version ("18") or a directory holding the PostgreSQL binaries.
    #[serde(default = "default_postgres")]
    pub postgres: String,
    #[serde(default = "default_replication_user")]
    pub replication_user: String,
    /// Where the cluster's data lives; relative paths are relative to the spec file.
    /// Defaults to `.pgrepl/<name>` next to the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Where the nodes live (see [`crate::runtime`]); omitted from the file when local.
    #[serde(default, skip_serializing_if = "RuntimeKind::is_local")]
    pub runtime: RuntimeKind,
    /// The most WAL a replication slot may hold back for its standby (PostgreSQL's
    /// `max_slot_wal_keep_size`): a standby down for longer loses its slot and needs a
    /// re-clone, instead of filling its upstream's disk. `-1`: no limit.
    #[serde(default = "default_max_slot_wal_keep_size")]
    pub max_slot_wal_keep_size: String,
    /// The cluster's private /24 (`"10.x.y.0/24"`) on the netns and docker runtimes, chosen
    /// free by `init` and pinned: pg_hba.conf admits it, so a network made again must have
    /// the same. Node i of the file has `.(10 + i)`, the host `.1` (netns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// The docker runtime's image when the user has one (e.g. `postgres:18`); none: pgrepl
    /// builds `pgrepl/postgres:<version>` from the installation it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Where a cluster's nodes live: local processes, one network namespace per node, or one
/// container per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    #[default]
    Local,
    Netns,
    Docker,
}

impl RuntimeKind {
    pub const NAMES: &[&str] = &["local", "netns", "docker"];

    pub fn is_local(&self) -> bool {
        *self == RuntimeKind::Local
    }

    pub fn name(&self) -> &'static str {
        match self {
            RuntimeKind::Local => "local",
            RuntimeKind::Netns => "netns",
            RuntimeKind::Docker => "docker",
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "local" => Ok(RuntimeKind::Local),
            "netns" => Ok(RuntimeKind::Netns),
            "docker" => Ok(RuntimeKind::Docker),
            other => Err(Error::Invalid(format!(
                "unknown runtime '{other}': use one of {}",
                RuntimeKind::NAMES.join(", ")
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    #[serde(default = "default_host")]
    pub host: IpAddr,
    pub port: u16,
    /// The node this one streams from; none for the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The replication slot on the upstream this node streams through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// Defaults to the node's name; this is what `synchronous_standby_names` refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncMethod {
    #[default]
    First,
    Any,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    /// Application names, or `*` for any standby.
    pub standbys: Vec<String>,
    #[serde(default)]
    pub method: SyncMethod,
    #[serde(default = "one")]
    pub num: u32,
    /// `synchronous_commit` on the primary: on, remote_write, remote_apply, local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Names that are no standby of this cluster are accepted (`sync enable --allow-unknown`),
    /// for standbys pgrepl does not manage.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unknown: bool,
}

fn default_postgres() -> String {
    "18".into()
}
fn default_replication_user() -> String {
    "repluser".into()
}
pub const DEFAULT_MAX_SLOT_WAL_KEEP_SIZE: &str = "1GB";
fn default_max_slot_wal_keep_size() -> String {
    DEFAULT_MAX_SLOT_WAL_KEEP_SIZE.into()
}
fn default_host() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn one() -> u32 {
    1
}

impl NodeSpec {
    pub fn application_name(&self) -> &str {
        self.application_name.as_deref().unwrap_or(&self.name)
    }
    pub fn is_root(&self) -> bool {
        self.upstream.is_none()
    }

    /// The commands that create this node's data directory, for a node that has none yet.
    pub fn create_hint(&self) -> String {
        match &self.upstream {
            Some(u) => format!(
                "`pgrepl up` or `pgrepl standby add {} --slot {} --upstream {u}`",
                self.name,
                self.slot.as_deref().unwrap_or("SLOT")
            ),
            None => "`pgrepl up`".into(),
        }
    }
}

impl ClusterSpec {
    /// The lab of the Advanced Databases course: pg0 primary, pg1 async standby, pg2 and pg3
    /// standbys that are candidates for synchronous replication as `sync2`/`sync3`.
    pub fn lab(name: &str, base_port: u16) -> Result<Self> {
        if base_port < crate::spec::validate::FIRST_UNPRIVILEGED_PORT {
            return Err(Error::Invalid(format!(
                "base port {base_port} is a privileged port (below 1024), where PostgreSQL, running as an unprivileged user, cannot listen: choose one from 1024 to 32764, e.g. 25432"
            )));
        }
        if base_port.checked_add(3).is_none() {
            return Err(Error::Invalid(format!(
                "base port {base_port} leaves no room for 4 nodes: choose one at most 65532"
            )));
        }
        let node = |i: u16, app: Option<&str>| NodeSpec {
            name: format!("pg{i}"),
            host: default_host(),
            port: base_port + i,
            upstream: (i > 0).then(|| "pg0".to_string()),
            slot: (i > 0).then(|| format!("pg{i}_slot")),
            application_name: app.map(str::to_string),
        };
        let spec = ClusterSpec {
            cluster: ClusterSection {
                name: name.to_string(),
                postgres: default_postgres(),
                replication_user: default_replication_user(),
                data_dir: None,
                runtime: RuntimeKind::Local,
                max_slot_wal_keep_size: default_max_slot_wal_keep_size(),
                subnet: None,
                image: None,
            },
            nodes: vec![
                node(0, None),
                node(1, None),
                node(2, Some("sync2")),
                node(3, Some("sync3")),
            ],
            sync: None,
            monitor: None,
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let spec: ClusterSpec = toml::from_str(text).map_err(|e| Error::SpecFile {
            path: path.to_path_buf(),
            detail: e.message().to_string()
                + &e.span()
                    .map(|s| format!(" (at {})", line_col(text, s.start)))
                    .unwrap_or_default(),
        })?;
        spec.validate().map_err(|e| Error::SpecFile {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::SpecFile {
            path: path.to_path_buf(),
            detail: if e.kind() == std::io::ErrorKind::NotFound {
                "no such file: create one with `pgrepl init` (or name another with -c FILE)".into()
            } else {
                e.to_string()
            },
        })?;
        Self::parse(&text, path)
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("a spec always serializes");
        format!(
            "# pgrepl cluster file: the topology you intend. Roles (who is primary now) are read\n\
             # from PostgreSQL, not from here. Reference: README.md, \"Cluster file\".\n\n{body}"
        )
    }

    /// Writes the spec atomically (a crash leaves the old file or the new one, never half).
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|source| Error::Io {
            what: format!("cannot write {}", path.display()),
            source,
        })?;
        use std::io::Write;
        tmp.write_all(self.to_toml().as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|source| Error::Io {
                what: format!("cannot write {}", path.display()),
                source,
            })?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
        }
        tmp.persist(path).map_err(|e| Error::Io {
            what: format!("cannot write {}", path.display()),
            source: e.error,
        })?;
        Ok(())
    }

    pub fn node(&self, name: &str) -> Result<&NodeSpec> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::UnknownNode {
                name: name.to_string(),
                known: self.node_names(),
            })
    }

    pub fn node_mut(&mut self, name: &str) -> Result<&mut NodeSpec> {
        let known = self.node_names();
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or(Error::UnknownNode {
                name: name.to_string(),
                known,
            })
    }

    pub fn node_names(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The node the spec intends as primary.
    pub fn root(&self) -> &NodeSpec {
        self.nodes
            .iter()
            .find(|n| n.is_root())
            .expect("validation guarantees one root")
    }

    /// Nodes that stream directly from `upstream`.
    pub fn downstream_of<'a>(&'a self, upstream: &'a str) -> impl Iterator<Item = &'a NodeSpec> {
        self.nodes
            .iter()
            .filter(move |n| n.upstream.as_deref() == Some(upstream))
    }

    /// What is allowed but probably not meant: a node listening on every interface.
    pub fn warnings(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.host.is_unspecified())
            .map(|n| {
                format!(
                    "node '{}' has host {}: it listens on every interface of this machine, not only where the cluster reaches it; give it one address (e.g. 127.0.0.1) unless that is what you want",
                    n.name, n.host
                )
            })
            .collect()
    }

    /// Standbys in an order where each comes after its upstream, grouped in waves that can
    /// be cloned in parallel.
    pub fn clone_waves(&self) -> Vec<Vec<&NodeSpec>> {
        let mut waves = Vec::new();
        let mut frontier = vec![self.root().name.as_str()];
        while !frontier.is_empty() {
            let wave: Vec<&NodeSpec> = self
                .nodes
                .iter()
                .filter(|n| n.upstream.as_deref().is_some_and(|u| frontier.contains(&u)))
                .collect();
            frontier = wave.iter().map(|n| n.name.as_str()).collect();
            if !wave.is_empty() {
                waves.push(wave);
            }
        }
        waves
    }
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    format!("line {line}, column {col}")
}

#[cfg(test)]
mod tests;

/// The values `synchronous_commit` accepts that make sense for a replication lab.
pub const COMMIT_LEVELS: &[&str] = &["on", "remote_write", "remote_apply", "local", "off"];

pub fn parse_commit_level(s: &str) -> Result<&'static str> {
    COMMIT_LEVELS
        .iter()
        .find(|l| **l == s)
        .copied()
        .ok_or_else(|| {
            Error::Invalid(format!(
                "invalid commit level '{s}': use one of {}",
                COMMIT_LEVELS.join(", ")
            ))
        })
}

impl SyncSpec {
    /// The value for `synchronous_standby_names`, e.g. `FIRST 1 ("sync2", "sync3")`.
    pub fn standby_names_setting(&self) -> String {
        let names: Vec<String> = self
            .standbys
            .iter()
            .map(|s| {
                if s == "*" {
                    s.clone()
                } else {
                    format!("\"{}\"", s.replace('"', "\"\""))
                }
            })
            .collect();
        let method = match self.method {
            SyncMethod::First => "FIRST",
            SyncMethod::Any => "ANY",
        };
        format!("{method} {} ({})", self.num, names.join(", "))
    }
}

/// Parses `synchronous_standby_names` as PostgreSQL does: `FIRST n (a, b)`, `ANY n (a, b)`,
/// `n (a, b)` (FIRST), or a bare list `a, b` (FIRST 1).
pub fn parse_standby_names(s: &str) -> Option<(SyncMethod, u32, Vec<String>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (method, rest) = match s.split_once(char::is_whitespace) {
        Some((w, rest)) if w.eq_ignore_ascii_case("first") => (SyncMethod::First, rest.trim()),
        Some((w, rest)) if w.eq_ignore_ascii_case("any") => (SyncMethod::Any, rest.trim()),
        _ => (SyncMethod::First, s),
    };
    let (num, list) = match rest.find('(') {
        Some(i) => {
            let num = rest[..i].trim().parse().ok()?;
            let close = rest.rfind(')')?;
            (num, &rest[i + 1..close])
        }
        None => (1, rest),
    };
    let names = list
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_string())
        .filter(|n| !n.is_empty())
        .collect();
    Some((method, num, names))
}
