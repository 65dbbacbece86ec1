//! Faults on a node's processes: a crash (SIGKILL of the postmaster and all its backends at
//! once) and a freeze (SIGSTOP/SIGCONT).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

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
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
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
