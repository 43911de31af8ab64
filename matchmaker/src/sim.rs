//! A seeded discrete-event simulation: matchmakers (one or several) and operators with mixed
//! GPUs, in virtual milliseconds, with optional faults (crashes, slow operators, invalid
//! results, declared failures, a matchmaker dying). Used by the `simulate` example and by the
//! property tests, which check its invariants after every step.
//!
//! Message latency and decision latency are zero by default: the simulation measures the
//! scheduling policy, not the network.

use crate::config::Config;
use crate::engine::Matchmaker;
use crate::event::{Decision, Event};
use proofmesh_protocol::messages::{
    Acceptance, Assignment, Capacity, FailureCause, GpuInfo, Heartbeat, OperatorAdvert,
    SignedResult, TaskFailure, TaskResult, Verdict,
};
use proofmesh_protocol::workflow::Input;
use proofmesh_protocol::{
    ContentId, Keypair, Ordering, Program, PublicKey, Resources, Task, Workflow, WorkflowId,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

/// How often, and how, things go wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Probability that an attempt meets a fault (when the task still has fault budget).
    pub per_attempt: f64,
    /// Operator downtime after a crash, in ms.
    pub downtime_ms: u64,
    /// Kill matchmaker 0 at this virtual time (needs `matchmakers >= 2`).
    pub kill_matchmaker_at_ms: Option<u64>,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Faults {
            per_attempt: 0.0,
            downtime_ms: 0,
            kill_matchmaker_at_ms: None,
        }
    }

    /// The `--faults` mix of the example.
    pub fn standard() -> Self {
        Faults {
            per_attempt: 0.05,
            downtime_ms: 100,
            kill_matchmaker_at_ms: None,
        }
    }
}

/// Simulation parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed for every random choice.
    pub seed: u64,
    /// Number of operators.
    pub operators: usize,
    /// GPUs per operator, cycled over operators.
    pub gpu_mix: Vec<u32>,
    /// VRAM per GPU in MiB, cycled over operators.
    pub vram_mix: Vec<u64>,
    /// Number of matchmakers (all but one are followers for any given workflow).
    pub matchmakers: usize,
    /// Faults.
    pub faults: Faults,
    /// Matchmaker configuration (`me` is overwritten per matchmaker).
    pub matchmaker: Config,
    /// Heartbeat period of simulated operators, ms.
    pub heartbeat_ms: u64,
    /// Give up at this virtual time.
    pub max_time_ms: u64,
}

impl SimConfig {
    /// Defaults for `operators` operators and `seed`.
    pub fn new(operators: usize, seed: u64) -> Self {
        SimConfig {
            seed,
            operators,
            gpu_mix: vec![8, 16, 16, 24],
            vram_mix: vec![24_576, 49_152, 81_920],
            matchmakers: 1,
            faults: Faults::none(),
            matchmaker: Config {
                heartbeat_interval_ms: 20,
                missed_heartbeats: 3,
                accept_timeout_ms: 5,
                result_grace_ms: 5,
                refusal_backoff_ms: 5,
                // Finished workflows leave within the run, so every simulation also checks
                // that their slots are reused safely.
                retire_after_ms: 200,
                ..Config::default()
            },
            heartbeat_ms: 20,
            max_time_ms: 3_600_000,
        }
    }
}

/// A workflow to run, with the true duration of each task (the matchmaker never sees these).
#[derive(Clone, Debug)]
pub struct SimWorkflow {
    /// The workflow.
    pub workflow: Workflow,
    /// Duration of each task on any operator, ms.
    pub durations: Vec<u64>,
    /// Virtual submission time.
    pub submit_at_ms: u64,
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// From first submission to last workflow outcome, ms.
    pub makespan_ms: u64,
    /// max(total work / GPU slots, longest critical path), ms.
    pub ideal_ms: u64,
    /// ideal / makespan.
    pub efficiency: f64,
    /// Assignments with attempt > 1.
    pub reassigned: u64,
    /// Tasks without an accepted result in workflows that did not complete.
    pub lost: u64,
    /// Assignments made.
    pub assignments: u64,
    /// Faults injected.
    pub faults: u64,
    /// Slashing evidence emitted.
    pub slashes: u64,
    /// Workflows completed, in finalization order.
    pub completed: Vec<WorkflowId>,
    /// Workflows failed.
    pub failed: Vec<WorkflowId>,
    /// Why each failed workflow failed.
    pub failure_reasons: Vec<String>,
    /// Invariant violations seen (empty when all is well).
    pub violations: Vec<String>,
}

impl SimReport {
    /// The final `key=value` line.
    pub fn line(&self) -> String {
        format!(
            "makespan_ms={} ideal_ms={} efficiency={:.4} reassigned={} lost={} assignments={} faults={} slashes={} completed={} failed={} violations={}",
            self.makespan_ms,
            self.ideal_ms,
            self.efficiency,
            self.reassigned,
            self.lost,
            self.assignments,
            self.faults,
            self.slashes,
            self.completed.len(),
            self.failed.len(),
            self.violations.len()
        )
    }
}

fn program(name: &str) -> Program {
    Program {
        name: name.to_string(),
        version: "1".to_string(),
    }
}

/// Resources of one pipeline task: one 16 GiB GPU, 2 cores, 8 GiB.
pub fn gpu_task_resources() -> Resources {
    Resources {
        cpu: 2,
        memory_mb: 8_192,
        gpu: 1,
        vram_mb: 16_384,
        disk_mb: 0,
    }
}

/// A task for tests and simulations: timeout = 3 x `duration_ms`, `max_attempts` attempts.
pub fn sim_task(
    name: String,
    prog: &str,
    deps: Vec<u32>,
    duration_ms: u64,
    max_attempts: u32,
) -> Task {
    Task {
        name,
        program: program(prog),
        args: Vec::new(),
        inputs: deps.iter().map(|&d| Input::Output(d)).collect(),
        deps,
        resources: gpu_task_resources(),
        timeout_ms: duration_ms.saturating_mul(3).max(1),
        max_attempts,
        max_price_wei: 1_000_000,
    }
}

/// The zkSync-shaped pipeline: 1 witness -> `leaves` proofs -> binary aggregation tree ->
/// 1 final. 512 leaves give 1,025 tasks.
pub fn zk_pipeline(
    leaves: u32,
    leaf_ms: u64,
    agg_ms: u64,
    witness_ms: u64,
    final_ms: u64,
) -> SimWorkflow {
    let leaves = leaves.max(1);
    let mut tasks = vec![sim_task("witness".into(), "witness", vec![], witness_ms, 5)];
    let mut durations = vec![witness_ms];
    let mut level: Vec<u32> = Vec::new();
    for i in 0..leaves {
        level.push(tasks.len() as u32);
        tasks.push(sim_task(format!("prove[{i}]"), "leaf", vec![0], leaf_ms, 5));
        durations.push(leaf_ms);
    }
    let mut agg = 0;
    while level.len() > 1 {
        let mut next = Vec::new();
        for pair in level.chunks(2) {
            if pair.len() == 1 {
                next.push(pair[0]);
                continue;
            }
            next.push(tasks.len() as u32);
            tasks.push(sim_task(
                format!("aggregate[{agg}]"),
                "aggregate",
                pair.to_vec(),
                agg_ms,
                5,
            ));
            durations.push(agg_ms);
            agg += 1;
        }
        level = next;
    }
    tasks.push(sim_task("final".into(), "final", level, final_ms, 5));
    durations.push(final_ms);
    let workflow = Workflow {
        name: "zk-batch".into(),
        ordering: None,
        deadline_ms: 0,
        tasks,
    };
    SimWorkflow {
        workflow,
        durations,
        submit_at_ms: 0,
    }
}

/// Set a stream ordering on a workflow.
pub fn with_ordering(mut w: SimWorkflow, stream: &str, sequence: u64) -> SimWorkflow {
    w.workflow.ordering = Some(Ordering {
        stream: stream.to_string(),
        sequence,
    });
    w
}

/// The output an honest operator produces for a task.
pub fn honest_output(workflow: &WorkflowId, task: u32) -> ContentId {
    let mut bytes = workflow.0.to_vec();
    bytes.extend_from_slice(&task.to_le_bytes());
    ContentId::of_bytes(&bytes)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Slow,
    Invalid,
    Declare,
    Crash,
}

#[derive(Clone, Debug)]
enum Ev {
    Submit(usize),
    /// An operator message, gossiped to every live matchmaker.
    Broadcast(Event),
    /// Gossip from one matchmaker to another (queued, so a matchmaker's decisions are seen in
    /// the order it made them).
    Deliver(usize, Event),
    Tick(usize),
    Start(usize, Assignment),
    Finish {
        op: usize,
        wf: WorkflowId,
        task: u32,
        attempt: u32,
    },
    Cancel {
        op: usize,
        wf: WorkflowId,
        task: u32,
        attempt: u32,
    },
    Heartbeat(usize, u64),
    Recover(usize),
    KillMatchmaker(usize),
}

struct Run {
    started: u64,
    fault: Option<Fault>,
    gpus: Vec<u32>,
    res: Resources,
}

struct SimOperator {
    key: Keypair,
    advert: OperatorAdvert,
    alive: bool,
    /// Incarnation: heartbeats of a crashed incarnation stop.
    epoch: u64,
    runs: BTreeMap<(WorkflowId, u32, u32), Run>,
    used_cpu: u32,
    used_mem: u64,
    busy_gpus: BTreeSet<u32>,
}

struct SimMatchmaker {
    mm: Matchmaker,
    alive: bool,
    log: Vec<(u64, Event)>,
}

/// Per-task view the simulation keeps to check the matchmaker from outside.
#[derive(Clone, Default)]
struct TaskView {
    accepted: u32,
    outstanding: Option<u32>,
    fault_budget: u32,
    last_failed_on: Option<PublicKey>,
    /// A refused attempt is retried after a backoff; until then the task is not "waiting".
    backoff_until: u64,
    /// Refusals of this task so far (the backoff doubles with each).
    refusals: u32,
}

/// The simulation.
pub struct Sim {
    cfg: SimConfig,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    ticks: BTreeSet<(u64, usize)>,
    mms: Vec<SimMatchmaker>,
    ops: Vec<SimOperator>,
    op_by_key: BTreeMap<PublicKey, usize>,
    workflows: Vec<SimWorkflow>,
    ids: Vec<WorkflowId>,
    by_id: BTreeMap<WorkflowId, usize>,
    views: Vec<Vec<TaskView>>,
    finished: BTreeMap<WorkflowId, (u64, bool)>,
    /// Submission delivered to the matchmakers.
    delivered: Vec<bool>,
    /// Recent decisions, for violation messages.
    trace: Vec<String>,
    report: SimReport,
}

fn keypair(seed: u64, role: u8, i: usize) -> Keypair {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&[role]);
    h.update(&(i as u64).to_le_bytes());
    Keypair::from_secret_bytes(*h.finalize().as_bytes())
}

/// The checker the simulation plugs in: signature, then the output must be the honest one.
fn sim_checker(workflow: &Workflow, _task: &Task, r: &SignedResult) -> Result<(), String> {
    let _ = workflow;
    r.verify().map_err(|e| e.to_string())?;
    if r.result.output != honest_output(&r.result.workflow, r.result.task) {
        return Err(format!(
            "output {} is not the expected proof",
            r.result.output.short()
        ));
    }
    Ok(())
}

impl Sim {
    /// A simulation of `workflows` under `cfg`.
    pub fn new(cfg: SimConfig, workflows: Vec<SimWorkflow>) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        let mm_keys: Vec<PublicKey> = (0..cfg.matchmakers.max(1))
            .map(|i| keypair(cfg.seed, 1, i).public())
            .collect();
        let mms = mm_keys
            .iter()
            .map(|&me| {
                let c = Config {
                    me,
                    ..cfg.matchmaker.clone()
                };
                SimMatchmaker {
                    mm: Matchmaker::with_checker(c, Box::new(sim_checker)),
                    alive: true,
                    log: Vec::new(),
                }
            })
            .collect();
        let mut ops = Vec::new();
        let mut op_by_key = BTreeMap::new();
        for i in 0..cfg.operators {
            let key = keypair(cfg.seed, 2, i);
            let gpus = cfg.gpu_mix[i % cfg.gpu_mix.len().max(1)];
            let vram = cfg.vram_mix[i % cfg.vram_mix.len().max(1)];
            let advert = OperatorAdvert {
                operator: key.public(),
                eth_address: None,
                capacity: Capacity {
                    cpu: 4 * gpus.max(1),
                    memory_mb: 32_768 * u64::from(gpus.max(1)),
                    disk_mb: 1_000_000,
                    gpus: (0..gpus)
                        .map(|g| GpuInfo {
                            index: g,
                            model: "sim".into(),
                            vram_mb: vram,
                            uuid: format!("GPU-{i}-{g}"),
                        })
                        .collect(),
                },
                programs: ["witness", "leaf", "aggregate", "final", "work"]
                    .iter()
                    .map(|p| program(p))
                    .collect(),
                price_wei: 1_000,
                queue: 0,
                max_tasks: 0,
                trusts: Vec::new(),
            };
            op_by_key.insert(key.public(), i);
            ops.push(SimOperator {
                key,
                advert,
                alive: true,
                epoch: 0,
                runs: BTreeMap::new(),
                used_cpu: 0,
                used_mem: 0,
                busy_gpus: BTreeSet::new(),
            });
        }
        let ids: Vec<WorkflowId> = workflows.iter().map(|w| w.workflow.id()).collect();
        let by_id = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let budget = |t: &Task| t.max_attempts.saturating_sub(1);
        let views = workflows
            .iter()
            .map(|w| {
                w.workflow
                    .tasks
                    .iter()
                    .map(|t| TaskView {
                        fault_budget: budget(t),
                        ..Default::default()
                    })
                    .collect()
            })
            .collect();
        let mut sim = Sim {
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            ticks: BTreeSet::new(),
            mms,
            ops,
            op_by_key,
            workflows,
            ids,
            by_id,
            views,
            finished: BTreeMap::new(),
            delivered: Vec::new(),
            trace: Vec::new(),
            report: SimReport::default(),
        };
        if sim.mms.len() > 1 {
            for m in 0..sim.mms.len() {
                sim.feed(m, Event::Matchmakers(mm_keys.clone()));
            }
        }
        for i in 0..sim.ops.len() {
            let advert = sim.ops[i].advert.clone();
            sim.push(0, Ev::Broadcast(Event::OperatorAdvert(advert)));
            sim.push(0, Ev::Heartbeat(i, 0));
        }
        sim.delivered = vec![false; sim.workflows.len()];
        for w in 0..sim.workflows.len() {
            let at = sim.workflows[w].submit_at_ms;
            sim.push(at, Ev::Submit(w));
        }
        if let Some(t) = sim.cfg.faults.kill_matchmaker_at_ms {
            if sim.mms.len() > 1 {
                sim.push(t, Ev::KillMatchmaker(0));
            }
        }
        sim
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    /// The event logs of each matchmaker (for replay tests).
    pub fn logs(&self) -> Vec<&[(u64, Event)]> {
        self.mms.iter().map(|m| m.log.as_slice()).collect()
    }

    /// The matchmakers (for comparing replayed state).
    pub fn matchmakers(&self) -> Vec<&Matchmaker> {
        self.mms.iter().map(|m| &m.mm).collect()
    }

    /// The configuration of matchmaker `i`.
    pub fn matchmaker_config(&self, i: usize) -> Config {
        self.mms[i].mm.config().clone()
    }

    /// The checker the simulation uses, for replays.
    pub fn checker() -> Box<dyn crate::checker::ResultChecker + Send> {
        Box::new(sim_checker)
    }

    /// Run to the end.
    pub fn run(mut self) -> (SimReport, Sim) {
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            if at > self.cfg.max_time_ms || self.finished.len() == self.workflows.len() {
                break;
            }
            self.now = at;
            self.step(ev);
        }
        self.finish_report();
        let report = self.report.clone();
        (report, self)
    }

    fn live_keys(&self) -> Vec<PublicKey> {
        self.mms
            .iter()
            .filter(|m| m.alive)
            .map(|m| m.mm.config().me)
            .collect()
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Submit(w) => {
                self.delivered[w] = true;
                let e = Event::WorkflowSubmitted {
                    id: self.ids[w],
                    workflow: self.workflows[w].workflow.clone(),
                    submitted_at_ms: self.now,
                };
                self.broadcast(e);
            }
            Ev::Broadcast(e) => self.broadcast(e),
            Ev::Deliver(k, e) => self.feed(k, e),
            Ev::Tick(m) => {
                self.ticks.remove(&(self.now, m));
                self.feed(m, Event::Tick);
            }
            Ev::Start(o, a) => self.start(o, a),
            Ev::Finish {
                op,
                wf,
                task,
                attempt,
            } => self.finish(op, wf, task, attempt),
            Ev::Cancel {
                op,
                wf,
                task,
                attempt,
            } => {
                if let Some(run) = self.ops[op].runs.remove(&(wf, task, attempt)) {
                    self.release(op, &run);
                }
            }
            Ev::Heartbeat(o, epoch) => {
                if self.ops[o].alive && self.ops[o].epoch == epoch {
                    let hb = Heartbeat {
                        operator: self.ops[o].key.public(),
                        at_ms: self.now,
                        running: Vec::new(),
                    };
                    self.broadcast(Event::Heartbeat(hb));
                    let next = self.now + self.cfg.heartbeat_ms;
                    self.push(next, Ev::Heartbeat(o, epoch));
                }
            }
            Ev::Recover(o) => {
                self.ops[o].alive = true;
                let epoch = self.ops[o].epoch;
                let advert = self.ops[o].advert.clone();
                self.broadcast(Event::OperatorAdvert(advert));
                self.push(self.now, Ev::Heartbeat(o, epoch));
            }
            Ev::KillMatchmaker(m) => self.kill_matchmaker(m),
        }
    }

    fn crash(&mut self, o: usize) {
        let op = &mut self.ops[o];
        op.alive = false;
        op.epoch += 1;
        op.runs.clear();
        op.used_cpu = 0;
        op.used_mem = 0;
        op.busy_gpus.clear();
        let back = self.now + self.cfg.faults.downtime_ms;
        self.push(back, Ev::Recover(o));
    }

    fn kill_matchmaker(&mut self, m: usize) {
        self.mms[m].alive = false;
        let live = self.live_keys();
        for k in 0..self.mms.len() {
            if self.mms[k].alive {
                self.feed(k, Event::Matchmakers(live.clone()));
            }
        }
    }

    fn broadcast(&mut self, e: Event) {
        for m in 0..self.mms.len() {
            if self.mms[m].alive {
                self.feed(m, e.clone());
            }
        }
    }

    fn feed(&mut self, m: usize, e: Event) {
        if !self.mms[m].alive {
            return;
        }
        // Track declared failures from outside: the attempt is no longer outstanding.
        if let Event::Failure(f) = &e {
            self.clear_outstanding(&f.workflow, f.task, f.attempt, Some(f.operator));
            if matches!(f.cause, FailureCause::Refused(_)) {
                let base = self.cfg.matchmaker.refusal_backoff_ms.max(1);
                let now = self.now;
                if let Some(v) = self
                    .by_id
                    .get(&f.workflow)
                    .and_then(|&w| self.views[w].get_mut(f.task as usize))
                {
                    // The engine doubles the wait with each refusal of the task.
                    v.refusals += 1;
                    v.backoff_until = now + base * (1 << (v.refusals - 1).min(6));
                }
            }
        }
        self.mms[m].log.push((self.now, e.clone()));
        let decisions = self.mms[m].mm.handle(self.now, e);
        if let Err(v) = self.mms[m].mm.check_invariants() {
            self.report
                .violations
                .push(format!("t={} matchmaker {m}: {v}", self.now));
        }
        for d in decisions {
            self.decision(m, d);
        }
        if let Some(t) = self.mms[m].mm.next_deadline() {
            if t > self.now && self.ticks.insert((t, m)) {
                self.push(t, Ev::Tick(m));
            }
        }
    }

    fn clear_outstanding(
        &mut self,
        wf: &WorkflowId,
        task: u32,
        attempt: u32,
        failed_on: Option<PublicKey>,
    ) {
        if let Some(&w) = self.by_id.get(wf) {
            if let Some(v) = self.views[w].get_mut(task as usize) {
                if v.outstanding == Some(attempt) {
                    v.outstanding = None;
                    if failed_on.is_some() {
                        v.last_failed_on = failed_on;
                    }
                }
            }
        }
    }

    fn decision(&mut self, m: usize, d: Decision) {
        let wi = |id: &WorkflowId| self.by_id.get(id).copied().unwrap_or(usize::MAX);
        let line = match &d {
            Decision::Assign(a) => format!(
                "t={} mm{m} assign {}/{}#{}",
                self.now,
                wi(&a.workflow),
                a.task,
                a.attempt
            ),
            Decision::Verdict(Verdict::Accepted(r)) => {
                format!(
                    "t={} mm{m} accept {}/{}#{}",
                    self.now,
                    wi(&r.result.workflow),
                    r.result.task,
                    r.result.attempt
                )
            }
            Decision::Cancel {
                workflow,
                task,
                attempt,
                reason,
                ..
            } => {
                format!(
                    "t={} mm{m} cancel {}/{}#{} {reason}",
                    self.now,
                    wi(workflow),
                    task,
                    attempt
                )
            }
            other => format!("t={} mm{m} {other:?}", self.now)
                .chars()
                .take(120)
                .collect(),
        };
        if self.trace.len() >= 256 {
            self.trace.drain(..128);
        }
        self.trace.push(line);
        // Gossip to the other matchmakers.
        let gossip = match &d {
            Decision::Assign(a) => Some(Event::Assigned(a.clone())),
            Decision::Verdict(v) => Some(Event::Verdict(v.clone())),
            Decision::Cancel {
                workflow,
                task,
                attempt,
                operator,
                reason,
            } => Some(Event::Cancelled {
                workflow: *workflow,
                task: *task,
                attempt: *attempt,
                operator: *operator,
                reason: reason.clone(),
            }),
            Decision::WorkflowFailed { workflow, .. } => Some(Event::WorkflowFailed {
                workflow: *workflow,
            }),
            _ => None,
        };
        match d {
            Decision::Assign(a) => {
                self.report.assignments += 1;
                if a.attempt > 1 {
                    self.report.reassigned += 1;
                }
                self.check_assignment(&a);
                if let Some(&w) = self.by_id.get(&a.workflow) {
                    self.views[w][a.task as usize].outstanding = Some(a.attempt);
                }
                if let Some(&o) = self.op_by_key.get(&a.operator) {
                    self.push(self.now, Ev::Start(o, a));
                }
            }
            Decision::Cancel {
                workflow,
                task,
                attempt,
                operator,
                ..
            } => {
                self.clear_outstanding(&workflow, task, attempt, Some(operator));
                if let Some(&o) = self.op_by_key.get(&operator) {
                    self.push(
                        self.now,
                        Ev::Cancel {
                            op: o,
                            wf: workflow,
                            task,
                            attempt,
                        },
                    );
                }
            }
            Decision::Verdict(Verdict::Accepted(r)) => {
                let res = &r.result;
                if let Some(&w) = self.by_id.get(&res.workflow) {
                    let v = &mut self.views[w][res.task as usize];
                    v.accepted += 1;
                    v.outstanding = None;
                    if v.accepted > 1 {
                        self.report
                            .violations
                            .push(format!("task {} of workflow {w} accepted twice", res.task));
                    }
                }
            }
            Decision::Verdict(Verdict::Rejected { result, .. }) => {
                let res = &result.result;
                self.clear_outstanding(&res.workflow, res.task, res.attempt, Some(res.operator));
            }
            Decision::Slash(_) => self.report.slashes += 1,
            Decision::WorkflowCompleted { workflow, .. } => {
                self.check_finalization_order(&workflow);
                self.finished.insert(workflow, (self.now, true));
                self.report.completed.push(workflow);
            }
            Decision::WorkflowFailed { workflow, reason } => {
                tracing::info!(%workflow, %reason, "workflow failed");
                self.report.failure_reasons.push(reason.to_string());
                self.finished.insert(workflow, (self.now, false));
                self.report.failed.push(workflow);
            }
        }
        if let Some(e) = gossip {
            for k in 0..self.mms.len() {
                if k != m && self.mms[k].alive {
                    self.push(self.now, Ev::Deliver(k, e.clone()));
                }
            }
        }
    }

    /// Dependencies accepted; and the ordering-key rule: no earlier sequence of the same stream
    /// has a ready, unassigned task of the same shape that this operator could have run.
    fn check_assignment(&mut self, a: &Assignment) {
        let Some(&w) = self.by_id.get(&a.workflow) else {
            return;
        };
        let task = &self.workflows[w].workflow.tasks[a.task as usize];
        for &d in &task.deps {
            if self.views[w][d as usize].accepted == 0 {
                let mut tail = self
                    .trace
                    .iter()
                    .rev()
                    .take(40)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                for m in &self.mms {
                    tail.push_str(&format!("\nview: {}", m.mm.describe_task(&a.workflow, d)));
                    tail.push_str(&format!(
                        "\nview9: {}",
                        m.mm.describe_task(&a.workflow, a.task)
                    ));
                }
                self.report.violations.push(format!(
                    "task {} of workflow {w} assigned before dependency {d} was accepted\n{tail}",
                    task.name
                ));
            }
        }
        let Some(ord) = &self.workflows[w].workflow.ordering else {
            return;
        };
        for (u, other) in self.workflows.iter().enumerate() {
            let Some(o) = &other.workflow.ordering else {
                continue;
            };
            if o.stream != ord.stream
                || o.sequence >= ord.sequence
                || self.finished.contains_key(&self.ids[u])
            {
                continue;
            }
            for (i, t) in other.workflow.tasks.iter().enumerate() {
                let v = &self.views[u][i];
                let ready = v.accepted == 0
                    && v.outstanding.is_none()
                    && v.backoff_until <= self.now
                    && t.deps
                        .iter()
                        .all(|&d| self.views[u][d as usize].accepted > 0);
                if ready
                    && t.program == task.program
                    && t.resources == task.resources
                    && v.last_failed_on != Some(a.operator)
                    && self.submitted(u)
                {
                    self.report.violations.push(format!(
                        "sequence {} task {} assigned while sequence {} task {} waits",
                        ord.sequence, task.name, o.sequence, t.name
                    ));
                    return;
                }
            }
        }
    }

    fn submitted(&self, u: usize) -> bool {
        self.delivered[u]
    }

    fn check_finalization_order(&mut self, id: &WorkflowId) {
        let Some(&w) = self.by_id.get(id) else { return };
        let Some(ord) = self.workflows[w].workflow.ordering.clone() else {
            return;
        };
        for (u, other) in self.workflows.iter().enumerate() {
            let Some(o) = &other.workflow.ordering else {
                continue;
            };
            if o.stream == ord.stream
                && o.sequence < ord.sequence
                && self.submitted(u)
                && !self.finished.contains_key(&self.ids[u])
            {
                self.report.violations.push(format!(
                    "sequence {} finalized before sequence {}",
                    ord.sequence, o.sequence
                ));
            }
        }
    }

    fn release(&mut self, o: usize, run: &Run) {
        let op = &mut self.ops[o];
        op.used_cpu = op.used_cpu.saturating_sub(run.res.cpu);
        op.used_mem = op.used_mem.saturating_sub(run.res.memory_mb);
        for g in &run.gpus {
            op.busy_gpus.remove(g);
        }
    }

    fn start(&mut self, o: usize, a: Assignment) {
        if !self.ops[o].alive {
            return; // a dead operator says nothing: accept timeout
        }
        let key = (a.workflow, a.task, a.attempt);
        // The operator is the last line of defence: it checks the lease itself.
        let cap = &self.ops[o].advert.capacity;
        let oversubscribed = self.ops[o].used_cpu + a.resources.cpu > cap.cpu
            || self.ops[o].used_mem + a.resources.memory_mb > cap.memory_mb
            || a.gpus.iter().any(|g| {
                self.ops[o].busy_gpus.contains(g) || !cap.gpus.iter().any(|x| x.index == *g)
            })
            || a.gpus.len() != a.resources.gpu as usize;
        if oversubscribed {
            // Several active matchmakers may race for the last GPU; the operator refuses.
            if self.mms.len() == 1 {
                self.report
                    .violations
                    .push(format!("operator {o} oversubscribed by {a:?}"));
            }
            let f = TaskFailure {
                workflow: a.workflow,
                task: a.task,
                attempt: a.attempt,
                operator: a.operator,
                cause: FailureCause::Refused("lease unavailable".into()),
            };
            self.push(self.now, Ev::Broadcast(Event::Failure(f)));
            return;
        }
        let Some(&w) = self.by_id.get(&a.workflow) else {
            return;
        };
        let duration = self.workflows[w].durations[a.task as usize];
        let mut fault = None;
        if self.cfg.faults.per_attempt > 0.0
            && self.views[w][a.task as usize].fault_budget > 0
            && self
                .rng
                .gen_bool(self.cfg.faults.per_attempt.clamp(0.0, 1.0))
        {
            fault = Some(match self.rng.gen_range(0..4) {
                0 => Fault::Slow,
                1 => Fault::Invalid,
                2 => Fault::Declare,
                _ => Fault::Crash,
            });
            // A crash hits every attempt the operator runs; only crash if all can afford it.
            if fault == Some(Fault::Crash) {
                let affordable = self.ops[o].runs.keys().all(|(wf, t, _)| {
                    self.by_id
                        .get(wf)
                        .is_some_and(|&u| self.views[u][*t as usize].fault_budget > 0)
                });
                if !affordable {
                    fault = Some(Fault::Declare);
                }
            }
            self.report.faults += 1;
            self.views[w][a.task as usize].fault_budget -= 1;
        }
        let op = &mut self.ops[o];
        op.used_cpu += a.resources.cpu;
        op.used_mem += a.resources.memory_mb;
        op.busy_gpus.extend(a.gpus.iter().copied());
        op.runs.insert(
            key,
            Run {
                started: self.now,
                fault,
                gpus: a.gpus.clone(),
                res: a.resources,
            },
        );
        let acc = Acceptance {
            assignment: ContentId::of_value(&a),
            workflow: a.workflow,
            task: a.task,
            attempt: a.attempt,
            operator: a.operator,
            accepted_at_ms: self.now,
            eth: None,
        };
        self.push(self.now, Ev::Broadcast(Event::Acceptance(acc)));
        match fault {
            None | Some(Fault::Invalid) => self.push(
                self.now + duration,
                Ev::Finish {
                    op: o,
                    wf: a.workflow,
                    task: a.task,
                    attempt: a.attempt,
                },
            ),
            Some(Fault::Slow) => self.push(
                self.now + duration * 10 + 1,
                Ev::Finish {
                    op: o,
                    wf: a.workflow,
                    task: a.task,
                    attempt: a.attempt,
                },
            ),
            Some(Fault::Declare) => {
                let at = self.now + duration / 2;
                self.push(
                    at,
                    Ev::Finish {
                        op: o,
                        wf: a.workflow,
                        task: a.task,
                        attempt: a.attempt,
                    },
                );
            }
            Some(Fault::Crash) => {
                // Charge every other attempt the crash takes down.
                let others: Vec<(WorkflowId, u32)> = self.ops[o]
                    .runs
                    .keys()
                    .filter(|k| **k != key)
                    .map(|(wf, t, _)| (*wf, *t))
                    .collect();
                for (wf, t) in others {
                    if let Some(&u) = self.by_id.get(&wf) {
                        let v = &mut self.views[u][t as usize];
                        v.fault_budget = v.fault_budget.saturating_sub(1);
                    }
                }
                // Crash now, so exactly the attempts charged above are lost.
                self.crash(o);
            }
        }
    }

    fn finish(&mut self, o: usize, wf: WorkflowId, task: u32, attempt: u32) {
        if !self.ops[o].alive {
            return;
        }
        let Some(run) = self.ops[o].runs.remove(&(wf, task, attempt)) else {
            return;
        };
        self.release(o, &run);
        let operator = self.ops[o].key.public();
        if run.fault == Some(Fault::Declare) {
            let f = TaskFailure {
                workflow: wf,
                task,
                attempt,
                operator,
                cause: FailureCause::Crashed {
                    exit_code: Some(1),
                    stderr_tail: "simulated crash".into(),
                },
            };
            self.broadcast(Event::Failure(f));
            return;
        }
        let output = if run.fault == Some(Fault::Invalid) {
            ContentId::of_bytes(b"garbage")
        } else {
            honest_output(&wf, task)
        };
        let result = TaskResult {
            workflow: wf,
            task,
            attempt,
            operator,
            output,
            output_bytes: 192,
            started_ms: run.started,
            finished_ms: self.now,
            resources: run.res,
            gpus: run.gpus,
        };
        let signed = SignedResult::sign(&self.ops[o].key, result);
        // As a node does: the operator's slot is freed on arrival, the result judged after.
        self.broadcast(Event::ResultArrived {
            workflow: wf,
            task,
            attempt,
            operator,
        });
        self.broadcast(Event::Result(signed));
    }

    fn finish_report(&mut self) {
        let slots: u64 = self
            .ops
            .iter()
            .map(|o| o.advert.capacity.gpus.len().max(1) as u64)
            .sum();
        let mut work = 0u64;
        let mut crit = 0u64;
        let mut first_submit = u64::MAX;
        for w in &self.workflows {
            work += w.durations.iter().sum::<u64>();
            crit = crit.max(critical_path(&w.workflow, &w.durations) + w.submit_at_ms);
            first_submit = first_submit.min(w.submit_at_ms);
        }
        let first_submit = if first_submit == u64::MAX {
            0
        } else {
            first_submit
        };
        let ideal = (work.div_ceil(slots.max(1))).max(crit.saturating_sub(first_submit));
        let end = self
            .finished
            .values()
            .map(|(t, _)| *t)
            .max()
            .unwrap_or(self.now);
        self.report.makespan_ms = end.saturating_sub(first_submit);
        self.report.ideal_ms = ideal;
        self.report.efficiency = if self.report.makespan_ms == 0 {
            0.0
        } else {
            ideal as f64 / self.report.makespan_ms as f64
        };
        let mut lost = 0;
        for (w, id) in self.ids.iter().enumerate() {
            if self.finished.get(id).is_none_or(|(_, ok)| !ok) {
                lost += self.views[w].iter().filter(|v| v.accepted == 0).count() as u64;
            }
        }
        self.report.lost = lost;
    }
}

/// Longest path through the DAG by true durations (iterative, in index order after a
/// topological sort).
pub fn critical_path(wf: &Workflow, durations: &[u64]) -> u64 {
    let n = wf.tasks.len();
    let mut indeg: Vec<usize> = wf.tasks.iter().map(|t| t.deps.len()).collect();
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, t) in wf.tasks.iter().enumerate() {
        for &d in &t.deps {
            if let Some(o) = out.get_mut(d as usize) {
                o.push(i);
            }
        }
    }
    let mut order: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut finish = vec![0u64; n];
    let mut k = 0;
    while k < order.len() {
        let i = order[k];
        k += 1;
        let start = wf.tasks[i]
            .deps
            .iter()
            .map(|&d| finish.get(d as usize).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        finish[i] = start + durations.get(i).copied().unwrap_or(0);
        for &j in &out[i] {
            indeg[j] -= 1;
            if indeg[j] == 0 {
                order.push(j);
            }
        }
    }
    finish.into_iter().max().unwrap_or(0)
}
