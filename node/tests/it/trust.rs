//! Whose decisions count: with `network.matchmakers` set, a verdict signed by any other key is
//! ignored, however valid its signature and the operator's signature on the result inside.
//! Without the list (a closed development network), the same forged verdict is believed:
//! that node is the control showing the forgery did arrive. An operator refuses an untrusted
//! matchmaker's assignment and says why. A node that only operates takes the inputs a trusted
//! matchmaker pushes on its word, and checks them where no matchmakers are configured; it
//! runs a task from the definition such a matchmaker dispatches, and otherwise waits for the
//! task's workflow; a matchmaker it trusts sends it a workflow only when its tasks take inputs.
//! A matchmaker's assignment reaches its operator while the commit that holds it still syncs.

use crate::cluster::{
    attempt_one, deliver, made_then_used, metric, now_ms, options, plain_peer, self_signed_result,
    submission_push, wait_completed, Role, DOMAIN,
};
use proofmesh_node::network::{self, NetworkEvent, PublishOutcome, Topic};
use proofmesh_node::runtime::{Node, NodeHandle, NodeOptions, Progress};
use proofmesh_node::store::TaskState;
use proofmesh_protocol::messages::{
    Dispatch, FailureCause, SignedResult, SyncReply, SyncUpdate, Verdict,
};
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{Envelope, Keypair, Message, WorkflowId};
use std::time::Duration;
use tokio::time::{sleep, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// Wait until `mm` has heard an operator's advert (before that it assigns nothing).
async fn heard_an_advert(mm: &NodeHandle) {
    let deadline = Instant::now() + WAIT;
    while mm.api().store().operators().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the matchmaker never heard the operator's advert"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// A matchmaker whose own key is the one its network is configured to trust.
async fn configured_matchmaker(dir: &std::path::Path) -> NodeHandle {
    Node::spawn(configured_matchmaker_options(dir))
        .await
        .expect("matchmaker starts")
}

/// [`configured_matchmaker`]'s options.
fn configured_matchmaker_options(dir: &std::path::Path) -> NodeOptions {
    let key = Keypair::generate();
    let mut mm = options(dir, Role::Matchmaker, &[]);
    mm.trusted_matchmakers = vec![key.public()];
    mm.keypair = Some(key);
    mm
}

/// An operator bootstrapped to `mm` and configured to trust it.
async fn trusting_operator(dir: &std::path::Path, mm: &NodeHandle) -> NodeHandle {
    let mut operator = options(dir, Role::Operator, mm.listen_addrs());
    operator.trusted_matchmakers = vec![mm.public_key()];
    Node::spawn(operator).await.expect("operator starts")
}

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
    heard_an_advert(&mm).await;
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
                vouched: Vec::new(),
                pruned: false,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_a_dispatched_task_definition_on_a_configured_matchmakers_word_only() {
    let (trusting_dir, checking_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mm = Keypair::generate();
    let mut trusting = options(trusting_dir.path(), Role::Operator, &[]);
    trusting.trusted_matchmakers = vec![mm.public()];
    let trusting = Node::spawn(trusting).await.expect("operator starts");
    // No matchmakers configured: it waits for the workflow itself, briefly here.
    let mut checking = options(checking_dir.path(), Role::Operator, &[]);
    if let Some(op) = checking.operator.as_mut() {
        op.input_wait = Duration::from_millis(300);
    }
    let checking = Node::spawn(checking).await.expect("operator starts");

    // Task 0 of a workflow neither operator holds, dispatched with its definition and no
    // submission at all.
    let workflow = made_then_used("defined");
    let id = workflow.id();
    let (client, mut events) = plain_peer(
        &mm,
        [trusting.listen_addrs(), checking.listen_addrs()].concat(),
    );
    for (nonce, node) in (1..).zip([&trusting, &checking]) {
        let now = now_ms();
        let dispatch = Message::Dispatch(Dispatch {
            inputs: Vec::new(),
            assignments: vec![attempt_one(
                id,
                0,
                node.public_key(),
                mm.public(),
                now,
                false,
            )],
            tasks: vec![workflow.tasks[0].clone()],
        });
        let envelope = Envelope::seal(&mm, DOMAIN, &dispatch, nonce, now + 60_000);
        let peer = network::peer_id_of(&node.public_key()).expect("ed25519 key");
        let answer = deliver(&client, peer, &envelope).await;
        assert!(
            matches!(answer, Some((_, Message::Acceptance(_)))),
            "both accept: {answer:?}"
        );
    }

    // Each reports to the matchmaker: the trusting one a result (it ran the task from the
    // definition alone, its workflow still unknown to it); the other a failure to find it.
    let (mut result, mut failure) = (None, None);
    let deadline = Instant::now() + WAIT;
    while result.is_none() || failure.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.recv())
            .await
            .expect("both operators report")
            .expect("network runs");
        let NetworkEvent::DirectRequest {
            envelope,
            message,
            responder,
            ..
        } = event
        else {
            continue;
        };
        responder.ack();
        match &message {
            Message::Result(r) if envelope.sender == trusting.public_key() => {
                result = Some(r.clone())
            }
            Message::Failure(f) if envelope.sender == checking.public_key() => {
                failure = Some(f.clone())
            }
            Message::Result(_) | Message::Failure(_) => {
                panic!("unexpected report {message:?} from {}", envelope.sender)
            }
            _ => {} // catch-up requests and the like
        }
    }
    let result = result.expect("a result");
    assert_eq!((result.result.workflow, result.result.task), (id, 0));
    assert!(trusting.api().store().workflow(&id).unwrap().is_none());
    let failure = failure.expect("a failure");
    assert!(
        matches!(&failure.cause, FailureCause::Input(why) if why.contains("unknown to this operator")),
        "{failure:?}"
    );

    checking.shutdown().await;
    trusting.shutdown().await;
}

/// Submit a workflow named `name` of 8 independent noop tasks to `mm` and wait for it: more
/// than a trusting operator's 2 cores and queue of 4 take at once, so at least two dispatches.
async fn eight_noop_tasks_completed(mm: &NodeHandle, name: &str) -> WorkflowId {
    let (workflow, _) = spec::load(
        &format!("name = \"{name}\"\n[[task]]\nid = \"t\"\ncount = 8\nprogram = \"noop@1\"\n"),
        Format::Toml,
    )
    .unwrap();
    let id = mm.api().submit(workflow).await.expect("submitted");
    wait_completed(mm.api(), &id).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matchmaker_sends_a_trusting_operator_task_definitions_and_only_the_workflows_it_needs() {
    let (mm_dir, op_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mm = configured_matchmaker(mm_dir.path()).await;
    let operator = trusting_operator(op_dir.path(), &mm).await;
    heard_an_advert(&mm).await;

    // Independent tasks take no inputs: the operator runs them from their definitions and
    // is never sent the workflow. More than its 2 cores and queue of 4 take at once, so the
    // last ones go in a later dispatch, with their definitions again.
    let independent = eight_noop_tasks_completed(&mm, "independent").await;
    assert!(operator
        .api()
        .store()
        .workflow(&independent)
        .unwrap()
        .is_none());
    let signed = |kind: &str| {
        metric(
            &mm,
            &format!("proofmesh_envelopes_signed_total{{kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(signed("AssignmentBatch") + signed("Assignment"), 0.0);
    assert!(signed("Dispatch") >= 2.0);

    // A task that takes an input needs its workflow held: it follows the first dispatch.
    let dependent = mm
        .api()
        .submit(made_then_used("dependent"))
        .await
        .expect("submitted");
    wait_completed(mm.api(), &dependent).await;
    assert!(operator
        .api()
        .store()
        .workflow(&dependent)
        .unwrap()
        .is_some());

    operator.shutdown().await;
    mm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_that_joins_while_a_workflow_runs_is_not_sent_it_when_its_tasks_come_defined() {
    let (mm_dir, op_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mm = configured_matchmaker(mm_dir.path()).await;
    // Active before the operator exists: a node that joins looks for active workflows it has
    // never heard of (discovery) within its first catch-up round, and this one stays active
    // well past it.
    let (workflow, _) = spec::load(
        "name = \"long\"\n[[task]]\nid = \"t\"\nprogram = \"sleep@1\"\nargs = [\"--ms\", \"1500\"]\n",
        Format::Toml,
    )
    .unwrap();
    let id = mm.api().submit(workflow).await.expect("submitted");
    let operator = trusting_operator(op_dir.path(), &mm).await;
    wait_completed(mm.api(), &id).await;
    let results = mm.api().store().results(&id).unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].1.result.operator, operator.public_key());
    // It ran the task from the definition its dispatch carried and never took in the
    // workflow: it had no use for it.
    assert!(operator.api().store().workflow(&id).unwrap().is_none());

    operator.shutdown().await;
    mm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_reaches_its_operator_before_the_matchmakers_commit_is_durable() {
    let (mm_dir, op_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut slow = configured_matchmaker_options(mm_dir.path());
    // A slow disk: each durable commit of the matchmaker takes 300 ms more (well inside the
    // test heartbeat timeout, 1 s, which a stalled core would otherwise let pass).
    slow.store_sync_delay = Duration::from_millis(300);
    let mm = Node::spawn(slow).await.expect("matchmaker starts");
    let operator = trusting_operator(op_dir.path(), &mm).await;
    heard_an_advert(&mm).await;

    let (workflow, _) = spec::load(
        "name = \"early\"\n[[task]]\nid = \"t\"\nprogram = \"noop@1\"\n",
        Format::Toml,
    )
    .unwrap();
    // The matchmaker shows the task assigned once the assignment is durable.
    let mut progress = mm.api().subscribe();
    let id = mm.api().submit(workflow).await.expect("submitted");
    let shown_assigned_ms = loop {
        let event = tokio::time::timeout(WAIT, progress.recv())
            .await
            .expect("the task is assigned in time")
            .expect("progress stream open");
        if let Progress::Task {
            state: TaskState::Assigned { .. },
            ..
        } = event
        {
            break now_ms();
        }
    };
    wait_completed(mm.api(), &id).await;
    let results = mm.api().store().results(&id).unwrap();
    assert_eq!(results.len(), 1);
    let ran = &results[0].1.result;
    assert_eq!(ran.operator, operator.public_key());
    // It ran while the commit that holds its assignment was still syncing.
    assert!(
        ran.started_ms + 150 <= shown_assigned_ms,
        "the task started only {} ms before its assignment was durable: the assignment \
         waited for the commit",
        shown_assigned_ms.saturating_sub(ran.started_ms)
    );

    operator.shutdown().await;
    mm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_answers_reach_a_lone_matchmaker_once() {
    let (mm_dir, op_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mm = configured_matchmaker(mm_dir.path()).await;
    let operator = trusting_operator(op_dir.path(), &mm).await;
    heard_an_advert(&mm).await;

    // 8 tasks on 2 cores and a queue of 4: at least two dispatches, each answered.
    let id = eight_noop_tasks_completed(&mm, "answers").await;
    let answers = |what: &str| {
        metric(
            &operator,
            &format!("p2p_gossip_messages_{what}_total{{topic=\"acceptances\"}}"),
        )
    };
    // Each answer went back as its dispatch's reply; the matchmaker, the topic's only
    // follower, was not sent it a second time by gossip.
    assert!(answers("unneeded") >= 2.0, "{}", answers("unneeded"));
    assert_eq!(answers("published"), 0.0);
    // And nothing was lost: every task ran there and its result was accepted.
    let accepted = mm
        .api()
        .store()
        .results(&id)
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r.result.operator == operator.public_key())
        .count();
    assert_eq!(accepted, 8);

    operator.shutdown().await;
    mm.shutdown().await;
}
