//! Network delay without sch_netem (not built into this kernel): a rule in the node's
//! namespace hands the packets the node sends to NFQUEUE, and this process holds each one for
//! `delay` (± `jitter`) before letting it go. It is the pgrepl binary itself, run detached
//! with a hidden subcommand inside the node's namespace (a queue belongs to the namespace of
//! the netlink socket that binds it), until SIGTERM: then it lets every held packet go and
//! exits. It is found again by its namespace and command line: no pid file.
//!
//! Order is kept (each deadline is at least the previous one): netem's jitter reorders
//! packets, which TCP answers with duplicate ACKs and retransmissions; a lab fault should add
//! latency, not reordering.

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nfq::{Queue, Verdict};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;
use rand::Rng;

use crate::error::{Error, Result, ResultExt};
use crate::runtime::enter::{self, Enter};
use crate::runtime::netfault::tools as naming;
use crate::runtime::signals;

/// The hidden subcommand: `pgrepl __net-delayer --netns NAME --queue N --delay D --jitter J`.
pub const SUBCOMMAND: &str = "__net-delayer";

/// Queues are per network namespace: every node can use the same number.
pub const QUEUE: u16 = 0;

/// What one delayer does (its command line).
#[derive(Debug, Clone, PartialEq)]
pub struct Delay {
    pub queue: u16,
    pub delay: Duration,
    pub jitter: Duration,
}

/// Whether `pid` is a delayer (by its command line).
pub fn is_delayer(pid: i32) -> bool {
    enter::cmdline(pid).get(1).map(String::as_str) == Some(SUBCOMMAND)
}

/// The delayers running in a namespace, with what each does.
pub fn find(netns: &str) -> Vec<(i32, Delay)> {
    enter::pids_in(&naming::ns_path(netns))
        .into_iter()
        .filter(|p| signals::alive(*p))
        .filter_map(|pid| {
            let args = enter::cmdline(pid);
            if args.get(1).map(String::as_str) != Some(SUBCOMMAND) {
                return None;
            }
            let value = |flag: &str| {
                args.iter()
                    .position(|a| a == flag)
                    .and_then(|i| args.get(i + 1))
            };
            let duration = |flag: &str| value(flag).and_then(|v| humantime::parse_duration(v).ok());
            Some((
                pid,
                Delay {
                    queue: value("--queue")?.parse().ok()?,
                    delay: duration("--delay")?,
                    jitter: duration("--jitter").unwrap_or_default(),
                },
            ))
        })
        .collect()
}

/// Starts a delayer for `netns`, detached, its stderr appended to `log`; returns once it has
/// bound its queue (only then may a rule send packets to it).
pub async fn spawn(netns: &str, d: &Delay, log: &Path) -> Result<i32> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().what(|| "cannot find the pgrepl binary".into())?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args([
        SUBCOMMAND,
        "--netns",
        netns,
        "--queue",
        &d.queue.to_string(),
        "--delay",
        &humantime::format_duration(d.delay).to_string(),
        "--jitter",
        &humantime::format_duration(d.jitter).to_string(),
    ])
    .env_clear()
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .what(|| format!("cannot open {}", log.display()))?,
    )
    .kill_on_drop(false);
    Enter::netns(&naming::ns_path(netns))
        .what(|| format!("cannot enter network namespace {netns}"))?
        .detached()
        .install(&mut cmd);
    let mut child = cmd.spawn().what(|| "cannot start the delayer".into())?;
    let pid = child.id().unwrap_or(0) as i32;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    let mut stdout = tokio::io::BufReader::new(stdout);
    let read = stdout.read_line(&mut line);
    let ready = tokio::time::timeout(Duration::from_secs(10), read).await;
    if !matches!(ready, Ok(Ok(_))) || line.trim() != "ready" {
        let _ = child.start_kill();
        return Err(Error::Command {
            what: format!("the delayer in {netns}"),
            detail: format!("it did not start: {}", crate::runtime::tail(log, 5)),
        });
    }
    // Not waited for: it outlives this command. (Dropping a tokio Child lets it run, and
    // tokio reaps it if it ends while we still run.)
    drop(child);
    Ok(pid)
}

/// Stops every delayer of a namespace (SIGTERM: they let their packets go first) and waits
/// until they are gone.
pub async fn stop(netns: &str) {
    let pids: Vec<i32> = find(netns).into_iter().map(|(p, _)| p).collect();
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGTERM);
    }
    for _ in 0..500 {
        if !pids.iter().any(|p| signals::alive(*p)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Hung: the held packets are lost either way, and TCP resends them.
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The delayer process itself (the hidden subcommand), before any other thread exists: it
/// enters `netns`, binds the queue, says `ready` on stdout, and delays until SIGTERM.
pub fn run_process(netns: &str, d: &Delay) -> std::result::Result<(), String> {
    let file = std::fs::File::open(naming::ns_path(netns)).map_err(|e| format!("{netns}: {e}"))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot enter {netns}: {e}"))?;
    // A container's namespace (entered through its process) goes with the container: a
    // delayer left alone in it would keep a dead namespace alive for nothing. A named
    // namespace outlives its node's restarts, and so does its delay.
    let exit_when_alone = netns.starts_with("/proc/");
    run(d, exit_when_alone, || {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready").and_then(|_| out.flush());
        // Nobody reads stdout after this: point it at /dev/null rather than a closed pipe.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 onto our own stdout descriptor.
            unsafe { libc::dup2(null.as_raw_fd(), 1) };
        }
    })
    .map_err(|e| e.to_string())
}

/// The NETLINK_NETFILTER socket `nfq` opened (the crate does not expose its descriptor; this
/// process has exactly one such socket).
fn netfilter_socket() -> std::io::Result<RawFd> {
    for e in std::fs::read_dir("/proc/self/fd")? {
        let Ok(fd) = e?.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        let get = |opt| -> Option<libc::c_int> {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt into a c_int we own; fails harmlessly on non-sockets.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    &mut v as *mut _ as *mut _,
                    &mut len,
                )
            };
            (r == 0).then_some(v)
        };
        if get(libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
            && get(libc::SO_PROTOCOL) == Some(libc::NETLINK_NETFILTER)
        {
            return Ok(fd);
        }
    }
    Err(std::io::Error::other(
        "cannot find the NFQUEUE netlink socket",
    ))
}

struct Held {
    until: Instant,
    msg: nfq::Message,
}

/// How often a delayer that may outlive its node looks for company.
const ALONE_CHECK: Duration = Duration::from_secs(1);

/// Whether no other process shares this process's network namespace.
fn alone() -> bool {
    enter::pids_in(Path::new("/proc/self/ns/net")).len() <= 1
}

/// The loop: one thread, no busy wait. `ready` is called once the queue is bound.
fn run(d: &Delay, exit_when_alone: bool, ready: impl FnOnce()) -> std::io::Result<()> {
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(), // no SA_RESTART: ppoll must return EINTR
        SigSet::empty(),
    );
    // SAFETY: the handler only stores an atomic.
    unsafe {
        sigaction(Signal::SIGTERM, &act)?;
        sigaction(Signal::SIGINT, &act)?;
    }
    let mut q = Queue::open()?;
    q.bind(d.queue)?;
    // Metadata only: the payload is never read, and an unchanged verdict needs none.
    q.set_copy_range(d.queue, 0)?;
    // GSO super-packets whole: the kernel would otherwise segment them for us.
    q.set_recv_gso(d.queue, true)?;
    // 50 ms at a few hundred MB/s is thousands of packets in flight.
    q.set_queue_max_len(d.queue, 1 << 16)?;
    // Should we fall that far behind, packets pass rather than drop.
    q.set_fail_open(d.queue, true)?;
    q.set_nonblocking(true);
    let fd = netfilter_socket()?;
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt with a c_int; SO_RCVBUFFORCE works as root, SO_RCVBUF is the fallback.
    unsafe {
        let p = &size as *const _ as *const libc::c_void;
        let l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, l) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, p, l);
        }
    }
    ready();

    let mut held: VecDeque<Held> = VecDeque::new();
    let mut last = Instant::now();
    let mut rng = rand::thread_rng();
    let jitter_us = d.jitter.as_micros() as i64;
    let mut released: u64 = 0;
    let mut next_check = Instant::now() + ALONE_CHECK;
    loop {
        if exit_when_alone && Instant::now() >= next_check {
            next_check = Instant::now() + ALONE_CHECK;
            if alone() {
                eprintln!("delayer: no other process is left in the node's network: stopping");
                STOP.store(true, Ordering::SeqCst);
            }
        }
        if STOP.load(Ordering::SeqCst) {
            for h in held.drain(..) {
                release(&mut q, h.msg)?;
            }
            eprintln!("delayer: stopping after {released} packets");
            return Ok(());
        }
        let now = Instant::now();
        while held.front().is_some_and(|h| h.until <= now) {
            release(&mut q, held.pop_front().expect("front exists").msg)?;
            released += 1;
        }
        let wake = match held.front() {
            Some(h) if !exit_when_alone => Some(h.until),
            Some(h) => Some(h.until.min(next_check)),
            None => exit_when_alone.then_some(next_check),
        };
        let timeout =
            wake.map(|w| nix::sys::time::TimeSpec::from_duration(w.saturating_duration_since(now)));
        // SAFETY: fd belongs to `q`, which outlives this borrow.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut fds = [nix::poll::PollFd::new(bfd, nix::poll::PollFlags::POLLIN)];
        match nix::poll::ppoll(&mut fds, timeout, None) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        loop {
            match q.recv() {
                Ok(msg) => {
                    let j = if jitter_us > 0 {
                        rng.gen_range(-jitter_us..=jitter_us)
                    } else {
                        0
                    };
                    let us = (d.delay.as_micros() as i64 + j).max(0) as u64;
                    let until = (Instant::now() + Duration::from_micros(us)).max(last);
                    last = until;
                    held.push_back(Held { until, msg });
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn release(q: &mut Queue, mut msg: nfq::Message) -> std::io::Result<()> {
    msg.set_verdict(Verdict::Accept);
    q.verdict(msg)
}
