//! Decision cost with 1,000 operators and 10,000 ready tasks, and memory per tracked task.
//!
//! - `dispatch/10k_ready_1000_ops`: one submission of 10,000 independent tasks to 1,000
//!   operators with 10 GPUs each; the matchmaker makes 10,000 assignments (ingest included).
//! - `steady/result_then_assign`: 1,000 single-GPU operators all busy and 10,000 tasks queued;
//!   each iteration is one accepted result (scheduling path only: the `AcceptAll` checker, no
//!   signature check) which frees a GPU and triggers one new assignment.
//! - Memory per tracked task is printed first (an estimate from `size_of` and container
//!   capacities: a counting global allocator needs `unsafe`, which the workspace forbids).

use criterion::{BatchSize, Criterion, Throughput};
use proofmesh_matchmaker::sim::{sim_task, zk_pipeline};
use proofmesh_matchmaker::{AcceptAll, Config, Decision, Event, Matchmaker};
use proofmesh_protocol::messages::{
    Assignment, Capacity, GpuInfo, OperatorAdvert, SignedResult, TaskResult,
};
use proofmesh_protocol::{ContentId, Keypair, Program, Signature, Workflow};
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn matchmaker(operators: u32, gpus: u32) -> Matchmaker {
    let mut mm = Matchmaker::with_checker(Config::default(), Box::new(AcceptAll));
    for i in 0..operators {
        let mut secret = [0u8; 32];
        secret[..4].copy_from_slice(&i.to_le_bytes());
        let key = Keypair::from_secret_bytes(secret).public();
        let advert = OperatorAdvert {
            operator: key,
            eth_address: None,
            capacity: Capacity {
                cpu: 4 * gpus,
                memory_mb: 32_768 * u64::from(gpus),
                disk_mb: 1_000_000,
                gpus: (0..gpus)
                    .map(|g| GpuInfo {
                        index: g,
                        model: "H100".into(),
                        vram_mb: 81_920,
                        uuid: String::new(),
                    })
                    .collect(),
            },
            programs: vec![Program {
                name: "work".into(),
                version: "1".into(),
            }],
            price_wei: 1_000 + u128::from(i % 7),
            queue: 0,
            max_tasks: 0,
            trusts: Vec::new(),
        };
        mm.handle(0, Event::OperatorAdvert(advert));
        // Established operators (on-chain history), as in a running network.
        mm.handle(
            0,
            Event::Reputation {
                operator: key,
                completed: 100 + u64::from(i % 13),
                failed: u64::from(i % 3),
                slashed: 0,
            },
        );
    }
    mm
}

fn flat(n: u32, salt: u64) -> Workflow {
    Workflow {
        name: format!("flat-{salt}"),
        ordering: None,
        deadline_ms: 0,
        tasks: (0..n)
            .map(|i| sim_task(format!("t{i}"), "work", vec![], 10 + u64::from(i % 5), 3))
            .collect(),
    }
}

fn submit(mm: &mut Matchmaker, wf: Workflow, out: &mut Vec<Decision>) {
    let id = wf.id();
    mm.handle_into(
        1,
        Event::WorkflowSubmitted {
            id,
            workflow: wf,
            submitted_at_ms: 1,
        },
        out,
    );
}

fn result(a: &Assignment, now: u64) -> Event {
    Event::Result(SignedResult {
        result: TaskResult {
            workflow: a.workflow,
            task: a.task,
            attempt: a.attempt,
            operator: a.operator,
            output: ContentId::default(),
            output_bytes: 0,
            started_ms: now.saturating_sub(10),
            finished_ms: now,
            resources: a.resources,
            gpus: a.gpus.clone(),
        },
        signature: Signature([0; 64]),
        eth_claim: None,
    })
}

fn report_memory() {
    let mut mm = matchmaker(32, 8);
    let wf = zk_pipeline(512, 10, 5, 5, 5).workflow;
    let mut out = Vec::new();
    submit(&mut mm, wf, &mut out);
    let e = mm.memory_estimate();
    println!(
        "memory: 1025-task pipeline: {} tracked tasks, {} bytes, {} bytes/task",
        e.tracked_tasks,
        e.bytes,
        e.per_task()
    );
    let mut mm = matchmaker(1000, 1);
    submit(&mut mm, flat(11_000, 0), &mut out);
    let e = mm.memory_estimate();
    println!(
        "memory: 11,000 flat tasks (1,000 in flight, 10,000 ready): {} bytes, {} bytes/task",
        e.bytes,
        e.per_task()
    );
}

fn bench_dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(10);
    let base = matchmaker(1000, 10);
    let wf = flat(10_000, 1);
    g.bench_function("10k_ready_1000_ops", |b| {
        b.iter_batched(
            || {
                (
                    clone_matchmaker(&base),
                    wf.clone(),
                    Vec::with_capacity(10_000),
                )
            },
            |(mut mm, wf, mut out)| {
                submit(&mut mm, wf, &mut out);
                assert_eq!(out.len(), 10_000);
                black_box(out.len())
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Matchmaker has no Clone (it owns a boxed checker); rebuild the same operator set.
fn clone_matchmaker(_base: &Matchmaker) -> Matchmaker {
    matchmaker(1000, 10)
}

fn bench_steady(c: &mut Criterion) {
    let mut g = c.benchmark_group("steady");
    g.throughput(Throughput::Elements(1));
    g.bench_function("result_then_assign", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            let mut salt = 0u64;
            while done < iters {
                salt += 1;
                let mut mm = matchmaker(1000, 1);
                let mut out = Vec::new();
                submit(&mut mm, flat(11_000, salt), &mut out);
                let mut inflight: VecDeque<Assignment> = out
                    .drain(..)
                    .filter_map(|d| match d {
                        Decision::Assign(a) => Some(a),
                        _ => None,
                    })
                    .collect();
                let batch = (iters - done).min(10_000);
                let mut now = 100;
                let start = Instant::now();
                for _ in 0..batch {
                    now += 1;
                    let Some(a) = inflight.pop_front() else { break };
                    mm.handle_into(now, result(&a, now), &mut out);
                    for d in out.drain(..) {
                        if let Decision::Assign(a) = d {
                            inflight.push_back(a);
                        }
                    }
                }
                total += start.elapsed();
                done += batch;
            }
            total
        })
    });
    g.finish();
}

fn main() {
    report_memory();
    let mut c = Criterion::default().configure_from_args();
    bench_dispatch(&mut c);
    bench_steady(&mut c);
    c.final_summary();
}
