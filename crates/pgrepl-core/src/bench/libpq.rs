//! An application's view of a switchover, measured with libpq itself rather than pgrepl's own
//! client: libpq is loaded at run time (dlopen, as a program linked against it would get it),
//! connects with a multi-host conninfo over every node and `target_session_attrs=read-write`,
//! sends one INSERT every 10 ms, and on any error drops the connection and connects again.
//! Every acknowledged row is remembered, so that the rows missing afterwards are counted.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::error::{Error, Result, ResultExt};
use crate::secrets::SUPERUSER;

/// The client's table: one row per acknowledged INSERT.
pub const TABLE: &str = "pgrepl_bench_libpq";
/// One INSERT every 10 ms, as the probe did.
pub const INTERVAL: Duration = Duration::from_millis(10);

const CONNECTION_OK: c_int = 0;
const PGRES_COMMAND_OK: c_int = 1;

type ConnectDb = unsafe extern "C" fn(*const c_char) -> *mut c_void;
type Status = unsafe extern "C" fn(*const c_void) -> c_int;
type Exec = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;
type Free = unsafe extern "C" fn(*mut c_void);
type NoticeProcessor = unsafe extern "C" fn(*mut c_void, *const c_char);
type SetNoticeProcessor =
    unsafe extern "C" fn(*mut c_void, NoticeProcessor, *mut c_void) -> *mut c_void;

/// The few libpq functions the client calls.
struct Api {
    connectdb: ConnectDb,
    status: Status,
    exec: Exec,
    result_status: Status,
    clear: Free,
    finish: Free,
    set_notice_processor: SetNoticeProcessor,
}

/// The server's goodbye (`FATAL: terminating connection due to administrator command`) would
/// go to our stderr: the client's errors are counted, not printed.
unsafe extern "C" fn ignore_notice(_arg: *mut c_void, _message: *const c_char) {}

impl Api {
    /// libpq of the cluster's PostgreSQL installation, else the system's.
    fn load(cluster: &Cluster) -> Result<Api> {
        let mut candidates: Vec<String> = Vec::new();
        if let Some(lib) = cluster.pg.bin.parent().map(|p| p.join("lib")) {
            candidates.push(lib.join("libpq.so.5").to_string_lossy().into_owned());
        }
        candidates.push("libpq.so.5".into());
        let handle = candidates
            .iter()
            .find_map(|c| {
                let name = CString::new(c.as_str()).ok()?;
                // SAFETY: dlopen with a valid C string; the handle is kept for the process.
                let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
                (!h.is_null()).then_some(h)
            })
            .ok_or_else(|| {
                Error::Precondition(format!(
                    "no libpq for the external client (tried {}): install libpq5",
                    candidates.join(", ")
                ))
            })?;
        let sym = |name: &str| -> Result<*mut c_void> {
            let c = CString::new(name).expect("no NUL");
            // SAFETY: dlsym on a live handle with a valid C string.
            let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
            if p.is_null() {
                return Err(Error::Precondition(format!("libpq has no {name}")));
            }
            Ok(p)
        };
        // SAFETY: the symbols are libpq's, with these C signatures (libpq-fe.h).
        unsafe {
            Ok(Api {
                connectdb: std::mem::transmute::<*mut c_void, ConnectDb>(sym("PQconnectdb")?),
                status: std::mem::transmute::<*mut c_void, Status>(sym("PQstatus")?),
                exec: std::mem::transmute::<*mut c_void, Exec>(sym("PQexec")?),
                result_status: std::mem::transmute::<*mut c_void, Status>(sym("PQresultStatus")?),
                clear: std::mem::transmute::<*mut c_void, Free>(sym("PQclear")?),
                finish: std::mem::transmute::<*mut c_void, Free>(sym("PQfinish")?),
                set_notice_processor: std::mem::transmute::<*mut c_void, SetNoticeProcessor>(sym(
                    "PQsetNoticeProcessor",
                )?),
            })
        }
    }

    /// A connection, or None when no read-write node answered.
    fn connect(&self, conninfo: &CStr) -> Option<*mut c_void> {
        // SAFETY: valid C string; the connection is finished on failure.
        unsafe {
            let c = (self.connectdb)(conninfo.as_ptr());
            if c.is_null() {
                return None;
            }
            if (self.status)(c) != CONNECTION_OK {
                (self.finish)(c);
                return None;
            }
            (self.set_notice_processor)(c, ignore_notice, std::ptr::null_mut());
            Some(c)
        }
    }

    /// Runs a command; whether it succeeded.
    fn exec(&self, conn: *mut c_void, sql: &CStr) -> bool {
        // SAFETY: a live connection and a valid C string; the result is cleared.
        unsafe {
            let r = (self.exec)(conn, sql.as_ptr());
            let ok = !r.is_null() && (self.result_status)(r) == PGRES_COMMAND_OK;
            if !r.is_null() {
                (self.clear)(r);
            }
            ok
        }
    }
}

/// What the client saw.
#[derive(Debug, Default)]
pub struct ClientLog {
    /// Acknowledged rows and when their acknowledgement came, from the client's start.
    pub acks: Vec<(i64, Duration)>,
    pub errors: usize,
}

impl ClientLog {
    /// The `n` longest intervals between consecutive acknowledgements: with `n` switchovers
    /// during the run, the gap each caused (the client writes every 10 ms otherwise).
    pub fn longest_gaps(&self, n: usize) -> Vec<Duration> {
        let mut gaps: Vec<Duration> = self.acks.windows(2).map(|w| w[1].1 - w[0].1).collect();
        gaps.sort_by(|a, b| b.cmp(a));
        gaps.truncate(n);
        gaps
    }
}

pub struct Client {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<ClientLog>,
}

impl Client {
    /// Creates (and empties) the client's table on the primary, then starts the client on a
    /// thread of its own: libpq blocks.
    pub async fn start(cluster: &Cluster, primary: &str) -> Result<Client> {
        let api = Api::load(cluster)?;
        cluster
            .connect(primary)
            .await?
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (seq bigint PRIMARY KEY); TRUNCATE {TABLE}"
            ))
            .await
            .what(|| format!("cannot create {TABLE} on {primary}"))?;
        let conninfo = CString::new(conninfo(cluster)).expect("no NUL in a conninfo");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || run(&api, &conninfo, &stopped));
        Ok(Client { stop, thread })
    }

    pub fn stop(self) -> ClientLog {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Every node, the password from the passfile (never in the conninfo), read-write only.
fn conninfo(cluster: &Cluster) -> String {
    let (mut hosts, mut ports) = (Vec::new(), Vec::new());
    for n in &cluster.spec.nodes {
        let at = cluster.runtime.client_endpoint(n);
        hosts.push(at.host);
        ports.push(at.port.to_string());
    }
    format!(
        "host={} port={} user={SUPERUSER} dbname=postgres passfile='{}' application_name=pgrepl-bench-libpq connect_timeout=2 target_session_attrs=read-write",
        hosts.join(","),
        ports.join(","),
        cluster.passfile().to_string_lossy().replace('\'', "\\'")
    )
}

fn run(api: &Api, conninfo: &CStr, stopped: &AtomicBool) -> ClientLog {
    let origin = Instant::now();
    let mut log = ClientLog::default();
    let mut conn: Option<*mut c_void> = None;
    let mut seq: i64 = 0;
    let mut next = Instant::now();
    while !stopped.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > INTERVAL {
            // After an outage: on with the pace, no burst.
            next = now;
        }
        next += INTERVAL;
        let c = match conn {
            Some(c) => c,
            None => match api.connect(conninfo) {
                Some(c) => *conn.insert(c),
                None => {
                    log.errors += 1;
                    continue;
                }
            },
        };
        seq += 1;
        let sql =
            CString::new(format!("INSERT INTO {TABLE} (seq) VALUES ({seq})")).expect("no NUL");
        if api.exec(c, &sql) {
            log.acks.push((seq, origin.elapsed()));
        } else {
            log.errors += 1;
            // SAFETY: the connection is not used again.
            unsafe { (api.finish)(c) };
            conn = None;
        }
    }
    if let Some(c) = conn {
        // SAFETY: last use.
        unsafe { (api.finish)(c) };
    }
    log
}

/// Acknowledged rows missing on `primary` afterwards.
pub async fn lost(cluster: &Cluster, primary: &str, log: &ClientLog) -> Result<usize> {
    let rows = cluster
        .connect(primary)
        .await?
        .query(&format!("SELECT seq FROM {TABLE}"), &[])
        .await
        .what(|| format!("cannot read {TABLE} on {primary}"))?;
    let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    Ok(log
        .acks
        .iter()
        .filter(|(s, _)| !present.contains(s))
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gaps_are_the_switchovers() {
        let ms = Duration::from_millis;
        let log = ClientLog {
            acks: [0, 10, 20, 95, 105, 115, 300, 310]
                .iter()
                .enumerate()
                .map(|(i, t)| (i as i64, ms(*t)))
                .collect(),
            errors: 3,
        };
        assert_eq!(log.longest_gaps(2), [ms(185), ms(75)]);
    }
}
