//! The seam between the node and on-chain settlement. The core loop reports what settlement
//! cares about (slashing evidence, finished workflows) through [`Settlement`]; the default does
//! nothing, and the chain integration plugs in an implementation without touching the loop.

use proofmesh_matchmaker::SlashEvidence;
use proofmesh_protocol::{ContentId, TaskIndex, WorkflowId};

/// Receives settlement-relevant decisions of this node's matchmaker. Calls are made from the
/// core loop and must not block: spawn chain transactions.
pub trait Settlement: Send + Sync + 'static {
    /// The matchmaker produced slashing evidence (already stored durably).
    fn slash(&self, evidence: &SlashEvidence);

    /// A workflow this node's matchmaker is active for completed.
    fn workflow_completed(&self, workflow: &WorkflowId, outputs: &[(TaskIndex, ContentId)]);

    /// This node's matchmaker, active for `workflow`, failed it for good: the work it accepted
    /// is still owed, and the rest of the escrow goes back to the requester.
    fn workflow_failed(&self, workflow: &WorkflowId);

    /// Whether this node pays and releases on-chain: its store keeps a finished workflow until
    /// that is journaled done, whatever the retention period.
    fn settles_on_chain(&self) -> bool {
        false
    }
}

/// No chain: evidence is kept in the store and logged, nothing is sent anywhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSettlement;

impl Settlement for NoSettlement {
    fn slash(&self, evidence: &SlashEvidence) {
        tracing::warn!(
            ?evidence,
            "slashing evidence (no chain configured: kept in the store only)"
        );
    }

    fn workflow_completed(&self, workflow: &WorkflowId, outputs: &[(TaskIndex, ContentId)]) {
        tracing::info!(workflow = %workflow.short(), outputs = outputs.len(), "workflow completed");
    }

    fn workflow_failed(&self, workflow: &WorkflowId) {
        tracing::info!(workflow = %workflow.short(), "workflow failed");
    }
}
