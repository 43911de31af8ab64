//! Result checking for the matchmaker role.
//!
//! The matchmaker is sans-IO and its [`ResultChecker`] must be deterministic, but checking a
//! result needs I/O (fetch the output from the operator) and CPU (verify a Groth16 proof). So
//! the node checks a result *before* it becomes an `Event::Result`: [`precheck`] runs off the
//! core loop, and its verdict is recorded next to the event in the event log. The checker the
//! matchmaker runs ([`RecordedChecker`]) only looks the verdict up, so replaying the log
//! reproduces every decision exactly, without refetching or reverifying anything.

use crate::network::{peer_id_of, Client};
use crate::store::{Store, INLINE_BLOB_MAX};
use proofmesh_matchmaker::ResultChecker;
use proofmesh_protocol::messages::SignedResult;
use proofmesh_protocol::{ContentId, SignatureError, Task, Workflow, WorkflowId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Programs whose output is a proof file the prover library can verify.
pub const PROOF_PROGRAMS: [&str; 3] = ["leaf", "aggregate", "final"];

/// Whether results of `task` carry a verifiable proof.
pub fn is_proof_task(task: &Task) -> bool {
    PROOF_PROGRAMS.contains(&task.program.name.as_str())
}

/// A check's outcome: `Ok(())` to accept, `Err(reason)` to reject (and slash).
pub type CheckVerdict = Result<(), String>;

/// Verdicts computed by [`precheck`], by workflow, keyed by the signed result's content id.
#[derive(Clone, Debug, Default)]
pub struct Verdicts(Arc<Mutex<VerdictsByWorkflow>>);

impl Verdicts {
    /// Record the verdict on `result`.
    pub fn insert(&self, result: &SignedResult, verdict: CheckVerdict) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(result.result.workflow)
            .or_default()
            .insert(ContentId::of_value(result), verdict);
    }

    fn get(&self, result: &SignedResult) -> Option<CheckVerdict> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&result.result.workflow)?
            .get(&ContentId::of_value(result))
            .cloned()
    }

    /// Keep the verdicts of the workflows for which `keep` is true; returns how many
    /// workflows that leaves.
    pub fn retain_workflows(&self, mut keep: impl FnMut(&WorkflowId) -> bool) -> usize {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|w, _| keep(w));
        map.len()
    }

    /// Every verdict held, by workflow (for a snapshot of the matchmaker).
    pub fn by_workflow(&self) -> VerdictsByWorkflow {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Verdicts restored from a snapshot.
    pub fn from_workflows(held: VerdictsByWorkflow) -> Self {
        Verdicts(Arc::new(Mutex::new(held)))
    }
}

/// Check verdicts by workflow, keyed by the signed result's content id.
pub type VerdictsByWorkflow = HashMap<WorkflowId, HashMap<ContentId, CheckVerdict>>;

/// Signed results whose operator signature this node has checked (or made itself, or took on a
/// trusted matchmaker's word: [`VerifiedResults::insert_unchecked`]), by content
/// id, so a result is verified once per node: the precheck and the view's acceptance of the
/// verdict carrying it check the same bytes. Bounded; a forgotten one is verified again.
#[derive(Clone, Debug, Default)]
pub struct VerifiedResults(Arc<Mutex<ResultIds>>);

type ResultIds = crate::bounded_set::BoundedSet<ContentId, 65_536>;

impl VerifiedResults {
    /// `result.verify()`, skipped when this exact signed result verified before.
    pub fn verify(&self, result: &SignedResult) -> Result<(), SignatureError> {
        let id = ContentId::of_value(result);
        if self.lock().contains(&id) {
            return Ok(());
        }
        result.verify()?;
        self.lock().insert(id);
        Ok(())
    }

    /// Record a result whose signature needs no check here: one this node signed itself, or
    /// one a matchmaker it was configured to trust vouched for (having checked it).
    pub fn insert_unchecked(&self, result: &SignedResult) {
        self.lock().insert(ContentId::of_value(result));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ResultIds> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The matchmaker's checker: the recorded verdict of [`precheck`], and the signature check
/// for a result that was never prechecked (which the node does not produce; kept as a safe
/// floor rather than a panic).
#[derive(Clone, Debug)]
pub struct RecordedChecker(pub Verdicts);

impl ResultChecker for RecordedChecker {
    fn check(
        &mut self,
        _workflow: &Workflow,
        _task: &Task,
        result: &SignedResult,
    ) -> Result<(), String> {
        match self.0.get(result) {
            Some(verdict) => verdict,
            None => {
                tracing::warn!(
                    task = result.result.task,
                    "result judged without a precheck; checking its signature only"
                );
                result
                    .verify()
                    .map_err(|e| format!("bad result signature: {e}"))
            }
        }
    }
}

/// A precheck's outcome: the verdict, and the output's bytes when they were fetched and are
/// small enough to live inside the store's database (`store::INLINE_BLOB_MAX`). The core
/// stores those with the verdict's own batch: one commit, not one more beside it. Larger
/// outputs (files, fsynced on their own) are stored by the precheck itself.
#[derive(Debug)]
pub struct Checked {
    pub verdict: CheckVerdict,
    pub fetched: Option<(ContentId, Vec<u8>)>,
}

/// [`precheck`] at once, when it waits on nothing: a task that is not a proof, whose output
/// came attached to the direct result (its hash checked by the network layer on arrival).
/// That is most results, and judging them in the core's own turn lets their verdict join the
/// batch being built instead of the next one, a scheduling hop and often a whole commit later.
/// `None`: nothing was taken, run [`precheck`] in the background.
pub fn precheck_now(
    client: &Client,
    verified: &VerifiedResults,
    task: &Task,
    result: &SignedResult,
) -> Option<Checked> {
    if is_proof_task(task) {
        return None;
    }
    let id = result.result.output;
    let bytes = client.take_attachment(&id)?;
    if let Err(reason) = signature_verdict(verified, result) {
        // Not kept, as [`precheck`] never fetches it: no one's output, only bytes.
        return Some(Checked {
            verdict: Err(reason),
            fetched: None,
        });
    }
    Some(Checked {
        verdict: size_matches(result, &bytes),
        fetched: Some((id, bytes)),
    })
}

/// The operator's signature on `result`, as a verdict (checked once per result, cached).
pub fn signature_verdict(verified: &VerifiedResults, result: &SignedResult) -> CheckVerdict {
    verified
        .verify(result)
        .map_err(|e| format!("bad result signature: {e}"))
}

fn size_matches(result: &SignedResult, bytes: &[u8]) -> CheckVerdict {
    if bytes.len() as u64 != result.result.output_bytes {
        return Err(format!(
            "output is {} bytes, the result claims {}",
            bytes.len(),
            result.result.output_bytes
        ));
    }
    Ok(())
}

/// Check a result fully: the operator's signature, the output fetched (from the operator, else
/// any peer) with a matching blake3 hash and size, and for proving programs a valid proof.
/// Never panics on hostile input.
pub async fn precheck(
    client: &Client,
    store: &Store,
    verified: &VerifiedResults,
    task: &Task,
    result: &SignedResult,
) -> Checked {
    let mut fetched = None;
    let verdict = check(client, store, verified, task, result, &mut fetched).await;
    Checked { verdict, fetched }
}

async fn check(
    client: &Client,
    store: &Store,
    verified: &VerifiedResults,
    task: &Task,
    result: &SignedResult,
    fetched: &mut Option<(ContentId, Vec<u8>)>,
) -> CheckVerdict {
    signature_verdict(verified, result)?;
    let id = result.result.output;
    let bytes = match fetch_or_load(client, store, result).await {
        Ok(Output::Stored(bytes)) => bytes,
        Ok(Output::Fetched(bytes)) => {
            *fetched = Some((id, bytes.clone()));
            bytes
        }
        Err(e) => return Err(format!("output {} unavailable: {e}", id.short())),
    };
    size_matches(result, &bytes)?;
    if is_proof_task(task) {
        let verified =
            tokio::task::spawn_blocking(move || proofmesh_prover::verify_proof_bytes(&bytes)).await;
        match verified {
            Ok(Ok(_public_inputs)) => {}
            Ok(Err(e)) => return Err(format!("proof does not verify: {e}")),
            Err(e) => return Err(format!("proof verification crashed: {e}")),
        }
    }
    Ok(())
}

/// Where an output's bytes came from.
enum Output {
    /// In the local store (found there, or too large to hand over and stored at once).
    Stored(Vec<u8>),
    /// Fetched from a peer (hash checked), small, not stored yet: the caller stores them.
    Fetched(Vec<u8>),
}

/// The output bytes: from the local store if present, else fetched (or taken as attached to
/// the direct result; verified against the id by the network layer and again here); fetched
/// bytes too large to live inside the database are stored here.
async fn fetch_or_load(
    client: &Client,
    store: &Store,
    result: &SignedResult,
) -> Result<Output, String> {
    let id = result.result.output;
    // An index lookup (microseconds, no blocking-pool hop): the output is rarely here.
    if store.has_blob(&id).unwrap_or(false) {
        let store = store.clone();
        let local = tokio::task::spawn_blocking(move || store.blob(&id))
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(Some(bytes)) = local {
            return Ok(Output::Stored(bytes));
        }
    }
    let operator = peer_id_of(&result.result.operator);
    let bytes = match client.fetch_blob(operator, id).await {
        Ok(bytes) => bytes,
        // The operator may be gone already; any peer that has it will do.
        Err(first) => client
            .fetch_blob(None, id)
            .await
            .map_err(|e| format!("{first}; then: {e}"))?,
    };
    if ContentId::of_bytes(&bytes) != id {
        return Err("fetched bytes do not hash to the output id".into());
    }
    if bytes.len() <= INLINE_BLOB_MAX {
        return Ok(Output::Fetched(bytes));
    }
    let store = store.clone();
    let stored = bytes.clone();
    tokio::task::spawn_blocking(move || store.put_blob_expected(&id, &stored))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(Output::Stored(bytes))
}
