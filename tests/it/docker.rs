//! The docker runtime: the lab's scenario with every node in a container, the lab's own
//! docker commands (`docker exec pg0 psql`, `docker stop pg2 pg3`, `docker logs`), cleanup,
//! two clusters at once, the node image, freeze and partition, compose export. A machine
//! without a Docker Engine skips these tests, loudly.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{node, skip_without, Pg, TestCluster};
use pgrepl_core::cluster::Options;
use pgrepl_core::progress::Silent;
use pgrepl_core::runtime::NetFault;
use pgrepl_core::Cluster;

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn container(c: &TestCluster, node: &str) -> String {
    format!("{}-{node}", c.name)
}

/// Names of the engine's containers and networks that carry the cluster's label.
fn labelled(c: &TestCluster) -> Vec<String> {
    let label = format!("label=pgrepl.dir={}", c.cluster_dir().display());
    let mut names: Vec<String> =
        docker_ok(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"])
            .split_whitespace()
            .map(str::to_string)
            .collect();
    names.extend(
        docker_ok(&["network", "ls", "--filter", &label, "--format", "{{.Name}}"])
            .split_whitespace()
            .map(str::to_string),
    );
    names
}

fn assert_all_stream_from(c: &TestCluster, primary: &str) {
    let s = c.status();
    assert_eq!(s["primary"], primary, "{s}");
    for n in s["nodes"].as_array().unwrap() {
        assert_eq!(n["state"], "running", "{n}");
        if n["name"] != primary {
            assert_eq!(n["upstream"], primary, "{n}");
        }
    }
}

async fn open(c: &TestCluster) -> Cluster {
    let opts = Options {
        config: c.config.clone(),
        pg_bin: Some(c.pg.bin()),
        os_user: Some("postgres".into()),
    };
    Cluster::open(&opts, false, &Silent)
        .await
        .expect("open the cluster")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The lab's scenario, as a student runs it, with the lab's own docker commands.
#[test]
fn lab_scenario_on_docker() {
    if skip_without("docker") {
        return;
    }
    let c = TestCluster::with_runtime(Pg::V18, "docker");
    c.ok(&["up"]);
    assert_all_stream_from(&c, "pg0");
    let pg0 = container(&c, "pg0");

    // The lab's own commands: psql over the container's local socket (peer authentication,
    // as root and as the default user), the engine's log.
    let out = docker_ok(&["exec", &pg0, "psql", "-U", "postgres", "-c", "select 1"]);
    assert!(out.contains("(1 row)"), "{out}");
    let who = docker_ok(&[
        "exec",
        "-u",
        "root",
        &pg0,
        "psql",
        "-U",
        "postgres",
        "-Atc",
        "select current_user",
    ]);
    assert_eq!(who.trim(), "postgres");
    // Only `postgres` over the socket: the replication role is refused there.
    assert!(
        !docker(&["exec", &pg0, "psql", "-U", "repluser", "-c", "select 1"])
            .status
            .success()
    );
    let logs = docker(&["logs", &pg0]);
    assert!(
        String::from_utf8_lossy(&logs.stderr)
            .contains("database system is ready to accept connections"),
        "{logs:?}"
    );
    assert!(c
        .ok(&["logs", "pg0"])
        .contains("ready to accept connections"));

    // A write on the primary is read on every standby.
    c.sql(
        "pg0",
        "CREATE TABLE lab (id int PRIMARY KEY, note text); INSERT INTO lab VALUES (1, 'from pg0')",
    );
    for n in ["pg1", "pg2", "pg3"] {
        c.wait_sql(n, "SELECT note FROM lab WHERE id = 1", "from pg0");
    }

    // Crash, promote, rejoin with pg_rewind: pg0 writes once more while pg1 is stopped, so
    // it diverges from what pg1 becomes.
    c.ok(&["stop", "pg1"]);
    c.sql("pg0", "INSERT INTO lab VALUES (99, 'lost with pg0')");
    c.ok(&["kill", "pg0"]);
    c.ok(&["start", "pg1"]);
    assert_eq!(node(&c.status(), "pg0")["state"], "stopped");
    // pg2 and pg3 hold the row pg1 missed: promoting pg1 discards it, so it takes --force.
    assert!(c.fails(&["promote", "pg1"]).contains("--force"));
    let out = c.ok(&["promote", "pg1", "--force"]);
    assert!(out.contains("timeline 2"), "{out}");
    let out = c.ok(&["rejoin", "pg0", "--upstream", "pg1"]);
    assert!(out.contains("pg_rewind"), "{out}");
    assert!(out.contains("1 committed transaction,"), "{out}");
    for n in ["pg2", "pg3"] {
        c.ok(&["rejoin", n, "--upstream", "pg1"]);
    }
    assert_all_stream_from(&c, "pg1");
    c.sql("pg1", "INSERT INTO lab VALUES (2, 'from pg1')");
    c.wait_sql("pg0", "SELECT note FROM lab WHERE id = 2", "from pg1");
    assert_eq!(c.sql("pg0", "SELECT count(*) FROM lab WHERE id = 99"), "0");

    // Switchover back to pg0.
    let out = c.ok(&["switchover", "--to", "pg0"]);
    assert!(out.contains("writes were unavailable for"), "{out}");
    assert_all_stream_from(&c, "pg0");

    // Synchronous replication, its standbys stopped by the engine as in the lab.
    c.ok(&["sync", "enable"]);
    assert_eq!(c.status()["sync"]["satisfied"], true);
    docker_ok(&["stop", &container(&c, "pg2"), &container(&c, "pg3")]);
    let s = c.status();
    for n in ["pg2", "pg3"] {
        assert_eq!(node(&s, n)["state"], "stopped", "{s}");
    }
    let e = c.fails(&[
        "sql",
        "pg0",
        "INSERT INTO lab VALUES (3, 'blocked')",
        "--timeout",
        "2s",
    ]);
    assert!(e.contains("waiting for synchronous replication"), "{e}");
    assert!(e.contains("sync2 (pg2): stopped"), "{e}");
    assert!(e.contains("already committed locally"), "{e}");
    c.ok(&["sync", "disable"]);
    c.ok(&["start", "pg2", "pg3"]);
    c.wait_sql("pg3", "SELECT count(*) FROM lab", "3");
    assert_all_stream_from(&c, "pg0");

    // down keeps the data; up again brings the same cluster back.
    c.ok(&["down"]);
    assert!(
        labelled(&c).is_empty(),
        "down removes the containers and the network"
    );
    c.ok(&["up"]);
    assert_eq!(c.sql("pg2", "SELECT count(*) FROM lab"), "3");

    let out = c.ok(&["down", "--purge", "--yes"]);
    assert!(labelled(&c).is_empty(), "{:?}", labelled(&c));
    assert!(
        !c.cluster_dir().exists(),
        "{out}\n{:?}",
        std::fs::read_dir(c.cluster_dir())
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
}

/// Two docker clusters at once do not see each other; purging one leaves the other alone.
#[test]
fn two_clusters_at_once_then_nothing_left() {
    if skip_without("docker") {
        return;
    }
    let a = TestCluster::with_runtime(Pg::V18, "docker");
    let b = TestCluster::with_runtime(Pg::V18, "docker");
    a.ok(&["up"]);
    b.ok(&["up"]);
    a.sql(
        "pg0",
        "CREATE TABLE who (c text); INSERT INTO who VALUES ('a')",
    );
    b.sql(
        "pg0",
        "CREATE TABLE who (c text); INSERT INTO who VALUES ('b')",
    );
    a.wait_sql("pg3", "SELECT c FROM who", "a");
    b.wait_sql("pg3", "SELECT c FROM who", "b");
    // Each on its own network: a's nodes cannot even resolve b's.
    let a_net = docker_ok(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
        &container(&a, "pg1"),
    ]);
    assert_eq!(a_net.trim(), format!("{}-pgnet", a.name));
    let reach = docker(&[
        "exec",
        &container(&a, "pg1"),
        "psql",
        &format!(
            "host={} port=5432 connect_timeout=2 user=postgres",
            container(&b, "pg0")
        ),
        "-c",
        "select 1",
    ]);
    assert!(!reach.status.success());

    let b_before = labelled(&b);
    assert_eq!(b_before.len(), 5, "{b_before:?}");
    // The network's bridge on the host is br-<the network's id>.
    let a_id = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{.Id}}",
        &format!("{}-pgnet", a.name),
    ]);
    let a_bridge = format!("br-{}", &a_id.trim()[..12]);
    let links = || {
        String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-o", "link"])
                .output()
                .unwrap()
                .stdout,
        )
        .to_string()
    };
    assert!(links().contains(&a_bridge), "{}", links());
    a.ok(&["down", "--purge", "--yes"]);
    assert!(labelled(&a).is_empty(), "{:?}", labelled(&a));
    assert!(!links().contains(&a_bridge), "{}", links());
    assert_eq!(
        labelled(&b),
        b_before,
        "the other cluster's objects are untouched"
    );
    assert_all_stream_from(&b, "pg0");
    b.ok(&["down", "--purge", "--yes"]);
    assert!(labelled(&b).is_empty());
}

/// pgrepl builds its node image itself, with no registry, in under 10 s, and knows it is
/// current afterwards.
#[test]
fn the_node_image_is_built_and_reused() {
    if skip_without("docker") {
        return;
    }
    let pg = pgrepl_core::postgres::PgInstall::probe(&Pg::V18.bin(), "test").unwrap();
    let runner = pgrepl_core::runtime::Runner::new(Some("postgres")).unwrap();
    // Under a name of its own: the other tests use pgrepl's image meanwhile.
    let tag = format!("pgrepl-test/postgres:build-{}", std::process::id());
    let rt = rt();
    let built = rt
        .block_on(pgrepl_core::runtime::docker::build_image_as(
            &pg, &runner, &tag, false,
        ))
        .unwrap()
        .expect("a new name is built");
    eprintln!(
        "node image {} built in {:.2} s ({} files, {} MB)",
        built.tag,
        built.took.as_secs_f64(),
        built.files,
        built.bytes >> 20
    );
    let t = Instant::now();
    let again = rt
        .block_on(pgrepl_core::runtime::docker::build_image_as(
            &pg, &runner, &tag, false,
        ))
        .unwrap();
    assert!(again.is_none(), "the current image is reused");
    eprintln!("found it current in {} ms", t.elapsed().as_millis());
    let sh = docker_ok(&[
        "run",
        "--rm",
        &tag,
        "sh",
        "-c",
        "id -un; postgres --version",
    ]);
    assert!(sh.contains("postgres") && sh.contains(&pg.version), "{sh}");
    rt.block_on(pgrepl_core::runtime::docker::remove_image(&tag))
        .unwrap();
}

/// A frozen (paused) node shows as such and thaws; a partitioned standby stops receiving,
/// and heal brings it back.
#[test]
fn freeze_and_partition_in_the_containers() {
    if skip_without("docker") {
        return;
    }
    let c = TestCluster::with_runtime(Pg::V18, "docker");
    c.ok(&["up"]);
    let rt = rt();
    let cluster = rt.block_on(open(&c));
    let runtime = cluster.runtime.clone();
    let spec = |n: &str| cluster.node(n).unwrap().clone();
    let (pg0, pg1, pg2) = (spec("pg0"), spec("pg1"), spec("pg2"));

    // Freeze = pause: every process at once.
    assert!(rt.block_on(runtime.freeze(&pg2, true)).unwrap());
    let paused = docker_ok(&["inspect", "-f", "{{.State.Paused}}", &container(&c, "pg2")]);
    assert_eq!(paused.trim(), "true");
    assert_eq!(
        rt.block_on(runtime.state(&pg2)).unwrap(),
        pgrepl_core::runtime::ProcessState::Frozen
    );
    let s = c.status();
    let n = node(&s, "pg2");
    // (`frozen` is status's own column where it has one.)
    assert!(n["frozen"] == true || n["state"] == "not answering", "{n}");
    let e = c.fails(&["stop", "pg2"]);
    assert!(e.contains("frozen"), "{e}");
    assert!(rt.block_on(runtime.freeze(&pg2, false)).unwrap());
    assert_eq!(node(&c.status(), "pg2")["state"], "running");

    // A partition of pg1 from pg0: nft rules in pg1's network namespace.
    let timeout = Duration::from_secs(2);
    assert!(rt.block_on(runtime.can_reach(&pg1, &pg0, timeout)).unwrap());
    let cut = NetFault::Partition {
        from: vec!["pg0".into()],
        host: false,
    };
    rt.block_on(runtime.apply_fault(&pg1, &cut)).unwrap();
    assert_eq!(
        rt.block_on(runtime.faults(&pg1)).unwrap(),
        vec![cut.clone()]
    );
    assert!(!rt.block_on(runtime.can_reach(&pg1, &pg0, timeout)).unwrap());
    assert!(rt.block_on(runtime.can_reach(&pg2, &pg0, timeout)).unwrap());
    c.sql(
        "pg0",
        "CREATE TABLE cut (x int); INSERT INTO cut VALUES (1)",
    );
    c.wait_sql("pg2", "SELECT count(*) FROM cut", "1");
    std::thread::sleep(Duration::from_secs(1));
    // pgrepl still reaches pg1 (the host is not cut off), and pg1 has not received it.
    assert_eq!(
        c.sql("pg1", "SELECT count(*) FROM pg_class WHERE relname = 'cut'"),
        "0"
    );
    rt.block_on(runtime.heal(&pg1)).unwrap();
    assert!(rt.block_on(runtime.faults(&pg1)).unwrap().is_empty());
    c.wait_sql("pg1", "SELECT count(*) FROM cut", "1");
    // Docker's own rules in the namespace (its DNS) survived: pg1 still resolves pg0.
    assert!(rt.block_on(runtime.can_reach(&pg1, &pg0, timeout)).unwrap());

    // A delay: the netns runtime's delayer, in the container's network namespace.
    c.ok(&["net", "delay", "pg1", "50ms"]);
    assert_eq!(
        node(&c.status(), "pg1")["faults"],
        serde_json::json!([{"kind": "delay", "delay": "50ms", "jitter": "0s"}])
    );
    c.ok(&["net", "heal", "pg1"]);
    assert_eq!(node(&c.status(), "pg1")["faults"], serde_json::json!([]));
    // A delayer whose container goes does not keep its dead network alive.
    c.ok(&["net", "delay", "pg1", "50ms"]);
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &container(&c, "pg1")]);
    let netns = format!("/proc/{}/ns/net", pid.trim());
    let delayers = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
            .filter(|cmd| cmd.contains("__net-delayer") && cmd.contains(&netns))
            .count()
    };
    assert_eq!(delayers(), 1);
    docker_ok(&["stop", &container(&c, "pg1")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while delayers() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the delayer outlived its container"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `compose export` writes a file docker-compose runs the same cluster from.
#[test]
fn compose_export_runs_the_cluster_under_docker_compose() {
    if skip_without("docker") {
        return;
    }
    let c = TestCluster::with_runtime(Pg::V18, "docker");
    c.ok(&["up"]);
    c.sql(
        "pg0",
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)",
    );
    let file = c.path().join("docker-compose.yml");
    let file_arg = file.to_str().unwrap();
    c.ok(&["compose", "export", file_arg]);
    let e = c.fails(&["compose", "export", file_arg]);
    assert!(e.contains("--force"), "{e}");
    c.ok(&["down"]);
    let compose = |args: &[&str]| {
        let out = Command::new("docker-compose")
            .args(["-f", file_arg, "-p", &c.name])
            .args(args)
            .output()
            .expect("run docker-compose");
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    compose(&["up", "-d"]);
    // pgrepl sees the nodes docker-compose runs (its labels) and they stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = c.status();
        let streaming = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "running" && (n["name"] == "pg0" || n["upstream"] == "pg0"));
        if streaming {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not streaming under docker-compose: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.sql("pg3", "SELECT x FROM kept"), "42");
    compose(&["down"]);
    c.ok(&["up"]);
    assert_all_stream_from(&c, "pg0");
}

/// Preconditions, each one line with its fix, and nothing changed: no engine, a network of
/// the same name that is not this cluster's.
#[test]
fn refusals_name_the_problem_and_the_fix() {
    if skip_without("docker") {
        return;
    }
    let c = TestCluster::with_runtime(Pg::V18, "docker");
    let out = c
        .command(&["up"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(e.contains("needs a running Docker Engine"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");

    let net = format!("{}-pgnet", c.name);
    docker_ok(&["network", "create", &net]);
    let e = c.fails(&["up"]);
    docker_ok(&["network", "rm", &net]);
    assert!(
        e.contains("not cluster") && e.contains("docker network rm"),
        "{e}"
    );
    assert!(labelled(&c).is_empty());
}

/// The same on Debian's PostgreSQL 15: its own image, the lab's commands.
#[test]
fn postgres_15_runs_in_its_own_image() {
    if skip_without("docker") {
        return;
    }
    let c = TestCluster::with_runtime(Pg::V15, "docker");
    c.ok(&["up"]);
    assert_all_stream_from(&c, "pg0");
    let out = docker_ok(&[
        "exec",
        &container(&c, "pg0"),
        "psql",
        "-U",
        "postgres",
        "-Atc",
        "show server_version_num",
    ]);
    assert!(out.trim().starts_with("15"), "{out}");
    c.sql(
        "pg0",
        "CREATE TABLE t15 (x int); INSERT INTO t15 VALUES (15)",
    );
    c.wait_sql("pg3", "SELECT x FROM t15", "15");
}
