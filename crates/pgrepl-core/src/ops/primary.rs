//! `pgrepl primary init` (the lab's 01_replication_setup.sql): a primary ready for standbys.

use crate::cluster::Cluster;
use crate::error::{Error, Result, ResultExt};
use crate::ops::{config, Outcome};
use crate::postgres::queries;
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
        // The verifier is computed here: the plain password never travels in SQL, so it
        // cannot end up in a server log.
        let verifier = postgres_protocol::password::scram_sha_256(secrets.replication.as_bytes());
        client
            .batch_execute(&format!(
                "CREATE ROLE \"{user}\" WITH REPLICATION LOGIN PASSWORD '{verifier}'"
            ))
            .await
            .what(|| format!("cannot create role {user}"))?;
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
