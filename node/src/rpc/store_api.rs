//! A [`NodeApi`] answered from the store alone: what tests use, and the base the full node
//! wraps (it passes accepted submissions on through [`StoreApi::with_submissions`] to gossip
//! them and feed the matchmaker, and calls [`StoreApi::notify`] when progress changes).

use super::api::{
    ApiError, FailedAttempt, NodeApi, NodeInfo, OperatorInfo, OutputInfo, Quote, ResultInfo,
    StageProgress, SubmitOutcome, SubmitRequest, TaskInfo, TaskQuery, UnmatchedStage,
    WorkflowListing, WorkflowStatus, DEFAULT_LISTED_TASKS, MAX_LISTED_TASKS, MAX_LISTED_WORKFLOWS,
    TASK_STATES,
};
use super::offers;
use crate::metrics::NodeMetrics;
use crate::network::BlobChunk;
use crate::store::{
    OperatorRecord, Store, StoreError, TaskRecord, TaskState, WorkflowRecord, WorkflowState,
};
use proofmesh_matchmaker::operators::OperatorState;
use proofmesh_protocol::messages::Submission;
use proofmesh_protocol::{ContentId, PublicKey, TaskIndex, Workflow, WorkflowId};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc};

/// Store-backed [`NodeApi`].
#[derive(Clone, Debug)]
pub struct StoreApi {
    store: Store,
    owner: PublicKey,
    info: NodeInfo,
    changes: broadcast::Sender<WorkflowId>,
    submissions: Option<mpsc::UnboundedSender<Submission>>,
    metrics: Option<NodeMetrics>,
    /// Whether the store's operator adverts are the market's (see [`StoreApi::blind_to_operators`]).
    sees_operators: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("store task: {e}")))?
}

/// The workflows `store` pruned, most lately pruned first, at most `limit`.
fn pruned_listing(store: &Store, limit: usize) -> Result<Vec<WorkflowListing>, ApiError> {
    let mut pruned = store.tombstones()?;
    pruned.sort_by(|(a_id, a), (b_id, b)| b.pruned_at_ms.cmp(&a.pruned_at_ms).then(a_id.cmp(b_id)));
    Ok(pruned
        .into_iter()
        .take(limit)
        .map(|(id, t)| WorkflowListing {
            id: id.to_hex(),
            name: t.name,
            state: "pruned".into(),
            tasks: u64::from(t.tasks),
            done: t.done,
            accepted_at_ms: t.accepted_at_ms,
            ended: Some(t.state.label().to_owned()),
        })
        .collect())
}

/// Workflow `id` as `store` holds it; an error says whether it was pruned or never known.
fn held(store: &Store, id: WorkflowId) -> Result<WorkflowRecord, ApiError> {
    if let Some(record) = store.workflow(&id)? {
        return Ok(record);
    }
    Err(match store.tombstone(&id)? {
        Some(tombstone) => ApiError::Pruned {
            id,
            tombstone: Box::new(tombstone),
        },
        None => ApiError::UnknownWorkflow(id),
    })
}

impl StoreApi {
    /// Answer from `store`; workflows submitted as files get `owner` as their owner. `info`
    /// supplies the static fields of `pm_nodeInfo`.
    pub fn new(store: Store, owner: PublicKey, info: NodeInfo) -> Self {
        let (changes, _) = broadcast::channel(1024);
        StoreApi {
            store,
            owner,
            info,
            changes,
            submissions: None,
            metrics: None,
            sees_operators: true,
        }
    }

    /// Pass every newly accepted submission to `tx` (after it is durable).
    pub fn with_submissions(mut self, tx: mpsc::UnboundedSender<Submission>) -> Self {
        self.submissions = Some(tx);
        self
    }

    /// Say nothing of stages no operator could run: the store holds no adverts to tell (a node
    /// that only operates does not follow them).
    pub fn blind_to_operators(mut self) -> Self {
        self.sees_operators = false;
        self
    }

    /// The stages of `wf` no operator the store knows could run (none when blind to them).
    pub fn unmatched(&self, wf: &Workflow) -> Result<Vec<UnmatchedStage>, StoreError> {
        if !self.sees_operators {
            return Ok(Vec::new());
        }
        offers::unmatched_in(&self.store, wf, now_ms())
    }

    /// Count submissions in `metrics`.
    pub fn with_metrics(mut self, metrics: NodeMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The store it reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Tell subscribers that workflow `id` changed (call after writing its task states).
    pub fn notify(&self, id: WorkflowId) {
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(id);
    }

    fn count(&self, outcome: &'static str) {
        if let Some(m) = &self.metrics {
            m.submission(outcome);
        }
    }
}

/// Status of a workflow from its record and its written task records; with `operators` (those
/// present), an active workflow's stages with pending tasks none of them could run say why.
pub fn compute_status(
    record: &WorkflowRecord,
    tasks: &[(TaskIndex, TaskRecord)],
    operators: Option<&[OperatorState]>,
) -> WorkflowStatus {
    let wf = &record.submission.workflow;
    let mut stages: Vec<StageProgress> = Vec::new();
    let mut stage_of_name: HashMap<&str, usize> = HashMap::new();
    let mut stage_of_task = Vec::with_capacity(wf.tasks.len());
    for task in &wf.tasks {
        let name = offers::stage_of(&task.name);
        let idx = *stage_of_name.entry(name).or_insert_with(|| {
            stages.push(StageProgress {
                name: name.to_owned(),
                total: 0,
                pending: 0,
                running: 0,
                done: 0,
                failed: 0,
                failed_attempts: 0,
                unmatched: None,
            });
            stages.len() - 1
        });
        stages[idx].total += 1;
        stages[idx].pending += 1; // moved below for tasks with a record
        stage_of_task.push(idx);
    }
    let mut done = 0;
    for (i, rec) in tasks {
        let Some(&s) = stage_of_task.get(*i as usize) else {
            continue;
        };
        let stage = &mut stages[s];
        stage.failed_attempts += rec.attempts.iter().filter(|a| a.cause.is_some()).count() as u64;
        match rec.state {
            TaskState::Pending | TaskState::Ready => continue,
            TaskState::Assigned { .. } | TaskState::Running { .. } => stage.running += 1,
            TaskState::Done { .. } => {
                stage.done += 1;
                done += 1;
            }
            TaskState::Failed => stage.failed += 1,
        }
        stage.pending -= 1;
    }
    if let Some(operators) = operators.filter(|_| record.state == WorkflowState::Active) {
        let waiting: Vec<&str> = stages
            .iter()
            .filter(|s| s.pending > 0)
            .map(|s| s.name.as_str())
            .collect();
        let unmatched = offers::unmatched_stages(wf, operators, |s| waiting.contains(&s));
        for u in unmatched {
            if let Some(&i) = stage_of_name.get(u.stage.as_str()) {
                stages[i].unmatched = Some(u.reason);
            }
        }
    }
    let reason = match &record.state {
        WorkflowState::Failed { reason } => Some(reason.clone()),
        _ => None,
    };
    WorkflowStatus {
        id: record.id.to_hex(),
        name: wf.name.clone(),
        state: record.state.label().to_owned(),
        reason,
        submitted_at_ms: record.submission.submitted_at_ms,
        deadline_ms: wf.deadline_ms,
        tasks: wf.tasks.len() as u64,
        done,
        stages,
        waiting_for: None,
    }
}

/// What an active workflow of an ordered stream waits for once its every task is done: the
/// earliest sequence before it of its stream still active here (the matchmaker, and every
/// node's view, finalize a stream in sequence order). `None` for any other workflow. Reads the
/// active workflows' submissions, so only for that case.
fn waits_for(store: &Store, wf: &Workflow) -> Result<Option<String>, StoreError> {
    let Some(order) = &wf.ordering else {
        return Ok(None);
    };
    let mut earliest: Option<(u64, WorkflowId)> = None;
    for w in store.workflow_summaries()? {
        if w.state != WorkflowState::Active {
            continue;
        }
        let Some(other) = store.workflow(&w.id)? else {
            continue;
        };
        if let Some(o) = &other.submission.workflow.ordering {
            if o.stream == order.stream
                && o.sequence < order.sequence
                && earliest.is_none_or(|(q, _)| o.sequence < q)
            {
                earliest = Some((o.sequence, w.id));
            }
        }
    }
    Ok(earliest.map(|(q, id)| {
        format!(
            "sequence {q} of stream {} (workflow {}) to finalize first",
            order.stream,
            id.to_hex()
        )
    }))
}

/// One task as `pm_tasks` shows it; `accepted` is its accepted result's attempt and operator.
fn task_info(
    task: TaskIndex,
    name: &str,
    rec: TaskRecord,
    accepted: Option<(u32, PublicKey)>,
) -> TaskInfo {
    let (attempt, operator) = match (&rec.state, accepted) {
        (
            TaskState::Assigned { attempt, operator } | TaskState::Running { attempt, operator },
            _,
        ) => (Some(*attempt), Some(operator.to_hex())),
        (TaskState::Done { .. }, Some((attempt, operator))) => {
            (Some(attempt), Some(operator.to_hex()))
        }
        _ => (None, None),
    };
    TaskInfo {
        task,
        name: name.to_owned(),
        state: rec.state.label().to_owned(),
        attempt,
        operator,
        failed_attempts: rec
            .attempts
            .into_iter()
            .filter_map(|a| {
                Some(FailedAttempt {
                    attempt: a.attempt,
                    operator: a.operator.to_hex(),
                    cause: a.cause?,
                })
            })
            .collect(),
    }
}

/// Operator record as the RPC shows it.
pub fn operator_info(key: &PublicKey, record: &OperatorRecord) -> OperatorInfo {
    let advert = record.advert.as_ref();
    OperatorInfo {
        key: key.to_hex(),
        eth_address: advert
            .and_then(|a| a.eth_address)
            .map(|a| format!("0x{}", hex::encode(a))),
        cpu: advert.map(|a| a.capacity.cpu).unwrap_or(0),
        memory_mb: advert.map(|a| a.capacity.memory_mb).unwrap_or(0),
        gpus: advert.map(|a| a.capacity.gpus.len() as u32).unwrap_or(0),
        programs: advert
            .map(|a| {
                a.programs
                    .iter()
                    .map(|p| format!("{}@{}", p.name, p.version))
                    .collect()
            })
            .unwrap_or_default(),
        price_wei: advert.map(|a| a.price_wei).unwrap_or(0).to_string(),
        completed: record.stats.completed,
        failed: record.stats.failed,
        slashed: record.stats.slashed,
        last_seen_ms: record.stats.last_seen_ms,
    }
}

#[async_trait::async_trait]
impl NodeApi for StoreApi {
    async fn submit(&self, request: SubmitRequest) -> Result<SubmitOutcome, ApiError> {
        let submission = match request {
            SubmitRequest::Workflow(workflow) => Submission {
                workflow,
                owner: self.owner,
                owner_eth: None,
                escrow: None,
                submitted_at_ms: now_ms(),
            },
            SubmitRequest::Submission(s) => *s,
        };
        let api = self.clone();
        let tasks = submission.workflow.tasks.len() as u64;
        let sub = submission.clone();
        let result = blocking(move || {
            let (id, new) = api.store.put_workflow(&sub, now_ms())?;
            Ok((id, new, api.unmatched(&sub.workflow)?))
        })
        .await;
        let (id, new, unmatched) = match result {
            Ok(v) => v,
            Err(e) => {
                self.count("error");
                return Err(e);
            }
        };
        self.count(if new { "accepted" } else { "duplicate" });
        if new {
            if let Some(tx) = &self.submissions {
                if tx.send(submission).is_err() {
                    tracing::warn!(workflow = %id.short(), "submission accepted but the node's submission consumer has stopped");
                }
            }
            self.notify(id);
        }
        Ok(SubmitOutcome {
            id: id.to_hex(),
            new,
            tasks,
            unmatched,
        })
    }

    async fn status(&self, id: WorkflowId) -> Result<WorkflowStatus, ApiError> {
        let (store, sees_operators) = (self.store.clone(), self.sees_operators);
        blocking(move || {
            let record = held(&store, id)?;
            let tasks = store.tasks(&id)?;
            let operators = match record.state {
                WorkflowState::Active if sees_operators => {
                    Some(offers::present_operators(&store.operators()?, now_ms()))
                }
                _ => None,
            };
            let mut status = compute_status(&record, &tasks, operators.as_deref());
            if record.state == WorkflowState::Active && status.done == status.tasks {
                status.waiting_for = waits_for(&store, &record.submission.workflow)?;
            }
            Ok(status)
        })
        .await
    }

    fn changes(&self) -> broadcast::Receiver<WorkflowId> {
        self.changes.subscribe()
    }

    async fn result(&self, id: WorkflowId) -> Result<ResultInfo, ApiError> {
        let store = self.store.clone();
        blocking(move || {
            let record = held(&store, id)?;
            let wf = &record.submission.workflow;
            let mut has_dependent = vec![false; wf.tasks.len()];
            for task in &wf.tasks {
                for &d in &task.deps {
                    if let Some(slot) = has_dependent.get_mut(d as usize) {
                        *slot = true;
                    }
                }
            }
            let mut outputs = Vec::new();
            for (i, result) in store.results(&id)? {
                if has_dependent.get(i as usize).copied().unwrap_or(true) {
                    continue;
                }
                let r = &result.result;
                outputs.push(OutputInfo {
                    task: i,
                    name: wf
                        .tasks
                        .get(i as usize)
                        .map(|t| t.name.clone())
                        .unwrap_or_default(),
                    output: r.output.to_hex(),
                    output_bytes: r.output_bytes,
                    operator: r.operator.to_hex(),
                    available: store.has_blob(&r.output)?,
                });
            }
            let reason = match &record.state {
                WorkflowState::Failed { reason } => Some(reason.clone()),
                _ => None,
            };
            Ok(ResultInfo {
                id: id.to_hex(),
                state: record.state.label().to_owned(),
                reason,
                outputs,
            })
        })
        .await
    }

    async fn blob(
        &self,
        id: ContentId,
        offset: u64,
        max_len: usize,
    ) -> Result<BlobChunk, ApiError> {
        let store = self.store.clone();
        blocking(move || {
            store
                .blob_chunk(&id, offset, max_len)?
                .ok_or(ApiError::UnknownBlob(id))
        })
        .await
    }

    async fn operators(&self) -> Result<Vec<OperatorInfo>, ApiError> {
        let store = self.store.clone();
        blocking(move || {
            Ok(store
                .operators()?
                .iter()
                .map(|(k, r)| operator_info(k, r))
                .collect())
        })
        .await
    }

    async fn quote(&self, workflow: Workflow) -> Result<Quote, ApiError> {
        if !self.sees_operators {
            return Err(ApiError::Invalid(
                "this node only operates and follows no operator adverts: ask a gateway or a \
                 matchmaker for a quote"
                    .into(),
            ));
        }
        let store = self.store.clone();
        blocking(move || {
            let ops = offers::present_operators(&store.operators()?, now_ms());
            Ok(offers::quote(&workflow, &ops))
        })
        .await
    }

    async fn tasks(&self, id: WorkflowId, query: TaskQuery) -> Result<Vec<TaskInfo>, ApiError> {
        if let Some(s) = query.state.as_deref().filter(|s| !TASK_STATES.contains(s)) {
            return Err(ApiError::Invalid(format!(
                "state: {s:?} is not a task state ({})",
                TASK_STATES.join(", ")
            )));
        }
        let limit = query.limit.unwrap_or(DEFAULT_LISTED_TASKS);
        if limit > MAX_LISTED_TASKS {
            return Err(ApiError::Invalid(format!(
                "limit: {limit} is more than the {MAX_LISTED_TASKS} tasks one answer lists (page \
                 with from)"
            )));
        }
        let store = self.store.clone();
        blocking(move || {
            let record = held(&store, id)?;
            let wf = &record.submission.workflow;
            let mut records: HashMap<TaskIndex, TaskRecord> =
                store.tasks(&id)?.into_iter().collect();
            let accepted: HashMap<TaskIndex, (u32, PublicKey)> = store
                .results(&id)?
                .into_iter()
                .map(|(i, r)| (i, (r.result.attempt, r.result.operator)))
                .collect();
            let mut out = Vec::new();
            for (i, task) in wf.tasks.iter().enumerate().skip(query.from as usize) {
                if out.len() == limit {
                    break;
                }
                let i = i as TaskIndex;
                let rec = records.remove(&i).unwrap_or_default();
                let info = task_info(i, &task.name, rec, accepted.get(&i).copied());
                if query.state.as_deref().is_some_and(|s| s != info.state)
                    || (query.retried && info.failed_attempts.is_empty())
                {
                    continue;
                }
                out.push(info);
            }
            Ok(out)
        })
        .await
    }

    async fn workflows(
        &self,
        state: Option<String>,
        limit: usize,
    ) -> Result<Vec<WorkflowListing>, ApiError> {
        const STATES: [&str; 4] = ["active", "completed", "failed", "pruned"];
        if let Some(s) = state.as_deref().filter(|s| !STATES.contains(s)) {
            return Err(ApiError::Invalid(format!(
                "state: {s:?} is not a workflow state (active, completed, failed or pruned)"
            )));
        }
        if limit > MAX_LISTED_WORKFLOWS {
            return Err(ApiError::Invalid(format!(
                "limit: {limit} is more than the {MAX_LISTED_WORKFLOWS} workflows one answer lists"
            )));
        }
        let store = self.store.clone();
        if state.as_deref() == Some("pruned") {
            return blocking(move || pruned_listing(&store, limit)).await;
        }
        blocking(move || {
            let mut summaries = store.workflow_summaries()?;
            summaries.retain(|w| state.as_deref().is_none_or(|s| w.state.label() == s));
            summaries.sort_by(|a, b| {
                b.accepted_at_ms
                    .cmp(&a.accepted_at_ms)
                    .then(a.id.cmp(&b.id))
            });
            summaries.truncate(limit);
            let mut out = Vec::with_capacity(summaries.len());
            for w in summaries {
                let Some(record) = store.workflow(&w.id)? else {
                    continue;
                };
                let done = match w.state {
                    WorkflowState::Completed => u64::from(w.tasks),
                    _ => store
                        .tasks(&w.id)?
                        .iter()
                        .filter(|(_, t)| matches!(t.state, TaskState::Done { .. }))
                        .count() as u64,
                };
                out.push(WorkflowListing {
                    id: w.id.to_hex(),
                    name: record.submission.workflow.name,
                    state: w.state.label().to_owned(),
                    tasks: u64::from(w.tasks),
                    done,
                    accepted_at_ms: w.accepted_at_ms,
                    ended: None,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn node_info(&self) -> Result<NodeInfo, ApiError> {
        let store = self.store.clone();
        let mut info = self.info.clone();
        let (workflows, cursor) =
            blocking(move || Ok((store.workflows()?.len() as u64, store.chain_cursor()?))).await?;
        info.workflows = workflows;
        if info.chain_height.is_none() {
            info.chain_height = cursor.map(|c| c.block);
        }
        if info.node_key.is_empty() {
            info.node_key = self.owner.to_hex();
        }
        if info.version.is_empty() {
            info.version = env!("CARGO_PKG_VERSION").to_owned();
        }
        Ok(info)
    }
}
