//! Real HTTP requests to the health endpoints, bound on 127.0.0.1:0, from fixed snapshots.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::health::Snapshot;
use super::http;
use crate::observe::status::{ClusterStatus, NodeStatus, Role, State};
use crate::postgres::Lsn;

fn node(
    name: &str,
    role: Option<Role>,
    state: State,
    sync: Option<&str>,
    lag: Option<u64>,
) -> NodeStatus {
    NodeStatus {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: 5432,
        state,
        role,
        timeline: Some(2),
        lsn: Some(Lsn(0x5000000)),
        receive_lsn: None,
        replay_lsn: None,
        upstream: (role == Some(Role::Standby)).then(|| "pg0".into()),
        slot: None,
        application_name: name.into(),
        sync_state: sync.map(str::to_string),
        sync_priority: None,
        lag_bytes: lag,
        write_lag_ms: None,
        flush_lag_ms: None,
        replay_lag_ms: lag.map(|l| l as f64 / 1000.0),
        needs_rejoin: false,
        created: true,
        note: None,
        streaming: role == Some(Role::Standby) && state == State::Running,
        frozen: false,
        faults: Vec::new(),
    }
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::new(ClusterStatus {
        cluster: "lab".into(),
        primary: Some("pg0".into()),
        split_brain: false,
        sync: None,
        warnings: Vec::new(),
        nodes: vec![
            node("pg0", Some(Role::Primary), State::Running, None, None),
            node(
                "pg1",
                Some(Role::Standby),
                State::Running,
                Some("async"),
                Some(20 << 20),
            ),
            node(
                "pg2",
                Some(Role::Standby),
                State::Running,
                Some("sync"),
                Some(0),
            ),
            node("pg3", None, State::Stopped, None, None),
        ],
        monitor: None,
    });
    s.failovers = 2;
    s.promoted_at.insert("pg0".into(), 1_700_000_000.5);
    s
}

async fn start(node: Option<&str>) -> (SocketAddr, watch::Sender<Arc<Snapshot>>) {
    let (tx, rx) = watch::channel(Arc::new(snapshot()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(http::serve(l, rx, node.map(str::to_string)));
    (addr, tx)
}

/// Status code and body of one request.
async fn ask(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn each_node_answers_patronis_checks_on_its_path() {
    let (a, _tx) = start(None).await;
    let cases = [
        ("/node/pg0/primary", 200),
        ("/node/pg0/leader", 200),
        ("/node/pg0/master", 200),
        ("/node/pg0/read-write", 200),
        ("/node/pg1/primary", 503),
        ("/node/pg0/replica", 503),
        ("/node/pg1/replica", 200),
        ("/node/pg1/replica?lag=10MB", 503),
        ("/node/pg1/replica?lag=30MB", 200),
        ("/node/pg2/replica?lag=0", 200),
        ("/node/pg3/replica", 503),
        ("/node/pg0/read-only", 200),
        ("/node/pg1/read-only", 200),
        ("/node/pg3/read-only", 503),
        ("/node/pg0/health", 200),
        ("/node/pg3/health", 503),
        ("/node/pg2/sync", 200),
        ("/node/pg2/synchronous", 200),
        ("/node/pg1/sync", 503),
        ("/node/pg1/async", 200),
        ("/node/pg1/asynchronous", 200),
        ("/node/pg2/async", 503),
        ("/node/pg0/async", 503),
        ("/node/pg9/primary", 404),
        ("/node/pg0/whatever", 404),
        ("/primary", 404),
        ("/node/pg1/replica?lag=ten", 400),
    ];
    for (path, want) in cases {
        assert_eq!(ask(a, "GET", path).await.0, want, "GET {path}");
    }
    let (code, body) = ask(a, "GET", "/node/pg0/primary").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "running");
    assert_eq!(v["role"], "primary");
    let (_, body) = ask(a, "GET", "/node/pg1/replica").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["role"], "replica");
}

#[tokio::test]
async fn head_and_options_answer_like_get_without_a_body() {
    let (a, _tx) = start(Some("pg1")).await;
    for m in ["HEAD", "OPTIONS"] {
        assert_eq!(ask(a, m, "/primary").await, (503, String::new()), "{m}");
        assert_eq!(ask(a, m, "/replica").await, (200, String::new()), "{m}");
    }
    assert_eq!(ask(a, "POST", "/replica").await.0, 405);
}

#[tokio::test]
async fn a_node_port_answers_for_its_node_and_follows_new_snapshots() {
    let (a, tx) = start(Some("pg0")).await;
    assert_eq!(ask(a, "GET", "/primary").await.0, 200);
    assert_eq!(ask(a, "GET", "/").await.0, 200);
    assert_eq!(ask(a, "GET", "/replica").await.0, 503);
    // A failover: pg2 is the primary now, pg0 is down.
    let mut s = snapshot();
    s.status.primary = Some("pg2".into());
    s.status.nodes[0] = node("pg0", None, State::Stopped, None, None);
    s.status.nodes[2] = node("pg2", Some(Role::Primary), State::Running, None, None);
    tx.send(Arc::new(s)).unwrap();
    assert_eq!(ask(a, "GET", "/primary").await.0, 503);
    assert_eq!(ask(a, "GET", "/node/pg2/primary").await.0, 200);
}

#[tokio::test]
async fn cluster_and_metrics() {
    let (a, _tx) = start(None).await;
    let (code, body) = ask(a, "GET", "/cluster").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["primary"], "pg0");
    assert_eq!(v["failovers"], 2);
    assert_eq!(v["nodes"].as_array().unwrap().len(), 4);
    let (code, m) = ask(a, "GET", "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "pgrepl_node_primary{node=\"pg0\"} 1.0",
        "pgrepl_node_primary{node=\"pg1\"} 0.0",
        "pgrepl_node_up{node=\"pg3\"} 0.0",
        "pgrepl_node_timeline{node=\"pg0\"} 2.0",
        "pgrepl_node_lag_bytes{node=\"pg1\"} 20971520.0",
        "pgrepl_node_sync_state{node=\"pg2\",state=\"sync\"} 1.0",
        "pgrepl_failovers_total 2",
        "pgrepl_node_last_promotion_timestamp_seconds{node=\"pg0\"} 1700000000.5",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line}:\n{m}");
    }
    assert!(m.contains("pgrepl_node_lag_seconds{node=\"pg1\"}"), "{m}");
}

#[tokio::test]
async fn node_ports_are_base_plus_index() {
    let names: Vec<String> = ["pg0", "pg1"].iter().map(|s| s.to_string()).collect();
    // A free pair of ports: bind one, then ask for the next.
    let mut bound = None;
    for _ in 0..20 {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if base < 65535 {
            if let Ok(l) = http::bind_nodes("127.0.0.1".parse().unwrap(), base, &names).await {
                bound = Some((base, l));
                break;
            }
        }
    }
    let (base, listeners) = bound.expect("two free ports");
    let (_tx, rx) = watch::channel(Arc::new(snapshot()));
    for (l, name) in listeners {
        tokio::spawn(http::serve(l, rx.clone(), Some(name)));
    }
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    assert_eq!(ask(at(base), "GET", "/primary").await.0, 200);
    assert_eq!(ask(at(base + 1), "GET", "/primary").await.0, 503);
    assert_eq!(ask(at(base + 1), "GET", "/replica").await.0, 200);
}

#[tokio::test]
async fn a_primary_that_does_not_answer_fails_every_check_but_liveness() {
    // A frozen postmaster still holds its port: the load balancer must stop sending it writes
    // although nothing has failed over yet.
    let mut s = snapshot();
    s.status.nodes[0].state = State::NotAnswering;
    let (a, tx) = start(None).await;
    tx.send(Arc::new(s)).unwrap();
    for check in ["primary", "read-write", "read-only", "health"] {
        assert_eq!(
            ask(a, "GET", &format!("/node/pg0/{check}")).await.0,
            503,
            "{check}"
        );
    }
    assert_eq!(ask(a, "GET", "/node/pg0/liveness").await.0, 200);
    let (_, body) = ask(a, "GET", "/node/pg0/primary").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "not answering");
}
