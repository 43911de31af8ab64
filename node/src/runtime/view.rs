//! Every node's view of every workflow, kept from gossip: submissions, assignments,
//! acceptances, failures and verdicts move tasks through their states in the store, so
//! `status` and progress subscriptions work on any node, whatever its roles.

use super::catch_up::{self, Schedule};
use super::core_loop::Shared;
use super::{Notifier, Progress};
use crate::bounded_set::BoundedSet;
use crate::held::Held;
use crate::store::{AttemptRecord, StoreError, TaskRecord, TaskState, WorkflowState};
use proofmesh_protocol::messages::{
    Acceptance, Assignment, CancelAttempt, OperatorAdvert, SignedResult, Submission, SyncWant,
    TaskFailure, Verdict, WorkflowFailure,
};
use proofmesh_protocol::{ContentId, TaskIndex, Workflow, WorkflowId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Workflows in memory, shared with background tasks (operator attempts, prechecks) so they
/// never decode a large submission from the store again.
#[derive(Clone, Debug, Default)]
pub struct WorkflowCache(Arc<Mutex<HashMap<WorkflowId, Arc<Workflow>>>>);

impl WorkflowCache {
    /// The workflow, if known.
    pub fn get(&self, id: &WorkflowId) -> Option<Arc<Workflow>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn insert(&self, id: WorkflowId, workflow: Arc<Workflow>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, workflow);
    }

    fn remove(&self, id: &WorkflowId) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// An active workflow in memory (a finished one is forgotten: `View::forget`).
struct Tracked {
    total: usize,
    done: usize,
    /// Stream position, for workflows that must finalize in order.
    ordering: Option<(String, u64)>,
    /// When this node first saw the submission (ms).
    received_at: u64,
    /// When to ask a peer about it if nothing new arrives (catch-up sync).
    catch_up: Schedule,
}

/// The in-memory side of the view (the durable side is the store).
pub struct View {
    pub workflows: WorkflowCache,
    tracked: HashMap<WorkflowId, Tracked>,
    /// When each task's result was accepted here (ms): when its dependents became ready.
    accepted_at: HashMap<(WorkflowId, TaskIndex), u64>,
    /// This node follows no verdicts on gossip (it only operates): catch-up is how its view
    /// converges, so the results it does learn (its own, pushed inputs, catch-up answers) do
    /// not reset the catch-up backoff. Otherwise it would ask about every running workflow
    /// every second, and each answer would carry every result since the last.
    polled: bool,
    /// Accepted results of workflows this node does not hold yet, with when they came (ms):
    /// messages from different senders arrive in any order, and a matchmaker that learns a
    /// workflow late (catch-up discovery) may find no live matchmaker left to ask for them.
    /// Taken in once the submission arrives; at most [`MAX_EARLY_RESULTS`], each kept for
    /// [`EARLY_RESULT_TTL_MS`].
    early: Held<WorkflowId, SignedResult>,
    /// Workflows that finished lately. A finished workflow leaves memory (its definition,
    /// progress and acceptance times: a long-running node saw every task ever), and the store
    /// answers for it; a verdict that comes after that is checked against the store for a
    /// conflicting result, not held as early.
    finished: BoundedSet<WorkflowId, RECENTLY_FINISHED>,
}

/// Finished workflows remembered as such (32 bytes each); one that finished before them is
/// taken for unknown by a late verdict, which is then held a while and dropped.
const RECENTLY_FINISHED: usize = 65_536;

/// Most accepted results held for workflows not known yet.
const MAX_EARLY_RESULTS: usize = 4_096;
/// How long such a result waits for its workflow (ms).
const EARLY_RESULT_TTL_MS: u64 = 60_000;

fn log_store_error(what: &str, e: StoreError) {
    tracing::error!(error = %e, "store: {what} failed");
}

fn attempt_of(state: &TaskState) -> u32 {
    match state {
        TaskState::Assigned { attempt, .. } | TaskState::Running { attempt, .. } => *attempt,
        _ => 0,
    }
}

impl View {
    /// Load what the store holds (after a restart): the active workflows, their progress and
    /// results; a finished one is only counted in the gauges, and a completed one without
    /// reading its submission or tasks (all of them are done).
    pub fn load(sh: &Shared) -> Result<View, StoreError> {
        let mut view = View {
            workflows: WorkflowCache::default(),
            tracked: HashMap::new(),
            accepted_at: HashMap::new(),
            polled: false,
            early: Held::new(MAX_EARLY_RESULTS, EARLY_RESULT_TTL_MS),
            finished: BoundedSet::default(),
        };
        sh.metrics
            .workflows_in("pruned", sh.store.tombstone_count()?);
        for summary in sh.store.workflow_summaries()? {
            let (id, state, total) = (summary.id, summary.state, summary.tasks);
            if state == WorkflowState::Completed {
                sh.metrics.workflow_moved(None, state.label());
                sh.metrics.tasks_in("done", u64::from(total));
                view.finished.insert(id);
                continue;
            }
            let Some(record) = sh.store.workflow(&id)? else {
                continue;
            };
            let total = record.submission.workflow.tasks.len();
            let tasks = sh.store.tasks(&id)?;
            let mut counted = 0;
            let mut done = 0;
            let finished = !matches!(state, WorkflowState::Active);
            for (task, rec) in &tasks {
                sh.metrics.task_moved(None, rec.state.label());
                counted += 1;
                if matches!(rec.state, TaskState::Done { .. }) {
                    done += 1;
                    if !finished {
                        view.accepted_at.insert((id, *task), record.accepted_at_ms);
                    }
                }
            }
            for _ in counted..total {
                sh.metrics.task_moved(None, TaskState::Pending.label());
            }
            sh.metrics.workflow_moved(None, state.label());
            if finished {
                view.finished.insert(id);
                continue;
            }
            View::remember(sh, total);
            view.tracked.insert(
                id,
                Tracked {
                    total,
                    done,
                    ordering: stream_position(&record.submission.workflow),
                    received_at: record.accepted_at_ms,
                    // Anything may have happened while this node was down: ask at once.
                    catch_up: Schedule::now(),
                },
            );
            view.workflows
                .insert(id, Arc::new(record.submission.workflow));
        }
        Ok(view)
    }

    /// When `task` became ready as far as this node saw: its workflow arrived and every
    /// dependency's result was accepted.
    pub fn ready_at(&self, id: &WorkflowId, task: TaskIndex) -> Option<u64> {
        let wf = self.workflows.get(id)?;
        let mut at = self.tracked.get(id)?.received_at;
        for dep in &wf.tasks.get(task as usize)?.deps {
            at = at.max(*self.accepted_at.get(&(*id, *dep))?);
        }
        Some(at)
    }

    /// Active workflows due for a catch-up question (quiet for a while, or loaded after a
    /// restart), each with a bitmap of the tasks this node has; they count as asked.
    pub fn catch_up_wants(&mut self, now: u64) -> Vec<SyncWant> {
        let mut wants = Vec::new();
        for (id, t) in &mut self.tracked {
            if wants.len() == catch_up::MAX_WANTS {
                break;
            }
            if !t.catch_up.due(now) {
                continue;
            }
            t.catch_up.asked(now);
            let accepted = &self.accepted_at;
            let have = (0..t.total as u32).filter(|task| accepted.contains_key(&(*id, *task)));
            wants.push(SyncWant {
                workflow: *id,
                have: SyncWant::bitmap(have),
                results: !self.polled,
            });
        }
        wants
    }

    /// Converge by catch-up alone: see [`View::polled`](View).
    pub fn set_polled(&mut self, polled: bool) {
        self.polled = polled;
    }

    /// Whether this view converges by catch-up alone and asks for outcomes, not results.
    pub fn is_polled(&self) -> bool {
        self.polled
    }

    /// A peer had more on `id` than fit one reply: ask again at the next opportunity.
    pub fn catch_up_soon(&mut self, id: &WorkflowId) {
        if let Some(t) = self.tracked.get_mut(id) {
            t.catch_up = Schedule::now();
        }
    }

    /// Workflows this node shows active (for discovery), at most `max`.
    pub fn active_ids(&self, max: usize) -> Vec<WorkflowId> {
        self.tracked.keys().copied().take(max).collect()
    }

    /// Whether this node shows `id` active.
    pub fn tracks(&self, id: &WorkflowId) -> bool {
        self.tracked.contains_key(id)
    }

    /// Tasks of `id` with an accepted result here.
    pub fn done(&self, id: &WorkflowId) -> usize {
        self.tracked.get(id).map_or(0, |t| t.done)
    }

    /// A submission. `None` if the workflow is invalid (dropped), else whether it was new.
    pub fn submission(
        &mut self,
        sh: &Shared,
        progress: &Notifier,
        s: Cow<'_, Submission>,
        local: bool,
        now: u64,
    ) -> Option<bool> {
        if let Err(e) = s.workflow.validate() {
            tracing::warn!(error = %e, "dropping an invalid workflow submission");
            return None;
        }
        // Once per workflow. One this node accepted (its RPC) is durable before anything
        // about it is announced. One received is written through `sh.store`: durable on a
        // full node, a lazy copy on a node that only operates (`runtime::copies_only`), so
        // 32 operators' first assignments of a workflow do not queue 32 fsyncs on one disk.
        let store = if local {
            sh.store.deferred()
        } else {
            sh.store.clone()
        };
        let (id, new) = match store.put_workflow(&s, now) {
            Ok(r) => r,
            Err(e) => {
                log_store_error("storing a submission", e);
                return None;
            }
        };
        if new {
            let total = s.workflow.tasks.len();
            View::remember(sh, total);
            self.tracked.insert(
                id,
                Tracked {
                    total,
                    done: 0,
                    ordering: stream_position(&s.workflow),
                    received_at: now,
                    catch_up: Schedule::quiet_from(now),
                },
            );
            tracing::info!(workflow = %id.short(), name = %s.workflow.name, tasks = total, "workflow accepted");
            self.workflows.insert(id, Arc::new(s.into_owned().workflow));
            sh.metrics.workflow_moved(None, "active");
            for _ in 0..total {
                sh.metrics.task_moved(None, TaskState::Pending.label());
            }
            progress.send(Progress::Workflow {
                workflow: id,
                state: WorkflowState::Active,
            });
            for result in self.early.take(&id, now) {
                self.accepted(sh, progress, &result, now);
            }
        }
        Some(new)
    }

    /// An operator advert.
    pub fn advert(&mut self, sh: &Shared, a: &OperatorAdvert, now: u64) {
        if let Err(e) = sh.store.lazy().put_operator_advert(a, now) {
            log_store_error("storing an operator advert", e);
        }
    }

    /// Update one task; `f` returns false to leave it unchanged.
    fn update(
        &mut self,
        sh: &Shared,
        progress: &Notifier,
        id: &WorkflowId,
        task: TaskIndex,
        f: impl FnOnce(&mut TaskRecord) -> bool,
    ) {
        if !self.tracked.contains_key(id) {
            return;
        }
        let mut before = None;
        let mut changed = false;
        // Task states are a view, rebuilt from gossip: they reach the disk with the next sync.
        let result = sh.store.lazy().update_task(id, task, |r| {
            before = Some(r.state.label());
            changed = f(r);
        });
        match result {
            Ok(record) if changed => {
                sh.metrics.task_moved(before, record.state.label());
                progress.send(Progress::Task {
                    workflow: *id,
                    task,
                    state: record.state,
                });
            }
            Ok(_) => {}
            Err(e) => log_store_error("updating a task", e),
        }
    }

    /// An assignment seen (ours or gossiped).
    pub fn assignment(&mut self, sh: &Shared, progress: &Notifier, a: &Assignment) {
        let (attempt, operator) = (a.attempt, a.operator);
        self.update(sh, progress, &a.workflow, a.task, |r| {
            if matches!(r.state, TaskState::Done { .. } | TaskState::Failed)
                || attempt_of(&r.state) > attempt
            {
                return false;
            }
            if attempt_of(&r.state) == attempt && matches!(r.state, TaskState::Running { .. }) {
                return false; // the acceptance overtook the assignment
            }
            r.state = TaskState::Assigned { attempt, operator };
            true
        });
    }

    /// An operator accepted an attempt.
    pub fn acceptance(&mut self, sh: &Shared, progress: &Notifier, a: &Acceptance) {
        let (attempt, operator) = (a.attempt, a.operator);
        self.update(sh, progress, &a.workflow, a.task, |r| {
            if matches!(r.state, TaskState::Done { .. } | TaskState::Failed)
                || attempt_of(&r.state) > attempt
            {
                return false;
            }
            r.state = TaskState::Running { attempt, operator };
            true
        });
    }

    /// An operator declared a failure.
    pub fn failure(&mut self, sh: &Shared, progress: &Notifier, f: &TaskFailure) {
        let ended = AttemptRecord {
            attempt: f.attempt,
            operator: f.operator,
            // Worded as the matchmaker words it (`operator refused: …`), as the other causes are.
            cause: Some(proofmesh_matchmaker::AttemptCause::Declared(f.cause.clone()).to_string()),
        };
        self.attempt_ended(sh, progress, &f.workflow, f.task, ended);
        let _ = sh
            .store
            .lazy()
            .update_operator(&f.operator, |o| o.stats.failed += 1);
    }

    /// A matchmaker called an attempt back: it timed out, its operator went down, another
    /// matchmaker's attempt replaced it, or its workflow ended. Recorded with the reason, so the
    /// status counts it among the failed attempts and `pm_tasks` says why (before, only declared
    /// failures and rejected results were, and a task retried after a timeout showed none).
    pub fn cancelled(&mut self, sh: &Shared, progress: &Notifier, c: &CancelAttempt) {
        let ended = AttemptRecord {
            attempt: c.attempt,
            operator: c.operator,
            cause: Some(c.reason.clone()),
        };
        self.attempt_ended(sh, progress, &c.workflow, c.task, ended);
    }

    /// Record an attempt that ended without an accepted result (once per attempt: the first
    /// cause heard is kept, except that a later one replaces the presumption that its operator
    /// went down); a task whose current attempt it was is ready again.
    fn attempt_ended(
        &mut self,
        sh: &Shared,
        progress: &Notifier,
        workflow: &WorkflowId,
        task: TaskIndex,
        ended: AttemptRecord,
    ) {
        self.update(sh, progress, workflow, task, |r| {
            if let Some(known) = r.attempts.iter_mut().find(|x| x.attempt == ended.attempt) {
                // A specific cause (the operator's own declaration, a verdict on its late
                // result) outweighs the matchmaker's presumption that it went down: an operator
                // that stops hands its attempts back as its connections close, and either may
                // be heard first.
                let down = proofmesh_matchmaker::AttemptCause::OperatorDown.to_string();
                let presumed = known.cause.as_deref() == Some(down.as_str());
                if presumed && ended.operator == known.operator && ended.cause.is_some() {
                    known.cause = ended.cause;
                    return true;
                }
                return false;
            }
            if attempt_of(&r.state) == ended.attempt && !matches!(r.state, TaskState::Done { .. }) {
                r.state = TaskState::Ready;
            }
            r.attempts.push(ended);
            true
        });
    }

    /// A matchmaker's verdict.
    pub fn verdict(&mut self, sh: &Shared, progress: &Notifier, v: &Verdict, now: u64) {
        match v {
            Verdict::Accepted(result) => self.accepted(sh, progress, result, now),
            Verdict::Rejected { result, reason } => {
                let r = &result.result;
                let (attempt, operator) = (r.attempt, r.operator);
                let ended = AttemptRecord {
                    attempt,
                    operator,
                    cause: Some(format!("invalid result: {reason}")),
                };
                self.attempt_ended(sh, progress, &r.workflow, r.task, ended);
                let _ = sh
                    .store
                    .lazy()
                    .update_operator(&operator, |o| o.stats.failed += 1);
            }
        }
    }

    fn accepted(&mut self, sh: &Shared, progress: &Notifier, result: &SignedResult, now: u64) {
        let r = &result.result;
        let key = (r.workflow, r.task);
        let Some(tracked) = self.tracked.get_mut(&r.workflow) else {
            if self.finished.contains(&r.workflow) {
                already_accepted(sh, result);
            } else {
                self.early.hold(r.workflow, now, result.clone());
            }
            return;
        };
        if self.accepted_at.contains_key(&key) {
            already_accepted(sh, result);
            return;
        }
        if sh.verified_results.verify(result).is_err() {
            tracing::warn!(
                task = r.task,
                "dropping an accepted verdict whose result signature does not verify"
            );
            return;
        }
        let before = sh
            .store
            .task(&r.workflow, r.task)
            .map(|t| t.state.label())
            .ok();
        match sh.store.accept_result(result) {
            Ok(result_id) => {
                self.accepted_at.insert(key, now);
                tracked.done += 1;
                if !self.polled {
                    tracked.catch_up = Schedule::quiet_from(now);
                }
                sh.metrics.task_moved(before, "done");
                progress.send(Progress::Task {
                    workflow: r.workflow,
                    task: r.task,
                    state: TaskState::Done { result: result_id },
                });
                // Stats are derived: lazy, like the failure counters.
                let _ = sh
                    .store
                    .lazy()
                    .update_operator(&r.operator, |o| o.stats.completed += 1);
                if tracked.done == tracked.total {
                    self.finish_in_order(sh, progress, r.workflow);
                }
                fetch_output(sh, result);
            }
            Err(StoreError::ConflictingResult { .. }) => {
                sh.metrics.conflicting_results.inc();
                tracing::error!(workflow = %r.workflow.short(), task = r.task, "a second, different result was accepted for a task");
            }
            Err(e) => log_store_error("accepting a result", e),
        }
    }

    /// A matchmaker declared the workflow failed.
    pub fn workflow_failed(&mut self, sh: &Shared, progress: &Notifier, f: &WorkflowFailure) {
        let Some(tracked) = self.tracked.get(&f.workflow) else {
            return;
        };
        let stream = tracked.ordering.clone();
        self.set_state(
            sh,
            progress,
            &f.workflow,
            WorkflowState::Failed {
                reason: f.reason.clone(),
            },
        );
        self.forget(sh, &f.workflow);
        // A failed sequence no longer holds the ones after it.
        if let Some((stream, seq)) = stream {
            self.release_successors(sh, progress, &stream, seq);
        }
    }

    /// Mark a workflow whose every task is done completed, unless it belongs to a stream and
    /// an earlier sequence this node knows of is still open: then it waits, and completing (or
    /// failing) that earlier one releases it. This is the matchmaker's own finalization rule
    /// (`matchmaker::engine::finalize`), applied to the same gossip, so every node reports a
    /// stream's workflows completed in sequence order.
    fn finish_in_order(&mut self, sh: &Shared, progress: &Notifier, id: WorkflowId) {
        let Some(tracked) = self.tracked.get(&id) else {
            return;
        };
        if tracked.done < tracked.total {
            return;
        }
        let Some((stream, seq)) = tracked.ordering.clone() else {
            self.mark_completed(sh, progress, &id);
            return;
        };
        if self.open_before(&stream, seq) {
            return;
        }
        self.mark_completed(sh, progress, &id);
        self.release_successors(sh, progress, &stream, seq);
    }

    /// Whether a workflow of `stream` before `seq` is known and not yet finished.
    fn open_before(&self, stream: &str, seq: u64) -> bool {
        self.tracked
            .values()
            .any(|t| matches!(&t.ordering, Some((s, q)) if s == stream && *q < seq))
    }

    /// Complete, in sequence order, the workflows of `stream` after `seq` that were only
    /// waiting for earlier sequences.
    fn release_successors(&mut self, sh: &Shared, progress: &Notifier, stream: &str, seq: u64) {
        let mut waiting: Vec<(u64, WorkflowId)> = self
            .tracked
            .iter()
            .filter_map(|(id, t)| match &t.ordering {
                Some((s, q)) if s == stream && *q > seq => Some((*q, *id)),
                _ => None,
            })
            .collect();
        waiting.sort();
        for (q, id) in waiting {
            let t = &self.tracked[&id];
            if t.done < t.total || self.open_before(stream, q) {
                break;
            }
            self.mark_completed(sh, progress, &id);
        }
    }

    fn mark_completed(&mut self, sh: &Shared, progress: &Notifier, id: &WorkflowId) {
        self.set_state(sh, progress, id, WorkflowState::Completed);
        self.forget(sh, id);
    }

    /// Count a workflow whose state is now kept in memory.
    fn remember(sh: &Shared, total: usize) {
        sh.metrics.view_workflows.inc();
        sh.metrics.view_tasks.inc_by(total as i64);
    }

    /// A workflow finished: drop what memory held of it (the store keeps it all).
    fn forget(&mut self, sh: &Shared, id: &WorkflowId) {
        let Some(t) = self.tracked.remove(id) else {
            return;
        };
        for task in 0..t.total as TaskIndex {
            self.accepted_at.remove(&(*id, task));
        }
        self.workflows.remove(id);
        self.finished.insert(*id);
        sh.metrics.view_workflows.dec();
        sh.metrics.view_tasks.dec_by(t.total as i64);
    }

    /// Mark a workflow completed (from our own matchmaker's decision; idempotent).
    pub fn completed(&mut self, sh: &Shared, progress: &Notifier, id: &WorkflowId) {
        let Some(tracked) = self.tracked.get(id) else {
            return;
        };
        let stream = tracked.ordering.clone();
        self.mark_completed(sh, progress, id);
        if let Some((stream, seq)) = stream {
            self.release_successors(sh, progress, &stream, seq);
        }
    }

    fn set_state(&self, sh: &Shared, progress: &Notifier, id: &WorkflowId, state: WorkflowState) {
        if let Err(e) = sh.store.set_workflow_state(id, state.clone()) {
            log_store_error("setting a workflow state", e);
            return;
        }
        sh.metrics.workflow_moved(Some("active"), state.label());
        tracing::info!(workflow = %id.short(), state = state.label(), "workflow finished");
        progress.send(Progress::Workflow {
            workflow: *id,
            state,
        });
    }
}

/// A verdict for a task that has an accepted result here: the store refuses a different
/// result for the same task, so a second one is only reported.
fn already_accepted(sh: &Shared, result: &SignedResult) {
    let r = &result.result;
    if let Ok(Some(existing)) = sh.store.result(&r.workflow, r.task) {
        if existing != *result {
            sh.metrics.conflicting_results.inc();
            tracing::error!(workflow = %r.workflow.short(), task = r.task, "a second, different result was accepted for a task");
        }
    }
}

fn stream_position(workflow: &Workflow) -> Option<(String, u64)> {
    workflow
        .ordering
        .as_ref()
        .map(|o| (o.stream.clone(), o.sequence))
}

/// Keep a copy of every accepted output, so results stay available (and servable to peers)
/// after the operator that produced them leaves.
fn fetch_output(sh: &Shared, result: &SignedResult) {
    let id: ContentId = result.result.output;
    if matches!(sh.store.has_blob(&id), Ok(true)) {
        return;
    }
    // A copy that can be fetched again: it never forces a sync of its own.
    if let Some(bytes) = sh.client.take_attachment(&id) {
        // It came beside the input push (small, so stored inline, without a file's fsync).
        // Kept here, at once: fetched in the background, this copy raced the task that needs
        // it as an input for the attachment, and the loser fetched it again over the network
        // (two of every five cross-operator inputs in the sleep pipeline).
        if let Err(e) = sh.store.lazy().put_blob_expected(&id, &bytes) {
            tracing::debug!(blob = %id.short(), error = %e, "could not keep an accepted output");
        }
        return;
    }
    let client = sh.client.clone();
    let store = sh.store.lazy().unbatched();
    let from = crate::network::peer_id_of(&result.result.operator);
    sh.spawn(async move {
        let bytes = match client.fetch_blob(from, id).await {
            Ok(b) => b,
            Err(_) => match client.fetch_blob(None, id).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(blob = %id.short(), error = %e, "could not fetch an accepted output");
                    return;
                }
            },
        };
        let _ = tokio::task::spawn_blocking(move || store.put_blob_expected(&id, &bytes)).await;
    });
}
