//! Spec validation: every message names the offending entry and how to fix it.

use std::collections::{HashMap, HashSet};

use super::{ClusterSpec, RuntimeKind, SyncSpec};
use crate::error::{Error, Result};

/// Ports below this one are privileged: only root may listen there, and PostgreSQL never
/// runs as root.
pub(crate) const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// PostgreSQL's limit on a name (NAMEDATALEN - 1).
const NAME_MAX: usize = 63;

/// A value as an error message shows it: quoted, with any line break escaped so that the
/// message stays one line.
pub(crate) fn shown(v: &str) -> String {
    if v.chars().any(char::is_control) {
        format!("{v:?}")
    } else {
        format!("'{v}'")
    }
}

/// PostgreSQL accepts lower-case letters, digits and underscores, at most 63 bytes.
pub fn validate_slot_name(slot: &str) -> Result<()> {
    let ok_chars = slot
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if slot.is_empty() || slot.len() > NAME_MAX || !ok_chars {
        return Err(Error::Invalid(format!(
            "invalid replication slot name {}: PostgreSQL's rule for slot names is 1 to 63 lower-case letters, digits or underscores (e.g. '{}')",
            shown(slot),
            suggest_slot(slot)
        )));
    }
    Ok(())
}

/// Names pgrepl writes into configuration files, conninfo strings and
/// `synchronous_standby_names` (node, cluster and application names): what PostgreSQL takes
/// as a name (at most 63 bytes), restricted to characters none of those places needs to
/// quote, so that no name can carry a quote or a line break into them.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !name.starts_with('-');
    if !ok {
        return Err(Error::Invalid(format!(
            "invalid {what} {}: use 1 to 63 ASCII letters, digits, '_' or '-', not starting with '-' (a PostgreSQL name that needs no quoting)",
            shown(name)
        )));
    }
    Ok(())
}

/// The replication role: an unquoted PostgreSQL identifier, as in the lab's scripts.
fn validate_role_name(user: &str) -> Result<()> {
    if !is_identifier(user) {
        return Err(Error::Invalid(format!(
            "invalid replication_user {}: follow PostgreSQL's rule for unquoted identifiers: a lower-case letter or '_' first, then lower-case letters, digits or '_', at most 63",
            shown(user)
        )));
    }
    Ok(())
}

/// Characters a data directory's path must not hold: pg_ctl hands it to a shell inside
/// double quotes (where these keep a meaning), and a line break would end the line of a
/// configuration file that names the passfile.
pub fn validate_data_path(path: &std::path::Path) -> Result<()> {
    let text = path.to_string_lossy();
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() || matches!(c, '"' | '$' | '`' | '\\'))
    {
        return Err(Error::Invalid(format!(
            "the cluster's data directory {} holds {c:?}, which PostgreSQL's tools cannot take in a path: set data_dir in the cluster file to a path without it",
            shown(&text)
        )));
    }
    Ok(())
}

pub(crate) fn suggest_slot(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    if out.is_empty() {
        out = "node_slot".into();
    }
    out
}

/// A WAL size setting as PostgreSQL reads it: an integer in MB or with a unit (kB, MB, GB,
/// TB), or -1 for no limit.
pub fn validate_wal_size(setting: &str, value: &str) -> Result<()> {
    let v = value.trim();
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let ok = v == "-1"
        || (digits > 0
            && v[..digits].parse::<u64>().is_ok()
            && ["", "kB", "MB", "GB", "TB"].contains(&v[digits..].trim_start()));
    if !ok {
        return Err(Error::Invalid(format!(
            "invalid {setting} '{}': use a size such as \"1GB\" or \"512MB\" (kB, MB, GB, TB; a bare number is MB), or \"-1\" for no limit",
            value.escape_debug()
        )));
    }
    Ok(())
}

/// Checks a `[sync]` configuration against the cluster's application names.
pub fn validate_sync_names(spec: &ClusterSpec, sync: &SyncSpec, allow_unknown: bool) -> Result<()> {
    if sync.standbys.is_empty() {
        return Err(Error::Invalid(
            "synchronous replication needs at least one standby name (e.g. --standbys sync2,sync3)"
                .into(),
        ));
    }
    let n = sync.standbys.len() as u32;
    let wildcard = sync.standbys.iter().any(|s| s == "*");
    // `*` stands for every standby: at most all nodes but the primary can confirm.
    let standbys = spec.nodes.len().saturating_sub(1) as u32;
    if sync.num == 0 || (!wildcard && sync.num > n) {
        return Err(Error::Invalid(format!(
            "--num {} is out of range: it must be between 1 and the number of standby names ({n})",
            sync.num
        )));
    }
    if wildcard && sync.num > standbys {
        return Err(Error::Invalid(format!(
            "--num {} is out of range: with '*' it must be between 1 and the number of standbys ({standbys})",
            sync.num
        )));
    }
    let mut seen = HashSet::new();
    for name in &sync.standbys {
        if name != "*" {
            validate_name("synchronous standby name", name)?;
        }
        if !seen.insert(name) {
            return Err(Error::Invalid(format!(
                "standby name '{name}' is listed twice in the synchronous standbys"
            )));
        }
        if name != "*" && !allow_unknown && !spec.nodes.iter().any(|n| n.application_name() == name)
        {
            let known: Vec<&str> = spec
                .nodes
                .iter()
                .filter(|n| !n.is_root())
                .map(|n| n.application_name())
                .collect();
            return Err(Error::Invalid(format!(
                "'{name}' is not the application name of any standby (known: {}); names must equal a standby's application_name, or pass --allow-unknown",
                known.join(", ")
            )));
        }
    }
    if let Some(commit) = &sync.commit {
        crate::spec::parse_commit_level(commit)?;
    }
    Ok(())
}

impl ClusterSpec {
    pub fn validate(&self) -> Result<()> {
        let c = &self.cluster;
        validate_name("cluster name", &c.name)?;
        validate_role_name(&c.replication_user)?;
        if let Some(d) = &c.data_dir {
            validate_data_path(d)?;
        }
        validate_wal_size("max_slot_wal_keep_size", &c.max_slot_wal_keep_size)?;
        if c.replication_user == "postgres" {
            return Err(Error::Invalid(
                "replication_user must not be the superuser 'postgres': use a dedicated role such as 'repluser'".into(),
            ));
        }
        match (&c.subnet, c.runtime) {
            (Some(s), RuntimeKind::Netns | RuntimeKind::Docker) => {
                crate::runtime::netns::subnet::validate(s).map_err(Error::Invalid)?;
            }
            (Some(_), other) => {
                return Err(Error::Invalid(format!(
                    "`subnet` is used by the netns and docker runtimes only, and this cluster's runtime is {other}: remove it, or set runtime = \"netns\" or \"docker\""
                )))
            }
            (None, _) => {}
        }
        if c.runtime == RuntimeKind::Netns
            && self.nodes.len() > crate::runtime::netns::subnet::MAX_NODES
        {
            return Err(Error::Invalid(format!(
                "the netns runtime's /24 holds {} nodes, and the cluster file has {}",
                crate::runtime::netns::subnet::MAX_NODES,
                self.nodes.len()
            )));
        }
        if self.nodes.is_empty() {
            return Err(Error::Invalid(
                "the cluster has no nodes: add a [[node]] entry (or run `pgrepl init --force`)"
                    .into(),
            ));
        }

        let mut names = HashSet::new();
        let mut addrs = HashMap::new();
        let mut slots: HashMap<(&str, &str), &str> = HashMap::new();
        let mut apps = HashMap::new();
        for n in &self.nodes {
            validate_name("node name", &n.name)?;
            if let Some(app) = &n.application_name {
                validate_name(&format!("application_name of node '{}'", n.name), app)?;
            }
            if !names.insert(n.name.as_str()) {
                return Err(Error::Invalid(format!(
                    "duplicate node name '{}': each [[node]] needs its own name",
                    n.name
                )));
            }
            if n.port == 0 {
                return Err(Error::Invalid(format!(
                    "node '{}' has port 0: give it a real port",
                    n.name
                )));
            }
            if n.port < FIRST_UNPRIVILEGED_PORT && c.runtime == RuntimeKind::Local {
                return Err(Error::Invalid(format!(
                    "node '{}' has port {}, a privileged port (below 1024) where PostgreSQL, running as an unprivileged user, cannot listen: give it a port from 1024 to 32767 (the lab uses 15432-15435)",
                    n.name, n.port
                )));
            }
            // Where every node has an address of its own (netns), ports cannot clash; docker
            // publishes every node's port on the host, so there they can.
            let shared_host = c.runtime != RuntimeKind::Netns;
            if let Some(other) = addrs
                .insert((n.host, n.port), n.name.as_str())
                .filter(|_| shared_host)
            {
                return Err(Error::Invalid(format!(
                    "duplicate port: nodes '{other}' and '{}' both use {}:{}; give each node its own port",
                    n.name, n.host, n.port
                )));
            }
            if let Some(other) = apps.insert(n.application_name(), n.name.as_str()) {
                return Err(Error::Invalid(format!(
                    "duplicate application_name '{}' on nodes '{other}' and '{}': each standby needs its own",
                    n.application_name(),
                    n.name
                )));
            }
            match (&n.upstream, &n.slot) {
                (None, Some(_)) => {
                    return Err(Error::Invalid(format!(
                        "node '{}' has a slot but no upstream: a slot belongs to a standby (set upstream = \"...\")",
                        n.name
                    )))
                }
                (Some(up), slot) => {
                    if up == &n.name {
                        return Err(Error::Invalid(format!(
                            "node '{}' names itself as upstream",
                            n.name
                        )));
                    }
                    if let Some(slot) = slot {
                        validate_slot_name(slot)?;
                        if let Some(other) = slots.insert((up.as_str(), slot.as_str()), &n.name) {
                            return Err(Error::Invalid(format!(
                                "duplicate slot '{slot}' on upstream '{up}': nodes '{other}' and '{}' cannot share a slot",
                                n.name
                            )));
                        }
                    }
                }
                (None, None) => {}
            }
        }
        // Slot names must also be unique across the cluster: after a failover every slot
        // is recreated on the new primary.
        let mut all_slots = HashMap::new();
        for n in &self.nodes {
            if let Some(slot) = &n.slot {
                if let Some(other) = all_slots.insert(slot.as_str(), n.name.as_str()) {
                    return Err(Error::Invalid(format!(
                        "duplicate slot '{slot}': nodes '{other}' and '{}' cannot share a slot",
                        n.name
                    )));
                }
            }
        }

        for n in &self.nodes {
            if let Some(up) = &n.upstream {
                if !names.contains(up.as_str()) {
                    return Err(Error::Invalid(format!(
                        "node '{}' has unknown upstream '{up}' (nodes: {})",
                        n.name,
                        self.node_names()
                    )));
                }
            }
        }

        let roots: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.is_root())
            .map(|n| n.name.as_str())
            .collect();
        // A cycle shows up as nodes that cannot be reached from the root.
        for n in &self.nodes {
            let mut seen = HashSet::new();
            let mut cur = n;
            while let Some(up) = &cur.upstream {
                if !seen.insert(cur.name.as_str()) {
                    return Err(Error::Invalid(format!(
                        "upstream cycle through node '{}': every chain of upstreams must end at the primary",
                        n.name
                    )));
                }
                cur = self
                    .nodes
                    .iter()
                    .find(|m| &m.name == up)
                    .expect("checked above");
            }
        }
        match roots.len() {
            1 => {}
            0 => unreachable!("no root without a cycle"),
            _ => {
                return Err(Error::Invalid(format!(
                    "nodes {} have no upstream: exactly one node (the primary) may lack `upstream`",
                    roots.join(", ")
                )))
            }
        }
        if let Some(sync) = &self.sync {
            validate_sync_names(self, sync, sync.allow_unknown)
                .map_err(|e| Error::Invalid(format!("[sync]: {e}")))?;
        }
        if let Some(m) = &self.monitor {
            m.interval()?;
            m.failover_timeout()?;
        }
        Ok(())
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}
