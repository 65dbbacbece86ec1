//! Crash points: the step boundaries of multi-step operations, where the tests kill pgrepl
//! to prove that running the same command again finishes the job.
//!
//! In debug builds (the ones `cargo test` runs), `PGREPL_CRASH_AT=N` makes the process
//! SIGKILL itself when it reaches its N-th crash point, and `PGREPL_CRASH_LOG=FILE` appends
//! the name of every crash point reached, so that a test can enumerate an operation's steps
//! and kill it at each in turn. Release builds compile that part to nothing.
//!
//! In every build, a caller that wants an operation to stop at its next step boundary (the
//! CLI on Ctrl-C) installs a hook with [`stop_at_next_step`]: the boundaries are where a
//! re-run is proven to finish the job.

use std::sync::OnceLock;

#[cfg(debug_assertions)]
use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(debug_assertions)]
static REACHED: AtomicUsize = AtomicUsize::new(0);

static STOP: OnceLock<fn(&str)> = OnceLock::new();

/// From now on, the next step boundary calls `hook` with its name (the hook ends the
/// process). Installed once; later calls are ignored.
pub fn stop_at_next_step(hook: fn(&str)) {
    let _ = STOP.set(hook);
}

/// Marks a step boundary: everything before it is done, nothing after it has started.
#[inline]
pub fn reached(name: &str) {
    if let Some(hook) = STOP.get() {
        hook(name);
    }
    #[cfg(debug_assertions)]
    {
        let n = REACHED.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(log) = std::env::var_os("PGREPL_CRASH_LOG") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
            {
                let _ = writeln!(f, "{n}\t{name}");
            }
        }
        let at = std::env::var("PGREPL_CRASH_AT")
            .ok()
            .and_then(|v| v.parse::<usize>().ok());
        if at == Some(n) {
            tracing::warn!(crash_point = name, n, "crash point: killing pgrepl");
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
