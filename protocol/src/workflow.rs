//! The expanded workflow: a DAG of concrete tasks, in the canonical form that is hashed into a
//! [`WorkflowId`], gossiped and scheduled. The human-written file format (with groups and
//! aggregation trees) expands into this.
//!
//! Tasks are referred to by their position in `Workflow::tasks` ([`TaskIndex`]); names like
//! `prove[17]` are for people and error messages.

use crate::ids::ContentId;
use crate::resources::Resources;
use serde::{Deserialize, Serialize};

/// blake3 of the canonical encoding of a [`Workflow`].
pub type WorkflowId = ContentId;

/// Position of a task in its workflow's task list.
pub type TaskIndex = u32;

/// Which prover program runs a task. Operators map (name, version) to a command.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Program {
    /// Program name, e.g. `groth16-leaf`.
    pub name: String,
    /// Program version, e.g. `1`.
    pub version: String,
}

/// An input a task reads besides its dependencies' outputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Input {
    /// A content-addressed blob the requester published.
    Blob(ContentId),
    /// The output of another task of the same workflow (always also a dependency).
    Output(TaskIndex),
}

/// One unit of work: runs one program once, on one operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Human-readable unique name within the workflow, e.g. `prove[17]`.
    pub name: String,
    /// The program to run.
    pub program: Program,
    /// Extra arguments passed to the program.
    pub args: Vec<String>,
    /// Inputs, in the order the program receives them.
    pub inputs: Vec<Input>,
    /// Tasks that must have an accepted result before this one is ready, sorted, deduplicated.
    pub deps: Vec<TaskIndex>,
    /// What one attempt needs.
    pub resources: Resources,
    /// Wall-clock limit of one attempt, in milliseconds.
    pub timeout_ms: u64,
    /// How many attempts before the workflow fails.
    pub max_attempts: u32,
    /// Most the requester pays for this task, in wei.
    pub max_price_wei: u128,
}

/// Strict ordering between workflows of one stream: sequence N finalizes before N+1.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ordering {
    /// Stream name, e.g. `mainnet-blocks`.
    pub stream: String,
    /// Position in the stream.
    pub sequence: u64,
}

/// A workflow as hashed and scheduled.
///
/// The owner and the on-chain escrow are deliberately *not* part of the workflow: the escrow is
/// opened for the workflow's id, so including it would be circular, and the same workflow file
/// gets the same id whoever submits it. Both travel in [`crate::messages::Submission`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    /// Name from the file.
    pub name: String,
    /// Optional stream ordering.
    pub ordering: Option<Ordering>,
    /// Time the requester allows from submission to final result, in milliseconds.
    pub deadline_ms: u64,
    /// Tasks in topological order is *not* required; validation checks acyclicity.
    pub tasks: Vec<Task>,
}

impl Workflow {
    /// The workflow's content id.
    pub fn id(&self) -> WorkflowId {
        ContentId::of_value(self)
    }
}
