//! Synchronous replication (the lab's 20_enable_sync_replication.sql and
//! 21_disable_sync_replication.sql).

use crate::cluster::Cluster;
use crate::error::{Result, ResultExt};
use crate::spec::SyncSpec;

/// Applies the spec's `[sync]` intent to `primary` (after `up`, a promotion or a
/// switchover): the new primary drops itself from the list. Returns what it set, or None
/// when the spec asks for no synchronous replication.
pub async fn apply_to_primary(cluster: &Cluster, primary: &str) -> Result<Option<String>> {
    let Some(sync) = &cluster.spec.sync else {
        return Ok(None);
    };
    let own = cluster.node(primary)?.application_name().to_string();
    let names: Vec<String> = sync
        .standbys
        .iter()
        .filter(|n| **n != own)
        .cloned()
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    let effective = SyncSpec {
        num: sync.num.min(names.len() as u32).max(1),
        standbys: names,
        ..sync.clone()
    };
    let setting = effective.standby_names_setting();
    let c = cluster.connect(primary).await?;
    let mut sql = format!(
        "ALTER SYSTEM SET synchronous_standby_names = '{}';",
        setting.replace('\'', "''")
    );
    if let Some(commit) = &sync.commit {
        sql += &format!("ALTER SYSTEM SET synchronous_commit = '{commit}';");
    }
    c.batch_execute(&sql)
        .await
        .what(|| format!("cannot set synchronous_standby_names on {primary}"))?;
    c.batch_execute("SELECT pg_reload_conf()")
        .await
        .what(|| "cannot reload".into())?;
    Ok(Some(setting))
}
