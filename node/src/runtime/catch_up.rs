//! Catch-up sync. Gossip is fire-and-forget: a node that was down, restarting, or cut off while
//! a result or verdict was gossiped never hears it again, and its view of that workflow stays
//! behind for good. So every node asks a peer, now and then, about the workflows it still
//! shows active and has heard nothing of for a while: a [`SyncRequest`] naming them with a
//! bitmap of the tasks it has, answered by a [`SyncReply`] with the accepted results it lacks
//! (each signed by its operator, checked like a gossiped verdict) and the failure reason of
//! any that failed. Direct request-response only; never gossiped.
//!
//! Discovery: every [`DISCOVER_EVERY`] (and at start) the question also lists every workflow
//! the node knows as active, and the answer carries the submissions of active workflows it
//! did not list, with their accepted results — a matchmaker that was down when a workflow was
//! submitted must know it to take it over if the active one dies, and may be the only one left
//! to vouch for those results (`MatchmakerRole::relayed`). A node that only operates discovers only while one of its
//! attempts waits for a workflow it does not hold: its matchmaker sends each workflow it needs
//! with its assignments, and taking in every active one would be work for nothing.
//!
//! Vouches: an answer from a node the asker does not trust as a matchmaker (a gateway) would
//! be that node's word alone on which results were accepted. So a gateway keeps the signed
//! verdicts (and catch-up answers) of the trusted matchmakers that accepted its results
//! (`Store::keep_vouch`) and relays them unchanged ([`SyncUpdate::vouched`]); the asker takes
//! each as that matchmaker's own decisions. A result no such statement covers still travels
//! bare, and a matchmaker taking over counts it only for an attempt it saw assigned
//! (`MatchmakerRole::relayed`).
//!
//! Polling is per workflow with backoff: a workflow is asked about once it has been quiet for
//! [`QUIET`], then again after 2x, 4x, .. up to [`MAX_BACKOFF`] while nothing new arrives;
//! news resets it. A busy workflow costs nothing; a restarted node asks at once.

use super::core_loop::Shared;
use super::view::View;
use crate::store::WorkflowState;
use proofmesh_protocol::messages::{SignedResult, SyncReply, SyncRequest, SyncUpdate, Verdict};
use proofmesh_protocol::{encoding, Envelope, Message, TaskIndex, WorkflowId};
use std::collections::HashSet;

/// How long a workflow must be quiet (no accepted result) before this node asks about it.
pub const QUIET: u64 = 1_000;
/// Longest wait between two questions about a quiet workflow.
pub const MAX_BACKOFF: u64 = 16_000;
/// Most workflows named in one request.
pub const MAX_WANTS: usize = 32;
/// How often a node runs discovery (ms).
pub const DISCOVER_EVERY: u64 = 5_000;
/// A newly connected peer triggers discovery if the last one is at least this old (ms).
pub const REDISCOVER_AFTER: u64 = 1_000;
/// Most active workflow ids listed for discovery.
pub const MAX_KNOWN_ACTIVE: usize = 4_096;
/// Encoded bytes of results one reply may carry (a quarter of the message limit): a reply
/// that would be larger says `more` and the asker comes back for the rest.
pub const REPLY_BUDGET: usize = encoding::MAX_MESSAGE_BYTES / 4;

/// When to ask about one workflow next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    next_at: u64,
    backoff: u64,
}

impl Schedule {
    /// Ask once the workflow has been quiet for [`QUIET`] from `now`.
    pub fn quiet_from(now: u64) -> Self {
        Schedule {
            next_at: now.saturating_add(QUIET),
            backoff: QUIET,
        }
    }

    /// Ask at the first opportunity (a workflow loaded after a restart: anything may have
    /// happened while the node was down).
    pub fn now() -> Self {
        Schedule {
            next_at: 0,
            backoff: QUIET,
        }
    }

    /// Whether it is time to ask.
    pub fn due(&self, now: u64) -> bool {
        now >= self.next_at
    }

    /// A question goes out now: the next one only after the backoff, which doubles.
    pub fn asked(&mut self, now: u64) {
        self.next_at = now.saturating_add(self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// The responder's side: what this node's store holds that the asker lacks. Unknown workflows
/// are skipped; a workflow with nothing new is left out.
pub fn answer(sh: &Shared, view: &View, request: &SyncRequest) -> SyncReply {
    let mut reply = SyncReply {
        workflows: Vec::new(),
        submissions: Vec::new(),
        more: false,
    };
    let mut budget = REPLY_BUDGET;
    for want in request.workflows.iter().take(MAX_WANTS) {
        let (failed, completed) = match sh.store.workflow_state(&want.workflow) {
            Ok(Some(WorkflowState::Failed { reason })) => (Some(reason), false),
            Ok(Some(WorkflowState::Completed)) => (None, true),
            Ok(Some(WorkflowState::Active)) => (None, false),
            // Pruned here: how it ended is all that is left, and all an operator-only node
            // still asking needs (it never learned the outcome, so it would ask forever).
            Ok(None) => {
                if let Ok(Some(t)) = sh.store.tombstone(&want.workflow) {
                    // Its results are gone (or going, a slice at a time): the outcome only.
                    let (failed, completed) = match t.state {
                        WorkflowState::Failed { reason } => (Some(reason), false),
                        WorkflowState::Completed => (None, true),
                        WorkflowState::Active => continue,
                    };
                    reply.workflows.push(SyncUpdate {
                        workflow: want.workflow,
                        accepted: Vec::new(),
                        failed,
                        completed,
                        vouched: Vec::new(),
                        pruned: true,
                    });
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "catch-up: reading a workflow's state failed");
                continue;
            }
        };
        let (vouched, accepted, more) = if want.results {
            match to_relay(sh, &want.workflow, |task| !want.has(task), &mut budget) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "catch-up: reading results failed");
                    continue;
                }
            }
        } else {
            (Vec::new(), Vec::new(), false)
        };
        reply.more = more;
        let update = SyncUpdate {
            workflow: want.workflow,
            accepted,
            failed,
            completed,
            vouched,
            pruned: false,
        };
        if !update.accepted.is_empty()
            || !update.vouched.is_empty()
            || update.failed.is_some()
            || update.completed
        {
            reply.workflows.push(update);
        }
        if reply.more {
            break;
        }
    }
    if let (Some(known), false) = (&request.known_active, reply.more) {
        let active = view.active_ids(usize::MAX);
        discover(sh, active, known, &mut budget, &mut reply);
    }
    reply
}

/// Add the submissions of this node's active workflows that `known` does not list. The active
/// set comes from the view in memory: no scan of every workflow the store ever held.
fn discover(
    sh: &Shared,
    active: Vec<WorkflowId>,
    known: &[WorkflowId],
    budget: &mut usize,
    reply: &mut SyncReply,
) {
    let known: std::collections::HashSet<_> = known.iter().collect();
    for id in active {
        if known.contains(&id) {
            continue;
        }
        let Ok(Some(record)) = sh.store.workflow(&id) else {
            continue;
        };
        let size = encoding::encode(&record.submission).len();
        if size > *budget {
            reply.more = true;
            return;
        }
        *budget -= size;
        reply.submissions.push(record.submission);
        // With the results accepted so far: a matchmaker that learns a workflow this way may
        // be the only one left to finish it.
        let (vouched, accepted, more) = match to_relay(sh, &id, |_| true, budget) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "catch-up: reading results failed");
                continue;
            }
        };
        if !accepted.is_empty() || !vouched.is_empty() {
            reply.workflows.push(SyncUpdate {
                workflow: id,
                accepted,
                failed: None,
                completed: false,
                vouched,
                pruned: false,
            });
        }
        if more {
            reply.more = true;
            return;
        }
    }
}

/// The (workflow, task) of every result `message` accepts, when it is a statement a relayer
/// may vouch with: a verdict, a batch of them, or a catch-up answer. `None` for other kinds.
pub fn accepted_by(message: &Message) -> Option<Vec<(WorkflowId, TaskIndex)>> {
    let of = |r: &SignedResult| (r.result.workflow, r.result.task);
    Some(match message {
        Message::Verdict(Verdict::Accepted(r)) => vec![of(r)],
        Message::Verdict(Verdict::Rejected { .. }) => Vec::new(),
        Message::Verdicts(batch) => batch
            .iter()
            .filter_map(|v| match v {
                Verdict::Accepted(r) => Some(of(r)),
                Verdict::Rejected { .. } => None,
            })
            .collect(),
        Message::SyncReply(reply) => reply
            .workflows
            .iter()
            .flat_map(|u| u.accepted.iter().map(of))
            .collect(),
        _ => return None,
    })
}

/// Envelope bytes besides its payload, rounded up (header and signature): for the budget.
const ENVELOPE_OVERHEAD: usize = 160;

/// What this node relays of `id`'s accepted results for the tasks `missing` accepts, within
/// `budget` (decremented): first the kept statements (`Store::keep_vouch`) that accept any of
/// them, each whole, then bare the results no statement covers. The flag says some were left
/// out. A statement too big for any answer is never sent (its results go bare).
fn to_relay(
    sh: &Shared,
    id: &WorkflowId,
    missing: impl Fn(TaskIndex) -> bool,
    budget: &mut usize,
) -> Result<(Vec<Envelope>, Vec<SignedResult>, bool), crate::store::StoreError> {
    let mut covered = HashSet::new();
    let mut vouched = Vec::new();
    for statement in sh.store.vouches(id)? {
        let size = statement.payload.len() + ENVELOPE_OVERHEAD;
        if size > REPLY_BUDGET {
            continue;
        }
        let Some(tasks) = encoding::decode::<Message>(&statement.payload)
            .ok()
            .as_ref()
            .and_then(accepted_by)
        else {
            continue;
        };
        let tasks: Vec<TaskIndex> = tasks
            .into_iter()
            .filter(|(w, _)| w == id)
            .map(|(_, t)| t)
            .collect();
        if !tasks.iter().any(|&t| missing(t) && !covered.contains(&t)) {
            continue;
        }
        if size > *budget {
            return Ok((vouched, Vec::new(), true));
        }
        *budget -= size;
        covered.extend(tasks);
        vouched.push(statement);
    }
    let (accepted, more) =
        sh.store
            .results_within(id, |t| missing(t) && !covered.contains(&t), budget)?;
    Ok((vouched, accepted, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_news_resets_it() {
        let mut s = Schedule::quiet_from(10_000);
        assert!(!s.due(10_999));
        assert!(s.due(11_000));
        let mut now = 11_000;
        let mut gaps = Vec::new();
        for _ in 0..7 {
            s.asked(now);
            let next = s.next_at;
            gaps.push(next - now);
            now = next;
        }
        assert_eq!(gaps, [1_000, 2_000, 4_000, 8_000, 16_000, 16_000, 16_000]);
        let s = Schedule::quiet_from(now);
        assert_eq!(s.next_at - now, QUIET, "news starts the wait over");
        assert!(
            Schedule::now().due(0),
            "a loaded workflow is asked about at once"
        );
    }
}
