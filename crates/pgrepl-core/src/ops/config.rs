//! The configuration files pgrepl owns in every data directory. postgresql.conf includes
//! them; clones and rewinds copy them from the source, so the per-node file is rewritten
//! after every copy.

use std::fmt::Write as _;
use std::path::Path;

use crate::cluster::Cluster;
use crate::error::{Result, ResultExt};
use crate::spec::NodeSpec;

pub const CLUSTER_CONF: &str = "pgrepl.conf";
pub const NODE_CONF: &str = "pgrepl.node.conf";
/// The pg_ident.conf map of the local socket's peer authentication.
const IDENT_MAP: &str = "pgrepl";

/// One line of a configuration file. Every value goes through here, quoted, so that no value
/// can end its line and start another setting.
fn setting(key: &str, value: impl std::fmt::Display) -> String {
    format!("{key} = {}\n", quote_setting(&value.to_string()))
}

/// A value as postgresql.conf reads it: in single quotes, where a quote is doubled and a
/// backslash starts an escape (so it is doubled too); line breaks become escapes.
pub fn quote_setting(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Replication settings shared by every node (copied to standbys by pg_basebackup).
pub fn cluster_conf(cluster: &Cluster) -> String {
    let n = cluster.spec.nodes.len().max(4) * 2 + 2;
    [
        format!(
            "# Written by pgrepl for cluster '{}': settings every node shares.\n",
            cluster.name()
        ),
        setting("wal_level", "replica"),
        setting("max_wal_senders", n),
        setting("max_replication_slots", n),
        setting("hot_standby", "on"),
        setting("hot_standby_feedback", "on"),
        "# Every standby streams through a slot, which keeps the WAL it needs; this is a\n\
         # margin only. pg_rewind copies all of the source's pg_wal, so a large margin (or\n\
         # recycled segments, hence wal_recycle off) makes every rejoin copy that much.\n"
            .into(),
        setting("wal_keep_size", "16MB"),
        setting("wal_recycle", "off"),
        "# A slot keeps the WAL its standby still needs, but no more than this: a standby down\n\
         # for longer loses its slot (`pgrepl status` warns) and needs\n\
         # `pgrepl rejoin NODE --upstream UPSTREAM --reclone`,\n\
         # where an unbounded slot would fill its upstream's disk until PostgreSQL stops. From\n\
         # max_slot_wal_keep_size in the cluster file.\n"
            .into(),
        setting(
            "max_slot_wal_keep_size",
            &cluster.spec.cluster.max_slot_wal_keep_size,
        ),
        "# A rewound or crashed node syncs its whole data directory at start: one syncfs()\n\
         # instead of an fsync() per file (seconds at 500 MB).\n"
            .into(),
        setting("recovery_init_sync_method", "syncfs"),
        "# pg_rewind needs checksums or wal_log_hints; checksums are on, this covers clusters\n\
         # initialized without them.\n"
            .into(),
        setting("wal_log_hints", "on"),
        "# Fresh lag figures and quick reconnects after a failover (defaults: 10s and 5s).\n"
            .into(),
        setting("wal_receiver_status_interval", "1s"),
        setting("wal_retrieve_retry_interval", "500ms"),
        setting("password_encryption", "scram-sha-256"),
        "# TCP only: no socket files to collide between clusters.\n".into(),
        setting("unix_socket_directories", ""),
        setting("log_line_prefix", "%m [%p] %q%a "),
    ]
    .concat()
}

/// The node's own settings: where it listens and, for a standby, what it streams from.
pub fn node_conf(cluster: &Cluster, node: &NodeSpec) -> Result<String> {
    let listen = cluster.runtime.listen(node);
    let mut s = format!(
        "# Written by pgrepl for node '{}': rewritten on every clone, rewind and repoint.\n\
         # Change the cluster file (pgrepl.toml) instead of this file.\n",
        node.name
    );
    s += &setting("port", listen.port);
    s += &setting("listen_addresses", &listen.addresses);
    // `ps` shows it in every process title: two clusters' pg0 are told apart.
    s += &setting("cluster_name", format!("{}/{}", cluster.name(), node.name));
    if let Some(dir) = &listen.socket_dir {
        s += &setting("unix_socket_directories", dir);
    }
    if let Some(up) = &node.upstream {
        let upstream = cluster.node(up)?;
        let conninfo = cluster.peer_conninfo(
            upstream,
            &cluster.spec.cluster.replication_user,
            node.application_name(),
        );
        s += &setting("primary_conninfo", conninfo);
        if let Some(slot) = &node.slot {
            s += &setting("primary_slot_name", slot);
        }
    }
    Ok(s)
}

/// Client authentication: only the cluster's own addresses, always with a SCRAM password;
/// where the runtime gives nodes a local socket, the OS user and root as `postgres` on it
/// (peer authentication: the kernel vouches for them). The replication line must be on the
/// primary before cloning, since clones copy it.
pub fn pg_hba(cluster: &Cluster) -> String {
    let mut s = String::from(
        "# Written by pgrepl: only the cluster's own addresses, always with a password (SCRAM).\n\
         # TYPE  DATABASE     USER          ADDRESS              METHOD\n",
    );
    if cluster.runtime.local_socket() {
        writeln!(
            s,
            "local   all          postgres                           peer map={IDENT_MAP}"
        )
        .unwrap();
    }
    for cidr in cluster.runtime.hba_networks(&cluster.spec.nodes) {
        let user = &cluster.spec.cluster.replication_user;
        writeln!(
            s,
            "host    replication  {user:<12}  {cidr:<19}  scram-sha-256"
        )
        .unwrap();
        writeln!(
            s,
            "host    all          all           {cidr:<19}  scram-sha-256"
        )
        .unwrap();
    }
    s
}

/// The user map of pg_hba's local line: root and the OS user may connect as `postgres`.
/// None when the runtime gives nodes no local socket.
pub fn pg_ident(cluster: &Cluster) -> Option<String> {
    if !cluster.runtime.local_socket() {
        return None;
    }
    let mut s = String::from(
        "# Written by pgrepl: who may connect as postgres over the local socket.\n\
         # MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n",
    );
    let os_user = cluster.os_user_name();
    for user in ["root", os_user.as_str()] {
        writeln!(s, "{IDENT_MAP:<9}  {user:<15}  postgres").unwrap();
    }
    Some(s)
}

/// Makes a fresh initdb'd data directory include pgrepl's files.
pub fn add_includes(data: &Path) -> Result<()> {
    let conf = data.join("postgresql.conf");
    let mut text =
        std::fs::read_to_string(&conf).what(|| format!("cannot read {}", conf.display()))?;
    if !text.contains(CLUSTER_CONF) {
        text += &format!(
            "\n# Added by pgrepl\ninclude '{CLUSTER_CONF}'\ninclude_if_exists '{NODE_CONF}'\n"
        );
        std::fs::write(&conf, text).what(|| format!("cannot write {}", conf.display()))?;
    }
    Ok(())
}

/// Writes the node's settings and its role marker (standby.signal for a standby). The shared
/// settings are rewritten too: pgrepl.conf is pgrepl's file, and a cluster made by an older
/// pgrepl (or whose cluster file changed) gets its current settings at the node's next start
/// or reload.
pub fn write_node_files(cluster: &Cluster, node: &NodeSpec, data: &Path) -> Result<()> {
    write_shared(cluster, data)?;
    cluster.write_file(&data.join(NODE_CONF), &node_conf(cluster, node)?)?;
    let signal = data.join("standby.signal");
    if node.upstream.is_some() {
        cluster.write_file(&signal, "")?;
    } else if signal.exists() {
        std::fs::remove_file(&signal).what(|| format!("cannot remove {}", signal.display()))?;
    }
    Ok(())
}

/// Rewrites pgrepl.conf from the cluster file when it says something else; true when it did.
fn write_shared(cluster: &Cluster, data: &Path) -> Result<bool> {
    let path = data.join(CLUSTER_CONF);
    let text = cluster_conf(cluster);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(false);
    }
    cluster.write_file(&path, &text)?;
    Ok(true)
}

/// Brings a running node's shared settings up to the cluster file (after a role change, the
/// new primary's max_slot_wal_keep_size above all): rewrites pgrepl.conf and reloads when it
/// changed. Settings that need a restart (max_wal_senders) wait for the next one.
pub async fn apply_shared(cluster: &Cluster, node: &str) -> Result<bool> {
    let data = cluster.data_dir(node);
    if !write_shared(cluster, &data)? {
        return Ok(false);
    }
    cluster
        .connect(node)
        .await?
        .execute("SELECT pg_reload_conf()", &[])
        .await
        .what(|| format!("cannot reload {node}"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_value_stays_on_its_line() {
        assert_eq!(
            setting("application_name", "a'\nwork_mem=77MB\n#"),
            "application_name = 'a''\\nwork_mem=77MB\\n#'\n"
        );
        // A conninfo value quoted for libpq, then for postgresql.conf.
        assert_eq!(
            quote_setting(r"passfile='/x/it\'s'"),
            r"'passfile=''/x/it\\''s'''"
        );
    }
}
