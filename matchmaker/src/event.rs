//! What goes into the matchmaker ([`Event`]) and what comes out ([`Decision`]).
//!
//! Events are serde-serializable so the node can append them, with their `now_ms`, to a durable
//! log; [`crate::Matchmaker::replay`] rebuilds the exact state from that log.

use proofmesh_protocol::messages::{
    Acceptance, Assignment, FailureCause, Heartbeat, OperatorAdvert, SignedResult, TaskFailure,
    Verdict,
};
use proofmesh_protocol::{ContentId, PublicKey, TaskIndex, Workflow, WorkflowId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An input to [`crate::Matchmaker::handle`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Only let time pass: fire due timeouts. See [`crate::Matchmaker::next_deadline`].
    Tick,
    /// A workflow was submitted. `id` must be `workflow.id()` (the node has computed it already;
    /// the matchmaker does not rehash 1,000-task workflows).
    WorkflowSubmitted {
        /// Content id of the workflow.
        id: WorkflowId,
        /// The expanded workflow.
        workflow: Workflow,
        /// When the requester submitted it; its deadline counts from here.
        submitted_at_ms: u64,
    },
    /// An operator announced (or re-announced) itself.
    OperatorAdvert(OperatorAdvert),
    /// An operator is alive.
    Heartbeat(Heartbeat),
    /// The node saw the operator's connection drop (faster than missed heartbeats).
    OperatorDown(PublicKey),
    /// The node saw the operator come back.
    OperatorUp(PublicKey),
    /// An operator accepted an assignment.
    Acceptance(Acceptance),
    /// An operator published a signed result.
    Result(SignedResult),
    /// An operator declared that an attempt failed.
    Failure(TaskFailure),
    /// On-chain reputation counters of an operator, from the contract indexer.
    Reputation {
        /// Operator node key.
        operator: PublicKey,
        /// Tasks completed.
        completed: u64,
        /// Tasks failed.
        failed: u64,
        /// Times slashed.
        slashed: u64,
    },
    /// The set of live matchmakers changed (from the node's membership view).
    Matchmakers(Vec<PublicKey>),
    /// Another matchmaker's assignment, seen on gossip (ignored when we made it ourselves).
    Assigned(Assignment),
    /// A verdict seen on gossip (ignored for workflows this matchmaker is active for).
    Verdict(Verdict),
    /// Another matchmaker's [`Decision::Cancel`], seen on gossip (ignored for workflows this
    /// matchmaker is active for): a follower learns that an attempt ended on a timeout.
    Cancelled {
        /// Workflow.
        workflow: WorkflowId,
        /// Task.
        task: TaskIndex,
        /// Attempt that ended.
        attempt: u32,
        /// Operator that held it.
        operator: PublicKey,
        /// Why.
        reason: AttemptCause,
    },
    /// An operator's result arrived, before it is checked (appended variant: earlier encodings
    /// are unchanged). The operator has finished the attempt, so what it held in this view (a
    /// running slot or a queue place) is free for the next task while the result is checked:
    /// checking a proof, or waiting for the durable commit before the verdict, does not idle
    /// the prover. The attempt itself stays in flight until [`Event::Result`].
    ResultArrived {
        /// Workflow.
        workflow: WorkflowId,
        /// Task.
        task: TaskIndex,
        /// Attempt.
        attempt: u32,
        /// Operator that sent it.
        operator: PublicKey,
    },
    /// A result some node holds as accepted, passed on by a node that is not a trusted
    /// matchmaker (a catch-up answer from a gateway or an operator), so nobody vouches for its
    /// acceptance (appended variant). Judged by this matchmaker's checker like an operator's
    /// result, and only if it is active for the workflow and holds that very attempt in flight
    /// on that operator (its own assignment, or the one it followed from the matchmaker active
    /// before): then it is the operator's result, come another way. The results the dead
    /// matchmaker accepted otherwise count only with its signed verdict, relayed unchanged
    /// ([`Event::Verdict`]). One that fails its check is dropped, and nobody is slashed on a
    /// relay's word.
    Relayed(SignedResult),
    /// Another trusted matchmaker's [`Decision::WorkflowFailed`], seen on gossip (appended
    /// variant). The workflow ends here too, without a second announcement: a standby that
    /// takes it over later must not run it again, and an ordered stream must not wait for it.
    /// If this matchmaker is active for it, its attempts in flight are called back. Ignored for
    /// a workflow this engine does not hold (catch-up brings it again once it does).
    WorkflowFailed {
        /// Workflow.
        workflow: WorkflowId,
    },
    /// Its requester cancelled the workflow (appended variant; the node checked that the
    /// requester signed it). The matchmaker active for it fails it as
    /// [`FailureReason::Cancelled`]; the others learn the failure from it. Ignored for a
    /// workflow this engine does not hold.
    CancelRequested {
        /// Workflow.
        workflow: WorkflowId,
    },
}

/// An output of [`crate::Matchmaker::handle`]: something the node must send or record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Send this assignment to its operator (and gossip it so followers see it). A reassignment
    /// is a `Cancel` of the old attempt followed by an `Assign` with the next attempt number.
    Assign(Assignment),
    /// Tell an operator to stop an attempt (it timed out, was superseded or its workflow failed).
    Cancel {
        /// Workflow.
        workflow: WorkflowId,
        /// Task.
        task: TaskIndex,
        /// Attempt to stop.
        attempt: u32,
        /// Operator running it.
        operator: PublicKey,
        /// Why.
        reason: AttemptCause,
    },
    /// Gossip this verdict on a result.
    Verdict(Verdict),
    /// Submit this evidence to the contract.
    Slash(SlashEvidence),
    /// Every task has an accepted result, and (for an ordered stream) every earlier sequence is
    /// finalized: the workflow is final.
    WorkflowCompleted {
        /// Workflow.
        workflow: WorkflowId,
        /// Output of each task that nothing depends on (the workflow's results), by task.
        outputs: Vec<(TaskIndex, ContentId)>,
    },
    /// The workflow cannot complete.
    WorkflowFailed {
        /// Workflow.
        workflow: WorkflowId,
        /// Why, naming the task and every attempt.
        reason: FailureReason,
    },
}

/// Evidence for the contract's slashing paths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlashEvidence {
    /// The operator accepted (signed acceptance) and missed the result deadline.
    MissedDeadline {
        /// The operator's acceptance.
        acceptance: Acceptance,
        /// The deadline it missed (ms since epoch).
        deadline_ms: u64,
    },
    /// The operator signed a result that failed verification.
    InvalidResult {
        /// The offending signed result.
        result: SignedResult,
        /// What verification said.
        reason: String,
    },
}

/// Why one attempt of a task did not produce an accepted result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptCause {
    /// Not accepted in time.
    AcceptTimeout,
    /// Accepted, but no result by the deadline.
    ResultTimeout,
    /// The operator declared a failure.
    Declared(FailureCause),
    /// The result failed verification.
    InvalidResult(String),
    /// The operator was presumed down while holding the attempt.
    OperatorDown,
    /// Another matchmaker reassigned the task (seen on gossip).
    Superseded,
    /// The workflow ended (failed or deadline) while the attempt ran.
    WorkflowEnded,
}

impl AttemptCause {
    /// Whether this cause uses up one of the task's `max_attempts`. An assignment that was never
    /// accepted, that another matchmaker replaced, or that the operator refused because its
    /// lease was taken (several active matchmakers can race for the last GPU) did no work and
    /// does not count; refusals are retried after a backoff instead. Nor does an operator
    /// going down: that is the operator's failure (its reputation records it), not the task's;
    /// such losses have their own, larger budget (`Config::max_operator_losses`).
    pub fn counts(&self) -> bool {
        !matches!(
            self,
            AttemptCause::AcceptTimeout
                | AttemptCause::Superseded
                | AttemptCause::WorkflowEnded
                | AttemptCause::OperatorDown
                | AttemptCause::Declared(FailureCause::Refused(_))
        )
    }

    /// Whether the operator holding the attempt is to blame (its reputation records a failure).
    /// An assignment a live operator never accepted is its fault too, though it costs the task
    /// no attempt: else an operator that advertises room and accepts nothing (a black hole) is
    /// offered task after task, each one waiting out the accept timeout.
    pub fn operator_fault(&self) -> bool {
        self.counts()
            || matches!(
                self,
                AttemptCause::OperatorDown | AttemptCause::AcceptTimeout
            )
    }
}

impl fmt::Display for AttemptCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptCause::AcceptTimeout => f.write_str("not accepted in time"),
            AttemptCause::ResultTimeout => f.write_str("no result by the deadline"),
            AttemptCause::Declared(FailureCause::Timeout) => {
                f.write_str("operator reports the program timed out")
            }
            AttemptCause::Declared(FailureCause::Crashed {
                exit_code,
                stderr_tail,
            }) => {
                write!(f, "program crashed (exit {exit_code:?}): {stderr_tail}")
            }
            AttemptCause::Declared(FailureCause::Refused(why)) => {
                write!(f, "operator refused: {why}")
            }
            AttemptCause::Declared(FailureCause::Input(why)) => {
                write!(f, "input unavailable: {why}")
            }
            AttemptCause::InvalidResult(why) => write!(f, "invalid result: {why}"),
            AttemptCause::OperatorDown => f.write_str("operator went down"),
            AttemptCause::Superseded => f.write_str("superseded by another assignment"),
            AttemptCause::WorkflowEnded => f.write_str("workflow ended"),
        }
    }
}

/// One failed attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Attempt number.
    pub attempt: u32,
    /// Operator that held it.
    pub operator: PublicKey,
    /// What went wrong.
    pub cause: AttemptCause,
}

/// Why a workflow failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureReason {
    /// A task used up its attempts.
    AttemptsExhausted {
        /// The task.
        task: TaskIndex,
        /// Its name, e.g. `prove[17]`.
        name: String,
        /// Every failed attempt, in order.
        attempts: Vec<AttemptRecord>,
    },
    /// The workflow's deadline passed first.
    DeadlineExceeded {
        /// Tasks without an accepted result.
        unfinished: u32,
        /// One of them (the first by index), by name.
        first_unfinished: String,
    },
    /// The workflow cannot be scheduled at all (malformed DAG).
    Invalid(String),
    /// Its requester cancelled it (appended variant).
    Cancelled,
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::AttemptsExhausted {
                task,
                name,
                attempts,
            } => {
                write!(
                    f,
                    "task {name} (#{task}) failed {} attempts:",
                    attempts.len()
                )?;
                for a in attempts {
                    write!(f, " [attempt {} on {}: {}]", a.attempt, a.operator, a.cause)?;
                }
                Ok(())
            }
            FailureReason::DeadlineExceeded {
                unfinished,
                first_unfinished,
            } => {
                write!(
                    f,
                    "deadline passed with {unfinished} tasks unfinished, e.g. {first_unfinished}"
                )
            }
            FailureReason::Invalid(why) => write!(f, "invalid workflow: {why}"),
            FailureReason::Cancelled => write!(f, "cancelled by its requester"),
        }
    }
}
