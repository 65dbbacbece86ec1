//! `pgrepl primary init` (the lab's 01_replication_setup.sql): a primary ready for standbys.

use crate::cluster::Cluster;
use crate::error::{Error, Result, ResultExt};
use crate::ops::{config, Outcome};
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
        cluster.ensure_dir().await?;
        let secrets =
            match Secrets::load(&cluster.passfile(), &cluster.spec.cluster.replication_user)? {
                Some(s) => s,
                None => Secrets::generate(),
            };
        cluster.write_passfile(&secrets)?;
        progress.step(&format!("initdb {node}"));
        let pwfile = cluster.dir.join(".initdb-pw");
        cluster.write_file(&pwfile, &secrets.superuser)?;
        // Made by us for the OS user: the cluster directory may be one pgrepl took over and
        // left as it was, where that user cannot create directories.
        cluster.create_private_dir(&server.data)?;
        let res = server.initdb(&pwfile).await;
        let _ = std::fs::remove_file(&pwfile);
        res?;
        config::add_includes(&server.data)?;
        cluster.write_file(
            &server.data.join(config::CLUSTER_CONF),
            &config::cluster_conf(cluster),
        )?;
        cluster.write_file(&server.data.join("pg_hba.conf"), &config::pg_hba(cluster))?;
        if let Some(ident) = config::pg_ident(cluster) {
            cluster.write_file(&server.data.join("pg_ident.conf"), &ident)?;
        }
        config::write_node_files(cluster, spec, &server.data)?;
        done.push(format!(
            "initialized {} (data checksums on)",
            server.data.display()
        ));
    }
    if !server.is_running().await {
        progress.step(&format!("starting {node}"));
        server.start().await?;
        done.push("started it".into());
    }

    let client = cluster.connect(node).await?;
    let pos = queries::position(&client).await?;
    if pos.in_recovery {
        return Err(Error::Precondition(format!(
            "'{node}' is running as a standby: `primary init` applies to a primary (promote it first with `pgrepl promote {node}`)"
        )));
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
