//! Host-side work every runtime needs: PostgreSQL's programs run as the unprivileged OS user
//! (PostgreSQL refuses root), and the files pgrepl creates belong to that user.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::unistd::{Gid, Uid, User};
use tokio::process::Command;

use crate::error::{Error, Result, ResultExt};

pub const DEFAULT_OS_USER: &str = "postgres";

/// The unprivileged user PostgreSQL's server-side binaries run as (PostgreSQL refuses root).
#[derive(Debug, Clone)]
pub struct OsUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

impl OsUser {
    pub fn lookup(name: &str) -> Result<Self> {
        match User::from_name(name) {
            Ok(Some(u)) => Ok(OsUser {
                name: u.name,
                uid: u.uid,
                gid: u.gid,
            }),
            _ => Err(Error::Invalid(format!(
                "OS user '{name}' does not exist: PostgreSQL refuses to run as root, so pgrepl runs it as an unprivileged user; create one (`useradd --system --create-home {name}`) or name another with --os-user"
            ))),
        }
    }
}

/// Runs PostgreSQL's programs: as the OS user when pgrepl is root, as ourselves otherwise.
#[derive(Debug, Clone)]
pub struct Runner {
    user: Option<OsUser>,
}

impl Runner {
    /// `os_user` is used only when running as root: a normal user runs PostgreSQL as itself.
    pub fn new(os_user: Option<&str>) -> Result<Self> {
        if Uid::effective().is_root() {
            let user = OsUser::lookup(os_user.unwrap_or(DEFAULT_OS_USER))?;
            if user.uid.is_root() {
                return Err(Error::Invalid(
                    "--os-user must not be root: PostgreSQL refuses to run as root".into(),
                ));
            }
            Ok(Runner { user: Some(user) })
        } else {
            Ok(Runner { user: None })
        }
    }

    /// The user PostgreSQL runs as, when it is not us.
    pub fn os_user(&self) -> Option<&OsUser> {
        self.user.as_ref()
    }

    pub fn os_user_name(&self) -> String {
        match &self.user {
            Some(u) => u.name.clone(),
            None => User::from_uid(Uid::effective())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| Uid::effective().to_string()),
        }
    }

    /// A command for one of PostgreSQL's programs, with a clean environment: inherited
    /// PG* variables would silently change what the tools connect to.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .kill_on_drop(false);
        if let Some(u) = &self.user {
            cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            // Tools look at $HOME (e.g. for ~/.pgpass); never let them read root's.
            cmd.env("HOME", "/nonexistent");
        } else if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        cmd
    }

    /// Creates a directory that belongs to the OS user, mode 0700 (PostgreSQL wants that for
    /// data directories, and it keeps the passfile private).
    pub fn create_private_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).what(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .what(|| format!("cannot set permissions on {}", dir.display()))?;
        self.give(dir)
    }

    /// Hands a path we created over to the OS user.
    pub fn give(&self, path: &Path) -> Result<()> {
        if let Some(u) = &self.user {
            nix::unistd::chown(path, Some(u.uid), Some(u.gid)).map_err(|e| Error::Io {
                what: format!("cannot give {} to {}", path.display(), u.name),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// Gives a whole tree to the OS user (used for cached binaries and data directories).
    pub fn give_tree(&self, root: &Path) -> Result<()> {
        if self.user.is_none() {
            return Ok(());
        }
        let mut stack = vec![root.to_path_buf()];
        while let Some(p) = stack.pop() {
            self.give(&p)?;
            let meta =
                std::fs::symlink_metadata(&p).what(|| format!("cannot stat {}", p.display()))?;
            if meta.is_dir() {
                for entry in
                    std::fs::read_dir(&p).what(|| format!("cannot read {}", p.display()))?
                {
                    stack.push(
                        entry
                            .what(|| format!("cannot read {}", p.display()))?
                            .path(),
                    );
                }
            }
        }
        Ok(())
    }

    /// Fails with advice when the OS user cannot reach `dir` (e.g. a spec under /root, whose
    /// mode hides everything below it from other users).
    pub async fn check_reachable(&self, dir: &Path) -> Result<()> {
        let Some(u) = &self.user else { return Ok(()) };
        let status = self
            .command("/usr/bin/test")
            .arg("-x")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .what(|| "cannot run test".into())?;
        if !status.success() {
            return Err(Error::Precondition(format!(
                "the OS user '{}' cannot reach {} (a parent directory's permissions hide it, as /root does): set `data_dir = \"/var/lib/pgrepl/<cluster>\"` in the [cluster] section of the cluster file, or work from a directory '{}' can enter such as /tmp or /srv",
                u.name,
                dir.display(),
                u.name
            )));
        }
        Ok(())
    }
}

/// The nearest existing ancestor of `path` (to check reachability before creating anything).
pub fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}

/// Runs a command to completion; a failure carries its stderr (or stdout) for the user.
pub async fn run(what: &str, cmd: &mut Command) -> Result<std::process::Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    tracing::debug!(?cmd, "running");
    let out = cmd.output().await.what(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        return Err(Error::Command {
            what: what.to_string(),
            detail: format!("{} ({})", text.trim(), out.status),
        });
    }
    Ok(out)
}
