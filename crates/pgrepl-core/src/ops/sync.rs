//! Synchronous replication (the lab's 20_enable_sync_replication.sql and
//! 21_disable_sync_replication.sql), always on whichever node is primary now: after a
//! failover the lab's scripts would configure a node that is no longer the primary.

use std::time::Duration;

use crate::postgres::conn::Conn;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::error::{Error, Result, ResultExt};
use crate::observe::topology::{self, Probe};
use crate::ops::wait;
use crate::postgres::queries::{self, Downstream};
use crate::postgres::quote;
use crate::progress::Progress;
use crate::spec::{parse_standby_names, validate_sync_names, ClusterSpec, SyncMethod, SyncSpec};

/// The lab's synchronous standby candidates (pg2 and pg3), used when the spec has no `[sync]`.
pub const DEFAULT_STANDBYS: &[&str] = &["sync2", "sync3"];

/// How long pg_stat_replication may take to show a new setting, and waiting commits to be
/// released after `disable`. Both take milliseconds; the bound only catches a stuck server.
const REFLECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What `sync enable` was asked. Unset fields come from the spec's `[sync]`, else the lab's
/// default `FIRST 1 (sync2, sync3)`.
#[derive(Debug, Clone, Default)]
pub struct EnableRequest {
    pub standbys: Option<Vec<String>>,
    pub method: Option<SyncMethod>,
    pub num: Option<u32>,
    pub commit: Option<String>,
    pub allow_unknown: bool,
}

impl EnableRequest {
    /// `--standbys` may name nodes: synchronous_standby_names needs their application
    /// names, so a node's name becomes its application name, and a note says so. A name
    /// that is some node's application name is kept as it is.
    pub fn with_application_names(&self, spec: &ClusterSpec) -> (EnableRequest, Vec<String>) {
        let mut notes = Vec::new();
        let standbys = self.standbys.as_ref().map(|names| {
            names
                .iter()
                .map(|given| {
                    let name = given.trim();
                    let is_app = spec
                        .nodes
                        .iter()
                        .any(|n| same_name(n.application_name(), name));
                    match spec.nodes.iter().find(|n| n.name == name) {
                        Some(n) if !is_app => {
                            let app = n.application_name();
                            notes.push(format!(
                                "{name}'s application name is {app}: synchronous_standby_names lists standbys by application name, so {name} is listed as {app}"
                            ));
                            app.to_string()
                        }
                        _ => name.to_string(),
                    }
                })
                .collect()
        });
        (
            EnableRequest {
                standbys,
                ..self.clone()
            },
            notes,
        )
    }

    /// The configuration asked for, before any check.
    pub fn resolve(&self, spec: &ClusterSpec) -> SyncSpec {
        let base = spec.sync.clone().unwrap_or_else(|| SyncSpec {
            standbys: DEFAULT_STANDBYS.iter().map(|s| s.to_string()).collect(),
            method: SyncMethod::First,
            num: 1,
            commit: None,
            allow_unknown: false,
        });
        let standbys: Option<Vec<String>> = self.standbys.as_ref().map(|l| {
            l.iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        });
        // A new list does not inherit how the old one was counted: `--standbys a,b` alone
        // means FIRST 1 (a, b), as in PostgreSQL.
        let (method, num) = match standbys {
            Some(_) => (SyncMethod::First, 1),
            None => (base.method, base.num),
        };
        SyncSpec {
            num: self.num.unwrap_or(num),
            method: self.method.unwrap_or(method),
            allow_unknown: self.allow_unknown || (standbys.is_none() && base.allow_unknown),
            standbys: standbys.unwrap_or(base.standbys),
            commit: self.commit.clone().or(base.commit),
        }
    }
}

/// A standby as the primary's pg_stat_replication shows it, or a named one it lacks.
#[derive(Debug, Clone, Serialize)]
pub struct StandbyRow {
    pub node: Option<String>,
    pub application_name: String,
    /// The walsender's state (`streaming`, `catchup`, ...); None when not connected.
    pub state: Option<String>,
    pub sync_priority: Option<i32>,
    pub sync_state: Option<String>,
    /// Why a named standby is missing.
    pub note: Option<String>,
}

/// The outcome of `sync enable` / `sync disable`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub primary: String,
    /// `synchronous_standby_names` on the primary now ('' when disabled).
    pub standby_names: String,
    pub synchronous_commit: String,
    pub standbys: Vec<StandbyRow>,
    /// Said before the change (also printed through the progress as it happens).
    pub warnings: Vec<String>,
    /// How the request was read (node names given for application names).
    pub notes: Vec<String>,
    pub message: String,
    pub changed: bool,
}

/// Where a standby named in `synchronous_standby_names` is, seen from the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// In the primary's pg_stat_replication.
    Connected {
        state: String,
        sync_priority: Option<i32>,
        sync_state: Option<String>,
    },
    /// The name is the primary's own: a node is never its own standby.
    IsPrimary,
    /// Streams (or is set to stream) from another standby: a cascaded standby never
    /// confirms anything to the primary, so it can never be synchronous.
    Cascaded { upstream: String },
    /// Its node is stopped, or runs without streaming from the primary.
    Down { running: bool },
    /// No node of the cluster has this application name.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Named {
    pub name: String,
    pub node: Option<String>,
    pub reach: Reach,
}

impl Named {
    /// `sync2 (pg2)`.
    pub fn label(&self) -> String {
        match &self.node {
            Some(n) if *n != self.name => format!("{} ({n})", self.name),
            _ => self.name.clone(),
        }
    }

    pub fn describe(&self, primary: &str) -> String {
        match &self.reach {
            Reach::Connected {
                state,
                sync_priority,
                sync_state,
            } if state == "streaming" => format!(
                "streaming from {primary}, {} (priority {})",
                sync_state.as_deref().unwrap_or("?"),
                sync_priority.unwrap_or(0)
            ),
            Reach::Connected { state, .. } => {
                format!("connected to {primary} but not streaming yet ({state})")
            }
            Reach::IsPrimary => "is the primary itself".into(),
            Reach::Cascaded { upstream } => {
                format!("streams from {upstream}, not from {primary} (cascaded: never synchronous)")
            }
            Reach::Down { running: false } => "stopped".into(),
            Reach::Down { running: true } => format!("running, but not streaming from {primary}"),
            Reach::Unknown => "not a node of this cluster, not connected".into(),
        }
    }

    fn streaming(&self) -> bool {
        matches!(&self.reach, Reach::Connected { state, .. } if state == "streaming")
    }
}

/// PostgreSQL compares standby names case-insensitively.
fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Finds where the standby called `name` is, from probes of every node.
pub fn locate(cluster: &Cluster, probes: &[Probe], primary: &str, name: &str) -> Named {
    let spec = cluster
        .spec
        .nodes
        .iter()
        .find(|n| same_name(n.application_name(), name));
    let node = spec.map(|n| n.name.clone());
    let primary_probe = probes.iter().find(|p| p.name == primary);
    let seen = primary_probe.and_then(|p| {
        p.downstreams
            .iter()
            .find(|d| same_name(&d.application_name, name))
    });
    let reach = if let Some(d) = seen {
        Reach::Connected {
            state: d.state.clone().unwrap_or_default(),
            sync_priority: d.sync_priority,
            sync_state: d.sync_state.clone(),
        }
    } else if let Some(n) = spec {
        let probe = probes.iter().find(|p| p.name == n.name);
        // Where it streams from now; else where the spec sends it, if that node is a standby.
        let observed = probe
            .and_then(|p| p.position.as_ref())
            .and_then(|pos| cluster.sender(pos))
            .map(|u| u.name.clone());
        let intended = n.upstream.clone().filter(|u| {
            probes
                .iter()
                .find(|p| &p.name == u)
                .is_some_and(Probe::is_standby)
        });
        if n.name == primary {
            Reach::IsPrimary
        } else if let Some(u) = observed.or(intended).filter(|u| u != primary) {
            Reach::Cascaded { upstream: u }
        } else {
            Reach::Down {
                running: probe.is_some_and(|p| p.running),
            }
        }
    } else {
        Reach::Unknown
    };
    Named {
        name: name.to_string(),
        node,
        reach,
    }
}

/// The priority PostgreSQL gives a standby called `app` (what pg_stat_replication's
/// sync_priority shows): its place in the list, `*` matching anything; 1 for every listed
/// standby with ANY; 0 when not listed.
pub fn expected_priority(method: SyncMethod, names: &[String], app: &str) -> i32 {
    match names.iter().position(|n| n == "*" || same_name(n, app)) {
        None => 0,
        Some(_) if method == SyncMethod::Any => 1,
        Some(i) => i as i32 + 1,
    }
}

/// The setting for a primary whose own application name is `own`: a node is never its own
/// standby, so its name is dropped (and the count capped); None when no name is left.
pub fn for_primary(sync: &SyncSpec, own: &str) -> Option<SyncSpec> {
    let names: Vec<String> = sync
        .standbys
        .iter()
        .filter(|n| !same_name(n, own))
        .cloned()
        .collect();
    if names.is_empty() {
        return None;
    }
    let wildcard = names.iter().any(|n| n == "*");
    Some(SyncSpec {
        num: if wildcard {
            sync.num.max(1)
        } else {
            sync.num.min(names.len() as u32).max(1)
        },
        standbys: names,
        ..sync.clone()
    })
}

/// Sets (or, with None, resets) synchronous_standby_names and synchronous_commit through
/// ALTER SYSTEM, reloads, and waits until the primary's pg_stat_replication shows it.
/// One statement at a time: ALTER SYSTEM refuses to run in the implicit transaction of a
/// multi-statement query.
pub(crate) async fn configure(
    c: &Conn,
    primary: &str,
    sync: Option<&SyncSpec>,
) -> Result<Vec<Downstream>> {
    let setting = sync
        .map(SyncSpec::standby_names_setting)
        .unwrap_or_default();
    let statements = match sync {
        Some(s) => [
            format!(
                "ALTER SYSTEM SET synchronous_standby_names = {}",
                quote::literal(&setting)
            ),
            match &s.commit {
                Some(level) => format!(
                    "ALTER SYSTEM SET synchronous_commit = {}",
                    quote::literal(crate::spec::parse_commit_level(level)?)
                ),
                None => "ALTER SYSTEM RESET synchronous_commit".into(),
            },
        ],
        None => [
            "ALTER SYSTEM RESET synchronous_standby_names".into(),
            "ALTER SYSTEM RESET synchronous_commit".into(),
        ],
    };
    for sql in statements
        .iter()
        .map(String::as_str)
        .chain(["SELECT pg_reload_conf()"])
    {
        c.batch_execute(sql)
            .await
            .what(|| format!("cannot change the synchronous replication settings of {primary}"))?;
    }
    let (method, names) = sync
        .map(|s| (s.method, s.standbys.clone()))
        .unwrap_or_default();
    // Our own backend reloads before its next statement, after the postmaster: once it shows
    // the new value, every new session has it; the walsenders show theirs as sync_priority.
    wait::until(
        &format!("{primary}'s pg_stat_replication to show synchronous_standby_names = '{setting}'"),
        REFLECT_TIMEOUT,
        || {
            let (setting, names) = (&setting, &names);
            async move {
                if queries::show(c, "synchronous_standby_names").await.ok()? != *setting {
                    return None;
                }
                let rows = queries::downstreams(c).await.ok()?;
                // Walsenders of a base backup, or still starting, have no priority yet.
                rows.iter()
                    .filter(|d| d.state.as_deref() == Some("streaming"))
                    .all(|d| {
                        d.sync_priority
                            == Some(expected_priority(method, names, &d.application_name))
                    })
                    .then_some(rows)
            }
        },
    )
    .await
}

/// `pgrepl sync enable`: checks everything first, warns when writes will block, applies the
/// setting on the current primary, waits until pg_stat_replication shows it, and records it
/// in the spec so that `up` and failovers carry it.
pub async fn enable(
    cluster: &mut Cluster,
    req: &EnableRequest,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let (req, notes) = req.with_application_names(&cluster.spec);
    let req = &req;
    let wanted = req.resolve(&cluster.spec);
    for n in &notes {
        progress.note(n);
    }
    validate_sync_names(&cluster.spec, &wanted, wanted.allow_unknown)?;
    let primary = topology::current_primary(cluster).await?;
    let own = cluster.node(&primary)?.application_name().to_string();
    if let Some(given) = &req.standbys {
        if given.iter().any(|n| same_name(n.trim(), &own)) {
            return Err(Error::Invalid(format!(
                "'{own}' is the application name of {primary}, the current primary: a primary cannot be its own synchronous standby; leave it out of --standbys"
            )));
        }
    }
    let Some(applied) = for_primary(&wanted, &own) else {
        return Err(Error::Invalid(format!(
            "the only synchronous standby named is '{own}', which is {primary}, the current primary: name standbys with --standbys"
        )));
    };
    if applied.standbys.len() < wanted.standbys.len() {
        progress.note(&format!(
            "leaving out '{own}': it is {primary}, the current primary (the spec keeps it for when {primary} is a standby again)"
        ));
    }

    let probes = topology::probe_all(cluster).await;
    let named: Vec<Named> = applied
        .standbys
        .iter()
        .filter(|n| *n != "*")
        .map(|n| locate(cluster, &probes, &primary, n))
        .collect();
    let cascaded: Vec<String> = named
        .iter()
        .filter(|n| matches!(n.reach, Reach::Cascaded { .. }))
        .map(|n| format!("{} {}", n.label(), n.describe(&primary)))
        .collect();
    if !cascaded.is_empty() {
        return Err(Error::Precondition(format!(
            "{}: a cascaded standby confirms nothing to the primary, so it can never be synchronous; make it stream from {primary} first (`pgrepl rejoin NODE --upstream {primary}`), or leave it out of --standbys",
            cascaded.join("; ")
        )));
    }

    let mut warnings = Vec::new();
    let primary_probe = probes.iter().find(|p| p.name == primary);
    let connected = if applied.standbys.iter().any(|n| n == "*") {
        primary_probe.map_or(0, |p| {
            p.downstreams
                .iter()
                .filter(|d| d.state.as_deref() == Some("streaming"))
                .count()
        })
    } else {
        named.iter().filter(|n| n.streaming()).count()
    };
    let setting = applied.standby_names_setting();
    if connected < applied.num as usize {
        let missing: Vec<String> = named
            .iter()
            .filter(|n| !n.streaming())
            .map(|n| format!("{} {}", n.label(), n.describe(&primary)))
            .collect();
        let w = format!(
            "only {connected} of the {} synchronous standby(s) that '{setting}' needs stream from {primary} now{}: writes on {primary} will block until enough of them connect (or until `pgrepl sync disable`)",
            applied.num,
            if missing.is_empty() {
                String::new()
            } else {
                format!(" ({})", missing.join("; "))
            }
        );
        progress.note(&format!("WARNING: {w}"));
        warnings.push(w);
    }

    let c = cluster.connect(&primary).await?;
    let commit_now = queries::show(&c, "synchronous_commit").await?;
    let names_now = queries::show(&c, "synchronous_standby_names").await?;
    let commit = applied.commit.clone().unwrap_or_else(|| "on".into());
    let unchanged = names_now == setting && commit_now == commit;
    crate::crashpoint::reached("sync enable: checked");
    let rows = if unchanged {
        queries::downstreams(&c).await?
    } else {
        progress.step(&format!("setting synchronous_standby_names on {primary}"));
        configure(&c, &primary, Some(&applied)).await?
    };
    crate::crashpoint::reached("sync enable: applied on the primary");
    let spec_changed = cluster.spec.sync.as_ref() != Some(&wanted);
    if spec_changed {
        cluster.spec.sync = Some(wanted);
        cluster.save_spec()?;
    }
    let message = if unchanged {
        format!("synchronous replication is already '{setting}' on {primary} (synchronous_commit = {commit})")
    } else {
        format!("{primary}: synchronous_standby_names = '{setting}', synchronous_commit = {commit}")
    };
    Ok(SyncReport {
        standbys: standby_rows(cluster, &rows, &named, &primary),
        primary,
        standby_names: setting,
        synchronous_commit: commit,
        warnings,
        notes,
        message,
        changed: !unchanged || spec_changed,
    })
}

/// `pgrepl sync disable`: back to asynchronous replication on the current primary; commits
/// that were waiting for a synchronous standby complete. The spec's `[sync]` is removed.
pub async fn disable(cluster: &mut Cluster, progress: &dyn Progress) -> Result<SyncReport> {
    let primary = topology::current_primary(cluster).await?;
    let c = cluster.connect(&primary).await?;
    let names_before = queries::show(&c, "synchronous_standby_names").await?;
    let commit_before = queries::show(&c, "synchronous_commit").await?;
    let (waiting, _) = queries::syncrep_waiters(&c).await?;
    let unchanged = names_before.is_empty() && commit_before == "on";
    let rows = if unchanged {
        queries::downstreams(&c).await?
    } else {
        progress.step(&format!("clearing synchronous_standby_names on {primary}"));
        let rows = configure(&c, &primary, None).await?;
        // The checkpointer releases the waiting commits once it sees the new setting.
        wait::until(
            &format!("the commits waiting on {primary} to complete"),
            REFLECT_TIMEOUT,
            || async { matches!(queries::syncrep_waiters(&c).await, Ok((0, _))).then_some(()) },
        )
        .await?;
        rows
    };
    let spec_changed = cluster.spec.sync.is_some();
    if spec_changed {
        cluster.spec.sync = None;
        cluster.save_spec()?;
    }
    let message = if unchanged {
        format!("synchronous replication is already off on {primary}")
    } else {
        let mut m = format!(
            "synchronous replication disabled on {primary} (synchronous_standby_names was '{names_before}', synchronous_commit was {commit_before})"
        );
        if waiting > 0 {
            m += &format!(
                "; {waiting} commit(s) that were waiting for a synchronous standby completed"
            );
        }
        m
    };
    Ok(SyncReport {
        standbys: standby_rows(cluster, &rows, &[], &primary),
        primary,
        standby_names: String::new(),
        synchronous_commit: "on".into(),
        warnings: Vec::new(),
        notes: Vec::new(),
        message,
        changed: !unchanged || spec_changed,
    })
}

fn standby_rows(
    cluster: &Cluster,
    rows: &[Downstream],
    named: &[Named],
    primary: &str,
) -> Vec<StandbyRow> {
    let node_of = |app: &str| {
        cluster
            .spec
            .nodes
            .iter()
            .find(|n| same_name(n.application_name(), app))
            .map(|n| n.name.clone())
    };
    let mut out: Vec<StandbyRow> = rows
        .iter()
        .map(|d| StandbyRow {
            node: node_of(&d.application_name),
            application_name: d.application_name.clone(),
            state: d.state.clone(),
            sync_priority: d.sync_priority,
            sync_state: d.sync_state.clone(),
            note: None,
        })
        .collect();
    for n in named {
        if !rows.iter().any(|d| same_name(&d.application_name, &n.name)) {
            out.push(StandbyRow {
                node: n.node.clone(),
                application_name: n.name.clone(),
                state: None,
                sync_priority: None,
                sync_state: None,
                note: Some(n.describe(primary)),
            });
        }
    }
    out
}

/// Why a commit on `primary` waits for synchronous replication: the setting, and each
/// standby it waits for with where that standby is now.
pub async fn explain_wait(cluster: &Cluster, c: &Conn, primary: &str) -> String {
    let names = queries::show(c, "synchronous_standby_names")
        .await
        .unwrap_or_default();
    let commit = queries::show(c, "synchronous_commit")
        .await
        .unwrap_or_default();
    let Some((method, num, list)) = parse_standby_names(&names) else {
        return format!(
            "its COMMIT is waiting for synchronous replication, but synchronous_standby_names on {primary} is empty now: the wait ends by itself"
        );
    };
    let probes = topology::probe_all(cluster).await;
    let who = match method {
        SyncMethod::First => format!(
            "the {num} highest-priority streaming standby(s) of this list (priority = place in the list)"
        ),
        SyncMethod::Any => format!("any {num} of these standbys"),
    };
    let mut lines = vec![format!(
        "why: its COMMIT is waiting for synchronous replication. On {primary}, synchronous_standby_names = '{names}' (synchronous_commit = {commit}): every commit waits for confirmation from {who}:"
    )];
    let mut streaming = 0;
    let mut startable = None;
    for name in &list {
        if name == "*" {
            lines.push("  * (any standby that streams from the primary)".into());
            continue;
        }
        let n = locate(cluster, &probes, primary, name);
        streaming += usize::from(n.streaming());
        if n.reach == (Reach::Down { running: false }) {
            startable = startable.or(n.node.clone());
        }
        let mut line = format!("  {}: {}", n.label(), n.describe(primary));
        // A standby cut off by a network fault may still look connected to the primary
        // until wal_sender_timeout: say what was done to it.
        if let Some(spec) = n.node.as_deref().and_then(|n| cluster.node(n).ok()) {
            let faults = cluster.runtime.faults(spec).await.unwrap_or_default();
            if !faults.is_empty() {
                let faults: Vec<String> = faults.iter().map(ToString::to_string).collect();
                line += &format!(" [network fault on {}: {}]", spec.name, faults.join(", "));
            }
        }
        lines.push(line);
    }
    let others: Vec<String> = probes
        .iter()
        .find(|p| p.name == primary)
        .map(|p| {
            p.downstreams
                .iter()
                .filter(|d| {
                    !list
                        .iter()
                        .any(|n| n == "*" || same_name(n, &d.application_name))
                })
                .map(|d| d.application_name.clone())
                .collect()
        })
        .unwrap_or_default();
    if !others.is_empty() {
        lines.push(format!(
            "  (also streaming from {primary}, but not listed, so they do not count: {})",
            others.join(", ")
        ));
    }
    lines.push(format!(
        "Meanwhile its changes are invisible to other sessions on {primary}{}.",
        if others.is_empty() {
            String::new()
        } else {
            format!(
                ", though the asynchronous standby(s) {} may already show them",
                others.join(", ")
            )
        }
    ));
    if !list.iter().any(|n| n == "*") && streaming < num as usize {
        lines.push(format!(
            "Only {streaming} of the {num} it needs stream from {primary}, so the commit cannot finish by itself."
        ));
    }
    lines.push(format!(
        "Such a wait ignores statement_timeout. It ends when enough of these standbys stream again{}, when synchronous replication is turned off (`pgrepl sync disable`), or by a cancel, which --timeout just did.",
        startable
            .map(|n| format!(" (`pgrepl start {n}`)"))
            .unwrap_or_default()
    ));
    lines.join("\n")
}

/// Applies the spec's `[sync]` intent to `primary` (after `up`, a promotion or a
/// switchover): the new primary drops itself from the list. Returns what it set, or None
/// when the spec asks for no synchronous replication, in which case a setting left over on
/// that node (a clone or a rewind copies postgresql.auto.conf from its source) is cleared,
/// since it could name the node itself and block every commit.
pub async fn apply_to_primary(cluster: &Cluster, primary: &str) -> Result<Option<String>> {
    let own = cluster.node(primary)?.application_name().to_string();
    let effective = cluster
        .spec
        .sync
        .as_ref()
        .and_then(|s| for_primary(s, &own));
    let c = cluster.connect(primary).await?;
    let Some(effective) = effective else {
        let names = queries::show(&c, "synchronous_standby_names").await?;
        if !names.is_empty() {
            configure(&c, primary, None).await?;
        }
        return Ok(None);
    };
    let setting = effective.standby_names_setting();
    let commit = effective.commit.as_deref().unwrap_or("on");
    if queries::show(&c, "synchronous_standby_names").await? != setting
        || queries::show(&c, "synchronous_commit").await? != commit
    {
        configure(&c, primary, Some(&effective)).await?;
    }
    Ok(Some(setting))
}

/// A warning when the cluster file's `[sync]` names no standby but `primary` itself (its only
/// synchronous standby became the primary): commits go on with no synchronous copy. None
/// without `[sync]`, or when other standbys are named.
pub fn lost_warning(cluster: &Cluster, primary: &str) -> Option<String> {
    let sync = cluster.spec.sync.as_ref()?;
    let own = cluster.node(primary).ok()?.application_name().to_string();
    if for_primary(sync, &own).is_some() {
        return None;
    }
    Some(format!(
        "WARNING: synchronous replication is off: the cluster file's [sync] lists only {primary}, which is the primary now, so commits are acknowledged with no synchronous copy; choose synchronous standbys with `pgrepl sync enable --standbys NODE[,NODE...]`"
    ))
}

/// After a change of primary: a warning when the new primary's synchronous standbys are not
/// connected to it, so that every commit waits (for instance the list's only other name is the
/// old primary, now down). Gives the standbys a moment to reconnect before judging.
pub async fn blocked_commits_warning(cluster: &Cluster, primary: &str) -> Option<String> {
    let c = cluster.connect(primary).await.ok()?;
    let names = queries::show(&c, "synchronous_standby_names").await.ok()?;
    if names.is_empty() {
        return None;
    }
    let satisfied = || async {
        let d = queries::downstreams(&c).await.ok()?;
        crate::observe::status::sync_satisfied(&names, &d).then_some(())
    };
    if wait::until("synchronous standbys", Duration::from_secs(3), satisfied)
        .await
        .is_ok()
    {
        return None;
    }
    let (_, _, listed) = parse_standby_names(&names)?;
    let down: Vec<String> = listed
        .iter()
        .filter_map(|app| {
            cluster
                .spec
                .nodes
                .iter()
                .find(|n| n.application_name() == app)
        })
        .map(|n| format!("{} ({})", n.application_name(), n.name))
        .collect();
    Some(format!(
        "WARNING: commits on {primary} wait: synchronous_standby_names = '{names}' but not enough of {} stream from {primary}. Bring them back (`pgrepl rejoin NODE --upstream {primary}` or `pgrepl start NODE`), or `pgrepl sync disable` to accept writes without them",
        if down.is_empty() { "them".to_string() } else { down.join(", ") }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn priorities_as_postgres_gives_them() {
        let l = names(&["sync2", "sync3"]);
        assert_eq!(expected_priority(SyncMethod::First, &l, "sync2"), 1);
        assert_eq!(expected_priority(SyncMethod::First, &l, "SYNC3"), 2);
        assert_eq!(expected_priority(SyncMethod::First, &l, "pg1"), 0);
        assert_eq!(expected_priority(SyncMethod::Any, &l, "sync3"), 1);
        let star = names(&["sync3", "*"]);
        assert_eq!(expected_priority(SyncMethod::First, &star, "sync3"), 1);
        assert_eq!(expected_priority(SyncMethod::First, &star, "pg1"), 2);
    }

    #[test]
    fn a_primary_is_left_out_of_its_own_list() {
        let s = SyncSpec {
            standbys: names(&["sync2", "sync3"]),
            method: SyncMethod::First,
            num: 2,
            commit: None,
            allow_unknown: false,
        };
        let p = for_primary(&s, "sync2").unwrap();
        assert_eq!(p.standbys, names(&["sync3"]));
        assert_eq!(p.num, 1);
        assert!(for_primary(
            &SyncSpec {
                standbys: names(&["sync2"]),
                ..s
            },
            "sync2"
        )
        .is_none());
    }

    #[test]
    fn node_names_become_application_names() {
        let spec = ClusterSpec::lab("lab", 54320).unwrap();
        let req = EnableRequest {
            standbys: Some(names(&["pg2", " sync3", "pg1", "*"])),
            ..Default::default()
        };
        let (req, notes) = req.with_application_names(&spec);
        assert_eq!(
            req.standbys.unwrap(),
            names(&["sync2", "sync3", "pg1", "*"])
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("pg2's application name is sync2"));
    }

    #[test]
    fn options_not_given_come_from_the_spec() {
        let mut spec = ClusterSpec::lab("lab", 54320).unwrap();
        let r = EnableRequest::default().resolve(&spec);
        assert_eq!(r.standby_names_setting(), r#"FIRST 1 ("sync2", "sync3")"#);
        spec.sync = Some(SyncSpec {
            method: SyncMethod::Any,
            num: 2,
            commit: Some("remote_apply".into()),
            ..r
        });
        let commit_only = EnableRequest {
            commit: Some("on".into()),
            ..Default::default()
        };
        let r = commit_only.resolve(&spec);
        assert_eq!(r.standby_names_setting(), r#"ANY 2 ("sync2", "sync3")"#);
        assert_eq!(r.commit.as_deref(), Some("on"));
        let new_list = EnableRequest {
            standbys: Some(names(&["sync3", " pg1 "])),
            ..Default::default()
        };
        let r = new_list.resolve(&spec);
        assert_eq!(r.standby_names_setting(), r#"FIRST 1 ("sync3", "pg1")"#);
        assert_eq!(r.commit.as_deref(), Some("remote_apply"));
    }
}
