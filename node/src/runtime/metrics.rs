//! The runtime's own metrics, registered into the node's shared Prometheus registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label: a task state (`pending`, `assigned`, `running`, `done`, `failed`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state.
    pub state: String,
}

/// Label: an envelope's message kind (`Assignment`, `AssignmentBatch`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind, as `proofmesh_protocol::MessageKind` spells it.
    pub kind: String,
}

/// Counters, gauges and histograms of the node runtime.
#[derive(Clone, Debug)]
pub struct RuntimeMetrics {
    /// Tasks of known workflows by their current state in this node's view.
    pub tasks: Family<StateLabel, Gauge>,
    /// Workflows by state.
    pub workflows: Family<StateLabel, Gauge>,
    /// Seconds from a task becoming ready (submission or last dependency accepted) to its
    /// first assignment, measured by the assigning matchmaker.
    pub assignment_latency: Histogram,
    /// Seconds of orchestration per attempt: from assignment to the result arriving at the
    /// matchmaker, minus the compute time the operator reports.
    pub task_overhead: Histogram,
    /// Accepted verdicts that conflicted with an already accepted result (must stay 0).
    pub conflicting_results: Counter,
    /// Matchmaker events appended to the durable log.
    pub events_logged: Counter,
    /// Seconds per group commit (one fsync covering a batch of messages).
    pub store_sync: Histogram,
    /// Catch-up questions sent to peers.
    pub catch_up_requests: Counter,
    /// Accepted results this node learned by catch-up rather than gossip (each one a result
    /// its gossip missed).
    pub caught_up_results: Counter,
    /// Matchmaker decisions (verdicts, assignments, ...) ignored because their signer is not
    /// among the trusted matchmakers (`network.matchmakers`).
    pub untrusted_decisions: Counter,
    /// Results relayed bare (no trusted matchmaker's signed verdict with them) for an open task
    /// of a workflow this node's matchmaker runs, refused: for an attempt it never saw assigned,
    /// they are only their operator's word (`MatchmakerRole::relayed`).
    pub relayed_refused: Counter,
    /// Envelopes this node signed, by kind: ed25519 signing and checking is the largest share
    /// of a task's CPU, and batches exist to sign less.
    pub envelopes_signed: Family<KindLabel, Counter>,
    /// Workflows this node's view keeps in memory: the active ones (a finished one is read
    /// from the store), so memory does not grow with every workflow a node ever saw.
    pub view_workflows: Gauge,
    /// The tasks of those workflows.
    pub view_tasks: Gauge,
    /// Workflows whose attempts and result checks this node's matchmaker keeps in memory (the
    /// running ones; updated every 250 ms).
    pub matchmaker_workflows: Gauge,
    /// Workflows the matchmaker's engine holds: running, or finished within
    /// `retire_after_ms` (updated every 250 ms).
    pub matchmaker_engine_workflows: Gauge,
    /// Ready tasks of the matchmaker's workflows that no live operator could run (updated
    /// every 250 ms): work waiting for capacity the market lacks.
    pub matchmaker_unmatched_ready: Gauge,
    /// Size of the matchmaker's last snapshot (bytes).
    pub matchmaker_snapshot_bytes: Gauge,
    /// Seconds to encode and store a matchmaker snapshot.
    pub matchmaker_snapshot_seconds: Histogram,
    /// Attempts this node's operator remembers having answered (until a while past their
    /// deadlines; updated with each assignment).
    pub operator_attempts: Gauge,
    /// Bytes of blobs the retention policy removed (no remaining workflow named them).
    pub pruned_blob_bytes: Counter,
}

impl RuntimeMetrics {
    /// Register under `proofmesh_*` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = RuntimeMetrics {
            tasks: Family::default(),
            workflows: Family::default(),
            // 50 µs .. ~26 s
            assignment_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 20)),
            task_overhead: Histogram::new(exponential_buckets(0.000_05, 2.0, 20)),
            conflicting_results: Counter::default(),
            events_logged: Counter::default(),
            store_sync: Histogram::new(exponential_buckets(0.000_05, 2.0, 20)),
            catch_up_requests: Counter::default(),
            caught_up_results: Counter::default(),
            untrusted_decisions: Counter::default(),
            relayed_refused: Counter::default(),
            envelopes_signed: Family::default(),
            view_workflows: Gauge::default(),
            view_tasks: Gauge::default(),
            matchmaker_workflows: Gauge::default(),
            matchmaker_engine_workflows: Gauge::default(),
            matchmaker_unmatched_ready: Gauge::default(),
            matchmaker_snapshot_bytes: Gauge::default(),
            matchmaker_snapshot_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            operator_attempts: Gauge::default(),
            pruned_blob_bytes: Counter::default(),
        };
        registry.register(
            "proofmesh_tasks",
            "Tasks by state in this node's view",
            m.tasks.clone(),
        );
        registry.register(
            "proofmesh_workflows",
            "Workflows by state in this node's view",
            m.workflows.clone(),
        );
        registry.register(
            "proofmesh_assignment_latency_seconds",
            "Task ready to first assignment, at the assigning matchmaker",
            m.assignment_latency.clone(),
        );
        registry.register(
            "proofmesh_task_overhead_seconds",
            "Assignment to result received, minus the operator-reported compute time",
            m.task_overhead.clone(),
        );
        registry.register(
            "proofmesh_conflicting_results",
            "Accepted verdicts that conflicted with an already accepted result",
            m.conflicting_results.clone(),
        );
        registry.register(
            "proofmesh_matchmaker_events",
            "Events appended to the matchmaker log",
            m.events_logged.clone(),
        );
        registry.register(
            "proofmesh_store_sync_seconds",
            "Group commits: one fsync before a batch of messages is announced",
            m.store_sync.clone(),
        );
        registry.register(
            "proofmesh_catch_up_requests",
            "Catch-up questions sent to peers about quiet workflows",
            m.catch_up_requests.clone(),
        );
        registry.register(
            "proofmesh_caught_up_results",
            "Accepted results learned by catch-up sync (missed by gossip)",
            m.caught_up_results.clone(),
        );
        registry.register(
            "proofmesh_untrusted_decisions",
            "Matchmaker decisions ignored: signed by a key not among network.matchmakers",
            m.untrusted_decisions.clone(),
        );
        registry.register(
            "proofmesh_relayed_results_refused",
            "Results relayed without a trusted matchmaker's verdict, for an attempt this matchmaker never saw assigned: refused",
            m.relayed_refused.clone(),
        );
        registry.register(
            "proofmesh_envelopes_signed",
            "Envelopes this node signed, by message kind",
            m.envelopes_signed.clone(),
        );
        registry.register(
            "proofmesh_view_workflows",
            "Workflows this node's view keeps in memory (the active ones)",
            m.view_workflows.clone(),
        );
        registry.register(
            "proofmesh_view_tasks",
            "Tasks of the workflows this node's view keeps in memory",
            m.view_tasks.clone(),
        );
        registry.register(
            "proofmesh_matchmaker_workflows",
            "Workflows whose attempts and result checks the matchmaker keeps in memory",
            m.matchmaker_workflows.clone(),
        );
        registry.register(
            "proofmesh_matchmaker_engine_workflows",
            "Workflows the matchmaker's engine holds: running, or finished within its retire_after_ms",
            m.matchmaker_engine_workflows.clone(),
        );
        registry.register(
            "proofmesh_matchmaker_unmatched_ready_tasks",
            "Ready tasks of this matchmaker's workflows that no live operator could run (program, capacity or price): they wait for one to join",
            m.matchmaker_unmatched_ready.clone(),
        );
        registry.register(
            "proofmesh_matchmaker_snapshot_bytes",
            "Size of the matchmaker's last snapshot, which a restart restores before replaying the log after it",
            m.matchmaker_snapshot_bytes.clone(),
        );
        registry.register(
            "proofmesh_matchmaker_snapshot_seconds",
            "Time to encode and store a matchmaker snapshot",
            m.matchmaker_snapshot_seconds.clone(),
        );
        registry.register(
            "proofmesh_operator_attempts",
            "Attempts the operator remembers having answered (until a while past their deadlines)",
            m.operator_attempts.clone(),
        );
        registry.register(
            "proofmesh_store_pruned_blob_bytes",
            "Bytes of blobs pruned with the finished workflows past their retention that named them",
            m.pruned_blob_bytes.clone(),
        );
        m
    }

    /// A workflow pruned from the store: it moves to `pruned`, and its tasks leave the gauge.
    pub fn workflow_pruned(&self, workflow: &crate::store::PrunedWorkflow) {
        self.workflow_moved(Some(workflow.state), "pruned");
        for (state, n) in &workflow.tasks {
            self.tasks
                .get_or_create(&StateLabel {
                    state: (*state).to_owned(),
                })
                .dec_by(*n as i64);
        }
    }

    /// Count `n` more workflows in state `state` (pruned ones, at start).
    pub fn workflows_in(&self, state: &str, n: u64) {
        self.workflows
            .get_or_create(&StateLabel {
                state: state.to_owned(),
            })
            .inc_by(n as i64);
    }

    /// Move one task from state `from` to `to` in the gauge.
    pub fn task_moved(&self, from: Option<&str>, to: &str) {
        if from == Some(to) {
            return;
        }
        if let Some(from) = from {
            self.tasks
                .get_or_create(&StateLabel {
                    state: from.to_owned(),
                })
                .dec();
        }
        self.tasks
            .get_or_create(&StateLabel {
                state: to.to_owned(),
            })
            .inc();
    }

    /// Count `n` more tasks in state `state` (a workflow loaded at start).
    pub fn tasks_in(&self, state: &str, n: u64) {
        self.tasks
            .get_or_create(&StateLabel {
                state: state.to_owned(),
            })
            .inc_by(n as i64);
    }

    /// Move one workflow between states in the gauge.
    pub fn workflow_moved(&self, from: Option<&str>, to: &str) {
        if from == Some(to) {
            return;
        }
        if let Some(from) = from {
            self.workflows
                .get_or_create(&StateLabel {
                    state: from.to_owned(),
                })
                .dec();
        }
        self.workflows
            .get_or_create(&StateLabel {
                state: to.to_owned(),
            })
            .inc();
    }
}
