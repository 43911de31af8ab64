//! Which matchmaker is active for a workflow: rendezvous (highest-random-weight) hashing.
//!
//! Every node computes the same answer from the same live set, and when a matchmaker leaves only
//! the workflows it was active for move (to their second choice), so takeover is local.

use proofmesh_protocol::{ContentId, PublicKey, Workflow, WorkflowId};

/// Rendezvous weight of `matchmaker` for `workflow`: blake3 of both, domain separated.
fn weight(workflow: &WorkflowId, matchmaker: &PublicKey) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"proofmesh/rendezvous/v1\0");
    h.update(&workflow.0);
    h.update(&matchmaker.0);
    *h.finalize().as_bytes()
}

/// The active matchmaker for `workflow` among `live` (order and duplicates do not matter), or
/// `None` when no matchmaker is live.
pub fn active_matchmaker(workflow: &WorkflowId, live: &[PublicKey]) -> Option<PublicKey> {
    live.iter().copied().max_by(|a, b| {
        // Ties are impossible in practice (blake3), but break them by key for a total order.
        weight(workflow, a)
            .cmp(&weight(workflow, b))
            .then_with(|| a.cmp(b))
    })
}

/// The key a workflow is routed by: its id, or for an ordered workflow its stream's name, so that
/// one matchmaker schedules a whole stream and can keep sequence N ahead of N+1.
pub fn routing_key(id: &WorkflowId, workflow: &Workflow) -> ContentId {
    match &workflow.ordering {
        Some(o) => {
            let mut h = blake3::Hasher::new();
            h.update(b"proofmesh/stream/v1\0");
            h.update(o.stream.as_bytes());
            ContentId(*h.finalize().as_bytes())
        }
        None => *id,
    }
}
