//! `proofmesh bench memory`: what a long-running node keeps per finished workflow. Runs
//! workflow after workflow (a fan-in of `noop` leaves) through a matchmaker node and operator
//! nodes in this process, and reports the growth of this process's resident memory between
//! the end of a warm-up and the end of the run, per workflow and per task. A node that forgot
//! nothing would grow with every task it ever saw; what it must keep is in its store.
//!
//! Then it restarts the matchmaker on its data and times it: a restart replays the whole event
//! log, which is never compacted.
//!
//! The warm-up lasts longer than every time window a node keeps messages for (envelopes live
//! 120 s, attempts are remembered 60 s past their deadlines, gossip's duplicate cache is
//! 60 s), so that what is measured after it is growth, not windows filling up.

use super::bench::{
    bench_matchmaker, builtin_operator_node, wait_for_operators, CONNECT_WITHIN, SETTLE,
};
use anyhow::{bail, Context};
use clap::Args;
use proofmesh_node::runtime::{Node, Progress};
use proofmesh_node::store::WorkflowState;
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{Domain, WorkflowId};
use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Arguments of `proofmesh bench memory`.
#[derive(Args, Debug)]
pub struct MemoryArgs {
    /// Workflows run after the warm-up (the measured ones).
    #[arg(long, default_value_t = 2000)]
    pub workflows: u32,
    /// Seconds of workflows run first, not measured (time windows and allocator pools fill).
    #[arg(long, default_value_t = 150)]
    pub warmup_s: u64,
    /// Leaves per workflow (plus one root that takes them all).
    #[arg(long, default_value_t = 64)]
    pub tasks: u32,
    /// Workflows in flight at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: u32,
    /// Operator nodes.
    #[arg(long, default_value_t = 2)]
    pub operators: u32,
    /// Each node's store page cache (MiB): a cache grows with the database up to its size
    /// (redb's default is 1 GiB), which would hide what the node itself keeps.
    #[arg(long, default_value_t = 8)]
    pub store_cache_mb: usize,
}

/// Run it.
pub fn run_memory(args: MemoryArgs) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(memory(args))
}

/// This process's resident memory (kB), from `/proc/self/status` (Linux).
fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Workflows in flight, and the count and memory since the warm-up ended.
struct Tally {
    running: HashSet<WorkflowId>,
    measured: u32,
    /// Resident memory (kB) and workflows submitted when the warm-up ended.
    warm: Option<(u64, u32)>,
    started: Instant,
    warmup: Duration,
}

impl Tally {
    /// Workflow `id` finished (`submitted` so far).
    fn finished(&mut self, id: WorkflowId, submitted: u32) {
        if !self.running.remove(&id) {
            return;
        }
        match self.warm {
            Some(_) => self.measured += 1,
            None if self.started.elapsed() >= self.warmup => {
                self.warm = Some((rss_kb().unwrap_or(0), submitted));
            }
            None => {}
        }
    }
}

async fn memory(args: MemoryArgs) -> anyhow::Result<ExitCode> {
    if args.workflows == 0 || args.tasks == 0 || args.operators == 0 || args.parallel == 0 {
        bail!("--workflows, --tasks, --operators and --parallel must be at least 1");
    }
    let root = tempfile::tempdir().context("temp dir")?;
    let domain = Domain {
        network_id: 9_998,
        chain_id: 31337,
    };
    let (mut mm_opts, matchmaker) = bench_matchmaker(&root.path().join("mm"), domain);
    let cache = Some(args.store_cache_mb << 20);
    mm_opts.store_cache_bytes = cache;
    let mm = Node::spawn(mm_opts.clone())
        .await
        .context("starting the matchmaker node")?;
    let boot = mm.listen_addrs().to_vec();
    let mut operators = Vec::new();
    for i in 0..args.operators {
        let dir = root.path().join(format!("op{i}"));
        let mut o = builtin_operator_node(&dir, domain, &boot, 4, 0, matchmaker);
        o.store_cache_bytes = cache;
        operators.push(Node::spawn(o).await.context("starting an operator node")?);
    }
    wait_for_operators(&mm, args.operators as usize, CONNECT_WITHIN, SETTLE).await?;

    let api = mm.api().clone();
    let mut progress = api.subscribe();
    let mut next = 0u32;
    let mut tally = Tally {
        running: HashSet::new(),
        measured: 0,
        warm: None,
        started: Instant::now(),
        warmup: Duration::from_secs(args.warmup_s),
    };
    let end = Instant::now() + tally.warmup + Duration::from_secs(1800);
    while tally.measured < args.workflows {
        while tally.running.len() < args.parallel as usize {
            let text = format!(
                "name = \"memory-{next}\"\n[defaults]\nresources = {{ cpu = 1, memory_gb = 0.01 }}\n\
                 timeout_s = 60\nmax_attempts = 3\n\
                 [[task]]\nid = \"leaf\"\nprogram = \"noop@1\"\ncount = {}\n\
                 [[task]]\nid = \"root\"\nprogram = \"noop@1\"\ndeps = [\"leaf\"]\n",
                args.tasks
            );
            let workflow = spec::load(&text, Format::Toml).context("bench workflow")?.0;
            tally
                .running
                .insert(api.submit(workflow).await.context("submitting")?);
            next += 1;
        }
        match tokio::time::timeout_at(end.into(), progress.recv())
            .await
            .context("bench timed out")?
        {
            Ok(Progress::Workflow {
                state: WorkflowState::Active,
                ..
            }) => {}
            Ok(Progress::Workflow { workflow, state }) => {
                if state != WorkflowState::Completed {
                    bail!("workflow {workflow} ended {state:?}");
                }
                tally.finished(workflow, next);
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Completions can be lost in a lag: ask the store.
                let ids: Vec<WorkflowId> = tally.running.iter().copied().collect();
                for id in ids {
                    if let Some(s) = api.status(&id)? {
                        if s.record.state != WorkflowState::Active {
                            tally.finished(id, next);
                        }
                    }
                }
            }
            Err(e) => bail!("progress stream ended: {e}"),
        }
    }
    let wall = tally.started.elapsed();
    let rss_end = rss_kb();
    let metric = |name| proofmesh_node::metrics::sample_sum(&mm.registry(), name);
    let view_tasks = metric("proofmesh_view_tasks");
    let snapshots = metric("proofmesh_matchmaker_snapshot_seconds_count");
    let snapshot_ms = if snapshots > 0.0 {
        metric("proofmesh_matchmaker_snapshot_seconds_sum") * 1000.0 / snapshots
    } else {
        0.0
    };
    for op in operators {
        op.shutdown().await;
    }
    let store = mm.api().store();
    let events = store.last_event_seq()?.map_or(0, |last| last + 1);
    // What a restart reads: the snapshot, and the log's events not yet dropped.
    let kept = store.iter_events_from(0).count();
    let snapshot_kb = store
        .matchmaker_snapshot()?
        .map_or(0.0, |(_, bytes)| bytes.len() as f64 / 1024.0);
    // Its store stays open while anything holds an `Api`.
    drop((api, progress));
    mm.shutdown().await;
    // The matchmaker again on its data: it reads its store, restores its snapshot and replays
    // the events after it.
    let restart = Instant::now();
    let mm = Node::spawn(mm_opts)
        .await
        .context("restarting the matchmaker node")?;
    let restart_ms = restart.elapsed().as_secs_f64() * 1000.0;
    mm.shutdown().await;
    let (warm_kb, warmup_workflows) = tally.warm.unwrap_or((0, 0));
    let end_kb = rss_end.unwrap_or(0);
    let grown_kb = end_kb.saturating_sub(warm_kb) as f64;
    let tasks_per_workflow = f64::from(args.tasks + 1);
    println!(
        "workflows={} warmup_workflows={} tasks_per_workflow={} operators={} store_cache_mb={} wall_s={:.1} rss_warm_mb={:.1} rss_end_mb={:.1} kb_per_workflow={:.2} bytes_per_task={:.0} view_tasks_end={view_tasks} matchmaker_events={events} log_events_kept={kept} snapshots={snapshots} snapshot_kb={snapshot_kb:.0} snapshot_ms={snapshot_ms:.1} matchmaker_restart_ms={restart_ms:.0}",
        args.workflows,
        warmup_workflows,
        args.tasks + 1,
        args.operators,
        args.store_cache_mb,
        wall.as_secs_f64(),
        warm_kb as f64 / 1024.0,
        end_kb as f64 / 1024.0,
        grown_kb / f64::from(args.workflows),
        grown_kb * 1024.0 / (f64::from(args.workflows) * tasks_per_workflow),
    );
    Ok(ExitCode::SUCCESS)
}
