//! The matchmaker role: one sans-IO [`Matchmaker`], fed from gossip, with every event appended
//! to the store's event log (with its time and, for results, the precheck verdict) *before* it
//! is handled, so that replaying the log at start rebuilds the exact state after a crash.
//!
//! Membership: matchmakers announce themselves periodically; each tracks who it heard from
//! recently (a closed connection removes a peer at once), and feeds the sorted live set to the
//! engine as `Event::Matchmakers`. Rendezvous hashing over that set picks each workflow's
//! active matchmaker; the others follow from gossiped assignments and verdicts and take over
//! when the active one disappears.

use super::core_loop::{Core, Internal, Shared};
use super::options::MatchmakerOptions;
use super::verify::{self, CheckVerdict, RecordedChecker, Verdicts, VerdictsByWorkflow};
use super::view::View;
use crate::held::Held;
use crate::store::{Store, StoreError};
use proofmesh_matchmaker::{Decision, Event, Matchmaker, Snapshot, SnapshotRef, SNAPSHOT_FORMAT};
use proofmesh_protocol::encoding;
use proofmesh_protocol::messages::{CancelAttempt, SignedResult, Verdict, WorkflowFailure};
use proofmesh_protocol::{Message, PublicKey, Task, TaskIndex, WorkflowId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One entry of the durable event log.
#[derive(Debug, Serialize, Deserialize)]
pub struct LogRecord {
    /// The time the event was handled at (ms since epoch).
    pub now_ms: u64,
    /// The event.
    pub event: Event,
    /// For `Event::Result`: the precheck verdict the checker returned.
    pub check: Option<CheckVerdict>,
}

/// The matchmaker role's state.
pub struct MatchmakerRole {
    engine: Matchmaker,
    verdicts: Verdicts,
    pub opts: MatchmakerOptions,
    /// Other matchmakers and when we last heard from them (ms).
    live: BTreeMap<PublicKey, u64>,
    /// The live set last fed to the engine.
    fed: Vec<PublicKey>,
    /// Keys seen in operator adverts.
    operators: HashSet<PublicKey>,
    /// When each attempt was assigned by us (ms), for the overhead histogram.
    assigned_at: HashMap<AttemptKey, u64>,
    /// Attempts the engine knows (assigned by us or seen assigned on gossip), by workflow; a
    /// finished workflow's are dropped ([`Self::forget_finished`]).
    known: Known,
    /// Acceptances, results and failures that overtook their assignment on gossip (messages
    /// from different senders arrive in any order), with when they arrived; fed right after
    /// the assignment, or dropped after [`EARLY_TTL_MS`].
    early: HashMap<AttemptKey, Vec<(u64, Event, Option<CheckVerdict>)>>,
    /// Operators' results for workflows this node does not hold yet, with when they came:
    /// checked and fed once the submission arrives (a proof cannot be checked without its
    /// task). A matchmaker that learns a workflow late, after the active one died, would
    /// otherwise wait out the deadlines of attempts whose results it had, and slash their
    /// operators for work they delivered. At most [`MAX_UNKNOWN_RESULTS`], for [`EARLY_TTL_MS`].
    unknown: Held<WorkflowId, SignedResult>,
    /// Relayed results (see [`Self::relayed`]) signed by operators whose advert has not
    /// reached this matchmaker yet, with when they came: a matchmaker that has just restarted
    /// learns a workflow by discovery before the operators' adverts, and those results must
    /// not wait for a later catch-up round while the tasks run again. Taken up with the
    /// advert; at most [`MAX_UNKNOWN_RESULTS`], for [`EARLY_TTL_MS`].
    relayed_waiting: Held<PublicKey, SignedResult>,
    /// Where the event log stands against the last snapshot.
    log: LogPosition,
}

/// The event log's position: what a snapshot would include, and what it lets go.
#[derive(Debug, Default)]
struct LogPosition {
    /// Sequence number of the last event logged.
    last: Option<u64>,
    /// Events logged since the last snapshot (or since the start, without one).
    since_snapshot: u64,
    /// Their encoded size.
    bytes_since_snapshot: u64,
    /// The last snapshot's size: the next waits for at least as many bytes of log, so that
    /// writing snapshots costs at most as much as writing the log, however large they grow.
    snapshot_bytes: u64,
    /// The last snapshot includes the events up to this one: a restart replays those after.
    snapshot_through: Option<u64>,
    /// Events the snapshot includes may still be in the log.
    unpruned: bool,
}

/// Layout of a snapshot's own fields ([`RoleSnapshotOut`]); the engine's is
/// [`SNAPSHOT_FORMAT`]. A stored snapshot starts with both, as little-endian `u32`s.
const ROLE_SNAPSHOT_FORMAT: u32 = 1;

/// Most log events dropped per 250 ms tick once a snapshot includes them: one batch's worth
/// of deletions, not a million at once in the writer.
const PRUNE_PER_TICK: u64 = 20_000;

/// What a snapshot holds: the engine's state and what the role rebuilt from the log beside it.
#[derive(Serialize)]
struct RoleSnapshotOut<'a> {
    engine: SnapshotRef<'a>,
    verdicts: VerdictsByWorkflow,
    operators: &'a HashSet<PublicKey>,
    known: &'a Known,
}

/// [`RoleSnapshotOut`], read back.
#[derive(Deserialize)]
struct RoleSnapshotIn {
    engine: Snapshot,
    verdicts: VerdictsByWorkflow,
    operators: HashSet<PublicKey>,
    known: Known,
}

type AttemptKey = (WorkflowId, TaskIndex, u32);

/// Attempts by workflow: (task, attempt number).
type Known = HashMap<WorkflowId, HashSet<(TaskIndex, u32)>>;

fn know(known: &mut Known, (workflow, task, attempt): AttemptKey) {
    known.entry(workflow).or_default().insert((task, attempt));
}

/// How long an event that overtook its assignment (or a result, its workflow) waits for it.
const EARLY_TTL_MS: u64 = 30_000;
/// Most results held for workflows not known yet.
const MAX_UNKNOWN_RESULTS: usize = 4_096;

fn attempt_of(event: &Event) -> Option<AttemptKey> {
    match event {
        Event::Acceptance(a) => Some((a.workflow, a.task, a.attempt)),
        Event::Result(r) => Some((r.result.workflow, r.result.task, r.result.attempt)),
        Event::Failure(f) => Some((f.workflow, f.task, f.attempt)),
        Event::ResultArrived {
            workflow,
            task,
            attempt,
            ..
        } => Some((*workflow, *task, *attempt)),
        _ => None,
    }
}

/// Read a stored snapshot back; the error says what is wrong and what to do.
fn decode_snapshot(bytes: &[u8]) -> Result<RoleSnapshotIn, String> {
    let format = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let (Some(role), Some(engine)) = (format(0), format(4)) else {
        return Err(format!(
            "it is {} bytes, shorter than its header",
            bytes.len()
        ));
    };
    if (role, engine) != (ROLE_SNAPSHOT_FORMAT, SNAPSHOT_FORMAT) {
        return Err(format!(
            "it has format {role}.{engine} and this proofmesh reads {ROLE_SNAPSHOT_FORMAT}.{SNAPSHOT_FORMAT}: \
             run the proofmesh that wrote it, or move this data_dir aside to start the matchmaker afresh"
        ));
    }
    encoding::decode_with_limit(&bytes[8..], encoding::MAX_RECORD_BYTES)
        .map_err(|e| format!("{e} (the file is damaged)"))
}

impl MatchmakerRole {
    /// Rebuild from the latest snapshot and the event log after it (both empty on a fresh
    /// node).
    pub fn start(
        store: &Store,
        mut opts: MatchmakerOptions,
        me: PublicKey,
    ) -> Result<Self, StoreError> {
        opts.config.me = me;
        let mut log = LogPosition::default();
        let restored = match store.matchmaker_snapshot()? {
            Some((through, bytes)) => {
                let snapshot = decode_snapshot(&bytes).map_err(|problem| StoreError::Snapshot {
                    path: store.db_path(),
                    through,
                    problem,
                })?;
                log.last = Some(through);
                log.snapshot_through = Some(through);
                log.snapshot_bytes = bytes.len() as u64;
                log.unpruned = true;
                Some(snapshot)
            }
            None => None,
        };
        let (mut engine, verdicts, mut operators, mut known) = match restored {
            Some(s) => {
                let verdicts = Verdicts::from_workflows(s.verdicts);
                let checker = Box::new(RecordedChecker(verdicts.clone()));
                let engine = Matchmaker::restore(opts.config.clone(), checker, s.engine);
                (engine, verdicts, s.operators, s.known)
            }
            None => {
                let verdicts = Verdicts::default();
                let checker = Box::new(RecordedChecker(verdicts.clone()));
                let engine = Matchmaker::with_checker(opts.config.clone(), checker);
                (engine, verdicts, HashSet::new(), Known::new())
            }
        };
        // Replayed as it is read, one record at a time: the log holds every event since the
        // snapshot (or since the matchmaker first started), and collecting it (and every
        // decision it produced) first held all of it in memory at once. A result's check
        // verdict is recorded with it, so it is known before the engine judges that result.
        let mut decisions = Vec::new();
        let from = log.snapshot_through.map_or(0, |t| t + 1);
        for row in store.iter_events_from(from) {
            let (seq, bytes) = row?;
            log.last = Some(seq);
            log.since_snapshot += 1;
            log.bytes_since_snapshot += bytes.len() as u64;
            let record: LogRecord = match encoding::decode_with_limit(
                &bytes,
                encoding::MAX_RECORD_BYTES,
            ) {
                Ok(r) => r,
                Err(source) => {
                    tracing::error!(seq, error = %source, "undecodable matchmaker log record; skipping it");
                    continue;
                }
            };
            if let (Event::Result(r) | Event::Relayed(r), Some(check)) =
                (&record.event, &record.check)
            {
                verdicts.insert(r, check.clone());
            }
            if let Event::OperatorAdvert(a) = &record.event {
                operators.insert(a.operator);
            }
            if let Event::Assigned(a) = &record.event {
                know(&mut known, (a.workflow, a.task, a.attempt));
            }
            engine.handle_into(record.now_ms, record.event, &mut decisions);
            for d in decisions.drain(..) {
                if let Decision::Assign(a) = d {
                    know(&mut known, (a.workflow, a.task, a.attempt));
                }
            }
        }
        if log.snapshot_through.is_some() || log.since_snapshot > 0 {
            tracing::info!(
                snapshot_through = log.snapshot_through,
                events = log.since_snapshot,
                "matchmaker state rebuilt from its snapshot and event log"
            );
        }
        Ok(MatchmakerRole {
            engine,
            verdicts,
            opts,
            live: BTreeMap::new(),
            fed: Vec::new(),
            operators,
            assigned_at: HashMap::new(),
            known,
            early: HashMap::new(),
            unknown: Held::new(MAX_UNKNOWN_RESULTS, EARLY_TTL_MS),
            relayed_waiting: Held::new(MAX_UNKNOWN_RESULTS, EARLY_TTL_MS),
            log,
        })
    }

    /// Snapshot the state once [`MatchmakerOptions::snapshot_every_events`] events were logged
    /// since the last one (and at least the last snapshot's size in bytes), and drop a bounded
    /// number of the events a snapshot includes. Called on the 250 ms timer, after
    /// [`Self::forget_finished`] (so finished workflows' attempts and verdicts are not in it);
    /// its writes join the core's open batch, committed with it.
    pub fn compact_log(&mut self, sh: &Shared) {
        let log = &self.log;
        if log.since_snapshot >= self.opts.snapshot_every_events.max(1)
            && log.bytes_since_snapshot >= log.snapshot_bytes
        {
            if let Some(through) = self.log.last {
                let started = std::time::Instant::now();
                let bytes = self.encode_snapshot();
                if bytes.len() > encoding::MAX_RECORD_BYTES {
                    // Unreadable at the next start: keep the whole log instead (slower to
                    // replay, but nothing is lost), and try again after as many events.
                    self.log.since_snapshot = 0;
                    self.log.bytes_since_snapshot = 0;
                    tracing::error!(
                        bytes = bytes.len(),
                        limit = encoding::MAX_RECORD_BYTES,
                        "matchmaker snapshot too large to read back; the event log is kept whole"
                    );
                    return;
                }
                match sh.store.save_matchmaker_snapshot(through, &bytes) {
                    Ok(()) => {
                        self.log.since_snapshot = 0;
                        self.log.bytes_since_snapshot = 0;
                        self.log.snapshot_bytes = bytes.len() as u64;
                        self.log.snapshot_through = Some(through);
                        self.log.unpruned = true;
                        sh.metrics.matchmaker_snapshot_bytes.set(bytes.len() as i64);
                        sh.metrics
                            .matchmaker_snapshot_seconds
                            .observe(started.elapsed().as_secs_f64());
                        tracing::debug!(through, bytes = bytes.len(), "matchmaker snapshot saved");
                    }
                    Err(e) => tracing::error!(error = %e, "cannot save the matchmaker snapshot"),
                }
            }
        }
        if self.log.unpruned {
            match sh.store.prune_snapshotted_events(PRUNE_PER_TICK) {
                Ok(n) => self.log.unpruned = n == PRUNE_PER_TICK,
                Err(e) => tracing::error!(error = %e, "cannot drop the snapshot's events"),
            }
        }
    }

    /// The snapshot's bytes: its formats, then its fields. Not canonical (its hash maps encode
    /// in any order), which nothing needs: a snapshot is neither signed nor hashed.
    fn encode_snapshot(&self) -> Vec<u8> {
        let snapshot = RoleSnapshotOut {
            engine: self.engine.snapshot(),
            verdicts: self.verdicts.by_workflow(),
            operators: &self.operators,
            known: &self.known,
        };
        let body = encoding::encode(&snapshot);
        let mut bytes = Vec::with_capacity(8 + body.len());
        bytes.extend_from_slice(&ROLE_SNAPSHOT_FORMAT.to_le_bytes());
        bytes.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    /// When the engine next needs a tick (ms since epoch).
    pub fn next_deadline(&self) -> Option<u64> {
        self.engine.next_deadline()
    }

    /// The live set, including this node.
    pub fn live_set(&self, me: PublicKey) -> Vec<PublicKey> {
        let mut set: Vec<PublicKey> = self
            .live
            .keys()
            .copied()
            .chain(std::iter::once(me))
            .collect();
        set.sort();
        set.dedup();
        set
    }

    /// Feed `event`, holding back attempt events whose assignment has not been seen yet, and
    /// releasing held-back events once it has.
    fn feed(
        &mut self,
        sh: &Shared,
        now: u64,
        event: Event,
        check: Option<CheckVerdict>,
    ) -> Vec<Decision> {
        if let Some(key) = attempt_of(&event) {
            if !self.knows_attempt(&key) {
                self.early.entry(key).or_default().push((now, event, check));
                return Vec::new();
            }
        }
        let assigned = match &event {
            Event::Assigned(a) => Some((a.workflow, a.task, a.attempt)),
            _ => None,
        };
        if let Event::Tick = event {
            self.early.retain(|_, v| {
                v.retain(|(at, _, _)| now.saturating_sub(*at) <= EARLY_TTL_MS);
                !v.is_empty()
            });
            self.unknown.prune(now);
            self.relayed_waiting.prune(now);
        }
        let mut decisions = self.feed_now(sh, now, event, check);
        let mut newly = Vec::new();
        if let Some(key) = assigned {
            newly.push(key);
        }
        for d in &decisions {
            if let Decision::Assign(a) = d {
                newly.push((a.workflow, a.task, a.attempt));
            }
        }
        for key in newly {
            know(&mut self.known, key);
            for (_, held, check) in self.early.remove(&key).unwrap_or_default() {
                decisions.extend(self.feed_now(sh, now, held, check));
            }
        }
        decisions
    }

    /// Log `event` durably, then handle it.
    fn feed_now(
        &mut self,
        sh: &Shared,
        now: u64,
        event: Event,
        check: Option<CheckVerdict>,
    ) -> Vec<Decision> {
        let record = LogRecord {
            now_ms: now,
            event,
            check,
        };
        let bytes = encoding::encode(&record);
        match sh.store.append_events(std::slice::from_ref(&bytes)) {
            Ok(seqs) => {
                self.log.last = seqs.last().or(self.log.last);
                self.log.since_snapshot += 1;
                self.log.bytes_since_snapshot += bytes.len() as u64;
            }
            // Without the log a crash would lose this event; carry on, but loudly.
            Err(e) => tracing::error!(error = %e, "cannot append to the matchmaker event log"),
        }
        sh.metrics.events_logged.inc();
        if !matches!(record.event, Event::Tick | Event::Heartbeat(_)) {
            tracing::debug!(me = ?sh.me, event = ?record.event, "matchmaker event");
        }
        let decisions = self.engine.handle(now, record.event);
        for d in &decisions {
            tracing::debug!(me = ?sh.me, decision = ?d, "matchmaker decision");
        }
        decisions
    }

    /// Whether the engine knows attempt `key`, so news of it can be fed. A finished workflow's
    /// attempts are forgotten here, and the engine takes late news of them (a late result
    /// clears the missed-deadline evidence of an attempt taken away early).
    fn knows_attempt(&self, (workflow, task, attempt): &AttemptKey) -> bool {
        self.known
            .get(workflow)
            .is_some_and(|k| k.contains(&(*task, *attempt)))
            || self.engine.is_finished(workflow) == Some(true)
    }

    /// Drop what only a running workflow needs (its attempts, when they were assigned, its
    /// results' check verdicts) for every workflow the engine has finished: a long-running
    /// matchmaker kept one entry per attempt and per result it ever saw. Cheap: one lookup
    /// per workflow held, and per attempt in flight. Also refreshes the memory gauges, and
    /// that of ready tasks no live operator could run (one pass over the scheduling classes).
    pub fn forget_finished(&mut self, sh: &Shared) {
        let engine = &self.engine;
        self.known
            .retain(|w, _| engine.is_finished(w) != Some(true));
        // An attempt that ended without a result (cancelled, timed out) left its entry here.
        self.assigned_at
            .retain(|(w, _, _), _| engine.is_finished(w) != Some(true));
        let held = self
            .verdicts
            .retain_workflows(|w| engine.is_finished(w) != Some(true));
        sh.metrics
            .matchmaker_workflows
            .set(self.known.len().max(held) as i64);
        let (engine_held, _) = self.engine.workflows_held();
        sh.metrics
            .matchmaker_engine_workflows
            .set(engine_held as i64);
        sh.metrics
            .matchmaker_unmatched_ready
            .set(self.engine.unmatched_ready_len() as i64);
    }

    /// A workflow another trusted matchmaker ended, settled and pruned while this one was down
    /// (its catch-up answer says so): it ends in this engine too, without a word, as a failure
    /// another announced does. Taking it over instead would run again the tasks whose results
    /// are gone.
    pub fn ended_elsewhere(
        &mut self,
        sh: &Shared,
        workflow: WorkflowId,
        now: u64,
    ) -> Vec<Decision> {
        self.feed(sh, now, Event::WorkflowFailed { workflow }, None)
    }

    pub fn tick(&mut self, sh: &Shared, now: u64) -> Vec<Decision> {
        self.feed(sh, now, Event::Tick, None)
    }

    /// A gossiped (or local) message, as an event.
    pub fn on_message(
        &mut self,
        sh: &Shared,
        view: &View,
        sender: PublicKey,
        message: Message,
        now: u64,
    ) -> Vec<Decision> {
        let event = match message {
            Message::Submission(s) => {
                let id = s.workflow.id();
                let event = Event::WorkflowSubmitted {
                    id,
                    workflow: s.workflow,
                    submitted_at_ms: s.submitted_at_ms,
                };
                let mut decisions = self.feed(sh, now, event, None);
                for result in self.unknown.take(&id, now) {
                    let message = Message::Result(result);
                    decisions.extend(self.on_message(sh, view, sender, message, now));
                }
                return decisions;
            }
            Message::OperatorAdvert(a) => {
                self.operators.insert(a.operator);
                let operator = a.operator;
                let decisions = self.feed(sh, now, Event::OperatorAdvert(a), None);
                let held = self.relayed_waiting.take(&operator, now);
                self.relayed(sh, view, held, now);
                return decisions;
            }
            Message::Heartbeat(h) => Event::Heartbeat(h),
            Message::Assignment(a) => Event::Assigned(a),
            Message::Acceptance(a) => Event::Acceptance(a),
            Message::Failure(f) => Event::Failure(f),
            Message::Verdict(v) => Event::Verdict(v),
            // Handled by the core (catch-up sync; batches it hands over part by part), never an
            // engine event.
            Message::SyncRequest(_)
            | Message::SyncReply(_)
            | Message::Assignments(_)
            | Message::Dispatch(_)
            | Message::Answers(_)
            | Message::Verdicts(_) => return Vec::new(),
            Message::Result(r) => {
                let Some(workflow) = view.workflows.get(&r.result.workflow) else {
                    // A finished workflow left the view's memory; the engine still takes a
                    // late result (see `knows_attempt`), which needs no check of its output.
                    if self.engine.is_finished(&r.result.workflow) == Some(true) {
                        self.spawn_precheck(sh, None, r, false);
                    } else {
                        self.unknown.hold(r.result.workflow, now, r);
                    }
                    return Vec::new();
                };
                let key = (r.result.workflow, r.result.task, r.result.attempt);
                if let Some(at) = self.assigned_at.remove(&key) {
                    let compute = r.result.finished_ms.saturating_sub(r.result.started_ms);
                    let overhead = now.saturating_sub(at).saturating_sub(compute);
                    sh.metrics.task_overhead.observe(overhead as f64 / 1000.0);
                }
                // A proof's check (verifying it) can take longer than the next task: free the
                // operator's place now rather than idle the prover meanwhile. Other checks end
                // within a millisecond and the verdict then shares the next assignment's
                // durable commit; freeing early there split them into two commits per task
                // (1-slot sleep overhead P50 +0.35 ms, P99 +0.8 ms, for +1.5% pipeline).
                let task = workflow.tasks.get(r.result.task as usize).cloned();
                if let Some(checked) = task
                    .as_ref()
                    .and_then(|t| verify::precheck_now(&sh.client, &sh.verified_results, t, &r))
                {
                    return self.checked(sh, now, r, checked, false);
                }
                let arrived = task.as_ref().is_some_and(verify::is_proof_task).then_some(
                    Event::ResultArrived {
                        workflow: r.result.workflow,
                        task: r.result.task,
                        attempt: r.result.attempt,
                        operator: r.result.operator,
                    },
                );
                self.spawn_precheck(sh, task, r, false);
                // The result becomes an event once checked.
                return match arrived {
                    Some(event) => self.feed(sh, now, event, None),
                    None => Vec::new(),
                };
            }
            Message::MatchmakerAnnounce(a) => {
                let new = self.live.insert(sender, now).is_none();
                let _ = a;
                return if new {
                    self.refresh_live(sh, now)
                } else {
                    Vec::new()
                };
            }
            // Another matchmaker failed it (this one's own decisions are not fed back): the
            // engine ends it too, so taking it over later does not run it again.
            Message::WorkflowFailed(f) => Event::WorkflowFailed {
                workflow: f.workflow,
            },
            Message::Cancel(_) => return Vec::new(),
            Message::CancelWorkflow(c) => {
                // Checked against the stored submission: only its requester may cancel it.
                let record = match sh.store.workflow(&c.workflow) {
                    Ok(Some(record)) => record,
                    Ok(None) => {
                        tracing::warn!(workflow = %c.workflow.short(), %sender, "cancellation of a workflow this matchmaker does not hold; ignored");
                        return Vec::new();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read a workflow to check its cancellation");
                        return Vec::new();
                    }
                };
                if let Err(reason) = super::cancel::authorize(&record.submission, &sender, &c) {
                    tracing::warn!(workflow = %c.workflow.short(), %sender, %reason, "cancellation refused");
                    return Vec::new();
                }
                Event::CancelRequested {
                    workflow: c.workflow,
                }
            }
        };
        self.feed(sh, now, event, None)
    }

    /// Check `result` off the core (`task`: its task, `None` for an unknown task; `relayed`: a
    /// relay's copy, see [`Self::relayed`]).
    fn spawn_precheck(&self, sh: &Shared, task: Option<Task>, result: SignedResult, relayed: bool) {
        let internal = sh.internal.clone();
        let Some(task) = task else {
            // Unknown task (results of unknown workflows wait for them): the engine ignores it;
            // judge by signature only.
            let checked = verify::Checked {
                verdict: verify::signature_verdict(&sh.verified_results, &result),
                fetched: None,
            };
            let _ = internal.send(Internal::Checked {
                result,
                checked,
                relayed,
            });
            return;
        };
        let client = sh.client.clone();
        let store = sh.store.unbatched();
        let verified = sh.verified_results.clone();
        sh.spawn(async move {
            let checked = verify::precheck(&client, &store, &verified, &task, &result).await;
            let _ = internal.send(Internal::Checked {
                result,
                checked,
                relayed,
            });
        });
    }

    /// A precheck finished (at once or in the background): the result becomes an event, with
    /// its verdict recorded. A relay's copy that failed is dropped instead (nobody is slashed
    /// on a relay's word).
    pub fn checked(
        &mut self,
        sh: &Shared,
        now: u64,
        result: SignedResult,
        checked: verify::Checked,
        relayed: bool,
    ) -> Vec<Decision> {
        let verify::Checked { verdict, fetched } = checked;
        if let Err(reason) = &verdict {
            let r = &result.result;
            if relayed {
                tracing::warn!(task = r.task, operator = %r.operator, %reason, "a relayed result failed its check; dropped");
                return Vec::new();
            }
            tracing::warn!(task = r.task, operator = %r.operator, %reason, "result failed its check");
        }
        // Stored durably with the verdict's batch (its sync comes before the verdict is
        // announced): an operator that only operates keeps its outputs lazily
        // (`runtime::copies_only`), so an accepted output must not depend on its disk.
        if let Some((id, bytes)) = fetched {
            if let Err(e) = sh.store.put_blob_expected(&id, &bytes) {
                tracing::error!(error = %e, "cannot store a checked output");
            }
        }
        self.verdicts.insert(&result, verdict.clone());
        let event = if relayed {
            Event::Relayed(result)
        } else {
            Event::Result(result)
        };
        self.feed(sh, now, event, Some(verdict))
    }

    /// Results a node that is not a trusted matchmaker holds as accepted (its catch-up answer):
    /// each one this matchmaker would take ([`Matchmaker::wants_relayed`]) is checked off the
    /// core like an operator's result, then fed as [`Event::Relayed`].
    pub fn relayed(&mut self, sh: &Shared, view: &View, results: Vec<SignedResult>, now: u64) {
        for result in results {
            let r = &result.result;
            if !self.engine.knows_operator(&r.operator) {
                self.relayed_waiting.hold(r.operator, now, result);
                continue;
            }
            if !self.engine.wants_relayed(r) {
                // Done here already, or not this matchmaker's to judge (a standby's), is no
                // news. Otherwise it is for an attempt this matchmaker never saw assigned: only
                // the accepting matchmaker's relayed verdict speaks for that one.
                let open = self.engine.is_active_for(&r.workflow)
                    && matches!(sh.store.result(&r.workflow, r.task), Ok(None));
                if open {
                    sh.metrics.relayed_refused.inc();
                    tracing::info!(workflow = %r.workflow.short(), task = r.task, attempt = r.attempt, operator = %r.operator, "refused a relayed result for an attempt this matchmaker never saw assigned, with no trusted matchmaker's verdict");
                }
                continue;
            }
            let Some(task) = view
                .workflows
                .get(&r.workflow)
                .and_then(|wf| wf.tasks.get(r.task as usize).cloned())
            else {
                continue;
            };
            self.spawn_precheck(sh, Some(task), result, true);
        }
    }

    /// A peer's connection closed: a matchmaker leaves the live set at once; an operator is
    /// presumed down (faster than missed heartbeats).
    pub fn peer_gone(&mut self, sh: &Shared, key: PublicKey, now: u64) -> Vec<Decision> {
        let mut out = Vec::new();
        if self.live.remove(&key).is_some() {
            tracing::info!(matchmaker = %key, "matchmaker disconnected; leaving the live set");
            out.extend(self.refresh_live(sh, now));
        }
        if self.operators.contains(&key) {
            out.extend(self.feed(sh, now, Event::OperatorDown(key), None));
        }
        out
    }

    /// Forget matchmakers not heard from within the timeout; feed a changed live set.
    pub fn refresh_live(&mut self, sh: &Shared, now: u64) -> Vec<Decision> {
        let timeout = self.opts.live_timeout.as_millis() as u64;
        self.live
            .retain(|_, seen| now.saturating_sub(*seen) <= timeout);
        let set = self.live_set(sh.me);
        if set == self.fed {
            return Vec::new();
        }
        tracing::info!(live = set.len(), "matchmaker live set changed");
        self.fed = set.clone();
        self.feed(sh, now, Event::Matchmakers(set), None)
    }
}

/// Turn one decision into the message to emit (or act on it locally and return `None`).
pub(crate) fn decision_message(core: &mut Core, decision: Decision) -> Option<Message> {
    let now = core.sh.now();
    let me = core.sh.me;
    match decision {
        Decision::Assign(a) => {
            if a.attempt == 1 {
                if let Some(ready) = core.view.ready_at(&a.workflow, a.task) {
                    core.sh
                        .metrics
                        .assignment_latency
                        .observe(now.saturating_sub(ready) as f64 / 1000.0);
                }
            }
            if let Some(mm) = &mut core.mm {
                mm.assigned_at.insert((a.workflow, a.task, a.attempt), now);
            }
            Some(Message::Assignment(a))
        }
        Decision::Cancel {
            workflow,
            task,
            attempt,
            operator,
            reason,
        } => Some(Message::Cancel(CancelAttempt {
            workflow,
            task,
            attempt,
            operator,
            matchmaker: me,
            reason: reason.to_string(),
        })),
        Decision::Verdict(v) => {
            if let Verdict::Rejected { result, reason } = &v {
                tracing::warn!(task = result.result.task, operator = %result.result.operator, %reason, "result rejected");
            }
            Some(Message::Verdict(v))
        }
        Decision::Slash(evidence) => {
            match core.sh.store.put_evidence(&encoding::encode(&evidence)) {
                Ok(id) => tracing::warn!(evidence = %id.short(), "slashing evidence stored"),
                Err(e) => tracing::error!(error = %e, "cannot store slashing evidence"),
            }
            // Settlement reads the store from its own task: after the batch commits.
            let settlement = core.settlement.clone();
            core.after_commit(move || settlement.slash(&evidence));
            None
        }
        Decision::WorkflowCompleted { workflow, outputs } => {
            core.view.completed(&core.sh, &core.progress, &workflow);
            let settlement = core.settlement.clone();
            core.after_commit(move || settlement.workflow_completed(&workflow, &outputs));
            None
        }
        Decision::WorkflowFailed { workflow, reason } => {
            // This matchmaker, active for it, owes its escrow's release: recorded with the
            // failure, so a restart before the release still makes it.
            if let Err(e) = core.sh.store.mark_release_owed(&workflow, now) {
                tracing::error!(error = %e, "cannot record a failed workflow's release as owed");
            }
            // Settlement reads the store from its own task: after the batch commits.
            let settlement = core.settlement.clone();
            core.after_commit(move || settlement.workflow_failed(&workflow));
            Some(Message::WorkflowFailed(WorkflowFailure {
                workflow,
                matchmaker: me,
                reason: reason.to_string(),
            }))
        }
    }
}
