//! Retention: a finished workflow (completed, failed or cancelled) is kept for a while after it
//! finished, then pruned. Its submission, task records and accepted results leave the store,
//! and so does every blob that no other workflow names. What stays is a [`Tombstone`]: the id
//! stays known (a late copy of the submission is not taken for new work), and a question about
//! it is answered with what happened and when.
//!
//! A node that settles on-chain keeps a workflow until its settlement is journaled done: paying
//! reads the results, and recording a final proof reads its output.
//!
//! One call removes at most [`Retention::max_tasks`] task records, in one write transaction, so
//! the node's own commits never wait long behind it, however large a workflow;
//! [`Pruning::more`] says more are due.

use super::{add_ref, drop_ref, BlobEntry, Key32, Store, TaskRecord};
use super::{
    dec, input_blobs, lock, StoreError, WorkflowMeta, WorkflowState, BLOBS, BLOB_REFS, CHAIN_DONE,
    FINISHED_AT, INDEXING, PRUNED, PRUNING, RELEASE_OWED, RESULTS, TASKS, VOUCHES, WORKFLOWS,
    WORKFLOW_META,
};
use proofmesh_protocol::encoding;
use proofmesh_protocol::messages::{SignedResult, Submission};
use proofmesh_protocol::{ContentId, WorkflowId};
use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::time::{Duration, Instant};

/// Which finished workflows [`Store::prune_finished`] removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// How long a workflow is kept after it finished (counted from when the policy first saw
    /// it finished).
    pub keep_for: Duration,
    /// Keep a workflow until its on-chain settlement is journaled done
    /// ([`Store::mark_chain_done`]): set on a node that settles.
    pub require_settled: bool,
    /// Most task records one call removes (one workflow at least).
    pub max_tasks: usize,
    /// A blob put within this long is kept even when no workflow names it anymore: it is being
    /// uploaded for, or was produced by, work that is not recorded yet.
    pub blob_grace: Duration,
}

impl Retention {
    /// Keep finished workflows for `keep_for`, with the default limits.
    pub fn keeping(keep_for: Duration) -> Retention {
        Retention {
            keep_for,
            require_settled: false,
            // ~20 ms of the store's one writer a call (bench/node-store-rpc.md).
            max_tasks: 1_000,
            blob_grace: Duration::from_secs(120),
        }
    }
}

/// What is left of a pruned workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Its name, from its file.
    pub name: String,
    /// How it ended.
    pub state: WorkflowState,
    /// How many tasks it had.
    pub tasks: u32,
    /// How many of them had an accepted result.
    pub done: u64,
    /// When this node accepted it (ms since epoch).
    pub accepted_at_ms: u64,
    /// When the retention policy first saw it finished (ms since epoch).
    pub finished_at_ms: u64,
    /// When it was pruned (ms since epoch).
    pub pruned_at_ms: u64,
}

/// Index the outputs of `id`'s results for tasks `from..to` (once it finished; see
/// `BLOB_REFS`).
fn index_outputs(
    tx: &redb::WriteTransaction,
    id: Key32,
    from: u32,
    to: u32,
) -> Result<(), StoreError> {
    let mut outputs = Vec::new();
    for row in tx.open_table(RESULTS)?.range((id, from)..(id, to))? {
        let result: SignedResult = dec("result", row?.1.value())?;
        outputs.push(result.result.output);
    }
    let mut refs = tx.open_table(BLOB_REFS)?;
    for output in outputs {
        add_ref(&mut refs, &output, &id)?;
    }
    Ok(())
}

/// How far the removal of a pruned workflow's task records and results has come (they go a
/// budget at a time, after its tombstone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// The first task index not removed yet.
    next: u32,
    /// How many tasks it had.
    tasks: u32,
}

impl Progress {
    fn of(tasks: u32) -> Progress {
        Progress { next: 0, tasks }
    }

    fn remaining(&self) -> usize {
        self.tasks.saturating_sub(self.next) as usize
    }
}

/// One workflow a call pruned, with what it counted in the node's gauges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrunedWorkflow {
    /// Its id.
    pub id: WorkflowId,
    /// Its state's label (`completed`, `failed`).
    pub state: &'static str,
    /// Its tasks by state label (`pending` for those never written).
    pub tasks: BTreeMap<&'static str, u64>,
}

/// What one call of [`Store::prune_finished`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruning {
    /// The workflows pruned, oldest finished first.
    pub workflows: Vec<PrunedWorkflow>,
    /// Blobs removed (no remaining workflow named them).
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Workflows seen finished whose outputs are now all indexed: stamped, their retention
    /// counting from now.
    pub stamped: usize,
    /// Tasks whose outputs this call indexed.
    pub indexed: usize,
    /// Tasks whose records and results this call removed (of pruned workflows).
    pub removed: usize,
    /// More workflows are due (or to be stamped) than this call's budget took.
    pub more: bool,
}

/// When each blob was last put or named by an accepted result, while pruning runs (it skips
/// those within its grace). Off until [`Store::track_blob_puts`]: a node that never prunes
/// keeps no such map. Compact, ~24 bytes a blob: keyed by the id's first 8 bytes (two ids that
/// share them only keep a blob longer), stamped in whole seconds, and cleared of what is past
/// the grace whenever it has doubled.
#[derive(Debug)]
pub(super) struct RecentPuts {
    on: bool,
    grace: Duration,
    since: Instant,
    at: HashMap<u64, u32>,
    cleared_at_len: usize,
}

impl Default for RecentPuts {
    fn default() -> Self {
        RecentPuts {
            on: false,
            grace: Duration::ZERO,
            since: Instant::now(),
            at: HashMap::new(),
            cleared_at_len: 0,
        }
    }
}

fn short(id: &ContentId) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(first)
}

impl RecentPuts {
    pub(super) fn note(&mut self, id: ContentId) {
        if !self.on {
            return;
        }
        let now = self.secs();
        self.at.insert(short(&id), now);
        if self.at.len() >= 2 * self.cleared_at_len.max(1024) {
            self.clear_past_grace();
        }
    }

    fn secs(&self) -> u32 {
        u32::try_from(self.since.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// Noted within `grace` (rounded up to whole seconds; zero: never).
    fn within(&self, id: &ContentId, grace: Duration) -> bool {
        let grace = grace.as_secs_f64().ceil() as u64;
        self.at
            .get(&short(id))
            .is_some_and(|t| u64::from(self.secs().saturating_sub(*t)) < grace)
    }

    fn clear_past_grace(&mut self) {
        let (now, grace) = (self.secs(), self.grace.as_secs_f64().ceil() as u64);
        self.at
            .retain(|_, t| u64::from(now.saturating_sub(*t)) < grace.max(1));
        self.cleared_at_len = self.at.len();
    }
}

impl Store {
    /// Note every blob put (and output accepted) from now on, so that pruning leaves those
    /// within `grace` alone. Call before the node takes in any work, if it prunes.
    pub fn track_blob_puts(&self, grace: Duration) {
        let mut recent = lock(&self.inner.recent_puts);
        recent.on = true;
        recent.grace = grace;
    }

    /// Prune the finished workflows `retention` no longer keeps (see the module docs), oldest
    /// first, up to its task budget. Workflows seen finished for the first time are stamped
    /// `now_ms` (their retention counts from there) and their outputs indexed, from the same
    /// budget; they are due from the next call on. A workflow larger than the budget is pruned
    /// over several calls: the first leaves its tombstone (it is pruned, as far as anyone
    /// asking can tell) and the rest remove its task records and results, a budget at a time,
    /// after a restart too. Durable when it returns.
    pub fn prune_finished(
        &self,
        retention: &Retention,
        now_ms: u64,
    ) -> Result<Pruning, StoreError> {
        let keep_ms = u64::try_from(retention.keep_for.as_millis()).unwrap_or(u64::MAX);
        // Chosen from a snapshot, without holding the writer.
        let mut unstamped = Vec::new();
        let mut due = Vec::new();
        // Workflows whose outputs are not indexed: active ones, and finished ones not stamped.
        let mut unindexed = Vec::new();
        let tx = self.inner.db.begin_read()?;
        let mut under_way = Vec::new();
        for row in tx.open_table(PRUNING)?.iter()? {
            let (k, v) = row?;
            under_way.push((k.value(), dec::<Progress>("pruning progress", v.value())?));
        }
        let mut indexed_to = HashMap::new();
        for row in tx.open_table(INDEXING)?.iter()? {
            let (k, v) = row?;
            indexed_to.insert(k.value(), v.value());
        }
        {
            let finished_at = tx.open_table(FINISHED_AT)?;
            let done = tx.open_table(CHAIN_DONE)?;
            for row in tx.open_table(WORKFLOW_META)?.iter()? {
                let (k, v) = row?;
                let meta: WorkflowMeta = dec("workflow state", v.value())?;
                if meta.state == WorkflowState::Active {
                    unindexed.push(k.value());
                    continue;
                }
                let Some(finished) = finished_at.get(k.value())?.map(|at| at.value()) else {
                    unstamped.push((k.value(), meta.tasks));
                    unindexed.push(k.value());
                    continue;
                };
                if finished.saturating_add(keep_ms) > now_ms
                    || (retention.require_settled && done.get(k.value())?.is_none())
                {
                    continue;
                }
                due.push((finished, ContentId(k.value()), meta.tasks as usize));
            }
        }
        due.sort();
        let mut out = Pruning::default();
        // One budget of task records per call: the removals under way first, then indexing
        // the outputs of workflows seen finished (stamped once all are indexed), then new ones.
        let max = retention.max_tasks.max(1);
        let mut budget = max;
        for (_, progress) in &under_way {
            budget = budget.saturating_sub(progress.remaining());
        }
        let mut index = Vec::new();
        for (id, tasks) in unstamped {
            if budget == 0 {
                out.more = true;
                break;
            }
            let from = indexed_to.get(&id).copied().unwrap_or(0).min(tasks);
            let to = from
                .saturating_add(budget.min(u32::MAX as usize) as u32)
                .min(tasks);
            budget -= (to - from) as usize;
            index.push((id, from, to, tasks));
        }
        let indexing: usize = index
            .iter()
            .map(|(_, from, to, _)| (to - from) as usize)
            .sum();
        out.indexed = indexing;
        let mut begin = Vec::new();
        for (finished, id, tasks) in due {
            if budget == 0 {
                out.more = true;
                break;
            }
            budget = budget.saturating_sub(tasks);
            begin.push((id, finished));
        }
        if index.is_empty() && begin.is_empty() && under_way.is_empty() {
            return Ok(out);
        }
        // Outputs not indexed (see `BLOB_REFS`) are read from the same snapshot. One accepted
        // since is noted recent (`Store::accept_result`).
        let mut named_unindexed = HashSet::new();
        if !begin.is_empty() || !under_way.is_empty() {
            let results = tx.open_table(RESULTS)?;
            for id in unindexed {
                for row in results.range((id, 0)..=(id, u32::MAX))? {
                    let result: SignedResult = dec("result", row?.1.value())?;
                    named_unindexed.insert(result.result.output);
                }
            }
        }
        // What a beginning workflow counted in the gauges, read here, off the writer: its
        // tasks leave them at once, the rest of it being only removal.
        let mut counted = HashMap::new();
        {
            let tasks = tx.open_table(TASKS)?;
            for (id, _) in &begin {
                let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
                for row in tasks.range((id.0, 0)..=(id.0, u32::MAX))? {
                    let record: TaskRecord = dec("task", row?.1.value())?;
                    *counts.entry(record.state.label()).or_default() += 1;
                }
                counted.insert(*id, counts);
            }
        }
        drop(tx);

        // Durable before any blob file goes: a rolled-back prune must find its blobs.
        let tx = self.inner.db.begin_write()?;
        let mut files = Vec::new();
        // Held from the blobs' check to their files' removal (see `Store::put_blob_as`).
        let mut recent = lock(&self.inner.recent_puts);
        {
            let mut indexing_to = tx.open_table(INDEXING)?;
            for (id, from, to, tasks) in index {
                index_outputs(&tx, id, from, to)?;
                if to < tasks {
                    indexing_to.insert(id, to)?;
                    out.more = true;
                    continue;
                }
                indexing_to.remove(id)?;
                tx.open_table(FINISHED_AT)?.insert(id, now_ms)?;
                out.stamped += 1;
            }
            let mut finished_at = tx.open_table(FINISHED_AT)?;
            let mut workflows = tx.open_table(WORKFLOWS)?;
            let mut metas = tx.open_table(WORKFLOW_META)?;
            let mut tasks = tx.open_table(TASKS)?;
            let mut results = tx.open_table(RESULTS)?;
            let mut refs = tx.open_table(BLOB_REFS)?;
            let mut done = tx.open_table(CHAIN_DONE)?;
            let mut owed = tx.open_table(RELEASE_OWED)?;
            let mut pruned = tx.open_table(PRUNED)?;
            let mut pruning = tx.open_table(PRUNING)?;
            let mut vouches = tx.open_table(VOUCHES)?;
            let mut named = BTreeSet::new();
            for (id, finished) in begin {
                let meta = match metas.get(id.0)? {
                    Some(v) => dec::<WorkflowMeta>("workflow state", v.value())?,
                    None => continue,
                };
                if meta.state == WorkflowState::Active {
                    continue;
                }
                let submission: Option<Submission> = workflows
                    .remove(id.0)?
                    .map(|v| dec("workflow", v.value()))
                    .transpose()?;
                for blob in submission.iter().flat_map(input_blobs) {
                    drop_ref(&mut refs, &blob, &id.0)?;
                    named.insert(blob);
                }
                metas.remove(id.0)?;
                let statements: Vec<Key32> = vouches
                    .range((id.0, [0; 32])..=(id.0, [u8::MAX; 32]))?
                    .map(|row| row.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?;
                for statement in statements {
                    vouches.remove((id.0, statement))?;
                }
                finished_at.remove(id.0)?;
                done.remove(id.0)?;
                owed.remove(id.0)?;
                let mut tasks_counted = counted.remove(&id).unwrap_or_default();
                let tombstone = Tombstone {
                    name: submission.map(|s| s.workflow.name).unwrap_or_default(),
                    state: meta.state.clone(),
                    tasks: meta.tasks,
                    done: tasks_counted.get("done").copied().unwrap_or(0),
                    accepted_at_ms: meta.accepted_at_ms,
                    finished_at_ms: finished,
                    pruned_at_ms: now_ms,
                };
                pruned.insert(id.0, encoding::encode(&tombstone).as_slice())?;
                let written: u64 = tasks_counted.values().sum();
                let never_written = u64::from(meta.tasks).saturating_sub(written);
                if never_written > 0 {
                    *tasks_counted.entry("pending").or_default() += never_written;
                }
                out.workflows.push(PrunedWorkflow {
                    id,
                    state: meta.state.label(),
                    tasks: tasks_counted,
                });
                under_way.push((id.0, Progress::of(meta.tasks)));
            }
            // Task records and results, with what the indexing left of the budget.
            let mut budget = max.saturating_sub(indexing).max(1);
            for (id, mut progress) in under_way {
                if budget == 0 {
                    out.more = true;
                    break;
                }
                let end = progress
                    .next
                    .saturating_add(budget.min(u32::MAX as usize) as u32);
                let end = end.min(progress.tasks);
                budget -= (end - progress.next) as usize;
                out.removed += (end - progress.next) as usize;
                let mut written = Vec::new();
                for row in tasks.range((id, progress.next)..(id, end))? {
                    written.push(row?.0.value().1);
                }
                for task in written {
                    tasks.remove((id, task))?;
                }
                let mut accepted = Vec::new();
                for row in results.range((id, progress.next)..(id, end))? {
                    let (k, v) = row?;
                    let result: SignedResult = dec("result", v.value())?;
                    accepted.push((k.value().1, result.result.output));
                }
                for (task, output) in accepted {
                    results.remove((id, task))?;
                    drop_ref(&mut refs, &output, &id)?;
                    named.insert(output);
                }
                progress.next = end;
                if progress.next >= progress.tasks {
                    pruning.remove(id)?;
                } else {
                    pruning.insert(id, encoding::encode(&progress).as_slice())?;
                    out.more = true;
                }
            }
            let mut blobs = tx.open_table(BLOBS)?;
            for blob in named {
                let still_named = refs
                    .range((blob.0, [0u8; 32])..=(blob.0, [0xffu8; 32]))?
                    .next()
                    .is_some();
                if still_named
                    || named_unindexed.contains(&blob)
                    || recent.within(&blob, retention.blob_grace)
                {
                    continue;
                }
                let entry = blobs
                    .remove(blob.0)?
                    .map(|v| dec::<BlobEntry>("blob", v.value()))
                    .transpose()?;
                match entry {
                    Some(BlobEntry::Inline(bytes)) => {
                        out.blobs += 1;
                        out.blob_bytes += bytes.len() as u64;
                    }
                    Some(BlobEntry::File { len }) => {
                        out.blobs += 1;
                        out.blob_bytes += len;
                        files.push(self.blob_path(&blob));
                    }
                    None => {}
                }
            }
        }
        tx.commit()?;
        // A crash before these leaves files no index names: the next open sweeps them.
        for file in files {
            let _ = fs::remove_file(file);
        }
        recent.clear_past_grace();
        Ok(out)
    }

    /// What is left of workflow `id`, if it was pruned.
    pub fn tombstone(&self, id: &WorkflowId) -> Result<Option<Tombstone>, StoreError> {
        let tx = self.inner.db.begin_read()?;
        let table = tx.open_table(PRUNED)?;
        let found = table.get(id.0)?;
        found.map(|v| dec("tombstone", v.value())).transpose()
    }

    /// Every pruned workflow's tombstone.
    pub fn tombstones(&self) -> Result<Vec<(WorkflowId, Tombstone)>, StoreError> {
        let tx = self.inner.db.begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(PRUNED)?.iter()? {
            let (k, v) = row?;
            out.push((ContentId(k.value()), dec("tombstone", v.value())?));
        }
        Ok(out)
    }

    /// How many workflows were pruned.
    pub fn tombstone_count(&self) -> Result<u64, StoreError> {
        let tx = self.inner.db.begin_read()?;
        Ok(tx.open_table(PRUNED)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{META, META_SCHEMA};
    use super::*;
    use proofmesh_protocol::messages::{Submission, TaskResult};
    use proofmesh_protocol::{spec, Keypair, Resources};

    fn reading(name: &str, input: ContentId) -> Submission {
        let text = format!(
            "name = \"{name}\"\n[[task]]\nid = \"only\"\nprogram = \"noop@1\"\ninputs = [\"{}\"]\n",
            input.to_hex()
        );
        let (workflow, _) = spec::load(&text, spec::Format::Toml).expect("valid");
        Submission {
            workflow,
            owner: Keypair::generate().public(),
            owner_eth: None,
            escrow: None,
            submitted_at_ms: 0,
        }
    }

    /// A version-1 store kept no blob references: opening it builds them from its workflows
    /// and results, so pruning one workflow keeps what another still reads.
    #[test]
    fn a_version_1_store_gets_its_blob_references_built_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, output) = (b"shared input".as_slice(), b"output".as_slice());
        let (a, b) = {
            let store = Store::open(dir.path()).unwrap();
            let input = store.put_blob(shared).unwrap();
            let out = store.put_blob(output).unwrap();
            let (a, b) = (reading("a", input), reading("b", input));
            store.put_workflow(&a, 0).unwrap();
            store.put_workflow(&b, 0).unwrap();
            let operator = Keypair::generate();
            let result = SignedResult::sign(
                &operator,
                TaskResult {
                    workflow: a.workflow.id(),
                    task: 0,
                    attempt: 1,
                    operator: operator.public(),
                    output: out,
                    output_bytes: output.len() as u64,
                    started_ms: 0,
                    finished_ms: 1,
                    resources: Resources::default(),
                    gpus: Vec::new(),
                },
            );
            store.accept_result(&result).unwrap();
            store
                .set_workflow_state(&a.workflow.id(), WorkflowState::Completed)
                .unwrap();
            // As version 1 left it.
            let tx = store.inner.db.begin_write().unwrap();
            tx.delete_table(BLOB_REFS).unwrap();
            tx.open_table(META)
                .unwrap()
                .insert(META_SCHEMA, 1u32.to_le_bytes().as_slice())
                .unwrap();
            tx.commit().unwrap();
            (a, b)
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), 2);
        let retention = Retention {
            blob_grace: Duration::ZERO,
            ..Retention::keeping(Duration::ZERO)
        };
        assert!(store
            .prune_finished(&retention, 5)
            .unwrap()
            .workflows
            .is_empty());
        let pruning = store.prune_finished(&retention, 10).unwrap();
        assert_eq!(pruning.workflows.len(), 1);
        assert_eq!(pruning.workflows[0].id, a.workflow.id());
        assert_eq!(pruning.blobs, 1, "a's output; b still reads the input");
        assert_eq!(
            store.blob(&ContentId::of_bytes(shared)).unwrap().as_deref(),
            Some(shared)
        );
        assert_eq!(store.blob(&ContentId::of_bytes(output)).unwrap(), None);
        assert!(store.workflow(&b.workflow.id()).unwrap().is_some());
    }
}
