//! The RPC server over a real loopback socket on port 0, backed by the store alone.

use crate::cluster::{noop_advert, now_ms};
use crate::store::{signed_result, submission};
use prometheus_client::registry::Registry;
use proofmesh_node::config::RpcConfig;
use proofmesh_node::metrics::{NodeMetrics, SharedRegistry};
use proofmesh_node::rpc::{
    self, codes, ClientError, NodeInfo, RpcClient, RpcError, RpcHandle, StoreApi, TaskQuery,
};
use proofmesh_node::store::{AttemptRecord, Store, TaskState, WorkflowState};
use proofmesh_protocol::messages::{Capacity, OperatorAdvert, SignedResult, TaskResult};
use proofmesh_protocol::{encoding, ContentId, Keypair};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VALID: &str = r#"
name = "rpc-test"
[[task]]
id = "witness"
program = "noop@1"
[[task]]
id = "leaf"
program = "noop@1"
count = 3
deps = ["witness"]
[[task]]
id = "final"
program = "noop@1"
deps = ["leaf"]
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    api: StoreApi,
    server: RpcHandle,
    owner: Keypair,
}

/// A node's RPC on a loopback port, without a token, and a client connected to it.
async fn started() -> (Fixture, RpcClient) {
    let f = start("127.0.0.1:0", None).await.unwrap();
    let client = RpcClient::connect(&f.server.url(), None).await.unwrap();
    (f, client)
}

async fn start(bind: &str, token: Option<&str>) -> Result<Fixture, RpcError> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let owner = Keypair::generate();
    let mut registry = Registry::default();
    let metrics = NodeMetrics::register(&mut registry);
    let registry: SharedRegistry = Arc::new(Mutex::new(registry));
    let info = NodeInfo {
        network_id: 7,
        chain_id: 31337,
        roles: vec!["matchmaker".into()],
        ..NodeInfo::default()
    };
    let api = StoreApi::new(store, owner.public(), info).with_metrics(metrics.clone());
    let config = RpcConfig {
        enabled: true,
        bind: bind.parse().unwrap(),
        token: token.map(String::from),
    };
    let server = rpc::spawn(&config, Arc::new(api.clone()), registry, Some(metrics)).await?;
    Ok(Fixture {
        _dir: dir,
        api,
        server,
        owner,
    })
}

/// Marks workflow `id` failed as its requester's cancellation does.
fn cancel(store: &Store, id: &ContentId) {
    let reason = "cancelled by its requester".to_owned();
    store
        .set_workflow_state(id, WorkflowState::Failed { reason })
        .unwrap();
}

/// Asserts that `result` is the JSON-RPC error `code` with a message containing `needle`.
fn assert_rpc_error<T: std::fmt::Debug>(result: Result<T, ClientError>, code: i64, needle: &str) {
    match result {
        Err(ClientError::Rpc { code: got, message }) => {
            assert_eq!(got, code, "{message}");
            assert!(message.contains(needle), "{needle:?} in {message}");
        }
        other => panic!("expected error {code} naming {needle:?}, got {other:?}"),
    }
}

/// Minimal HTTP/1.1 client (one request per connection): status and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", addr.port()))
        .await
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn submit_status_and_errors_over_websocket() {
    let (f, mut client) = started().await;

    let outcome = client.submit_workflow(VALID, "toml").await.unwrap();
    let (expected, _) =
        proofmesh_protocol::spec::load(VALID, proofmesh_protocol::Format::Toml).unwrap();
    assert_eq!(outcome.id, expected.id().to_hex());
    assert!(outcome.new);
    assert_eq!(outcome.tasks, 5);
    assert!(
        !client.submit_workflow(VALID, "toml").await.unwrap().new,
        "a duplicate is not new"
    );
    // Durable before the reply: the store already has it with this node as owner.
    let stored = f.api.store().workflow(&expected.id()).unwrap().unwrap();
    assert_eq!(stored.submission.owner, f.owner.public());

    let status = client.status(&outcome.id).await.unwrap();
    assert_eq!(status.state, "active");
    assert_eq!(status.tasks, 5);
    let names: Vec<_> = status
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.total, s.pending))
        .collect();
    assert_eq!(
        names,
        vec![("witness", 1, 1), ("leaf", 3, 3), ("final", 1, 1)]
    );
    // No operator is known to this node: each stage says so, over the wire as on submission.
    let why: Vec<_> = outcome
        .unmatched
        .iter()
        .map(|u| (u.stage.as_str(), u.reason.as_str()))
        .collect();
    assert_eq!(
        why,
        [
            ("witness", "no operator is known"),
            ("leaf", "no operator is known"),
            ("final", "no operator is known")
        ]
    );
    assert!(status
        .stages
        .iter()
        .all(|s| s.unmatched.as_deref() == Some("no operator is known")));
    // One that runs noop@1 advertises: nothing is left unexplained, and the field is gone.
    f.api
        .store()
        .put_operator_advert(&noop_advert(Keypair::generate().public()), now_ms())
        .unwrap();
    let status = client.status(&outcome.id).await.unwrap();
    assert!(
        status.stages.iter().all(|s| s.unmatched.is_none()),
        "{status:?}"
    );
    let raw: serde_json::Value = client
        .call("pm_status", serde_json::json!({ "id": outcome.id }))
        .await
        .unwrap();
    assert!(raw["stages"][0].get("unmatched").is_none(), "{raw}");

    // An invalid workflow: the error names the problem.
    let bad = VALID.replace(r#"deps = ["leaf"]"#, r#"deps = ["nosuchtask"]"#);
    assert_rpc_error(
        client.submit_workflow(&bad, "toml").await,
        codes::INVALID_PARAMS,
        "nosuchtask",
    );
    match client
        .submit_workflow("name = \"x\"\n[[task]\n", "toml")
        .await
    {
        Err(ClientError::Rpc { code, message }) => {
            assert_eq!(code, codes::INVALID_PARAMS);
            assert!(
                message.contains("line"),
                "syntax errors carry a position: {message}"
            );
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }

    // Unknown id.
    let unknown = ContentId([3; 32]).to_hex();
    match client.status(&unknown).await {
        Err(ClientError::Rpc { code, message }) => {
            assert_eq!(code, codes::UNKNOWN_WORKFLOW);
            assert!(
                message.contains("unknown workflow") && message.contains(&unknown),
                "{message}"
            );
        }
        other => panic!("expected unknown-workflow error, got {other:?}"),
    }
    match client.status("not-hex").await {
        Err(ClientError::Rpc { code, .. }) => assert_eq!(code, codes::INVALID_PARAMS),
        other => panic!("expected invalid params, got {other:?}"),
    }
    match client
        .call::<serde_json::Value>("pm_nope", serde_json::json!({}))
        .await
    {
        Err(ClientError::Rpc { code, .. }) => assert_eq!(code, codes::METHOD_NOT_FOUND),
        other => panic!("expected method-not-found, got {other:?}"),
    }
}

#[tokio::test]
async fn submit_an_encoded_submission() {
    let (f, mut client) = started().await;
    let other_owner = Keypair::generate();
    let sub = submission("encoded", 2, &other_owner);
    let hexed = hex::encode(encoding::encode(&sub));
    let out: rpc::SubmitOutcome = client
        .call(
            "pm_submitWorkflow",
            serde_json::json!({ "submission": hexed }),
        )
        .await
        .unwrap();
    assert_eq!(out.id, sub.workflow.id().to_hex());
    let stored = f.api.store().workflow(&sub.workflow.id()).unwrap().unwrap();
    assert_eq!(
        stored.submission, sub,
        "an encoded submission keeps its own owner"
    );
}

#[tokio::test]
async fn progress_subscription_follows_changes_to_completion() {
    let (f, mut client) = started().await;
    let id_hex = client.submit_workflow(VALID, "toml").await.unwrap().id;
    let id: ContentId = id_hex.parse().unwrap();
    let sub = f.api.store().workflow(&id).unwrap().unwrap().submission;

    let sub_id = client.subscribe_progress(&id_hex).await.unwrap();
    assert!(sub_id > 0);
    let first = client.next_progress().await.unwrap();
    assert_eq!((first.state.as_str(), first.done), ("active", 0));

    let op = Keypair::generate();
    let store = f.api.store().clone();
    store
        .set_task_state(
            &id,
            0,
            TaskState::Running {
                attempt: 1,
                operator: op.public(),
            },
        )
        .unwrap();
    f.api.notify(id);
    let running = client.next_progress().await.unwrap();
    assert_eq!(running.stages[0].running, 1);
    assert_eq!(running.stages[0].pending, 0);

    // Finish every task, then the workflow.
    for task in 0..5 {
        store
            .accept_result(&signed_result(
                &sub,
                task,
                ContentId::of_bytes(&[task as u8]),
                &op,
            ))
            .unwrap();
        f.api.notify(id);
    }
    store
        .set_workflow_state(&id, WorkflowState::Completed)
        .unwrap();
    f.api.notify(id);
    let mut last = client.next_progress().await.unwrap();
    while !last.is_final() {
        last = client.next_progress().await.unwrap();
    }
    assert_eq!(last.state, "completed");
    assert_eq!(last.done, 5);
    assert!(last
        .stages
        .iter()
        .all(|s| s.done == s.total && s.pending == 0 && s.running == 0));

    // Subscribing to an unknown id is an error, not a silent stream.
    match client
        .subscribe_progress(&ContentId([4; 32]).to_hex())
        .await
    {
        Err(ClientError::Rpc { code, .. }) => assert_eq!(code, codes::UNKNOWN_WORKFLOW),
        other => panic!("expected unknown workflow, got {other:?}"),
    }
}

#[tokio::test]
async fn result_blob_operators_and_node_info() {
    let (f, mut client) = started().await;
    let id_hex = client.submit_workflow(VALID, "toml").await.unwrap().id;
    let id: ContentId = id_hex.parse().unwrap();
    let store = f.api.store().clone();
    let sub = store.workflow(&id).unwrap().unwrap().submission;
    let proof: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect(); // > 1 slice, file-backed
    let proof_id = store.put_blob(&proof).unwrap();
    let op = Keypair::generate();
    store
        .accept_result(&signed_result(&sub, 4, proof_id, &op))
        .unwrap(); // `final` is task 4
    store
        .accept_result(&signed_result(&sub, 1, ContentId::of_bytes(b"leaf"), &op))
        .unwrap();

    let result = client.result(&id_hex).await.unwrap();
    assert_eq!(
        result.outputs.len(),
        1,
        "only the sink task is a final output"
    );
    assert_eq!(result.outputs[0].name, "final");
    assert_eq!(result.outputs[0].output, proof_id.to_hex());
    assert!(result.outputs[0].available);
    assert_eq!(client.fetch_blob(&proof_id.to_hex()).await.unwrap(), proof);
    match client.fetch_blob(&ContentId([8; 32]).to_hex()).await {
        Err(ClientError::Rpc { code, .. }) => assert_eq!(code, codes::UNKNOWN_BLOB),
        other => panic!("expected unknown blob, got {other:?}"),
    }

    store
        .put_operator_advert(
            &OperatorAdvert {
                operator: op.public(),
                eth_address: None,
                capacity: Capacity {
                    cpu: 4,
                    memory_mb: 8192,
                    disk_mb: 0,
                    gpus: Vec::new(),
                },
                programs: Vec::new(),
                price_wei: 10u128.pow(30),
                queue: 0,
                max_tasks: 0,
                trusts: Vec::new(),
            },
            5,
        )
        .unwrap();
    store
        .update_operator(&op.public(), |r| {
            r.stats.completed = 2;
            r.stats.failed = 1;
            r.stats.slashed = 1;
        })
        .unwrap();
    let ops = client.operators().await.unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!((ops[0].completed, ops[0].failed, ops[0].slashed), (2, 1, 1));
    assert_eq!(
        ops[0].price_wei, "1000000000000000000000000000000",
        "wei beyond 2^53 survive as strings"
    );

    let info = client.node_info().await.unwrap();
    assert_eq!(
        (info.network_id, info.chain_id, info.workflows),
        (7, 31337, 1)
    );
    assert_eq!(info.node_key, f.owner.public().to_hex());
}

#[tokio::test]
async fn http_post_batch_metrics_and_health() {
    let f = start("127.0.0.1:0", None).await.unwrap();
    let addr = f.server.local_addr();
    let (status, body) = http(addr, "GET", "/health", &[], "").await;
    assert_eq!((status, body.trim()), (200, "OK"));

    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"pm_nodeInfo"},
                    {"jsonrpc":"2.0","id":2,"method":"pm_status","params":["00"]},
                    {"jsonrpc":"2.0","method":"pm_nodeInfo"}]"#;
    let (status, body) = http(addr, "POST", "/", &[], batch).await;
    assert_eq!(status, 200);
    let replies: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(replies.len(), 2, "the notification gets no reply: {body}");
    assert_eq!(replies[0]["result"]["network_id"], 7);
    assert_eq!(replies[1]["error"]["code"], codes::INVALID_PARAMS);

    let (_, body) = http(addr, "POST", "/", &[], "{not json").await;
    assert!(body.contains(&codes::PARSE_ERROR.to_string()), "{body}");
    let sub = r#"{"jsonrpc":"2.0","id":3,"method":"pm_subscribeProgress","params":["00"]}"#;
    let (_, body) = http(addr, "POST", "/", &[], sub).await;
    assert!(body.contains(&codes::NEEDS_WEBSOCKET.to_string()), "{body}");

    let (status, metrics) = http(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    for name in [
        "proofmesh_rpc_requests_total{method=\"pm_nodeInfo\",outcome=\"ok\"} 2",
        "proofmesh_rpc_requests_total{method=\"pm_status\",outcome=\"error\"} 1",
        "proofmesh_chain_sync_height",
        "proofmesh_workflow_submissions",
        "# EOF",
    ] {
        assert!(metrics.contains(name), "missing {name:?} in:\n{metrics}");
    }
}

#[tokio::test]
async fn bearer_token_is_required_off_loopback_and_enforced_when_set() {
    match start("0.0.0.0:0", None).await {
        Err(e @ RpcError::TokenRequired { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("rpc.token") && msg.contains("--rpc.token"),
                "{msg}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a non-loopback bind without a token must be refused"),
    }
    let f = start("0.0.0.0:0", Some("s3cret")).await.unwrap();
    let addr = f.server.local_addr();
    let req = r#"{"jsonrpc":"2.0","id":1,"method":"pm_nodeInfo"}"#;
    assert_eq!(http(addr, "POST", "/", &[], req).await.0, 401);
    assert_eq!(
        http(
            addr,
            "POST",
            "/",
            &[("Authorization", "Bearer wrong!")],
            req
        )
        .await
        .0,
        401
    );
    assert_eq!(http(addr, "GET", "/metrics", &[], "").await.0, 401);
    assert_eq!(http(addr, "GET", "/health", &[], "").await.0, 401);
    let (status, body) = http(
        addr,
        "POST",
        "/",
        &[("Authorization", "Bearer s3cret")],
        req,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"network_id\":7"), "{body}");

    let url = format!("http://127.0.0.1:{}", addr.port());
    assert!(matches!(
        RpcClient::connect(&url, None).await,
        Err(ClientError::Connect { .. })
    ));
    let mut client = RpcClient::connect(&url, Some("s3cret")).await.unwrap();
    assert_eq!(client.node_info().await.unwrap().network_id, 7);

    // A token on loopback is enforced too.
    let g = start("127.0.0.1:0", Some("t")).await.unwrap();
    assert_eq!(
        http(g.server.local_addr(), "GET", "/health", &[], "")
            .await
            .0,
        401
    );
}

/// Run the `proofmesh` binary; returns (exit code, stdout, stderr).
/// [`proofmesh`] `ARGS --rpc URL --token tok`.
async fn proofmesh_at(url: &str, args: &[&str]) -> (i32, String, String) {
    proofmesh(&[args, &["--rpc", url, "--token", "tok"]].concat()).await
}

pub(crate) async fn proofmesh(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_proofmesh"))
        .args(args)
        .env_remove("PROOFMESH_RPC")
        .env_remove("PROOFMESH_RPC_TOKEN")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_submit_status_result_operators_over_rpc() {
    let f = start("127.0.0.1:0", Some("tok")).await.unwrap();
    let url = f.server.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wf.toml");
    std::fs::write(&file, VALID).unwrap();
    let file = file.to_str().unwrap();

    let (code, _, err) = proofmesh(&["submit", file, "--rpc", &url]).await;
    assert_ne!(code, 0, "no token: refused");
    assert!(err.contains("401") || err.contains("Unauthorized"), "{err}");

    let (code, out, err) = proofmesh_at(&url, &["submit", file]).await;
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    assert_eq!(id.len(), 64, "submit prints the id: {out}");
    // Stdout stays the id alone; each stage no operator can run gets a warning on stderr.
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("warning: stage "))
            .count(),
        3,
        "{err}"
    );
    assert!(
        err.contains("warning: stage final: no operator seen in the last minute can run its tasks (no operator is known)"),
        "{err}"
    );

    let (code, out, _) = proofmesh_at(&url, &["status", &id]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!(
            "id={id} name=rpc-test state=active tasks=5 done=0"
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "stage=leaf total=3 done=0 running=0 pending=3 failed=0 failed_attempts=0 \
             unmatched=\"no operator is known\""
        ),
        "{out}"
    );
    let (code, _, err) = proofmesh_at(&url, &["status", &"ab".repeat(32)]).await;
    assert_ne!(code, 0, "unknown id exits non-zero");
    assert!(err.contains("unknown workflow"), "{err}");

    let op = Keypair::generate();
    f.api
        .store()
        .update_operator(&op.public(), |r| r.stats.completed = 4)
        .unwrap();
    let (code, out, _) = proofmesh_at(&url, &["operators"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1);
    assert!(
        out.contains(&format!("key={}", op.public().to_hex()))
            && out.contains("completed=4 failed=0 slashed=0")
            && out.ends_with(" present=false\n"),
        "never advertised: {out}"
    );
    let (code, out, _) = proofmesh_at(&url, &["operators", "--present"]).await;
    assert_eq!((code, out.as_str()), (0, ""), "none present");

    // `submit --wait` on a second workflow: completes in the background -> exit 0.
    let second = VALID.replace("rpc-test", "rpc-wait");
    let file2 = dir.path().join("wait.toml");
    std::fs::write(&file2, &second).unwrap();
    let (wf2, _) =
        proofmesh_protocol::spec::load(&second, proofmesh_protocol::Format::Toml).unwrap();
    let api = f.api.clone();
    let finisher = tokio::spawn(async move {
        let id = wf2.id();
        while !api.store().has_workflow(&id).unwrap() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let sub = api.store().workflow(&id).unwrap().unwrap().submission;
        let op = Keypair::generate();
        let proof_id = api.store().put_blob(b"the final proof").unwrap();
        for task in 0..5 {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            let out = if task == 4 {
                proof_id
            } else {
                ContentId::of_bytes(&[task as u8])
            };
            api.store()
                .accept_result(&signed_result(&sub, task, out, &op))
                .unwrap();
            api.notify(id);
        }
        api.store()
            .set_workflow_state(&id, WorkflowState::Completed)
            .unwrap();
        api.notify(id);
    });
    let (code, out, err) = proofmesh_at(&url, &["submit", file2.to_str().unwrap(), "--wait"]).await;
    finisher.await.unwrap();
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("state=completed tasks=5 done=5"), "{out}");
    let id2 = out.lines().next().unwrap().to_owned();

    // Following a workflow that already ended: its end at once, exit 0 for a completed one.
    let (code, out, err) = proofmesh_at(&url, &["status", &id2, "--wait"]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("state=completed tasks=5 done=5"), "{out}");

    let out_dir = dir.path().join("out");
    let (code, out, err) =
        proofmesh_at(&url, &["result", &id2, "--out", out_dir.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("task=final"), "{out}");
    assert_eq!(
        std::fs::read(out_dir.join("final.out")).unwrap(),
        b"the final proof"
    );
    assert!(out_dir.join("result.json").is_file());

    // A failed workflow: --wait exits non-zero with the reason.
    let id1: ContentId = id.parse().unwrap();
    let api = f.api.clone();
    let failer = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let reason = "task leaf[1]: attempt 1 timed out; attempt 2 crashed (exit 3)".to_owned();
        api.store()
            .set_workflow_state(&id1, WorkflowState::Failed { reason })
            .unwrap();
        api.notify(id1);
    });
    let (code, out, err) = proofmesh_at(&url, &["submit", file, "--wait"]).await;
    failer.await.unwrap();
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("leaf[1]") && err.contains("crashed"), "{err}");
    let (code, _, err) = proofmesh_at(&url, &["status", &id, "--wait"]).await;
    assert_eq!(code, 1, "a failed workflow: {err}");
    assert!(err.contains("leaf[1]") && err.contains("crashed"), "{err}");
    let (code, _, _) =
        proofmesh_at(&url, &["result", &id, "--out", out_dir.to_str().unwrap()]).await;
    assert_ne!(code, 0, "no result for a failed workflow");

    let (code, out, err) = proofmesh_at(&url, &["tasks", &id, "--state", "pending"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(
        out.starts_with("task=0 name=witness state=pending failed_attempts=0\n"),
        "{out}"
    );
    let (code, out, err) = proofmesh_at(&url, &["workflows"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().any(|l| l.starts_with(&format!(
        "id={id} name=\"rpc-test\" state=failed tasks=5 done=0 accepted_at_ms="
    ))));
    let (code, out, _) =
        proofmesh_at(&url, &["workflows", "--state", "completed", "--limit", "5"]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!(
            "id={id2} name=\"rpc-wait\" state=completed tasks=5 done=5 "
        )) && out.lines().count() == 1,
        "{out}"
    );

    // A quote: with no operator that runs noop@1, exit 3 and a warning per stage.
    let quote = |file: String| {
        let url = url.clone();
        async move { proofmesh_at(&url, &["quote", &file]).await }
    };
    let priced = dir.path().join("priced.toml");
    std::fs::write(
        &priced,
        VALID.replace(
            "name = \"rpc-test\"",
            "name = \"priced\"\n[defaults]\nmax_price_wei = 9",
        ),
    )
    .unwrap();
    let priced = priced.to_str().unwrap().to_owned();
    let (code, out, err) = quote(priced.clone()).await;
    assert_eq!(code, 3, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains(
            "tasks=5 escrow_wei=45 lowest_wei=0 highest_wei=0 operators=0 unmatched_tasks=5"
        ),
        "{out}"
    );
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("warning: stage "))
            .count(),
        3,
        "{err}"
    );
    let mut op = noop_advert(Keypair::generate().public());
    op.price_wei = 4;
    f.api.store().put_operator_advert(&op, now_ms()).unwrap();
    let (code, out, err) = quote(priced.clone()).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("escrow_wei=45 lowest_wei=20 highest_wei=20 operators=1 unmatched_tasks=0"),
        "{out}"
    );
    assert!(!err.contains("warning"), "{err}");
    let (code, _, err) = quote(file.to_owned()).await;
    assert_eq!(
        code, 3,
        "noop@1 at 4 wei is above a free workflow's ceiling: {err}"
    );
    assert!(
        err.contains(
            "its price ceiling is 0 wei; operators that could run noop@1 ask at least 4 wei"
        ),
        "{err}"
    );
    // --require-match submits nothing then (a new name: not a workflow the node holds).
    let unpriced = dir.path().join("unpriced.toml");
    std::fs::write(&unpriced, VALID.replace("rpc-test", "unpriced")).unwrap();
    let (code, out, err) = proofmesh_at(
        &url,
        &["submit", unpriced.to_str().unwrap(), "--require-match"],
    )
    .await;
    assert_eq!(code, 3, "stdout: {out}\nstderr: {err}");
    assert!(out.is_empty(), "no id printed: {out}");
    assert!(err.contains("not submitted (--require-match)"), "{err}");
    let (wf, _) = proofmesh_protocol::spec::load(
        &VALID.replace("rpc-test", "unpriced"),
        proofmesh_protocol::Format::Toml,
    )
    .unwrap();
    assert!(
        !f.api.store().has_workflow(&wf.id()).unwrap(),
        "nothing stored"
    );
    // Every stage matched: submitted as usual.
    let (code, out, err) = proofmesh_at(&url, &["submit", &priced, "--require-match"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim().len(), 64, "the id: {out}");
    // The operator that advertised is the one present.
    let (code, out, _) = proofmesh_at(&url, &["operators", "--present"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("price_wei=4 programs=noop@1") && out.ends_with(" present=true\n"),
        "{out}"
    );
}

#[tokio::test]
async fn list_workflows_newest_first_by_state_and_limit() {
    let (f, mut client) = started().await;
    let store = f.api.store();
    let owner = Keypair::generate();
    let mut ids = Vec::new();
    for (i, name) in ["first", "second", "third"].iter().enumerate() {
        let sub = submission(name, 2, &owner);
        let (id, _) = store.put_workflow(&sub, 1_000 + i as u64).unwrap();
        ids.push(id);
    }
    store
        .set_workflow_state(&ids[0], WorkflowState::Completed)
        .unwrap();
    cancel(store, &ids[1]);
    store
        .update_task(&ids[2], 0, |t| {
            t.state = TaskState::Done {
                result: ContentId([1; 32]),
            };
        })
        .unwrap();

    let all = client.workflows(None, 50).await.unwrap();
    let seen: Vec<_> = all
        .iter()
        .map(|w| {
            (
                w.name.as_str(),
                w.state.as_str(),
                w.tasks,
                w.done,
                w.accepted_at_ms,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("third", "active", 4, 1, 1_002),
            ("second", "failed", 4, 0, 1_001),
            ("first", "completed", 4, 4, 1_000)
        ]
    );
    assert_eq!(all[0].id, ids[2].to_hex());
    let failed = client.workflows(Some("failed"), 50).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, ids[1].to_hex());
    let newest = client.workflows(None, 2).await.unwrap();
    assert_eq!(newest, all[..2]);
    // Positional params, and the defaults.
    let positional: Vec<rpc::WorkflowListing> = client
        .call("pm_listWorkflows", serde_json::json!(["completed"]))
        .await
        .unwrap();
    assert_eq!(positional, all[2..]);

    for (params, needle) in [
        (
            serde_json::json!({ "state": "done" }),
            "\"done\" is not a workflow state",
        ),
        (
            serde_json::json!({ "limit": 1_001 }),
            "1001 is more than the 1000",
        ),
        (serde_json::json!({ "order": "asc" }), "order"),
    ] {
        assert_rpc_error(
            client
                .call::<serde_json::Value>("pm_listWorkflows", params)
                .await,
            codes::INVALID_PARAMS,
            needle,
        );
    }
}

#[tokio::test]
async fn tasks_with_their_holders_and_why_attempts_failed() {
    let (f, mut client) = started().await;
    let store = f.api.store();
    let sub = submission("tasks", 2, &Keypair::generate());
    let (id, _) = store.put_workflow(&sub, 1).unwrap();
    let (a, c) = (Keypair::generate().public(), Keypair::generate().public());
    let attempt = |attempt, operator, cause: Option<&str>| AttemptRecord {
        attempt,
        operator,
        cause: cause.map(str::to_owned),
    };
    // witness: attempt 1 timed out, attempt 2 accepted (b's); leaf[0] runs its first attempt
    // on c; leaf[1] used up its attempts; final has no record (pending).
    let b_key = Keypair::generate();
    let b = b_key.public();
    let first = signed_result(&sub, 0, ContentId([1; 32]), &b_key).result;
    let accepted = SignedResult::sign(
        &b_key,
        TaskResult {
            attempt: 2,
            ..first
        },
    );
    store.accept_result(&accepted).unwrap();
    store
        .update_task(&id, 0, |t| {
            t.attempts = vec![attempt(1, a, Some("no result by the deadline"))];
        })
        .unwrap();
    store
        .update_task(&id, 1, |t| {
            t.state = TaskState::Running {
                attempt: 1,
                operator: c,
            }
        })
        .unwrap();
    store
        .update_task(&id, 2, |t| {
            t.state = TaskState::Failed;
            t.attempts = vec![attempt(1, c, Some("crashed (exit 3)"))];
        })
        .unwrap();

    let query = |state: Option<&str>, retried: bool| TaskQuery {
        state: state.map(str::to_owned),
        retried,
        ..TaskQuery::default()
    };
    let all = client
        .tasks(&id.to_hex(), &query(None, false))
        .await
        .unwrap();
    let seen: Vec<_> = all
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.state.as_str(),
                t.attempt,
                t.operator.clone(),
                t.failed_attempts.len(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("witness", "done", Some(2), Some(b.to_hex()), 1),
            ("leaf[0]", "running", Some(1), Some(c.to_hex()), 0),
            ("leaf[1]", "failed", None, None, 1),
            ("final", "pending", None, None, 0)
        ]
    );
    assert_eq!(all[0].failed_attempts[0].operator, a.to_hex());
    assert_eq!(all[0].failed_attempts[0].cause, "no result by the deadline");
    let retried = client
        .tasks(&id.to_hex(), &query(None, true))
        .await
        .unwrap();
    assert_eq!(retried.iter().map(|t| t.task).collect::<Vec<_>>(), [0, 2]);
    let failed = client
        .tasks(&id.to_hex(), &query(Some("failed"), false))
        .await
        .unwrap();
    assert_eq!(failed, all[2..3]);
    assert!(client
        .tasks(&id.to_hex(), &query(Some("running"), true))
        .await
        .unwrap()
        .is_empty());
    // Pages: from a task index on, at most a limit.
    let page = TaskQuery {
        from: 1,
        limit: Some(2),
        ..TaskQuery::default()
    };
    assert_eq!(client.tasks(&id.to_hex(), &page).await.unwrap(), all[1..3]);
    let too_many = TaskQuery {
        limit: Some(10_001),
        ..TaskQuery::default()
    };
    assert_rpc_error(
        client.tasks(&id.to_hex(), &too_many).await,
        codes::INVALID_PARAMS,
        "10001 is more than the 10000",
    );
    assert_rpc_error(
        client
            .tasks(&id.to_hex(), &query(Some("stuck"), false))
            .await,
        codes::INVALID_PARAMS,
        "\"stuck\" is not a task state",
    );
    let unknown = ContentId([9; 32]).to_hex();
    assert_rpc_error(
        client.tasks(&unknown, &query(None, false)).await,
        codes::UNKNOWN_WORKFLOW,
        &unknown,
    );
}

#[tokio::test]
async fn a_finished_sequence_says_which_earlier_one_it_waits_for() {
    let (f, mut client) = started().await;
    let store = f.api.store();
    let owner = Keypair::generate();
    let block = |seq: u64| {
        let mut sub = submission(&format!("block-{seq}"), 1, &owner);
        sub.workflow.ordering = Some(proofmesh_protocol::Ordering {
            stream: "blocks".into(),
            sequence: seq,
        });
        sub
    };
    let mut ids = Vec::new();
    for seq in [1, 2, 3] {
        ids.push(store.put_workflow(&block(seq), seq).unwrap().0);
    }
    let all_done = |id: &ContentId| {
        for t in 0..3 {
            store
                .update_task(id, t, |r| {
                    r.state = TaskState::Done {
                        result: ContentId([t as u8; 32]),
                    }
                })
                .unwrap();
        }
    };
    // Sequence 3 has every task done but 1 and 2 are open: it names the earliest, 1.
    all_done(&ids[2]);
    let status = client.status(&ids[2].to_hex()).await.unwrap();
    assert_eq!((status.state.as_str(), status.done), ("active", 3));
    assert_eq!(
        status.waiting_for.as_deref(),
        Some(
            format!(
                "sequence 1 of stream blocks (workflow {}) to finalize first",
                ids[0].to_hex()
            )
            .as_str()
        )
    );
    // Sequence 2, not done yet, waits for its own tasks: nothing said.
    assert_eq!(
        client.status(&ids[1].to_hex()).await.unwrap().waiting_for,
        None
    );
    // Once 1 completed, 3 waits for 2.
    store
        .set_workflow_state(&ids[0], WorkflowState::Completed)
        .unwrap();
    let status = client.status(&ids[2].to_hex()).await.unwrap();
    assert!(
        status
            .waiting_for
            .as_deref()
            .is_some_and(|w| w.starts_with("sequence 2 of stream blocks")),
        "{status:?}"
    );
    // A failed 2 holds nothing back either (the view then completes 3).
    cancel(store, &ids[1]);
    assert_eq!(
        client.status(&ids[2].to_hex()).await.unwrap().waiting_for,
        None
    );
}
