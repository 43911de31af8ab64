//! The messages proofmesh nodes exchange, each carried in a signed [`crate::Envelope`].
//!
//! Flow of one task: a requester gossips a [`Submission`]; operators gossip [`OperatorAdvert`]s
//! and [`Heartbeat`]s; the workflow's active matchmaker sends an [`Assignment`] to an operator,
//! which answers with an [`Acceptance`], runs the program and publishes a [`SignedResult`] (or a
//! [`TaskFailure`]); the matchmaker checks it and gossips a [`Verdict`]. Several assignments to
//! one operator travel as one [`Message::Assignments`], answered by one [`Message::Answers`].

use crate::encoding;
use crate::envelope::MessageKind;
use crate::identity::{Keypair, PublicKey, Signature, SignatureError};
use crate::ids::ContentId;
use crate::resources::Resources;
use crate::workflow::{Program, Task, TaskIndex, Workflow, WorkflowId};
use serde::{Deserialize, Serialize};

/// A 20-byte Ethereum address.
pub type EthAddress = [u8; 20];

/// Where a workflow's payment is escrowed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EscrowRef {
    /// Chain the escrow lives on.
    pub chain_id: u64,
    /// Address of the market contract.
    pub contract: EthAddress,
}

/// A requester submits a workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The workflow; its id is `workflow.id()`.
    pub workflow: Workflow,
    /// The requester's node key.
    pub owner: PublicKey,
    /// The requester's Ethereum address (escrow payer and refund recipient).
    pub owner_eth: Option<EthAddress>,
    /// Escrow opened for `workflow.id()`, if the network settles on-chain.
    pub escrow: Option<EscrowRef>,
    /// When the requester submitted it (ms since epoch); the deadline counts from here.
    pub submitted_at_ms: u64,
}

/// One GPU an operator offers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Device index as the driver numbers it.
    pub index: u32,
    /// Model name, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: String,
    /// Total VRAM in MiB.
    pub vram_mb: u64,
    /// Driver UUID (stable across reboots).
    pub uuid: String,
}

/// What an operator machine offers in total.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU cores.
    pub cpu: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Scratch disk in MiB.
    pub disk_mb: u64,
    /// Each GPU.
    pub gpus: Vec<GpuInfo>,
}

/// An operator announces itself and what it can run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAdvert {
    /// Operator node key (the key that signs results).
    pub operator: PublicKey,
    /// Ethereum address that holds its stake and receives payment.
    pub eth_address: Option<EthAddress>,
    /// Machine capacity.
    pub capacity: Capacity,
    /// Programs it can run.
    pub programs: Vec<Program>,
    /// Asking price per task, in wei.
    pub price_wei: u128,
    /// CPU tasks it accepts beyond what runs now (queued on the machine, started as running
    /// tasks finish); 0: only what fits now.
    pub queue: u32,
    /// Most tasks it runs at once whatever the resources allow; 0: no such limit.
    pub max_tasks: u32,
    /// The matchmakers whose decisions it takes (its `network.matchmakers`); their
    /// assignments may come with their tasks' definitions instead of the whole workflow
    /// ([`Dispatch::tasks`]). Empty: any matchmaker's decisions count, and it takes in and
    /// checks every workflow it runs a task of.
    pub trusts: Vec<PublicKey>,
}

/// Liveness signal; also carries what the operator is running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Operator node key.
    pub operator: PublicKey,
    /// Operator's clock (ms since epoch).
    pub at_ms: u64,
    /// Tasks it is running: (workflow, task, attempt).
    pub running: Vec<(WorkflowId, TaskIndex, u32)>,
}

/// The active matchmaker hands one attempt of one task to one operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Workflow.
    pub workflow: WorkflowId,
    /// Task within it.
    pub task: TaskIndex,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Chosen operator.
    pub operator: PublicKey,
    /// The exact GPU indices reserved on that operator.
    pub gpus: Vec<u32>,
    /// Resources reserved.
    pub resources: Resources,
    /// The operator must accept by this time (ms since epoch).
    pub accept_by_ms: u64,
    /// The result must arrive by this time (ms since epoch).
    pub deadline_ms: u64,
    /// Price agreed for this attempt, in wei.
    pub price_wei: u128,
    /// Which matchmaker assigned it.
    pub matchmaker: PublicKey,
    /// It may wait on the operator, behind the attempts the operator holds, until their
    /// resources free (its deadline allows for that wait); otherwise it must fit now. `gpus`
    /// is empty for a queued task (only CPU tasks are queued).
    pub queued: bool,
}

/// The operator commits to an assignment. Signed, this is the evidence for a missed-deadline
/// slash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptance {
    /// Content id of the accepted [`Assignment`].
    pub assignment: ContentId,
    /// Workflow.
    pub workflow: WorkflowId,
    /// Task.
    pub task: TaskIndex,
    /// Attempt.
    pub attempt: u32,
    /// Operator.
    pub operator: PublicKey,
    /// When it accepted (operator clock).
    pub accepted_at_ms: u64,
    /// With on-chain settlement: the operator's EIP-712 signature by its Ethereum key, the
    /// evidence a missed-deadline slash needs (`None` without a chain).
    pub eth: Option<EthAcceptance>,
}

/// The on-chain form of an acceptance, signed (EIP-712 `Acceptance`) by the operator's
/// Ethereum key: workflow, task and attempt are the enclosing [`Acceptance`]'s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EthAcceptance {
    /// Result deadline, unix seconds (the assignment's, rounded up).
    pub deadline_s: u64,
    /// Agreed price, wei.
    pub price_wei: u128,
    /// 65 bytes: r, s, v.
    pub signature: Vec<u8>,
}

/// Most parts one [`Message::Assignments`], [`Message::Answers`] or [`Message::Verdicts`]
/// carries, and most assignments one [`Message::Dispatch`] carries.
pub const MAX_BATCH: usize = 64;

/// An operator's answer to one assignment of a [`Message::Assignments`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// It took the attempt on.
    Accepted(Acceptance),
    /// It refused it ([`FailureCause::Refused`]) or could not take it.
    Refused(TaskFailure),
}

impl Answer {
    /// The operator that answered.
    pub fn operator(&self) -> &PublicKey {
        match self {
            Answer::Accepted(a) => &a.operator,
            Answer::Refused(f) => &f.operator,
        }
    }

    /// (workflow, task, attempt) it answers.
    pub fn attempt(&self) -> (WorkflowId, TaskIndex, u32) {
        match self {
            Answer::Accepted(a) => (a.workflow, a.task, a.attempt),
            Answer::Refused(f) => (f.workflow, f.task, f.attempt),
        }
    }

    /// The single message this answer is when it travels alone.
    pub fn into_message(self) -> Message {
        match self {
            Answer::Accepted(a) => Message::Acceptance(a),
            Answer::Refused(f) => Message::Failure(f),
        }
    }

    /// The answer a single acceptance or failure message is.
    pub fn from_message(message: Message) -> Option<Answer> {
        match message {
            Message::Acceptance(a) => Some(Answer::Accepted(a)),
            Message::Failure(f) => Some(Answer::Refused(f)),
            _ => None,
        }
    }
}

/// What an operator measured while running a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Workflow.
    pub workflow: WorkflowId,
    /// Task.
    pub task: TaskIndex,
    /// Attempt.
    pub attempt: u32,
    /// Operator.
    pub operator: PublicKey,
    /// blake3 of the output.
    pub output: ContentId,
    /// Output size in bytes.
    pub output_bytes: u64,
    /// Start and end of execution (operator clock, ms since epoch).
    pub started_ms: u64,
    /// End of execution.
    pub finished_ms: u64,
    /// Resources the task held.
    pub resources: Resources,
    /// GPU indices it held.
    pub gpus: Vec<u32>,
}

/// Domain tag for result signatures, which are kept and checked outside envelopes.
const RESULT_TAG: &[u8] = b"proofmesh/result/v1\0";

/// A result signed by the operator's key, verifiable by anyone on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedResult {
    /// The result.
    pub result: TaskResult,
    /// Operator signature over `RESULT_TAG || encode(result)`.
    pub signature: Signature,
    /// With on-chain settlement, for a final proof: the operator's EIP-712 `ProofClaim`
    /// signature (65 bytes) over the output's calldata form, the evidence an invalid-proof
    /// slash needs. Outside the ed25519-signed part.
    pub eth_claim: Option<Vec<u8>>,
}

impl SignedResult {
    /// Sign a result.
    pub fn sign(keypair: &Keypair, result: TaskResult) -> SignedResult {
        let signature = keypair.sign(&Self::signing_bytes(&result));
        SignedResult {
            result,
            signature,
            eth_claim: None,
        }
    }

    fn signing_bytes(result: &TaskResult) -> Vec<u8> {
        let mut out = RESULT_TAG.to_vec();
        out.extend_from_slice(&encoding::encode(result));
        out
    }

    /// Check the signature against `result.operator`.
    pub fn verify(&self) -> Result<(), SignatureError> {
        self.result
            .operator
            .verify(&Self::signing_bytes(&self.result), &self.signature)
    }
}

/// Why an attempt failed, as reported by the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureCause {
    /// The program exceeded its timeout and was killed.
    Timeout,
    /// The program exited unsuccessfully.
    Crashed {
        /// Exit status, if it exited; `None` when killed by a signal.
        exit_code: Option<i32>,
        /// Tail of stderr.
        stderr_tail: String,
    },
    /// The operator cannot honour the reservation.
    Refused(String),
    /// An input could not be fetched or did not match its hash.
    Input(String),
}

/// An operator declares it failed (fail fast: cheaper than silently missing the deadline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// Workflow.
    pub workflow: WorkflowId,
    /// Task.
    pub task: TaskIndex,
    /// Attempt.
    pub attempt: u32,
    /// Operator.
    pub operator: PublicKey,
    /// Why.
    pub cause: FailureCause,
}

/// The active matchmaker's decision on a result, gossiped so every node's view agrees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The result is accepted; the task is done.
    Accepted(SignedResult),
    /// The result failed verification.
    Rejected {
        /// The offending result.
        result: SignedResult,
        /// What verification said.
        reason: String,
    },
}

/// A matchmaker's periodic liveness signal, so every node computes the same live set of
/// matchmakers (and with it, by rendezvous hashing, the same active matchmaker per workflow).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchmakerAnnounce {
    /// Matchmaker node key.
    pub matchmaker: PublicKey,
    /// Matchmaker's clock (ms since epoch).
    pub at_ms: u64,
}

/// The active matchmaker tells an operator to stop an attempt (timed out, superseded, or its
/// workflow ended). Sent directly to the operator and gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelAttempt {
    /// Workflow.
    pub workflow: WorkflowId,
    /// Task.
    pub task: TaskIndex,
    /// Attempt to stop.
    pub attempt: u32,
    /// Operator running it.
    pub operator: PublicKey,
    /// Matchmaker that cancels it.
    pub matchmaker: PublicKey,
    /// Why, for logs.
    pub reason: String,
}

/// The active matchmaker's decision that a workflow cannot complete, gossiped so every node's
/// status agrees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowFailure {
    /// Workflow.
    pub workflow: WorkflowId,
    /// Matchmaker that decided it.
    pub matchmaker: PublicKey,
    /// Why, naming the task and every attempt's cause.
    pub reason: String,
}

/// A requester withdraws its workflow: the active matchmaker fails it as cancelled, calls its
/// attempts back, pays the work accepted so far and releases the rest of the escrow. Only the
/// requester may: the envelope is signed by the submission's `owner` key (a workflow file
/// submitted through a node's RPC is owned by that node), or `owner_eth_signature` is the submission's
/// `owner_eth` account's EIP-191 signature over the cancel text of its escrow's market (what
/// `proofmesh cancel` signs with the key that paid the escrow).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowCancel {
    /// Workflow.
    pub workflow: WorkflowId,
    /// 65 bytes (r, s, v), or `None` when the envelope's signer is the owner.
    pub owner_eth_signature: Option<Vec<u8>>,
}

/// Catch-up sync: a node asks a peer for what it missed about workflows it knows (results
/// gossiped while it was down or lost to a partition). Direct request-response only, never
/// gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The workflows to catch up on, each with the tasks the asker already has done.
    pub workflows: Vec<SyncWant>,
    /// Discovery: every workflow the asker knows as active. The responder sends the
    /// submissions of active workflows not in this list (ones the asker never heard of, e.g.
    /// submitted while it was down). `None`: no discovery this time.
    pub known_active: Option<Vec<WorkflowId>>,
}

/// One workflow a [`SyncRequest`] asks about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncWant {
    /// Workflow.
    pub workflow: WorkflowId,
    /// Bitmap of tasks the asker already has an accepted result for (bit `i % 8` of byte
    /// `i / 8` is task `i`), so the answer carries only the missing ones.
    pub have: Vec<u8>,
    /// Whether to send the missing results; `false`: only the outcome (an operator-only node
    /// gets the inputs of its tasks with their assignments and needs no one else's results).
    pub results: bool,
}

impl SyncWant {
    /// Whether the asker has task `task`.
    pub fn has(&self, task: TaskIndex) -> bool {
        self.have
            .get(task as usize / 8)
            .is_some_and(|b| b & (1 << (task % 8)) != 0)
    }

    /// A bitmap with the tasks in `done` set.
    pub fn bitmap(done: impl IntoIterator<Item = TaskIndex>) -> Vec<u8> {
        let mut have = Vec::new();
        for t in done {
            let (byte, bit) = (t as usize / 8, t % 8);
            if have.len() <= byte {
                have.resize(byte + 1, 0);
            }
            have[byte] |= 1 << bit;
        }
        have
    }
}

/// The answer to a [`SyncRequest`]: what the responder knows that the asker lacks. Every result
/// carries its operator's signature, so the asker checks it exactly like a gossiped verdict.
/// A matchmaker also sends one unasked, ahead of an assignment, with the accepted results of
/// the task's dependencies: operators do not follow verdicts on gossip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReply {
    /// One entry per asked workflow the responder knows something new about.
    pub workflows: Vec<SyncUpdate>,
    /// For discovery: submissions of active workflows the asker did not list.
    pub submissions: Vec<Submission>,
    /// The answer hit its size budget: ask again for the rest.
    pub more: bool,
}

/// What a [`SyncReply`] says about one workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncUpdate {
    /// Workflow.
    pub workflow: WorkflowId,
    /// Accepted results the asker lacks that the responder vouches for only by its own word
    /// (its own verdicts, when it is a matchmaker the asker trusts).
    pub accepted: Vec<SignedResult>,
    /// Accepted results the asker lacks, as the trusted matchmaker that accepted them signed
    /// them: its [`Message::Verdict`] or [`Message::Verdicts`] envelope, or its
    /// [`Message::SyncReply`], relayed unchanged (opened with [`crate::Envelope::open_statement`]).
    /// A matchmaker taking over from one that died takes these as that one's decisions; a
    /// result with no such envelope counts only for an attempt it saw assigned.
    pub vouched: Vec<crate::Envelope>,
    /// Set when the workflow failed: the active matchmaker's reason.
    pub failed: Option<String>,
    /// The responder holds the workflow completed (every task done, in stream order).
    pub completed: bool,
    /// The responder pruned the workflow (its retention ran out): how it ended is all it can
    /// say, and the results the asker lacks are gone.
    pub pruned: bool,
}

/// Every message, as decoded from an envelope's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A workflow submission.
    Submission(Submission),
    /// An operator advert.
    OperatorAdvert(OperatorAdvert),
    /// A heartbeat.
    Heartbeat(Heartbeat),
    /// An assignment.
    Assignment(Assignment),
    /// An acceptance.
    Acceptance(Acceptance),
    /// A signed result.
    Result(SignedResult),
    /// A declared failure.
    Failure(TaskFailure),
    /// A matchmaker verdict.
    Verdict(Verdict),
    /// A matchmaker is alive (appended variant: earlier encodings are unchanged).
    MatchmakerAnnounce(MatchmakerAnnounce),
    /// The active matchmaker stops an attempt.
    Cancel(CancelAttempt),
    /// The active matchmaker declares a workflow failed.
    WorkflowFailed(WorkflowFailure),
    /// Catch-up sync request (direct only).
    SyncRequest(SyncRequest),
    /// Catch-up sync answer (direct only).
    SyncReply(SyncReply),
    /// Assignments from one matchmaker to one operator, in the order the operator takes them
    /// in, under one signature: a workflow's first wave hands each operator as many tasks as it
    /// has room for, and a signature plus its check per task was most of what that wave cost
    /// (bench/e2e.md). 2 to [`MAX_BATCH`] of them; a single one travels as
    /// [`Message::Assignment`].
    Assignments(Vec<Assignment>),
    /// One operator's answers to a [`Message::Assignments`], in its order, under one signature.
    Answers(Vec<Answer>),
    /// The verdicts a matchmaker reached in one group commit, under one signature (2 to
    /// [`MAX_BATCH`]; a single one travels as [`Message::Verdict`]).
    Verdicts(Vec<Verdict>),
    /// Assignments to one operator together with the inputs their tasks take, under one
    /// signature (see [`Dispatch`]).
    Dispatch(Dispatch),
    /// A requester cancels its workflow (appended variant: earlier encodings are unchanged).
    CancelWorkflow(WorkflowCancel),
}

/// Assignments from one matchmaker to one operator (1 to [`MAX_BATCH`], in the order the
/// operator takes them in) with what their tasks need that the operator was not sent before:
///
/// * `inputs`: the accepted results of their tasks' dependencies. Pushing them as a message
///   of their own ahead of the assignments cost a second signature, check and message for
///   most tasks of an aggregation tree (bench/e2e.md).
/// * `tasks`: their tasks' definitions, for an operator whose advert says it trusts the
///   matchmaker ([`OperatorAdvert::trusts`]) and that does not hold their workflow: it starts
///   them at once instead of first decoding, checking and storing a whole workflow (a
///   512-task one: half of a 32-operator first wave, bench/e2e.md). An operator not
///   configured to trust the sender ignores them and waits for the workflow.
///
/// With neither, assignments travel as [`Message::Assignment`] or [`Message::Assignments`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    /// Accepted results, each signed by the operator that produced it.
    pub inputs: Vec<SignedResult>,
    /// The assignments.
    pub assignments: Vec<Assignment>,
    /// Empty, or the definition of each assignment's task, in the assignments' order.
    pub tasks: Vec<Task>,
}

impl Message {
    /// The kind an envelope must declare for this message.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Submission(_) => MessageKind::WorkflowSubmission,
            Message::OperatorAdvert(_) => MessageKind::OperatorAdvert,
            Message::Heartbeat(_) => MessageKind::Heartbeat,
            Message::Assignment(_) => MessageKind::Assignment,
            Message::Acceptance(_) => MessageKind::Acceptance,
            Message::Result(_) => MessageKind::TaskResult,
            Message::Failure(_) => MessageKind::TaskFailure,
            Message::Verdict(_) => MessageKind::Verdict,
            Message::MatchmakerAnnounce(_) => MessageKind::MatchmakerAnnounce,
            Message::Cancel(_) => MessageKind::Cancel,
            Message::WorkflowFailed(_) => MessageKind::WorkflowFailed,
            Message::SyncRequest(_) => MessageKind::SyncRequest,
            Message::SyncReply(_) => MessageKind::SyncReply,
            Message::Assignments(_) => MessageKind::AssignmentBatch,
            Message::Answers(_) => MessageKind::AnswerBatch,
            Message::Verdicts(_) => MessageKind::VerdictBatch,
            Message::Dispatch(_) => MessageKind::Dispatch,
            Message::CancelWorkflow(_) => MessageKind::WorkflowCancel,
        }
    }

    /// What is wrong with a batch ([`Message::Assignments`], [`Message::Answers`],
    /// [`Message::Verdicts`], [`Message::Dispatch`]): fewer than two (a dispatch: one) or more
    /// than [`MAX_BATCH`] parts, a dispatch without inputs or task definitions (or with a
    /// definition count other than its assignments'), or assignments or answers from
    /// more than one matchmaker or for more than one operator (a verdict batch is its
    /// signer's alone). `None` for any other message.
    pub fn batch_problem(&self) -> Option<String> {
        let parties_of = |list: &[Assignment]| {
            list.iter()
                .map(|a| (a.operator, Some(a.matchmaker)))
                .collect::<Vec<_>>()
        };
        let (what, len, mut parties) = match self {
            Message::Assignments(list) => ("assignment batch", list.len(), parties_of(list)),
            Message::Answers(list) => (
                "answer batch",
                list.len(),
                list.iter().map(|a| (*a.operator(), None)).collect(),
            ),
            Message::Verdicts(list) => ("verdict batch", list.len(), Vec::new()),
            Message::Dispatch(d) => {
                if d.inputs.is_empty() && d.tasks.is_empty() {
                    return Some(
                        "dispatch without inputs or task definitions (its assignments travel alone or as a batch)"
                            .to_owned(),
                    );
                }
                let len = d.assignments.len();
                if !(1..=MAX_BATCH).contains(&len) {
                    return Some(format!("dispatch of {len} assignments (1 to {MAX_BATCH})"));
                }
                if !d.tasks.is_empty() && d.tasks.len() != len {
                    return Some(format!(
                        "dispatch of {len} assignments with {} task definitions (none, or one each)",
                        d.tasks.len()
                    ));
                }
                ("dispatch", len, parties_of(&d.assignments))
            }
            _ => return None,
        };
        if !(2..=MAX_BATCH).contains(&len) && !matches!(self, Message::Dispatch(_)) {
            return Some(format!(
                "{what} of {len} parts (2 to {MAX_BATCH}; a single one travels alone)"
            ));
        }
        parties.dedup();
        (parties.len() > 1).then(|| {
            format!("{what} mixes operators or matchmakers (each batch is from one to one)")
        })
    }
}
