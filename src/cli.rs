//! The command line: what each command takes. Parsing only; the work is in pgrepl-core.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const LONG_ABOUT: &str = "\
Build, operate and drill PostgreSQL streaming-replication clusters: real PostgreSQL servers \
running as local processes (PostgreSQL 18 by default, provisioned when the machine lacks it).

Getting started:
  pgrepl up                   the lab: pg0 primary; pg1, pg2 (sync2), pg3 (sync3) standbys
  pgrepl status               who is primary, who streams, lag (-o wide: every column)
  pgrepl psql pg0             psql on a node (psql's own options after the node)
  pgrepl sql pg1 \"SELECT 1\"   one statement, rows printed like psql -At
  pgrepl down --purge         stop everything and delete the cluster's files

The cluster file (pgrepl.toml) says what the cluster should be. pgrepl finds it as git finds \
its repository: -c FILE, else $PGREPL_CONFIG, else pgrepl.toml in the current folder or the \
nearest folder above it; `init` and `up` write one in the current folder when there is none. \
The cluster's data directories, logs and passfile go to .pgrepl/<cluster>/ next to that file \
(or where its data_dir says).

Environment:
  PGREPL_CONFIG      the cluster file (when -c is not given)
  PGREPL_BASE_PORT   pg0's port when `init` or `up` writes a cluster file (default 15432;
                     pg1 gets the next port, and so on)
  PGREPL_PG_BIN      a folder of PostgreSQL binaries to use (--pg-bin)
  PGREPL_CACHE_DIR   where provisioned PostgreSQL is kept
  PGREPL_LOG         what to log on stderr, in tracing's filter syntax (instead of -v)

Exit status: 0 on success; 2 when the command line cannot be parsed; 1 for any other error, \
told in one line on stderr that names the problem and the fix (a refused command changes \
nothing). Commands that change something take --json for scripts.";

#[derive(Parser, Debug)]
#[command(
    name = "pgrepl",
    version,
    about = "Build, operate and drill PostgreSQL streaming-replication clusters",
    long_about = LONG_ABOUT
)]
pub struct Cli {
    /// The cluster file [default: pgrepl.toml here or in the nearest folder above; env:
    /// PGREPL_CONFIG].
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory holding the PostgreSQL binaries to use (overrides the cluster file).
    #[arg(long, global = true, env = "PGREPL_PG_BIN")]
    pub pg_bin: Option<PathBuf>,
    /// OS user that runs PostgreSQL when pgrepl runs as root.
    #[arg(long, global = true, default_value = "postgres")]
    pub os_user: String,
    /// More logging (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write the lab's cluster file: pg0 primary; pg1, pg2 (sync2), pg3 (sync3) standbys.
    Init(InitArgs),
    /// Bring the whole cluster up: primary initialized, every standby cloned and streaming.
    #[command(
        long_about = "Bring the whole cluster up: initdb the primary, create the replication role \
and slots, clone every standby through its slot, start them and wait until each streams; then \
print the status. Without a cluster file, writes the lab's (pgrepl.toml in the current folder, \
ports 15432-15435 unless --base-port or PGREPL_BASE_PORT says otherwise). Re-running it on a \
cluster that is up changes nothing; after it was interrupted, it finishes the work.",
        after_help = "Examples:\n  pgrepl up\n  pgrepl up --base-port 25432    # when 15432-15435 are taken\n  pgrepl up --json"
    )]
    Up(UpArgs),
    /// Stop every node; --purge also deletes the cluster's data.
    Down(DownArgs),
    /// Primary operations.
    #[command(subcommand)]
    Primary(PrimaryCmd),
    /// Standby operations.
    #[command(subcommand)]
    Standby(StandbyCmd),
    /// One row per node: role, state, timeline, lag, sync state (-o wide: LSN, upstream, slot...).
    #[command(
        long_about = "One row per node, read from PostgreSQL: where it listens, its role (the \
primary clients write to is marked *), its state (a standby WAL flows to is `streaming`), its \
timeline, how many bytes of WAL it lags behind the primary, and its sync state as the primary's \
pg_stat_replication says (async, potential, sync, quorum). A stopped node is a row too, with \
the end of the WAL it had reached. Notes and warnings follow the table: split brain, a node that \
needs rejoin, synchronous replication that blocks commits, no standby holding a copy.",
        after_help = "Examples:\n  pgrepl status\n  pgrepl status -o wide         # LSN, upstream, slot, application name, lag times\n  pgrepl status -o json         # or yaml\n  pgrepl status --watch         # redraw every second; piped: a line per change"
    )]
    Status(StatusArgs),
    /// Generate load.
    #[command(subcommand)]
    Load(LoadCmd),
    /// Start nodes (a standby: until it streams).
    #[command(after_help = "Examples:\n  pgrepl start pg1\n  pgrepl start pg2 pg3 --json")]
    Start(NodesArgs),
    /// Stop nodes (fast shutdown).
    #[command(after_help = "Examples:\n  pgrepl stop pg2 pg3\n  pgrepl stop pg1 --json")]
    Stop(NodesArgs),
    /// Crash nodes: SIGKILL of the postmaster and all its backends at once.
    #[command(after_help = "Examples:\n  pgrepl kill pg0\n  pgrepl kill pg0 --json")]
    Kill(NodesArgs),
    /// Run SQL on a node; rows print like `psql -At`, other statements their command tag.
    #[command(
        after_help = "Examples:\n  pgrepl sql pg0 \"CREATE TABLE t (id int); INSERT INTO t VALUES (1)\"\n  pgrepl sql pg1 \"SELECT count(*) FROM t\"\n  pgrepl sql pg0 \"INSERT INTO t VALUES (2)\" --timeout 5s   # explains a commit that waits"
    )]
    Sql(SqlArgs),
    /// Open psql on a node, as the superuser; psql's own arguments go after `--`.
    #[command(
        after_help = "Examples:\n  pgrepl psql pg0\n  pgrepl psql pg0 -- -c 'SELECT 1'\n  pgrepl psql pg1 -- -At -c 'SELECT pg_is_in_recovery()'"
    )]
    Psql(PsqlArgs),
    /// Show a node's server log: the last 50 lines, or --tail N; --follow keeps printing.
    #[command(
        after_help = "Examples:\n  pgrepl logs pg0\n  pgrepl logs pg0 --tail 200\n  pgrepl logs pg1 -f"
    )]
    Logs(LogsArgs),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    #[command(
        long_about = "Print a shell completion script for pgrepl's commands and options.",
        after_help = "Examples:\n  pgrepl completions bash > /etc/bash_completion.d/pgrepl\n  pgrepl completions zsh > \"${fpath[1]}/_pgrepl\"\n  pgrepl completions fish > ~/.config/fish/completions/pgrepl.fish"
    )]
    Completions(CompletionsArgs),
    /// Print pgrepl's manual page (roff), or write one per command into a folder.
    #[command(
        after_help = "Examples:\n  pgrepl man | man -l -\n  pgrepl man --dir /usr/local/share/man/man1"
    )]
    Man(ManArgs),
    /// Find or provision PostgreSQL.
    #[command(subcommand)]
    Postgres(PostgresCmd),
    /// Synchronous replication on the current primary.
    #[command(subcommand)]
    Sync(SyncCmd),
    /// Benchmarks that print figures (with baselines measured in the same run); without a
    /// subcommand, all of them in one report.
    Bench(BenchArgs),
    /// Run a write workload, inject an event, and measure what clients saw: write gap,
    /// recovery time, lost acknowledged writes, convergence.
    Drill(DrillArgs),
    /// Promote a standby (refuses while another primary runs, unless --fence or --force).
    Promote(PromoteArgs),
    /// Unplanned failover when the primary is lost: promote the best standby, repoint the rest
    /// (completes an interrupted one; refuses while the primary answers, unless --force).
    Failover(FailoverArgs),
    /// Planned role swap with no data loss: the primary becomes a standby of NODE.
    Switchover(SwitchoverArgs),
    /// Make a failed or demoted node a standby again (pg_rewind, or a fresh clone).
    Rejoin(RejoinArgs),
    /// docker-compose files of a docker cluster.
    #[command(subcommand)]
    Compose(ComposeCmd),
    /// Network faults on one node (netns and docker runtimes): partition, delay, loss, heal.
    #[command(subcommand)]
    Net(NetCmd),
    /// Stop every process of a node at once (SIGSTOP): it keeps its connections and answers
    /// nothing until `pgrepl thaw`.
    Freeze(NodeArg),
    /// Resume a frozen node (SIGCONT).
    Thaw(NodeArg),
    /// The netns runtime's packet delayer (started by `pgrepl net delay`, not by hand).
    #[command(name = "__net-delayer", hide = true)]
    NetDelayer(NetDelayerArgs),
    /// Print an HAProxy configuration: a read-write frontend on the primary and a read-only
    /// one over the streaming standbys, checked on the monitor's health endpoints.
    HaproxyConfig(HaproxyConfigArgs),
    /// Watch every node and fail over automatically: fence a dead primary, promote the best
    /// standby, repoint the others, rejoin the old primary when it comes back.
    #[command(
        long_about = "Watch every node and act, in the foreground until Ctrl-C or SIGTERM: a primary \
the runtime says is gone is replaced at once; one the monitor cannot reach is replaced after \
--failover-timeout, and only when no standby still receives WAL from it. Before a promotion the \
old primary is fenced (stopped, or killed when frozen or hung). The standby with the most WAL \
is promoted (under synchronous replication only a synchronous one), the others follow it, and \
the old primary is rejoined as a standby when it comes back. Standbys that stop streaming are \
restarted, slots nobody streams through are dropped. Every decision and action goes to the \
event log (`pgrepl events`). One monitor per cluster. The cluster file's [monitor] section: \
on_sync_loss = \"block\" | \"degrade\", allow_data_loss = false, interval, failover_timeout.",
        after_help = "Examples:\n  pgrepl monitor\n  pgrepl monitor --failover-timeout 5s     # fewer false failovers, slower ones\n  pgrepl monitor --http-base-port 8008    # Patroni-style health checks: node i on 8008+i\n  pgrepl monitor --http 127.0.0.1:8000    # one listener: /node/pg0/primary, /cluster, /metrics"
    )]
    Monitor(MonitorArgs),
    /// The monitor's event log as a readable history (--follow keeps printing).
    #[command(
        after_help = "Examples:\n  pgrepl events\n  pgrepl events -n 20\n  pgrepl events --follow\n  pgrepl events --json"
    )]
    Events(EventsArgs),
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// How often to look at every node [default: the cluster file's, else 500ms].
    #[arg(long, value_parser = positive_duration)]
    pub interval: Option<Duration>,
    /// How long a primary the monitor cannot reach (and no standby hears from) may stay
    /// silent before the failover [default: the cluster file's, else 2s].
    #[arg(long, value_parser = positive_duration)]
    pub failover_timeout: Option<Duration>,
    /// Serve the health endpoints on one address; the node goes in the path
    /// (/node/pg0/primary), plus /cluster and /metrics.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// Serve each node's health endpoints on its own port: node i on this port + i (as
    /// `pgrepl haproxy-config` expects).
    #[arg(long, value_name = "PORT")]
    pub http_base_port: Option<u16>,
    /// The address --http-base-port listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub http_host: std::net::IpAddr,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Keep printing events as they are written.
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON object per line, as stored.
    #[arg(long)]
    pub json: bool,
    /// Only the last N events.
    #[arg(short = 'n', long, value_name = "N", value_parser = at_least_one)]
    pub last: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum NetCmd {
    /// Cut NODE off, both directions: by default from every other node and from the host.
    Partition(NetPartitionArgs),
    /// Remove the network faults of NODE (of every node without one).
    Heal(NetHealArgs),
    /// Delay every packet NODE sends, e.g. `net delay pg1 50ms --jitter 10ms`.
    Delay(NetDelayArgs),
    /// Drop a share of the packets NODE sends, e.g. `net loss pg1 5%`.
    Loss(NetLossArgs),
    /// Each node's faults (network faults, and frozen).
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct NetPartitionArgs {
    pub node: String,
    /// Only from these (comma-separated node names; `host` for the host).
    #[arg(long, value_delimiter = ',')]
    pub from: Vec<String>,
    /// Keep the host's link (pgrepl can still see the node).
    #[arg(long)]
    pub no_host: bool,
}

#[derive(Args, Debug)]
pub struct NetHealArgs {
    pub node: Option<String>,
}

#[derive(Args, Debug)]
pub struct NetDelayArgs {
    pub node: String,
    /// How long each packet waits, e.g. 50ms.
    #[arg(allow_hyphen_values = true)]
    pub delay: String,
    /// Each packet's delay varies by up to this much either way (order is kept).
    #[arg(long, allow_hyphen_values = true)]
    pub jitter: Option<String>,
}

#[derive(Args, Debug)]
pub struct NetLossArgs {
    pub node: String,
    /// Share of packets dropped, e.g. 5%.
    #[arg(allow_hyphen_values = true)]
    pub percent: String,
}

#[derive(Args, Debug)]
pub struct NetDelayerArgs {
    /// The network namespace (a name in /run/netns, or a path).
    #[arg(long)]
    pub netns: String,
    #[arg(long, default_value_t = 0)]
    pub queue: u16,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Duration,
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub jitter: Duration,
}

#[derive(Subcommand, Debug)]
pub enum ComposeCmd {
    /// Write a docker-compose.yml that reproduces the cluster's containers, network and ports
    /// (`docker-compose -f FILE up -d` after `pgrepl down`).
    Export(ComposeExportArgs),
}

#[derive(Args, Debug)]
pub struct ComposeExportArgs {
    #[arg(default_value = "docker-compose.yml")]
    pub file: PathBuf,
    /// Overwrite FILE when it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct HaproxyConfigArgs {
    /// The monitor's health endpoints: node i answers on this port + i.
    #[arg(long, default_value_t = pgrepl_core::monitor::haproxy::DEFAULT_HTTP_BASE_PORT)]
    pub http_base_port: u16,
    /// The address the monitor's health endpoints listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub http_host: std::net::IpAddr,
    /// The address HAProxy listens on for clients.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// The read-write frontend's port (default: the cluster's first port + 100).
    #[arg(long)]
    pub rw_port: Option<u16>,
    /// The read-only frontend's port (default: the cluster's first port + 101).
    #[arg(long)]
    pub ro_port: Option<u16>,
    /// Also send reads to the primary (check /read-only instead of /replica).
    #[arg(long)]
    pub ro_includes_primary: bool,
}

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// The event: switchover, failover, crash, freeze, sync-block, partition or delay; or `matrix`, the
    /// failover drill under async, FIRST 1 and ANY 1 (sync2, sync3) replication in one table.
    pub event: String,
    /// How many times to run it (between runs the cluster is made ready again: one primary,
    /// every node running, every standby streaming).
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub runs: usize,
    /// Concurrent writing clients.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Target commits per second, all writers together.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// How long a freeze, a sync block, a partition or a delay lasts.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// The delay event's delay of every packet the primary sends.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// Steady load before the event.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub before: Duration,
    /// Steady load after writes resumed.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub after: Duration,
    #[arg(long)]
    pub json: bool,
    /// Write report.json and a chart per run (SVG and PNG) into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    pub node: String,
    /// Stop (fast shutdown) any other running primary first.
    #[arg(long)]
    pub fence: bool,
    /// Promote even though another primary runs: a split brain, on purpose.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object (what was done, the figures) instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// The standby to promote (default: the one that has received the most WAL).
    #[arg(long)]
    pub to: Option<String>,
    /// Fail over although the primary runs and answers (it is fenced), or although a stopped
    /// node holds a newer promotion than the standbys (its timeline is discarded).
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object (what was done, the figures) instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SwitchoverArgs {
    /// The streaming standby that becomes the primary.
    #[arg(long)]
    pub to: String,
    /// Print one JSON object (what was done, the figures) instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RejoinArgs {
    pub node: String,
    /// The node to stream from (usually the new primary).
    #[arg(long)]
    pub upstream: String,
    /// Slot on the upstream to stream through (default: the node's slot in the cluster file,
    /// else NODE_slot).
    #[arg(long)]
    pub slot: Option<String>,
    /// Move the data directory aside (kept) and take a fresh clone instead of pg_rewind.
    #[arg(long)]
    pub reclone: bool,
    /// Rejoin NODE although it is the running primary (it is demoted: writes stop until
    /// another node is promoted).
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object (what was done, the figures) instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StandbyFollowArgs {
    pub node: String,
    /// The node to stream from from now on.
    #[arg(long)]
    pub upstream: String,
    /// Print one JSON object (what was done, the figures) instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The cluster's name (in its data folder's name and in every server's process title).
    #[arg(long, default_value = pgrepl_core::spec::DEFAULT_CLUSTER_NAME)]
    pub name: String,
    /// Port of pg0; the others follow (pg1 = P+1, ...) [default: 15432; env:
    /// PGREPL_BASE_PORT].
    #[arg(long, value_name = "P")]
    pub base_port: Option<u16>,
    /// Where the nodes live: local (processes on this machine), netns, docker.
    #[arg(long, default_value_t = pgrepl_core::spec::RuntimeKind::Local)]
    pub runtime: pgrepl_core::spec::RuntimeKind,
    /// The docker runtime's image, when you have one (e.g. postgres:18); without it pgrepl
    /// builds pgrepl/postgres:<version> from the PostgreSQL it runs.
    #[arg(long)]
    pub image: Option<String>,
    /// Overwrite an existing cluster file (the cluster's data is kept).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    /// Delete the cluster's data directories, logs and passwords.
    #[arg(long)]
    pub purge: bool,
    /// Do not ask before purging.
    #[arg(long, requires = "purge")]
    pub yes: bool,
}

#[derive(Subcommand, Debug)]
pub enum PrimaryCmd {
    /// Initialize NODE as primary: replication user, pg_hba, slots, replication settings.
    Init(NodeArg),
}

#[derive(Subcommand, Debug)]
pub enum StandbyCmd {
    /// Clone NODE with pg_basebackup through SLOT, start it, wait until it streams.
    Add(StandbyAddArgs),
    /// Repoint a standby to another upstream (reload, no restart).
    Follow(StandbyFollowArgs),
}

#[derive(Args, Debug)]
pub struct StandbyAddArgs {
    pub node: String,
    #[arg(long)]
    pub slot: String,
    /// The node to stream from (default: the cluster file's primary).
    #[arg(long)]
    pub upstream: Option<String>,
    /// Name the standby reports (what synchronous_standby_names refers to).
    #[arg(long)]
    pub application_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Port of pg0 when up writes the cluster file; the others follow (pg1 = P+1, ...)
    /// [default: 15432; env: PGREPL_BASE_PORT].
    #[arg(long, value_name = "P")]
    pub base_port: Option<u16>,
    /// Print what was done as one JSON object (nodes, timings) instead of the status table.
    #[arg(long)]
    pub json: bool,
}

/// How `status` shows the cluster.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFormat {
    /// The table that fits 80 columns.
    Table,
    /// Every column: LSN, upstream, slot, application name, sync priority, lag times.
    Wide,
    /// Everything status reads, for programs.
    Json,
    /// The same as YAML.
    Yaml,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// How to show it.
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t = StatusFormat::Table)]
    pub output: StatusFormat,
    /// Same as -o json.
    #[arg(long)]
    pub json: bool,
    /// Refresh until interrupted: in place on a terminal, with the changes listed; when
    /// piped, the table once and then a line for each change.
    #[arg(short, long, conflicts_with = "json")]
    pub watch: bool,
    /// Refresh interval for --watch.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub interval: Duration,
}

#[derive(Subcommand, Debug)]
pub enum LoadCmd {
    /// Write about N MB of WAL on the primary and time each standby's replay.
    Wal(LoadWalArgs),
}

#[derive(Args, Debug)]
pub struct LoadWalArgs {
    #[arg(long, default_value_t = 16)]
    pub mb: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NodesArgs {
    /// Nodes of the cluster file (pg0, pg1, ...).
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
    /// Print what was done as one JSON object: each node's outcome, role, streaming, timing.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PsqlArgs {
    /// The node to connect to (pg0, pg1, ...).
    pub node: String,
    /// psql's own options and arguments, after `--` (e.g. -- -c 'SELECT 1', -- -At -f FILE).
    #[arg(last = true, value_name = "PSQL ARGS")]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write pgrepl.1 and a page per command (pgrepl-status.1, ...) into this folder
    /// instead of printing pgrepl.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct NodeArg {
    pub node: String,
}

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The node to run it on.
    pub node: String,
    /// One or more statements (separated by `;`).
    pub sql: String,
    /// Cancel the statement after this long (e.g. 5s) and say what it waited on.
    #[arg(long, value_parser = positive_duration)]
    pub timeout: Option<Duration>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The node whose server log to show.
    pub node: String,
    /// How many of the last lines to show (0: none; with --follow, only what comes next).
    #[arg(short = 'n', long = "tail", value_name = "N", default_value_t = 50)]
    pub tail: usize,
    /// Keep printing what the server writes until Ctrl-C, like `tail -f`.
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Subcommand, Debug)]
pub enum PostgresCmd {
    /// Provision PostgreSQL VERSION into pgrepl's cache (only 18 can be provisioned).
    Install { version: u32 },
    /// List every PostgreSQL installation found on this machine.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SyncCmd {
    /// Make commits on the current primary wait for synchronous standbys; recorded in the
    /// cluster file's [sync]. Options not given keep that [sync] (else FIRST 1 (sync2,
    /// sync3)); a new --standbys list alone means FIRST 1.
    #[command(
        after_help = "Examples:\n  pgrepl sync enable                              # FIRST 1 (sync2, sync3)\n  pgrepl sync enable --standbys pg2,pg3           # the same, by node name\n  pgrepl sync enable --method any --num 1 --commit remote_apply"
    )]
    Enable(SyncEnableArgs),
    /// Back to asynchronous replication; commits waiting for a standby complete.
    Disable(SyncDisableArgs),
}

#[derive(Args, Debug)]
pub struct SyncEnableArgs {
    /// The standbys (comma-separated): application names, or node names (pg2 is listed as
    /// its application name, sync2), or '*' for any standby.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub standbys: Option<Vec<String>>,
    /// FIRST: the N highest-priority (in list order); ANY: any N (quorum).
    #[arg(long, value_enum)]
    pub method: Option<SyncMethodArg>,
    /// How many standbys must confirm each commit.
    #[arg(long)]
    pub num: Option<u32>,
    /// synchronous_commit: on, remote_write, remote_apply, local.
    #[arg(long)]
    pub commit: Option<String>,
    /// Accept names that are no standby of this cluster.
    #[arg(long)]
    pub allow_unknown: bool,
    /// Print what was done as one JSON object: the setting, each standby's sync state.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SyncDisableArgs {
    /// Print what was done as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SyncMethodArg {
    First,
    Any,
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Every benchmark below in one report (fewer runs each; a few minutes).
    All {
        #[arg(long)]
        json: bool,
    },
    /// Time `up` of the 4-node lab against the bare steps it is made of; with --runtime,
    /// `up` on that runtime against the local runtime's, measured in the same run.
    Up {
        /// Runs (default 5; 3 each with --runtime).
        #[arg(long, value_parser = at_least_one)]
        runs: Option<usize>,
        /// Compare this runtime's `up` with the local one's (docker: also the image build).
        #[arg(long)]
        runtime: Option<pgrepl_core::spec::RuntimeKind>,
        #[arg(long)]
        json: bool,
    },
    /// pgbench on the primary: asynchronous vs each synchronous_commit level with 1 and 2
    /// synchronous standbys.
    Sync(BenchSyncArgs),
    /// Switchover write gap seen by a reconnecting client, promote alone, rejoin alone
    /// (pg_rewind), optionally the failover drill, on a scratch lab.
    Switchover {
        /// Switchovers, and promote + rejoin cycles.
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        runs: usize,
        /// Failover drills (SIGKILL of the primary, then failover) to add; 0 for none.
        #[arg(long, default_value_t = 0)]
        failover_runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// Automatic failover: SIGKILL of the primary to the first write acknowledged by the new
    /// one, with `pgrepl monitor` at its defaults, beside Patroni's, repmgr's and
    /// pg_auto_failover's figures.
    Failover {
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        runs: usize,
        /// local or docker (the runtime tells the monitor the node is gone).
        #[arg(long, default_value = "local")]
        runtime: pgrepl_core::spec::RuntimeKind,
        #[arg(long)]
        json: bool,
    },
    /// Rejoin of a diverged old primary by pg_rewind against by re-clone, on a database of
    /// `pgbench -i -s SCALE`.
    Rejoin {
        /// pgbench's scale factor (about 15 MB each: 35 makes over 500 MB).
        #[arg(long, default_value_t = 35)]
        scale: u32,
        /// Rejoins of each kind.
        #[arg(long, default_value_t = 1, value_parser = at_least_one)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// The drill writer's acknowledged commits/s against a lone primary
    /// (synchronous_commit=off), beside pgbench running the same INSERT.
    Writer {
        #[arg(long, default_value_t = 4)]
        writers: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub cmd: Option<BenchCmd>,
    /// With no subcommand: print the whole report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchSyncArgs {
    /// How long each pgbench run lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// pgbench's scale factor (at least the number of clients avoids row contention).
    #[arg(long, default_value_t = 4)]
    pub scale: u32,
    #[arg(long)]
    pub json: bool,
}

/// A count of repetitions: zero would quietly do one run, or none.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("it must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// An interval between repetitions: zero would spin.
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}: give a duration such as 500ms, 2s or 1m"))?;
    if d.is_zero() {
        return Err("it must be longer than zero (e.g. 1s)".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("pgrepl").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn psql_arguments_go_to_psql() {
        let cli = parse(&["psql", "pg0", "--", "-c", "select 1"]);
        assert_eq!(cli.config, None, "-c after -- is psql's");
        let Command::Psql(a) = cli.command else {
            panic!("not psql")
        };
        assert_eq!(
            (a.node.as_str(), a.args),
            ("pg0", vec!["-c".to_string(), "select 1".into()])
        );
        let cli = parse(&["-c", "x.toml", "psql", "pg1"]);
        assert_eq!(cli.config.as_deref(), Some(std::path::Path::new("x.toml")));
    }

    /// The commands pgrepl's hints and errors tell people to run (`fix:` texts, notes,
    /// warnings), with sample values: each must parse, so that no hint names a command or a
    /// flag that does not exist. Add a hint's command here when you write a new one.
    #[test]
    fn the_commands_hints_name_exist() {
        let hints = [
            "up",
            "up --base-port 25432",
            "init",
            "init -c /srv/lab/pgrepl.toml",
            "init --force --base-port 25432",
            "init --force --runtime netns",
            "init --force --runtime docker",
            "init --force --runtime local",
            "init --runtime docker --image postgres:18",
            "status",
            "status -o wide",
            "down",
            "down --purge --yes",
            "start pg1",
            "stop pg1",
            "kill pg1",
            "freeze pg1",
            "thaw pg1",
            "logs pg1",
            "load wal --mb 64",
            "primary init pg0",
            "standby add pg4 --slot pg4_slot --upstream pg0",
            "standby add pg2 --slot pg2_slot --application-name sync2 --upstream pg0",
            "standby follow pg1 --upstream pg2",
            "promote pg1",
            "promote pg1 --fence",
            "promote pg1 --force",
            "failover",
            "failover --force",
            "failover --to pg1",
            "failover --to pg1 --force",
            "switchover --to pg1",
            "rejoin pg0 --upstream pg1",
            "rejoin pg0 --upstream pg1 --force",
            "rejoin pg0 --upstream pg1 --reclone",
            "sync enable",
            "sync enable --standbys sync2,sync3",
            "sync enable --method any --num 1 --standbys sync2,sync3",
            "sync enable --allow-unknown --standbys x",
            "sync disable",
            "sql pg0 SELECT --timeout 5s",
            "psql pg0 -- -c SELECT",
            "net heal pg1",
            "net partition pg1 --no-host",
            "net delay pg1 50ms --jitter 10ms",
            "net loss pg1 5%",
            "postgres list",
            "postgres install 18",
            "compose export",
            "haproxy-config",
            "drill matrix",
            "drill failover --runs 3",
            "bench all",
            "bench up",
            "bench sync",
            "bench writer",
            "bench rejoin",
            "bench switchover",
        ];
        for h in hints {
            let args = std::iter::once("pgrepl").chain(h.split(' '));
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("`pgrepl {h}` does not parse: {e}");
            }
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
