//! A workflow with stages no operator can run: the submission names them and why, the status
//! keeps naming them while the rest runs, and once an operator that can run them advertises they
//! run and the workflow completes (nothing fails for want of an operator).

use crate::cluster::{matchmaker_and_operator, metric, options, toml_workflow, Role};
use proofmesh_node::rpc::{NodeApi, SubmitRequest, UnmatchedStage, WorkflowStatus};
use proofmesh_node::runtime::Node;
use proofmesh_protocol::messages::{Capacity, GpuInfo};
use proofmesh_protocol::{ContentId, Workflow};
use std::time::Duration;
use tokio::time::{sleep, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// Two one-core leaves; `wrap` after them on one GPU of 40 GiB; `big` on eight cores.
fn workflow() -> Workflow {
    let text = r#"
name = "unmatched"
[defaults]
resources = { cpu = 1, memory_gb = 0.5 }
timeout_s = 20

[[task]]
id = "leaf"
program = "sleep@1"
args = ["--ms", "20"]
count = 2

[[task]]
id = "wrap"
program = "sleep@1"
args = ["--ms", "20"]
deps = ["leaf"]
resources = { cpu = 1, memory_gb = 0.5, gpu = 1, vram_gb = 40 }

[[task]]
id = "big"
program = "sleep@1"
args = ["--ms", "20"]
resources = { cpu = 8, memory_gb = 0.5 }
"#;
    toml_workflow(text)
}

async fn status_until(
    api: &impl NodeApi,
    id: ContentId,
    what: &str,
    pred: impl Fn(&WorkflowStatus) -> bool,
) -> WorkflowStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = api.status(id).await.expect("known");
        if pred(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}: {status:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

fn unmatched<'a>(status: &'a WorkflowStatus, stage: &str) -> Option<&'a str> {
    let stage = status
        .stages
        .iter()
        .find(|s| s.name == stage)
        .expect("stage");
    stage.unmatched.as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_no_operator_can_run_are_named_and_run_once_one_can() {
    let (mm_dir, op_dir, big_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (mm, op) =
        matchmaker_and_operator(options(mm_dir.path(), Role::Matchmaker, &[]), op_dir.path()).await;
    let deadline = Instant::now() + WAIT;
    while NodeApi::operators(mm.api()).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the operator never advertised");
        sleep(Duration::from_millis(20)).await;
    }

    // A quote first: the same two stages, and the two leaves priced.
    let quote = NodeApi::quote(mm.api(), workflow()).await.expect("quoted");
    assert_eq!(
        (quote.tasks, quote.operators, quote.unmatched_tasks),
        (4, 1, 2)
    );
    assert_eq!(
        quote
            .unmatched
            .iter()
            .map(|u| u.stage.as_str())
            .collect::<Vec<_>>(),
        ["wrap", "big"]
    );
    // A node that only operates follows no adverts: it cannot say, and says so.
    let err = NodeApi::quote(op.api(), workflow())
        .await
        .expect_err("blind");
    assert!(
        err.to_string().contains("ask a gateway or a matchmaker"),
        "{err}"
    );

    let outcome = NodeApi::submit(mm.api(), SubmitRequest::Workflow(workflow()))
        .await
        .expect("accepted all the same");
    assert!(outcome.new);
    assert_eq!(
        outcome.unmatched,
        vec![
            UnmatchedStage {
                stage: "wrap".into(),
                reason: "needs 1 GPU(s) with 40960 MiB of VRAM; operators running sleep@1 (1) \
                         have at most 0"
                    .into(),
            },
            UnmatchedStage {
                stage: "big".into(),
                reason: "needs 8 cores; operators running sleep@1 (1) have at most 2".into(),
            },
        ]
    );
    let id: ContentId = outcome.id.parse().expect("hex id");

    // The leaves run; the other two stages wait, and the status says why.
    let status = status_until(mm.api(), id, "the leaves done", |s| s.stages[0].done == 2).await;
    assert_eq!(status.state, "active");
    assert_eq!(unmatched(&status, "leaf"), None);
    assert!(
        unmatched(&status, "wrap").is_some_and(|r| r.contains("40960 MiB of VRAM")),
        "{status:?}"
    );
    assert!(
        unmatched(&status, "big").is_some_and(|r| r.contains("8 cores")),
        "{status:?}"
    );
    // The matchmaker counts both as ready with nobody to run them (refreshed every 250 ms).
    let deadline = Instant::now() + WAIT;
    while metric(&mm, "proofmesh_matchmaker_unmatched_ready_tasks") != 2.0 {
        assert!(Instant::now() < deadline, "the gauge never showed both");
        sleep(Duration::from_millis(20)).await;
    }
    let status = NodeApi::status(mm.api(), id).await.unwrap();
    assert_eq!(
        (status.state.as_str(), status.done),
        ("active", 2),
        "nothing else ran"
    );

    // An operator with eight cores and a 48 GiB GPU joins: both stages run, nothing failed.
    let mut big = options(big_dir.path(), Role::Operator, mm.listen_addrs());
    big.operator.as_mut().expect("operator").capacity = Some(Capacity {
        cpu: 8,
        memory_mb: 16_384,
        disk_mb: 10_000,
        gpus: vec![GpuInfo {
            index: 0,
            model: "test GPU".into(),
            vram_mb: 49_152,
            uuid: "GPU-test-0".into(),
        }],
    });
    let _big = Node::spawn(big).await.expect("the big operator starts");
    let status = status_until(mm.api(), id, "completion", |s| s.state != "active").await;
    assert_eq!((status.state.as_str(), status.done), ("completed", 4));
    sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(&mm, "proofmesh_matchmaker_unmatched_ready_tasks"),
        0.0
    );
    assert!(status
        .stages
        .iter()
        .all(|s| s.unmatched.is_none() && s.failed_attempts == 0));
}
