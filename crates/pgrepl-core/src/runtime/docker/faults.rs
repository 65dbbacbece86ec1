//! A container's network namespace, entered from the host through its main process: where
//! its network faults are made (by [`crate::runtime::netfault`], the same rules as the netns
//! runtime's: a table of pgrepl's own, so Docker's rules there (its embedded DNS) are never
//! touched) and where `can_reach` connects from.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use crate::error::{Error, Result, ResultExt};

/// A container on one network has one interface.
pub const IFACE: &str = "eth0";

fn netns_of(pid: i64) -> Result<OwnedFd> {
    let path = netns_path(pid);
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .what(|| format!("cannot open the container's network namespace ({path})"))
}

/// The container's network namespace, as the network-fault rules take it: entered through
/// its main process.
pub fn netns_path(pid: i64) -> String {
    format!("/proc/{pid}/ns/net")
}

/// Whether a TCP connection made inside the network namespace of `pid` reaches `to` within
/// `timeout`: on a thread of its own, since a namespace belongs to the thread that enters it.
pub async fn connects_from(pid: i64, to: SocketAddr, timeout: Duration) -> Result<bool> {
    let ns = netns_of(pid)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map(|()| TcpStream::connect_timeout(&to, timeout).is_ok());
        let _ = tx.send(result);
    });
    match rx.await {
        Ok(Ok(reached)) => Ok(reached),
        Ok(Err(e)) => Err(Error::Io {
            what: "cannot enter the container's network namespace".into(),
            source: e.into(),
        }),
        Err(_) => Err(Error::Invalid("the namespace thread died".into())),
    }
}
