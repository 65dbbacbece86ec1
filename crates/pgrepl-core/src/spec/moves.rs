//! Topology changes as the spec records them: after a promotion, a switchover or a rejoin the
//! cluster file says who follows whom. Each change is validated before it is kept.

use super::{ClusterSpec, NodeSpec};
use crate::error::Result;

/// The slot a node streams through when the spec gives none: its name made a valid slot name.
pub fn default_slot(node: &str) -> String {
    let mut slot = format!("{}_slot", super::validate::suggest_slot(node));
    slot.truncate(63);
    slot
}

impl NodeSpec {
    /// The slot this node streams through: the spec's, else one named after the node.
    pub fn slot_or_default(&self) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| default_slot(&self.name))
    }
}

impl ClusterSpec {
    /// Records `node` as the primary. The former primary now follows it (through a slot named
    /// after itself unless it has one): it is meant to be rejoined, not to run on its own.
    /// The others keep their upstreams.
    pub fn set_primary(&mut self, node: &str) -> Result<()> {
        let old = self.root().name.clone();
        if old == node {
            return Ok(());
        }
        let mut next = self.clone();
        {
            let n = next.node_mut(node)?;
            n.upstream = None;
            n.slot = None;
        }
        let o = next.node_mut(&old)?;
        o.slot = Some(o.slot_or_default());
        o.upstream = Some(node.to_string());
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Records that `node` streams from `upstream` through `slot` (the node's own slot, or a
    /// default one, when None). When `node` was the recorded primary, `upstream`'s root becomes
    /// the primary first.
    pub fn set_upstream(&mut self, node: &str, upstream: &str, slot: Option<&str>) -> Result<()> {
        let mut next = self.clone();
        if next.root().name == node {
            next.set_primary(upstream)?;
        }
        // A chain that would come back to `node` makes `upstream` a primary in the making.
        if next.chain(upstream).iter().any(|n| n == node) {
            next.set_primary(upstream)?;
        }
        let n = next.node_mut(node)?;
        n.upstream = Some(upstream.to_string());
        if let Some(s) = slot {
            n.slot = Some(s.to_string());
        } else if n.slot.is_none() {
            n.slot = Some(default_slot(node));
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// `node` and its upstreams, up to the primary.
    fn chain(&self, node: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = self.nodes.iter().find(|n| n.name == node);
        while let Some(n) = cur {
            if out.contains(&n.name) {
                break;
            }
            out.push(n.name.clone());
            cur = n
                .upstream
                .as_ref()
                .and_then(|u| self.nodes.iter().find(|m| &m.name == u));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> ClusterSpec {
        ClusterSpec::lab("lab", 54320).unwrap()
    }

    fn up(s: &ClusterSpec, n: &str) -> Option<String> {
        s.node(n).unwrap().upstream.clone()
    }

    #[test]
    fn promoting_records_the_new_primary_and_the_old_one_follows_it() {
        let mut s = lab();
        s.set_primary("pg1").unwrap();
        assert_eq!(s.root().name, "pg1");
        assert_eq!(s.node("pg1").unwrap().slot, None);
        assert_eq!(up(&s, "pg0").as_deref(), Some("pg1"));
        assert_eq!(s.node("pg0").unwrap().slot.as_deref(), Some("pg0_slot"));
        assert_eq!(up(&s, "pg2").as_deref(), Some("pg0"));
        // And back: pg1 gets a slot named after itself again.
        s.set_primary("pg0").unwrap();
        assert_eq!(s.root().name, "pg0");
        assert_eq!(s.node("pg1").unwrap().slot.as_deref(), Some("pg1_slot"));
        assert_eq!(s.node("pg0").unwrap().slot, None);
    }

    #[test]
    fn set_upstream_keeps_one_primary() {
        let mut s = lab();
        s.set_upstream("pg2", "pg1", None).unwrap();
        assert_eq!(up(&s, "pg2").as_deref(), Some("pg1"));
        assert_eq!(s.node("pg2").unwrap().slot.as_deref(), Some("pg2_slot"));
        // The recorded primary rejoins under a standby: that standby becomes the primary. As
        // in the lab (12_failover.sh pg0 pg1 pg1_slot), pg0 may take over pg1's slot name.
        s.set_upstream("pg0", "pg1", Some("pg1_slot")).unwrap();
        assert_eq!(s.root().name, "pg1");
        assert_eq!(up(&s, "pg0").as_deref(), Some("pg1"));
        assert_eq!(s.node("pg0").unwrap().slot.as_deref(), Some("pg1_slot"));
        // A slot another node uses is refused.
        s.set_upstream("pg0", "pg1", Some("pg2_slot")).unwrap_err();
        // pg2 streamed from pg1 already; pg3 still from pg0 (a cascade now).
        assert_eq!(up(&s, "pg3").as_deref(), Some("pg0"));
        s.validate().unwrap();
    }

    #[test]
    fn default_slot_names_are_valid() {
        assert_eq!(default_slot("pg0"), "pg0_slot");
        assert_eq!(default_slot("Node-A"), "node_a_slot");
        crate::spec::validate_slot_name(&default_slot(&"x".repeat(80))).unwrap();
    }
}
