//! pgrepl's node image, `pgrepl/postgres:<version>`, built with no registry: a root
//! filesystem assembled from the PostgreSQL installation pgrepl runs (its programs, share/,
//! lib/, and the shared libraries `ldd` names), a static busybox for a shell, and
//! /etc/passwd and /etc/group entries for the OS user; imported through the engine's API
//! (`POST /images/create?fromSrc=-`). Built once, and again when the installation changes:
//! the image carries a fingerprint of what went in.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use serde::Serialize;

use crate::error::{Error, Result, ResultExt};
use crate::postgres::PgInstall;
use crate::runtime::docker::engine;
use crate::runtime::docker::rootfs::{self, Tree};

pub const REPOSITORY: &str = "pgrepl/postgres";
const LABEL_FINGERPRINT: &str = "pgrepl.fingerprint";
/// Debian's busybox-static: a shell (`docker exec -it pg0 sh`) and the usual tools.
const BUSYBOX: &str = "/bin/busybox";

/// The image pgrepl builds for an installation.
pub fn tag(pg: &PgInstall) -> String {
    format!("{REPOSITORY}:{}", pg.version)
}

/// Whom the image's /etc/passwd names besides root: the OS user PostgreSQL runs as.
#[derive(Debug, Clone)]
pub struct ImageUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// What a build did, for the user and `bench up`.
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    pub tag: String,
    pub files: usize,
    pub bytes: u64,
    #[serde(with = "ms")]
    pub took: Duration,
}

mod ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}

/// Where an installation keeps what the server loads at run time.
struct Layout {
    bin: PathBuf,
    sharedir: PathBuf,
    pkglibdir: PathBuf,
    /// `--with-system-tzdata=DIR` (Debian's builds): the server reads time zones there.
    system_tzdata: Option<PathBuf>,
}

fn pg_config(bin: &Path, arg: &str) -> Result<String> {
    let out = std::process::Command::new(bin.join("pg_config"))
        .arg(arg)
        .env_clear()
        .output()
        .what(|| format!("cannot run {}", bin.join("pg_config").display()))?;
    if !out.status.success() {
        return Err(Error::Command {
            what: format!("pg_config {arg}"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Layout {
    fn of(pg: &PgInstall) -> Result<Layout> {
        let configure = pg_config(&pg.bin, "--configure")?;
        Ok(Layout {
            bin: pg.bin.clone(),
            sharedir: PathBuf::from(pg_config(&pg.bin, "--sharedir")?),
            pkglibdir: PathBuf::from(pg_config(&pg.bin, "--pkglibdir")?),
            system_tzdata: configure
                .split('\'')
                .find_map(|a| a.strip_prefix("--with-system-tzdata="))
                .map(PathBuf::from),
        })
    }
}

/// busybox, installed with apt-get when missing (as root on Debian).
fn busybox() -> Result<PathBuf> {
    let path = PathBuf::from(BUSYBOX);
    if path.is_file() {
        return Ok(path);
    }
    let fix = "install Debian's busybox-static (`apt-get install busybox-static`), or name an image of your own with `image = \"...\"` in the [cluster] section";
    if !nix::unistd::Uid::effective().is_root() || !Path::new("/usr/bin/apt-get").exists() {
        return Err(Error::Precondition(format!(
            "pgrepl's node image needs a static shell ({BUSYBOX}), which is missing: {fix}"
        )));
    }
    // Several pgrepl processes may build images at once (the tests do): one installs while
    // the others wait, then find it installed. apt-get also waits for a dpkg lock held by
    // anything else.
    let cache = crate::postgres::binaries::cache_dir();
    std::fs::create_dir_all(&cache).what(|| format!("cannot create {}", cache.display()))?;
    let lock_path = cache.join(".busybox.lock");
    let lock = std::fs::File::create(&lock_path)
        .what(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .what(|| format!("cannot lock {}", lock_path.display()))?;
    if path.is_file() {
        return Ok(path);
    }
    let install = || {
        std::process::Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(["install", "-y", "-qq", "busybox-static"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let ok = install()
        || (std::process::Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300", "update", "-qq"])
            .output()
            .is_ok_and(|o| o.status.success())
            && install());
    if !ok || !path.is_file() {
        return Err(Error::Precondition(format!(
            "apt-get could not install busybox-static for pgrepl's node image: {fix}"
        )));
    }
    Ok(path)
}

/// Which files of pkglibdir stay out: the JIT provider drags in libLLVM (~100 MB), and
/// PostgreSQL runs without JIT when the provider is absent.
fn skip_pkglib(p: &Path) -> bool {
    p.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.starts_with("llvmjit") || n == "bitcode")
}

/// The image's files but the shared libraries (what the fingerprint covers), and the ELF
/// files whose libraries a build adds (ldd takes most of a second: only when building).
fn collect(
    layout: &Layout,
    user: &ImageUser,
    shell: &Path,
) -> std::io::Result<(Tree, Vec<PathBuf>)> {
    let mut t = Tree::default();
    let mut elves = t.add_tree(&layout.bin, &|_| false)?;
    elves.extend(t.add_tree(&layout.pkglibdir, &skip_pkglib)?);
    t.add_tree(&layout.sharedir, &|p| {
        p.file_name().is_some_and(|n| n == "doc")
    })?;
    if let Some(tz) = &layout.system_tzdata {
        t.add_tree(tz, &|_| false)?;
    }
    t.add_host(shell)?;
    let shell_real = std::fs::canonicalize(shell)?;
    elves.push(shell_real.clone());
    // The applets as links beside busybox (sh first of all).
    let shell_dir = shell_real.parent().unwrap_or(Path::new("/")).to_path_buf();
    let list = std::process::Command::new(&shell_real)
        .arg("--list")
        .output()?;
    let file_name = shell_real.file_name().unwrap_or_default().to_owned();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        t.link_if_absent(shell_dir.join(applet), PathBuf::from(&file_name));
    }
    // /bin/sh: on merged /usr, /bin -> usr/bin, where sh is one of the applets.
    t.add_host(Path::new("/bin"))?;
    t.text(
        "/etc/passwd",
        format!(
            "root:x:0:0:root:/root:/bin/sh\n{n}:x:{u}:{g}:PostgreSQL:/var/lib/postgresql:/bin/sh\n",
            n = user.name,
            u = user.uid,
            g = user.gid
        ),
        0o644,
    );
    t.text(
        "/etc/group",
        format!("root:x:0:\n{}:x:{}:\n", user.name, user.gid),
        0o644,
    );
    t.text(
        "/etc/nsswitch.conf",
        "passwd: files\ngroup: files\nhosts: files dns\n".into(),
        0o644,
    );
    t.dir("/tmp", 0o1777, 0, 0);
    t.dir("/root", 0o700, 0, 0);
    t.dir("/var/lib/postgresql", 0o755, user.uid, user.gid);
    t.dir("/var/run/postgresql", 0o2775, user.uid, user.gid);
    elves.retain(|p| rootfs::is_elf(p));
    Ok((t, elves))
}

/// The image's settings (also part of the fingerprint).
fn changes(layout: &Layout, user: &ImageUser) -> Vec<String> {
    vec![
        format!("ENV PATH={}:/usr/bin:/bin", layout.bin.display()),
        format!("USER {}:{}", user.uid, user.gid),
        "WORKDIR /var/lib/postgresql".into(),
    ]
}

/// The fingerprint label of an image, its id; None when there is no such image.
async fn current(docker: &Docker, tag: &str) -> Result<Option<(Option<String>, String)>> {
    Ok(engine::inspect_image(docker, tag)
        .await?
        .map(|(labels, id)| (labels.get(LABEL_FINGERPRINT).cloned(), id)))
}

/// Builds and imports the image for `pg` unless one with the same fingerprint is there
/// (`force`: builds anyway). None when it was there.
pub async fn ensure(
    docker: &Docker,
    pg: &PgInstall,
    user: &ImageUser,
    force: bool,
) -> Result<Option<Built>> {
    ensure_tagged(docker, pg, user, &tag(pg), force).await
}

/// [`ensure`] under another name than pgrepl's (a test builds one of its own).
pub async fn ensure_tagged(
    docker: &Docker,
    pg: &PgInstall,
    user: &ImageUser,
    tag: &str,
    force: bool,
) -> Result<Option<Built>> {
    let started = Instant::now();
    let layout = Layout::of(pg)?;
    let shell = tokio::task::spawn_blocking(busybox)
        .await
        .expect("busybox task")?;
    let tag = tag.to_string();
    let changes = changes(&layout, user);
    let (user2, changes2) = (user.clone(), changes.clone());
    let (tree, elves, fingerprint, layout) = tokio::task::spawn_blocking(move || {
        let (tree, elves) = collect(&layout, &user2, &shell)?;
        let fp = tree.fingerprint(&changes2.join("\n"));
        Ok::<_, std::io::Error>((tree, elves, fp, layout))
    })
    .await
    .map_err(|e| Error::Invalid(format!("image build task failed: {e}")))?
    .what(|| format!("cannot collect the files of {tag}"))?;
    let before = current(docker, &tag).await?;
    if !force
        && before
            .as_ref()
            .is_some_and(|(fp, _)| fp.as_deref() == Some(fingerprint.as_str()))
    {
        return Ok(None);
    }
    tracing::info!(%tag, "building the node image");
    let (tar, files, bytes) = tokio::task::spawn_blocking(move || {
        let mut tree = tree;
        for lib in rootfs::ldd(&elves)? {
            tree.add_host(&lib)?;
        }
        let (tar, bytes) = tree.tar()?;
        Ok::<_, std::io::Error>((tar, tree.len(), bytes))
    })
    .await
    .map_err(|e| Error::Invalid(format!("image build task failed: {e}")))?
    .what(|| format!("cannot assemble the root filesystem of {tag}"))?;
    let (repo, version) = tag.split_once(':').unwrap_or((REPOSITORY, "latest"));
    let mut all_changes = changes;
    all_changes.push(format!(
        "LABEL {LABEL_FINGERPRINT}={fingerprint} pgrepl.bin={}",
        layout.bin.display()
    ));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(version)
        .changes(all_changes)
        .build();
    let mut stream = docker.create_image(Some(options), Some(bollard::body_full(tar.into())), None);
    while let Some(msg) = stream.next().await {
        msg.map_err(engine::api(format!("importing {tag}")))?;
    }
    let after = current(docker, &tag).await?;
    if after.as_ref().and_then(|(fp, _)| fp.as_deref()) != Some(fingerprint.as_str()) {
        return Err(Error::Command {
            what: format!("importing {tag}"),
            detail: "the engine's image does not carry the fingerprint just built".into(),
        });
    }
    // The image it replaced would stay behind untagged: removed unless a container uses it.
    if let (Some((_, old)), Some((_, new))) = (&before, &after) {
        if old != new {
            engine::remove_image_if_unused(docker, old).await;
        }
    }
    Ok(Some(Built {
        tag,
        files,
        bytes,
        took: started.elapsed(),
    }))
}
