//! Running a program inside another network namespace, optionally as the unprivileged OS user:
//! what the netns runtime does for every program of a node (and what a container's namespace
//! needs too).
//!
//! std applies `Command::uid`/`gid` in the child *before* the `pre_exec` closures run, and
//! `setns` needs CAP_SYS_ADMIN, gone with the uid change: `.uid()` followed by a `setns` fails
//! with EPERM at spawn. So no `.uid()/.gid()` here: one `pre_exec` enters the namespace, then
//! drops root's supplementary groups, the gid, and the uid last. The namespace file is opened
//! in the parent, because the child may only make async-signal-safe calls.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What the child does between fork and exec.
#[derive(Debug)]
pub struct Enter {
    netns: Option<OwnedFd>,
    /// (uid, gid) to become after entering.
    user: Option<(u32, u32)>,
    new_session: bool,
}

impl Enter {
    /// Enters the network namespace whose file is `netns` (e.g. `/run/netns/NAME`).
    pub fn netns(netns: &Path) -> std::io::Result<Enter> {
        Ok(Enter {
            netns: Some(OwnedFd::from(File::open(netns)?)),
            user: None,
            new_session: false,
        })
    }

    pub fn as_user(mut self, uid: u32, gid: u32) -> Enter {
        self.user = Some((uid, gid));
        self
    }

    /// Leaves our session and terminal: for a process that must outlive the command that
    /// started it and not get its Ctrl-C.
    pub fn detached(mut self) -> Enter {
        self.new_session = true;
        self
    }

    /// Runs in the forked child: raw syscalls only.
    fn apply(&self) -> std::io::Result<()> {
        // SAFETY: plain syscalls on values prepared in the parent; nothing allocates.
        unsafe {
            if let Some(fd) = &self.netns {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if self.new_session && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some((uid, gid)) = self.user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    pub fn install(self, cmd: &mut tokio::process::Command) {
        // SAFETY: `apply` is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || self.apply());
        }
    }
}

/// The (device, inode) that identifies a namespace file or a process's `/proc/PID/ns/net`.
fn ns_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Processes whose network namespace is the one of `netns` (what `ip netns pids` does, by
/// inode, so it finds processes that never went through `ip netns exec`).
pub fn pids_in(netns: &Path) -> Vec<i32> {
    let Some(target) = ns_id(netns) else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            ns_id(&Path::new("/proc").join(pid.to_string()).join("ns/net")) == Some(target)
        })
        .collect()
}

/// A process's arguments.
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f` on a thread of its own that first enters `netns`: a namespace belongs to a
/// thread, so a pool thread must never be moved (it would stay there for its next task).
pub async fn on_thread_in<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let fd = OwnedFd::from(File::open(netns)?);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a descriptor we own.
        let entered = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
        let result = if entered {
            Ok(f())
        } else {
            Err(std::io::Error::last_os_error())
        };
        let _ = tx.send(result);
    });
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread died")))
}
