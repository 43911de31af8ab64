//! The node's Prometheus metrics and the `/metrics` text exposition.
//!
//! One [`Registry`] per node: the network registers libp2p's metrics and its own `p2p_*`
//! counters (peers, gossip in/out/rejected) into it ([`crate::network::new`]), [`NodeMetrics`]
//! registers the node's own under the `proofmesh_` prefix, and the RPC server encodes the
//! whole registry at `/metrics`. Build the registry, hand `&mut` to each subsystem, then wrap
//! it in an `Arc` for the server (prometheus-client registries are append-only at setup; the
//! metrics themselves are atomics updated through their clones).

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use prometheus_client::registry::Registry as MetricsRegistry;

type Labels = Vec<(&'static str, &'static str)>;

/// Every task state label, in lifecycle order.
pub const TASK_STATES: [&str; 6] = ["pending", "ready", "assigned", "running", "done", "failed"];

/// The node's own metrics. Cheap to clone; clones update the same series.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    tasks: Family<Labels, Gauge>,
    workflows: Family<Labels, Gauge>,
    submissions: Family<Labels, Counter>,
    assignment_latency: Histogram,
    task_overhead: Histogram,
    chain_height: Gauge,
    rpc_requests: Family<Labels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s in powers of two: covers loopback submit-to-assign and slow WAN paths.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl NodeMetrics {
    /// Create the metrics and register them into `registry` under `proofmesh_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = NodeMetrics {
            tasks: Family::default(),
            workflows: Family::default(),
            submissions: Family::default(),
            assignment_latency: latency_histogram(),
            task_overhead: latency_histogram(),
            chain_height: Gauge::default(),
            rpc_requests: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("proofmesh");
        r.register("tasks", "Tasks of active workflows known to this node, by state", m.tasks.clone());
        r.register("workflows", "Workflows known to this node, by state", m.workflows.clone());
        r.register("workflow_submissions", "Workflow submissions over RPC, by outcome", m.submissions.clone());
        r.register(
            "assignment_latency_seconds",
            "Time from a task becoming ready to its assignment being sent",
            m.assignment_latency.clone(),
        );
        r.register(
            "task_overhead_seconds",
            "Per-task orchestration overhead: end-to-end time minus the program's own run time",
            m.task_overhead.clone(),
        );
        r.register("chain_sync_height", "Last chain block the indexer processed", m.chain_height.clone());
        r.register("rpc_requests", "JSON-RPC requests, by method and outcome", m.rpc_requests.clone());
        // Export every state at 0 from the start, so dashboards see the series before work.
        for state in TASK_STATES {
            m.tasks.get_or_create(&vec![("state", state)]).set(0);
        }
        m
    }

    /// Set the number of tasks in `state` (one of [`TASK_STATES`]).
    pub fn set_tasks(&self, state: &'static str, count: u64) {
        self.tasks.get_or_create(&vec![("state", state)]).set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Set the number of workflows in `state` (`active`, `completed`, `failed`).
    pub fn set_workflows(&self, state: &'static str, count: u64) {
        self.workflows.get_or_create(&vec![("state", state)]).set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Count one submission with its outcome (`accepted`, `duplicate`, `invalid`, `error`).
    pub fn submission(&self, outcome: &'static str) {
        self.submissions.get_or_create(&vec![("outcome", outcome)]).inc();
    }

    /// Observe one ready-to-assigned latency.
    pub fn observe_assignment_latency(&self, seconds: f64) {
        self.assignment_latency.observe(seconds);
    }

    /// Observe one task's orchestration overhead.
    pub fn observe_task_overhead(&self, seconds: f64) {
        self.task_overhead.observe(seconds);
    }

    /// Set the chain indexer's height.
    pub fn set_chain_height(&self, block: u64) {
        self.chain_height.set(i64::try_from(block).unwrap_or(i64::MAX));
    }

    /// Count one RPC request.
    pub fn rpc_request(&self, method: &'static str, outcome: &'static str) {
        self.rpc_requests.get_or_create(&vec![("method", method), ("outcome", outcome)]).inc();
    }
}

/// Content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encode the whole registry in the text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an error here would be a bug in a metric's encoder.
    if let Err(e) = text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}
