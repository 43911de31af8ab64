//! `proofmesh bench pipeline | scaling | failover`: how close scheduling gets to the ideal.
//!
//! Nodes run in-process (one matchmaker node, which is also the gateway, and N operator nodes),
//! each with its own libp2p swarm and redb store, talking over real loopback sockets, like
//! `bench overhead`. In-process rather than separate processes because (a) operators run the
//! operator crate's built-in `sleep` program: spawning `proofmesh-prover sleep` per task would
//! add milliseconds of fork/exec to 5-10 ms tasks and measure the OS, not the scheduler, and
//! (b) 32 operator processes with their own runtimes on a 2-core machine would measure CPU
//! contention between runtimes. Timestamps come from the matchmaker node's progress stream.
//!
//! * `pipeline`: the 1,025-task zkSync-shaped sleep pipeline (examples/workflows/
//!   sleep-pipeline.toml). Ideal = max(critical path, total work / total slots), a lower bound
//!   on any schedule's makespan with zero orchestration cost; efficiency = ideal / measured.
//! * `scaling`: weak scaling. At P operators, P x slots x rounds independent sleep tasks;
//!   the ideal makespan (rounds x ms) is the same for every P, so efficiency_P = T_1 / T_P.
//! * `failover`: an operator dies while running a task; time from its death to the task being
//!   assigned to, and running on, another operator.

use anyhow::{bail, Context};
use clap::Args;
use proofmesh_node::network::Multiaddr;
use proofmesh_node::runtime::{Node, NodeHandle, NodeOptions, Progress};
use proofmesh_node::store::{TaskState, WorkflowState};
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{Domain, PublicKey, Workflow, WorkflowId};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The benchmark pipeline, built in so the command works from any directory.
const SLEEP_PIPELINE: &str = include_str!("../../../examples/workflows/sleep-pipeline.toml");

/// Arguments of `proofmesh bench pipeline`.
#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Operator nodes.
    #[arg(long, default_value_t = 2)]
    pub operators: u32,
    /// Concurrent task slots per operator (advertised CPU cores; each task takes `cpu` of them).
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Tasks each operator accepts beyond its slots (operator `queue_depth`; 0: off).
    #[arg(long, default_value_t = 4)]
    pub queue_depth: usize,
    /// Workflow file of `sleep`/`noop` tasks (default: examples/workflows/sleep-pipeline.toml).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Runs; the best and the median makespan are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
}

/// Arguments of `proofmesh bench scaling`.
#[derive(Args, Debug)]
pub struct ScalingArgs {
    /// Largest operator count; counts are 1, 2, 4, ... up to it.
    #[arg(long, default_value_t = 32)]
    pub max_operators: u32,
    /// Concurrent task slots per operator.
    #[arg(long, default_value_t = 2)]
    pub slots: u32,
    /// Tasks each operator accepts beyond its slots (operator `queue_depth`; 0: off).
    #[arg(long, default_value_t = 4)]
    pub queue_depth: usize,
    /// Tasks per slot (the ideal makespan is rounds x ms at every operator count).
    #[arg(long, default_value_t = 8)]
    pub rounds: u32,
    /// Milliseconds each sleep task sleeps.
    #[arg(long, default_value_t = 100)]
    pub ms: u64,
}

/// Arguments of `proofmesh bench failover`.
#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// Operator deaths to measure (one fresh task each).
    #[arg(long, default_value_t = 10)]
    pub trials: u32,
}

/// Run `bench pipeline`.
pub fn run_pipeline(args: PipelineArgs) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(pipeline(args))
}

/// Run `bench scaling`.
pub fn run_scaling(args: ScalingArgs) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(scaling(args))
}

/// Run `bench failover`.
pub fn run_failover(args: FailoverArgs) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(failover(args))
}

// ---------------------------------------------------------------------------------------------
// Ideal bounds (pure).

/// Lower bounds on the makespan of a workflow of sleep tasks with zero orchestration cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ideal {
    /// Longest dependency chain, summing task durations (ms).
    pub critical_ms: f64,
    /// Sum over tasks of duration x cpu slots taken (slot-ms).
    pub work_slot_ms: f64,
    /// Slots in the whole network (operators x slots per operator).
    pub slots: u64,
    /// max(critical path, work / slots): no schedule can beat it.
    pub bound_ms: f64,
    /// Makespan of a greedy list schedule (longest remaining path first) with zero overhead:
    /// achievable, so the true optimum lies between `bound_ms` and this.
    pub list_ms: f64,
}

/// A task's duration: `--ms N` of a `sleep` task, 0 for `noop`.
fn duration_ms(task: &proofmesh_protocol::Task) -> anyhow::Result<f64> {
    match task.program.name.as_str() {
        "noop" => Ok(0.0),
        "sleep" => {
            let ms = match task.args.as_slice() {
                [flag, v] if flag == "--ms" => v.as_str(),
                [one] if one.starts_with("--ms=") => &one[5..],
                _ => bail!("task {}: sleep takes `--ms N`", task.name),
            };
            Ok(ms
                .parse::<u64>()
                .with_context(|| format!("task {}: --ms {ms:?}", task.name))? as f64)
        }
        other => bail!(
            "task {}: program {other:?}: the benchmark runs only sleep and noop tasks",
            task.name
        ),
    }
}

/// Compute the ideal bounds for `workflow` on `slots` slots.
pub fn ideal(workflow: &Workflow, slots: u64) -> anyhow::Result<Ideal> {
    let n = workflow.tasks.len();
    let dur: Vec<f64> = workflow
        .tasks
        .iter()
        .map(duration_ms)
        .collect::<anyhow::Result<_>>()?;
    let width: Vec<u64> = workflow
        .tasks
        .iter()
        .map(|t| u64::from(t.resources.cpu.max(1)))
        .collect();
    if let Some(w) = width.iter().find(|&&w| w > slots) {
        bail!("a task needs {w} slots but the network has {slots}");
    }
    // Topological order (deps may point forward in the file).
    let mut children = vec![Vec::new(); n];
    let mut indeg = vec![0usize; n];
    for (i, t) in workflow.tasks.iter().enumerate() {
        for &d in &t.deps {
            children[d as usize].push(i);
            indeg[i] += 1;
        }
    }
    let mut order: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut k = 0;
    while k < order.len() {
        for &c in &children[order[k]] {
            indeg[c] -= 1;
            if indeg[c] == 0 {
                order.push(c);
            }
        }
        k += 1;
    }
    if order.len() != n {
        bail!("dependency cycle");
    }
    // Longest path from each task to a sink (its own duration included).
    let mut tail = vec![0.0f64; n];
    for &i in order.iter().rev() {
        tail[i] = dur[i] + children[i].iter().map(|&c| tail[c]).fold(0.0, f64::max);
    }
    let critical_ms = tail.iter().copied().fold(0.0, f64::max);
    let work_slot_ms: f64 = dur.iter().zip(&width).map(|(d, w)| d * *w as f64).sum();
    let bound_ms = critical_ms.max(work_slot_ms / slots as f64);
    let list_ms = list_schedule(workflow, &dur, &width, &tail, &children, slots);
    Ok(Ideal {
        critical_ms,
        work_slot_ms,
        slots,
        bound_ms,
        list_ms,
    })
}

/// Event simulation of a greedy list schedule: whenever slots free up, start the ready tasks
/// with the longest remaining path that fit.
fn list_schedule(
    workflow: &Workflow,
    dur: &[f64],
    width: &[u64],
    tail: &[f64],
    children: &[Vec<usize>],
    slots: u64,
) -> f64 {
    let n = dur.len();
    let mut missing: Vec<usize> = workflow.tasks.iter().map(|t| t.deps.len()).collect();
    let mut ready: Vec<usize> = (0..n).filter(|&i| missing[i] == 0).collect();
    let mut running: Vec<(f64, usize)> = Vec::new();
    let mut free = slots;
    let mut now = 0.0f64;
    let mut finished = 0;
    while finished < n {
        ready.sort_by(|&a, &b| tail[b].total_cmp(&tail[a]));
        let mut rest = Vec::new();
        for i in ready.drain(..) {
            if width[i] <= free {
                free -= width[i];
                running.push((now + dur[i], i));
            } else {
                rest.push(i);
            }
        }
        ready = rest;
        // Advance to the next completion (all completions at that instant).
        let Some(next) = running.iter().map(|r| r.0).min_by(f64::total_cmp) else {
            break;
        };
        now = next;
        let (done, still): (Vec<_>, Vec<_>) = running.into_iter().partition(|r| r.0 <= now);
        running = still;
        for (_, i) in done {
            finished += 1;
            free += width[i];
            for &c in &children[i] {
                missing[c] -= 1;
                if missing[c] == 0 {
                    ready.push(c);
                }
            }
        }
    }
    now
}

// ---------------------------------------------------------------------------------------------
// An in-process network.

/// How long no connection may change before a network counts as settled.
const QUIET: Duration = Duration::from_secs(2);

const DOMAIN: Domain = Domain {
    network_id: 9_998,
    chain_id: 31337,
};

struct Net {
    _root: tempfile::TempDir,
    mm: NodeHandle,
    operators: Vec<Option<NodeHandle>>,
}

impl Net {
    async fn start(operators: u32, slots: u32, queue_depth: usize) -> anyhow::Result<Net> {
        let root = tempfile::tempdir().context("temp dir")?;
        let (mm_opts, matchmaker) = super::bench::bench_matchmaker(&root.path().join("mm"), DOMAIN);
        let mm = Node::spawn(mm_opts)
            .await
            .context("starting the matchmaker node")?;
        let boot: Vec<Multiaddr> = mm.listen_addrs().to_vec();
        let mut ops = Vec::new();
        for i in 0..operators {
            let o = super::bench::builtin_operator_node(
                &root.path().join(format!("op{i}")),
                DOMAIN,
                &boot,
                slots,
                queue_depth,
                matchmaker,
            );
            ops.push(Some(
                Node::spawn(o).await.context("starting an operator node")?,
            ));
        }
        // Adverts and first heartbeats reach the matchmaker.
        super::bench::wait_for_operators(
            &mm,
            ops.len(),
            Duration::from_secs(60),
            Duration::from_millis(1_000),
        )
        .await?;
        let net = Net {
            _root: root,
            mm,
            operators: ops,
        };
        net.settle().await?;
        Ok(net)
    }

    /// Wait until no node's connections change for [`QUIET`]: the measurement starts on a
    /// settled network, not during the joining nodes' discovery. Every node that joins makes
    /// the others' Kademlia bootstrap again (libp2p-kad bootstraps on each new routing-table
    /// entry), and a freshly started 33-node network on 2 cores spent seconds dialing,
    /// handshaking and answering lookups: 17% of the CPU of the 32-operator run was
    /// `libp2p_kad`, and the run right after startup measured 0.64 against 0.83 settled.
    /// Joining is what it costs once per node in a deployment, not per task.
    async fn settle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        let mut since = Instant::now();
        loop {
            let mut links = self.mm.peers().await?.len();
            for op in self.operators.iter().flatten() {
                links += op.peers().await?.len();
            }
            if last != Some(links) {
                last = Some(links);
                since = Instant::now();
            } else if since.elapsed() >= QUIET {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the network did not settle in 60 s ({links} connection ends, still changing)"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Submit `workflow` and wait for it to complete: the makespan from submission, with when
    /// the accepted attempts started and finished.
    async fn run(&self, workflow: Workflow) -> anyhow::Result<Run> {
        let api = self.mm.api().clone();
        let mut progress = api.subscribe();
        let stage_of: Vec<String> = workflow.tasks.iter().map(|t| stage(&t.name)).collect();
        let submitted_ms = epoch_ms();
        let cpu = super::bench::CpuMeter::start();
        let started = Instant::now();
        let id = api.submit(workflow).await.context("submitting")?;
        wait_final(&mut progress, &id, Duration::from_secs(600)).await?;
        let makespan = started.elapsed();
        let cpu = cpu.used();
        let results = api.store().results(&id)?;
        let since = |ms: u64| ms.saturating_sub(submitted_ms) as f64;
        let starts: Vec<f64> = results
            .iter()
            .map(|(_, r)| since(r.result.started_ms))
            .collect();
        let finishes = results.iter().map(|(_, r)| since(r.result.finished_ms));
        let mut first_starts: HashMap<PublicKey, u64> = HashMap::new();
        for (_, r) in &results {
            let first = first_starts
                .entry(r.result.operator)
                .or_insert(r.result.started_ms);
            *first = (*first).min(r.result.started_ms);
        }
        let mut stages: Vec<Stage> = Vec::new();
        for (task, r) in &results {
            let Some(name) = stage_of.get(*task as usize) else {
                continue;
            };
            let (start, finish) = (since(r.result.started_ms), since(r.result.finished_ms));
            match stages.iter_mut().find(|s| s.name == *name) {
                Some(s) => {
                    s.first_start = s.first_start.min(start);
                    s.last_finish = s.last_finish.max(finish);
                    s.tasks += 1;
                    s.run_ms += finish - start;
                }
                None => stages.push(Stage {
                    name: name.clone(),
                    first_start: start,
                    last_finish: finish,
                    tasks: 1,
                    run_ms: finish - start,
                }),
            }
        }
        stages.sort_by(|a, b| a.first_start.total_cmp(&b.first_start));
        let mut first_starts: Vec<f64> = first_starts.into_values().map(since).collect();
        first_starts.sort_by(f64::total_cmp);
        Ok(Run {
            makespan,
            first_wave_ms: first_starts.last().copied().unwrap_or(0.0),
            first_starts,
            stages,
            last_start_ms: starts.iter().copied().fold(0.0, f64::max),
            starts,
            last_finish_ms: finishes.fold(0.0, f64::max),
            cpu,
        })
    }

    /// Envelopes every node signed so far (`proofmesh_envelopes_signed_total`, all kinds):
    /// signing and checking them is the largest share of a task's CPU, and unlike the
    /// makespan this count does not move with the machine's noise.
    fn envelopes_signed(&self) -> f64 {
        std::iter::once(&self.mm)
            .chain(self.operators.iter().flatten())
            .map(|node| {
                proofmesh_node::metrics::sample_sum(
                    &node.registry(),
                    "proofmesh_envelopes_signed_total",
                )
            })
            .sum()
    }

    async fn shutdown(self) {
        for op in self.operators.into_iter().flatten() {
            op.shutdown().await;
        }
        self.mm.shutdown().await;
    }
}

/// One measured workflow. The operators' start and finish times are their own clocks (the
/// same host here), in ms after the submission.
struct Run {
    makespan: Duration,
    /// When the last operator to start any task started its first: how long the first wave
    /// took to reach every operator.
    first_wave_ms: f64,
    /// Each operator's first start, ascending (how the first wave spread over the operators).
    first_starts: Vec<f64>,
    /// When each stage of the workflow ran, in order of first start.
    stages: Vec<Stage>,
    /// When each accepted attempt started.
    starts: Vec<f64>,
    /// When the last accepted attempt started (with one round of tasks: how long the first
    /// wave took to be placed).
    last_start_ms: f64,
    /// When the last accepted attempt finished; the rest of the makespan is the last
    /// results' trip back, their checks and the verdicts' commit.
    last_finish_ms: f64,
    /// CPU time this process (every node of an in-process network) used from the submission
    /// to completion; `None` where it cannot be read.
    cpu: Option<Duration>,
}

/// The accepted attempts of one stage of a workflow: the tasks named `NAME` or `NAME[i]`
/// (`leaf[17]` in `leaf`, `agg[3][5]` in `agg[3]`, an aggregation tree's level), in ms after
/// the submission.
struct Stage {
    name: String,
    first_start: f64,
    last_finish: f64,
    tasks: usize,
    /// Sum over its attempts of finish - start as the operators reported them (whole ms
    /// each, so only the mean means something): how long a task ran, wake-up included.
    run_ms: f64,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} x{} {:.0}-{:.0} (runs {:.2} ms)",
            self.name,
            self.tasks,
            self.first_start,
            self.last_finish,
            self.run_ms / self.tasks as f64
        )
    }
}

/// A task name's stage: the name without its last `[i]`.
fn stage(task: &str) -> String {
    match task.rsplit_once('[') {
        Some((stage, index)) if index.ends_with(']') => stage.to_owned(),
        _ => task.to_owned(),
    }
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn wait_final(
    progress: &mut broadcast::Receiver<Progress>,
    id: &WorkflowId,
    timeout: Duration,
) -> anyhow::Result<()> {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(end, progress.recv())
            .await
            .context("workflow did not finish in time")?
        {
            Ok(Progress::Workflow { workflow, state }) if workflow == *id => match state {
                WorkflowState::Active => {}
                WorkflowState::Completed => return Ok(()),
                WorkflowState::Failed { reason } => bail!("workflow failed: {reason}"),
            },
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(e) => bail!("progress stream ended: {e}"),
        }
    }
}

/// The next progress event, failing at `end` or when the stream breaks.
async fn next_event(
    progress: &mut broadcast::Receiver<Progress>,
    end: tokio::time::Instant,
) -> anyhow::Result<Progress> {
    match tokio::time::timeout_at(end, progress.recv())
        .await
        .context("timed out waiting for the task to move")?
    {
        Ok(p) => Ok(p),
        Err(e) => bail!("progress stream: {e}"),
    }
}

/// The operator liveness timeout of the benchmark's matchmaker (heartbeat period x missed).
fn heartbeat_timeout_ms() -> u64 {
    NodeOptions::test(PathBuf::new(), DOMAIN)
        .with_test_matchmaker()
        .matchmaker
        .map_or(0, |m| m.config.liveness_timeout_ms())
}

/// `min/p25/p50/p75/max` of ascending `v`, in whole numbers.
fn quartiles(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".to_owned();
    }
    [0, 1, 2, 3, 4]
        .map(|q| format!("{:.0}", v[(v.len() - 1) * q / 4]))
        .join("/")
}

/// How far apart the starts of each round of a `scaling` run are (latest minus earliest, in
/// ms): round 0 is the first wave, and each later one how far the operators' phases have
/// spread by then. A start belongs to the round whose nominal start (`k * ms` after the
/// submission) is nearest, so this holds while every slot is less than half a task late.
fn round_spreads(starts: &[f64], ms: f64) -> Vec<f64> {
    let mut bounds: Vec<(f64, f64)> = Vec::new();
    for &start in starts {
        let round = ((start + ms / 2.0) / ms).floor().max(0.0) as usize;
        if bounds.len() <= round {
            bounds.resize(round + 1, (f64::INFINITY, f64::NEG_INFINITY));
        }
        let (lo, hi) = &mut bounds[round];
        *lo = lo.min(start);
        *hi = hi.max(start);
    }
    bounds
        .into_iter()
        .map(|(lo, hi)| if lo <= hi { hi - lo } else { 0.0 })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

// ---------------------------------------------------------------------------------------------

async fn pipeline(args: PipelineArgs) -> anyhow::Result<ExitCode> {
    if args.operators == 0 || args.slots == 0 || args.runs == 0 {
        bail!("--operators, --slots and --runs must be at least 1");
    }
    let (text, source) = match &args.file {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            SLEEP_PIPELINE.to_string(),
            "examples/workflows/sleep-pipeline.toml".into(),
        ),
    };
    let workflow = spec::load(&text, Format::Toml)
        .with_context(|| format!("{source} is not a valid workflow"))?
        .0;
    let ideal = ideal(&workflow, u64::from(args.operators) * u64::from(args.slots))?;
    let net = Net::start(args.operators, args.slots, args.queue_depth).await?;
    let mut spans = Vec::new();
    let mut cpu = Some(Duration::ZERO);
    let signed_before = net.envelopes_signed();
    for run in 0..args.runs {
        // A distinct name per run: the same workflow id would be "already known".
        let mut w = workflow.clone();
        w.name = format!("{}-run{run}", w.name);
        let r = net.run(w).await?;
        cpu = cpu.zip(r.cpu).map(|(sum, used)| sum + used);
        let t = r.makespan.as_secs_f64() * 1000.0;
        // When each stage ran (ms after the submission): where the makespan's excess sits.
        let stages: Vec<String> = r.stages.iter().map(Stage::to_string).collect();
        eprintln!(
            "run {run}: makespan {t:.1} ms; stages {}",
            stages.join(", ")
        );
        spans.push(t);
    }
    let signed = net.envelopes_signed() - signed_before;
    net.shutdown().await;
    let best = spans.iter().copied().fold(f64::INFINITY, f64::min);
    let med = median(&mut spans);
    let n = workflow.tasks.len() as f64;
    // CPU of the whole in-process network per task, over every run (NaN where unreadable).
    let cpu_per_task = cpu.map_or(f64::NAN, |c| {
        c.as_secs_f64() * 1000.0 / (n * f64::from(args.runs))
    });
    println!(
        "operators={} slots={} queue_depth={} tasks={} critical_ms={:.1} work_slot_ms={:.1} ideal_ms={:.1} list_ms={:.1} \
         makespan_ms={:.1} best_ms={:.1} overhead_per_task_slot_ms={:.3} envelopes_signed_per_task={:.2} cpu_ms_per_task={cpu_per_task:.3} efficiency={:.4} efficiency_best={:.4}",
        args.operators,
        args.slots,
        args.queue_depth,
        workflow.tasks.len(),
        ideal.critical_ms,
        ideal.work_slot_ms,
        ideal.bound_ms,
        ideal.list_ms,
        med,
        best,
        // Excess makespan spread over the tasks each slot ran.
        (med - ideal.bound_ms) * ideal.slots as f64 / n,
        signed / (n * f64::from(args.runs)),
        ideal.bound_ms / med,
        ideal.bound_ms / best,
    );
    Ok(ExitCode::SUCCESS)
}

/// Independent sleep tasks.
fn independent(name: &str, tasks: u32, ms: u64) -> anyhow::Result<Workflow> {
    let text = format!(
        "name = \"{name}\"\n[defaults]\nresources = {{ cpu = 1, memory_gb = 0.01 }}\ntimeout_s = 60\nmax_attempts = 3\n\
         [[task]]\nid = \"t\"\nprogram = \"sleep@1\"\nargs = [\"--ms\", \"{ms}\"]\ncount = {tasks}\n"
    );
    Ok(spec::load(&text, Format::Toml).context("bench workflow")?.0)
}

async fn scaling(args: ScalingArgs) -> anyhow::Result<ExitCode> {
    if args.max_operators == 0 || args.slots == 0 || args.rounds == 0 {
        bail!("--max-operators, --slots and --rounds must be at least 1");
    }
    let mut counts = vec![1u32];
    while counts.last().copied().unwrap_or(1) * 2 <= args.max_operators {
        counts.push(counts.last().copied().unwrap_or(1) * 2);
    }
    let ideal_ms = (u64::from(args.rounds) * args.ms) as f64;
    let mut results: Vec<(u32, f64)> = Vec::new();
    let mut phases: Vec<(u32, f64, f64, f64)> = Vec::new();
    // Per count: the median spread of the rounds after the first (see `round_spreads`).
    let mut spreads: Vec<(u32, f64)> = Vec::new();
    // Per count: CPU per task (ms) and the share of the cores busy over the makespan.
    let mut cpu: Vec<(u32, f64, f64)> = Vec::new();
    // Per count: envelopes every node signed per task (steady where the makespan is noisy).
    let mut signed: Vec<(u32, f64)> = Vec::new();
    let cores = f64::from(proofmesh_operator::discovery::cpu_cores());
    for &p in &counts {
        let net = Net::start(p, args.slots, args.queue_depth).await?;
        let tasks = p * args.slots * args.rounds;
        // Two runs, the better kept: the first also warms connections and caches.
        const RUNS: u32 = 2;
        let mut best: Option<Run> = None;
        let signed_before = net.envelopes_signed();
        for run in 0..RUNS {
            let w = independent(&format!("scaling-{p}-{run}"), tasks, args.ms)?;
            let r = net.run(w).await?;
            if best.as_ref().is_none_or(|b| r.makespan < b.makespan) {
                best = Some(r);
            }
        }
        // Over both runs, with the heartbeats and announces signed meanwhile.
        signed.push((
            p,
            (net.envelopes_signed() - signed_before) / f64::from(RUNS * tasks),
        ));
        net.shutdown().await;
        let best = best.context("two runs")?;
        let ms = best.makespan.as_secs_f64() * 1000.0;
        let rounds = round_spreads(&best.starts, args.ms as f64);
        let rounds_text: Vec<String> = rounds.iter().map(|s| format!("{s:.0}")).collect();
        eprintln!(
            "operators={p} tasks={tasks} makespan_ms={ms:.1} vs_ideal={:.4} first_wave_ms={:.0} first_starts_ms={} round_spreads_ms={} last_start_ms={:.0} last_finish_ms={:.0}",
            ideal_ms / ms,
            best.first_wave_ms,
            quartiles(&best.first_starts),
            rounds_text.join("/"),
            best.last_start_ms,
            best.last_finish_ms,
        );
        spreads.push((p, median(&mut rounds.get(1..).unwrap_or_default().to_vec())));
        if let Some(used) = best.cpu {
            let used_ms = used.as_secs_f64() * 1000.0;
            cpu.push((p, used_ms / f64::from(tasks), used_ms / (ms * cores)));
        }
        results.push((p, ms));
        phases.push((
            p,
            best.first_wave_ms,
            best.last_start_ms,
            ms - best.last_finish_ms,
        ));
    }
    let t1 = results[0].1;
    let mut line = format!(
        "slots={} queue_depth={} rounds={} ms={} ideal_ms={ideal_ms:.1}",
        args.slots, args.queue_depth, args.rounds, args.ms
    );
    for (p, t) in &results {
        line.push_str(&format!(" makespan_{p}_ms={t:.1}"));
    }
    for (p, t) in &results {
        line.push_str(&format!(" efficiency_{p}={:.4}", t1 / t));
    }
    // Where the excess over the ideal sits: before every operator has started (the first
    // wave), before the last attempt starts, or after the last one finishes (its trip back,
    // its check and the verdict's commit).
    for (p, first_wave, last_start, after_last_finish) in &phases {
        line.push_str(&format!(
            " first_wave_{p}_ms={first_wave:.0} last_start_{p}_ms={last_start:.0} after_last_finish_{p}_ms={after_last_finish:.0}"
        ));
    }
    // How far apart the operators' phases are after the first boundary: a slot noticed late
    // stays late, so at a count whose round boundaries saturate the cores this is the widest
    // of the first wave's spread and the bursts met so far (bench/e2e.md, stop 35).
    for (p, spread) in &spreads {
        line.push_str(&format!(" round_spread_{p}_ms={spread:.0}"));
    }
    // What the whole network cost: every node shares this machine's cores, so past some
    // count the CPU the orchestration needs per round, not the scheduling, sets the pace.
    for (p, per_task, busy) in &cpu {
        line.push_str(&format!(
            " cpu_ms_per_task_{p}={per_task:.3} cpu_busy_{p}={busy:.3}"
        ));
    }
    for (p, per_task) in &signed {
        line.push_str(&format!(" envelopes_signed_per_task_{p}={per_task:.2}"));
    }
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

async fn failover(args: FailoverArgs) -> anyhow::Result<ExitCode> {
    if args.trials == 0 {
        bail!("--trials must be at least 1");
    }
    // Each trial kills one operator and leaves its task (a long sleep) running on another, so
    // 2 per trial, plus one spare; one slot each and no queue, so a task can only move to an
    // idle operator.
    let mut net = Net::start(2 * args.trials + 1, 1, 0).await?;
    let keys: Vec<PublicKey> = net
        .operators
        .iter()
        .flatten()
        .map(|o| o.public_key())
        .collect();
    let mut to_assigned = Vec::new();
    let mut to_running = Vec::new();
    let api = net.mm.api().clone();
    for trial in 0..args.trials {
        let mut progress = api.subscribe();
        // Long enough that the victim is certainly still running it when it dies.
        let w = independent(&format!("failover-{trial}"), 1, 30_000)?;
        let id = api.submit(w).await.context("submitting")?;
        let end = tokio::time::Instant::now() + Duration::from_secs(60);
        // Wait until an operator runs the task.
        let victim = loop {
            if let Progress::Task {
                workflow,
                state: TaskState::Running { operator, .. },
                ..
            } = next_event(&mut progress, end).await?
            {
                if workflow == id {
                    break operator;
                }
            }
        };
        let slot = keys
            .iter()
            .position(|k| *k == victim)
            .context("unknown operator")?;
        let handle = net.operators[slot].take().context("operator ran twice")?;
        // Death: dropping the handle cancels the node at once; its sockets close as they would
        // on SIGKILL (no goodbye message exists to send).
        let died = Instant::now();
        drop(handle);
        let mut assigned_at = None;
        let running_at = loop {
            if let Progress::Task {
                workflow, state, ..
            } = next_event(&mut progress, end).await?
            {
                if workflow != id {
                    continue;
                }
                match state {
                    TaskState::Assigned { operator, .. } if operator != victim => {
                        assigned_at.get_or_insert_with(Instant::now);
                    }
                    TaskState::Running { operator, .. } if operator != victim => {
                        break Instant::now();
                    }
                    _ => {}
                }
            }
        };
        let a = assigned_at.unwrap_or(running_at).duration_since(died);
        let r = running_at.duration_since(died);
        eprintln!(
            "trial {trial}: assigned elsewhere after {:.1} ms, running after {:.1} ms",
            a.as_secs_f64() * 1000.0,
            r.as_secs_f64() * 1000.0
        );
        to_assigned.push(a.as_secs_f64() * 1000.0);
        to_running.push(r.as_secs_f64() * 1000.0);
    }
    let max_a = to_assigned.iter().copied().fold(0.0, f64::max);
    let max_r = to_running.iter().copied().fold(0.0, f64::max);
    println!(
        "trials={} heartbeat_timeout_ms={} assigned_p50_ms={:.1} assigned_max_ms={max_a:.1} running_p50_ms={:.1} running_max_ms={max_r:.1}",
        args.trials,
        heartbeat_timeout_ms(),
        median(&mut to_assigned),
        median(&mut to_running),
    );
    // The remaining operators still run the last tasks (30 s sleeps): stop them now.
    net.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Workflow {
        spec::load(text, Format::Toml).expect("valid").0
    }

    #[test]
    fn stages_are_names_without_their_last_index() {
        assert_eq!(stage("leaf[17]"), "leaf");
        assert_eq!(stage("agg[3][5]"), "agg[3]");
        assert_eq!(stage("witness"), "witness");
        assert_eq!(stage("odd[name"), "odd[name");
    }

    #[test]
    fn sleep_pipeline_bounds() {
        let w = load(SLEEP_PIPELINE);
        assert_eq!(w.tasks.len(), 1025);
        let i = ideal(&w, 8).expect("sleep tasks");
        // witness 10 + leaf 10 + 9 aggregation levels x 5 + final 5.
        assert_eq!(i.critical_ms, 70.0);
        // 10 + 512 x 10 + 511 x 5 + 5.
        assert_eq!(i.work_slot_ms, 7_690.0);
        assert_eq!(i.bound_ms, 7_690.0 / 8.0);
        assert!(i.list_ms >= i.bound_ms, "{i:?}");
        // The witness runs alone, then the rest packs nearly perfectly.
        assert!(i.list_ms <= i.bound_ms + 70.0, "{i:?}");
    }

    #[test]
    fn chain_is_bounded_by_its_critical_path() {
        let w = load(
            "name = \"c\"\n[[task]]\nid = \"a\"\nprogram = \"sleep@1\"\nargs = [\"--ms\", \"30\"]\n\
             [[task]]\nid = \"b\"\nprogram = \"sleep@1\"\nargs = [\"--ms\", \"20\"]\ndeps = [\"a\"]\n",
        );
        let i = ideal(&w, 4).expect("ok");
        assert_eq!((i.critical_ms, i.bound_ms, i.list_ms), (50.0, 50.0, 50.0));
    }

    #[test]
    fn round_spreads_group_starts_by_their_nearest_round() {
        // Three slots of 100 ms tasks: the first wave 0-5 ms, one slot 4 ms later again at the
        // second boundary, and a round nobody started is 0 wide.
        let starts = [0.0, 2.0, 5.0, 100.0, 103.0, 109.0, 200.0, 213.0, 249.0];
        assert_eq!(round_spreads(&starts, 100.0), vec![5.0, 9.0, 49.0]);
        assert_eq!(round_spreads(&[0.0, 230.0], 100.0), vec![0.0, 0.0, 0.0]);
        // Past half a task late, a start counts in the next round.
        assert_eq!(
            round_spreads(&[0.0, 1.0, 151.0], 100.0),
            vec![1.0, 0.0, 0.0]
        );
        assert!(round_spreads(&[], 100.0).is_empty());
    }

    #[test]
    fn non_sleep_programs_are_refused() {
        let w = load("name = \"p\"\n[[task]]\nid = \"a\"\nprogram = \"leaf@1\"\n");
        let e = ideal(&w, 1).expect_err("refused").to_string();
        assert!(e.contains("only sleep and noop"), "{e}");
    }
}
