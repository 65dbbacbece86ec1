//! `/metrics`: the snapshot in Prometheus' text format.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::health::Snapshot;
use crate::observe::status::{Role, State};

type Labels = Vec<(&'static str, String)>;
type Values = Family<Labels, Gauge<f64, AtomicU64>>;

fn family(registry: &mut Registry, name: &str, help: &str) -> Values {
    let f = Values::default();
    registry.register(name, help, f.clone());
    f
}

/// Renders the snapshot; built anew for each scrape (a handful of series).
pub fn render(s: &Snapshot) -> String {
    let mut r = Registry::with_prefix("pgrepl");
    let up = family(&mut r, "node_up", "PostgreSQL runs and answers on the node");
    let primary = family(&mut r, "node_primary", "The node is the current primary");
    let standby = family(&mut r, "node_standby", "The node answers as a standby");
    let timeline = family(&mut r, "node_timeline", "The node's timeline");
    let lag_bytes = family(
        &mut r,
        "node_lag_bytes",
        "WAL the primary wrote that the node has not replayed",
    );
    let lag_seconds = family(
        &mut r,
        "node_lag_seconds",
        "The node's replay lag as its upstream measures it",
    );
    let sync = family(
        &mut r,
        "node_sync_state",
        "The node's sync state as its upstream reports it (1 for the current state)",
    );
    let promoted = family(
        &mut r,
        "node_last_promotion_timestamp_seconds",
        "When the monitor last promoted the node",
    );
    let failovers: Counter = Counter::default();
    r.register(
        "failovers",
        "Failovers this monitor carried out",
        failovers.clone(),
    );
    let split = Gauge::<f64, AtomicU64>::default();
    r.register(
        "split_brain",
        "More than one node answers as a primary",
        split.clone(),
    );

    failovers.inc_by(s.failovers);
    split.set(if s.status.split_brain { 1.0 } else { 0.0 });
    for n in &s.status.nodes {
        let l = || vec![("node", n.name.clone())];
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        up.get_or_create(&l()).set(flag(n.state == State::Running));
        primary.get_or_create(&l()).set(flag(
            n.role == Some(Role::Primary) && s.status.primary.as_deref() == Some(&n.name),
        ));
        standby
            .get_or_create(&l())
            .set(flag(n.role == Some(Role::Standby)));
        if let Some(t) = n.timeline {
            timeline.get_or_create(&l()).set(f64::from(t));
        }
        if let Some(b) = n.lag_bytes {
            lag_bytes.get_or_create(&l()).set(b as f64);
        }
        if let Some(ms) = n.replay_lag_ms {
            lag_seconds.get_or_create(&l()).set(ms / 1000.0);
        }
        if let Some(state) = &n.sync_state {
            sync.get_or_create(&vec![("node", n.name.clone()), ("state", state.clone())])
                .set(1.0);
        }
        if let Some(at) = s.promoted_at.get(&n.name) {
            promoted.get_or_create(&l()).set(*at);
        }
    }
    let mut out = String::new();
    encode(&mut out, &r).expect("writing to a String cannot fail");
    out
}
