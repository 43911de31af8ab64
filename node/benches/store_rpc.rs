//! Store and RPC latencies: durable writes (each one a fsynced redb commit), status
//! computation for the 1,025-task pipeline (alone, and judged against 32 present operators as
//! `pm_status` does), its quote, and JSON-RPC round trips over a loopback WebSocket.
//!
//! `cargo bench -p proofmesh-node --bench store_rpc -- [--iters 200]`
//! The last line is `key=value` pairs (milliseconds).

use prometheus_client::registry::Registry;
use proofmesh_node::config::RpcConfig;
use proofmesh_node::metrics::{NodeMetrics, SharedRegistry};
use proofmesh_node::rpc::{self, compute_status, offers, NodeInfo, RpcClient, StoreApi};
use proofmesh_node::store::{Retention, Store, TaskState, WorkflowState};
use proofmesh_protocol::messages::{
    Capacity, OperatorAdvert, SignedResult, Submission, TaskResult,
};
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{ContentId, Keypair, Resources};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn pipeline_text(name: &str) -> String {
    format!(
        r#"name = "{name}"
[[task]]
id = "witness"
program = "noop@1"
[[task]]
id = "leaf"
program = "noop@1"
count = 512
deps = ["witness"]
[[task]]
id = "agg"
program = "noop@1"
aggregate = {{ over = "leaf", arity = 2 }}
[[task]]
id = "final"
program = "noop@1"
deps = ["agg"]
"#
    )
}

/// Operator `i`: 16 cores, runs `noop@1`.
fn advert(i: u32) -> OperatorAdvert {
    OperatorAdvert {
        operator: Keypair::from_secret_bytes([i as u8 + 1; 32]).public(),
        eth_address: None,
        capacity: Capacity {
            cpu: 16,
            memory_mb: 65_536,
            disk_mb: 100_000,
            gpus: Vec::new(),
        },
        programs: vec![proofmesh_protocol::Program {
            name: "noop".into(),
            version: "1".into(),
        }],
        price_wei: u128::from(i),
        queue: 4,
        max_tasks: 0,
        trusts: Vec::new(),
    }
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64() * 1e3)
}

fn main() {
    let mut iters = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--iters" {
            iters = args.next().and_then(|v| v.parse().ok()).unwrap_or(iters);
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open store");
    let owner = Keypair::generate();
    let op = Keypair::generate();

    let mut put = Vec::new();
    let mut accept = Vec::new();
    let mut events = Vec::new();
    let mut last = None;
    for i in 0..iters {
        let sub = pipeline_submission(&format!("bench-{i}"), &owner);
        let ((id, _), ms) = time(|| store.put_workflow(&sub, 0).expect("put"));
        put.push(ms);
        let result = result_of(&op, id, 1, ContentId::of_bytes(&i.to_le_bytes()), 8);
        accept.push(time(|| store.accept_result(&result).expect("accept")).1);
        let batch: Vec<Vec<u8>> = (0..100).map(|j: u32| j.to_le_bytes().to_vec()).collect();
        events.push(time(|| store.append_events(&batch).expect("append")).1);
        last = Some(id);
    }
    let id = last.expect("at least one iteration");
    for t in 0..1025u32 {
        store
            .set_task_state(&id, t, TaskState::Ready)
            .expect("task");
    }
    let record = store.workflow(&id).expect("read").expect("present");
    let mut status = Vec::new();
    for _ in 0..iters {
        status.push(time(|| compute_status(&record, &store.tasks(&id).expect("tasks"), None)).1);
    }
    // 32 operators present that run noop@1 (every stage matched): the status of an active
    // workflow then also reads the operators and judges its stages against them, as `pm_status`
    // does; and the quote of the same workflow.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    for i in 0..32u32 {
        store.put_operator_advert(&advert(i), now).expect("advert");
    }
    let mut status_offers = Vec::new();
    let mut quotes = Vec::new();
    for _ in 0..iters {
        status_offers.push(
            time(|| {
                let ops = offers::present_operators(&store.operators().expect("operators"), now);
                compute_status(&record, &store.tasks(&id).expect("tasks"), Some(&ops))
            })
            .1,
        );
        let ops = offers::present_operators(&store.operators().expect("operators"), now);
        quotes.push(time(|| offers::quote(&record.submission.workflow, &ops)).1);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (rpc_status, rpc_submit) = rt.block_on(async {
        let mut registry = Registry::default();
        let metrics = NodeMetrics::register(&mut registry);
        let registry: SharedRegistry = Arc::new(Mutex::new(registry));
        let api = StoreApi::new(store.clone(), owner.public(), NodeInfo::default());
        let config = RpcConfig {
            enabled: true,
            bind: "127.0.0.1:0".parse().expect("addr"),
            token: None,
        };
        let server = rpc::spawn(&config, Arc::new(api), registry, Some(metrics))
            .await
            .expect("rpc");
        let mut client = RpcClient::connect(&server.url(), None)
            .await
            .expect("connect");
        let id_hex = id.to_hex();
        let mut st = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            client.status(&id_hex).await.expect("status");
            st.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut sub = Vec::new();
        for i in 0..iters.min(100) {
            let text = pipeline_text(&format!("rpc-{i}"));
            let t = Instant::now();
            client.submit_workflow(&text, "toml").await.expect("submit");
            sub.push(t.elapsed().as_secs_f64() * 1e3);
        }
        (st, sub)
    });

    // Pruning: completed 1,025-task workflows, each task with its own output blob, indexed and
    // pruned 1,000 task records a call (one write transaction: what the node's commits may
    // wait behind). Twice over: the second round's workflows reuse the pages the first round's
    // freed, so the file stops growing.
    let rounds = iters.min(20);
    let mut prunes = pruned_workflows(&store, &owner, &op, rounds, "a");
    let file_mb =
        |store: &Store| std::fs::metadata(store.db_path()).expect("db file").len() as f64 / 1e6;
    let mb_once = file_mb(&store);
    prunes.extend(pruned_workflows(&store, &owner, &op, rounds, "b"));
    let prune_ms_per_workflow = prunes.iter().sum::<f64>() / (2 * rounds) as f64;
    let prune_calls = prunes.len();
    let mb_twice = file_mb(&store);

    let (put50, put99) = percentiles(put);
    let (acc50, acc99) = percentiles(accept);
    let (ev50, ev99) = percentiles(events);
    let (cs50, cs99) = percentiles(status);
    let (co50, co99) = percentiles(status_offers);
    let (q50, q99) = percentiles(quotes);
    let (rs50, rs99) = percentiles(rpc_status);
    let (sb50, sb99) = percentiles(rpc_submit);
    let (pr50, pr99) = percentiles(prunes);
    println!(
        "iters={iters} put_workflow_1025_p50_ms={put50:.3} put_workflow_1025_p99_ms={put99:.3} \
         accept_result_p50_ms={acc50:.3} accept_result_p99_ms={acc99:.3} \
         append_100_events_p50_ms={ev50:.3} append_100_events_p99_ms={ev99:.3} \
         status_1025_p50_ms={cs50:.3} status_1025_p99_ms={cs99:.3} \
         status_1025_ops_32_p50_ms={co50:.3} status_1025_ops_32_p99_ms={co99:.3} \
         quote_1025_ops_32_p50_ms={q50:.3} quote_1025_ops_32_p99_ms={q99:.3} \
         rpc_status_1025_p50_ms={rs50:.3} rpc_status_1025_p99_ms={rs99:.3} \
         rpc_submit_1025_p50_ms={sb50:.3} rpc_submit_1025_p99_ms={sb99:.3} \
         prune_calls={prune_calls} prune_call_p50_ms={pr50:.3} prune_call_p99_ms={pr99:.3} \
         prune_ms_per_1025_task_workflow={prune_ms_per_workflow:.3} \
         store_mb_after_one_round={mb_once:.1} store_mb_after_two_rounds={mb_twice:.1}"
    );
}

/// The 1,025-task pipeline named `name`, submitted by `owner`.
fn pipeline_submission(name: &str, owner: &Keypair) -> Submission {
    let (workflow, _) = spec::load(&pipeline_text(name), Format::Toml).expect("valid");
    Submission {
        workflow,
        owner: owner.public(),
        owner_eth: None,
        escrow: None,
        submitted_at_ms: 0,
    }
}

/// `op`'s signed result of `task` of workflow `id`, whose output is `output` (`bytes` long).
fn result_of(
    op: &Keypair,
    id: ContentId,
    task: u32,
    output: ContentId,
    bytes: u64,
) -> SignedResult {
    SignedResult::sign(
        op,
        TaskResult {
            workflow: id,
            task,
            attempt: 1,
            operator: op.public(),
            output,
            output_bytes: bytes,
            started_ms: 0,
            finished_ms: 1,
            resources: Resources::default(),
            gpus: Vec::new(),
        },
    )
}

/// Milliseconds of each [`Store::prune_finished`] call (indexing their outputs, then pruning
/// them) until `n` completed 1,025-task workflows are gone (every task's result and output
/// blob written in one batch first).
fn pruned_workflows(
    store: &Store,
    owner: &Keypair,
    op: &Keypair,
    n: usize,
    round: &str,
) -> Vec<f64> {
    for i in 0..n {
        let sub = pipeline_submission(&format!("pruned-{round}-{i}"), owner);
        let (id, _) = store.put_workflow(&sub, 0).expect("put");
        let batch = store.batched();
        for task in 0..1025u32 {
            let output = batch
                .put_blob(format!("output {round} {i} {task}").as_bytes())
                .expect("blob");
            batch
                .accept_result(&result_of(op, id, task, output, 16))
                .expect("accept");
        }
        batch.end_batch().expect("commit");
        store
            .set_workflow_state(&id, WorkflowState::Completed)
            .expect("completed");
    }
    // The default budget: 1,000 task records a call.
    let retention = Retention {
        blob_grace: Duration::ZERO,
        ..Retention::keeping(Duration::ZERO)
    };
    let mut calls = Vec::new();
    loop {
        let t = Instant::now();
        let pruning = store.prune_finished(&retention, 1).expect("prune");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if pruning.indexed + pruning.removed == 0 && pruning.workflows.is_empty() {
            break;
        }
        calls.push(ms);
    }
    calls
}
