//! Result verification, pluggable so the node can add real proof verification.

use proofmesh_protocol::messages::SignedResult;
use proofmesh_protocol::{Task, Workflow};

/// Decides whether a result for an outstanding assignment is acceptable. The matchmaker has
/// already checked that the result names the current attempt, its operator, task and workflow.
///
/// Implementations must be deterministic (same inputs, same answer): the matchmaker's state is
/// rebuilt by replaying its event log, which re-runs the checker.
pub trait ResultChecker {
    /// `Ok(())` to accept; `Err(reason)` to reject (the reason goes into the verdict and the
    /// slashing evidence).
    fn check(
        &mut self,
        workflow: &Workflow,
        task: &Task,
        result: &SignedResult,
    ) -> Result<(), String>;
}

/// The default checker: the operator's ed25519 signature over the result must verify.
#[derive(Clone, Copy, Debug, Default)]
pub struct SignatureChecker;

impl ResultChecker for SignatureChecker {
    fn check(
        &mut self,
        _workflow: &Workflow,
        _task: &Task,
        result: &SignedResult,
    ) -> Result<(), String> {
        result
            .verify()
            .map_err(|e| format!("bad result signature: {e}"))
    }
}

/// Accepts everything that matches an outstanding assignment; for benchmarks of the scheduling
/// path alone, never for a real network.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl ResultChecker for AcceptAll {
    fn check(
        &mut self,
        _workflow: &Workflow,
        _task: &Task,
        _result: &SignedResult,
    ) -> Result<(), String> {
        Ok(())
    }
}

impl<F> ResultChecker for F
where
    F: FnMut(&Workflow, &Task, &SignedResult) -> Result<(), String>,
{
    fn check(
        &mut self,
        workflow: &Workflow,
        task: &Task,
        result: &SignedResult,
    ) -> Result<(), String> {
        self(workflow, task, result)
    }
}
