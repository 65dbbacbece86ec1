//! `pgrepl haproxy-config` prints a configuration from the cluster file alone.

use std::process::Command;

fn pgrepl(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgrepl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn haproxy_config_from_the_cluster_file() {
    let dir = tempfile::tempdir().unwrap();
    pgrepl_core::spec::ClusterSpec::lab("lab", 21000)
        .unwrap()
        .save(&dir.path().join("pgrepl.toml"))
        .unwrap();
    let out = pgrepl(dir.path(), &["haproxy-config", "--http-base-port", "9000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("bind 127.0.0.1:21100"), "{text}");
    assert!(text.contains("bind 127.0.0.1:21101"), "{text}");
    assert!(
        text.contains("server pg3 127.0.0.1:21003 check addr 127.0.0.1 port 9003"),
        "{text}"
    );

    let out = pgrepl(
        dir.path(),
        &["haproxy-config", "--rw-port", "7000", "--ro-port", "7000"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("another port"), "{err}");
}
