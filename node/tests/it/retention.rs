//! Retention of finished workflows: pruned after their retention (and their settlement, on a
//! node that settles), leaving a tombstone that keeps the id known; the blobs no remaining
//! workflow names go with them, those another names or that were put again lately stay; a node
//! prunes on its own and answers for a pruned workflow over RPC.

use crate::cluster::{metric, options, sleep_workflow, wait_completed};
use crate::cluster::{submitted_by, toml_workflow, Role, DOMAIN};
use crate::store::signed_result;
use proofmesh_matchmaker::{active_matchmaker, routing_key};
use proofmesh_node::config::RpcConfig;
use proofmesh_node::rpc::{codes, ClientError, NodeApi, RpcClient, SubmitRequest, TaskQuery};
use proofmesh_node::runtime::{Node, NodeHandle, NodeOptions};
use proofmesh_node::store::{Retention, Store, WorkflowState, INLINE_BLOB_MAX};
use proofmesh_protocol::messages::{Heartbeat, Submission};
use proofmesh_protocol::{ContentId, Envelope, Keypair, Message, WorkflowId};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// A workflow whose first task reads `inputs`: a witness and `leaves` leaves after it.
fn reading(name: &str, inputs: &[ContentId], leaves: u32) -> Submission {
    let inputs: Vec<String> = inputs.iter().map(|i| format!("{:?}", i.to_hex())).collect();
    let workflow = toml_workflow(&format!(
        r#"
name = "{name}"
[[task]]
id = "witness"
program = "noop@1"
inputs = [{}]
[[task]]
id = "leaf"
program = "noop@1"
count = {leaves}
deps = ["witness"]
"#,
        inputs.join(", ")
    ));
    submitted_by(workflow, Keypair::generate().public())
}

/// Every task of `sub` done with output `output`, and the workflow completed.
fn complete(store: &Store, sub: &Submission, output: ContentId) {
    let operator = Keypair::generate();
    for task in 0..sub.workflow.tasks.len() as u32 {
        store
            .accept_result(&signed_result(sub, task, output, &operator))
            .unwrap();
    }
    store
        .set_workflow_state(&sub.workflow.id(), WorkflowState::Completed)
        .unwrap();
}

/// `store` prunes nothing at `now` (it may stamp workflows seen finished for the first time).
fn prunes_nothing(store: &Store, retention: &Retention, now: u64) {
    let pruning = store.prune_finished(retention, now).unwrap();
    assert!(pruning.workflows.is_empty(), "at {now}: {pruning:?}");
}

fn keeping(ms: u64) -> Retention {
    Retention {
        blob_grace: Duration::ZERO,
        ..Retention::keeping(Duration::from_millis(ms))
    }
}

#[test]
fn a_finished_workflow_is_pruned_after_its_retention_leaving_a_tombstone_and_the_blobs_others_name()
{
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // A file blob both workflows read, an inline one only `a` reads, and `a`'s output.
    let shared = store.put_blob(&vec![7u8; INLINE_BLOB_MAX + 1]).unwrap();
    let only_a = store.put_blob(b"only a").unwrap();
    let out_a = store.put_blob(b"a's output").unwrap();
    let a = reading("a", &[shared, only_a], 3);
    let b = reading("b", &[shared], 2);
    let (a_id, b_id) = (a.workflow.id(), b.workflow.id());
    store.put_workflow(&a, 1_000).unwrap();
    store.put_workflow(&b, 1_000).unwrap();
    complete(&store, &a, out_a);
    // Matchmakers' statements a gateway keeps to relay: one names both workflows, one only `a`.
    let statement = |nonce| {
        let heartbeat = Message::Heartbeat(Heartbeat {
            operator: Keypair::generate().public(),
            at_ms: 1,
            running: Vec::new(),
        });
        Envelope::seal(&Keypair::generate(), DOMAIN, &heartbeat, nonce, 1)
    };
    let (both, only_a_statement) = (statement(1), statement(2));
    store.keep_vouch(&[a_id, b_id], &both).unwrap();
    store.keep_vouch(&[a_id], &only_a_statement).unwrap();
    assert_eq!(store.vouches(&a_id).unwrap().len(), 2);
    let retention = keeping(10_000);

    // Seen finished at 2,000: kept until 12,000; `b` is active.
    prunes_nothing(&store, &retention, 2_000);
    prunes_nothing(&store, &retention, 11_999);
    assert!(store.workflow(&a_id).unwrap().is_some());

    let pruning = store.prune_finished(&retention, 12_000).unwrap();
    assert_eq!(pruning.workflows.len(), 1);
    assert_eq!(pruning.workflows[0].id, a_id);
    assert_eq!(pruning.workflows[0].state, "completed");
    assert_eq!(pruning.workflows[0].tasks, BTreeMap::from([("done", 4)]));
    assert_eq!(
        (pruning.blobs, pruning.more),
        (2, false),
        "only_a and out_a"
    );
    assert_eq!(
        pruning.blob_bytes,
        (b"only a".len() + b"a's output".len()) as u64
    );
    assert!(store.workflow(&a_id).unwrap().is_none());
    assert!(store.tasks(&a_id).unwrap().is_empty());
    assert!(store.results(&a_id).unwrap().is_empty());
    assert_eq!(store.blob(&only_a).unwrap(), None);
    assert_eq!(store.blob(&out_a).unwrap(), None);
    assert!(store.blob(&shared).unwrap().is_some(), "b still reads it");
    assert!(store.workflow(&b_id).unwrap().is_some());
    assert!(
        store.vouches(&a_id).unwrap().is_empty(),
        "its statements go"
    );
    assert_eq!(store.vouches(&b_id).unwrap(), vec![both], "b's stays");
    let tombstone = store.tombstone(&a_id).unwrap().expect("a tombstone");
    assert_eq!(tombstone.state, WorkflowState::Completed);
    assert_eq!(
        (tombstone.name.as_str(), tombstone.tasks, tombstone.done),
        ("a", 4, 4),
        "{tombstone:?}"
    );
    assert_eq!(tombstone.accepted_at_ms, 1_000);
    assert_eq!(
        (tombstone.finished_at_ms, tombstone.pruned_at_ms),
        (2_000, 12_000)
    );
    // Its id stays known: a late copy of the submission is not new work.
    assert!(store.has_workflow(&a_id).unwrap());
    assert_eq!(store.put_workflow(&a, 13_000).unwrap(), (a_id, false));
    assert!(store.workflow(&a_id).unwrap().is_none());
    assert!(store.workflows().unwrap().iter().all(|(id, _)| *id != a_id));

    // `b` fails; once it is pruned too, nothing names the shared blob: its file goes.
    let file = dir.path().join("blobs").join(shared.to_hex());
    assert!(file.exists());
    store
        .set_workflow_state(
            &b_id,
            WorkflowState::Failed {
                reason: "cancelled by its requester".into(),
            },
        )
        .unwrap();
    prunes_nothing(&store, &retention, 20_000);
    let pruning = store.prune_finished(&retention, 30_000).unwrap();
    assert_eq!(pruning.workflows.len(), 1);
    assert_eq!(pruning.workflows[0].state, "failed");
    assert_eq!(pruning.workflows[0].tasks, BTreeMap::from([("pending", 3)]));
    assert_eq!(pruning.blob_bytes, (INLINE_BLOB_MAX + 1) as u64);
    assert_eq!(store.blob(&shared).unwrap(), None);
    assert!(!file.exists(), "the shared blob's file is removed");
    assert_eq!(store.tombstone_count().unwrap(), 2);

    // Tombstones are durable.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.has_workflow(&a_id).unwrap() && store.has_workflow(&b_id).unwrap());
    assert!(matches!(
        store.tombstone(&b_id).unwrap().expect("b's tombstone").state,
        WorkflowState::Failed { reason } if reason == "cancelled by its requester"
    ));
}

#[test]
fn a_node_that_settles_keeps_a_workflow_until_its_settlement_is_journaled_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = reading("a", &[], 1);
    let id = a.workflow.id();
    store.put_workflow(&a, 1_000).unwrap();
    complete(&store, &a, ContentId::of_bytes(b""));
    let retention = Retention {
        require_settled: true,
        ..keeping(0)
    };
    prunes_nothing(&store, &retention, 5_000);
    prunes_nothing(&store, &retention, 500_000);
    assert!(store.workflow(&id).unwrap().is_some(), "unpaid: kept");
    store.mark_chain_done(&id, 600_000).unwrap();
    let pruning = store.prune_finished(&retention, 600_001).unwrap();
    assert_eq!(pruning.workflows.len(), 1);
    assert!(
        !store.chain_done_ids().unwrap().contains(&id),
        "its journal entry goes with it"
    );
}

#[test]
fn a_blob_put_again_within_the_grace_outlives_the_last_workflow_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (again, once) = (b"uploaded again".as_slice(), b"uploaded once".as_slice());
    let again_id = store.put_blob(again).unwrap();
    let once_id = store.put_blob(once).unwrap();
    let a = reading("a", &[again_id, once_id], 1);
    store.put_workflow(&a, 1_000).unwrap();
    complete(&store, &a, ContentId::of_bytes(b""));
    store.track_blob_puts(Duration::from_secs(600));
    // The requester uploads it again for a workflow it has not submitted yet.
    store.put_blob(again).unwrap();
    let retention = Retention {
        blob_grace: Duration::from_secs(600),
        ..keeping(0)
    };
    // Seen finished (stamped), then pruned.
    prunes_nothing(&store, &retention, 1_500);
    let pruning = store.prune_finished(&retention, 2_000).unwrap();
    assert_eq!(pruning.workflows.len(), 1);
    assert_eq!(store.blob(&again_id).unwrap().as_deref(), Some(again));
    assert_eq!(store.blob(&once_id).unwrap(), None);
}

#[test]
fn a_budget_prunes_the_oldest_finished_first_and_says_more_are_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let subs: Vec<Submission> = (0..3).map(|i| reading(&format!("w{i}"), &[], 4)).collect();
    let ids: Vec<WorkflowId> = subs.iter().map(|s| s.workflow.id()).collect();
    let retention = Retention {
        max_tasks: 5,
        ..keeping(10_000)
    };
    // Seen finished at 1,000, 2,000 and 3,000, in reverse order of their ids.
    for (i, sub) in subs.iter().enumerate().rev() {
        store.put_workflow(sub, 500).unwrap();
        complete(&store, sub, ContentId::of_bytes(b""));
        store
            .prune_finished(&retention, 1_000 * (3 - i as u64))
            .unwrap();
    }
    let mut order = Vec::new();
    loop {
        let pruning = store.prune_finished(&retention, 20_000).unwrap();
        assert!(
            pruning.workflows.len() <= 1,
            "5 tasks: one 5-task workflow a call"
        );
        order.extend(pruning.workflows.iter().map(|w| w.id));
        if !pruning.more {
            break;
        }
    }
    assert_eq!(order, vec![ids[2], ids[1], ids[0]]);
}

#[test]
fn blob_files_no_index_names_are_swept_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let kept = {
        let store = Store::open(dir.path()).unwrap();
        store.put_blob(&vec![1u8; INLINE_BLOB_MAX + 1]).unwrap()
    };
    let blobs = dir.path().join("blobs");
    let orphan = blobs.join(ContentId::of_bytes(b"orphan").to_hex());
    std::fs::write(&orphan, b"orphan").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(!orphan.exists(), "a file no index entry names is garbage");
    assert_eq!(
        store.blob(&kept).unwrap().map(|b| b.len()),
        Some(INLINE_BLOB_MAX + 1)
    );
}

/// Over real sockets: nodes that keep finished workflows for a moment prune a completed one
/// on their own. Its status becomes a "pruned" error naming how it ended, the gauges move it to
/// `pruned`, and submitting it again starts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_prune_a_completed_workflow_and_answer_for_it() {
    let (mm_dir, op_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut mm_options = options(mm_dir.path(), Role::Matchmaker, &[]);
    mm_options.retention = Some(keeping(2_000));
    mm_options.prune_every = Duration::from_millis(100);
    mm_options.rpc = Some(RpcConfig {
        enabled: true,
        bind: ([127, 0, 0, 1], 0).into(),
        token: None,
    });
    let mm = Node::spawn(mm_options).await.expect("matchmaker starts");
    // An operator-only node learns that its workflows ended by asking (catch-up): it prunes too.
    let mut op_options = options(op_dir.path(), Role::Operator, mm.listen_addrs());
    op_options.retention = Some(keeping(1_000));
    op_options.prune_every = Duration::from_millis(100);
    let op = Node::spawn(op_options).await.expect("operator starts");
    let workflow = sleep_workflow("pruned", 3, 10, 1);
    let tasks = workflow.tasks.len() as f64;
    let id = mm.api().submit(workflow.clone()).await.expect("submitted");
    wait_completed(mm.api(), &id).await;
    assert_eq!(metric(&mm, "proofmesh_tasks{state=\"done\"}"), tasks);

    let addr = mm.rpc_addr().expect("rpc");
    let mut client = RpcClient::connect(&format!("http://{addr}"), None)
        .await
        .expect("rpc client");
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        match client.status(&id.to_hex()).await {
            Ok(status) => assert_eq!(status.state, "completed"),
            Err(ClientError::Rpc { code, message }) => {
                assert_eq!(code, codes::PRUNED_WORKFLOW, "{message}");
                break message;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "never pruned");
        sleep(Duration::from_millis(50)).await;
    };
    assert!(
        message.contains("ended (completed) and was pruned")
            && message.contains("store.retain_finished_secs"),
        "{message}"
    );
    let pruned = |r: Result<_, ClientError>| matches!(r, Err(ClientError::Rpc { code, .. }) if code == codes::PRUNED_WORKFLOW);
    assert!(pruned(client.result(&id.to_hex()).await.map(|_| ())));
    assert!(pruned(
        client
            .tasks(&id.to_hex(), &TaskQuery::default())
            .await
            .map(|_| ())
    ));
    let listed = client.workflows(None, 10).await.expect("listing");
    assert!(
        listed.is_empty(),
        "a pruned workflow is not held: {listed:?}"
    );
    let pruned_list = client.workflows(Some("pruned"), 10).await.expect("listing");
    assert_eq!(pruned_list.len(), 1, "{pruned_list:?}");
    let listing = &pruned_list[0];
    assert_eq!(
        (
            listing.id.as_str(),
            listing.name.as_str(),
            listing.state.as_str()
        ),
        (id.to_hex().as_str(), "pruned", "pruned")
    );
    assert_eq!((listing.tasks, listing.done), (tasks as u64, tasks as u64));
    assert_eq!(listing.ended.as_deref(), Some("completed"));
    let (code, _, stderr) =
        crate::rpc::proofmesh(&["status", &id.to_hex(), "--rpc", &format!("http://{addr}")]).await;
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("ended (completed) and was pruned"),
        "{stderr}"
    );
    assert_eq!(metric(&mm, "proofmesh_workflows{state=\"pruned\"}"), 1.0);
    assert_eq!(metric(&mm, "proofmesh_workflows{state=\"completed\"}"), 0.0);
    assert_eq!(metric(&mm, "proofmesh_tasks{state=\"done\"}"), 0.0);

    // The same workflow again is known, not new: nothing runs, and it stays pruned.
    let again = NodeApi::submit(mm.api(), SubmitRequest::Workflow(workflow))
        .await
        .expect("a known workflow is not an error");
    assert!(!again.new, "{again:?}");
    sleep(Duration::from_millis(500)).await;
    assert!(mm.api().store().workflow(&id).unwrap().is_none());
    assert!(matches!(
        client.status(&id.to_hex()).await,
        Err(ClientError::Rpc { code, .. }) if code == codes::PRUNED_WORKFLOW
    ));
    let err = mm.api().cancel(id, None).await.expect_err("ended");
    assert!(err.to_string().contains("was pruned"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while op.api().store().tombstone(&id).unwrap().is_none() {
        assert!(Instant::now() < deadline, "the operator never pruned it");
        sleep(Duration::from_millis(50)).await;
    }
    assert!(op.api().store().workflow(&id).unwrap().is_none());
}

#[test]
fn an_output_an_active_workflow_accepted_outlives_a_pruned_workflow_with_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Both produce the same bytes (a deterministic program): one blob, named by both.
    let same = store.put_blob(b"the same proof").unwrap();
    let (a, b) = (reading("a", &[], 1), reading("b", &[], 1));
    store.put_workflow(&a, 1_000).unwrap();
    store.put_workflow(&b, 1_000).unwrap();
    complete(&store, &a, same);
    // `b` is still running: one of its results is accepted.
    store
        .accept_result(&signed_result(&b, 0, same, &Keypair::generate()))
        .unwrap();
    prunes_nothing(&store, &keeping(0), 1_500);
    let pruning = store.prune_finished(&keeping(0), 2_000).unwrap();
    assert_eq!(pruning.workflows.len(), 1);
    assert_eq!(pruning.blobs, 0, "{pruning:?}");
    assert!(store.blob(&same).unwrap().is_some(), "b's accepted output");
    // Once `b` finishes (its outputs are indexed) and is pruned, the blob goes.
    store
        .set_workflow_state(&b.workflow.id(), WorkflowState::Completed)
        .unwrap();
    prunes_nothing(&store, &keeping(0), 2_500);
    let pruning = store.prune_finished(&keeping(0), 3_000).unwrap();
    assert_eq!((pruning.workflows.len(), pruning.blobs), (1, 1));
    assert_eq!(store.blob(&same).unwrap(), None);
}

#[test]
fn a_workflow_larger_than_the_budget_is_pruned_over_several_calls_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let same = store.put_blob(b"every task's output").unwrap();
    let a = reading("a", &[], 9);
    let id = a.workflow.id();
    store.put_workflow(&a, 1_000).unwrap();
    complete(&store, &a, same);
    let retention = Retention {
        max_tasks: 4,
        ..keeping(0)
    };
    // Its 10 outputs are indexed 4 at a time; it is stamped finished with the last of them.
    let mut calls = 0;
    loop {
        let pruning = store.prune_finished(&retention, 1_000).unwrap();
        calls += 1;
        assert!(pruning.workflows.is_empty());
        if pruning.stamped == 1 {
            break;
        }
        assert!(pruning.more, "{pruning:?}");
    }
    assert_eq!(calls, 3);
    // The first prune leaves its tombstone: pruned, as far as anyone asking can tell.
    let first = store.prune_finished(&retention, 2_000).unwrap();
    assert_eq!(first.workflows.len(), 1);
    assert_eq!(first.workflows[0].tasks, BTreeMap::from([("done", 10)]));
    assert!(first.more);
    assert!(store.workflow(&id).unwrap().is_none());
    assert!(store.tombstone(&id).unwrap().is_some());
    assert_eq!(store.results(&id).unwrap().len(), 6, "4 of 10 removed");
    assert!(
        store.blob(&same).unwrap().is_some(),
        "the results left name it"
    );
    // The rest go 4 at a time, after a restart too.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let second = store.prune_finished(&retention, 2_001).unwrap();
    assert!(second.workflows.is_empty() && second.more, "{second:?}");
    assert_eq!(store.results(&id).unwrap().len(), 2);
    let third = store.prune_finished(&retention, 2_002).unwrap();
    assert!(!third.more, "{third:?}");
    assert_eq!(third.blobs, 1, "the last result naming it went");
    assert!(store.results(&id).unwrap().is_empty());
    assert!(store.tasks(&id).unwrap().is_empty());
    assert_eq!(store.blob(&same).unwrap(), None);
    prunes_nothing(&store, &retention, 2_003);
}

/// Workflow `id` run and pruned while `down` is down: once `down`, `runner` and `other` have
/// heard of it, `down` stops and an operator (`operator`) starts; `runner` completes it, both it
/// and `other` prune it, and gossip's short memory of recent messages (which would bring the
/// verdicts back to `down`) runs out. Returns the operator.
async fn pruned_while_down(
    id: &WorkflowId,
    down: NodeHandle,
    runner: &NodeHandle,
    other: &NodeHandle,
    operator: NodeOptions,
) -> NodeHandle {
    let deadline = Instant::now() + Duration::from_secs(30);
    let heard = |node: &NodeHandle| node.api().status(id).unwrap().is_some();
    while !heard(&down) || !heard(runner) || !heard(other) {
        assert!(Instant::now() < deadline, "not every node heard of it");
        sleep(Duration::from_millis(20)).await;
    }
    down.shutdown().await;
    let op = Node::spawn(operator).await.expect("operator starts");
    wait_completed(runner.api(), id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let pruned = |node: &NodeHandle| node.api().store().tombstone(id).unwrap().is_some();
    while !pruned(runner) || !pruned(other) {
        assert!(Instant::now() < deadline, "the others never pruned it");
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_secs(2)).await;
    op
}

/// A gateway down while its workflow completed, and back only after the matchmaker pruned it,
/// can no longer get the results it lacks: it takes how the workflow ended from the
/// matchmaker's answer (its tombstone), instead of showing it active and asking for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_back_after_its_workflow_was_pruned_elsewhere_learns_how_it_ended() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    // Every node lists the matchmaker: the operator's copies of results are not the
    // gateway's to take.
    let key = Keypair::generate();
    let listing = |dir: &std::path::Path, role, bootstrap: &[_]| {
        let mut o = options(dir, role, bootstrap);
        o.trusted_matchmakers = vec![key.public()];
        o
    };
    let mut mm = listing(dirs[0].path(), Role::Matchmaker, &[]);
    mm.keypair = Some(key.clone());
    mm.retention = Some(keeping(200));
    mm.prune_every = Duration::from_millis(100);
    let mm = Node::spawn(mm).await.expect("matchmaker starts");
    let gateway = || listing(dirs[2].path(), Role::Gateway, mm.listen_addrs());
    let gw = Node::spawn(gateway()).await.expect("gateway starts");
    // Another gateway stays up: the matchmaker's verdicts are published to it, not held back
    // until a peer that follows them (the first gateway, restarted) connects. It prunes the
    // workflow too (else it would relay the matchmaker's verdicts, `it/relays.rs`).
    let mut other = listing(dirs[3].path(), Role::Gateway, mm.listen_addrs());
    other.retention = Some(keeping(200));
    other.prune_every = Duration::from_millis(100);
    let other = Node::spawn(other).await.expect("other gateway starts");

    // Submitted at the gateway while no operator is up, and the gateway goes down.
    let id = gw
        .api()
        .submit(sleep_workflow("gone", 2, 500, 1))
        .await
        .expect("submitted");
    // Then the matchmaker runs it, completes it and prunes it.
    let operator = listing(dirs[1].path(), Role::Operator, mm.listen_addrs());
    let op = pruned_while_down(&id, gw, &mm, &other, operator).await;
    let gw = crate::cluster::spawn_again(gateway).await;
    let status = gw.api().status(&id).unwrap().expect("the gateway holds it");
    assert_eq!(status.record.state, WorkflowState::Active, "as it left it");
    let status = wait_completed(gw.api(), &id).await;
    assert_eq!(
        status.count("done"),
        0,
        "completed on the matchmaker's word, without the results it lacked: {:?}",
        status.tasks
    );
    gw.shutdown().await;
    other.shutdown().await;
    op.shutdown().await;
    mm.shutdown().await;
}

/// A matchmaker down for longer than the retention period comes back to a workflow it holds
/// as running, which the other matchmaker completed and pruned meanwhile. Active for it, it
/// would run its tasks again (their results are gone) and settle it a second time; it ends it
/// in its engine without a word, journals its settlement done, and takes how it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matchmaker_back_after_its_workflow_was_pruned_elsewhere_does_not_run_it_again() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (k1, k2) = (Keypair::generate(), Keypair::generate());
    let listing = |dir: &std::path::Path, role, bootstrap: &[_]| {
        let mut o = options(dir, role, bootstrap);
        o.trusted_matchmakers = vec![k1.public(), k2.public()];
        o
    };
    let mut m1 = listing(dirs[0].path(), Role::Matchmaker, &[]);
    m1.keypair = Some(k1.clone());
    m1.retention = Some(keeping(200));
    m1.prune_every = Duration::from_millis(100);
    let m1 = Node::spawn(m1).await.expect("matchmaker 1 starts");
    let second = || {
        let mut o = listing(dirs[1].path(), Role::Matchmaker, m1.listen_addrs());
        o.keypair = Some(k2.clone());
        o
    };
    let m2 = Node::spawn(second()).await.expect("matchmaker 2 starts");
    // A gateway that prunes too: the verdicts are published to it, not held back for the
    // second matchmaker's return (and it relays nothing once pruned).
    let mut other = listing(dirs[2].path(), Role::Gateway, m1.listen_addrs());
    other.retention = Some(keeping(200));
    other.prune_every = Duration::from_millis(100);
    let other = Node::spawn(other).await.expect("gateway starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while m1.api().live_matchmakers().await.unwrap().len() < 2
        || m2.api().live_matchmakers().await.unwrap().len() < 2
    {
        assert!(
            Instant::now() < deadline,
            "the matchmakers never heard each other"
        );
        sleep(Duration::from_millis(50)).await;
    }

    // A workflow the second matchmaker is active for, submitted while no operator is up.
    let keys = [k1.public(), k2.public()];
    let workflow = (0..)
        .map(|i| sleep_workflow(&format!("back-{i}"), 2, 300, 1))
        .find(|w| active_matchmaker(&routing_key(&w.id(), w), &keys) == Some(k2.public()))
        .unwrap();
    let tasks = workflow.tasks.len();
    let id = m1.api().submit(workflow).await.expect("submitted");
    // The first matchmaker runs it alone, completes it and prunes it.
    let operator = listing(dirs[3].path(), Role::Operator, m1.listen_addrs());
    let op = pruned_while_down(&id, m2, &m1, &other, operator).await;
    let m2 = crate::cluster::spawn_again(second).await;
    let status = wait_completed(m2.api(), &id).await;
    assert_eq!(
        status.count("done"),
        0,
        "nothing ran again: {:?} of {tasks}",
        status.tasks
    );
    assert!(m2.api().store().chain_done_ids().unwrap().contains(&id));
    m2.shutdown().await;
    op.shutdown().await;
    other.shutdown().await;
    m1.shutdown().await;
}
