//! Where the cluster file is, found the way git finds its repository: `-c FILE` wins, then
//! `PGREPL_CONFIG`, then `pgrepl.toml` in the current folder or the nearest folder above it.
//! So `pgrepl status` works from any folder inside a cluster's project, as `git status` does.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spec::DEFAULT_FILE;

/// The environment variable that names the cluster file when `-c` does not.
pub const CONFIG_ENV: &str = "PGREPL_CONFIG";

/// How the cluster file was chosen: error messages say where pgrepl looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `-c FILE`.
    Flag,
    /// `PGREPL_CONFIG`.
    Env,
    /// `pgrepl.toml` found in the search folder or one above it.
    Found,
    /// Nothing found: `pgrepl.toml` in the search folder, where `init` and `up` write it.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    pub origin: Origin,
    /// The folder the search started from (the current folder).
    pub searched_from: PathBuf,
}

/// Picks the cluster file. Pure apart from checking which files exist.
pub fn locate(flag: Option<&Path>, env: Option<&OsStr>, cwd: &Path) -> Located {
    let at = |path: PathBuf, origin| Located {
        path,
        origin,
        searched_from: cwd.to_path_buf(),
    };
    if let Some(f) = flag {
        return at(f.to_path_buf(), Origin::Flag);
    }
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        return at(PathBuf::from(e), Origin::Env);
    }
    match cwd
        .ancestors()
        .map(|d| d.join(DEFAULT_FILE))
        .find(|f| f.is_file())
    {
        Some(found) => at(found, Origin::Found),
        None => at(cwd.join(DEFAULT_FILE), Origin::Default),
    }
}

impl Located {
    pub fn exists(&self) -> bool {
        self.path.is_file()
    }

    /// For commands that work on an existing cluster: an error naming where pgrepl looked,
    /// and how to make or name a cluster file, when there is none.
    pub fn require(&self) -> Result<&Path> {
        if self.exists() {
            return Ok(&self.path);
        }
        let how = match self.origin {
            Origin::Flag => "named with -c".to_string(),
            Origin::Env => format!("named by {CONFIG_ENV}"),
            Origin::Found | Origin::Default => {
                return Err(Error::Invalid(format!(
                    "no {DEFAULT_FILE} in {} or any folder above it: create one with `pgrepl init` (or `pgrepl up`), or name one with -c FILE or {CONFIG_ENV}",
                    self.searched_from.display()
                )))
            }
        };
        Err(Error::SpecFile {
            path: self.path.clone(),
            detail: format!(
                "no such file ({how}): create it with `pgrepl init -c {}`, or name another",
                self.path.display()
            ),
        })
    }
}

/// Folders a new cluster file (and `.pgrepl/`, the data next to it) must not go into: the
/// root, the user's home folder itself, and the system's own folders. A student running `up`
/// from `/` or `~` would scatter a cluster there; a project folder keeps it in one place.
const SYSTEM_FOLDERS: [&str; 10] = [
    "/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/sbin", "/sys", "/usr", "/var",
];

/// Refuses, before anything is written, a new cluster file in an unsuitable folder (see
/// [`SYSTEM_FOLDERS`]); `home` is `$HOME`.
pub fn check_new_file_folder(file: &Path, home: Option<&Path>) -> Result<()> {
    let folder = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let folder = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
    let home = home.map(|h| std::fs::canonicalize(h).unwrap_or_else(|_| h.to_path_buf()));
    let what = if folder == Path::new("/") {
        "the root folder"
    } else if home.as_deref() == Some(folder.as_path()) {
        "your home folder itself"
    } else if SYSTEM_FOLDERS.iter().any(|s| folder == Path::new(s)) {
        "a system folder"
    } else {
        return Ok(());
    };
    let name = file.file_name().map_or_else(
        || DEFAULT_FILE.to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Err(Error::Invalid(format!(
        "refusing to write {name} and the cluster's data (.pgrepl/) into {} ({what}): run pgrepl in a project folder (e.g. `mkdir -p /srv/lab && cd /srv/lab`), or name a file there with -c /srv/lab/{name}",
        folder.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("project/src/deep")).unwrap();
        std::fs::write(d.path().join("project").join(DEFAULT_FILE), "").unwrap();
        d
    }

    #[test]
    fn the_nearest_file_above_is_found() {
        let d = tree();
        let deep = d.path().join("project/src/deep");
        let l = locate(None, None, &deep);
        assert_eq!(l.origin, Origin::Found);
        assert_eq!(l.path, d.path().join("project").join(DEFAULT_FILE));
        assert!(l.require().is_ok());
    }

    #[test]
    fn flag_then_env_win_over_the_search() {
        let d = tree();
        let deep = d.path().join("project/src/deep");
        let flag = Path::new("other.toml");
        let env = OsStr::new("/elsewhere/c.toml");
        assert_eq!(locate(Some(flag), Some(env), &deep).origin, Origin::Flag);
        let l = locate(None, Some(env), &deep);
        assert_eq!((l.origin, l.path.as_path()), (Origin::Env, Path::new(env)));
        // An empty variable is no setting.
        assert_eq!(
            locate(None, Some(OsStr::new("")), &deep).origin,
            Origin::Found
        );
        let e = l.require().unwrap_err().to_string();
        assert!(
            e.contains("PGREPL_CONFIG") && e.contains("/elsewhere/c.toml"),
            "{e}"
        );
    }

    #[test]
    fn no_new_cluster_file_in_the_root_home_or_system_folders() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        std::fs::create_dir_all(home.join("lab")).unwrap();
        for bad in ["/pgrepl.toml", "/etc/pgrepl.toml"] {
            let e = check_new_file_folder(Path::new(bad), Some(&home)).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("project folder") && e.contains("-c "), "{e}");
        }
        let e = check_new_file_folder(&home.join(DEFAULT_FILE), Some(&home)).unwrap_err();
        assert!(e.to_string().contains("home folder"), "{e}");
        check_new_file_folder(&home.join("lab").join(DEFAULT_FILE), Some(&home)).unwrap();
        check_new_file_folder(Path::new("/srv/lab/pgrepl.toml"), Some(&home)).unwrap();
    }

    #[test]
    fn without_a_file_the_current_folder_is_used_and_named() {
        let d = tempfile::tempdir().unwrap();
        let l = locate(None, None, d.path());
        assert_eq!(l.origin, Origin::Default);
        assert_eq!(l.path, d.path().join(DEFAULT_FILE));
        let e = l.require().unwrap_err().to_string();
        assert!(e.contains(&d.path().display().to_string()), "{e}");
        assert!(e.contains("any folder above it"), "{e}");
    }
}
