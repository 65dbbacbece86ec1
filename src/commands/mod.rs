//! One handler per command.

mod failover;
mod sync;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use pgrepl_core::cluster::Options;
use pgrepl_core::ops::{self, Outcome};
use pgrepl_core::postgres::binaries;
use pgrepl_core::runtime;
use pgrepl_core::spec::ClusterSpec;
use pgrepl_core::{observe, Cluster};

mod bench;
mod drill;

use crate::cli::*;
use crate::progress::Spinner;
use crate::render;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let opts = Options {
        config: cli.config.clone(),
        pg_bin: cli.pg_bin.clone(),
        os_user: Some(cli.os_user.clone()),
    };
    match cli.command {
        Command::Init(a) => init(&opts, a),
        Command::Up => up(&opts).await,
        Command::Down(a) => down(&opts, a).await,
        Command::Primary(PrimaryCmd::Init(a)) => {
            let (cluster, _lock) = open_locked(&opts).await?;
            print(ops::primary::init(&cluster, &a.node, &Spinner::new()).await?)
        }
        Command::Standby(StandbyCmd::Add(a)) => {
            let (mut cluster, _lock) = open_locked(&opts).await?;
            let outcome = ops::standby::add(
                &mut cluster,
                &a.node,
                &a.slot,
                a.upstream.as_deref(),
                a.application_name.as_deref(),
                &Spinner::new(),
            )
            .await?;
            print(outcome)
        }
        Command::Standby(StandbyCmd::Follow(a)) => failover::follow(&opts, a).await,
        Command::Promote(a) => failover::promote(&opts, a).await,
        Command::Failover(a) => failover::failover(&opts, a).await,
        Command::Switchover(a) => failover::switchover(&opts, a).await,
        Command::Rejoin(a) => failover::rejoin(&opts, a).await,
        Command::HaproxyConfig(a) => haproxy_config(&opts, a),
        Command::Status(a) => status(&opts, a).await,
        Command::Load(LoadCmd::Wal(a)) => load_wal(&opts, a).await,
        Command::Start(a) => each_node(&opts, &a.nodes, NodeAction::Start).await,
        Command::Stop(a) => each_node(&opts, &a.nodes, NodeAction::Stop).await,
        Command::Kill(a) => each_node(&opts, &a.nodes, NodeAction::Kill).await,
        Command::Sql(a) => sql(&opts, a).await,
        Command::Psql(a) => psql(&opts, a).await,
        Command::Logs(a) => logs(&opts, a).await,
        Command::Sync(c) => sync::run(&opts, c).await,
        Command::Postgres(PostgresCmd::Install { version }) => {
            let runner = runtime::Runner::new(opts.os_user.as_deref())?;
            let i = binaries::install(version, &runner, &Spinner::new()).await?;
            println!(
                "PostgreSQL {} is installed in {}",
                i.version,
                i.bin.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(cmd) => bench::run(&opts, cmd).await,
        Command::Drill(a) => drill::run(&opts, a).await,
        Command::Postgres(PostgresCmd::List { json }) => {
            let list = binaries::list();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!(
                    "no PostgreSQL installation found: `pgrepl postgres install 18` provisions one"
                );
            } else {
                println!("{}", render::postgres_list(&list));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn print(outcome: Outcome) -> Result<ExitCode> {
    println!("{}", outcome.message());
    Ok(ExitCode::SUCCESS)
}

async fn open(opts: &Options) -> Result<Cluster> {
    Ok(Cluster::open(opts, false, &Spinner::new()).await?)
}

/// For every command that changes something: the cluster file is read under the lock.
pub(crate) async fn open_locked(
    opts: &Options,
) -> Result<(Cluster, pgrepl_core::cluster::ClusterLock)> {
    Ok(Cluster::open_locked(opts, false, &Spinner::new()).await?)
}

fn haproxy_config(opts: &Options, a: HaproxyConfigArgs) -> Result<ExitCode> {
    use pgrepl_core::monitor::haproxy;
    let spec = ClusterSpec::load(&opts.config)?;
    let defaults = haproxy::Options::for_spec(&spec);
    let o = haproxy::Options {
        http_host: a.http_host,
        http_base_port: a.http_base_port,
        bind: a.bind,
        rw_port: a.rw_port.unwrap_or(defaults.rw_port),
        ro_port: a.ro_port.unwrap_or(defaults.ro_port),
        ro_includes_primary: a.ro_includes_primary,
    };
    if o.rw_port == o.ro_port {
        bail!(
            "--rw-port and --ro-port are both {}: give the read-only frontend another port",
            o.rw_port
        );
    }
    print!(
        "{}",
        haproxy::config(&spec, &o).map_err(anyhow::Error::msg)?
    );
    Ok(ExitCode::SUCCESS)
}

fn init(opts: &Options, a: InitArgs) -> Result<ExitCode> {
    if opts.config.exists() && !a.force {
        bail!(
            "{} already exists: pass --force to overwrite it (the cluster's data is kept), or name another file with -c",
            opts.config.display()
        );
    }
    if a.force && opts.config.exists() {
        if let Ok(old) = ClusterSpec::load(&opts.config) {
            let dir = pgrepl_core::cluster::cluster_dir(&old, &opts.config);
            if dir.exists() {
                bail!(
                    "cluster '{}' already has data in {}, whose nodes keep the ports and topology they were made with: remove it first with `pgrepl down --purge`, or write the new cluster file elsewhere with -c",
                    old.cluster.name,
                    dir.display()
                );
            }
        }
    }
    let mut spec = ClusterSpec::lab(&a.name, a.base_port)?;
    spec.cluster.runtime = a.runtime;
    runtime::check_new_spec(&spec, "pgrepl init --base-port")?;
    spec.save(&opts.config)?;
    println!(
        "wrote {}: cluster '{}', pg0 primary on port {}, standbys pg1, pg2 (sync2), pg3 (sync3); next: `pgrepl up`",
        opts.config.display(),
        a.name,
        a.base_port
    );
    Ok(ExitCode::SUCCESS)
}

async fn up(opts: &Options) -> Result<ExitCode> {
    if !opts.config.exists() {
        let spec = ClusterSpec::lab(
            pgrepl_core::spec::DEFAULT_CLUSTER_NAME,
            pgrepl_core::spec::DEFAULT_BASE_PORT,
        )?;
        runtime::check_new_spec(&spec, "pgrepl init --base-port")?;
        spec.save(&opts.config)?;
        println!(
            "no {} here: wrote the lab's default (4 nodes, ports {}-{}); edit it to change the cluster",
            opts.config.display(),
            pgrepl_core::spec::DEFAULT_BASE_PORT,
            pgrepl_core::spec::DEFAULT_BASE_PORT + 3
        );
    }
    let spinner = Spinner::new();
    let (cluster, _lock) = Cluster::open_locked(opts, true, &spinner).await?;
    let started = std::time::Instant::now();
    let outcomes = ops::up::up(&cluster, &spinner).await?;
    drop(spinner);
    if outcomes.iter().any(Outcome::changed) {
        for o in outcomes.iter().filter(|o| o.changed()) {
            println!("{}", o.message());
        }
        println!(
            "cluster '{}' is up in {:.1} s (PostgreSQL {})",
            cluster.name(),
            started.elapsed().as_secs_f64(),
            cluster.pg.version
        );
    } else {
        println!("cluster '{}' is already up: nothing to do", cluster.name());
    }
    print!(
        "{}",
        render::status_table(&observe::status::status(&cluster).await)
    );
    Ok(ExitCode::SUCCESS)
}

async fn down(opts: &Options, a: DownArgs) -> Result<ExitCode> {
    let (cluster, _lock) = open_locked(opts).await?;
    if a.purge {
        let Some(summary) = ops::control::purge_summary(&cluster)? else {
            println!("cluster '{}' has no data: nothing to purge", cluster.name());
            return Ok(ExitCode::SUCCESS);
        };
        if !a.yes {
            if !std::io::stdin().is_terminal() {
                bail!("{summary}; refusing without confirmation: pass --yes to purge");
            }
            print!(
                "{summary}.\nType the cluster name ({}) to confirm: ",
                cluster.name()
            );
            std::io::stdout().flush()?;
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            if answer.trim() != cluster.name() {
                bail!("not confirmed: nothing was deleted");
            }
        }
    }
    let outcomes = ops::control::down(&cluster, a.purge, &Spinner::new()).await?;
    for o in &outcomes {
        println!("{}", o.message());
    }
    if a.purge {
        println!("{}", ops::control::purge(&cluster).await?.message());
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(opts: &Options, a: StatusArgs) -> Result<ExitCode> {
    let cluster = open(opts).await?;
    if a.json {
        let s = observe::status::status(&cluster).await;
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !a.watch {
        print!(
            "{}",
            render::status_table(&observe::status::status(&cluster).await)
        );
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let table = render::status_table(&observe::status::status(&cluster).await);
        // Home the cursor and clear: the table refreshes in place.
        print!(
            "\x1b[H\x1b[2J{table}\n(refreshing every {}; Ctrl-C to stop)\n",
            humantime::format_duration(a.interval)
        );
        std::io::stdout().flush()?;
        tokio::select! {
            _ = tokio::time::sleep(a.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn load_wal(opts: &Options, a: LoadWalArgs) -> Result<ExitCode> {
    let (cluster, _lock) = open_locked(opts).await?;
    // Listening from now on: a Ctrl-C before the load's first statement must not kill the
    // process with its table half made.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let ctrl_c = async move {
        sigint.recv().await;
    };
    let report = ops::load::wal(&cluster, a.mb, &Spinner::new(), ctrl_c).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "wrote {} of WAL on {} in {:.0} ms ({} .. {})",
        render::bytes(report.wal_bytes),
        report.primary,
        report.write_ms,
        report.start_lsn,
        report.end_lsn
    );
    for s in &report.standbys {
        match s.replay_ms {
            Some(ms) => println!(
                "  {:<8} replayed it {:.0} ms after the last write",
                s.node, ms
            ),
            None => println!(
                "  {:<8} did not replay it (stopped, or not streaming)",
                s.node
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

enum NodeAction {
    Start,
    Stop,
    Kill,
}

/// Acts on each named node in turn; all names are checked first, so nothing happens when
/// one is unknown.
async fn each_node(opts: &Options, nodes: &[String], action: NodeAction) -> Result<ExitCode> {
    let (cluster, _lock) = open_locked(opts).await?;
    for n in nodes {
        cluster.node(n)?;
    }
    for n in nodes {
        let outcome = match action {
            NodeAction::Start => ops::control::start(&cluster, n, &Spinner::new()).await?,
            NodeAction::Stop => ops::control::stop(&cluster, n, &Spinner::new()).await?,
            NodeAction::Kill => ops::control::kill(&cluster, n).await?,
        };
        println!("{}", outcome.message());
    }
    Ok(ExitCode::SUCCESS)
}

async fn sql(opts: &Options, a: SqlArgs) -> Result<ExitCode> {
    let cluster = open(opts).await?;
    cluster.node(&a.node)?;
    let out = ops::sql::run(&cluster, &a.node, &a.sql, a.timeout).await?;
    for n in &out.notices {
        eprintln!("{n}");
    }
    if a.json {
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = out
            .rows
            .iter()
            .map(|r| {
                out.columns
                    .iter()
                    .cloned()
                    .zip(r.iter().map(|v| {
                        v.clone()
                            .map(serde_json::Value::String)
                            .unwrap_or(serde_json::Value::Null)
                    }))
                    .collect()
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "columns": out.columns, "rows": rows, "affected": out.affected })
            )?
        );
    } else {
        for r in &out.rows {
            let cols: Vec<&str> = r.iter().map(|v| v.as_deref().unwrap_or("")).collect();
            println!("{}", cols.join("|"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn psql(opts: &Options, a: NodeArg) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let cluster = open(opts).await?;
    let node = cluster.node(&a.node)?;
    let bundled = cluster.pg.program("psql");
    let psql = if bundled.is_file() {
        bundled
    } else {
        "psql".into()
    };
    let conninfo = format!(
        "{} dbname=postgres",
        cluster.client_conninfo(node, pgrepl_core::secrets::SUPERUSER, "psql")
    );
    let err = std::process::Command::new(&psql).arg(conninfo).exec();
    Err(err).with_context(|| format!("cannot run {}", psql.display()))
}

async fn logs(opts: &Options, a: LogsArgs) -> Result<ExitCode> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let cluster = open(opts).await?;
    cluster.node(&a.node)?;
    let path = cluster.log_file(&a.node);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "{} has no log yet ({}): it has never been started",
                a.node,
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).await?;
    std::io::stdout().write_all(&buf)?;
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut pos = file.stream_position().await?;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        let len = tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .unwrap_or(pos);
        if len < pos {
            pos = 0; // truncated or replaced
        }
        file.seek(std::io::SeekFrom::Start(pos)).await?;
        buf.clear();
        file.read_to_end(&mut buf).await?;
        pos += buf.len() as u64;
        std::io::stdout().write_all(&buf)?;
        std::io::stdout().flush()?;
    }
}
