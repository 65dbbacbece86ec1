//! Generated passwords. They live in one passfile (mode 0600, owned by the OS user so the
//! standbys' walreceivers can read it through `primary_conninfo`). libpq tools get the
//! passfile's path; pgrepl's own connections read it into memory. A password never appears
//! in argv, the environment or a log.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::error::{Error, Result, ResultExt};
use crate::runtime::Runner;

pub const SUPERUSER: &str = "postgres";

#[derive(Clone)]
pub struct Secrets {
    pub superuser: String,
    pub replication: String,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

fn generate() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

impl Secrets {
    pub fn generate() -> Self {
        Secrets {
            superuser: generate(),
            replication: generate(),
        }
    }

    /// Reads the passwords back from the passfile.
    pub fn load(passfile: &Path, replication_user: &str) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(passfile) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).what(|| format!("cannot read {}", passfile.display())),
        };
        let find = |user: &str| {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let f: Vec<&str> = l.splitn(5, ':').collect();
                    (f.len() == 5 && f[3] == user).then(|| f[4].to_string())
                })
                .next()
        };
        match (find(SUPERUSER), find(replication_user)) {
            (Some(superuser), Some(replication)) => Ok(Some(Secrets {
                superuser,
                replication,
            })),
            _ => Err(Error::Precondition(format!(
                "{} lacks the passwords of '{SUPERUSER}' or '{replication_user}': it was edited or belongs to another cluster; restore it, or `pgrepl down --purge` and start over",
                passfile.display()
            ))),
        }
    }

    /// Writes the passfile: one line per host and user, since a `localhost` entry does not
    /// match 127.0.0.1. Mode 0600: libpq ignores a passfile that others can read.
    pub fn write(
        &self,
        passfile: &Path,
        hosts: &[String],
        replication_user: &str,
        runner: &Runner,
    ) -> Result<()> {
        let mut text = String::from(
            "# pgrepl: generated passwords for this cluster (host:port:db:user:password)\n",
        );
        for h in hosts {
            text += &format!("{h}:*:*:{SUPERUSER}:{}\n", self.superuser);
            text += &format!("{h}:*:*:{replication_user}:{}\n", self.replication);
        }
        write_private(passfile, &text, runner)
    }
}

/// Writes a file atomically with mode 0600, owned by the OS user.
pub fn write_private(path: &Path, text: &str, runner: &Runner) -> Result<()> {
    let dir = path.parent().expect("a file in a directory");
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).what(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))
        .what(|| format!("cannot write {}", path.display()))?;
    tmp.write_all(text.as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .what(|| format!("cannot write {}", path.display()))?;
    runner.give(tmp.path())?;
    tmp.persist(path).map_err(|e| Error::Io {
        what: format!("cannot write {}", path.display()),
        source: e.error,
    })?;
    Ok(())
}
