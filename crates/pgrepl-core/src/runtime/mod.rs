//! Where a node's processes live. Local processes are the only runtime so far: the postmaster
//! runs on this machine, as an unprivileged OS user when pgrepl itself runs as root.

pub mod local;
pub mod signals;

pub use local::{OsUser, Runner};
