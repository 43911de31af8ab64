//! What a node keeps in memory. A finished workflow leaves the view's memory (its definition,
//! progress, acceptance times) and is read from the store; before, a long-running node kept
//! every workflow it ever saw, and loaded them all again at each start.

use crate::cluster::{
    deliver, made_then_used, metric, now_ms, options, plain_peer, self_signed_result, Role, DOMAIN,
};
use proofmesh_node::runtime::{Node, NodeHandle};
use proofmesh_node::store::WorkflowState;
use proofmesh_protocol::messages::{Submission, Verdict};
use proofmesh_protocol::{Envelope, Keypair, Message};
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
    let submission = seal(Message::Submission(Submission {
        workflow,
        owner: matchmaker.public(),
        owner_eth: None,
        escrow: None,
        submitted_at_ms: now_ms(),
    }));
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
    gateway.shutdown().await;
}
