//! What a node keeps in memory. A finished workflow leaves the view's memory (its definition,
//! progress, acceptance times) and is read from the store; before, a long-running node kept
//! every workflow it ever saw, and took them all back into memory at each start.

use crate::cluster::{
    attempt_one, deliver, made_then_used, matchmaker_and_operator, metric, now_ms, options,
    plain_peer, self_signed_result, sleep_workflow, submitted_by, Role, DOMAIN,
};
use proofmesh_node::network;
use proofmesh_node::runtime::{Node, NodeHandle};
use proofmesh_node::store::WorkflowState;
use proofmesh_protocol::messages::{Assignment, Verdict};
use proofmesh_protocol::{ContentId, Envelope, Keypair, Message};
use std::time::Duration;
use tokio::time::{sleep, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn in_memory(node: &NodeHandle) -> (f64, f64) {
    (
        metric(node, "proofmesh_view_workflows"),
        metric(node, "proofmesh_view_tasks"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_workflow_leaves_memory_and_the_store_still_answers_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let matchmaker = Keypair::generate();
    let gateway_options = || {
        let mut o = options(dir.path(), Role::Gateway, &[]);
        o.trusted_matchmakers = vec![matchmaker.public()];
        o
    };
    let gateway = Node::spawn(gateway_options())
        .await
        .expect("gateway starts");
    let (client, _events) = plain_peer(&matchmaker, gateway.listen_addrs().to_vec());
    let mut nonce = 0;
    let mut seal = |message: Message| {
        nonce += 1;
        Envelope::seal(&matchmaker, DOMAIN, &message, nonce, now_ms() + 60_000)
    };

    let workflow = made_then_used("memory");
    let id = workflow.id();
    let submission = seal(Message::Submission(submitted_by(
        workflow,
        matchmaker.public(),
    )));
    deliver(&client, gateway.peer_id(), &submission).await;
    assert_eq!(
        in_memory(&gateway),
        (1.0, 2.0),
        "an active workflow is in memory"
    );

    let operator = Keypair::generate();
    let made = self_signed_result(&operator, id, 0, b"made");
    let uses = self_signed_result(&operator, id, 1, b"uses");
    let verdicts = seal(Message::Verdicts(vec![
        Verdict::Accepted(made.clone()),
        Verdict::Accepted(uses.clone()),
    ]));
    deliver(&client, gateway.peer_id(), &verdicts).await;
    let deadline = Instant::now() + WAIT;
    while gateway.api().status(&id).unwrap().map(|s| s.record.state)
        != Some(WorkflowState::Completed)
    {
        assert!(Instant::now() < deadline, "the workflow never completed");
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        in_memory(&gateway),
        (0.0, 0.0),
        "a finished workflow leaves memory"
    );
    assert_eq!(
        gateway.api().store().results(&id).unwrap().len(),
        2,
        "the store keeps its results"
    );

    // A late verdict with another result for a task: still refused, and reported.
    let other = self_signed_result(&operator, id, 0, b"other");
    deliver(
        &client,
        gateway.peer_id(),
        &seal(Message::Verdict(Verdict::Accepted(other))),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    while metric(&gateway, "proofmesh_conflicting_results") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the conflicting verdict was not reported"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gateway.api().store().result(&id, 0).unwrap(),
        Some(made),
        "the first result stays"
    );

    // Started again, the node does not load the finished workflow into memory.
    drop(client);
    gateway.shutdown().await;
    let gateway = Node::spawn(gateway_options())
        .await
        .expect("gateway restarts");
    let status = gateway.api().status(&id).unwrap().expect("still known");
    assert_eq!(status.record.state, WorkflowState::Completed);
    assert_eq!(
        in_memory(&gateway),
        (0.0, 0.0),
        "not loaded into memory at start"
    );
    assert_eq!(
        metric(&gateway, "proofmesh_workflows{state=\"completed\"}"),
        1.0,
        "still counted"
    );
    assert_eq!(
        metric(&gateway, "proofmesh_tasks{state=\"done\"}"),
        2.0,
        "and its tasks, done"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matchmaker_forgets_a_finished_workflows_attempts_and_checks() {
    let (mm_dir, op_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mm_options = options(mm_dir.path(), Role::Matchmaker, &[]);
    let (mm, op) = matchmaker_and_operator(mm_options, op_dir.path()).await;
    let workflow = sleep_workflow("forget", 4, 400, 1);
    let id = mm.api().submit(workflow).await.expect("submitted");
    let held = |node: &NodeHandle| metric(node, "proofmesh_matchmaker_workflows");
    let deadline = Instant::now() + WAIT;
    while held(&mm) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the running workflow was never counted"
        );
        sleep(Duration::from_millis(20)).await;
    }
    while mm.api().status(&id).unwrap().map(|s| s.record.state) != Some(WorkflowState::Completed) {
        assert!(Instant::now() < deadline, "the workflow never completed");
        sleep(Duration::from_millis(20)).await;
    }
    while held(&mm) > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the matchmaker kept a finished workflow's attempts"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_memory(&mm), (0.0, 0.0), "nor its view");
    assert_eq!(
        mm.api().store().results(&id).unwrap().len(),
        5,
        "the store keeps every result"
    );
    op.shutdown().await;
    mm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_matchmaker_engine_lets_finished_workflows_go_and_a_resubmission_does_not_rerun_one() {
    let (mm_dir, op_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut mm_options = options(mm_dir.path(), Role::Matchmaker, &[]);
    let matchmaker = mm_options.matchmaker.as_mut().expect("a matchmaker");
    matchmaker.config.retire_after_ms = 300;
    let (mm, op) = matchmaker_and_operator(mm_options, op_dir.path()).await;
    let held = |node: &NodeHandle| metric(node, "proofmesh_matchmaker_engine_workflows");
    let deadline = Instant::now() + WAIT;
    let mut ids = Vec::new();
    for k in 0..3 {
        let id = mm
            .api()
            .submit(made_then_used(&format!("leaves-{k}")))
            .await
            .expect("submitted");
        while mm.api().status(&id).unwrap().map(|s| s.record.state)
            != Some(WorkflowState::Completed)
        {
            assert!(Instant::now() < deadline, "workflow {k} never completed");
            sleep(Duration::from_millis(20)).await;
        }
        ids.push(id);
    }
    // 300 ms after each finished, the engine holds none of them (the gauge is refreshed every
    // 250 ms: read it once that is sure to have happened since).
    sleep(Duration::from_millis(1_000)).await;
    while held(&mm) > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the engine kept {} finished workflows",
            held(&mm)
        );
        sleep(Duration::from_millis(20)).await;
    }
    // The store still answers for them, and submitting one again does not run it again: the
    // node's store knows it, so the engine never hears of it.
    let results = mm.api().store().results(&ids[0]).unwrap();
    assert_eq!(results.len(), 2);
    let answered = metric(&op, "proofmesh_operator_attempts");
    assert_eq!(answered, 6.0, "two tasks each, answered once");
    let again = mm
        .api()
        .submit(made_then_used("leaves-0"))
        .await
        .expect("a known workflow is accepted again");
    assert_eq!(again, ids[0]);
    for _ in 0..60 {
        assert_eq!(held(&mm), 0.0, "the engine took a finished workflow back");
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        metric(&op, "proofmesh_operator_attempts"),
        answered,
        "no task ran again"
    );
    assert_eq!(mm.api().store().results(&ids[0]).unwrap(), results);
    assert_eq!(
        mm.api().status(&ids[0]).unwrap().map(|s| s.record.state),
        Some(WorkflowState::Completed)
    );
    op.shutdown().await;
    mm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_forgets_attempts_a_while_after_their_deadline_and_refuses_them_then() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path(), Role::Operator, &[]);
    if let Some(op) = o.operator.as_mut() {
        op.remember_attempts_for = Duration::from_millis(300);
    }
    let operator = Node::spawn(o).await.expect("operator starts");
    let mm = Keypair::generate();
    let (client, _events) = plain_peer(&mm, operator.listen_addrs().to_vec());
    let peer = network::peer_id_of(&operator.public_key()).expect("ed25519 key");
    let workflow = ContentId::of_bytes(b"forgotten attempts");
    let mut nonce = 0;
    let mut send = |a: Assignment| {
        nonce += 1;
        let envelope = Envelope::seal(
            &mm,
            DOMAIN,
            &Message::Assignment(a),
            nonce,
            now_ms() + 60_000,
        );
        let client = client.clone();
        async move {
            match deliver(&client, peer, &envelope).await {
                Some((_, Message::Acceptance(_))) => true,
                Some((_, Message::Failure(_))) => false,
                other => panic!("expected an answer, got {other:?}"),
            }
        }
    };
    let remembered = || metric(&operator, "proofmesh_operator_attempts");
    // Attempt 1 of task 0, due 200 ms from now.
    let now = now_ms();
    let mut first = attempt_one(workflow, 0, operator.public_key(), mm.public(), now, false);
    first.deadline_ms = now + 200;
    assert!(send(first.clone()).await, "accepted");
    assert!(send(first.clone()).await, "the same answer again");
    assert_eq!(remembered(), 1.0);

    // Its deadline and the 300 ms after it pass; the next assignment makes room.
    sleep(Duration::from_millis(700)).await;
    let second = attempt_one(
        workflow,
        1,
        operator.public_key(),
        mm.public(),
        now_ms(),
        false,
    );
    assert!(send(second).await, "accepted");
    assert_eq!(remembered(), 1.0, "the first attempt was forgotten");
    // Sent again now, it is refused rather than run a second time.
    assert!(!send(first).await, "refused once forgotten");
    operator.shutdown().await;
}
