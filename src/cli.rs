//! The command line: what each command takes. Parsing only; the work is in pgrepl-core.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "pgrepl",
    version,
    about = "Build, operate and drill PostgreSQL streaming-replication clusters"
)]
pub struct Cli {
    /// The cluster file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "pgrepl.toml"
    )]
    pub config: PathBuf,
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
    Up,
    /// Stop every node; --purge also deletes the cluster's data.
    Down(DownArgs),
    /// Primary operations.
    #[command(subcommand)]
    Primary(PrimaryCmd),
    /// Standby operations.
    #[command(subcommand)]
    Standby(StandbyCmd),
    /// One row per node: role, timeline, LSN, upstream, sync state, lag.
    Status(StatusArgs),
    /// Generate load.
    #[command(subcommand)]
    Load(LoadCmd),
    /// Start nodes.
    Start(NodesArgs),
    /// Stop nodes (fast shutdown).
    Stop(NodesArgs),
    /// Crash nodes: SIGKILL of the postmaster and all its backends at once.
    Kill(NodesArgs),
    /// Run SQL on a node; rows print like `psql -At`.
    Sql(SqlArgs),
    /// Open an interactive psql on a node.
    Psql(NodeArg),
    /// Show a node's server log.
    Logs(LogsArgs),
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
    /// Unplanned failover: fence the old primary, promote the best standby, repoint the rest.
    Failover(FailoverArgs),
    /// Planned role swap with no data loss: the primary becomes a standby of NODE.
    Switchover(SwitchoverArgs),
    /// Make a failed or demoted node a standby again (pg_rewind, or a fresh clone).
    Rejoin(RejoinArgs),
    /// Print an HAProxy configuration: a read-write frontend on the primary and a read-only
    /// one over the streaming standbys, checked on the monitor's health endpoints.
    HaproxyConfig(HaproxyConfigArgs),
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
    /// The event: switchover, failover, crash, freeze or sync-block; or `matrix`, the
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
    /// How long a freeze or a sync block lasts.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
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
}

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// The standby to promote (default: the one that has received the most WAL).
    #[arg(long)]
    pub to: Option<String>,
}

#[derive(Args, Debug)]
pub struct SwitchoverArgs {
    /// The streaming standby that becomes the primary.
    #[arg(long)]
    pub to: String,
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
}

#[derive(Args, Debug)]
pub struct StandbyFollowArgs {
    pub node: String,
    /// The node to stream from from now on.
    #[arg(long)]
    pub upstream: String,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[arg(long, default_value = pgrepl_core::spec::DEFAULT_CLUSTER_NAME)]
    pub name: String,
    /// Port of pg0; the others follow (pg1 = P+1, ...).
    #[arg(long, default_value_t = pgrepl_core::spec::DEFAULT_BASE_PORT)]
    pub base_port: u16,
    /// Where the nodes live: local (processes on this machine), netns, docker.
    #[arg(long, default_value_t = pgrepl_core::spec::RuntimeKind::Local)]
    pub runtime: pgrepl_core::spec::RuntimeKind,
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
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
    /// Refresh in place until interrupted.
    #[arg(long, conflicts_with = "json")]
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
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NodeArg {
    pub node: String,
}

#[derive(Args, Debug)]
pub struct SqlArgs {
    pub node: String,
    pub sql: String,
    /// Cancel the statement after this long (e.g. 5s) and say what it waited on.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub node: String,
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
    Enable(SyncEnableArgs),
    /// Back to asynchronous replication; commits waiting for a standby complete.
    Disable(SyncDisableArgs),
}

#[derive(Args, Debug)]
pub struct SyncEnableArgs {
    /// Application names of the standbys (comma-separated), or '*' for any standby.
    #[arg(long, value_delimiter = ',')]
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
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SyncDisableArgs {
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
    /// Time `up` of the 4-node lab against the bare steps it is made of.
    Up {
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        runs: usize,
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
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("it must be longer than zero (e.g. 1s)".into());
    }
    Ok(d)
}
