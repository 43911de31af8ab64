//! The network's own Prometheus metrics, registered into the node's shared registry under the
//! `p2p_` prefix (libp2p's own metrics go under `libp2p_`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Counters and gauges the event loop updates.
#[derive(Clone, Debug, Default)]
pub struct NetworkMetrics {
    peers: Gauge,
    gossip_in: Family<Labels, Counter>,
    gossip_out: Family<Labels, Counter>,
    gossip_rejected: Family<Labels, Counter>,
    gossip_ignored: Family<Labels, Counter>,
    gossip_unsent: Family<Labels, Counter>,
    gossip_unneeded: Family<Labels, Counter>,
    direct: Family<Labels, Counter>,
    blob_requests: Family<Labels, Counter>,
    dropped_events: Counter,
}

impl NetworkMetrics {
    /// Create and register into `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = NetworkMetrics::default();
        let r = registry.sub_registry_with_prefix("p2p");
        r.register(
            "peers_connected",
            "Peers with at least one open connection",
            m.peers.clone(),
        );
        r.register(
            "gossip_messages_received",
            "Valid gossip messages delivered, by topic",
            m.gossip_in.clone(),
        );
        r.register(
            "gossip_messages_published",
            "Gossip messages this node published, by topic",
            m.gossip_out.clone(),
        );
        r.register(
            "gossip_messages_rejected",
            "Gossip messages rejected (sender penalized), by topic and reason",
            m.gossip_rejected.clone(),
        );
        r.register(
            "gossip_messages_ignored",
            "Duplicate gossip messages ignored, by topic",
            m.gossip_ignored.clone(),
        );
        r.register(
            "gossip_messages_unsent",
            "Own publications that expired while no peer subscribed to their topic, by topic",
            m.gossip_unsent.clone(),
        );
        r.register(
            "gossip_messages_unneeded",
            "Own publications not gossiped: the one peer following their topic had them directly, by topic",
            m.gossip_unneeded.clone(),
        );
        r.register(
            "direct_requests",
            "Direct requests, by direction and outcome",
            m.direct.clone(),
        );
        r.register(
            "blob_requests",
            "Blob chunk requests, by direction (an output that rode beside a direct message needs none)",
            m.blob_requests.clone(),
        );
        m
    }

    pub(crate) fn set_peers(&self, n: usize) {
        self.peers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn received(&self, topic: &'static str) {
        self.gossip_in.get_or_create(&vec![("topic", topic)]).inc();
    }

    pub(crate) fn published(&self, topic: &'static str) {
        self.gossip_out.get_or_create(&vec![("topic", topic)]).inc();
    }

    pub(crate) fn rejected(&self, topic: &'static str, reason: &'static str) {
        self.gossip_rejected
            .get_or_create(&vec![("topic", topic), ("reason", reason)])
            .inc();
    }

    pub(crate) fn ignored(&self, topic: &'static str) {
        self.gossip_ignored
            .get_or_create(&vec![("topic", topic)])
            .inc();
    }

    pub(crate) fn unneeded(&self, topic: &'static str) {
        self.gossip_unneeded
            .get_or_create(&vec![("topic", topic)])
            .inc();
    }

    pub(crate) fn unsent(&self, topic: &'static str) {
        self.gossip_unsent
            .get_or_create(&vec![("topic", topic)])
            .inc();
    }

    pub(crate) fn dropped_event(&self) {
        self.dropped_events.inc();
    }

    pub(crate) fn blob_request(&self, direction: &'static str) {
        self.blob_requests
            .get_or_create(&vec![("direction", direction)])
            .inc();
    }

    pub(crate) fn direct(&self, direction: &'static str, outcome: &'static str) {
        self.direct
            .get_or_create(&vec![("direction", direction), ("outcome", outcome)])
            .inc();
    }
}
