//! `pgrepl primary init` (the lab's 01_replication_setup.sql): a primary ready for standbys.

use crate::cluster::Cluster;
use crate::error::{Error, Result, ResultExt};
use crate::ops::{config, guard, Outcome};
use crate::postgres::conn::Conn;
use crate::postgres::{queries, quote};
use crate::progress::Progress;
use crate::secrets::Secrets;

/// Initializes `node` as the primary: initdb (checksums on) when there is no data yet, the
/// replication settings, the replication role with a generated password, pg_hba limited to
/// the cluster's addresses, and a slot for every standby the spec places under it.
pub async fn init(cluster: &Cluster, node: &str, progress: &dyn Progress) -> Result<Outcome> {
    let spec = cluster.node(node)?;
    if let Some(up) = &spec.upstream {
        return Err(Error::Precondition(format!(
            "'{node}' is a standby of '{up}' in the cluster file: `primary init` applies to the primary ('{}')",
            cluster.spec.root().name
        )));
    }
    let server = cluster.server(node)?;
    let mut done = Vec::new();

    if !server.exists() {
        refuse_to_replace_held_data(cluster, node)?;
        cluster.ensure_dir().await?;
        let secrets =
            match Secrets::load(&cluster.passfile(), &cluster.spec.cluster.replication_user)? {
                Some(s) => s,
                None => Secrets::generate(),
            };
        cluster.write_passfile(&secrets)?;
        // initdb works in a staging directory renamed into place once configured: an `up`
        // killed halfway leaves no data directory that could start with initdb's defaults.
        let staging = cluster.dir.join(format!(".{node}.init"));
        let pwfile = cluster.dir.join(format!(".{node}.init-pw"));
        for leftover in [&pwfile, &cluster.dir.join(".initdb-pw")] {
            remove_if_present(leftover)?;
        }
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .what(|| format!("cannot remove the stale {}", staging.display()))?;
        }
        progress.step(&format!("initdb {node}"));
        // initdb stores what it is given as the superuser's password; given a SCRAM verifier it
        // stores that as is: the password itself is never written anywhere but the passfile.
        let verifier = postgres_protocol::password::scram_sha_256(secrets.superuser.as_bytes());
        cluster.write_file(&pwfile, &verifier)?;
        // Made by us for the OS user: the cluster directory may be one pgrepl took over and
        // left as it was, where that user cannot create directories.
        cluster.create_private_dir(&staging)?;
        let res = server.initdb(&staging, &pwfile).await;
        let _ = std::fs::remove_file(&pwfile);
        res?;
        crate::crashpoint::reached("primary init: initdb done");
        config::add_includes(&staging)?;
        cluster.write_file(
            &staging.join(config::CLUSTER_CONF),
            &config::cluster_conf(cluster),
        )?;
        cluster.write_file(&staging.join("pg_hba.conf"), &config::pg_hba(cluster))?;
        if let Some(ident) = config::pg_ident(cluster) {
            cluster.write_file(&staging.join("pg_ident.conf"), &ident)?;
        }
        config::write_node_files(cluster, spec, &staging)?;
        std::fs::rename(&staging, &server.data)
            .what(|| format!("cannot move {} into place", staging.display()))?;
        crate::crashpoint::reached("primary init: data directory in place");
        done.push(format!(
            "initialized {} (data checksums on)",
            server.data.display()
        ));
    }
    if !server.is_running().await {
        match guard::start(cluster, node, progress).await? {
            guard::Started::Primary { .. } => done.push("started it".into()),
            standby @ guard::Started::Standby { .. } => {
                let next = super::journal::interrupted(cluster)
                    .unwrap_or_else(|| "`primary init` applies to a primary".into());
                return Err(Error::Precondition(format!(
                    "{}; {next}",
                    standby.describe(node).replace('\n', "; ")
                )));
            }
        }
    }

    // It may still be starting: an `up` killed after it started the server comes back here.
    let client = cluster
        .connect_once_started(node, std::time::Duration::from_secs(60))
        .await?;
    let pos = queries::position(&client).await?;
    if pos.in_recovery {
        return Err(Error::Precondition(match super::journal::interrupted(cluster) {
            Some(next) => format!("'{node}' is running as a standby; {next}"),
            None => format!(
                "'{node}' is running as a standby: `primary init` applies to a primary (promote it first with `pgrepl promote {node}`)"
            ),
        }));
    }
    // Settings changed in the cluster file since (max_slot_wal_keep_size, say) apply now.
    if config::apply_shared(cluster, node).await? {
        done.push("applied the cluster file's settings (reloaded)".into());
    }
    let secrets = cluster.secrets()?;
    let user = &cluster.spec.cluster.replication_user;
    let exists: bool = client
        .query_one(
            "SELECT count(*) > 0 FROM pg_roles WHERE rolname = $1",
            &[user],
        )
        .await
        .what(|| "cannot look up the replication role".into())?
        .get(0);
    if !exists {
        create_role(cluster, &client, user, &secrets.replication).await?;
        done.push(format!(
            "created role {user} (SCRAM-SHA-256, password in {})",
            cluster.passfile().display()
        ));
    }
    let mut slots = Vec::new();
    for standby in cluster.spec.downstream_of(node) {
        if let Some(slot) = &standby.slot {
            if queries::ensure_slot(&client, slot).await? {
                slots.push(slot.as_str());
            }
        }
    }
    if !slots.is_empty() {
        done.push(format!("created slots {}", slots.join(", ")));
    }
    Ok(if done.is_empty() {
        Outcome::AlreadyDone(format!("{node} is already initialized as the primary"))
    } else {
        Outcome::Done(format!("{node}: {}", done.join("; ")))
    })
}

/// Creates the replication role from a SCRAM verifier computed here, so the plain password
/// never travels. Nor does the verifier (it would let anyone who reads it attack the
/// password offline): the server reads it from a private file, and the statement that is
/// sent, which client and server logs may show, holds only that file's path.
async fn create_role(cluster: &Cluster, client: &Conn, user: &str, password: &str) -> Result<()> {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let file = cluster.dir.join(".role-verifier");
    cluster.write_file(&file, &verifier)?;
    let sql = format!(
        "DO $pgrepl$ BEGIN EXECUTE format('CREATE ROLE %I WITH REPLICATION LOGIN PASSWORD %L', {}, pg_read_file({})); END $pgrepl$",
        quote::literal(user),
        quote::literal(&file.to_string_lossy())
    );
    let res = client
        .batch_execute(&sql)
        .await
        .what(|| format!("cannot create role {user}"));
    let _ = std::fs::remove_file(&file);
    res
}

/// A primary without data whose standbys hold the cluster's data must not be initialized
/// afresh: it would be an empty primary of another database system that none of them can
/// follow, and `status` would have to untangle it.
fn refuse_to_replace_held_data(cluster: &Cluster, node: &str) -> Result<()> {
    let holders: Vec<&str> = cluster
        .spec
        .nodes
        .iter()
        .filter(|n| n.name != node && crate::node::has_data(&cluster.data_dir(&n.name)))
        .map(|n| n.name.as_str())
        .collect();
    let Some(first) = holders.first() else {
        return Ok(());
    };
    Err(Error::Precondition(format!(
        "{node} has no data directory, but {} {} the cluster's data: initializing {node} afresh would make an empty primary that none of them can follow; make one of them the primary (`pgrepl start {first}` then `pgrepl failover --to {first}`, or `pgrepl promote {first}` if it runs), then rebuild {node} from it with `pgrepl rejoin {node} --upstream {first} --reclone`",
        holders.join(", "),
        if holders.len() == 1 { "holds" } else { "hold" }
    )))
}

fn remove_if_present(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).what(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}
