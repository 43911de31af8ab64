//! How a node introduces itself to a peer that connects to it. Gossip reaches a new peer only
//! once its subscriptions are known, so what a node gossips as the connection opens can miss
//! that peer; an operator's advert therefore also goes straight to it. A matchmaker back from a
//! crash that knew no advert of an operator gave it no task and could not take the results it
//! had delivered to the matchmaker that died (e2e `both_matchmakers_down_in_turn_..`).

use crate::cluster::{options, plain_peer, Role};
use proofmesh_node::network::NetworkEvent;
use proofmesh_node::runtime::Node;
use proofmesh_protocol::{Keypair, Message};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sends_its_advert_straight_to_a_peer_that_connects() {
    let dir = tempfile::tempdir().unwrap();
    let mut operator = options(dir.path(), Role::Operator, &[]);
    // No periodic advert in this test's time: only the one sent on connecting can come.
    if let Some(op) = operator.operator.as_mut() {
        op.advert_interval = Duration::from_secs(600);
    }
    let operator = Node::spawn(operator).await.expect("operator starts");
    // A matchmaker that starts after the operator: a plain peer, to see how the advert comes.
    let (_client, mut events) = plain_peer(&Keypair::generate(), operator.listen_addrs().to_vec());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the operator's advert never came as a direct request")
            .expect("network running");
        if let NetworkEvent::DirectRequest {
            message: Message::OperatorAdvert(a),
            envelope,
            responder,
            ..
        } = event
        {
            assert_eq!(
                a.operator,
                operator.public_key(),
                "the operator's own advert"
            );
            assert_eq!(envelope.sender, a.operator, "signed by the operator");
            assert_eq!(a.capacity.cpu, 2, "with its capacity");
            responder.ack();
            break;
        }
    }
}
