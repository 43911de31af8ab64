//! Whose decisions count: with `network.matchmakers` set, a verdict signed by any other key is
//! ignored, however valid its signature and the operator's signature on the result inside.
//! Without the list (a closed development network), the same forged verdict is believed:
//! that node is the control showing the forgery did arrive. An operator refuses an untrusted
//! matchmaker's assignment and says why. A node that only operates takes the inputs a trusted
//! matchmaker pushes on its word, and checks them where no matchmakers are configured.

use crate::cluster::{
    deliver, made_then_used, metric, now_ms, options, plain_peer, self_signed_result,
    submission_push, Role, DOMAIN,
};
use proofmesh_node::network::{self, PublishOutcome, Topic};
use proofmesh_node::runtime::Node;
use proofmesh_protocol::messages::{SignedResult, SyncReply, SyncUpdate, Verdict};
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{Envelope, Keypair, Message};
use std::time::Duration;
use tokio::time::{sleep, Instant};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_from_an_untrusted_key_is_ignored_where_matchmakers_are_listed() {
    let (strict_dir, open_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut strict = options(strict_dir.path(), Role::Gateway, &[]);
    // The one trusted matchmaker is not on this network: nobody's verdicts count but its.
    strict.trusted_matchmakers = vec![Keypair::generate().public()];
    let strict = Node::spawn(strict).await.expect("strict gateway starts");
    let open = Node::spawn(options(
        open_dir.path(),
        Role::Gateway,
        strict.listen_addrs(),
    ))
    .await
    .expect("open gateway starts");

    let (workflow, _) = spec::load(
        "name = \"trust\"\n[[task]]\nid = \"only\"\nprogram = \"noop@1\"\n",
        Format::Toml,
    )
    .unwrap();
    let id = strict.api().submit(workflow).await.expect("submitted");

    // The forger: a plain network peer signing both the result (as its operator) and the
    // verdict that accepts it.
    let forger = Keypair::generate();
    let (client, _events) = plain_peer(
        &forger,
        [strict.listen_addrs(), open.listen_addrs()].concat(),
    );
    let result = self_signed_result(&forger, id, 0, b"not a proof");
    let verdict = Envelope::seal(
        &forger,
        DOMAIN,
        &Message::Verdict(Verdict::Accepted(result)),
        1,
        now_ms() + 60_000,
    );

    // Both gateways hear of the workflow, then of the forged verdict.
    let deadline = Instant::now() + WAIT;
    while open.api().status(&id).unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the open gateway never heard of the workflow"
        );
        sleep(Duration::from_millis(50)).await;
    }
    while client.topic_peers(Topic::Verdicts).await.unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the forger never reached both gateways"
        );
        sleep(Duration::from_millis(50)).await;
    }
    let sent = client.publish(&verdict).await.expect("published");
    assert!(matches!(sent, PublishOutcome::Sent), "{sent:?}");

    // The control believes it: the forgery arrived and would have counted.
    loop {
        let status = open.api().status(&id).unwrap().expect("known");
        if status.count("done") == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the open gateway never took the verdict"
        );
        sleep(Duration::from_millis(50)).await;
    }
    // The strict gateway counted it as untrusted and left the task alone.
    while metric(&strict, "proofmesh_untrusted_decisions_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the strict gateway never saw the verdict"
        );
        sleep(Duration::from_millis(50)).await;
    }
    let status = strict.api().status(&id).unwrap().expect("known");
    assert_eq!(status.count("done"), 0, "{:?}", status.tasks);
    assert!(strict.api().store().result(&id, 0).unwrap().is_none());

    open.shutdown().await;
    strict.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_refuses_an_untrusted_matchmakers_assignment_saying_why() {
    let (mm_dir, op_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mm = Node::spawn(options(mm_dir.path(), Role::Matchmaker, &[]))
        .await
        .expect("matchmaker starts");
    let mut operator = options(op_dir.path(), Role::Operator, mm.listen_addrs());
    // This operator trusts some other matchmaker only.
    operator.trusted_matchmakers = vec![Keypair::generate().public()];
    let operator = Node::spawn(operator).await.expect("operator starts");

    let (workflow, _) = spec::load(
        "name = \"refused\"\n[defaults]\nmax_attempts = 1\n[[task]]\nid = \"two\"\ncount = 2\nprogram = \"noop@1\"\n",
        Format::Toml,
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    // Submitted once the matchmaker knows the operator (else nothing would be assigned).
    while mm.api().store().operators().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the matchmaker never heard the operator's advert"
        );
        sleep(Duration::from_millis(50)).await;
    }
    let id = mm.api().submit(workflow).await.expect("submitted");
    // Both tasks were assigned in one batch, and both refused in one answer.
    let causes = loop {
        let status = mm.api().status(&id).unwrap().expect("known");
        let causes: Vec<String> = status
            .tasks
            .iter()
            .filter_map(|t| t.attempts.iter().find_map(|a| a.cause.clone()))
            .collect();
        if causes.len() == 2 {
            break causes;
        }
        assert!(
            Instant::now() < deadline,
            "no attempt ended: {:?}",
            status.tasks
        );
        sleep(Duration::from_millis(50)).await;
    };
    for cause in causes {
        assert!(
            cause.contains(&mm.public_key().to_string())
                && cause.contains("not among this operator's network.matchmakers"),
            "{cause}"
        );
    }
    assert_eq!(
        metric(
            &mm,
            "proofmesh_envelopes_signed_total{kind=\"AssignmentBatch\"}"
        ),
        1.0
    );
    assert!(metric(&operator, "proofmesh_untrusted_decisions_total") >= 1.0);

    operator.shutdown().await;
    mm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_takes_pushed_inputs_on_a_configured_matchmakers_word_only() {
    let (vouching_dir, checking_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mm = Keypair::generate();
    let mut vouching = options(vouching_dir.path(), Role::Operator, &[]);
    vouching.trusted_matchmakers = vec![mm.public()];
    let vouching = Node::spawn(vouching).await.expect("operator starts");
    // No matchmakers configured: anyone's decisions count, so nobody's word replaces a check.
    let checking = Node::spawn(options(checking_dir.path(), Role::Operator, &[]))
        .await
        .expect("operator starts");

    let workflow = made_then_used("inputs");
    let id = workflow.id();
    let submission = submission_push(workflow, mm.public());
    // Task 0's result as the matchmaker pushes it ahead of task 1's assignment, but with its
    // operator's signature broken in transit.
    let mut input = self_signed_result(&Keypair::generate(), id, 0, b"made");
    input.signature.0[0] ^= 1;
    // Then task 1's result, intact: once it is taken, the push before it was handled too
    // (one connection, handled in order).
    let later = self_signed_result(&Keypair::generate(), id, 1, b"uses");
    let update = |result: SignedResult| {
        Message::SyncReply(SyncReply {
            workflows: vec![SyncUpdate {
                workflow: id,
                accepted: vec![result],
                failed: None,
                completed: false,
            }],
            submissions: Vec::new(),
            more: false,
        })
    };
    let pushes = [submission, update(input.clone()), update(later)];
    let (client, _events) = plain_peer(
        &mm,
        [vouching.listen_addrs(), checking.listen_addrs()].concat(),
    );
    let deadline = Instant::now() + WAIT;
    for node in [&vouching, &checking] {
        let peer = network::peer_id_of(&node.public_key()).expect("ed25519 key");
        for (nonce, push) in (1..).zip(&pushes) {
            let envelope = Envelope::seal(&mm, DOMAIN, push, nonce, now_ms() + 60_000);
            deliver(&client, peer, &envelope).await;
        }
        while node.api().store().result(&id, 1).unwrap().is_none() {
            assert!(Instant::now() < deadline, "the pushes were never handled");
            sleep(Duration::from_millis(50)).await;
        }
    }

    // The operator that lists the matchmaker took the input on its word (no second check);
    // the one that lists none checked the signature and dropped it.
    assert_eq!(vouching.api().store().result(&id, 0).unwrap(), Some(input));
    assert!(checking.api().store().result(&id, 0).unwrap().is_none());

    checking.shutdown().await;
    vouching.shutdown().await;
}
