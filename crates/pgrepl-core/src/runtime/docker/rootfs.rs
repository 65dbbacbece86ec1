//! The node image's root filesystem, assembled from files of this machine: every file keeps
//! its host path, so `$ORIGIN` rpaths, PostgreSQL's relocatable share/ and lib/ lookups and a
//! compiled-in system tzdata path resolve inside exactly as on the host, and the container
//! runs the local runtime's own command line.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bumped when the file set or the image's configuration changes shape: images built by an
/// older pgrepl get rebuilt.
const BUILDER_REVISION: &str = "pgrepl-rootfs-1";

#[derive(Debug, Clone)]
enum Entry {
    Dir { mode: u32, uid: u32, gid: u32 },
    File { src: PathBuf, mode: u32 },
    Symlink { target: PathBuf },
    Text { text: String, mode: u32 },
}

/// The image's file tree, keyed by absolute path (sorted: parents come before children).
#[derive(Default)]
pub struct Tree {
    entries: BTreeMap<PathBuf, Entry>,
    /// (path, size, mtime) of every host file taken: what the fingerprint covers, so that an
    /// upgrade of the installation (new sizes and mtimes) makes another image.
    stamps: Vec<(PathBuf, u64, i64)>,
}

fn not_found(what: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} ({why})", what.display()),
    )
}

impl Tree {
    fn dirs_of(&mut self, p: &Path) {
        let mut acc = PathBuf::from("/");
        for c in p.parent().unwrap_or(Path::new("/")).components() {
            if let Component::Normal(n) = c {
                acc.push(n);
                self.entries.entry(acc.clone()).or_insert(Entry::Dir {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                });
            }
        }
    }

    /// Adds a host path at the same path, recording every symlink met on the way (merged
    /// /usr's `/lib -> usr/lib`, `libz.so.1 -> libz.so.1.2.13`) so the same names resolve
    /// inside.
    pub fn add_host(&mut self, path: &Path) -> io::Result<()> {
        let mut resolved = PathBuf::from("/");
        let comps: Vec<_> = path.components().collect();
        for (i, c) in comps.iter().enumerate() {
            // `resolved` has its symlinks resolved already, so `..` is a plain pop.
            if *c == Component::ParentDir {
                resolved.pop();
                continue;
            }
            let Component::Normal(n) = c else { continue };
            let candidate = resolved.join(n);
            let meta = std::fs::symlink_metadata(&candidate)
                .map_err(|_| not_found(&candidate, &format!("adding {}", path.display())))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&candidate)?;
                self.dirs_of(&candidate);
                self.entries.insert(
                    candidate.clone(),
                    Entry::Symlink {
                        target: target.clone(),
                    },
                );
                let abs = if target.is_absolute() {
                    target
                } else {
                    resolved.join(target)
                };
                let rest: PathBuf = comps[i + 1..].iter().collect();
                return self.add_host(&normalize(&abs.join(rest)));
            }
            resolved = candidate;
        }
        let meta = std::fs::metadata(&resolved)?;
        if meta.is_dir() {
            self.dirs_of(&resolved.join("x"));
            return Ok(());
        }
        self.dirs_of(&resolved);
        self.stamps
            .push((resolved.clone(), meta.len(), meta.mtime()));
        self.entries.insert(
            resolved.clone(),
            Entry::File {
                src: resolved,
                mode: meta.mode() & 0o7777,
            },
        );
        Ok(())
    }

    /// A whole host directory, recursively, symlinks kept as symlinks; returns its files.
    pub fn add_tree(
        &mut self,
        root: &Path,
        skip: &dyn Fn(&Path) -> bool,
    ) -> io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        self.add_host(root)?;
        let mut stack = vec![std::fs::canonicalize(root)?];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir)? {
                let e = e?;
                let p = e.path();
                if skip(&p) {
                    continue;
                }
                let ft = e.file_type()?;
                if ft.is_dir() {
                    self.entries.insert(
                        p.clone(),
                        Entry::Dir {
                            mode: 0o755,
                            uid: 0,
                            gid: 0,
                        },
                    );
                    stack.push(p);
                } else if ft.is_symlink() {
                    let target = std::fs::read_link(&p)?;
                    self.entries.insert(p, Entry::Symlink { target });
                } else {
                    let meta = e.metadata()?;
                    self.stamps.push((p.clone(), meta.len(), meta.mtime()));
                    self.entries.insert(
                        p.clone(),
                        Entry::File {
                            src: p.clone(),
                            mode: meta.mode() & 0o7777,
                        },
                    );
                    files.push(p);
                }
            }
        }
        Ok(files)
    }

    /// A symlink beside `target`'s file (busybox's applets).
    pub fn link_if_absent(&mut self, link: PathBuf, target: PathBuf) {
        self.entries
            .entry(link)
            .or_insert(Entry::Symlink { target });
    }

    pub fn has(&self, path: &Path) -> bool {
        self.entries.contains_key(path)
    }

    pub fn text(&mut self, path: &str, text: String, mode: u32) {
        self.dirs_of(Path::new(path));
        self.entries.insert(path.into(), Entry::Text { text, mode });
    }

    pub fn dir(&mut self, path: &str, mode: u32, uid: u32, gid: u32) {
        self.dirs_of(Path::new(path));
        self.entries
            .insert(path.into(), Entry::Dir { mode, uid, gid });
    }

    /// What identifies this content: the host files' sizes and mtimes, the generated files,
    /// the builder's revision and `extra` (the image's configuration).
    pub fn fingerprint(&self, extra: &str) -> String {
        let mut h = Sha256::new();
        h.update(BUILDER_REVISION);
        h.update(extra);
        let mut stamps = self.stamps.clone();
        stamps.sort();
        for (p, size, mtime) in &stamps {
            h.update(format!("{}\0{size}\0{mtime}\n", p.display()));
        }
        for (p, e) in &self.entries {
            if let Entry::Text { text, .. } = e {
                h.update(format!("{}\0{text}\n", p.display()));
            }
        }
        let digest = h.finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tar, in memory (40-90 MB for PostgreSQL: fine for a one-off build); and the bytes
    /// of the files in it.
    pub fn tar(&self) -> io::Result<(Vec<u8>, u64)> {
        let mut b = tar::Builder::new(Vec::with_capacity(96 << 20));
        let mut bytes = 0;
        for (path, e) in &self.entries {
            let name = path.strip_prefix("/").unwrap_or(path);
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            match e {
                Entry::Dir { mode, uid, gid } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_uid(u64::from(*uid));
                    h.set_gid(u64::from(*gid));
                    h.set_size(0);
                    b.append_data(&mut h, name, io::empty())?;
                }
                Entry::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, name, target)?;
                }
                Entry::File { src, mode } => {
                    let f = std::fs::File::open(src)?;
                    let len = f.metadata()?.len();
                    bytes += len;
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(len);
                    b.append_data(&mut h, name, f)?;
                }
                Entry::Text { text, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(text.len() as u64);
                    b.append_data(&mut h, name, text.as_bytes())?;
                }
            }
        }
        Ok((b.into_inner()?, bytes))
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

pub fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The shared libraries `ldd` names for these files (a few ldd runs for all of them): the
/// only ones the image needs.
pub fn ldd(files: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for chunk in files.chunks(200) {
        let out = std::process::Command::new("ldd")
            .args(chunk)
            .env("LC_ALL", "C")
            .output()?;
        libs.extend(parse_ldd(&String::from_utf8_lossy(&out.stdout))?);
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

fn parse_ldd(text: &str) -> io::Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        // With several files ldd heads each section with "FILE:".
        if line.ends_with(':') {
            continue;
        }
        if line.contains("not found") {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("ldd: {line}"),
            ));
        }
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x..)", "/lib64/ld-linux-x86-64.so.2 (0x..)"
        let path = match line.split_once("=> ") {
            Some((_, rest)) => rest.split(" (").next(),
            None if line.starts_with('/') => line.split(" (").next(),
            None => None,
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let text = "/x/bin/postgres:\n\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n/bin/busybox:\n\tnot a dynamic executable\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }

    #[test]
    fn the_fingerprint_follows_the_installation() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("postgres"), "v1").unwrap();
        let print = || {
            let mut t = Tree::default();
            t.add_tree(&bin, &|_| false).unwrap();
            t.text("/etc/passwd", "root:x:0:0::/root:/bin/sh\n".into(), 0o644);
            t.fingerprint("cfg")
        };
        let first = print();
        assert_eq!(print(), first, "same files, same fingerprint");
        // An upgrade: another size (and mtime).
        std::fs::write(bin.join("postgres"), "version 2").unwrap();
        assert_ne!(print(), first);
    }

    #[test]
    fn symlinks_on_the_way_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("lib.so.1.2"), "x").unwrap();
        std::os::unix::fs::symlink("lib.so.1.2", real.join("lib.so.1")).unwrap();
        std::os::unix::fs::symlink("real", tmp.path().join("lib")).unwrap();
        let mut t = Tree::default();
        t.add_host(&tmp.path().join("lib/lib.so.1")).unwrap();
        assert!(t.has(&tmp.path().join("lib")));
        assert!(t.has(&real.join("lib.so.1")));
        assert!(t.has(&real.join("lib.so.1.2")));
    }
}
