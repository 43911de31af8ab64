//! The node's durable store, on [redb](https://www.redb.org).
//!
//! Why redb and not sled: redb's file format is stable within a major line (sled's 0.34 format
//! has been "about to change" for years and the crate is effectively unmaintained), redb is
//! actively maintained, pure Rust, and every write transaction is ACID: `commit` fsyncs before it
//! returns (`Durability::Immediate`, the default we keep), so anything a method of [`Store`]
//! has returned `Ok` for survives `kill -9` and power loss. redb 2.6 is the newest line whose
//! MSRV fits the workspace's `rust-version` (1.85).
//!
//! Layout of a data directory:
//! - `store.redb`: every table below.
//! - `blobs/<hex>`: blobs larger than [`INLINE_BLOB_MAX`]. They are written to a temp file,
//!   fsynced, renamed into place and the directory fsynced *before* the index entry is
//!   committed, so an indexed blob always has its complete file. Small blobs (proofs, most
//!   inputs) live inline in redb: one transaction, no file per proof.
//!
//! The API is synchronous (redb is). From async code call it through
//! `tokio::task::spawn_blocking`; [`Store`] is a cheap clone (an `Arc`).
//!
//! Finished workflows are kept for a retention period, then pruned ([`prune`]).

use crate::network::{BlobChunk, BlobProvider};
use proofmesh_protocol::encoding::{self, DecodeError};
use proofmesh_protocol::messages::{OperatorAdvert, SignedResult, Submission};
use proofmesh_protocol::{ContentId, Envelope, PublicKey, TaskIndex, WorkflowId};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Schema version this code writes. Bump it, and add a migration, whenever a table or an
/// encoded record changes shape. Version 2 added [`BLOB_REFS`] (the workflows' inputs indexed on
/// the first open; outputs are indexed by the pruner) and the retention tables: a version-1 binary would take a pruned
/// workflow's gossiped copy for new work, so it must not open a version-2 store.
pub const SCHEMA_VERSION: u32 = 2;

/// Blobs up to this size are stored inside redb; larger ones as files under `blobs/`.
pub const INLINE_BLOB_MAX: usize = 256 * 1024;

/// Most bytes of small blobs a lazy handle holds in memory before a write (see
/// [`Store::put_blob`]); past it, puts write through.
pub const HELD_BLOBS_MAX_BYTES: usize = 16 * 1024 * 1024;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "store.redb";

type Key32 = [u8; 32];

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
/// Workflow id -> encoded [`Submission`] (immutable once written).
const WORKFLOWS: TableDefinition<'_, Key32, &[u8]> = TableDefinition::new("workflows");
/// Workflow id -> encoded [`WorkflowMeta`] (small, rewritten on state changes).
const WORKFLOW_META: TableDefinition<'_, Key32, &[u8]> = TableDefinition::new("workflow_meta");
/// (workflow, task) -> encoded [`TaskRecord`]. A task with no row is pending.
const TASKS: TableDefinition<'_, (Key32, u32), &[u8]> = TableDefinition::new("tasks");
/// (workflow, task) -> encoded accepted [`SignedResult`].
const RESULTS: TableDefinition<'_, (Key32, u32), &[u8]> = TableDefinition::new("results");
/// Blob id -> encoded [`BlobEntry`].
const BLOBS: TableDefinition<'_, Key32, &[u8]> = TableDefinition::new("blobs");
/// The matchmaker's append-only event log.
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
/// The matchmaker's latest snapshot, keyed by the sequence number of the last event it
/// includes (one row): a restart restores it and replays only the events after.
const MATCHMAKER_SNAPSHOT: TableDefinition<'_, u64, &[u8]> =
    TableDefinition::new("matchmaker_snapshot");
/// Operator key -> encoded [`OperatorRecord`].
const OPERATORS: TableDefinition<'_, Key32, &[u8]> = TableDefinition::new("operators");
/// Ordered stream name -> last finalized sequence number.
const STREAMS: TableDefinition<'_, &str, u64> = TableDefinition::new("streams");
/// Content id -> encoded slashing evidence produced by this node's matchmaker.
const EVIDENCE: TableDefinition<'_, Key32, &[u8]> = TableDefinition::new("evidence");

/// Content ids (workflow ids, evidence ids) whose on-chain settlement is done: a workflow paid
/// (or found to need no payment), a piece of evidence reported (or found unusable). What is
/// completed or stored but not here is settled again after a restart.
const CHAIN_DONE: TableDefinition<'_, Key32, u64> = TableDefinition::new("chain_done");
/// Workflows this node's matchmaker failed as the active one (id -> ms): it owes their escrow's
/// release once their accepted work is paid, after a restart too.
const RELEASE_OWED: TableDefinition<'_, Key32, u64> = TableDefinition::new("release_owed");
/// (blob, workflow) -> how many of the workflow's tasks name the blob (reading it as an input, or
/// an accepted result's output; a row goes at zero, so a workflow pruned a slice at a time keeps
/// naming an output its remaining results share). A
/// workflow's outputs are indexed only once the retention policy has seen it finished (off the
/// hot path: a row per accepted result was one more page in every commit of the matchmaker);
/// pruning reads the others' from their results (see [`prune`]).
const BLOB_REFS: TableDefinition<'_, (Key32, Key32), u32> = TableDefinition::new("blob_refs");
/// Workflow id -> when the retention policy first saw it finished (ms): it is kept for the
/// retention period after that.
const FINISHED_AT: TableDefinition<'_, Key32, u64> = TableDefinition::new("finished_at");
/// Workflow id -> encoded [`Tombstone`]: what is left of a pruned workflow, so that its id stays
/// known (a late copy of its submission is not new work) and a question about it is answered.
const PRUNED: TableDefinition<'_, Key32, &[u8]> = TableDefinition::new("pruned");
/// Workflow id -> how far its pruning has come: a pruned workflow's task records and results
/// go a budget at a time, after its tombstone (see [`prune`]).
const PRUNING: TableDefinition<'_, Key32, &[u8]> = TableDefinition::new("pruning");
/// Workflow id -> the first task whose output is not indexed yet, for a finished workflow whose
/// outputs the pruner indexes a budget at a time (see [`prune`]).
const INDEXING: TableDefinition<'_, Key32, u32> = TableDefinition::new("indexing");
/// (workflow, statement id) -> a trusted matchmaker's signed envelope that accepted results of
/// the workflow, as it was signed: kept by a node that relays what matchmakers decided (a
/// gateway), so a matchmaker taking over from one that died can tell that one's decisions
/// from an operator's claim (`SyncUpdate::vouched`). Goes with the workflow's pruning.
const VOUCHES: TableDefinition<'_, (Key32, Key32), &[u8]> = TableDefinition::new("vouches");
mod prune;
pub use prune::{PrunedWorkflow, Pruning, Retention, Tombstone};

const META_SCHEMA: &str = "schema_version";
const META_CHAIN_CURSOR: &str = "chain_cursor";

/// What can go wrong in the store. Messages say which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database was written by a newer proofmesh.
    #[error(
        "the store at {path} has schema version {found}, newer than the {supported} this proofmesh \
         supports: upgrade proofmesh, or point data_dir (--data-dir, PROOFMESH_DATA_DIR) at another directory"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Newest version this code understands.
        supported: u32,
    },
    /// The schema version record is not a version at all.
    #[error("the store at {path} has a corrupt schema version record; it is not a proofmesh store or is damaged")]
    CorruptSchema {
        /// The database file.
        path: PathBuf,
    },
    /// The data directory or a blob file could not be read or written.
    #[error("store I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// redb reported an error (including "database already open" by another process).
    #[error("store database: {0}")]
    Db(Box<redb::Error>),
    /// A record in the database does not decode.
    #[error("corrupt {what} record in the store: {source}")]
    Corrupt {
        /// Which table.
        what: &'static str,
        /// The decode error.
        source: DecodeError,
    },
    /// The matchmaker's snapshot cannot be restored. Its events are gone from the log, so
    /// starting without it would forget work the matchmaker accepted.
    #[error(
        "the matchmaker snapshot in {path} (through event {through}) cannot be restored: {problem}"
    )]
    Snapshot {
        /// The database file.
        path: PathBuf,
        /// The last event it includes.
        through: u64,
        /// What is wrong, and what to do.
        problem: String,
    },
    /// An update named a workflow the store does not hold.
    #[error("unknown workflow {0}")]
    UnknownWorkflow(WorkflowId),
    /// A task index past the end of its workflow.
    #[error("workflow {workflow} has {tasks} tasks; task index {task} does not exist")]
    UnknownTask {
        /// Workflow.
        workflow: WorkflowId,
        /// The bad index.
        task: TaskIndex,
        /// How many tasks the workflow has.
        tasks: usize,
    },
    /// A result for a task that already has a different accepted result.
    #[error("task {task} of workflow {workflow} already has a different accepted result")]
    ConflictingResult {
        /// Workflow.
        workflow: WorkflowId,
        /// Task.
        task: TaskIndex,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Lifecycle of a workflow as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowState {
    /// Accepted, not finished.
    Active,
    /// Every task has an accepted result.
    Completed,
    /// It cannot complete; the reason names the task and every attempt's cause.
    Failed {
        /// Why.
        reason: String,
    },
}

impl WorkflowState {
    /// `active`, `completed` or `failed`.
    pub fn label(&self) -> &'static str {
        match self {
            WorkflowState::Active => "active",
            WorkflowState::Completed => "completed",
            WorkflowState::Failed { .. } => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WorkflowMeta {
    state: WorkflowState,
    accepted_at_ms: u64,
    /// Task count, so task updates need not decode the whole submission.
    tasks: u32,
}

/// What the store knows of a workflow without decoding its submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowSummary {
    /// Its id.
    pub id: WorkflowId,
    /// Its state.
    pub state: WorkflowState,
    /// When this node accepted it (ms since epoch).
    pub accepted_at_ms: u64,
    /// How many tasks it has.
    pub tasks: u32,
}

/// A stored workflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowRecord {
    /// Its id (`submission.workflow.id()`).
    pub id: WorkflowId,
    /// The submission as accepted.
    pub submission: Submission,
    /// Current state.
    pub state: WorkflowState,
    /// When this node durably accepted it (ms since epoch).
    pub accepted_at_ms: u64,
}

/// Where one task stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Some dependency has no accepted result yet.
    Pending,
    /// Every dependency is done; waiting for an operator.
    Ready,
    /// Handed to an operator, not yet confirmed running.
    Assigned {
        /// Attempt number, from 1.
        attempt: u32,
        /// The operator.
        operator: PublicKey,
    },
    /// The operator accepted it: it runs, or waits in the operator's queue for room.
    Running {
        /// Attempt number, from 1.
        attempt: u32,
        /// The operator.
        operator: PublicKey,
    },
    /// An accepted result exists.
    Done {
        /// Content id of the accepted [`SignedResult`].
        result: ContentId,
    },
    /// Attempts exhausted.
    Failed,
}

impl TaskState {
    /// Lower-case name, as in metrics labels and the RPC.
    pub fn label(&self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Ready => "ready",
            TaskState::Assigned { .. } => "assigned",
            TaskState::Running { .. } => "running",
            TaskState::Done { .. } => "done",
            TaskState::Failed => "failed",
        }
    }
}

/// One finished or abandoned attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Who ran it.
    pub operator: PublicKey,
    /// Why it failed (`None` for the attempt that succeeded).
    pub cause: Option<String>,
}

/// A task's state and its attempt history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Current state.
    pub state: TaskState,
    /// Attempts so far, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

impl Default for TaskRecord {
    fn default() -> Self {
        TaskRecord {
            state: TaskState::Pending,
            attempts: Vec::new(),
        }
    }
}

/// Behaviour of an operator as this node observed (or indexed from the chain).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStats {
    /// Tasks completed with an accepted result.
    pub completed: u64,
    /// Attempts that failed (declared, timed out or rejected).
    pub failed: u64,
    /// Times slashed.
    pub slashed: u64,
    /// Last advert or heartbeat (ms since epoch).
    pub last_seen_ms: u64,
}

/// An operator: its latest advert and its stats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecord {
    /// Latest advert, if one was seen (stats can arrive from the chain first).
    pub advert: Option<OperatorAdvert>,
    /// Counters.
    pub stats: OperatorStats,
}

/// The chain indexer's position: the last block it processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCursor {
    /// Block number.
    pub block: u64,
    /// Block hash, to detect a reorg of that block on restart.
    pub hash: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum BlobEntry {
    Inline(Vec<u8>),
    File { len: u64 },
}

/// The durable store. Clone it freely; all clones share one database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    mode: Mode,
    /// Writes join the open batch transaction (see [`Store::batched`]).
    batched: bool,
}

/// How a handle's commits reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// fsync before `commit` returns.
    Immediate,
    /// No fsync; the owner calls [`Store::sync_if_needed`] before announcing anything.
    Deferred,
    /// No fsync; made durable by the next sync, whenever that is (derived, rebuildable state).
    Lazy,
}

struct Inner {
    db: Database,
    dir: PathBuf,
    blob_dir: PathBuf,
    tmp_counter: AtomicU64,
    /// Deferred commits not yet synced.
    unsynced: AtomicBool,
    /// Lazy commits not yet synced.
    lazy_unsynced: AtomicBool,
    /// Deferred write transactions begun so far (see [`Store::deferred_writes`]).
    deferred_writes: AtomicU64,
    /// The batch transaction batched handles write through, while one is open.
    batch: Mutex<Option<redb::WriteTransaction>>,
    /// Small blobs put through a lazy handle and not written yet (see [`Store::put_blob`]).
    held_blobs: Mutex<HeldBlobs>,
    /// Blobs put lately, which pruning leaves alone (see [`prune::RecentPuts`]). Taken around
    /// a put's check and a prune's removal, so that neither sees the other half done.
    recent_puts: Mutex<prune::RecentPuts>,
}

/// Blobs held in memory until the next sync writes them, with their total size.
#[derive(Default)]
struct HeldBlobs {
    blobs: std::collections::HashMap<ContentId, Vec<u8>>,
    bytes: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// How long [`Store::open`] waits for another process to release the database lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn create_waiting_for_lock(
    path: &Path,
    cache_bytes: Option<usize>,
) -> Result<Database, redb::DatabaseError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut builder = Database::builder();
    if let Some(bytes) = cache_bytes {
        builder.set_cache_size(bytes);
    }
    loop {
        match builder.create(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Take `m` even if a panicking thread poisoned it (the store goes on serving).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn dec<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    encoding::decode(bytes).map_err(|source| StoreError::Corrupt { what, source })
}

/// Bring a store written at schema version `from` up to [`SCHEMA_VERSION`], inside the open
/// transaction.
fn migrate(tx: &redb::WriteTransaction, from: u32) -> Result<(), StoreError> {
    if from < 2 {
        // Version 1 kept no blob references: index what every workflow reads. Outputs are
        // indexed by the pruner when it first sees each workflow finished, as in version 2.
        let mut refs = tx.open_table(BLOB_REFS)?;
        for row in tx.open_table(WORKFLOWS)?.iter()? {
            let (k, v) = row?;
            let submission: Submission = dec("workflow", v.value())?;
            for blob in input_blobs(&submission) {
                add_ref(&mut refs, &blob, &k.value())?;
            }
        }
    }
    Ok(())
}

/// One more task of workflow `wf` names `blob` (see [`BLOB_REFS`]).
fn add_ref(
    refs: &mut redb::Table<'_, (Key32, Key32), u32>,
    blob: &ContentId,
    wf: &Key32,
) -> Result<(), StoreError> {
    let n = refs.get((blob.0, *wf))?.map_or(0, |v| v.value());
    refs.insert((blob.0, *wf), n.saturating_add(1))?;
    Ok(())
}

/// One task fewer of workflow `wf` names `blob`; the row goes at zero.
fn drop_ref(
    refs: &mut redb::Table<'_, (Key32, Key32), u32>,
    blob: &ContentId,
    wf: &Key32,
) -> Result<(), StoreError> {
    let n = refs.get((blob.0, *wf))?.map_or(0, |v| v.value());
    if n <= 1 {
        refs.remove((blob.0, *wf))?;
    } else {
        refs.insert((blob.0, *wf), n - 1)?;
    }
    Ok(())
}

/// The blobs a submission's tasks read (each once).
fn input_blobs(submission: &Submission) -> std::collections::BTreeSet<ContentId> {
    submission
        .workflow
        .tasks
        .iter()
        .flat_map(|t| &t.inputs)
        .filter_map(|input| match input {
            proofmesh_protocol::workflow::Input::Blob(id) => Some(*id),
            proofmesh_protocol::workflow::Input::Output(_) => None,
        })
        .collect()
}

/// Files under `blobs/` that no index entry names are garbage: temp files of writes a crash
/// interrupted, a blob whose index entry a crash rolled back, or a pruned blob whose removal a
/// crash cut short. Run at open, before any handle can write.
fn sweep_blob_files(db: &Database, blob_dir: &Path) -> Result<(), StoreError> {
    let Ok(entries) = fs::read_dir(blob_dir) else {
        return Ok(());
    };
    let tx = db.begin_read()?;
    let blobs = tx.open_table(BLOBS)?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let indexed = match name.parse::<ContentId>() {
            Ok(id) => blobs.get(id.0)?.is_some(),
            Err(_) => false,
        };
        if !indexed {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

impl Store {
    /// Open (creating if needed) the store in `dir`. Refuses a database whose schema version is
    /// newer than [`SCHEMA_VERSION`]. Recovers from an unclean shutdown (redb repairs on open).
    ///
    /// A process that was just killed may hold the file lock for a moment while its last
    /// threads exit (a supervisor restarting a crashed node hits this): a locked database is
    /// retried for up to [`LOCK_WAIT`] before the error is returned.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(dir, None)
    }

    /// [`Store::open`] with redb's page cache at most `cache_bytes` (`None`: redb's default,
    /// 1 GiB).
    pub fn open_with_cache(dir: &Path, cache_bytes: Option<usize>) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let blob_dir = dir.join("blobs");
        fs::create_dir_all(&blob_dir).map_err(io_err(&blob_dir))?;
        let path = dir.join(DB_FILE);
        let db = create_waiting_for_lock(&path, cache_bytes)?;
        let tx = db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let found = match meta.get(META_SCHEMA)? {
                Some(v) => {
                    let bytes: [u8; 4] = v
                        .value()
                        .try_into()
                        .map_err(|_| StoreError::CorruptSchema { path: path.clone() })?;
                    Some(u32::from_le_bytes(bytes))
                }
                None => None,
            };
            match found {
                Some(found) if found > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path,
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(SCHEMA_VERSION) => {}
                Some(older) => {
                    migrate(&tx, older)?;
                    meta.insert(META_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())?;
                }
                None => {
                    meta.insert(META_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())?;
                }
            }
            // Create every table so readers never meet a missing one.
            tx.open_table(WORKFLOWS)?;
            tx.open_table(WORKFLOW_META)?;
            tx.open_table(TASKS)?;
            tx.open_table(RESULTS)?;
            tx.open_table(BLOBS)?;
            tx.open_table(EVENTS)?;
            tx.open_table(MATCHMAKER_SNAPSHOT)?;
            tx.open_table(OPERATORS)?;
            tx.open_table(STREAMS)?;
            tx.open_table(CHAIN_DONE)?;
            tx.open_table(RELEASE_OWED)?;
            tx.open_table(EVIDENCE)?;
            tx.open_table(BLOB_REFS)?;
            tx.open_table(FINISHED_AT)?;
            tx.open_table(PRUNED)?;
            tx.open_table(PRUNING)?;
            tx.open_table(INDEXING)?;
            tx.open_table(VOUCHES)?;
        }
        tx.commit()?;
        sweep_blob_files(&db, &blob_dir)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                dir: dir.to_owned(),
                blob_dir,
                tmp_counter: AtomicU64::new(0),
                unsynced: AtomicBool::new(false),
                lazy_unsynced: AtomicBool::new(false),
                deferred_writes: AtomicU64::new(0),
                batch: Mutex::new(None),
                held_blobs: Mutex::new(HeldBlobs::default()),
                recent_puts: Mutex::new(prune::RecentPuts::default()),
            }),
            mode: Mode::Immediate,
            batched: false,
        })
    }

    /// A handle whose commits are visible at once but made durable only by the next
    /// [`Store::sync`] (or any durable commit): group commit for a loop that applies many
    /// messages and then syncs once, before it announces or acknowledges any of them. A crash
    /// before that sync rolls back to the last durable commit, which redb keeps consistent.
    pub fn deferred(&self) -> Store {
        Store {
            inner: self.inner.clone(),
            mode: Mode::Deferred,
            batched: self.batched,
        }
    }

    /// A handle whose writes all go into one open write transaction (begun by the first
    /// write) until [`Store::end_batch`] commits it: a loop that applies many messages pays
    /// one commit per batch instead of one per write, and rewrites each page once. Reads
    /// through this handle see the batch's writes; other handles see them once it ends.
    ///
    /// Only for one task that ends the batch before it ever waits (its writes block every
    /// other writer of the store meanwhile); background work uses [`Store::unbatched`].
    pub fn batched(&self) -> Store {
        Store {
            inner: self.inner.clone(),
            // Batch commits never fsync: an immediate handle becomes a deferred one.
            mode: match self.mode {
                Mode::Immediate => Mode::Deferred,
                mode => mode,
            },
            batched: true,
        }
    }

    /// The same handle without batching, for work off the batching task.
    pub fn unbatched(&self) -> Store {
        Store {
            inner: self.inner.clone(),
            mode: self.mode,
            batched: false,
        }
    }

    fn batch(&self) -> MutexGuard<'_, Option<redb::WriteTransaction>> {
        lock(&self.inner.batch)
    }

    /// Commit the open batch transaction, if any (without fsync: durability still comes
    /// from [`Store::sync`]).
    pub fn end_batch(&self) -> Result<(), StoreError> {
        let tx = self.batch().take();
        if let Some(tx) = tx {
            tx.commit()?;
        }
        Ok(())
    }

    /// End the open batch (if any) and make every commit so far durable with one commit:
    /// the batch transaction itself commits with fsync, instead of committing without and
    /// then syncing an empty transaction (one commit fewer per batch). `Ok(false)` when
    /// nothing waited for a sync (the batch, if any, is committed without one).
    pub fn end_batch_durably(&self) -> Result<bool, StoreError> {
        let Some(mut tx) = self.batch().take() else {
            return self.sync_if_needed();
        };
        if !self.needs_sync() {
            tx.commit()?;
            return Ok(false);
        }
        // Cleared while the write lock is held (by `tx`): as in `sync`.
        self.inner.unsynced.store(false, Ordering::Release);
        self.inner.lazy_unsynced.store(false, Ordering::Release);
        tx.set_durability(redb::Durability::Immediate);
        tx.commit()?;
        Ok(true)
    }

    /// Run `f` in a write transaction: the open batch's (begun if needed) for a batched
    /// handle, else its own, committed at once.
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !self.batched {
            let tx = self.begin_write()?;
            let out = f(&tx)?;
            tx.commit()?;
            return Ok(out);
        }
        let mut batch = self.batch();
        let tx = match batch.take() {
            Some(tx) => {
                self.mark_write();
                tx
            }
            None => self.begin_write()?,
        };
        let out = f(&tx);
        *batch = Some(tx);
        out
    }

    /// A read transaction that sees everything this handle wrote: a batched handle's open
    /// batch is committed first (the batch-aware reads below read through it instead).
    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        if self.batched {
            self.end_batch()?;
        }
        Ok(self.inner.db.begin_read()?)
    }

    /// `Some(f(batch))` when this handle is batched and a batch is open.
    fn in_batch<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        if !self.batched {
            return None;
        }
        let batch = self.batch();
        batch.as_ref().map(f)
    }

    /// A handle for state that may lag on disk (task-state views, operator stats): durable
    /// with the next sync of any handle, and never the reason for one.
    pub fn lazy(&self) -> Store {
        Store {
            inner: self.inner.clone(),
            mode: Mode::Lazy,
            batched: self.batched,
        }
    }

    /// Whether deferred commits wait for a sync.
    pub fn needs_sync(&self) -> bool {
        self.inner.unsynced.load(Ordering::Acquire)
    }

    /// How many deferred write transactions (state that must be durable before it is
    /// announced) any handle has begun: unchanged across some work means that work wrote
    /// nothing that needs a sync.
    pub fn deferred_writes(&self) -> u64 {
        self.inner.deferred_writes.load(Ordering::Relaxed)
    }

    /// Make every commit so far durable (one fsync), whichever handle made it.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.end_batch()?;
        // Cleared before the sync's transaction starts: a writer that sets a flag after this
        // either commits before the sync (covered) or is synced next time.
        self.inner.unsynced.store(false, Ordering::Release);
        self.inner.lazy_unsynced.store(false, Ordering::Release);
        let mut tx = self.inner.db.begin_write()?;
        tx.set_durability(redb::Durability::Immediate);
        // Held blobs are written here, and forgotten only once committed: a reader meanwhile
        // finds them in memory or on disk, never neither.
        let written: Vec<(ContentId, usize, Vec<u8>)> = self
            .held_blobs()
            .blobs
            .iter()
            .map(|(id, bytes)| {
                let entry = encoding::encode(&BlobEntry::Inline(bytes.clone()));
                (*id, bytes.len(), entry)
            })
            .collect();
        if !written.is_empty() {
            let mut table = tx.open_table(BLOBS)?;
            for (id, _, entry) in &written {
                table.insert(id.0, entry.as_slice())?;
            }
        }
        tx.commit()?;
        let mut held = self.held_blobs();
        for (id, len, _) in written {
            if held.blobs.remove(&id).is_some() {
                held.bytes -= len;
            }
        }
        Ok(())
    }

    fn held_blobs(&self) -> MutexGuard<'_, HeldBlobs> {
        lock(&self.inner.held_blobs)
    }

    /// [`Store::sync`] when deferred commits are pending; `Ok(false)` when none were.
    pub fn sync_if_needed(&self) -> Result<bool, StoreError> {
        if !self.needs_sync() {
            return Ok(false);
        }
        self.sync().map(|_| true)
    }

    /// [`Store::sync`] when deferred or lazy commits, or held blobs, are pending (a periodic
    /// flush).
    pub fn flush(&self) -> Result<bool, StoreError> {
        if !self.needs_sync()
            && !self.inner.lazy_unsynced.load(Ordering::Acquire)
            && self.held_blobs().blobs.is_empty()
        {
            return Ok(false);
        }
        self.sync().map(|_| true)
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut tx = self.inner.db.begin_write()?;
        if self.batched || self.mode != Mode::Immediate {
            tx.set_durability(redb::Durability::None);
        }
        self.mark_write();
        Ok(tx)
    }

    // Flagged once the write lock is held, so a concurrent `sync` orders before or after.
    fn mark_write(&self) {
        match self.mode {
            Mode::Immediate => {}
            Mode::Deferred => {
                self.inner.unsynced.store(true, Ordering::Release);
                self.inner.deferred_writes.fetch_add(1, Ordering::Relaxed);
            }
            Mode::Lazy => self.inner.lazy_unsynced.store(true, Ordering::Release),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Schema version recorded in the database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let tx = self.begin_read()?;
        let meta = tx.open_table(META)?;
        let v = meta
            .get(META_SCHEMA)?
            .ok_or_else(|| StoreError::CorruptSchema {
                path: self.db_path(),
            })?;
        let bytes: [u8; 4] = v
            .value()
            .try_into()
            .map_err(|_| StoreError::CorruptSchema {
                path: self.db_path(),
            })?;
        Ok(u32::from_le_bytes(bytes))
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.inner.dir.join(DB_FILE)
    }

    /// Overwrite the schema version (tests of the refusal path, and future migrations).
    #[doc(hidden)]
    pub fn force_schema_version(&self, version: u32) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.open_table(META)?
                .insert(META_SCHEMA, version.to_le_bytes().as_slice())?;
            Ok(())
        })
    }

    // ---- workflows -------------------------------------------------------------------------

    /// Durably accept a submission. Returns its id and whether it was new (a re-submission of
    /// a known workflow changes nothing).
    pub fn put_workflow(
        &self,
        submission: &Submission,
        now_ms: u64,
    ) -> Result<(WorkflowId, bool), StoreError> {
        let id = submission.workflow.id();
        // Known already (gossip and a matchmaker's push both bring it): no write, so nothing
        // for a deferred handle to sync.
        if self.has_workflow(&id)? {
            return Ok((id, false));
        }
        self.write(|tx| {
            let new = {
                let mut wf = tx.open_table(WORKFLOWS)?;
                if wf.get(id.0)?.is_some() {
                    false
                } else {
                    wf.insert(id.0, encoding::encode(submission).as_slice())?;
                    let inputs = input_blobs(submission);
                    if !inputs.is_empty() {
                        let mut refs = tx.open_table(BLOB_REFS)?;
                        for blob in inputs {
                            add_ref(&mut refs, &blob, &id.0)?;
                        }
                    }
                    let tasks = u32::try_from(submission.workflow.tasks.len()).unwrap_or(u32::MAX);
                    let meta = WorkflowMeta {
                        state: WorkflowState::Active,
                        accepted_at_ms: now_ms,
                        tasks,
                    };
                    tx.open_table(WORKFLOW_META)?
                        .insert(id.0, encoding::encode(&meta).as_slice())?;
                    true
                }
            };
            Ok((id, new))
        })
    }

    /// A stored workflow, or `None`.
    pub fn workflow(&self, id: &WorkflowId) -> Result<Option<WorkflowRecord>, StoreError> {
        let tx = self.begin_read()?;
        let Some(sub) = tx.open_table(WORKFLOWS)?.get(id.0)? else {
            return Ok(None);
        };
        let submission: Submission = dec("workflow", sub.value())?;
        let meta = match tx.open_table(WORKFLOW_META)?.get(id.0)? {
            Some(m) => dec::<WorkflowMeta>("workflow state", m.value())?,
            None => WorkflowMeta {
                state: WorkflowState::Active,
                accepted_at_ms: submission.submitted_at_ms,
                tasks: submission.workflow.tasks.len() as u32,
            },
        };
        Ok(Some(WorkflowRecord {
            id: *id,
            submission,
            state: meta.state,
            accepted_at_ms: meta.accepted_at_ms,
        }))
    }

    /// A stored workflow's state alone (no decoding of its submission), or `None`.
    pub fn workflow_state(&self, id: &WorkflowId) -> Result<Option<WorkflowState>, StoreError> {
        let tx = self.begin_read()?;
        if let Some(m) = tx.open_table(WORKFLOW_META)?.get(id.0)? {
            return Ok(Some(
                dec::<WorkflowMeta>("workflow state", m.value())?.state,
            ));
        }
        let known = tx.open_table(WORKFLOWS)?.get(id.0)?.is_some();
        Ok(known.then_some(WorkflowState::Active))
    }

    /// Whether the store holds workflow `id`, or held it and pruned it (a pruned workflow's
    /// id stays known: a late copy of its submission is not new work).
    pub fn has_workflow(&self, id: &WorkflowId) -> Result<bool, StoreError> {
        if let Some(r) = self.in_batch(|tx| {
            Ok(tx.open_table(WORKFLOWS)?.get(id.0)?.is_some()
                || tx.open_table(PRUNED)?.get(id.0)?.is_some())
        }) {
            return r;
        }
        let tx = self.begin_read()?;
        Ok(tx.open_table(WORKFLOWS)?.get(id.0)?.is_some()
            || tx.open_table(PRUNED)?.get(id.0)?.is_some())
    }

    /// Every workflow id with its state.
    pub fn workflows(&self) -> Result<Vec<(WorkflowId, WorkflowState)>, StoreError> {
        Ok(self
            .workflow_summaries()?
            .into_iter()
            .map(|w| (w.id, w.state))
            .collect())
    }

    /// Every workflow's id, state, acceptance time and task count, without decoding any
    /// submission.
    pub fn workflow_summaries(&self) -> Result<Vec<WorkflowSummary>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(WORKFLOW_META)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let meta = dec::<WorkflowMeta>("workflow state", v.value())?;
            out.push(WorkflowSummary {
                id: ContentId(k.value()),
                state: meta.state,
                accepted_at_ms: meta.accepted_at_ms,
                tasks: meta.tasks,
            });
        }
        Ok(out)
    }

    /// Set a workflow's state.
    pub fn set_workflow_state(
        &self,
        id: &WorkflowId,
        state: WorkflowState,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            {
                let mut table = tx.open_table(WORKFLOW_META)?;
                let mut meta: WorkflowMeta = match table.get(id.0)? {
                    Some(m) => dec("workflow state", m.value())?,
                    None => return Err(StoreError::UnknownWorkflow(*id)),
                };
                meta.state = state;
                table.insert(id.0, encoding::encode(&meta).as_slice())?;
            }
            Ok(())
        })
    }

    // ---- tasks -----------------------------------------------------------------------------

    fn task_count(tx: &redb::WriteTransaction, id: &WorkflowId) -> Result<usize, StoreError> {
        Ok(Self::meta(tx, id)?.tasks as usize)
    }

    fn meta(tx: &redb::WriteTransaction, id: &WorkflowId) -> Result<WorkflowMeta, StoreError> {
        let table = tx.open_table(WORKFLOW_META)?;
        let Some(meta) = table.get(id.0)? else {
            return Err(StoreError::UnknownWorkflow(*id));
        };
        dec("workflow state", meta.value())
    }

    /// Read-modify-write one task's record in one transaction; returns the new record.
    pub fn update_task(
        &self,
        id: &WorkflowId,
        task: TaskIndex,
        f: impl FnOnce(&mut TaskRecord),
    ) -> Result<TaskRecord, StoreError> {
        self.write(|tx| {
            let tasks = Self::task_count(tx, id)?;
            if task as usize >= tasks {
                return Err(StoreError::UnknownTask {
                    workflow: *id,
                    task,
                    tasks,
                });
            }
            let record = {
                let mut table = tx.open_table(TASKS)?;
                let mut record = match table.get((id.0, task))? {
                    Some(v) => dec::<TaskRecord>("task", v.value())?,
                    None => TaskRecord::default(),
                };
                f(&mut record);
                table.insert((id.0, task), encoding::encode(&record).as_slice())?;
                record
            };
            Ok(record)
        })
    }

    /// Set one task's state, keeping its attempt history.
    pub fn set_task_state(
        &self,
        id: &WorkflowId,
        task: TaskIndex,
        state: TaskState,
    ) -> Result<(), StoreError> {
        self.update_task(id, task, |r| r.state = state).map(|_| ())
    }

    /// One task's record (`Pending` with no attempts if never written).
    pub fn task(&self, id: &WorkflowId, task: TaskIndex) -> Result<TaskRecord, StoreError> {
        if let Some(r) = self.in_batch(|tx| match tx.open_table(TASKS)?.get((id.0, task))? {
            Some(v) => dec("task", v.value()),
            None => Ok(TaskRecord::default()),
        }) {
            return r;
        }
        let tx = self.begin_read()?;
        match tx.open_table(TASKS)?.get((id.0, task))? {
            Some(v) => dec("task", v.value()),
            None => Ok(TaskRecord::default()),
        }
    }

    /// Every written task record of a workflow, by index (tasks without a row are pending).
    pub fn tasks(&self, id: &WorkflowId) -> Result<Vec<(TaskIndex, TaskRecord)>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(TASKS)?;
        let mut out = Vec::new();
        for row in table.range((id.0, 0)..=(id.0, u32::MAX))? {
            let (k, v) = row?;
            out.push((k.value().1, dec("task", v.value())?));
        }
        Ok(out)
    }

    // ---- results ---------------------------------------------------------------------------

    /// Durably record an accepted result and mark its task done, in one transaction. Returns
    /// the result's content id. Accepting the same result twice is a no-op; a different result
    /// for a task that already has one is refused (a task has at most one accepted result).
    pub fn accept_result(&self, result: &SignedResult) -> Result<ContentId, StoreError> {
        let id = result.result.workflow;
        let task = result.result.task;
        let result_id = ContentId::of_value(result);
        // Outputs are indexed late (see `BLOB_REFS`): pruning must not take this one for
        // unnamed before then.
        lock(&self.inner.recent_puts).note(result.result.output);
        self.write(|tx| {
            let meta = Self::meta(tx, &id)?;
            let tasks = meta.tasks as usize;
            if task as usize >= tasks {
                return Err(StoreError::UnknownTask {
                    workflow: id,
                    task,
                    tasks,
                });
            }
            {
                let mut results = tx.open_table(RESULTS)?;
                if let Some(existing) = results.get((id.0, task))? {
                    if existing.value() == encoding::encode(result).as_slice() {
                        return Ok(result_id);
                    }
                    return Err(StoreError::ConflictingResult { workflow: id, task });
                }
                results.insert((id.0, task), encoding::encode(result).as_slice())?;
                if meta.state != WorkflowState::Active {
                    // A late result of a finished workflow, whose outputs may be indexed (if
                    // not, the indexing counts it again: the blob is only kept longer).
                    add_ref(&mut tx.open_table(BLOB_REFS)?, &result.result.output, &id.0)?;
                }
                let mut table = tx.open_table(TASKS)?;
                let mut record = match table.get((id.0, task))? {
                    Some(v) => dec::<TaskRecord>("task", v.value())?,
                    None => TaskRecord::default(),
                };
                record.state = TaskState::Done { result: result_id };
                let attempt = result.result.attempt;
                if !record.attempts.iter().any(|a| a.attempt == attempt) {
                    record.attempts.push(AttemptRecord {
                        attempt,
                        operator: result.result.operator,
                        cause: None,
                    });
                }
                table.insert((id.0, task), encoding::encode(&record).as_slice())?;
            }
            Ok(result_id)
        })
    }

    /// The accepted result of a task, if any.
    pub fn result(
        &self,
        id: &WorkflowId,
        task: TaskIndex,
    ) -> Result<Option<SignedResult>, StoreError> {
        if let Some(r) = self.in_batch(|tx| match tx.open_table(RESULTS)?.get((id.0, task))? {
            Some(v) => Ok(Some(dec("result", v.value())?)),
            None => Ok(None),
        }) {
            return r;
        }
        let tx = self.begin_read()?;
        match tx.open_table(RESULTS)?.get((id.0, task))? {
            Some(v) => Ok(Some(dec("result", v.value())?)),
            None => Ok(None),
        }
    }

    /// Every accepted result of a workflow, by task index.
    pub fn results(&self, id: &WorkflowId) -> Result<Vec<(TaskIndex, SignedResult)>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(RESULTS)?;
        let mut out = Vec::new();
        for row in table.range((id.0, 0)..=(id.0, u32::MAX))? {
            let (k, v) = row?;
            out.push((k.value().1, dec("result", v.value())?));
        }
        Ok(out)
    }

    /// The accepted results of a workflow for the tasks `wanted` accepts, in task order, as
    /// long as their encoded size fits in `budget` (which is decremented); the flag says some
    /// were left out. Only what is returned is decoded: a catch-up answer to a node that has
    /// most results costs a key scan, not a decode of every result.
    pub fn results_within(
        &self,
        id: &WorkflowId,
        wanted: impl Fn(TaskIndex) -> bool,
        budget: &mut usize,
    ) -> Result<(Vec<SignedResult>, bool), StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(RESULTS)?;
        let mut out = Vec::new();
        for row in table.range((id.0, 0)..=(id.0, u32::MAX))? {
            let (k, v) = row?;
            if !wanted(k.value().1) {
                continue;
            }
            let bytes = v.value();
            if bytes.len() > *budget {
                return Ok((out, true));
            }
            *budget -= bytes.len();
            out.push(dec("result", bytes)?);
        }
        Ok((out, false))
    }

    /// Keep `statement`, a trusted matchmaker's signed envelope accepting results of each of
    /// `workflows`, to relay to a matchmaker that takes them over (see [`VOUCHES`]). Keeping
    /// the same statement again is a no-op.
    pub fn keep_vouch(
        &self,
        workflows: &[WorkflowId],
        statement: &Envelope,
    ) -> Result<(), StoreError> {
        let bytes = statement.to_bytes();
        let id = ContentId::of_bytes(&bytes);
        self.write(|tx| {
            let mut table = tx.open_table(VOUCHES)?;
            for wf in workflows {
                table.insert((wf.0, id.0), bytes.as_slice())?;
            }
            Ok(())
        })
    }

    /// The statements kept for a workflow ([`Store::keep_vouch`]).
    pub fn vouches(&self, id: &WorkflowId) -> Result<Vec<Envelope>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(VOUCHES)?;
        let mut out = Vec::new();
        for row in table.range((id.0, [0; 32])..=(id.0, [u8::MAX; 32]))? {
            out.push(dec("vouch", row?.1.value())?);
        }
        Ok(out)
    }

    // ---- blobs -----------------------------------------------------------------------------

    fn blob_path(&self, id: &ContentId) -> PathBuf {
        self.inner.blob_dir.join(id.to_hex())
    }

    /// Store a blob under its blake3 id and return the id: durably for an immediate handle,
    /// with the next sync for a deferred one. A lazy handle (an operator-only node's copies of
    /// outputs and inputs, whose record is the matchmaker's) holds a small blob in memory until
    /// the next sync (the node flushes every 250 ms): a write transaction of its own per task
    /// output was ~5% of the pipeline's CPU. Reads see held blobs at once.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<ContentId, StoreError> {
        self.put_blob_as(ContentId::of_bytes(bytes), bytes)
    }

    /// [`Store::put_blob`] for bytes already known to hash to `id` (hashed once per put).
    fn put_blob_as(&self, id: ContentId, bytes: &[u8]) -> Result<ContentId, StoreError> {
        let present = {
            // Noted and checked under the lock pruning removes under: a blob put again just as
            // the last workflow naming it is pruned is never found present and then removed
            // (the caller names it in a workflow or result next).
            let mut recent = lock(&self.inner.recent_puts);
            recent.note(id);
            if self.mode == Mode::Lazy && bytes.len() <= INLINE_BLOB_MAX {
                let mut held = self.held_blobs();
                if held.bytes + bytes.len() <= HELD_BLOBS_MAX_BYTES {
                    if held.blobs.insert(id, bytes.to_vec()).is_none() {
                        held.bytes += bytes.len();
                    }
                    self.inner.lazy_unsynced.store(true, Ordering::Release);
                    return Ok(id);
                }
            }
            self.has_blob(&id)?
        };
        if present {
            return Ok(id);
        }
        let entry = if bytes.len() <= INLINE_BLOB_MAX {
            BlobEntry::Inline(bytes.to_vec())
        } else {
            self.write_blob_file(&id, bytes)?;
            BlobEntry::File {
                len: bytes.len() as u64,
            }
        };
        self.write(|tx| {
            tx.open_table(BLOBS)?
                .insert(id.0, encoding::encode(&entry).as_slice())?;
            Ok(id)
        })
    }

    /// Store bytes that must hash to `expected` (received from a peer); `Ok(false)` if not.
    pub fn put_blob_expected(
        &self,
        expected: &ContentId,
        bytes: &[u8],
    ) -> Result<bool, StoreError> {
        if ContentId::of_bytes(bytes) != *expected {
            return Ok(false);
        }
        self.put_blob_as(*expected, bytes).map(|_| true)
    }

    // temp file + fsync + rename + fsync(dir): the final name only ever names complete bytes.
    fn write_blob_file(&self, id: &ContentId, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.blob_path(id);
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp =
            self.inner
                .blob_dir
                .join(format!("{}.tmp-{}-{n}", id.to_hex(), std::process::id()));
        let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        fs::File::open(&self.inner.blob_dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.inner.blob_dir))?;
        Ok(())
    }

    fn blob_entry(&self, id: &ContentId) -> Result<Option<BlobEntry>, StoreError> {
        fn entry(v: Option<redb::AccessGuard<'_, &[u8]>>) -> Result<Option<BlobEntry>, StoreError> {
            v.map(|v| dec("blob", v.value())).transpose()
        }
        if let Some(bytes) = self.held_blobs().blobs.get(id) {
            return Ok(Some(BlobEntry::Inline(bytes.clone())));
        }
        // Through the open batch, if any: it may hold the blob, and ending it early for a
        // read would cost a commit.
        if let Some(r) = self.in_batch(|tx| entry(tx.open_table(BLOBS)?.get(id.0)?)) {
            return r;
        }
        let tx = self.begin_read()?;
        let table = tx.open_table(BLOBS)?;
        entry(table.get(id.0)?)
    }

    /// Bytes of blobs a lazy handle holds in memory, not written yet (see [`Store::put_blob`]).
    pub fn held_blob_bytes(&self) -> usize {
        self.held_blobs().bytes
    }

    /// Whether the store holds blob `id`.
    pub fn has_blob(&self, id: &ContentId) -> Result<bool, StoreError> {
        if self.held_blobs().blobs.contains_key(id) {
            return Ok(true);
        }
        if let Some(r) = self.in_batch(|tx| Ok(tx.open_table(BLOBS)?.get(id.0)?.is_some())) {
            return r;
        }
        let tx = self.begin_read()?;
        Ok(tx.open_table(BLOBS)?.get(id.0)?.is_some())
    }

    /// A whole blob, or `None`.
    pub fn blob(&self, id: &ContentId) -> Result<Option<Vec<u8>>, StoreError> {
        match self.blob_entry(id)? {
            None => Ok(None),
            Some(BlobEntry::Inline(bytes)) => Ok(Some(bytes)),
            Some(BlobEntry::File { .. }) => {
                let path = self.blob_path(id);
                fs::read(&path).map(Some).map_err(io_err(&path))
            }
        }
    }

    /// `[offset, offset + max_len)` of blob `id` (clamped to its end) with its total length.
    pub fn blob_chunk(
        &self,
        id: &ContentId,
        offset: u64,
        max_len: usize,
    ) -> Result<Option<BlobChunk>, StoreError> {
        match self.blob_entry(id)? {
            None => Ok(None),
            Some(BlobEntry::Inline(bytes)) => Ok(Some(crate::network::blob::slice_chunk(
                &bytes, offset, max_len,
            ))),
            Some(BlobEntry::File { len }) => {
                let path = self.blob_path(id);
                let start = offset.min(len);
                let take = (len - start).min(max_len as u64);
                let mut file = fs::File::open(&path).map_err(io_err(&path))?;
                file.seek(SeekFrom::Start(start)).map_err(io_err(&path))?;
                let mut data = Vec::with_capacity(take as usize);
                file.take(take)
                    .read_to_end(&mut data)
                    .map_err(io_err(&path))?;
                Ok(Some(BlobChunk {
                    total_len: len,
                    data,
                }))
            }
        }
    }

    // ---- matchmaker event log --------------------------------------------------------------

    /// Append events in one transaction; returns the sequence numbers they got.
    pub fn append_events(&self, events: &[Vec<u8>]) -> Result<Range<u64>, StoreError> {
        self.write(|tx| {
            let range = {
                let mut table = tx.open_table(EVENTS)?;
                let first = match table.last()? {
                    Some((k, _)) => k.value() + 1,
                    None => 0,
                };
                for (i, event) in events.iter().enumerate() {
                    table.insert(first + i as u64, event.as_slice())?;
                }
                first..first + events.len() as u64
            };
            Ok(range)
        })
    }

    /// Events with sequence number `>= seq`, oldest first, read in batches (each batch is one
    /// consistent snapshot; events appended while iterating are seen).
    pub fn iter_events_from(&self, seq: u64) -> EventIter {
        EventIter {
            store: self.clone(),
            next: seq,
            buffer: std::collections::VecDeque::new(),
            done: false,
        }
    }

    fn read_events(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(EVENTS)?;
        let mut out = Vec::new();
        for row in table.range(from..)?.take(limit) {
            let (k, v) = row?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Sequence number of the last event, if any.
    pub fn last_event_seq(&self) -> Result<Option<u64>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(EVENTS)?;
        let last = table.last()?.map(|(k, _)| k.value());
        Ok(last)
    }

    /// Drop at most `at_most` of the oldest events that the stored matchmaker snapshot
    /// includes, keeping its last one (it keeps the log's sequence numbers growing); returns
    /// how many. The snapshot is read in the same transaction, so a snapshot whose commit
    /// failed never lets its events go. Bounded so that a writer batch stays short: a
    /// snapshot can leave a million events behind it.
    pub fn prune_snapshotted_events(&self, at_most: u64) -> Result<u64, StoreError> {
        self.write(|tx| {
            let Some(through) = tx
                .open_table(MATCHMAKER_SNAPSHOT)?
                .last()?
                .map(|(k, _)| k.value())
            else {
                return Ok(0);
            };
            let mut table = tx.open_table(EVENTS)?;
            let Some(first) = table.first()?.map(|(k, _)| k.value()) else {
                return Ok(0);
            };
            let end = through.min(first.saturating_add(at_most));
            let before = table.len()?;
            table.retain_in(first..end, |_, _| false)?;
            Ok(before - table.len()?)
        })
    }

    /// Replace the matchmaker's snapshot with `snapshot`, which includes every event up to
    /// `through`. The events it includes are dropped later
    /// ([`Self::prune_snapshotted_events`]): a restart replays only those after `through`.
    pub fn save_matchmaker_snapshot(
        &self,
        through: u64,
        snapshot: &[u8],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(MATCHMAKER_SNAPSHOT)?;
            table.retain(|_, _| false)?;
            table.insert(through, snapshot)?;
            Ok(())
        })
    }

    /// The matchmaker's snapshot, if one was saved: the sequence number of the last event it
    /// includes, and its bytes.
    pub fn matchmaker_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(MATCHMAKER_SNAPSHOT)?;
        let last = table.last()?.map(|(k, v)| (k.value(), v.value().to_vec()));
        Ok(last)
    }

    // ---- cursors ---------------------------------------------------------------------------

    /// The chain indexer's cursor.
    pub fn chain_cursor(&self) -> Result<Option<ChainCursor>, StoreError> {
        let tx = self.begin_read()?;
        match tx.open_table(META)?.get(META_CHAIN_CURSOR)? {
            Some(v) => Ok(Some(dec("chain cursor", v.value())?)),
            None => Ok(None),
        }
    }

    /// Durably move the chain indexer's cursor.
    pub fn set_chain_cursor(&self, cursor: ChainCursor) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.open_table(META)?
                .insert(META_CHAIN_CURSOR, encoding::encode(&cursor).as_slice())?;
            Ok(())
        })
    }

    /// Last finalized sequence number of an ordered stream.
    pub fn stream_cursor(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        let tx = self.begin_read()?;
        Ok(tx.open_table(STREAMS)?.get(stream)?.map(|v| v.value()))
    }

    /// Durably record that `stream` has finalized up to `sequence`.
    pub fn set_stream_cursor(&self, stream: &str, sequence: u64) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.open_table(STREAMS)?.insert(stream, sequence)?;
            Ok(())
        })
    }

    // ---- slashing evidence -----------------------------------------------------------------

    /// Durably keep encoded slashing evidence under its content id (idempotent).
    pub fn put_evidence(&self, encoded: &[u8]) -> Result<ContentId, StoreError> {
        let id = ContentId::of_bytes(encoded);
        self.write(|tx| {
            tx.open_table(EVIDENCE)?.insert(id.0, encoded)?;
            Ok(id)
        })
    }

    /// Every piece of encoded slashing evidence, by content id.
    pub fn evidence(&self) -> Result<Vec<(ContentId, Vec<u8>)>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(EVIDENCE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((ContentId(k.value()), v.value().to_vec()));
        }
        Ok(out)
    }

    // ---- on-chain settlement journal ---------------------------------------------------------

    /// Record that `id`'s on-chain settlement is done (at `at_ms`).
    pub fn mark_chain_done(&self, id: &ContentId, at_ms: u64) -> Result<(), StoreError> {
        self.mark_in(CHAIN_DONE, id, at_ms)
    }

    /// Every content id whose on-chain settlement is recorded as done (one read, for scans).
    pub fn chain_done_ids(&self) -> Result<std::collections::HashSet<ContentId>, StoreError> {
        self.ids_in(CHAIN_DONE)
    }

    /// Record that this node's matchmaker failed `workflow` as the active one, so it releases
    /// the escrow once the work is paid (written with the failure's batch).
    pub fn mark_release_owed(&self, workflow: &WorkflowId, at_ms: u64) -> Result<(), StoreError> {
        self.mark_in(RELEASE_OWED, workflow, at_ms)
    }

    /// Every workflow recorded by [`Self::mark_release_owed`].
    pub fn release_owed(&self) -> Result<std::collections::HashSet<WorkflowId>, StoreError> {
        self.ids_in(RELEASE_OWED)
    }

    /// Record `id` (at `at_ms`) in a journal table of ids.
    fn mark_in(
        &self,
        table: TableDefinition<'_, Key32, u64>,
        id: &ContentId,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.open_table(table)?.insert(id.0, at_ms)?;
            Ok(())
        })
    }

    /// Every id in a journal table of ids (one read).
    fn ids_in(
        &self,
        table: TableDefinition<'_, Key32, u64>,
    ) -> Result<std::collections::HashSet<ContentId>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(table)?;
        let mut out = std::collections::HashSet::new();
        for row in table.iter()? {
            out.insert(ContentId(row?.0.value()));
        }
        Ok(out)
    }

    // ---- operators -------------------------------------------------------------------------

    /// Record an operator's advert, keeping its stats; updates `last_seen_ms`.
    pub fn put_operator_advert(
        &self,
        advert: &OperatorAdvert,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let key = advert.operator;
        self.update_operator(&key, |r| {
            r.advert = Some(advert.clone());
            r.stats.last_seen_ms = r.stats.last_seen_ms.max(now_ms);
        })
        .map(|_| ())
    }

    /// Read-modify-write one operator's record (created empty if unknown).
    pub fn update_operator(
        &self,
        key: &PublicKey,
        f: impl FnOnce(&mut OperatorRecord),
    ) -> Result<OperatorRecord, StoreError> {
        self.write(|tx| {
            let record = {
                let mut table = tx.open_table(OPERATORS)?;
                let mut record = match table.get(key.0)? {
                    Some(v) => dec("operator", v.value())?,
                    None => OperatorRecord {
                        advert: None,
                        stats: OperatorStats::default(),
                    },
                };
                f(&mut record);
                table.insert(key.0, encoding::encode(&record).as_slice())?;
                record
            };
            Ok(record)
        })
    }

    /// One operator.
    pub fn operator(&self, key: &PublicKey) -> Result<Option<OperatorRecord>, StoreError> {
        let tx = self.begin_read()?;
        match tx.open_table(OPERATORS)?.get(key.0)? {
            Some(v) => Ok(Some(dec("operator", v.value())?)),
            None => Ok(None),
        }
    }

    /// Every operator, by key.
    pub fn operators(&self) -> Result<Vec<(PublicKey, OperatorRecord)>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(OPERATORS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((PublicKey(k.value()), dec("operator", v.value())?));
        }
        Ok(out)
    }
}

/// Iterator over the event log; see [`Store::iter_events_from`].
pub struct EventIter {
    store: Store,
    next: u64,
    buffer: std::collections::VecDeque<(u64, Vec<u8>)>,
    done: bool,
}

const EVENT_BATCH: usize = 1024;

impl Iterator for EventIter {
    type Item = Result<(u64, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.done {
            match self.store.read_events(self.next, EVENT_BATCH) {
                Ok(batch) => {
                    if batch.len() < EVENT_BATCH {
                        self.done = true;
                    }
                    self.buffer.extend(batch);
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let (seq, bytes) = self.buffer.pop_front()?;
        self.next = seq + 1;
        Some(Ok((seq, bytes)))
    }
}

/// The network serves blobs straight from the store.
impl BlobProvider for Store {
    fn read_chunk(
        &self,
        id: &ContentId,
        offset: u64,
        max_len: usize,
    ) -> io::Result<Option<BlobChunk>> {
        self.blob_chunk(id, offset, max_len)
            .map_err(io::Error::other)
    }
}
