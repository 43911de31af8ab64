//! Building and signing what an attempt produced: a [`SignedResult`] on success, a
//! [`TaskFailure`] otherwise. Anyone verifies a result with `SignedResult::verify`; a recipient
//! that expects a particular operator also uses [`verify_from`].

use crate::executor::TaskSpec;
use crate::lease::Lease;
use proofmesh_protocol::messages::{FailureCause, SignedResult, TaskFailure, TaskResult};
use proofmesh_protocol::{ContentId, Keypair, PublicKey, SignatureError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What an attempt produced, before signing.
#[derive(Clone, Copy, Debug)]
pub struct Produced {
    /// blake3 of the output.
    pub output: ContentId,
    /// Output size in bytes.
    pub output_bytes: u64,
    /// Start of execution (ms since epoch).
    pub started_ms: u64,
    /// End of execution (ms since epoch).
    pub finished_ms: u64,
}

/// The unsigned result of `spec` run under `lease`.
pub fn task_result(
    operator: PublicKey,
    spec: &TaskSpec,
    lease: &Lease,
    produced: Produced,
) -> TaskResult {
    TaskResult {
        workflow: spec.workflow,
        task: spec.task,
        attempt: spec.attempt,
        operator,
        output: produced.output,
        output_bytes: produced.output_bytes,
        started_ms: produced.started_ms,
        finished_ms: produced.finished_ms,
        resources: *lease.resources(),
        gpus: lease.gpus().to_vec(),
    }
}

/// Build and sign the result with the operator key.
pub fn sign_result(
    keypair: &Keypair,
    spec: &TaskSpec,
    lease: &Lease,
    produced: Produced,
) -> SignedResult {
    SignedResult::sign(
        keypair,
        task_result(keypair.public(), spec, lease, produced),
    )
}

/// The failure report for `spec`.
pub fn task_failure(operator: PublicKey, spec: &TaskSpec, cause: FailureCause) -> TaskFailure {
    TaskFailure {
        workflow: spec.workflow,
        task: spec.task,
        attempt: spec.attempt,
        operator,
        cause,
    }
}

/// Why a result is not acceptable from the expected operator.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResultError {
    /// The result names another operator than the one the task was assigned to.
    #[error("result is from operator {actual}, the task was assigned to {expected}")]
    WrongOperator {
        /// Assigned operator.
        expected: PublicKey,
        /// Operator named in the result.
        actual: PublicKey,
    },
    /// Bad signature.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// Verify a result's signature and that it comes from `expected`.
pub fn verify_from(signed: &SignedResult, expected: &PublicKey) -> Result<(), ResultError> {
    if signed.result.operator != *expected {
        return Err(ResultError::WrongOperator {
            expected: *expected,
            actual: signed.result.operator,
        });
    }
    signed.verify()?;
    Ok(())
}
