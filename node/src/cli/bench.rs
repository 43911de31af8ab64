//! `proofmesh bench overhead`: orchestration overhead per task, measured on whole nodes run
//! in-process over loopback sockets (a gateway + matchmaker node and N operator nodes running
//! the operator crate's built-in `noop` or `sleep` program).
//!
//! Per task, overhead = (result accepted - task assigned) - compute time the operator reported,
//! with both instants observed on the matchmaker node: what the network, the operator's
//! bookkeeping, signing, the result check and the store add to each task. The last line is
//! `key=value` pairs for scripts.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use proofmesh_node::network::{Multiaddr, NetworkConfig};
use proofmesh_node::runtime::{Node, NodeOptions, OperatorOptions, Progress};
use proofmesh_node::store::{TaskState, WorkflowState};
use proofmesh_operator::{OperatorConfig, ProgramSpec};
use proofmesh_protocol::messages::Capacity;
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{Domain, Keypair, PublicKey};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `proofmesh bench ...`.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Orchestration overhead per task (end-to-end minus compute).
    Overhead(OverheadArgs),
    /// The 1,025-task sleep pipeline: makespan against the ideal bound (`efficiency=`).
    Pipeline(super::bench_pipeline::PipelineArgs),
    /// Weak scaling on sleep tasks at 1, 2, 4, ... operators (`efficiency_N=`).
    Scaling(super::bench_pipeline::ScalingArgs),
    /// Time from an operator's death to its task running elsewhere.
    Failover(super::bench_pipeline::FailoverArgs),
    /// Resident memory kept per finished workflow by a long-running node (`kb_per_workflow=`).
    Memory(super::bench_memory::MemoryArgs),
}

/// Arguments of `proofmesh bench overhead`.
#[derive(Args, Debug)]
pub struct OverheadArgs {
    /// Operator nodes.
    #[arg(long, default_value_t = 2)]
    pub operators: u32,
    /// Independent tasks in the workflow.
    #[arg(long, default_value_t = 1000)]
    pub tasks: u32,
    /// Program: `noop`, or `sleep` (with --ms).
    #[arg(long, default_value = "noop")]
    pub program: String,
    /// Milliseconds each `sleep` task sleeps.
    #[arg(long, default_value_t = 10)]
    pub ms: u64,
    /// Concurrent task slots per operator (advertised CPU cores; each task takes one).
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Tasks each operator accepts beyond its slots (operator `queue_depth`; 0: off). A queued
    /// task's wait counts as overhead here: 0 measures the bare round trip per task.
    #[arg(long, default_value_t = 0)]
    pub queue_depth: usize,
    /// After the main run: one-task workflows submitted one at a time, each timed from
    /// `submit` to its first assignment (0 to skip).
    #[arg(long, default_value_t = 200)]
    pub latency_samples: u32,
    /// Run each operator as its own `proofmesh node` process (this binary, a config file per
    /// operator, as `devnet` does) instead of in this process. Operators then advertise the
    /// cores discovery finds (`--slots` does not apply).
    #[arg(long)]
    pub processes: bool,
}

/// Run it.
pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    let runtime = super::runtime()?;
    match cmd {
        BenchCommand::Overhead(args) => runtime.block_on(overhead(args)),
        BenchCommand::Pipeline(args) => super::bench_pipeline::run_pipeline(args),
        BenchCommand::Scaling(args) => super::bench_pipeline::run_scaling(args),
        BenchCommand::Failover(args) => super::bench_pipeline::run_failover(args),
        BenchCommand::Memory(args) => super::bench_memory::run_memory(args),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn overhead(args: OverheadArgs) -> anyhow::Result<ExitCode> {
    if args.tasks == 0 || args.operators == 0 {
        bail!("--tasks and --operators must be at least 1");
    }
    let (program, task_args) = match args.program.as_str() {
        "noop" => ("noop", String::new()),
        "sleep" => ("sleep", format!("args = [\"--ms\", \"{}\"]", args.ms)),
        other => bail!("--program {other:?}: use noop or sleep"),
    };
    let root = tempfile::tempdir().context("temp dir")?;
    let domain = Domain {
        network_id: 9_999,
        chain_id: 31337,
    };
    let (mm_opts, matchmaker) = bench_matchmaker(&root.path().join("mm"), domain);
    let mm = Node::spawn(mm_opts)
        .await
        .context("starting the matchmaker node")?;
    let boot: Vec<Multiaddr> = mm.listen_addrs().to_vec();
    let mut operators = Vec::new();
    let mut processes = Vec::new();
    for i in 0..args.operators {
        let dir = root.path().join(format!("op{i}"));
        if args.processes {
            let peer = mm.peer_id();
            let boot: Vec<String> = boot.iter().map(|a| format!("{a}/p2p/{peer}")).collect();
            processes.push(OperatorProcess::start(
                &dir,
                domain,
                &boot,
                args.queue_depth,
                matchmaker,
            )?);
            continue;
        }
        let o = builtin_operator_node(
            &dir,
            domain,
            &boot,
            args.slots,
            args.queue_depth,
            matchmaker,
        );
        operators.push(Node::spawn(o).await.context("starting an operator node")?);
    }
    // Wait until the operators are connected and have heartbeated.
    wait_for_operators(&mm, args.operators as usize, CONNECT_WITHIN, SETTLE).await?;

    let text = format!(
        "name = \"bench\"\n[defaults]\nresources = {{ cpu = 1, memory_gb = 0.01 }}\ntimeout_s = 60\nmax_attempts = 3\n\
         [[task]]\nid = \"t\"\nprogram = \"{program}@1\"\n{task_args}\ncount = {}\n",
        args.tasks
    );
    let workflow = spec::load(&text, Format::Toml).context("bench workflow")?.0;
    let api = mm.api().clone();
    let mut progress = api.subscribe();
    let cpu = CpuMeter::start();
    let started = Instant::now();
    let id = api.submit(workflow).await.context("submitting")?;
    let mut assigned: HashMap<u32, Instant> = HashMap::new();
    let mut done: HashMap<u32, Instant> = HashMap::new();
    let end = Instant::now() + Duration::from_secs(600);
    loop {
        let event = tokio::time::timeout_at(end.into(), progress.recv())
            .await
            .context("bench timed out")?;
        match event {
            Ok(Progress::Task { task, state, .. }) => match state {
                TaskState::Assigned { .. } => {
                    assigned.entry(task).or_insert_with(Instant::now);
                }
                TaskState::Done { .. } => {
                    done.insert(task, Instant::now());
                }
                _ => {}
            },
            Ok(Progress::Workflow {
                state: WorkflowState::Active,
                ..
            }) => {}
            Ok(Progress::Workflow { state, .. }) => {
                if state != WorkflowState::Completed {
                    bail!("workflow ended {state:?}");
                }
                break;
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                bail!("progress receiver lagged by {n} events")
            }
            Err(e) => bail!("progress stream ended: {e}"),
        }
    }
    let wall = started.elapsed();
    // This process's CPU per task: in-process, every node's; with `--processes`, the
    // matchmaker's alone (the operators' is their own processes').
    let cpu_ms_per_task = cpu.used().map_or(f64::NAN, |used| {
        used.as_secs_f64() * 1000.0 / f64::from(args.tasks)
    });
    let submit_to_assign = submit_latency(
        &api,
        &mut progress,
        program,
        &task_args,
        args.latency_samples,
    )
    .await?;
    let results = api.store().results(&id)?;
    let mut overheads = Vec::with_capacity(results.len());
    for (task, r) in &results {
        let (Some(a), Some(d)) = (assigned.get(task), done.get(task)) else {
            continue;
        };
        let compute_ms = r.result.finished_ms.saturating_sub(r.result.started_ms) as f64;
        overheads.push((d.duration_since(*a).as_secs_f64() * 1000.0 - compute_ms).max(0.0));
    }
    overheads.sort_by(|a, b| a.total_cmp(b));
    let tasks_per_s = args.tasks as f64 / wall.as_secs_f64();
    for op in operators {
        op.shutdown().await;
    }
    drop(processes);
    mm.shutdown().await;
    println!(
        "mode={} program={} operators={} queue_depth={} tasks={} measured={} wall_s={:.3} tasks_per_s={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} submit_assign_n={} submit_assign_p50_ms={:.3} submit_assign_p99_ms={:.3} cpu_ms_per_task={cpu_ms_per_task:.3}",
        if args.processes {
            "processes"
        } else {
            "in-process"
        },
        args.program,
        args.operators,
        args.queue_depth,
        args.tasks,
        overheads.len(),
        wall.as_secs_f64(),
        tasks_per_s,
        percentile(&overheads, 0.50),
        percentile(&overheads, 0.99),
        overheads.last().copied().unwrap_or(0.0),
        submit_to_assign.len(),
        percentile(&submit_to_assign, 0.50),
        percentile(&submit_to_assign, 0.99),
    );
    Ok(ExitCode::SUCCESS)
}

/// Submit-to-first-assignment: `samples` one-task workflows, each submitted once the previous
/// one is assigned; the time from calling `submit` to the task's `Assigned` progress event on
/// the same (gateway + matchmaker) node, in ms, sorted.
async fn submit_latency(
    api: &proofmesh_node::runtime::Api,
    progress: &mut tokio::sync::broadcast::Receiver<Progress>,
    program: &str,
    task_args: &str,
    samples: u32,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(samples as usize);
    for i in 0..samples {
        // A distinct name makes a distinct workflow id.
        let text = format!(
            "name = \"latency-{i}\"\n[defaults]\nresources = {{ cpu = 1, memory_gb = 0.01 }}\ntimeout_s = 60\n\
             [[task]]\nid = \"t\"\nprogram = \"{program}@1\"\n{task_args}\n"
        );
        let workflow = spec::load(&text, Format::Toml)
            .context("latency workflow")?
            .0;
        let t0 = Instant::now();
        let id = api.submit(workflow).await.context("submitting")?;
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(end.into(), progress.recv())
                .await
                .context("no assignment within 30 s")?
            {
                Ok(Progress::Task {
                    workflow,
                    state: TaskState::Assigned { .. },
                    ..
                }) if workflow == id => {
                    out.push(t0.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => bail!("progress stream ended: {e}"),
            }
        }
    }
    out.sort_by(|a, b| a.total_cmp(b));
    Ok(out)
}

/// An operator node run as its own `proofmesh node` process; killed when dropped.
struct OperatorProcess(std::process::Child);

impl OperatorProcess {
    /// Write a config under `dir` (built-in `noop` and `sleep`, no RPC, 200 ms heartbeats like
    /// the in-process bench's) and start this binary on it, bootstrapped to `bootstrap`.
    fn start(
        dir: &std::path::Path,
        domain: Domain,
        bootstrap: &[String],
        queue_depth: usize,
        matchmaker: PublicKey,
    ) -> anyhow::Result<OperatorProcess> {
        use proofmesh_node::config::{NodeConfig, RolesSection};
        std::fs::create_dir_all(dir)?;
        let mut cfg = NodeConfig {
            data_dir: dir.join("data"),
            roles: RolesSection {
                operator: true,
                matchmaker: false,
            },
            ..NodeConfig::default()
        };
        cfg.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        cfg.network.bootstrap = bootstrap.to_vec();
        cfg.network.network_id = domain.network_id;
        cfg.network.matchmakers = vec![matchmaker.to_hex()];
        cfg.chain.chain_id = domain.chain_id;
        cfg.rpc.enabled = false;
        cfg.metrics.enabled = false;
        cfg.log.filter = "warn".into();
        let operator: toml::Table = toml::from_str(&format!(
            "work_dir = {:?}\nheartbeat_ms = 200\nqueue_depth = {queue_depth}\n[programs]\n\
             \"noop@1\" = {{ builtin = \"noop\" }}\n\"sleep@1\" = {{ builtin = \"sleep\" }}\n",
            dir.join("work").display().to_string()
        ))?;
        cfg.operator = Some(operator);
        let config = dir.join("node.toml");
        std::fs::write(&config, toml::to_string(&cfg)?)?;
        let log = std::fs::File::create(dir.join("node.log"))?;
        // Not `devnet::spawn_node`: that puts the node in its own process group so it outlives
        // the terminal; these stay in ours, so Ctrl-C on the bench stops them too.
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("node")
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting an operator process")?;
        Ok(OperatorProcess(child))
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User + system CPU time of this process so far, from `/proc/self/stat` (Linux; clock ticks
/// of 10 ms, fine against a run's hundreds of ms of CPU). `None` elsewhere.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, hence the last ')'): state is
    // field 3, utime and stime are fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel reports these in USER_HZ, 100 on every architecture Rust targets on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// This process's CPU time since [`CpuMeter::start`] (see [`process_cpu`]).
pub(crate) struct CpuMeter(Option<Duration>);

impl CpuMeter {
    pub(crate) fn start() -> Self {
        CpuMeter(process_cpu())
    }

    /// CPU used since the start; `None` where it cannot be read.
    pub(crate) fn used(&self) -> Option<Duration> {
        process_cpu()
            .zip(self.0)
            .map(|(now, start)| now.saturating_sub(start))
    }
}

/// How long the overhead and memory benches wait for their operators to connect
/// ([`wait_for_operators`]).
pub(crate) const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// How long they then wait for the operators' adverts and first heartbeats.
pub(crate) const SETTLE: Duration = Duration::from_millis(600);

/// Wait until `n` operators are connected to the matchmaker node `mm` (at most `within`),
/// then `settle` more for their adverts and first heartbeats to reach it.
pub(crate) async fn wait_for_operators(
    mm: &proofmesh_node::runtime::NodeHandle,
    n: usize,
    within: Duration,
    settle: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while mm.peers().await?.len() < n {
        if Instant::now() > deadline {
            bail!("operators did not connect in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(settle).await;
    Ok(())
}

/// Options for an in-process benchmark node: the test options (loopback, port 0, a temp dir)
/// with the network's production timings, so that a benchmark does not pay test-only chatter
/// a deployment would not (gossipsub heartbeats every 100 ms and a kademlia bootstrap every
/// 5 s on every node: with 33 nodes on 2 cores that alone took a fifth of the CPU).
pub(crate) fn bench_node(
    dir: &std::path::Path,
    domain: Domain,
    matchmaker: PublicKey,
) -> NodeOptions {
    let mut o = NodeOptions::test(dir, domain);
    // Configured as a deployment is: only the bench's matchmaker's decisions count.
    o.trusted_matchmakers = vec![matchmaker];
    let production = NetworkConfig::new(domain);
    o.network.gossip = production.gossip;
    o.network.kad_bootstrap_interval = production.kad_bootstrap_interval;
    o.network.publish_retry_interval = production.publish_retry_interval;
    o.rpc = None;
    // The production retention: every blob put is noted for its grace.
    o.retention = proofmesh_node::runtime::options::retention_for(
        proofmesh_node::config::DEFAULT_RETAIN_FINISHED_SECS,
    );
    o
}

/// Options for the benchmarks' matchmaker node, with its key (which every node trusts).
pub(crate) fn bench_matchmaker(dir: &std::path::Path, domain: Domain) -> (NodeOptions, PublicKey) {
    let key = Keypair::generate();
    let mut o = bench_node(dir, domain, key.public()).with_test_matchmaker();
    let public = key.public();
    o.keypair = Some(key);
    (o, public)
}

/// Options for an in-process operator node that runs the operator crate's built-in `noop` and
/// `sleep` programs on `slots` cores with a queue of `queue_depth`, bootstrapped to `bootstrap`
/// (shared by the benches).
pub(crate) fn builtin_operator_node(
    dir: &std::path::Path,
    domain: Domain,
    bootstrap: &[Multiaddr],
    slots: u32,
    queue_depth: usize,
    matchmaker: PublicKey,
) -> NodeOptions {
    let mut o = bench_node(dir, domain, matchmaker);
    o.network.bootstrap = bootstrap.to_vec();
    let builtin = |name: &str| ProgramSpec::Builtin {
        builtin: name.into(),
    };
    let mut config = OperatorConfig::new(dir.join("operator"))
        .with_program("noop", "1", builtin("noop"))
        .with_program("sleep", "1", builtin("sleep"));
    config.queue_depth = queue_depth;
    let mut op = OperatorOptions::new(config);
    op.capacity = Some(Capacity {
        cpu: slots,
        memory_mb: 1 << 20,
        disk_mb: 1 << 20,
        gpus: Vec::new(),
    });
    op.heartbeat_interval = Duration::from_millis(200);
    o.operator = Some(op);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benches' CPU accounting reads this process's own clock: it moves with work done
    /// here, in whole ticks.
    #[cfg(target_os = "linux")]
    #[test]
    fn process_cpu_counts_this_process_work() {
        let before = process_cpu().expect("/proc/self/stat is readable on Linux");
        assert_eq!(before.as_millis() % 10, 0, "a whole number of 10 ms ticks");
        let started = Instant::now();
        let mut spins = 0u64;
        while process_cpu().expect("readable") < before + Duration::from_millis(30) {
            spins = std::hint::black_box(spins + 1);
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "30 s of busy work never reached 30 ms of CPU ({spins} reads)"
            );
        }
    }
}
