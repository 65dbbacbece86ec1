//! A node's processes on this machine: the postmaster named in postmaster.pid, its children,
//! the signals that stop, crash and freeze them, and tools left working on a data directory.

use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::runtime::StopMode;

/// The pid postmaster.pid names, whether or not that process still runs.
pub fn pidfile_pid(data: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Removes a postmaster.pid whose process is gone. PostgreSQL clears a stale one itself,
/// unless its pid is a zombie not yet reaped (kill(pid, 0) still succeeds): then it refuses
/// to start with "lock file already exists".
pub fn remove_stale_pidfile(data: &Path) {
    if pidfile_pid(data).is_some_and(|p| !alive(p.abs())) {
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
    }
}

/// The signal pg_ctl sends for a shutdown mode.
pub fn shutdown(postmaster: i32, mode: StopMode) -> nix::Result<()> {
    let sig = match mode {
        StopMode::Fast => Signal::SIGINT,
        StopMode::Immediate => Signal::SIGQUIT,
    };
    kill(Pid::from_raw(postmaster), sig)
}

/// The direct children of `pid`, read from /proc. PostgreSQL's backends call setsid(), so they
/// are not in the postmaster's process group: they have to be found one by one.
///
/// The kernel's own list (`/proc/PID/task/PID/children`, exact for a stopped process, and the
/// postmaster is single-threaded) takes microseconds; the scan of every process's stat, the
/// fallback for kernels without it, takes tens of milliseconds, during which a crash's
/// backends would go on acknowledging commits.
pub fn children(pid: i32) -> Vec<i32> {
    if let Ok(list) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return list
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&child| ppid(child) == Some(pid))
        .collect()
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether a process runs. A zombie does not: it is dead and only waits to be reaped, which
/// some init processes (as in containers) take more than a second to do.
pub fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok() && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    proc_state(pid).as_deref() == Some("Z")
}

/// Whether a process is stopped by a signal (a frozen node).
pub fn is_stopped(pid: i32) -> bool {
    proc_state(pid).as_deref() == Some("T")
}

fn proc_state(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().next().map(str::to_string)
}

/// Programs working on a data directory other than its server: pg_rewind, or a single-user
/// postgres (crash recovery), as a killed pgrepl may leave them.
pub fn tools_on(data: &Path) -> Vec<i32> {
    let data = data.to_string_lossy();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            let ours = args.iter().any(|a| *a == data);
            let program = args.first().map(String::as_str).unwrap_or("");
            ours && (program.ends_with("pg_rewind") || args.iter().any(|a| a == "--single"))
        })
        .collect()
}

/// Kills the postmaster and every backend at once, like losing the machine. The postmaster is
/// stopped first so that it cannot start new children while we collect them.
pub fn crash(postmaster: i32) {
    let pm = Pid::from_raw(postmaster);
    let _ = kill(pm, Signal::SIGSTOP);
    let kids = children(postmaster);
    let _ = kill(pm, Signal::SIGKILL);
    for k in kids {
        let _ = kill(Pid::from_raw(k), Signal::SIGKILL);
    }
}

/// Freezes (SIGSTOP) or thaws (SIGCONT) the postmaster and all its children.
pub fn freeze(postmaster: i32, frozen: bool) {
    let sig = if frozen {
        Signal::SIGSTOP
    } else {
        Signal::SIGCONT
    };
    let pm = Pid::from_raw(postmaster);
    if frozen {
        let _ = kill(pm, sig);
    }
    for k in children(postmaster) {
        let _ = kill(Pid::from_raw(k), sig);
    }
    if !frozen {
        let _ = kill(pm, sig);
    }
}
