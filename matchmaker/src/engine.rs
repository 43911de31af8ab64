//! The matchmaker state machine.
//!
//! Data layout (what makes a decision O(log n)):
//! - Tasks are grouped into *classes* of identical (program, resources, price ceiling). Each
//!   class keeps a `BTreeSet` of its ready tasks ordered by [`ReadyKey`] and a `BTreeSet` of the
//!   live operators that can run one *right now*, ordered by score. Picking an assignment looks
//!   at the head of each non-empty class (a handful), then at the first operator of that class.
//! - An operator's membership in its classes is refreshed (O(classes · log n)) whenever its
//!   reservations, liveness or score change.
//! - Timeouts live in one ordered set of timers (lazily invalidated by attempt number) and
//!   operator liveness in another, so `tick` costs O(expired · log n).
//!
//! Roles: for each workflow exactly one matchmaker is active (see [`crate::rendezvous`]). A
//! follower applies the same events, plus the active one's gossiped assignments and verdicts,
//! but never dispatches, fires timeouts or judges results, and emits nothing; on takeover it
//! re-arms the timers of what is in flight and judges results it held back.

use crate::checker::{ResultChecker, SignatureChecker};
use crate::config::Config;
use crate::event::{AttemptCause, AttemptRecord, Decision, Event, FailureReason, SlashEvidence};
use crate::fit;
use crate::operators::OperatorState;
use crate::rendezvous::{active_matchmaker, routing_key};
use crate::reputation::ProgramStats;
use proofmesh_protocol::messages::{
    Acceptance, Assignment, Heartbeat, OperatorAdvert, SignedResult, TaskFailure, TaskResult,
    Verdict,
};
use proofmesh_protocol::{ContentId, Program, PublicKey, Resources, Workflow, WorkflowId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

const NONE: u32 = u32::MAX;

/// Order of ready tasks: effective deadline (a stream's sequence N inherits the earliest
/// deadline of its successors, so N never sorts after N+1), then sequence, then longest
/// remaining critical path first, then submission order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct ReadyKey {
    deadline: u64,
    sequence: u64,
    inv_crit: u64,
    /// Submission order (slots are reused, so the slot does not tell it).
    order: u64,
    wf: u32,
    task: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Status {
    Waiting,
    Ready,
    /// Refused by an operator: requeued when its `Requeue` timer fires.
    Backoff,
    Inflight,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Inflight {
    attempt: u32,
    op: u32,
    gpus: Vec<u32>,
    /// Whether the reservation is held in this view (a gossiped assignment that would
    /// oversubscribe our view is tracked without one).
    reserved: bool,
    assignment_id: ContentId,
    assigned_at: u64,
    accept_by: u64,
    deadline: u64,
    accepted: Option<Acceptance>,
    /// A result that arrived while we were a follower, judged on takeover.
    pending_result: Option<SignedResult>,
    /// The operator reported a result: what it held for this attempt is released already
    /// (`Event::ResultArrived`), though the attempt stays in flight until the result is judged.
    freed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TaskSlot {
    status: Status,
    pending_deps: u32,
    /// Number of the latest attempt (0: never assigned).
    attempts: u32,
    /// Failed attempts that count against `max_attempts`.
    failures: u32,
    /// Attempts lost to operators going down (against `Config::max_operator_losses`).
    lost: u32,
    class: u32,
    crit_ms: u64,
    last_failed_by: u32,
    inflight: Option<Box<Inflight>>,
    history: Vec<AttemptRecord>,
    output: ContentId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    Running,
    /// Every task done; held until earlier sequences of its stream are final.
    Completed,
    Finalized,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WorkflowState {
    id: WorkflowId,
    /// Submission order among all workflows this matchmaker took.
    order: u64,
    workflow: Workflow,
    deadline_abs: u64,
    eff_deadline: u64,
    sequence: u64,
    tasks: Vec<TaskSlot>,
    /// Dependents of task i: `dependents[dep_off[i]..dep_off[i + 1]]`.
    dep_off: Vec<u32>,
    dependents: Vec<u32>,
    remaining: u32,
    phase: Phase,
    active: bool,
}

impl WorkflowState {
    /// What a slot holds once its workflow left: nothing but the id it had (for debugging).
    fn left(id: WorkflowId) -> Self {
        WorkflowState {
            id,
            order: 0,
            workflow: Workflow {
                name: String::new(),
                ordering: None,
                deadline_ms: 0,
                tasks: Vec::new(),
            },
            deadline_abs: u64::MAX,
            eff_deadline: u64::MAX,
            sequence: 0,
            tasks: Vec::new(),
            dep_off: Vec::new(),
            dependents: Vec::new(),
            remaining: 0,
            phase: Phase::Finalized,
            active: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Class {
    program: u32,
    res: Resources,
    max_price: u128,
    ready: BTreeSet<ReadyKey>,
    /// (negated score, operator): live operators that can run one of these now.
    ops: BTreeSet<(i64, u32)>,
    /// Live operators eligible at all (busy or not).
    live_eligible: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stream {
    /// (sequence, workflow slot) not yet final.
    pending: BTreeSet<(u64, u32)>,
    /// Highest sequence finalized so far (for introspection and late arrivals).
    finalized_upto: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum TimerKind {
    AcceptBy,
    Deadline,
    Evidence,
    WorkflowDeadline,
    Requeue,
}

type Timer = (u64, TimerKind, u32, u32, u32);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    cfg: Config,
    now: u64,
    live_matchmakers: Vec<PublicKey>,
    ops: Vec<OperatorState>,
    op_index: HashMap<PublicKey, u32>,
    pending_reputation: BTreeMap<PublicKey, (u64, u64, u64)>,
    wfs: Vec<WorkflowState>,
    wf_index: HashMap<WorkflowId, u32>,
    classes: Vec<Class>,
    class_index: HashMap<(u32, Resources, u128), u32>,
    /// Classes with at least one ready task.
    nonempty: BTreeSet<u32>,
    programs: BTreeMap<Program, u32>,
    program_stats: Vec<ProgramStats>,
    timers: BTreeSet<Timer>,
    liveness: BTreeSet<(u64, u32)>,
    streams: BTreeMap<String, Stream>,
    /// Accepted attempts taken away early (operator presumed down): slash at their deadline
    /// unless the result still arrives in time.
    evidence: BTreeMap<(u32, u32, u32), (Acceptance, u64)>,
    /// Gossip about workflows not yet submitted here (gossip may overtake the submission):
    /// applied on submission. Bounded by `MAX_EARLY`.
    early: BTreeMap<WorkflowId, Vec<Event>>,
    early_len: usize,
    /// Finished workflows (slot, `order`), with when they leave ([`Config::retire_after_ms`]);
    /// in that order, since workflows finish in time order.
    retiring: VecDeque<(u64, u32, u64)>,
    /// Slots of workflows that left, for the next submissions.
    free_slots: Vec<u32>,
    /// Workflows submitted so far (the next one's `order`).
    submitted: u64,
    /// Decisions of the event being handled (empty between events, so not in a snapshot).
    #[serde(skip)]
    out: Vec<Decision>,
}

/// Most buffered early gossip events (beyond this they are dropped; the operator's own lease
/// check then refuses a conflicting assignment).
const MAX_EARLY: usize = 100_000;

/// The matchmaker. Feed it [`Event`]s with the current time; act on the [`Decision`]s.
pub struct Matchmaker {
    st: State,
    checker: Box<dyn ResultChecker + Send>,
}

impl fmt::Debug for Matchmaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matchmaker")
            .field("operators", &self.st.ops.len())
            .field("workflows", &self.st.wfs.len())
            .field("now", &self.st.now)
            .finish()
    }
}

/// Two matchmakers are equal when their whole scheduling state is (the checker is not compared).
impl PartialEq for Matchmaker {
    fn eq(&self, other: &Self) -> bool {
        self.st == other.st
    }
}

/// Version of [`SnapshotRef`]'s layout (the engine's private state): bumped whenever that
/// state changes shape, so that a snapshot written by another build is refused, not misread.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// A matchmaker's state as it is serialized ([`Matchmaker::snapshot`]); whoever stores it
/// stores [`SNAPSHOT_FORMAT`] with it.
#[derive(Serialize)]
#[serde(transparent)]
pub struct SnapshotRef<'a>(&'a State);

/// A deserialized matchmaker state, for [`Matchmaker::restore`].
#[derive(Deserialize)]
#[serde(transparent)]
pub struct Snapshot(State);

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("operators", &self.0.ops.len())
            .field("workflows", &self.0.wfs.len())
            .finish()
    }
}

/// Approximate memory held for tracked tasks, from `size_of` and container capacities (an exact
/// count would need a counting global allocator, i.e. `unsafe`, which the workspace forbids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Tasks of workflows not yet final.
    pub tracked_tasks: usize,
    /// Bytes attributed to them (workflow copy, per-task state, indexes, timers).
    pub bytes: usize,
}

impl MemoryEstimate {
    /// Bytes per tracked task.
    pub fn per_task(&self) -> usize {
        self.bytes.checked_div(self.tracked_tasks).unwrap_or(0)
    }
}

impl Matchmaker {
    /// A matchmaker with the default [`SignatureChecker`].
    pub fn new(cfg: Config) -> Self {
        Self::with_checker(cfg, Box::new(SignatureChecker))
    }

    /// A matchmaker with a custom result checker (e.g. real proof verification).
    pub fn with_checker(cfg: Config, checker: Box<dyn ResultChecker + Send>) -> Self {
        let me = cfg.me;
        Matchmaker {
            st: State {
                cfg,
                now: 0,
                live_matchmakers: vec![me],
                ops: Vec::new(),
                op_index: HashMap::new(),
                pending_reputation: BTreeMap::new(),
                wfs: Vec::new(),
                wf_index: HashMap::new(),
                classes: Vec::new(),
                class_index: HashMap::new(),
                nonempty: BTreeSet::new(),
                programs: BTreeMap::new(),
                program_stats: Vec::new(),
                timers: BTreeSet::new(),
                liveness: BTreeSet::new(),
                streams: BTreeMap::new(),
                evidence: BTreeMap::new(),
                early: BTreeMap::new(),
                early_len: 0,
                retiring: VecDeque::new(),
                free_slots: Vec::new(),
                submitted: 0,
                out: Vec::new(),
            },
            checker,
        }
    }

    /// Rebuild a matchmaker by replaying its event log; returns it and every decision the log
    /// produced (identical to the original run's).
    pub fn replay(
        cfg: Config,
        checker: Box<dyn ResultChecker + Send>,
        events: impl IntoIterator<Item = (u64, Event)>,
    ) -> (Self, Vec<Decision>) {
        let mut mm = Self::with_checker(cfg, checker);
        let mut out = Vec::new();
        for (now, event) in events {
            mm.handle_into(now, event, &mut out);
        }
        (mm, out)
    }

    /// The whole scheduling state, to serialize: restoring it ([`Self::restore`]) and handling
    /// the events that came after gives what replaying the whole log would (so a log can be
    /// cut at a snapshot). Take it between events.
    pub fn snapshot(&self) -> SnapshotRef<'_> {
        SnapshotRef(&self.st)
    }

    /// A matchmaker from a deserialized [`Self::snapshot`], under `cfg` (the configuration in
    /// force now, as a replay from the start would use).
    pub fn restore(
        cfg: Config,
        checker: Box<dyn ResultChecker + Send>,
        snapshot: Snapshot,
    ) -> Self {
        let mut st = snapshot.0;
        st.cfg = cfg;
        Matchmaker { st, checker }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.st.cfg
    }

    /// Apply one event at time `now_ms` (first firing every timeout due by then) and return the
    /// decisions.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Decision> {
        let mut out = Vec::new();
        self.handle_into(now_ms, event, &mut out);
        out
    }

    /// As [`Self::handle`], appending to `out` (no allocation per call).
    pub fn handle_into(&mut self, now_ms: u64, event: Event, out: &mut Vec<Decision>) {
        std::mem::swap(&mut self.st.out, out);
        let st = &mut self.st;
        st.now = st.now.max(now_ms);
        st.fire_timers(self.checker.as_mut());
        st.apply(event, self.checker.as_mut());
        st.dispatch();
        std::mem::swap(&mut self.st.out, out);
    }

    /// Fire due timeouts (same as `handle(now, Event::Tick)`).
    pub fn tick(&mut self, now_ms: u64) -> Vec<Decision> {
        self.handle(now_ms, Event::Tick)
    }

    /// The earliest time at which a timeout may fire; call `tick` then.
    pub fn next_deadline(&self) -> Option<u64> {
        [
            self.st.timers.first().map(|t| t.0),
            self.st.liveness.first().map(|l| l.0),
            self.st.retiring.front().map(|r| r.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether relayed result `r` would be judged now ([`Event::Relayed`]): worth checking
    /// only then.
    pub fn wants_relayed(&self, r: &TaskResult) -> bool {
        self.st.takes_relayed(r).is_some()
    }

    /// Whether `operator`'s advert reached this matchmaker.
    pub fn knows_operator(&self, operator: &PublicKey) -> bool {
        self.st.op_index.contains_key(operator)
    }

    /// Whether this matchmaker is the active one for `workflow` among the live set.
    pub fn is_active_for(&self, workflow: &WorkflowId) -> bool {
        self.st.is_active(workflow)
    }

    /// Ready tasks queued for dispatch (active workflows only).
    pub fn ready_len(&self) -> usize {
        self.st.classes.iter().map(|c| c.ready.len()).sum()
    }

    /// Ready tasks (active workflows only) that no live operator could run: none runs the
    /// program, has the capacity, or asks at most the price ceiling ([`crate::fit::eligible`]).
    /// They wait for such an operator to join; a market-wide signal of missing capacity.
    pub fn unmatched_ready_len(&self) -> usize {
        self.st
            .classes
            .iter()
            .filter(|c| c.live_eligible == 0)
            .map(|c| c.ready.len())
            .sum()
    }

    /// Attempts in flight.
    pub fn inflight_len(&self) -> usize {
        self.st.ops.iter().map(|o| o.tasks.len()).sum()
    }

    /// Workflows held (running, or finished and not yet retired) and the slots that hold them
    /// (some free for reuse).
    pub fn workflows_held(&self) -> (usize, usize) {
        (self.st.wf_index.len(), self.st.wfs.len())
    }

    /// Timeouts pending: attempts' acceptance windows and deadlines, workflows' deadlines,
    /// requeues, and missed-deadline evidence to report.
    pub fn timers_len(&self) -> usize {
        self.st.timers.len()
    }

    /// Whether the workflow has finished (finalized or failed).
    pub fn is_finished(&self, workflow: &WorkflowId) -> Option<bool> {
        let w = *self.st.wf_index.get(workflow)?;
        Some(matches!(
            self.st.wfs[w as usize].phase,
            Phase::Finalized | Phase::Failed
        ))
    }

    /// Check internal invariants: every operator's free capacity equals its total minus the
    /// reservations of the attempts it holds, no GPU is held twice, class indexes agree with
    /// operator state. For tests; O(everything).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.st.check_invariants()
    }

    /// A one-line description of a task's state, for diagnostics.
    pub fn describe_task(&self, workflow: &WorkflowId, task: u32) -> String {
        let Some(&w) = self.st.wf_index.get(workflow) else {
            return "unknown workflow".into();
        };
        let wf = &self.st.wfs[w as usize];
        match wf.tasks.get(task as usize) {
            Some(t) => format!(
                "{:?} pending_deps={} attempts={} failures={} deps={:?} history={:?}",
                t.status,
                t.pending_deps,
                t.attempts,
                t.failures,
                wf.workflow.tasks[task as usize].deps,
                t.history
                    .iter()
                    .map(|h| h.cause.to_string())
                    .collect::<Vec<_>>()
            ),
            None => format!("{:?}", wf.phase),
        }
    }

    /// Memory attributed to tracked tasks (see [`MemoryEstimate`]).
    pub fn memory_estimate(&self) -> MemoryEstimate {
        self.st.memory_estimate()
    }
}

impl State {
    fn is_active(&self, id: &WorkflowId) -> bool {
        let key = match self.wf_index.get(id) {
            Some(&w) => routing_key(id, &self.wfs[w as usize].workflow),
            None => *id,
        };
        self.live_matchmakers.is_empty()
            || active_matchmaker(&key, &self.live_matchmakers) == Some(self.cfg.me)
    }

    fn is_active_new(&self, id: &WorkflowId, workflow: &Workflow) -> bool {
        self.live_matchmakers.is_empty()
            || active_matchmaker(&routing_key(id, workflow), &self.live_matchmakers)
                == Some(self.cfg.me)
    }

    fn emit(&mut self, w: u32, d: Decision) {
        if self.wfs[w as usize].active {
            self.out.push(d);
        }
    }

    // ----- events -----

    fn apply(&mut self, event: Event, checker: &mut dyn ResultChecker) {
        match event {
            Event::Tick => {}
            Event::WorkflowSubmitted {
                id,
                workflow,
                submitted_at_ms,
            } => self.submit(id, workflow, submitted_at_ms),
            Event::OperatorAdvert(a) => self.advert(&a),
            Event::Heartbeat(Heartbeat { operator, .. }) | Event::OperatorUp(operator) => {
                self.seen(&operator)
            }
            Event::OperatorDown(operator) => {
                if let Some(&o) = self.op_index.get(&operator) {
                    self.operator_down(o);
                }
            }
            Event::Acceptance(a) => self.acceptance(a),
            Event::Result(r) => self.result(r, checker),
            Event::Failure(f) => self.failure(f),
            Event::Reputation {
                operator,
                completed,
                failed,
                slashed,
            } => self.reputation(operator, completed, failed, slashed),
            Event::Matchmakers(live) => self.matchmakers(live, checker),
            Event::ResultArrived {
                workflow,
                task,
                attempt,
                operator,
            } => {
                self.seen(&operator);
                if let Some((w, i)) = self.current(&workflow, task, attempt, &operator) {
                    self.free_operator(w, i);
                }
            }
            Event::Assigned(a) => self.observed_assignment(a),
            Event::Verdict(v) => self.observed_verdict(v),
            Event::Relayed(r) => self.relayed(r, checker),
            // Not held for a workflow not known (yet): one that has left the engine would be
            // held for good. A node's catch-up asks about the workflow once its submission
            // arrives, and the answer brings the failure again; a requester's cancellation is
            // sent again until the workflow has failed.
            Event::WorkflowFailed { workflow } => {
                if let Some(&w) = self.wf_index.get(&workflow) {
                    self.end_failed(w, None);
                }
            }
            Event::CancelRequested { workflow } => {
                if let Some(&w) = self.wf_index.get(&workflow) {
                    self.cancel_requested(w);
                }
            }
            Event::Cancelled {
                workflow,
                task,
                attempt,
                operator,
                reason,
            } => match self.wf_index.get(&workflow) {
                Some(&w) if !self.wfs[w as usize].active => {
                    if self.current(&workflow, task, attempt, &operator).is_some() {
                        self.end_attempt(w, task, reason, false);
                    }
                }
                Some(_) => {}
                None => self.buffer_early(
                    workflow,
                    Event::Cancelled {
                        workflow,
                        task,
                        attempt,
                        operator,
                        reason,
                    },
                ),
            },
        }
    }

    fn program_id(&mut self, p: &Program) -> u32 {
        if let Some(&id) = self.programs.get(p) {
            return id;
        }
        let id = self.program_stats.len() as u32;
        self.programs.insert(p.clone(), id);
        self.program_stats.push(ProgramStats::default());
        id
    }

    fn class_id(&mut self, program: &Program, res: Resources, max_price: u128) -> u32 {
        let pid = self.program_id(program);
        if let Some(&c) = self.class_index.get(&(pid, res, max_price)) {
            return c;
        }
        let c = self.classes.len() as u32;
        self.class_index.insert((pid, res, max_price), c);
        let mut class = Class {
            program: pid,
            res,
            max_price,
            ready: BTreeSet::new(),
            ops: BTreeSet::new(),
            live_eligible: 0,
        };
        for (o, op) in self.ops.iter_mut().enumerate() {
            if fit::eligible(op, program, &res, max_price) {
                op.classes.push(c);
                if op.up {
                    class.live_eligible += 1;
                    if op.fits(&res) {
                        class.ops.insert((op.set_key, o as u32));
                    }
                }
            }
        }
        self.classes.push(class);
        c
    }

    fn submit(&mut self, id: WorkflowId, workflow: Workflow, submitted_at: u64) {
        if self.wf_index.contains_key(&id) {
            return;
        }
        let n = workflow.tasks.len();
        let active = self.is_active_new(&id, &workflow);
        let deadline_abs = if workflow.deadline_ms == 0 {
            u64::MAX
        } else {
            submitted_at.saturating_add(workflow.deadline_ms)
        };
        let sequence = workflow.ordering.as_ref().map_or(0, |o| o.sequence);
        let order = self.submitted;
        self.submitted += 1;
        let mut state = WorkflowState {
            id,
            order,
            workflow,
            deadline_abs,
            eff_deadline: deadline_abs,
            sequence,
            tasks: Vec::new(),
            dep_off: Vec::new(),
            dependents: Vec::new(),
            remaining: n as u32,
            phase: Phase::Running,
            active,
        };
        let order = match topo_order(&state.workflow) {
            Ok(order) => order,
            Err(why) => {
                state.phase = Phase::Failed;
                let w = self.place(id, state);
                self.emit(
                    w,
                    Decision::WorkflowFailed {
                        workflow: id,
                        reason: FailureReason::Invalid(why),
                    },
                );
                self.forget(w);
                return;
            }
        };
        // Dependents in CSR form.
        let mut counts = vec![0u32; n + 1];
        for t in &state.workflow.tasks {
            for &d in &t.deps {
                counts[d as usize + 1] += 1;
            }
        }
        for i in 0..n {
            counts[i + 1] += counts[i];
        }
        let mut fill = counts.clone();
        let mut dependents = vec![0u32; counts[n] as usize];
        for (i, t) in state.workflow.tasks.iter().enumerate() {
            for &d in &t.deps {
                dependents[fill[d as usize] as usize] = i as u32;
                fill[d as usize] += 1;
            }
        }
        // Remaining critical path, in reverse topological order (no recursion).
        let mut crit = vec![0u64; n];
        for &i in order.iter().rev() {
            let i = i as usize;
            let t = &state.workflow.tasks[i];
            let est = self
                .programs
                .get(&t.program)
                .map(|&p| self.program_stats[p as usize].median_ms)
                .filter(|&m| m > 0)
                .unwrap_or(t.timeout_ms);
            let tail = dependents[counts[i] as usize..counts[i + 1] as usize]
                .iter()
                .map(|&d| crit[d as usize])
                .max()
                .unwrap_or(0);
            crit[i] = est.saturating_add(tail);
        }
        let mut tasks = Vec::with_capacity(n);
        for (i, t) in state.workflow.tasks.iter().enumerate() {
            let class = self.class_id(&t.program, t.resources, t.max_price_wei);
            tasks.push(TaskSlot {
                status: Status::Waiting,
                pending_deps: t.deps.len() as u32,
                attempts: 0,
                failures: 0,
                lost: 0,
                class,
                crit_ms: crit[i],
                last_failed_by: NONE,
                inflight: None,
                history: Vec::new(),
                output: ContentId::default(),
            });
        }
        state.tasks = tasks;
        state.dep_off = counts;
        state.dependents = dependents;
        let w = self.place(id, state);
        if let Some(ord) = self.wfs[w as usize].workflow.ordering.clone() {
            self.join_stream(w, &ord.stream, ord.sequence);
        }
        for i in 0..n as u32 {
            if self.wfs[w as usize].tasks[i as usize].pending_deps == 0 {
                self.make_ready(w, i);
            }
        }
        if deadline_abs != u64::MAX && active {
            self.timers
                .insert((deadline_abs, TimerKind::WorkflowDeadline, w, NONE, 0));
        }
        if let Some(early) = self.early.remove(&id) {
            self.early_len -= early.len();
            for e in early {
                match e {
                    Event::Assigned(a) => self.observed_assignment(a),
                    Event::Verdict(v) => self.observed_verdict(v),
                    Event::Acceptance(a) => self.acceptance(a),
                    e @ Event::Cancelled { .. } => self.apply_early_cancel(e),
                    _ => {}
                }
            }
        }
    }

    /// Enter a stream: inherit the earliest effective deadline of later sequences, and pass
    /// ours down to earlier ones, so that N always sorts before N+1.
    fn join_stream(&mut self, w: u32, stream: &str, seq: u64) {
        let s = self.streams.entry(stream.to_string()).or_default();
        let later_min = s
            .pending
            .range((seq + 1, 0)..)
            .map(|&(_, o)| self.wfs[o as usize].eff_deadline)
            .min();
        let earlier: Vec<u32> = s.pending.range(..(seq, 0)).rev().map(|&(_, o)| o).collect();
        s.pending.insert((seq, w));
        let eff = later_min.map_or(self.wfs[w as usize].deadline_abs, |m| {
            m.min(self.wfs[w as usize].deadline_abs)
        });
        self.wfs[w as usize].eff_deadline = eff;
        for o in earlier {
            if self.wfs[o as usize].eff_deadline <= eff {
                break;
            }
            self.rekey(o, eff);
        }
    }

    fn rekey(&mut self, w: u32, eff: u64) {
        let queued: Vec<u32> = {
            let wf = &self.wfs[w as usize];
            if !wf.active {
                Vec::new()
            } else {
                (0..wf.tasks.len() as u32)
                    .filter(|&i| wf.tasks[i as usize].status == Status::Ready)
                    .collect()
            }
        };
        for &i in &queued {
            self.dequeue(w, i);
        }
        self.wfs[w as usize].eff_deadline = eff;
        for &i in &queued {
            self.enqueue(w, i);
        }
    }

    fn key(&self, w: u32, i: u32) -> ReadyKey {
        let wf = &self.wfs[w as usize];
        ReadyKey {
            deadline: wf.eff_deadline,
            sequence: wf.sequence,
            inv_crit: u64::MAX - wf.tasks[i as usize].crit_ms,
            order: wf.order,
            wf: w,
            task: i,
        }
    }

    fn enqueue(&mut self, w: u32, i: u32) {
        let key = self.key(w, i);
        let c = self.wfs[w as usize].tasks[i as usize].class;
        self.classes[c as usize].ready.insert(key);
        self.nonempty.insert(c);
    }

    fn dequeue(&mut self, w: u32, i: u32) {
        let key = self.key(w, i);
        let c = self.wfs[w as usize].tasks[i as usize].class;
        let class = &mut self.classes[c as usize];
        class.ready.remove(&key);
        if class.ready.is_empty() {
            self.nonempty.remove(&c);
        }
    }

    fn make_ready(&mut self, w: u32, i: u32) {
        let wf = &mut self.wfs[w as usize];
        wf.tasks[i as usize].status = Status::Ready;
        if wf.active && wf.phase == Phase::Running {
            self.enqueue(w, i);
        }
    }

    fn advert(&mut self, a: &OperatorAdvert) {
        let o = match self.op_index.get(&a.operator) {
            Some(&o) => {
                let was_up = self.ops[o as usize].up;
                self.leave_classes(o);
                self.ops[o as usize].apply_advert(a);
                self.ops[o as usize].up = was_up;
                o
            }
            None => {
                let o = self.ops.len() as u32;
                let mut op = OperatorState::from_advert(a);
                op.up = false;
                if let Some((c, f, s)) = self.pending_reputation.remove(&a.operator) {
                    op.rep.chain_completed = c;
                    op.rep.chain_failed = f;
                    op.rep.chain_slashed = s;
                }
                self.ops.push(op);
                self.op_index.insert(a.operator, o);
                o
            }
        };
        // Recompute static eligibility.
        let mut classes = Vec::new();
        for (c, class) in self.classes.iter().enumerate() {
            let op = &self.ops[o as usize];
            let program = self
                .programs
                .iter()
                .find(|(_, &id)| id == class.program)
                .map(|(p, _)| p);
            if program.is_some_and(|p| fit::eligible(op, p, &class.res, class.max_price)) {
                classes.push(c as u32);
            }
        }
        self.ops[o as usize].classes = classes;
        if self.ops[o as usize].up {
            for &c in &self.ops[o as usize].classes {
                self.classes[c as usize].live_eligible += 1;
            }
        }
        self.seen(&a.operator);
        self.reserve_deferred(o);
        self.refresh_op(o);
    }

    /// Remove an operator from its classes' sets and live counts (before changing its classes).
    fn leave_classes(&mut self, o: u32) {
        let op = &self.ops[o as usize];
        for &c in &op.classes {
            let class = &mut self.classes[c as usize];
            class.ops.remove(&(op.set_key, o));
            if op.up {
                class.live_eligible = class.live_eligible.saturating_sub(1);
            }
        }
    }

    /// Re-score an operator and refresh its membership in its classes' operator sets.
    fn refresh_op(&mut self, o: u32) {
        let cfg = &self.cfg;
        let op = &mut self.ops[o as usize];
        let old = op.set_key;
        op.set_key = -op
            .rep
            .score(cfg, op.price_wei, op.tasks.len() as u32, op.slots());
        for &c in &op.classes {
            let class = &mut self.classes[c as usize];
            class.ops.remove(&(old, o));
            if op.up && op.takes(&class.res) {
                class.ops.insert((op.set_key, o));
            }
        }
    }

    fn seen(&mut self, key: &PublicKey) {
        let Some(&o) = self.op_index.get(key) else {
            return;
        };
        let expiry = self.now.saturating_add(self.cfg.liveness_timeout_ms());
        let op = &mut self.ops[o as usize];
        self.liveness.remove(&(op.expiry_ms, o));
        op.expiry_ms = expiry;
        self.liveness.insert((expiry, o));
        if !op.up {
            op.up = true;
            for &c in &op.classes {
                self.classes[c as usize].live_eligible += 1;
            }
            self.refresh_op(o);
        }
    }

    fn operator_down(&mut self, o: u32) {
        let op = &mut self.ops[o as usize];
        if !op.up {
            return;
        }
        self.liveness.remove(&(op.expiry_ms, o));
        op.up = false;
        for &c in &op.classes {
            let class = &mut self.classes[c as usize];
            class.live_eligible = class.live_eligible.saturating_sub(1);
            class.ops.remove(&(op.set_key, o));
        }
        let held: Vec<(u32, u32)> = op.tasks.iter().copied().collect();
        for (w, i) in held {
            // Ending one attempt can fail (and forget) its workflow, which releases the
            // operator's other attempts of it: re-check each held attempt before touching it.
            let Some(slot) = self.wfs[w as usize].tasks.get(i as usize) else {
                continue;
            };
            let inf = slot.inflight.as_ref().filter(|inf| inf.op == o);
            if inf.is_none() {
                continue;
            }
            // Evidence for what it was running; attempts still waiting in its queue in our
            // view simply move (a queue place is not work begun).
            if let Some(inf) = inf.filter(|inf| inf.reserved) {
                if let Some(acc) = inf.accepted.clone() {
                    if self.wfs[w as usize].active {
                        let key = (w, i, inf.attempt);
                        self.timers
                            .insert((inf.deadline, TimerKind::Evidence, w, i, inf.attempt));
                        self.evidence.insert(key, (acc, inf.deadline));
                    }
                }
            }
            self.end_attempt(w, i, AttemptCause::OperatorDown, true);
        }
    }

    fn reputation(&mut self, key: PublicKey, completed: u64, failed: u64, slashed: u64) {
        match self.op_index.get(&key) {
            Some(&o) => {
                let rep = &mut self.ops[o as usize].rep;
                rep.chain_completed = completed;
                rep.chain_failed = failed;
                rep.chain_slashed = slashed;
                self.refresh_op(o);
            }
            None => {
                self.pending_reputation
                    .insert(key, (completed, failed, slashed));
            }
        }
    }

    /// The current attempt of (workflow, task) if it is held by `operator` with `attempt`.
    fn current(
        &self,
        wf: &WorkflowId,
        task: u32,
        attempt: u32,
        operator: &PublicKey,
    ) -> Option<(u32, u32)> {
        let &w = self.wf_index.get(wf)?;
        let slot = self.wfs[w as usize].tasks.get(task as usize)?;
        let inf = slot.inflight.as_ref()?;
        (inf.attempt == attempt && self.ops[inf.op as usize].key == *operator).then_some((w, task))
    }

    fn acceptance(&mut self, a: Acceptance) {
        self.seen(&a.operator);
        if !self.wf_index.contains_key(&a.workflow) {
            self.buffer_early(a.workflow, Event::Acceptance(a));
            return;
        }
        let Some((w, i)) = self.current(&a.workflow, a.task, a.attempt, &a.operator) else {
            return;
        };
        let Some(inf) = self.wfs[w as usize].tasks[i as usize].inflight.as_mut() else {
            return;
        };
        if inf.accepted.is_none() && inf.assignment_id == a.assignment {
            inf.accepted = Some(a);
        }
    }

    fn failure(&mut self, f: TaskFailure) {
        self.seen(&f.operator);
        // A declaration for an attempt taken away as its operator went down, before that
        // attempt's deadline, clears its missed-deadline evidence as a late result does: the
        // operator declared in time, which is never slashed (an operator that stops hands its
        // attempts back so, and may be presumed down before the declaration arrives).
        if let Some(&w) = self.wf_index.get(&f.workflow) {
            let key = (w, f.task, f.attempt);
            if let Some((acceptance, deadline)) = self.evidence.get(&key) {
                if self.now <= *deadline && acceptance.operator == f.operator {
                    self.evidence.remove(&key);
                }
            }
        }
        let Some((w, i)) = self.current(&f.workflow, f.task, f.attempt, &f.operator) else {
            return;
        };
        self.end_attempt(w, i, AttemptCause::Declared(f.cause), false);
    }

    fn result(&mut self, r: SignedResult, checker: &mut dyn ResultChecker) {
        self.seen(&r.result.operator);
        let res = &r.result;
        if let Some(&w) = self.wf_index.get(&res.workflow) {
            // A late result for an attempt we took away early clears its missed-deadline evidence.
            if let Some((_, deadline)) = self.evidence.get(&(w, res.task, res.attempt)) {
                if self.now <= *deadline && self.ops.iter().any(|o| o.key == res.operator) {
                    self.evidence.remove(&(w, res.task, res.attempt));
                }
            }
        }
        let Some((w, i)) = self.current(&res.workflow, res.task, res.attempt, &res.operator) else {
            return;
        };
        if !self.wfs[w as usize].active {
            if let Some(inf) = self.wfs[w as usize].tasks[i as usize].inflight.as_mut() {
                inf.pending_result = Some(r);
            }
            return;
        }
        self.judge(w, i, r, checker);
    }

    fn judge(&mut self, w: u32, i: u32, r: SignedResult, checker: &mut dyn ResultChecker) {
        let wf = &self.wfs[w as usize];
        let verdict = checker.check(&wf.workflow, &wf.workflow.tasks[i as usize], &r);
        match verdict {
            Ok(()) => {
                self.complete_task(w, i, &r);
                self.emit(w, Decision::Verdict(Verdict::Accepted(r)));
                self.after_done(w);
            }
            Err(reason) => {
                self.emit(
                    w,
                    Decision::Verdict(Verdict::Rejected {
                        result: r.clone(),
                        reason: reason.clone(),
                    }),
                );
                self.emit(
                    w,
                    Decision::Slash(SlashEvidence::InvalidResult {
                        result: r,
                        reason: reason.clone(),
                    }),
                );
                self.end_attempt(w, i, AttemptCause::InvalidResult(reason), false);
            }
        }
    }

    fn release_inflight(&mut self, w: u32, i: u32) -> Option<Box<Inflight>> {
        self.free_operator(w, i);
        let inf = self.wfs[w as usize].tasks[i as usize].inflight.take()?;
        // Its timers would fire as no-ops; dropped now, they do not pile up (a busy
        // matchmaker held ~100k dead ones, each task's deadline long after its result).
        self.timers
            .remove(&(inf.accept_by, TimerKind::AcceptBy, w, i, inf.attempt));
        self.timers
            .remove(&(inf.deadline, TimerKind::Deadline, w, i, inf.attempt));
        Some(inf)
    }

    /// Give back what the operator of (w, i)'s attempt holds for it in this view (once).
    fn free_operator(&mut self, w: u32, i: u32) {
        let c = self.wfs[w as usize].tasks[i as usize].class;
        let res = self.classes[c as usize].res;
        let Some(inf) = self.wfs[w as usize].tasks[i as usize].inflight.as_mut() else {
            return;
        };
        if inf.freed {
            return;
        }
        inf.freed = true;
        let (o, reserved) = (inf.op, inf.reserved);
        let op = &mut self.ops[o as usize];
        if reserved {
            op.release(&res, &inf.gpus);
        } else {
            op.unreserved = op.unreserved.saturating_sub(1);
        }
        op.tasks.remove(&(w, i));
        // A down operator starts nothing more: its queue is being taken back.
        if reserved && op.up {
            self.reserve_deferred(o);
        }
        self.refresh_op(o);
    }

    /// Held attempts without a reservation take it as soon as room appears: tasks queued on
    /// the operator (which starts them as its running tasks finish), and gossiped assignments
    /// that did not fit our view (we had not yet seen the release that made room).
    fn reserve_deferred(&mut self, o: u32) {
        if self.ops[o as usize].unreserved == 0 {
            return;
        }
        let held: Vec<(u32, u32)> = self.ops[o as usize].tasks.iter().copied().collect();
        for (w, i) in held {
            let Some(slot) = self.wfs[w as usize].tasks.get(i as usize) else {
                continue;
            };
            let res = self.classes[slot.class as usize].res;
            let Some(inf) = slot.inflight.as_ref() else {
                continue;
            };
            if inf.reserved {
                continue;
            }
            if self.ops[o as usize].reserve_exact(&res, &inf.gpus) {
                if let Some(inf) = self.wfs[w as usize].tasks[i as usize].inflight.as_mut() {
                    inf.reserved = true;
                    let op = &mut self.ops[o as usize];
                    op.unreserved = op.unreserved.saturating_sub(1);
                }
            }
        }
    }

    /// Mark a task done with result `r` (the caller has judged or observed it accepted).
    fn complete_task(&mut self, w: u32, i: u32, r: &SignedResult) {
        let inf = self.release_inflight(w, i);
        let c = self.wfs[w as usize].tasks[i as usize].class;
        let pid = self.classes[c as usize].program;
        let ms = r.result.finished_ms.saturating_sub(r.result.started_ms);
        let speed = self.program_stats[pid as usize].speed_permille(ms);
        self.program_stats[pid as usize].add(ms);
        if let Some(inf) = inf {
            self.ops[inf.op as usize].rep.record_success(speed);
            self.refresh_op(inf.op);
        }
        let wf = &mut self.wfs[w as usize];
        let slot = &mut wf.tasks[i as usize];
        if slot.status == Status::Ready && wf.active {
            self.dequeue(w, i);
        }
        let wf = &mut self.wfs[w as usize];
        let slot = &mut wf.tasks[i as usize];
        slot.status = Status::Done;
        slot.output = r.result.output;
        slot.history = Vec::new();
        wf.remaining = wf.remaining.saturating_sub(1);
        let (a, b) = (
            wf.dep_off[i as usize] as usize,
            wf.dep_off[i as usize + 1] as usize,
        );
        for k in a..b {
            let d = self.wfs[w as usize].dependents[k];
            let slot = &mut self.wfs[w as usize].tasks[d as usize];
            slot.pending_deps = slot.pending_deps.saturating_sub(1);
            if slot.pending_deps == 0 && slot.status == Status::Waiting {
                self.make_ready(w, d);
            }
        }
    }

    fn after_done(&mut self, w: u32) {
        let wf = &mut self.wfs[w as usize];
        if wf.remaining == 0 && wf.phase == Phase::Running {
            wf.phase = Phase::Completed;
            self.finalize(w);
        }
    }

    /// Finalize completed workflows, holding a stream's sequence N+1 until N is final.
    fn finalize(&mut self, w: u32) {
        let Some(stream) = self.wfs[w as usize]
            .workflow
            .ordering
            .as_ref()
            .map(|o| o.stream.clone())
        else {
            self.finalize_one(w);
            return;
        };
        loop {
            let Some(s) = self.streams.get_mut(&stream) else {
                return;
            };
            let Some(&(seq, o)) = s.pending.first() else {
                return;
            };
            // Sequences need not be contiguous: only earlier sequences this matchmaker knows of
            // hold a later one (one never submitted cannot be waited for without stalling).
            if self.wfs[o as usize].phase == Phase::Running {
                return;
            }
            s.pending.pop_first();
            s.finalized_upto = Some(s.finalized_upto.map_or(seq, |d| d.max(seq)));
            self.finalize_one(o);
        }
    }

    fn finalize_one(&mut self, w: u32) {
        let wf = &mut self.wfs[w as usize];
        if wf.phase != Phase::Completed {
            return;
        }
        wf.phase = Phase::Finalized;
        let outputs = (0..wf.tasks.len())
            .filter(|&i| wf.dep_off[i] == wf.dep_off[i + 1])
            .map(|i| (i as u32, wf.tasks[i].output))
            .collect();
        let id = wf.id;
        self.emit(
            w,
            Decision::WorkflowCompleted {
                workflow: id,
                outputs,
            },
        );
        self.forget(w);
    }

    /// A slot for a new workflow: one a retired workflow left, or a new one.
    fn place(&mut self, id: WorkflowId, state: WorkflowState) -> u32 {
        let w = match self.free_slots.pop() {
            Some(w) => {
                self.wfs[w as usize] = state;
                w
            }
            None => {
                self.wfs.push(state);
                self.wfs.len() as u32 - 1
            }
        };
        self.wf_index.insert(id, w);
        w
    }

    /// Drop what a final workflow no longer needs (keeps its id so late messages are ignored),
    /// its deadline's timer included, and schedule its leaving ([`Self::retire_due`]).
    fn forget(&mut self, w: u32) {
        let deadline = self.wfs[w as usize].deadline_abs;
        self.timers
            .remove(&(deadline, TimerKind::WorkflowDeadline, w, NONE, 0));
        let at = self.now.saturating_add(self.cfg.retire_after_ms);
        self.retiring.push_back((at, w, self.wfs[w as usize].order));
        let wf = &mut self.wfs[w as usize];
        wf.tasks = Vec::new();
        wf.dep_off = Vec::new();
        wf.dependents = Vec::new();
        wf.workflow.tasks = Vec::new();
    }

    /// Tell the operator of a released attempt (`inf`, of task `i`) to stop it.
    fn emit_cancel(&mut self, w: u32, i: u32, inf: &Inflight, reason: AttemptCause) {
        let cancel = Decision::Cancel {
            workflow: self.wfs[w as usize].id,
            task: i,
            attempt: inf.attempt,
            operator: self.ops[inf.op as usize].key,
            reason,
        };
        self.emit(w, cancel);
    }

    /// End the current attempt of a task and requeue it, or fail the workflow when its attempts
    /// are used up. `cancel`: tell the operator to stop (it may still be running it).
    fn end_attempt(&mut self, w: u32, i: u32, cause: AttemptCause, cancel: bool) {
        let Some(inf) = self.release_inflight(w, i) else {
            return;
        };
        if cancel {
            self.emit_cancel(w, i, &inf, cause.clone());
        }
        let counts = cause.counts();
        let lost = cause == AttemptCause::OperatorDown;
        if cause.operator_fault() {
            self.ops[inf.op as usize].rep.record_failure();
            self.refresh_op(inf.op);
        }
        let max_attempts = self.wfs[w as usize].workflow.tasks[i as usize]
            .max_attempts
            .max(1);
        let slot = &mut self.wfs[w as usize].tasks[i as usize];
        if cause != AttemptCause::Superseded && cause != AttemptCause::WorkflowEnded {
            slot.last_failed_by = inf.op;
        }
        slot.history.push(AttemptRecord {
            attempt: inf.attempt,
            operator: self.ops[inf.op as usize].key,
            cause,
        });
        if counts {
            slot.failures += 1;
        }
        if lost {
            slot.lost += 1;
        }
        if slot.failures >= max_attempts || slot.lost >= self.cfg.max_operator_losses.max(1) {
            let attempts = std::mem::take(&mut slot.history);
            let name = self.wfs[w as usize].workflow.tasks[i as usize].name.clone();
            self.fail_workflow(
                w,
                FailureReason::AttemptsExhausted {
                    task: i,
                    name,
                    attempts,
                },
            );
        } else if self.wfs[w as usize].phase == Phase::Running {
            let is_refusal = |r: &AttemptRecord| {
                matches!(
                    r.cause,
                    AttemptCause::Declared(proofmesh_protocol::messages::FailureCause::Refused(_))
                )
            };
            let history = &self.wfs[w as usize].tasks[i as usize].history;
            let refused = history.last().is_some_and(is_refusal);
            if refused && self.wfs[w as usize].active {
                // Back off: an immediate retry would meet the same stale view. Doubling with
                // each refusal of this task (up to 64 times): one that is refused again and
                // again (a misconfigured peer) must not be re-sent ten times a second.
                let refusals = history.iter().filter(|r| is_refusal(r)).count() as u32;
                let backoff = self
                    .cfg
                    .refusal_backoff_ms
                    .max(1)
                    .saturating_mul(1 << refusals.saturating_sub(1).min(6));
                self.wfs[w as usize].tasks[i as usize].status = Status::Backoff;
                let at = self.now.saturating_add(backoff);
                self.timers
                    .insert((at, TimerKind::Requeue, w, i, inf.attempt));
            } else {
                self.make_ready(w, i);
            }
        }
    }

    fn fail_workflow(&mut self, w: u32, reason: FailureReason) {
        self.end_failed(w, Some(reason));
    }

    /// Its requester cancelled it: the active matchmaker fails it (a finished one stays as it
    /// is). A standby does nothing: it learns the failure from the active one, or fails it
    /// itself if the cancellation comes again once it is active.
    fn cancel_requested(&mut self, w: u32) {
        let wf = &self.wfs[w as usize];
        if wf.active && wf.phase == Phase::Running {
            self.fail_workflow(w, FailureReason::Cancelled);
        }
    }

    /// The workflow failed: its attempts in flight are called back and it is forgotten.
    /// `reason`: this matchmaker failed it and announces why; `None`: another one did and has
    /// announced it ([`Event::WorkflowFailed`]).
    fn end_failed(&mut self, w: u32, reason: Option<FailureReason>) {
        if matches!(self.wfs[w as usize].phase, Phase::Failed | Phase::Finalized) {
            return;
        }
        self.wfs[w as usize].phase = Phase::Failed;
        for i in 0..self.wfs[w as usize].tasks.len() as u32 {
            match self.wfs[w as usize].tasks[i as usize].status {
                Status::Inflight => {
                    if let Some(inf) = self.release_inflight(w, i) {
                        self.emit_cancel(w, i, &inf, AttemptCause::WorkflowEnded);
                    }
                }
                Status::Ready if self.wfs[w as usize].active => self.dequeue(w, i),
                _ => {}
            }
        }
        if let Some(reason) = reason {
            let id = self.wfs[w as usize].id;
            self.emit(
                w,
                Decision::WorkflowFailed {
                    workflow: id,
                    reason,
                },
            );
        }
        if self.wfs[w as usize].workflow.ordering.is_some() {
            self.finalize(w);
        }
        self.forget(w);
    }

    // ----- several matchmakers -----

    fn matchmakers(&mut self, mut live: Vec<PublicKey>, checker: &mut dyn ResultChecker) {
        live.sort();
        live.dedup();
        self.live_matchmakers = live;
        for w in 0..self.wfs.len() as u32 {
            let wf = &self.wfs[w as usize];
            if matches!(wf.phase, Phase::Failed | Phase::Finalized) {
                continue;
            }
            let now_active = self.is_active(&wf.id);
            if now_active && !wf.active {
                self.takeover(w, checker);
            } else if !now_active && wf.active {
                for i in 0..wf.tasks.len() as u32 {
                    if self.wfs[w as usize].tasks[i as usize].status == Status::Ready {
                        self.dequeue(w, i);
                    }
                }
                self.wfs[w as usize].active = false;
            }
        }
    }

    /// Become active for a workflow: queue its ready tasks, re-arm the timers of its attempts in
    /// flight, judge results held back, and finalize it if it completed meanwhile.
    fn takeover(&mut self, w: u32, checker: &mut dyn ResultChecker) {
        self.wfs[w as usize].active = true;
        let deadline = self.wfs[w as usize].deadline_abs;
        if deadline != u64::MAX {
            self.timers
                .insert((deadline, TimerKind::WorkflowDeadline, w, NONE, 0));
        }
        if self.wfs[w as usize].phase == Phase::Completed {
            self.finalize(w);
            return;
        }
        let mut held = Vec::new();
        for i in 0..self.wfs[w as usize].tasks.len() as u32 {
            let slot = &mut self.wfs[w as usize].tasks[i as usize];
            match slot.status {
                Status::Ready => self.enqueue(w, i),
                Status::Backoff => self.make_ready(w, i),
                Status::Inflight => {
                    if let Some(inf) = slot.inflight.as_mut() {
                        self.timers
                            .insert((inf.accept_by, TimerKind::AcceptBy, w, i, inf.attempt));
                        self.timers
                            .insert((inf.deadline, TimerKind::Deadline, w, i, inf.attempt));
                        if let Some(r) = inf.pending_result.take() {
                            held.push((i, r));
                        }
                    }
                }
                _ => {}
            }
        }
        for (i, r) in held {
            if self.wfs[w as usize].phase == Phase::Running {
                self.judge(w, i, r, checker);
            }
        }
    }

    fn apply_early_cancel(&mut self, e: Event) {
        if let Event::Cancelled {
            workflow,
            task,
            attempt,
            operator,
            reason,
        } = e
        {
            if let Some(&w) = self.wf_index.get(&workflow) {
                if !self.wfs[w as usize].active
                    && self.current(&workflow, task, attempt, &operator).is_some()
                {
                    self.end_attempt(w, task, reason, false);
                }
            }
        }
    }

    /// Keep gossip about an unknown workflow for when its submission arrives.
    fn buffer_early(&mut self, wf: WorkflowId, e: Event) {
        if self.early_len < MAX_EARLY {
            self.early_len += 1;
            self.early.entry(wf).or_default().push(e);
        }
    }

    fn observed_assignment(&mut self, a: Assignment) {
        if a.matchmaker == self.cfg.me {
            return;
        }
        let Some(&w) = self.wf_index.get(&a.workflow) else {
            self.buffer_early(a.workflow, Event::Assigned(a));
            return;
        };
        if self.wfs[w as usize].phase != Phase::Running {
            return;
        }
        let Some(slot) = self.wfs[w as usize].tasks.get(a.task as usize) else {
            return;
        };
        if a.attempt <= slot.attempts
            || slot.status == Status::Done
            || slot.status == Status::Waiting
        {
            return;
        }
        let Some(&o) = self.op_index.get(&a.operator) else {
            return;
        };
        if slot.status == Status::Inflight {
            self.end_attempt(w, a.task, AttemptCause::Superseded, false);
        }
        if self.wfs[w as usize].phase != Phase::Running {
            return;
        }
        if self.wfs[w as usize].tasks[a.task as usize].status == Status::Ready
            && self.wfs[w as usize].active
        {
            self.dequeue(w, a.task);
        }
        let c = self.wfs[w as usize].tasks[a.task as usize].class;
        let res = self.classes[c as usize].res;
        let reserved = self.ops[o as usize].reserve_exact(&res, &a.gpus);
        if !reserved {
            self.ops[o as usize].unreserved += 1;
        }
        self.ops[o as usize].tasks.insert((w, a.task));
        self.refresh_op(o);
        let id = ContentId::of_value(&a);
        let active = self.wfs[w as usize].active;
        let slot = &mut self.wfs[w as usize].tasks[a.task as usize];
        slot.attempts = a.attempt;
        slot.status = Status::Inflight;
        slot.inflight = Some(Box::new(Inflight {
            attempt: a.attempt,
            op: o,
            gpus: a.gpus,
            reserved,
            assignment_id: id,
            assigned_at: self.now,
            accept_by: a.accept_by_ms,
            deadline: a.deadline_ms,
            accepted: None,
            pending_result: None,
            freed: false,
        }));
        if active {
            self.timers
                .insert((a.accept_by_ms, TimerKind::AcceptBy, w, a.task, a.attempt));
            self.timers
                .insert((a.deadline_ms, TimerKind::Deadline, w, a.task, a.attempt));
        }
    }

    fn observed_verdict(&mut self, v: Verdict) {
        let r = match &v {
            Verdict::Accepted(r) | Verdict::Rejected { result: r, .. } => r,
        };
        let Some(&w) = self.wf_index.get(&r.result.workflow) else {
            let id = r.result.workflow;
            self.buffer_early(id, Event::Verdict(v));
            return;
        };
        if self.wfs[w as usize].phase != Phase::Running {
            return;
        }
        let active = self.wfs[w as usize].active;
        let i = r.result.task;
        let Some(slot) = self.wfs[w as usize].tasks.get(i as usize) else {
            return;
        };
        match v {
            Verdict::Accepted(r) => {
                if slot.status == Status::Done {
                    return;
                }
                // Active, yet another matchmaker accepted a result for this task: we learned the
                // workflow (catch-up) after its first active matchmaker had accepted results and
                // died, or that one's verdict came late. Every node keeps the first result
                // accepted for a task, so running the task again would only make a second,
                // different one: take it.
                if active && !self.call_back_other_attempt(w, i, &r) {
                    return;
                }
                self.complete_task(w, i, &r);
                self.after_done(w);
            }
            Verdict::Rejected { .. } if active => {}
            Verdict::Rejected { result, reason } => {
                let res = &result.result;
                if self
                    .current(&res.workflow, i, res.attempt, &res.operator)
                    .is_some()
                {
                    self.end_attempt(w, i, AttemptCause::InvalidResult(reason), false);
                }
            }
        }
    }

    /// Before taking `r` as task `i`'s result: call back our attempt in flight if it is another
    /// one (another attempt number or operator). False if that ended the workflow.
    fn call_back_other_attempt(&mut self, w: u32, i: u32, r: &SignedResult) -> bool {
        let slot = &self.wfs[w as usize].tasks[i as usize];
        let other = slot.inflight.as_ref().is_some_and(|inf| {
            inf.attempt != r.result.attempt || self.ops[inf.op as usize].key != r.result.operator
        });
        if other {
            self.end_attempt(w, i, AttemptCause::Superseded, true);
        }
        self.wfs[w as usize].phase == Phase::Running
    }

    /// The workflow's slot if a relayed result `r` is judged now ([`Event::Relayed`]): this
    /// matchmaker is active for the running workflow and holds the attempt `r` is for, in
    /// flight on `r`'s operator: it made that assignment, or followed it as the assignment of
    /// the matchmaker that was active before. Nobody vouches for a relayed result's acceptance,
    /// so an operator's result for a task nobody assigned it (or a key made up for the occasion)
    /// must not get an output accepted; the dead matchmaker's signed verdict relayed unchanged
    /// ([`Event::Verdict`]) is how its other decisions count.
    fn takes_relayed(&self, r: &TaskResult) -> Option<u32> {
        let &w = self.wf_index.get(&r.workflow)?;
        let wf = &self.wfs[w as usize];
        let assigned = self
            .current(&r.workflow, r.task, r.attempt, &r.operator)
            .is_some();
        (wf.active && wf.phase == Phase::Running && assigned).then_some(w)
    }

    fn relayed(&mut self, r: SignedResult, checker: &mut dyn ResultChecker) {
        let i = r.result.task;
        let Some(w) = self.takes_relayed(&r.result) else {
            return;
        };
        let wf = &self.wfs[w as usize];
        // A relay's copy that fails its check is dropped (the node logged why).
        if checker
            .check(&wf.workflow, &wf.workflow.tasks[i as usize], &r)
            .is_err()
        {
            return;
        }
        // The attempt in flight is this one (`takes_relayed`): nothing to call back.
        self.complete_task(w, i, &r);
        self.emit(w, Decision::Verdict(Verdict::Accepted(r)));
        self.after_done(w);
    }

    // ----- time -----

    /// Finished workflows whose time is up leave the engine: their id is forgotten and their
    /// slot reused. One still referred to (a missed deadline to report, a timer, a place in its
    /// stream) waits another period.
    fn retire_due(&mut self) {
        while let Some(&(at, w, order)) = self.retiring.front() {
            if at > self.now {
                break;
            }
            self.retiring.pop_front();
            let wf = &self.wfs[w as usize];
            let finished = matches!(wf.phase, Phase::Finalized | Phase::Failed);
            if wf.order != order || !finished || !self.wf_index.contains_key(&wf.id) {
                continue; // Not the workflow this entry was for (defensive: never expected).
            }
            let in_stream = wf.workflow.ordering.as_ref().is_some_and(|o| {
                self.streams
                    .get(&o.stream)
                    .is_some_and(|s| s.pending.contains(&(wf.sequence, w)))
            });
            let timed = self.timers.iter().any(|t| t.2 == w);
            let evidence = self
                .evidence
                .range((w, 0, 0)..=(w, u32::MAX, u32::MAX))
                .next()
                .is_some();
            if in_stream || timed || evidence {
                let later = self.now.saturating_add(self.cfg.retire_after_ms.max(1));
                self.retiring.push_back((later, w, order));
                continue;
            }
            let id = wf.id;
            self.wf_index.remove(&id);
            self.wfs[w as usize] = WorkflowState::left(id);
            self.free_slots.push(w);
        }
    }

    fn fire_timers(&mut self, checker: &mut dyn ResultChecker) {
        let _ = checker;
        self.retire_due();
        while let Some(&(t, o)) = self.liveness.first() {
            if t > self.now {
                break;
            }
            self.liveness.pop_first();
            self.operator_down(o);
        }
        while let Some(&timer) = self.timers.first() {
            if timer.0 > self.now {
                break;
            }
            self.timers.pop_first();
            let (_, kind, w, i, attempt) = timer;
            // A missed deadline is slashed even when others finished the workflow before it
            // passed: the operator accepted the work and did not deliver it.
            if kind == TimerKind::Evidence {
                if let Some((acceptance, deadline_ms)) = self.evidence.remove(&(w, i, attempt)) {
                    self.emit(
                        w,
                        Decision::Slash(SlashEvidence::MissedDeadline {
                            acceptance,
                            deadline_ms,
                        }),
                    );
                }
                continue;
            }
            let wf = &self.wfs[w as usize];
            if !wf.active || wf.phase != Phase::Running {
                continue;
            }
            match kind {
                TimerKind::WorkflowDeadline => {
                    let unfinished =
                        wf.tasks.iter().filter(|t| t.status != Status::Done).count() as u32;
                    let first = wf
                        .tasks
                        .iter()
                        .position(|t| t.status != Status::Done)
                        .unwrap_or(0);
                    let first_unfinished = wf
                        .workflow
                        .tasks
                        .get(first)
                        .map(|t| t.name.clone())
                        .unwrap_or_default();
                    self.fail_workflow(
                        w,
                        FailureReason::DeadlineExceeded {
                            unfinished,
                            first_unfinished,
                        },
                    );
                }
                TimerKind::Requeue => {
                    if wf
                        .tasks
                        .get(i as usize)
                        .is_some_and(|t| t.status == Status::Backoff)
                    {
                        self.make_ready(w, i);
                    }
                }
                TimerKind::Evidence => {} // handled above
                TimerKind::AcceptBy | TimerKind::Deadline => {
                    let Some(inf) = wf.tasks.get(i as usize).and_then(|s| s.inflight.as_ref())
                    else {
                        continue;
                    };
                    if inf.attempt != attempt {
                        continue;
                    }
                    match (kind, inf.accepted.clone()) {
                        (TimerKind::AcceptBy, None) => {
                            self.end_attempt(w, i, AttemptCause::AcceptTimeout, true)
                        }
                        (TimerKind::Deadline, acc) => {
                            if let Some(acceptance) = acc {
                                let deadline_ms = inf.deadline;
                                self.emit(
                                    w,
                                    Decision::Slash(SlashEvidence::MissedDeadline {
                                        acceptance,
                                        deadline_ms,
                                    }),
                                );
                            }
                            self.end_attempt(w, i, AttemptCause::ResultTimeout, true);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    // ----- dispatch -----

    /// Assign ready tasks while some can be placed, best [`ReadyKey`] first across classes.
    fn dispatch(&mut self) {
        let mut blocked: Vec<u32> = Vec::new();
        loop {
            let mut best: Option<(ReadyKey, u32)> = None;
            for &c in &self.nonempty {
                let class = &self.classes[c as usize];
                if class.ops.is_empty() || blocked.contains(&c) {
                    continue;
                }
                if let Some(&head) = class.ready.first() {
                    if best.is_none_or(|(k, _)| head < k) {
                        best = Some((head, c));
                    }
                }
            }
            let Some((_, c)) = best else { break };
            let mut placed = false;
            let candidates: Vec<ReadyKey> = self.classes[c as usize]
                .ready
                .iter()
                .take(self.cfg.max_skip.max(1))
                .copied()
                .collect();
            for key in candidates {
                if let Some(o) = self.pick_operator(c, &key) {
                    self.assign(c, key, o);
                    placed = true;
                    break;
                }
            }
            if !placed {
                blocked.push(c);
            }
        }
    }

    /// Best operator for a task of class `c`: the highest score that has room, skipping the
    /// operator that just failed this task (unless no other live operator could run it) and
    /// probationary operators at their cap (unless nobody else has room).
    /// An operator with room now wins over a better-scored one that would queue the task.
    fn pick_operator(&self, c: u32, key: &ReadyKey) -> Option<u32> {
        let class = &self.classes[c as usize];
        let excluded = self.wfs[key.wf as usize].tasks[key.task as usize].last_failed_by;
        let mut probation = None;
        let mut fallback_excluded = None;
        let mut queue = None;
        for &(_, o) in class.ops.iter().take(64) {
            if o == excluded {
                fallback_excluded = Some(o);
                continue;
            }
            let op = &self.ops[o as usize];
            if op.rep.on_probation(&self.cfg)
                && op.tasks.len() as u32 >= self.cfg.probation_inflight
            {
                probation.get_or_insert(o);
                continue;
            }
            if op.fits(&class.res) {
                return Some(o);
            }
            queue.get_or_insert(o);
        }
        if queue.is_some() {
            return queue;
        }
        if probation.is_some() {
            return probation;
        }
        // "Another can run it" = another live eligible operator exists, even if busy now.
        fallback_excluded.filter(|_| class.live_eligible <= 1)
    }

    fn assign(&mut self, c: u32, key: ReadyKey, o: u32) {
        let (w, i) = (key.wf, key.task);
        self.dequeue(w, i);
        let res = self.classes[c as usize].res;
        let now = self.now;
        let accept_by = now.saturating_add(self.cfg.accept_timeout_ms);
        // Queued behind what it holds, a task starts at the latest when those attempts' own
        // deadlines pass (the operator enforces their timeouts): its deadline counts from there.
        let mut start_by = accept_by;
        let (gpus, reserved) = match self.ops[o as usize].reserve(&res) {
            Some(gpus) => (gpus, true),
            None if self.ops[o as usize].can_queue(&res) => {
                for &(hw, hi) in &self.ops[o as usize].tasks {
                    if let Some(inf) = self.wfs[hw as usize]
                        .tasks
                        .get(hi as usize)
                        .and_then(|t| t.inflight.as_ref())
                    {
                        start_by = start_by.max(inf.deadline);
                    }
                }
                self.ops[o as usize].unreserved += 1;
                (Vec::new(), false)
            }
            None => {
                // Cannot happen (the class set holds only operators that take it); requeue.
                self.enqueue(w, i);
                return;
            }
        };
        self.ops[o as usize].tasks.insert((w, i));
        self.refresh_op(o);
        let wf = &mut self.wfs[w as usize];
        let task = &wf.workflow.tasks[i as usize];
        let slot = &mut wf.tasks[i as usize];
        slot.attempts += 1;
        slot.status = Status::Inflight;
        let deadline = start_by
            .saturating_add(task.timeout_ms)
            .saturating_add(self.cfg.result_grace_ms);
        let a = Assignment {
            workflow: wf.id,
            task: i,
            attempt: slot.attempts,
            operator: self.ops[o as usize].key,
            gpus,
            resources: res,
            accept_by_ms: accept_by,
            deadline_ms: deadline,
            price_wei: self.ops[o as usize].price_wei,
            matchmaker: self.cfg.me,
            queued: !reserved,
        };
        slot.inflight = Some(Box::new(Inflight {
            attempt: a.attempt,
            op: o,
            gpus: a.gpus.clone(),
            reserved,
            assignment_id: ContentId::of_value(&a),
            assigned_at: now,
            accept_by,
            deadline,
            accepted: None,
            pending_result: None,
            freed: false,
        }));
        self.timers
            .insert((accept_by, TimerKind::AcceptBy, w, i, a.attempt));
        self.timers
            .insert((deadline, TimerKind::Deadline, w, i, a.attempt));
        self.out.push(Decision::Assign(a));
    }

    // ----- introspection -----

    fn check_invariants(&self) -> Result<(), String> {
        for (o, op) in self.ops.iter().enumerate() {
            let mut used = Resources::default();
            let mut gpus_held: Vec<u32> = Vec::new();
            let mut unreserved = 0u32;
            for &(w, i) in &op.tasks {
                let slot = self.wfs[w as usize].tasks.get(i as usize).ok_or_else(|| {
                    format!("operator {o} holds task {i} of a forgotten workflow {w}")
                })?;
                let inf = slot
                    .inflight
                    .as_ref()
                    .ok_or_else(|| format!("operator {o} holds idle task {w}/{i}"))?;
                if inf.op != o as u32 {
                    return Err(format!(
                        "task {w}/{i} held by operator {o} but in flight on {}",
                        inf.op
                    ));
                }
                if !inf.reserved {
                    unreserved += 1;
                    continue;
                }
                let r = self.classes[slot.class as usize].res;
                used.cpu += r.cpu;
                used.memory_mb += r.memory_mb;
                used.disk_mb += r.disk_mb;
                for g in &inf.gpus {
                    if gpus_held.contains(g) {
                        return Err(format!("operator {o}: GPU {g} held by two tasks"));
                    }
                    let slot = op
                        .gpus
                        .iter()
                        .find(|s| s.index == *g)
                        .ok_or_else(|| format!("operator {o}: no GPU {g}"))?;
                    if slot.vram_mb < r.vram_mb {
                        return Err(format!(
                            "operator {o}: GPU {g} has {} MiB < {} MiB",
                            slot.vram_mb, r.vram_mb
                        ));
                    }
                    gpus_held.push(*g);
                }
            }
            if used.cpu > op.total.cpu
                || used.memory_mb > op.total.memory_mb
                || used.disk_mb > op.total.disk_mb
            {
                return Err(format!(
                    "operator {o} oversubscribed: {used:?} of {:?}",
                    op.total
                ));
            }
            if op.free.cpu != op.total.cpu - used.cpu
                || op.free.memory_mb != op.total.memory_mb - used.memory_mb
            {
                return Err(format!(
                    "operator {o}: free {:?} != total {:?} - used {used:?}",
                    op.free, op.total
                ));
            }
            if unreserved != op.unreserved {
                return Err(format!(
                    "operator {o}: {unreserved} attempts held unreserved, counted {}",
                    op.unreserved
                ));
            }
            let busy = op.gpus.iter().filter(|g| g.busy).count();
            if busy != gpus_held.len() {
                return Err(format!(
                    "operator {o}: {busy} GPUs busy but {} held",
                    gpus_held.len()
                ));
            }
            for &c in &op.classes {
                let member = self.classes[c as usize]
                    .ops
                    .contains(&(op.set_key, o as u32));
                let should = op.up && op.takes(&self.classes[c as usize].res);
                if member != should {
                    return Err(format!(
                        "operator {o} membership in class {c} is {member}, should be {should}"
                    ));
                }
            }
        }
        for (w, wf) in self.wfs.iter().enumerate() {
            for (i, t) in wf.tasks.iter().enumerate() {
                let queued = self.classes[t.class as usize]
                    .ready
                    .contains(&self.key(w as u32, i as u32));
                let should = t.status == Status::Ready && wf.active && wf.phase == Phase::Running;
                if queued != should {
                    return Err(format!(
                        "task {w}/{i} queued={queued} but status {:?}",
                        t.status
                    ));
                }
                if t.status == Status::Inflight && t.inflight.is_none() {
                    return Err(format!("task {w}/{i} in flight without an attempt"));
                }
            }
        }
        Ok(())
    }

    fn memory_estimate(&self) -> MemoryEstimate {
        use std::mem::size_of;
        let mut tracked = 0usize;
        let mut bytes = 0usize;
        for wf in &self.wfs {
            if wf.tasks.is_empty() {
                continue;
            }
            tracked += wf.tasks.len();
            bytes += size_of::<WorkflowState>() + wf.workflow.name.capacity();
            bytes += wf.workflow.tasks.capacity() * size_of::<proofmesh_protocol::Task>();
            for t in &wf.workflow.tasks {
                bytes +=
                    t.name.capacity() + t.program.name.capacity() + t.program.version.capacity();
                bytes += t.args.capacity() * size_of::<String>()
                    + t.args.iter().map(String::capacity).sum::<usize>();
                bytes += t.inputs.capacity() * size_of::<proofmesh_protocol::workflow::Input>();
                bytes += t.deps.capacity() * 4;
            }
            bytes += wf.tasks.capacity() * size_of::<TaskSlot>();
            for t in &wf.tasks {
                bytes += t.history.capacity() * size_of::<AttemptRecord>();
                if let Some(inf) = &t.inflight {
                    bytes += size_of::<Inflight>() + inf.gpus.capacity() * 4;
                    // Its two timers and its place in the operator's task set.
                    bytes += 2 * (size_of::<Timer>() + 16) + 8 + 16;
                }
                if t.status == Status::Ready {
                    // A B-tree entry: the key plus node overhead (B-tree nodes are ~2/3 full).
                    bytes += size_of::<ReadyKey>() * 3 / 2;
                }
            }
            bytes += (wf.dep_off.capacity() + wf.dependents.capacity()) * 4;
            bytes += 64; // wf_index entry
        }
        MemoryEstimate {
            tracked_tasks: tracked,
            bytes,
        }
    }
}

/// Kahn's algorithm: a topological order, or an error naming a task on a cycle or a bad
/// dependency.
fn topo_order(wf: &Workflow) -> Result<Vec<u32>, String> {
    let n = wf.tasks.len();
    if n == 0 {
        return Err("workflow has no tasks".into());
    }
    if n >= NONE as usize {
        return Err(format!("workflow has {n} tasks, too many"));
    }
    let mut indeg = vec![0u32; n];
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (i, t) in wf.tasks.iter().enumerate() {
        for &d in &t.deps {
            if d as usize >= n {
                return Err(format!(
                    "task {} depends on task #{d}, which does not exist",
                    t.name
                ));
            }
            if d as usize == i {
                return Err(format!("task {} depends on itself", t.name));
            }
            indeg[i] += 1;
            out[d as usize].push(i as u32);
        }
    }
    let mut order: Vec<u32> = (0..n as u32).filter(|&i| indeg[i as usize] == 0).collect();
    let mut k = 0;
    while k < order.len() {
        let i = order[k] as usize;
        k += 1;
        for &d in &out[i] {
            indeg[d as usize] -= 1;
            if indeg[d as usize] == 0 {
                order.push(d);
            }
        }
    }
    if order.len() != n {
        let on_cycle = indeg.iter().position(|&d| d > 0).unwrap_or(0);
        return Err(format!(
            "task {} is on a dependency cycle",
            wf.tasks[on_cycle].name
        ));
    }
    Ok(order)
}
