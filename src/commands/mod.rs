//! One handler per command.

mod failover;
mod monitor;
pub mod net;
mod sync;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use pgrepl_core::cluster::Options;
use pgrepl_core::observe::status::ClusterStatus;
use pgrepl_core::ops::{self, Outcome};
use pgrepl_core::postgres::binaries;
use pgrepl_core::progress::{Progress, Silent};
use pgrepl_core::runtime;
use pgrepl_core::spec::{self, ClusterSpec};
use pgrepl_core::{observe, Cluster};

mod bench;
mod drill;

use crate::cli::*;
use crate::progress::Spinner;
use crate::report::{self, CommandReport, NodeReport};
use crate::{render, status_view};

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let located = spec::locate(
        cli.config.as_deref(),
        std::env::var_os(spec::locate::CONFIG_ENV).as_deref(),
        &cwd,
    );
    if needs_cluster_file(&cli.command) {
        if let Command::Psql(a) = &cli.command {
            if located.origin == spec::locate::Origin::Flag && !located.exists() {
                // `pgrepl psql pg0 -c 'SELECT 1'`: the -c was meant for psql.
                bail!(
                    "no cluster file '{}': -c before `--` names pgrepl's cluster file; give psql's options after `--`, e.g. `pgrepl psql {} -- -c 'SELECT 1'`",
                    located.path.display(),
                    a.node
                );
            }
        }
        located.require()?;
    }
    let opts = Options {
        config: located.path.clone(),
        pg_bin: cli.pg_bin.clone(),
        os_user: Some(cli.os_user.clone()),
    };
    match cli.command {
        Command::Init(a) => init(&opts, a).await,
        Command::Up(a) => resumable(up(&opts, a)).await,
        Command::Completions(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "pgrepl", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(a) => man(a),
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
        Command::Standby(StandbyCmd::Follow(a)) => resumable(failover::follow(&opts, a)).await,
        Command::Promote(a) => resumable(failover::promote(&opts, a)).await,
        Command::Failover(a) => resumable(failover::failover(&opts, a)).await,
        Command::Switchover(a) => resumable(failover::switchover(&opts, a)).await,
        Command::Rejoin(a) => resumable(failover::rejoin(&opts, a)).await,
        Command::HaproxyConfig(a) => haproxy_config(&opts, a),
        Command::Monitor(a) => monitor::monitor(&opts, a).await,
        Command::Events(a) => monitor::events(&opts, a).await,
        Command::Status(a) => status(&opts, a).await,
        Command::Load(LoadCmd::Wal(a)) => load_wal(&opts, a).await,
        Command::Start(a) => each_node(&opts, a, NodeAction::Start).await,
        Command::Stop(a) => each_node(&opts, a, NodeAction::Stop).await,
        Command::Kill(a) => each_node(&opts, a, NodeAction::Kill).await,
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
        Command::Net(c) => net::run(&opts, c).await,
        Command::Freeze(a) => net::freeze(&opts, &a.node, true).await,
        Command::Thaw(a) => net::freeze(&opts, &a.node, false).await,
        Command::NetDelayer(a) => Ok(net::delayer(&a)),
        Command::Bench(cmd) => bench::run(&opts, cmd).await,
        Command::Drill(a) => drill::run(&opts, a).await,
        Command::Compose(ComposeCmd::Export(a)) => compose_export(&opts, a).await,
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

/// A multi-step operation stopped by Ctrl-C says so, and how to finish it: every step leaves
/// what a re-run needs (PostgreSQL's own state, or the operation's journal), so running the
/// same command again completes it. Without this, SIGINT would end pgrepl silently.
/// The first Ctrl-C lets the current step finish (a child program such as pg_ctl or
/// pg_basebackup would otherwise go on alone) and stops at the next step boundary; a second
/// one stops at once.
async fn resumable(op: impl std::future::Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
    tokio::pin!(op);
    tokio::select! {
        r = &mut op => return r,
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("interrupted: stopping once the current step is done (Ctrl-C again stops at once)");
    pgrepl_core::crashpoint::stop_at_next_step(|step| {
        eprintln!("stopped after: {step}");
        interrupted_exit()
    });
    tokio::select! {
        r = &mut op => r,
        _ = tokio::signal::ctrl_c() => interrupted_exit(),
    }
}

fn interrupted_exit() -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    eprintln!(
        "interrupted halfway: run `pgrepl {}` again; it completes what this run began",
        args.join(" ")
    );
    std::process::exit(130)
}

/// Commands that work on an existing cluster file; the others write one (`init`, `up`), make
/// their own scratch clusters (benchmarks but `bench sync`) or need none.
fn needs_cluster_file(c: &Command) -> bool {
    match c {
        Command::Init(_)
        | Command::Up(_)
        | Command::Postgres(_)
        | Command::Completions(_)
        | Command::Man(_) => false,
        Command::Bench(b) => matches!(b.cmd, Some(BenchCmd::Sync(_))),
        _ => true,
    }
}

/// pg0's port asked for when a cluster file is written: `--base-port`, else
/// PGREPL_BASE_PORT; and whether it was asked on the command line.
fn base_port(flag: Option<u16>) -> Result<(Option<u16>, bool)> {
    let asked = if flag.is_some() {
        (flag, true)
    } else {
        match std::env::var(BASE_PORT_ENV) {
            Ok(v) if !v.trim().is_empty() => {
                let port = v.trim().parse().map_err(|_| {
                    anyhow::anyhow!("{BASE_PORT_ENV}={v} is not a port: set it to a number such as 25432, or unset it")
                })?;
                (Some(port), false)
            }
            _ => (None, false),
        }
    };
    if let Some(p) = asked.0 {
        warn_if_ephemeral(p);
    }
    Ok(asked)
}

/// Ports in the kernel's ephemeral range are handed to outgoing connections: one may hold a
/// node's port at any time (a client's TIME-WAIT did, for minutes), and `up` then fails.
fn warn_if_ephemeral(base: u16) {
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return;
    };
    let mut it = text
        .split_whitespace()
        .filter_map(|n| n.parse::<u32>().ok());
    let (Some(lo), Some(hi)) = (it.next(), it.next()) else {
        return;
    };
    if (lo..=hi).contains(&u32::from(base)) {
        eprintln!(
            "warning: port {base} is in the kernel's ephemeral range ({lo}-{hi}), which outgoing connections use: a node's port may be taken at any time; prefer a base port below {lo} (e.g. 25432)"
        );
    }
}

const BASE_PORT_ENV: &str = "PGREPL_BASE_PORT";

/// `init` and `up` write a new cluster file (and the data next to it) only in a folder fit
/// for it: not `/`, not $HOME itself.
fn check_new_file_folder(file: &std::path::Path) -> Result<()> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    Ok(spec::locate::check_new_file_folder(file, home.as_deref())?)
}

fn man(a: ManArgs) -> Result<ExitCode> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let Some(dir) = a.dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(cmd, &dir)
        .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
    println!(
        "wrote pgrepl.1 and a page per command (pgrepl-status.1, ...) into {}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print(outcome: Outcome) -> Result<ExitCode> {
    println!("{}", outcome.message());
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn open(opts: &Options) -> Result<Cluster> {
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

async fn init(opts: &Options, a: InitArgs) -> Result<ExitCode> {
    if opts.config.exists() && !a.force {
        // Found in a folder above, as every command finds it: a new cluster here needs -c.
        let here = std::env::current_dir().ok();
        let above = opts.config.is_absolute() && opts.config.parent() != here.as_deref();
        bail!(
            "{} already exists: pass --force to overwrite it (the cluster's data is kept), or name another file with -c{}",
            opts.config.display(),
            if above {
                " (-c pgrepl.toml for a new cluster in this folder)"
            } else {
                ""
            }
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
    check_new_file_folder(&opts.config)?;
    if a.image.is_some() && a.runtime != pgrepl_core::spec::RuntimeKind::Docker {
        bail!("--image is the docker runtime's: add `--runtime docker`, or leave --image out");
    }
    let port = base_port(a.base_port)?
        .0
        .unwrap_or(pgrepl_core::spec::DEFAULT_BASE_PORT);
    let mut spec = ClusterSpec::lab(&a.name, port)?;
    spec.cluster.runtime = a.runtime;
    spec.cluster.image = a.image;
    runtime::check_new_spec(&spec, "pgrepl init --base-port")?;
    let cluster_dir = pgrepl_core::cluster::cluster_dir(&spec, &opts.config);
    runtime::complete_new_spec(&mut spec, &cluster_dir).await?;
    spec.save(&opts.config)?;
    let at = match &spec.cluster.subnet {
        Some(subnet) if spec.cluster.runtime == pgrepl_core::spec::RuntimeKind::Netns => format!(
            "on the netns runtime in {subnet} (pg0 at .10, pg1 .11, ..., each on port 5432)"
        ),
        Some(subnet) => format!(
            "on the {} runtime in {subnet}, pg0 primary on port {port}",
            spec.cluster.runtime
        ),
        None => format!("pg0 primary on port {port}"),
    };
    println!(
        "wrote {}: cluster '{}', {at}, standbys pg1, pg2 (sync2), pg3 (sync3); next: `pgrepl up`",
        opts.config.display(),
        a.name,
    );
    Ok(ExitCode::SUCCESS)
}

async fn up(opts: &Options, a: UpArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let (port, on_command_line) = base_port(a.base_port)?;
    let mut notes = Vec::new();
    if !opts.config.exists() {
        check_new_file_folder(&opts.config)?;
        let port = port.unwrap_or(pgrepl_core::spec::DEFAULT_BASE_PORT);
        let spec = ClusterSpec::lab(pgrepl_core::spec::DEFAULT_CLUSTER_NAME, port)?;
        runtime::check_new_spec(&spec, "pgrepl up --base-port")?;
        spec.save(&opts.config)?;
        notes.push(format!(
            "no cluster file found: wrote {} (the lab: 4 nodes, ports {}-{}); edit it to change the cluster",
            opts.config.display(),
            port,
            port + 3
        ));
    } else if let Some(p) = port.filter(|_| on_command_line) {
        // The flag is for a new cluster file; an existing one keeps its ports.
        let spec = ClusterSpec::load(&opts.config)?;
        let root = spec.root();
        if root.port != p {
            bail!(
                "{} already puts {} on port {}: --base-port only applies when up writes a new cluster file; leave it out, or edit the ports in that file",
                opts.config.display(),
                root.name,
                root.port
            );
        }
    }
    if !a.json {
        for n in &notes {
            println!("{n}");
        }
    }
    let progress: Box<dyn Progress> = if a.json {
        Box::new(Silent)
    } else {
        Box::new(Spinner::new())
    };
    let (cluster, _lock) = Cluster::open_locked(opts, true, progress.as_ref()).await?;
    let steps = ops::up::up(&cluster, progress.as_ref()).await?;
    drop(progress);
    let changed = steps.iter().any(|s| s.outcome.changed());
    let message = if changed {
        format!(
            "cluster '{}' is up in {:.1} s (PostgreSQL {})",
            cluster.name(),
            started.elapsed().as_secs_f64(),
            cluster.pg.version
        )
    } else {
        format!("cluster '{}' is already up: nothing to do", cluster.name())
    };
    let status = observe::status::status(&cluster).await;
    if a.json {
        let mut r = CommandReport::new("up", started)
            .figure("cluster", cluster.name())
            .figure("postgres", &cluster.pg.version)
            .figure("primary", &status.primary)
            .figure("cluster_file", &cluster.spec_path);
        r.changed = changed;
        r.message = message;
        r.warnings = status.warnings.clone();
        r.notes = notes;
        for step in &steps {
            match &step.node {
                Some(node) => {
                    let word = if step.outcome.changed() {
                        "brought up"
                    } else {
                        "already up"
                    };
                    r.nodes.push(NodeReport::acted_on(
                        node,
                        &step.outcome,
                        word,
                        &status,
                        None,
                    ));
                }
                None => r.notes.push(step.outcome.message().to_string()),
            }
        }
        return r.print();
    }
    for step in steps.iter().filter(|s| s.outcome.changed()) {
        println!("{}", step.outcome.message());
    }
    println!("{message}");
    print!("{}", status_view::compact(&status));
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
    let format = if a.json { StatusFormat::Json } else { a.output };
    if a.watch && matches!(format, StatusFormat::Json | StatusFormat::Yaml) {
        bail!("--watch redraws a table: use -o table or -o wide with it, or leave --watch out for JSON and YAML");
    }
    let cluster = open(opts).await?;
    let show = |s: &ClusterStatus| -> Result<String> {
        Ok(match format {
            StatusFormat::Table => status_view::compact(s) + &status_view::monitor_line(s),
            StatusFormat::Wide => render::status_table(s) + &status_view::monitor_line(s),
            StatusFormat::Json => serde_json::to_string_pretty(s)? + "\n",
            StatusFormat::Yaml => serde_yaml_ng::to_string(s)?,
        })
    };
    let mut last = observe::status::status(&cluster).await;
    if !a.watch {
        print!("{}", show(&last)?);
        return Ok(ExitCode::SUCCESS);
    }
    // On a terminal the table is redrawn in place with the latest changes under it; piped
    // (a log, a file), it is printed once and each change follows as a line, with no
    // escape codes.
    let terminal = std::io::stdout().is_terminal();
    let mut seen: Vec<String> = Vec::new();
    let stamp = || humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    if !terminal {
        print!("{} {}", stamp(), show(&last)?);
    }
    loop {
        if terminal {
            println!(
                "\x1b[H\x1b[2J{}every {}, Ctrl-C to stop; {}",
                show(&last)?,
                humantime::format_duration(a.interval),
                stamp()
            );
            if !seen.is_empty() {
                println!("changes:\n{}", seen.join("\n"));
            }
        }
        std::io::stdout().flush()?;
        tokio::select! {
            _ = tokio::time::sleep(a.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        let next = observe::status::status(&cluster).await;
        let changes = status_view::changes(&last, &next);
        for c in changes {
            let line = format!("{} {c}", stamp());
            if terminal {
                seen.push(line);
            } else {
                println!("{line}");
            }
        }
        // The last few changes stay on screen.
        let keep = seen.len().saturating_sub(10);
        seen.drain(..keep);
        last = next;
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

impl NodeAction {
    fn command(&self) -> &'static str {
        match self {
            NodeAction::Start => "start",
            NodeAction::Stop => "stop",
            NodeAction::Kill => "kill",
        }
    }

    /// What was done to a node, in a word or two, for JSON.
    fn outcome_word(&self, o: &Outcome) -> &'static str {
        match (self, o.changed()) {
            (NodeAction::Start, true) => "started",
            (NodeAction::Start, false) => "already running",
            (NodeAction::Stop, true) => "stopped",
            (NodeAction::Stop, false) => "already stopped",
            (NodeAction::Kill, true) => "killed",
            (NodeAction::Kill, false) => "not running",
        }
    }
}

/// Acts on each named node in turn; all names are checked first, so nothing happens when
/// one is unknown.
async fn each_node(opts: &Options, a: NodesArgs, action: NodeAction) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let (cluster, _lock) = open_locked(opts).await?;
    for n in &a.nodes {
        cluster.node(n)?;
    }
    if matches!(action, NodeAction::Stop) {
        ops::control::refuse_frozen(&cluster, &a.nodes).await?;
    }
    let progress: Box<dyn Progress> = if a.json {
        Box::new(Silent)
    } else {
        Box::new(Spinner::new())
    };
    let mut done = Vec::new();
    for n in &a.nodes {
        let at = std::time::Instant::now();
        let outcome = match action {
            NodeAction::Start => ops::control::start(&cluster, n, progress.as_ref()).await?,
            NodeAction::Stop => ops::control::stop(&cluster, n, progress.as_ref()).await?,
            NodeAction::Kill => ops::control::kill(&cluster, n).await?,
        };
        if !a.json {
            progress.note(outcome.message());
        }
        done.push((n, outcome, report::millis(at)));
    }
    if !a.json {
        return Ok(ExitCode::SUCCESS);
    }
    drop(progress);
    let status = observe::status::status(&cluster).await;
    let mut r = CommandReport::new(action.command(), started);
    r.changed = done.iter().any(|(_, o, _)| o.changed());
    r.message = done
        .iter()
        .map(|(_, o, _)| o.message().replace('\n', "; "))
        .collect::<Vec<_>>()
        .join("; ");
    r.warnings = status.warnings.clone();
    r.nodes = done
        .iter()
        .map(|(n, o, ms)| NodeReport::acted_on(n, o, action.outcome_word(o), &status, Some(*ms)))
        .collect();
    r.print()
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
        let tags: Vec<&str> = out
            .statements
            .iter()
            .filter_map(|s| s.tag.as_deref())
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "columns": out.columns, "rows": rows, "affected": out.affected, "tags": tags
            }))?
        );
    } else {
        // As psql -At: each statement's rows, or its command tag when it returned none.
        let print_rows = |rows: &[Vec<Option<String>>]| {
            for r in rows {
                let cols: Vec<&str> = r.iter().map(|v| v.as_deref().unwrap_or("")).collect();
                println!("{}", cols.join("|"));
            }
        };
        for st in &out.statements {
            print_rows(&out.rows[st.rows.clone()]);
            if let Some(tag) = &st.tag {
                println!("{tag}");
            }
        }
        let shown = out.statements.last().map_or(0, |s| s.rows.end);
        print_rows(&out.rows[shown..]);
    }
    Ok(ExitCode::SUCCESS)
}

async fn psql(opts: &Options, a: PsqlArgs) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let cluster = open(opts).await?;
    let node = cluster.node(&a.node)?;
    if !cluster.is_running(&a.node).await {
        bail!(
            "{} is not running: start it with `pgrepl start {}`",
            a.node,
            a.node
        );
    }
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
    // The connection first: psql reads its options wherever they are, and a database name
    // the user gives after them wins.
    let err = std::process::Command::new(&psql)
        .arg(conninfo)
        .args(&a.args)
        .exec();
    Err(err).with_context(|| format!("cannot run {}", psql.display()))
}

async fn logs(opts: &Options, a: LogsArgs) -> Result<ExitCode> {
    use futures::StreamExt;
    let cluster = open(opts).await?;
    let node = cluster.node(&a.node)?;
    let mut log = cluster
        .runtime
        .log_stream(node, Some(a.tail), a.follow)
        .await?;
    loop {
        let chunk = tokio::select! {
            c = log.next() => c,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let Some(chunk) = chunk else {
            return Ok(ExitCode::SUCCESS);
        };
        std::io::stdout().write_all(&chunk?)?;
        std::io::stdout().flush()?;
    }
}

async fn compose_export(opts: &Options, a: ComposeExportArgs) -> Result<ExitCode> {
    if a.file.exists() && !a.force {
        bail!(
            "{} already exists: pass --force to overwrite it, or name another file",
            a.file.display()
        );
    }
    let cluster = open(opts).await?;
    let text = pgrepl_core::runtime::docker::compose::export(&cluster, &Spinner::new()).await?;
    std::fs::write(&a.file, text).with_context(|| format!("cannot write {}", a.file.display()))?;
    println!(
        "wrote {}: after `pgrepl down`, `docker-compose -f {} up -d` runs cluster '{}' from it",
        a.file.display(),
        a.file.display(),
        cluster.name()
    );
    Ok(ExitCode::SUCCESS)
}
