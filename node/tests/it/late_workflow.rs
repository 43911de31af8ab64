//! A workflow that reaches a node late. A node that accepts a submission sends it straight to
//! every matchmaker it trusts, besides gossip (which misses a node not yet in any peer's mesh).
//! Accepted results that overtake their workflow are kept until it arrives, not dropped: a
//! matchmaker that learns a workflow by discovery after the active one died has nobody left to
//! ask for them, and without them it ran those tasks again. An operator's result that reaches
//! a matchmaker before the workflow is checked once it does, not dropped: the matchmaker
//! waited out the attempt's deadline and slashed an operator that had delivered.

use crate::cluster::{
    attempt_one, deliver, made_then_used, noop_advert, now_ms, options, plain_peer,
    self_signed_result, submitted_by, Role, DOMAIN,
};
use proofmesh_node::network::NetworkEvent;
use proofmesh_node::runtime::{Node, NodeHandle};
use proofmesh_protocol::messages::{Heartbeat, SignedResult, Verdict};
use proofmesh_protocol::{Envelope, Keypair, Message, WorkflowId};
use std::time::Duration;
use tokio::time::{sleep, Instant};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_goes_straight_to_every_trusted_matchmaker() {
    let dir = tempfile::tempdir().unwrap();
    let matchmaker = Keypair::generate();
    let mut gateway = options(dir.path(), Role::Gateway, &[]);
    gateway.trusted_matchmakers = vec![matchmaker.public()];
    let gateway = Node::spawn(gateway).await.expect("gateway starts");
    // The matchmaker: a plain peer, to see how the submission reaches it.
    let (client, mut events) = plain_peer(&matchmaker, gateway.listen_addrs().to_vec());
    let deadline = Instant::now() + WAIT;
    while client.peers().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "never connected to the gateway");
        sleep(Duration::from_millis(20)).await;
    }

    let id = gateway
        .api()
        .submit(made_then_used("straight"))
        .await
        .expect("submitted");
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the submission never came as a direct request")
            .expect("network running");
        if let NetworkEvent::DirectRequest {
            message: Message::Submission(s),
            responder,
            ..
        } = event
        {
            assert_eq!(s.workflow.id(), id);
            responder.ack();
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_accepted_before_their_workflow_arrives_are_kept_until_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let matchmaker = Keypair::generate();
    let mut gateway = options(dir.path(), Role::Gateway, &[]);
    gateway.trusted_matchmakers = vec![matchmaker.public()];
    let gateway = Node::spawn(gateway).await.expect("gateway starts");
    let (client, _events) = plain_peer(&matchmaker, gateway.listen_addrs().to_vec());

    let workflow = made_then_used("late");
    let id = workflow.id();
    let operator = Keypair::generate();
    let result = self_signed_result(&operator, id, 0, b"made");
    let seal = |message: Message, nonce| {
        Envelope::seal(&matchmaker, DOMAIN, &message, nonce, now_ms() + 60_000)
    };
    // The verdict first, then the workflow it belongs to.
    let verdict = seal(Message::Verdict(Verdict::Accepted(result.clone())), 1);
    deliver(&client, gateway.peer_id(), &verdict).await;
    assert!(
        gateway.api().status(&id).unwrap().is_none(),
        "not known yet"
    );
    let submission = seal(
        Message::Submission(submitted_by(workflow, matchmaker.public())),
        2,
    );
    deliver(&client, gateway.peer_id(), &submission).await;

    task_0_done_with(
        &gateway,
        &id,
        result,
        "the result that came before its workflow was lost",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_result_that_arrives_before_its_workflow_is_judged_once_it_does() {
    let dir = tempfile::tempdir().unwrap();
    // Trusts every matchmaker's decisions (none configured), and hears no other matchmaker:
    // active for every workflow, as a survivor is.
    let mm = Node::spawn(options(dir.path(), Role::Matchmaker, &[]))
        .await
        .expect("matchmaker starts");
    let boot = mm.listen_addrs().to_vec();
    // The matchmaker that assigned the attempt (and died), and the operator that ran it.
    let (gone, operator) = (Keypair::generate(), Keypair::generate());
    let (gone_client, _gone_events) = plain_peer(&gone, boot.clone());
    let (op_client, _op_events) = plain_peer(&operator, boot);
    let mut nonce = 0;
    let mut seal = |keypair: &Keypair, message: Message| {
        nonce += 1;
        Envelope::seal(keypair, DOMAIN, &message, nonce, now_ms() + 60_000)
    };
    let advert = seal(
        &operator,
        Message::OperatorAdvert(noop_advert(operator.public())),
    );
    deliver(&op_client, mm.peer_id(), &advert).await;
    let deadline = Instant::now() + WAIT;
    while mm.api().store().operators().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the advert never arrived");
        sleep(Duration::from_millis(20)).await;
    }

    let workflow = made_then_used("late-result");
    let id = workflow.id();
    let now = now_ms();
    let heartbeat = seal(
        &operator,
        Message::Heartbeat(Heartbeat {
            operator: operator.public(),
            at_ms: now,
            running: Vec::new(),
        }),
    );
    deliver(&op_client, mm.peer_id(), &heartbeat).await;
    // Gossip in the order a late matchmaker may get it: the assignment, the operator's
    // result (its output attached, as operators send it), then the workflow itself.
    let assignment = attempt_one(id, 0, operator.public(), gone.public(), now, false);
    let assignment = seal(&gone, Message::Assignment(assignment));
    deliver(&gone_client, mm.peer_id(), &assignment).await;
    let result = self_signed_result(&operator, id, 0, b"made");
    let sent = seal(&operator, Message::Result(result.clone()));
    op_client
        .send_direct_in_order(mm.peer_id(), &sent, vec![b"made".to_vec()])
        .await
        .expect("result delivered");
    let submission = seal(
        &gone,
        Message::Submission(submitted_by(workflow, gone.public())),
    );
    deliver(&gone_client, mm.peer_id(), &submission).await;

    // The attempt's deadline is a minute away: only the held result can end it sooner.
    task_0_done_with(
        &mm,
        &id,
        result,
        "the result that came before its workflow was never judged",
    )
    .await;
}

/// Wait until `node` holds task 0 of `id` done with exactly `result` (panics with `lost` and
/// the last status after [`WAIT`]).
async fn task_0_done_with(node: &NodeHandle, id: &WorkflowId, result: SignedResult, lost: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = node.api().status(id).unwrap();
        if status.as_ref().is_some_and(|s| s.count("done") == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "{lost}: {status:?}");
        sleep(Duration::from_millis(20)).await;
    }
    let held = node.api().store().result(id, 0).unwrap();
    assert_eq!(held, Some(result), "the very result accepted");
}
