//! What the RPC server asks of the node: the [`NodeApi`] trait and the JSON shapes it returns.
//!
//! The server knows nothing of the network, matchmaker or chain; the node implements this trait
//! (tests use [`super::StoreApi`], which answers from the store alone). Every type here is part
//! of the documented schema in `docs/rpc.md`: ids and keys are lower-case hex, amounts of wei
//! are decimal strings (they exceed JSON's safe integers).

use crate::network::BlobChunk;
use proofmesh_protocol::messages::Submission;
use proofmesh_protocol::{ContentId, Workflow, WorkflowId};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// A workflow to submit, as the RPC decoded it.
#[derive(Clone, Debug)]
pub enum SubmitRequest {
    /// A validated workflow from a file; the node wraps it in a [`Submission`] with its own key
    /// as owner.
    Workflow(Workflow),
    /// A complete submission built by the client (its workflow already validated by the RPC).
    Submission(Box<Submission>),
}

/// Result of `pm_submitWorkflow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitOutcome {
    /// The workflow's content id (hex).
    pub id: String,
    /// False when the node already held this workflow (the submission changed nothing).
    pub new: bool,
    /// Tasks after expansion.
    pub tasks: u64,
    /// Stages no operator seen lately could run (the workflow is accepted all the same, and
    /// those tasks wait for such an operator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched: Vec<UnmatchedStage>,
}

/// Result of `pm_quoteWorkflow`: what a workflow would cost and whether it could run, judged
/// against the operators this node saw in the last minute, before any escrow is opened. Amounts
/// are decimal strings of wei.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The workflow's content id (hex).
    pub id: String,
    /// Tasks after expansion.
    pub tasks: u64,
    /// What its escrow holds: every task's price ceiling, summed.
    pub escrow_wei: String,
    /// One attempt of each task some operator could run, at the lowest ask among them.
    pub lowest_wei: String,
    /// The same at the highest ask (the matchmaker weighs price with reputation and load).
    pub highest_wei: String,
    /// Operators it was judged against.
    pub operators: u64,
    /// Tasks no operator could run (left out of the sums).
    pub unmatched_tasks: u64,
    /// Their stages, and why.
    pub unmatched: Vec<UnmatchedStage>,
}

/// A stage whose tasks no operator seen in the last minute could run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmatchedStage {
    /// Stage name.
    pub stage: String,
    /// Which requirement none of them meets, e.g. `needs 1 GPU(s) with 40960 MiB of VRAM;
    /// operators running groth16-final@1 (4) have at most 0`.
    pub reason: String,
}

/// One workflow in `pm_listWorkflows`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowListing {
    /// Workflow id (hex).
    pub id: String,
    /// Name from the file.
    pub name: String,
    /// `active`, `completed`, `failed` or `pruned`.
    pub state: String,
    /// Total tasks.
    pub tasks: u64,
    /// Tasks with an accepted result.
    pub done: u64,
    /// When this node accepted it (ms since epoch).
    pub accepted_at_ms: u64,
    /// For a pruned workflow (`state` `pruned`): how it ended, `completed` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

/// One task in `pm_tasks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Its index in the workflow.
    pub task: u32,
    /// Its name, e.g. `leaf[3]`.
    pub name: String,
    /// `pending`, `ready`, `assigned`, `running`, `done` or `failed`.
    pub state: String,
    /// The attempt assigned or running now, or the one whose result was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Who holds that attempt, or whose result was accepted (hex key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// Attempts that ended without an accepted result, oldest first, with why.
    pub failed_attempts: Vec<FailedAttempt>,
}

/// An attempt that ended without an accepted result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedAttempt {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Who held it (hex key).
    pub operator: String,
    /// Why it ended, e.g. `no result by the deadline`.
    pub cause: String,
}

/// Which tasks `pm_tasks` lists: from task index `from` on, at most `limit` (up to
/// [`MAX_LISTED_TASKS`]), only those in `state` when given (one of [`TASK_STATES`]), only those
/// with a failed attempt when `retried`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskQuery {
    /// Only tasks in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Only tasks with a failed attempt.
    #[serde(default)]
    pub retried: bool,
    /// First task index considered.
    #[serde(default)]
    pub from: u32,
    /// Most tasks listed (default [`DEFAULT_LISTED_TASKS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Most tasks one `pm_tasks` answer lists, and how many when the query names no limit (a
/// workflow may have 100,000: page through them with `from`).
pub const MAX_LISTED_TASKS: usize = 10_000;
/// See [`MAX_LISTED_TASKS`].
pub const DEFAULT_LISTED_TASKS: usize = 1_000;

/// The task states `pm_tasks` filters by.
pub const TASK_STATES: [&str; 6] = ["pending", "ready", "assigned", "running", "done", "failed"];

/// Most workflows one `pm_listWorkflows` answer lists.
pub const MAX_LISTED_WORKFLOWS: usize = 1_000;
/// How many workflows `pm_listWorkflows` lists when the request names no `limit`.
pub const DEFAULT_LISTED_WORKFLOWS: usize = 50;

/// Per-stage progress: a stage is the tasks sharing a name before `[`, e.g. `prove[0..511]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageProgress {
    /// Stage name.
    pub name: String,
    /// Tasks in the stage.
    pub total: u64,
    /// Waiting for dependencies or for an operator.
    pub pending: u64,
    /// Assigned to or running on an operator.
    pub running: u64,
    /// With an accepted result.
    pub done: u64,
    /// Attempts exhausted.
    pub failed: u64,
    /// Failed attempts so far (retried or not).
    pub failed_attempts: u64,
    /// Why its pending tasks find no operator, when no operator seen in the last minute could
    /// run them (an active workflow's only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched: Option<String>,
}

/// Result of `pm_status`, and the payload of every `pm_progress` notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowStatus {
    /// Workflow id (hex).
    pub id: String,
    /// Name from the file.
    pub name: String,
    /// `active`, `completed` or `failed`.
    pub state: String,
    /// Why it failed (names the task and every attempt's cause).
    pub reason: Option<String>,
    /// When the requester submitted it (ms since epoch).
    pub submitted_at_ms: u64,
    /// The requester's deadline, relative to `submitted_at_ms`.
    pub deadline_ms: u64,
    /// Total tasks.
    pub tasks: u64,
    /// Tasks with an accepted result.
    pub done: u64,
    /// Stages in the order their first task appears.
    pub stages: Vec<StageProgress>,
    /// For a workflow of an ordered stream whose every task is done but which is still active:
    /// the earlier sequence of its stream it waits for to finalize first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

impl WorkflowStatus {
    /// True once nothing will change any more (completed or failed).
    pub fn is_final(&self) -> bool {
        self.state != "active"
    }
}

/// One final output of a workflow (a task no other task depends on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputInfo {
    /// Task index.
    pub task: u32,
    /// Task name.
    pub name: String,
    /// blake3 of the output (hex); fetch it with `pm_getBlob`.
    pub output: String,
    /// Output size in bytes.
    pub output_bytes: u64,
    /// Operator that produced it (hex key).
    pub operator: String,
    /// Whether this node holds the bytes (otherwise `pm_getBlob` may have to fetch them).
    pub available: bool,
}

/// Result of `pm_result`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultInfo {
    /// Workflow id (hex).
    pub id: String,
    /// `active`, `completed` or `failed`.
    pub state: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// The final outputs that have an accepted result so far (all of them once completed).
    pub outputs: Vec<OutputInfo>,
}

/// Result of `pm_getBlob`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobSlice {
    /// Blob id (hex).
    pub id: String,
    /// Length of the whole blob.
    pub total_len: u64,
    /// Offset of `data`.
    pub offset: u64,
    /// The bytes, hex.
    pub data: String,
}

/// One operator, for `pm_operators`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorInfo {
    /// Operator key (hex).
    pub key: String,
    /// Ethereum address (hex, 0x-prefixed), if advertised.
    pub eth_address: Option<String>,
    /// CPU cores advertised.
    pub cpu: u32,
    /// Memory advertised, MiB.
    pub memory_mb: u64,
    /// GPUs advertised.
    pub gpus: u32,
    /// Programs, `name@version`.
    pub programs: Vec<String>,
    /// Asking price per task in wei (decimal string).
    pub price_wei: String,
    /// Tasks completed.
    pub completed: u64,
    /// Attempts failed.
    pub failed: u64,
    /// Times slashed.
    pub slashed: u64,
    /// Last advert or heartbeat (ms since epoch).
    pub last_seen_ms: u64,
}

/// Result of `pm_nodeInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// proofmesh version.
    pub version: String,
    /// The node's ed25519 key (hex).
    pub node_key: String,
    /// libp2p peer id, when the network runs.
    pub peer_id: Option<String>,
    /// Network id (part of every envelope's domain).
    pub network_id: u64,
    /// Chain id.
    pub chain_id: u64,
    /// Roles this node runs (`operator`, `matchmaker`).
    pub roles: Vec<String>,
    /// p2p listen addresses.
    pub listen: Vec<String>,
    /// Connected peers, when the network runs.
    pub peers: Option<u64>,
    /// Chain indexer height, when it runs.
    pub chain_height: Option<u64>,
    /// Workflows this node holds.
    pub workflows: u64,
    /// At a matchmaker, the matchmakers it hears now (hex keys, its own included): two that do
    /// not hear each other both take a new workflow as theirs.
    #[serde(default)]
    pub live_matchmakers: Option<Vec<String>>,
}

/// Errors a [`NodeApi`] returns; each maps to one JSON-RPC error code (see `docs/rpc.md`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or the workflow invalid; the message names the problem.
    #[error("{0}")]
    Invalid(String),
    /// No such workflow.
    #[error("unknown workflow id {0}: this node has no workflow with that id")]
    UnknownWorkflow(WorkflowId),
    /// The workflow finished, and its retention on this node ended: only how it ended is left.
    #[error(
        "workflow {id} ended ({}) and was pruned from this node's store {} s after it finished \
         (store.retain_finished_secs): its tasks, results and outputs are no longer kept here",
        tombstone.state.label(),
        tombstone.pruned_at_ms.saturating_sub(tombstone.finished_at_ms) / 1000
    )]
    Pruned {
        /// The workflow.
        id: WorkflowId,
        /// What is left of it.
        tombstone: Box<crate::store::Tombstone>,
    },
    /// No such blob.
    #[error("unknown blob {0}: neither this node nor its peers have it")]
    UnknownBlob(ContentId),
    /// The node failed internally (store, network).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            ApiError::Invalid(_) => super::codes::INVALID_PARAMS,
            ApiError::UnknownWorkflow(_) => super::codes::UNKNOWN_WORKFLOW,
            ApiError::Pruned { .. } => super::codes::PRUNED_WORKFLOW,
            ApiError::UnknownBlob(_) => super::codes::UNKNOWN_BLOB,
            ApiError::Internal(_) => super::codes::INTERNAL,
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// What the RPC server needs from the node.
#[async_trait::async_trait]
pub trait NodeApi: Send + Sync + 'static {
    /// Durably accept a workflow (and, in a networked node, gossip it). Returns once it is
    /// committed to the store.
    async fn submit(&self, request: SubmitRequest) -> Result<SubmitOutcome, ApiError>;

    /// Current status; [`ApiError::UnknownWorkflow`] for an unknown id.
    async fn status(&self, id: WorkflowId) -> Result<WorkflowStatus, ApiError>;

    /// Ids of workflows whose progress changed, as they change. Subscriptions re-read
    /// [`NodeApi::status`] on each; a lagged receiver re-reads too, so nothing is missed.
    fn changes(&self) -> broadcast::Receiver<WorkflowId>;

    /// Final outputs; [`ApiError::UnknownWorkflow`] for an unknown id.
    async fn result(&self, id: WorkflowId) -> Result<ResultInfo, ApiError>;

    /// A slice of a blob; [`ApiError::UnknownBlob`] when it cannot be had.
    async fn blob(&self, id: ContentId, offset: u64, max_len: usize)
        -> Result<BlobChunk, ApiError>;

    /// Known operators with their reputation counters.
    async fn operators(&self) -> Result<Vec<OperatorInfo>, ApiError>;

    /// What `workflow` would cost at the asks of the operators this node saw lately, and which
    /// of its stages none of them could run; [`ApiError::Invalid`] on a node that follows no
    /// operator adverts.
    async fn quote(&self, workflow: Workflow) -> Result<Quote, ApiError>;

    /// The tasks of workflow `id` that `query` selects, in order, with their attempts and why
    /// those that failed did; [`ApiError::UnknownWorkflow`] for an unknown id.
    async fn tasks(&self, id: WorkflowId, query: TaskQuery) -> Result<Vec<TaskInfo>, ApiError>;

    /// The workflows this node holds, newest first, at most `limit` (up to
    /// [`MAX_LISTED_WORKFLOWS`]), only those in `state` when given (`active`, `completed` or
    /// `failed`; another value is [`ApiError::Invalid`]).
    async fn workflows(
        &self,
        state: Option<String>,
        limit: usize,
    ) -> Result<Vec<WorkflowListing>, ApiError>;

    /// About this node.
    async fn node_info(&self) -> Result<NodeInfo, ApiError>;

    /// Cancel a workflow for its requester (`owner_eth_signature`: the paying account's
    /// signature over the cancel text, see `proofmesh_chain::evidence::cancel_text`; `None`:
    /// this node owns the workflow). Returns once the cancellation is sent; the workflow's
    /// status turns `failed` when its matchmaker has failed it.
    async fn cancel(
        &self,
        id: WorkflowId,
        owner_eth_signature: Option<Vec<u8>>,
    ) -> Result<(), ApiError> {
        let _ = (id, owner_eth_signature);
        Err(ApiError::Invalid(
            "this RPC server runs no node: it cannot send a cancellation".to_owned(),
        ))
    }
}
