//! The operator role: accept (or refuse) assignments addressed to this node, run them with the
//! operator crate's executor, and report signed results or declared failures.
//!
//! The acceptance is answered synchronously from the core loop (it is the direct reply to the
//! matchmaker), after the lease is taken or a place in the operator's queue (see
//! `proofmesh_operator::lease`), so an accepted attempt always has its resources or will.
//! Everything slow (waiting for dependency results, fetching inputs, running the program)
//! happens in a background task that reports [`Internal::AttemptDone`].

use super::core_loop::{Internal, Shared};
use super::options::OperatorOptions;
use super::verify::is_proof_task;
use super::view::{View, WorkflowCache};
use crate::chain::EthIdentity;
use crate::network::{peer_id_of, Client};
use crate::store::Store;
use proofmesh_operator::{
    resolve_inputs, Admission, CancellationToken, Operator, Outcome, TaskSpec,
};
use proofmesh_protocol::messages::{
    Acceptance, Answer, Assignment, FailureCause, SignedResult, TaskFailure,
};
use proofmesh_protocol::{ContentId, Envelope, Keypair, Task, TaskIndex, WorkflowId};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// (workflow, task, attempt).
pub type AttemptKey = (WorkflowId, TaskIndex, u32);

/// The program whose proof the on-chain verifier checks.
const FINAL_PROGRAM: &str = "final";

/// How often a waiting attempt looks for its workflow or a dependency's result.
const POLL: Duration = Duration::from_millis(2);

/// The operator role's state.
pub struct OperatorRole {
    pub operator: Operator,
    pub opts: OperatorOptions,
    running: HashMap<AttemptKey, CancellationToken>,
    /// Running attempts admitted without their task's definition: they wait for the workflow.
    awaiting_workflow: HashSet<AttemptKey>,
    handled: HashSet<AttemptKey>,
    /// The signed answer (acceptance or refusal, alone or in a batch) given to each attempt,
    /// repeated if the same attempt is assigned again.
    pub answered: HashMap<AttemptKey, Envelope>,
    /// When each handled attempt may be forgotten
    /// ([`OperatorOptions::remember_attempts_for`] past its deadline), soonest first:
    /// `handled` and `answered` kept one entry per attempt a long-running operator ever took.
    forget_at: BTreeSet<(u64, AttemptKey)>,
    /// The task definitions a trusted matchmaker's dispatch carried, while its assignments
    /// are taken in (see `Dispatch::tasks`).
    pub definitions: HashMap<(WorkflowId, TaskIndex), Task>,
    /// Where attempts run ([`Supervision`]).
    supervision: Supervision,
}

/// A runtime thread of the operator's own for attempts that wait in its queue: waiting for
/// the lease, running the program, noticing it exit and handing the lease to the next queued
/// task. A queue forms when the node is busy, and on the node's shared runtime a program's exit
/// then waited behind whatever network and core work was queued there (at 32 operators a
/// 100 ms task ended 1.2 ms late at the median, 2.9 ms at P90, and the next one started that
/// much later); a thread that mostly sleeps is woken by the kernel at once instead. An attempt
/// that can start at once stays on the runtime that admitted it: it starts without waking
/// another thread, and on a node whose batch needs no sync (one that only operates) in the
/// core step that admitted it, without waiting its turn there ([`Supervision::start`]).
#[derive(Default)]
struct Supervision {
    runtime: Option<tokio::runtime::Runtime>,
    /// The thread could not be started: queued attempts run on the node's runtime.
    unavailable: bool,
    /// Attempts that can start at once, admitted in the core's current batch ([`Self::start`]).
    starting: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl Supervision {
    /// Spawn `attempt` (tracked by `tracker`) on the queue's thread if `queued`; else hold it
    /// for [`Self::start`].
    fn spawn<F>(&mut self, tracker: &tokio_util::task::TaskTracker, queued: bool, attempt: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if queued {
            if let Some(rt) = self.runtime() {
                drop(rt.spawn(tracker.track_future(attempt)));
                return;
            }
        }
        self.starting.push(Box::pin(tracker.track_future(attempt)));
    }

    /// Start the attempts held by [`Self::spawn`] on the caller's runtime. With `here`, each is
    /// first polled once on the calling thread: its program starts now, not when the runtime
    /// gets round to a new task (behind every node's queued work on a busy runtime: at 32
    /// operators, 1.5-2.5 ms after the operator's answer). Only with no store batch open: an
    /// attempt may write through its own transaction, which would wait for the batch forever.
    /// A poll with a no-op waker is sound: the spawned task polls again with its own.
    fn start(&mut self, here: bool) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for mut attempt in self.starting.drain(..) {
            if here && std::future::Future::poll(attempt.as_mut(), &mut cx).is_ready() {
                continue;
            }
            drop(tokio::spawn(attempt));
        }
    }

    fn runtime(&mut self) -> Option<&tokio::runtime::Runtime> {
        if self.runtime.is_none() && !self.unavailable {
            let built = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("proofmesh-queue")
                .enable_all()
                .build();
            match built {
                Ok(rt) => self.runtime = Some(rt),
                Err(e) => {
                    tracing::warn!(error = %e, "no thread for queued attempts; running them on the node's runtime");
                    self.unavailable = true;
                }
            }
        }
        self.runtime.as_ref()
    }
}

impl Drop for Supervision {
    fn drop(&mut self) {
        // Dropped on the core's task, where a runtime may not block on its threads. Attempts
        // still there are dropped with it, which kills their programs' process groups.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl OperatorRole {
    pub fn new(operator: Operator, opts: OperatorOptions) -> Self {
        OperatorRole {
            operator,
            opts,
            running: HashMap::new(),
            awaiting_workflow: HashSet::new(),
            handled: HashSet::new(),
            answered: HashMap::new(),
            forget_at: BTreeSet::new(),
            definitions: HashMap::new(),
            supervision: Supervision::default(),
        }
    }

    /// Attempts running now (for heartbeats).
    pub fn running(&self) -> Vec<AttemptKey> {
        let mut v: Vec<AttemptKey> = self.running.keys().copied().collect();
        v.sort();
        v
    }

    /// Forget the attempts whose deadline passed more than `remember_attempts_for` ago.
    fn forget_old(&mut self, now: u64) {
        while let Some(&(at, key)) = self.forget_at.first() {
            if at > now {
                break;
            }
            self.forget_at.pop_first();
            self.handled.remove(&key);
            self.answered.remove(&key);
        }
    }

    pub fn finished(&mut self, key: &AttemptKey) {
        self.running.remove(key);
        self.awaiting_workflow.remove(key);
    }

    /// Whether a running attempt still waits for a workflow this node does not hold (pushed
    /// with its first assignment; if that push was lost, only discovery brings it).
    pub fn awaits_a_workflow(&self, view: &View) -> bool {
        self.awaiting_workflow
            .iter()
            .any(|(workflow, _, _)| view.workflows.get(workflow).is_none())
    }

    /// A matchmaker cancelled an attempt.
    pub fn cancel(&mut self, key: &AttemptKey, reason: &str) {
        self.awaiting_workflow.remove(key);
        if let Some(token) = self.running.remove(key) {
            tracing::info!(task = key.1, attempt = key.2, %reason, "attempt cancelled by the matchmaker");
            token.cancel();
        }
    }

    /// Start the attempts admitted since the last call; see [`Supervision::start`].
    pub fn start_admitted(&mut self, here: bool) {
        self.supervision.start(here);
    }

    /// The attempts this operator holds: running, queued, or waiting for their workflow.
    pub fn held(&self) -> Vec<AttemptKey> {
        self.running.keys().copied().collect()
    }

    pub fn cancel_all(&mut self) {
        self.awaiting_workflow.clear();
        for (_, token) in self.running.drain() {
            token.cancel();
        }
    }

    /// An assignment addressed to us: the answer (acceptance or refusal), or `None` for one
    /// already handled.
    pub fn on_assignment(
        &mut self,
        sh: &Shared,
        view: &View,
        a: &Assignment,
        now: u64,
    ) -> Option<Answer> {
        let key = (a.workflow, a.task, a.attempt);
        self.forget_old(now);
        if !self.handled.insert(key) {
            return None;
        }
        let refuse = |why: String| {
            tracing::info!(task = a.task, attempt = a.attempt, %why, "refusing an assignment");
            Some(Answer::Refused(TaskFailure {
                workflow: a.workflow,
                task: a.task,
                attempt: a.attempt,
                operator: sh.me,
                cause: FailureCause::Refused(why),
            }))
        };
        let remember = self.opts.remember_attempts_for.as_millis() as u64;
        let forget_at = a.deadline_ms.saturating_add(remember);
        if forget_at <= now {
            // Past the time this operator remembers an attempt for: it may have run it. The
            // refusal is remembered as long, so a copy of it gets the same answer.
            self.forget_at.insert((now.saturating_add(remember), key));
            return refuse("its deadline passed long ago".into());
        }
        self.forget_at.insert((forget_at, key));
        sh.metrics.operator_attempts.set(self.handled.len() as i64);
        // The definition from the workflow when this node holds it, else from the dispatch;
        // with neither, the attempt waits for the workflow.
        let task = match view.workflows.get(&a.workflow) {
            Some(wf) => match wf.tasks.get(a.task as usize) {
                None => return refuse(format!("workflow has no task {}", a.task)),
                Some(task) => Some(task.clone()),
            },
            None => self.definitions.get(&(a.workflow, a.task)).cloned(),
        };
        if let Some(task) = &task {
            if !self.operator.executor().supports(&task.program) {
                return refuse(format!(
                    "program {}@{} is not configured",
                    task.program.name, task.program.version
                ));
            }
        }
        let admission = match self.operator.admit(a) {
            Ok(admission) => admission,
            Err(e) => return refuse(e.to_string()),
        };
        // Not a child of the node's token: a stopping node first hands its attempts back
        // (`Core::hand_back_attempts`), and an attempt cancelled with the node would leave its
        // `running` entry, unannounced, before that. The core cancels them all as it ends.
        let token = CancellationToken::new();
        self.running.insert(key, token.clone());
        if task.is_none() {
            self.awaiting_workflow.insert(key);
        }
        let attempt = Attempt {
            known: task
                .as_ref()
                .map(|task| known_dependencies(sh, task, a))
                .unwrap_or_default(),
            task,
            assignment: a.clone(),
            operator: self.operator.clone(),
            keypair: sh.keypair.clone(),
            store: sh.store.unbatched(),
            client: sh.client.clone(),
            workflows: view.workflows.clone(),
            input_wait: self.opts.input_wait,
            corrupt: self.opts.corrupt_results,
            eth: self.opts.eth.clone(),
        };
        let internal = sh.internal.clone();
        // Tracked but not raced against shutdown here: cancellation reaches the executor
        // through `token`, which kills the program's process group.
        let queued = matches!(admission, Admission::Queued(_));
        self.supervision.spawn(&sh.tracker, queued, async move {
            let outcome = attempt.run(admission, token).await;
            let _ = internal.send(Internal::AttemptDone { key, outcome });
        });
        // With a chain, the acceptance also carries the EIP-712 signature that lets a matchmaker
        // slash this operator on-chain if it misses the deadline.
        let eth = self.opts.eth.as_ref().and_then(|id| {
            id.sign_acceptance(a)
                .inspect_err(|e| tracing::error!(error = %e, "cannot sign the on-chain acceptance"))
                .ok()
        });
        Some(Answer::Accepted(Acceptance {
            assignment: ContentId::of_value(a),
            workflow: a.workflow,
            task: a.task,
            attempt: a.attempt,
            operator: sh.me,
            accepted_at_ms: now,
            eth,
        }))
    }
}

/// The accepted results of `a`'s dependencies this node holds now, read on the core's batched
/// handle: the matchmaker pushes them just ahead of the assignment, so they are usually still
/// in the core's open batch, which other handles see only once it ends. Looked up later by the
/// attempt, they cost a 2 ms poll (2-3 ms with tokio's timer) whenever it looked first.
fn known_dependencies(
    sh: &Shared,
    task: &Task,
    a: &Assignment,
) -> HashMap<TaskIndex, SignedResult> {
    task.deps
        .iter()
        .filter_map(|dep| match sh.store.result(&a.workflow, *dep) {
            Ok(Some(r)) => Some((*dep, r)),
            _ => None,
        })
        .collect()
}

/// One accepted attempt, run in the background.
struct Attempt {
    /// Dependency results held at admission ([`known_dependencies`]); the rest are awaited.
    known: HashMap<TaskIndex, SignedResult>,
    /// The task's definition, once known (at admission, or when its workflow arrives).
    task: Option<Task>,
    assignment: Assignment,
    operator: Operator,
    keypair: Keypair,
    store: Store,
    client: Client,
    workflows: WorkflowCache,
    input_wait: Duration,
    corrupt: bool,
    eth: Option<EthIdentity>,
}

impl Attempt {
    fn failure(&self, cause: FailureCause) -> Outcome {
        let a = &self.assignment;
        Outcome::Failed(TaskFailure {
            workflow: a.workflow,
            task: a.task,
            attempt: a.attempt,
            operator: self.keypair.public(),
            cause,
        })
    }

    /// Inputs are fetched while a queued attempt waits for its lease.
    async fn run(mut self, admission: Admission, cancel: CancellationToken) -> Outcome {
        let prepared = tokio::select! {
            _ = cancel.cancelled() => return Outcome::Cancelled,
            p = self.prepare() => p,
        };
        let spec = match prepared {
            Ok(spec) => spec,
            Err(why) => return self.failure(FailureCause::Input(why)),
        };
        let lease = tokio::select! {
            _ = cancel.cancelled() => return Outcome::Cancelled,
            lease = admission.lease() => lease,
        };
        let is_proof = self.task.as_ref().is_some_and(is_proof_task);
        let is_final = self
            .task
            .as_ref()
            .is_some_and(|t| t.program.name == FINAL_PROGRAM);
        let report = self.operator.run(spec, lease, cancel).await;
        let outcome = match report.outcome {
            Outcome::Completed(result) if self.corrupt && is_proof => match self.corrupted(&result)
            {
                Ok(bad) => Outcome::Completed(bad),
                Err(e) => {
                    tracing::error!(error = %e, "fault injection: cannot corrupt the output");
                    Outcome::Completed(result)
                }
            },
            other => other,
        };
        match outcome {
            Outcome::Completed(result) if is_final => Outcome::Completed(self.claim(result)),
            other => other,
        }
    }

    /// With a chain, a final proof's result carries the operator's EIP-712 claim over the
    /// proof's calldata form: if the on-chain verifier rejects it, that is the slash evidence.
    fn claim(&self, mut result: SignedResult) -> SignedResult {
        let Some(id) = &self.eth else { return result };
        let r = &result.result;
        let signed = self
            .store
            .blob(&r.output)
            .map_err(|e| e.to_string())
            .and_then(|b| b.ok_or_else(|| "output blob missing".to_string()))
            .and_then(|bytes| id.sign_final_claim(&r.workflow, r.task, r.attempt, &bytes));
        match signed {
            Ok(sig) => result.eth_claim = Some(sig),
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the on-chain claim of the final proof")
            }
        }
        result
    }

    /// The task's definition, dependency outputs and input blobs, waiting a little for gossip
    /// to catch up (an assignment can overtake its workflow, or the verdict on a dependency).
    async fn prepare(&mut self) -> Result<TaskSpec, String> {
        let deadline = Instant::now() + self.input_wait;
        let task = match self.task.clone() {
            Some(task) => task,
            None => {
                let a = &self.assignment;
                let workflow = loop {
                    if let Some(wf) = self.workflows.get(&a.workflow) {
                        break wf;
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "workflow {} is unknown to this operator",
                            a.workflow.short()
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                };
                let task = workflow
                    .tasks
                    .get(a.task as usize)
                    .ok_or_else(|| format!("workflow has no task {}", a.task))?
                    .clone();
                self.task = Some(task.clone());
                task
            }
        };
        let a = &self.assignment;
        let mut producers = std::mem::take(&mut self.known);
        for dep in &task.deps {
            if producers.contains_key(dep) {
                continue;
            }
            let result = loop {
                match self.store.result(&a.workflow, *dep) {
                    Ok(Some(r)) => break r,
                    Ok(None) if Instant::now() <= deadline => tokio::time::sleep(POLL).await,
                    Ok(None) => {
                        return Err(format!("dependency {dep} has no accepted result here"))
                    }
                    Err(e) => return Err(e.to_string()),
                }
            };
            producers.insert(*dep, result);
        }
        let inputs = resolve_inputs(&task, |dep| producers.get(&dep).map(|r| r.result.output))
            .map_err(|dep| format!("input from task {dep} is not a dependency with a result"))?;
        for id in &inputs {
            if self.store.has_blob(id).map_err(|e| e.to_string())? {
                continue;
            }
            let from = producers
                .values()
                .find(|r| r.result.output == *id)
                .and_then(|r| peer_id_of(&r.result.operator));
            let bytes = match self.client.fetch_blob(from, *id).await {
                Ok(b) => b,
                Err(first) => self
                    .client
                    .fetch_blob(None, *id)
                    .await
                    .map_err(|e| format!("input {}: {first}; then {e}", id.short()))?,
            };
            if !self
                .store
                .put_blob_expected(id, &bytes)
                .map_err(|e| e.to_string())?
            {
                return Err(format!("input {} does not match its hash", id.short()));
            }
        }
        Ok(TaskSpec::from_task(
            a.workflow, a.task, &task, a.attempt, inputs,
        ))
    }

    /// FAULT INJECTION (see `OperatorOptions::corrupt_results`): flip one byte of the proof,
    /// store it and sign a result for the corrupted bytes, exactly as a cheating operator would.
    fn corrupted(&self, result: &SignedResult) -> Result<SignedResult, String> {
        let mut bytes = self
            .store
            .blob(&result.result.output)
            .map_err(|e| e.to_string())?
            .ok_or("output blob missing")?;
        if bytes.is_empty() {
            return Err("empty output".into());
        }
        // Prefer a flip that still decodes as a proof: a cheater wants its proof to reach the
        // verifier (on-chain too, for a final proof), not to fail parsing.
        let mid = bytes.len() / 2;
        let i = (0..bytes.len())
            .map(|k| (mid + k) % bytes.len())
            .find(|&i| {
                let mut b = bytes.clone();
                b[i] ^= 0x01;
                crate::chain::identity::calldata(&b).is_ok()
            })
            .unwrap_or(mid);
        bytes[i] ^= 0x01;
        let id = self.store.put_blob(&bytes).map_err(|e| e.to_string())?;
        let mut tampered = result.result.clone();
        tampered.output = id;
        tampered.output_bytes = bytes.len() as u64;
        tracing::warn!(
            task = tampered.task,
            "fault injection: signing a corrupted proof"
        );
        Ok(SignedResult::sign(&self.keypair, tampered))
    }
}

#[cfg(test)]
mod tests {
    use super::Supervision;
    use tokio_util::task::TaskTracker;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    /// Queued attempts run on the queue's own thread at once. The others wait for `start`:
    /// started here, on the caller's thread, they go on on its runtime; started elsewhere,
    /// they run there from the first poll. The node's tracker waits for all of them, and
    /// dropping the thread's runtime on a task is allowed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn queued_attempts_run_on_their_own_thread_and_others_start_where_the_core_says() {
        // The test's runtime runs spawned tasks on its worker thread.
        let worker = tokio::spawn(async { thread_name() }).await.unwrap();
        let here = thread_name();
        assert_ne!(here, worker);
        let tracker = TaskTracker::new();
        let mut supervision = Supervision::default();
        let (queued_tx, queued_rx) = tokio::sync::oneshot::channel();
        let (now_tx, mut now_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let (then_tx, then_rx) = tokio::sync::oneshot::channel();
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        supervision.spawn(&tracker, true, async move {
            let _ = queued_tx.send(thread_name());
        });
        supervision.spawn(&tracker, false, async move {
            let _ = now_tx.send(thread_name());
            // Not done in its first poll: the rest runs as a spawned task.
            let _ = go_rx.await;
            let _ = then_tx.send(thread_name());
        });
        // Done in its first poll: not spawned again (polling it twice would panic).
        supervision.spawn(&tracker, false, async move {
            let _ = done_tx.send(());
        });
        tokio::task::yield_now().await;
        assert!(now_rx.try_recv().is_err(), "held until started");
        supervision.start(true);
        // Both started before `start` returned, on this thread, without a yield.
        assert_eq!(now_rx.try_recv().unwrap(), here);
        assert!(done_rx.try_recv().is_ok());
        go_tx.send(()).unwrap();

        // Started elsewhere: the first poll is the runtime's.
        let (later_tx, later_rx) = tokio::sync::oneshot::channel();
        supervision.spawn(&tracker, false, async move {
            let _ = later_tx.send(thread_name());
        });
        supervision.start(false);
        tracker.close();
        tracker.wait().await;
        assert_eq!(queued_rx.await.unwrap(), "proofmesh-queue");
        assert_eq!(then_rx.await.unwrap(), worker);
        assert_eq!(later_rx.await.unwrap(), worker);
        drop(supervision);
    }
}
