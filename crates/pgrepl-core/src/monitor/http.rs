//! The health endpoints on `--http ADDR` / `--http-base-port B`: Patroni's paths and
//! semantics, so that HAProxy configurations written for Patroni work unchanged, plus
//! `/cluster` (the status JSON) and `/metrics` (Prometheus). The loop publishes a new
//! [`Snapshot`] every tick through a `tokio::sync::watch` channel; requests only read it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::health::{self, Check, Snapshot};
use super::metrics;

pub type Snapshots = watch::Receiver<Arc<Snapshot>>;

#[derive(Clone)]
struct App {
    snapshots: Snapshots,
    /// The node this listener speaks for (`--http-base-port`); None on the shared address,
    /// where a node is named in the path (`/node/<name>/primary`).
    node: Option<String>,
}

/// The routes of one listener.
pub fn router(snapshots: Snapshots, node: Option<String>) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(App { snapshots, node })
}

/// Serves one listener until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    snapshots: Snapshots,
    node: Option<String>,
) -> std::io::Result<()> {
    axum::serve(listener, router(snapshots, node)).await
}

/// Binds node i of `names` on `base + i`, each answering for its node.
pub async fn bind_nodes(
    host: IpAddr,
    base: u16,
    names: &[String],
) -> std::io::Result<Vec<(TcpListener, String)>> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let port = u16::try_from(usize::from(base) + i).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "--http-base-port {base} leaves no port for node {name}: choose one at most {}",
                    65535 - names.len() + 1
                ),
            )
        })?;
        let l = TcpListener::bind(SocketAddr::new(host, port))
            .await
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {host}:{port} for {name}: {e}"),
                )
            })?;
        out.push((l, name.clone()));
    }
    Ok(out)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn json(status: StatusCode, body: &impl serde::Serialize, head_only: bool) -> Response {
    if head_only {
        return status.into_response();
    }
    let text = serde_json::to_string(body).expect("a snapshot always serializes");
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn handle(State(app): State<App>, method: Method, uri: Uri) -> Response {
    // HAProxy often checks with OPTIONS; Patroni answers HEAD and OPTIONS as GET, without
    // a body.
    let head_only = match method {
        Method::GET => false,
        Method::HEAD | Method::OPTIONS => true,
        _ => {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET, HEAD or OPTIONS\n".into(),
            )
        }
    };
    let snap = app.snapshots.borrow().clone();
    let (node, path) = match uri.path().strip_prefix("/node/") {
        Some(rest) => {
            let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
            (Some(name.to_string()), format!("/{tail}"))
        }
        None => (app.node.clone(), uri.path().to_string()),
    };
    match path.as_str() {
        "/cluster" => return json(StatusCode::OK, snap.as_ref(), head_only),
        "/metrics" => {
            return if head_only {
                StatusCode::OK.into_response()
            } else {
                (
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics::render(&snap),
                )
                    .into_response()
            }
        }
        _ => {}
    }
    let check = if path == "/" {
        Some(Check::Primary)
    } else {
        Check::from_path(&path)
    };
    let Some(check) = check else {
        return text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}\n"));
    };
    let Some(name) = node else {
        return text(
            StatusCode::NOT_FOUND,
            format!("name the node: /node/<name>{path}, or ask on the node's own port (--http-base-port)\n"),
        );
    };
    let Some(n) = snap.node(&name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no node {name} in cluster {}\n", snap.status.cluster),
        );
    };
    let lag = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("lag="));
    let max_lag = match lag.map(health::parse_lag) {
        None => None,
        Some(Some(m)) => Some(m),
        Some(None) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "lag={} is no size: use bytes or a unit, e.g. lag=10MB\n",
                    lag.unwrap_or("")
                ),
            )
        }
    };
    let status = if health::passes(&snap, n, check, max_lag) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &health::body(&snap, n), head_only)
}
