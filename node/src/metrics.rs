//! The node's Prometheus registry and the `/metrics` text exposition.
//!
//! One [`Registry`] per node, shared as a [`SharedRegistry`]: the network registers libp2p's
//! metrics and its own `p2p_*` series (peers, gossip in/out/rejected) into it
//! ([`crate::network::new`]); the runtime registers tasks by state, workflows by state and the
//! assignment-latency and per-task-overhead histograms (`crate::runtime::metrics`); the
//! [`NodeMetrics`] here add what the RPC and chain layers observe (`proofmesh_rpc_requests`,
//! `proofmesh_workflow_submissions`, `proofmesh_chain_sync_height`). The RPC server encodes the
//! whole registry at `/metrics`. Each series is registered exactly once: two registrations of
//! one name would make the exposition invalid.

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};

/// The registry as the node shares it: subsystems register at start, `/metrics` encodes.
pub type SharedRegistry = Arc<Mutex<Registry>>;

type Labels = Vec<(&'static str, &'static str)>;

/// Metrics of the RPC and chain layers. Cheap to clone; clones update the same series.
#[derive(Clone, Debug, Default)]
pub struct NodeMetrics {
    submissions: Family<Labels, Counter>,
    chain_height: Gauge,
    rpc_requests: Family<Labels, Counter>,
}

impl NodeMetrics {
    /// Create the metrics and register them into `registry` under `proofmesh_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = NodeMetrics::default();
        let r = registry.sub_registry_with_prefix("proofmesh");
        r.register(
            "workflow_submissions",
            "Workflow submissions over RPC, by outcome",
            m.submissions.clone(),
        );
        r.register(
            "chain_sync_height",
            "Last chain block the indexer processed",
            m.chain_height.clone(),
        );
        r.register(
            "rpc_requests",
            "JSON-RPC requests, by method and outcome",
            m.rpc_requests.clone(),
        );
        m
    }

    /// Count one submission with its outcome (`accepted`, `duplicate`, `invalid`, `error`).
    pub fn submission(&self, outcome: &'static str) {
        self.submissions
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// Set the chain indexer's height.
    pub fn set_chain_height(&self, block: u64) {
        self.chain_height
            .set(i64::try_from(block).unwrap_or(i64::MAX));
    }

    /// Count one RPC request.
    pub fn rpc_request(&self, method: &'static str, outcome: &'static str) {
        self.rpc_requests
            .get_or_create(&vec![("method", method), ("outcome", outcome)])
            .inc();
    }
}

/// The sum of the samples named exactly `name` (every label set) in the registry's text
/// exposition: what benches and tests read back (a histogram's `_sum` and `_count` are
/// samples of their own).
pub fn sample_sum(registry: &SharedRegistry, name: &str) -> f64 {
    encode(registry)
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encode the whole registry in the text exposition format.
pub fn encode(registry: &SharedRegistry) -> String {
    let mut out = String::new();
    // A panic while holding the lock cannot leave a registry half-written: keep serving.
    let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
    // Writing into a String cannot fail; an error here would be a bug in a metric's encoder.
    if let Err(e) = text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}
