//! Batches end to end against real nodes: an operator gives one signed answer for an
//! assignment batch, in its order, and the same answers again when a matchmaker re-sends an
//! attempt (alone or in another batch), as one taking over would; a gateway takes every
//! verdict of a gossiped verdict batch; an operator takes a dispatch's inputs and answers its
//! assignment; a queued attempt runs once the lease frees and its program stops with the node.

use crate::cluster::{
    attempt_one, deliver, made_then_used, now_ms, options, plain_peer, self_signed_result,
    submission_push, Role, DOMAIN,
};
use proofmesh_node::network::{self, Topic};
use proofmesh_node::runtime::{Node, NodeHandle};
use proofmesh_operator::ProgramSpec;
use proofmesh_protocol::messages::Capacity;
use proofmesh_protocol::messages::{Answer, Dispatch, Verdict};
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{ContentId, Envelope, Keypair, Message, MessageKind};
use std::time::Duration;
use tokio::time::{sleep, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// An operator node and a matchmaker driven by hand: a plain network peer signing as `mm`
/// (the operator trusts any, no list configured), `peer` being the operator. Keep every
/// field bound while the test runs (the peer's events and the node's directory included).
struct HandDriven {
    operator: NodeHandle,
    mm: Keypair,
    client: network::Client,
    peer: network::PeerId,
    _events: tokio::sync::mpsc::Receiver<network::NetworkEvent>,
    _dir: tempfile::TempDir,
}

impl HandDriven {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let operator = Node::spawn(options(dir.path(), Role::Operator, &[]))
            .await
            .expect("operator starts");
        let mm = Keypair::generate();
        let (client, events) = plain_peer(&mm, operator.listen_addrs().to_vec());
        let peer = network::peer_id_of(&operator.public_key()).expect("ed25519 key");
        HandDriven {
            operator,
            mm,
            client,
            peer,
            _events: events,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_answers_a_batch_at_once_and_repeats_its_answers() {
    let HandDriven {
        operator,
        mm,
        client,
        peer,
        _events,
        _dir,
    } = HandDriven::start().await;

    let now = now_ms();
    let workflow = ContentId::of_bytes(b"batched workflow");
    let (op, by) = (operator.public_key(), mm.public());
    let assignment = |task: u32, queued: bool| attempt_one(workflow, task, op, by, now, queued);
    let mut nonce = 0;
    let mut send = |message: Message| {
        nonce += 1;
        let envelope = Envelope::seal(&mm, DOMAIN, &message, nonce, now + 60_000);
        let client = client.clone();
        async move {
            deliver(&client, peer, &envelope)
                .await
                .expect("an answer, not a bare ack")
        }
    };
    let accepted = |answer: &Answer| match answer {
        Answer::Accepted(a) => (a.task, a.assignment),
        Answer::Refused(f) => panic!("task {} refused: {:?}", f.task, f.cause),
    };

    // Two tasks that fit the operator's two cores: one batch, one answer for both, in order.
    let (a0, a1) = (assignment(0, false), assignment(1, false));
    let (first, message) = send(Message::Assignments(vec![a0.clone(), a1.clone()])).await;
    assert_eq!(first.kind, MessageKind::AnswerBatch);
    assert_eq!(first.sender, operator.public_key());
    let Message::Answers(answers) = message else {
        panic!("expected a batch of answers, got {message:?}")
    };
    let got: Vec<_> = answers.iter().map(accepted).collect();
    assert_eq!(
        got,
        vec![(0, ContentId::of_value(&a0)), (1, ContentId::of_value(&a1))]
    );

    // Task 0 again, alone: the very same signed answer (its batch), not a second acceptance.
    let (again, _) = send(Message::Assignment(a0)).await;
    assert_eq!(again, first);

    // Task 1 again beside a new task (queued: both cores are taken): one new batch, with task
    // 1's first answer repeated and task 2's own.
    let a2 = assignment(2, true);
    let (mixed, message) = send(Message::Assignments(vec![a1, a2.clone()])).await;
    assert_ne!(mixed, first);
    let Message::Answers(repeated) = message else {
        panic!("expected a batch of answers, got {message:?}")
    };
    assert_eq!(repeated[0], answers[1]);
    assert_eq!(accepted(&repeated[1]), (2, ContentId::of_value(&a2)));
    assert_eq!(repeated.len(), 2);

    operator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_takes_every_verdict_of_a_gossiped_batch() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Node::spawn(options(dir.path(), Role::Gateway, &[]))
        .await
        .expect("gateway starts");
    let (workflow, _) = spec::load(
        "name = \"verdicts\"\n[[task]]\nid = \"two\"\ncount = 2\nprogram = \"noop@1\"\n",
        Format::Toml,
    )
    .unwrap();
    let id = gateway.api().submit(workflow).await.expect("submitted");

    // A matchmaker (the gateway lists none, so any signer's decisions count) whose batch
    // accepts both tasks' results, each signed by their operator (itself here).
    let mm = Keypair::generate();
    let (client, _events) = plain_peer(&mm, gateway.listen_addrs().to_vec());
    let accepted = |task: u32| Verdict::Accepted(self_signed_result(&mm, id, task, &[task as u8]));
    let batch = Envelope::seal(
        &mm,
        DOMAIN,
        &Message::Verdicts(vec![accepted(0), accepted(1)]),
        1,
        now_ms() + 60_000,
    );
    let deadline = Instant::now() + WAIT;
    while client
        .topic_peers(Topic::Verdicts)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "never reached the gateway");
        sleep(Duration::from_millis(50)).await;
    }
    client.publish(&batch).await.expect("published");
    loop {
        let status = gateway.api().status(&id).unwrap().expect("known");
        if status.count("done") == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the batch's verdicts were not all taken: {:?}",
            status.tasks
        );
        sleep(Duration::from_millis(50)).await;
    }
    for task in 0..2 {
        let stored = gateway.api().store().result(&id, task).unwrap();
        assert_eq!(
            stored.map(|r| r.result.output),
            Some(ContentId::of_bytes(&[task as u8]))
        );
    }
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_takes_a_dispatchs_inputs_and_answers_its_assignment() {
    let HandDriven {
        operator,
        mm,
        client,
        peer,
        _events,
        _dir,
    } = HandDriven::start().await;
    let workflow = made_then_used("dispatch");
    let id = workflow.id();
    let now = now_ms();
    let submission = submission_push(workflow, mm.public());
    // Task 1's assignment with its input, task 0's accepted result (made by another operator).
    let input = self_signed_result(&Keypair::generate(), id, 0, b"made");
    let assignment = attempt_one(id, 1, operator.public_key(), mm.public(), now, false);
    let dispatch = Message::Dispatch(Dispatch {
        inputs: vec![input.clone()],
        assignments: vec![assignment.clone()],
        tasks: vec![],
    });
    let mut answers = Vec::new();
    for (nonce, message) in (1..).zip([submission, dispatch]) {
        let envelope = Envelope::seal(&mm, DOMAIN, &message, nonce, now + 60_000);
        answers.push(deliver(&client, peer, &envelope).await);
    }
    // The push of the submission is acknowledged; the dispatch is answered, like a lone
    // assignment, by the operator's signed acceptance.
    assert!(answers[0].is_none(), "{:?}", answers[0]);
    let Some((envelope, Message::Acceptance(accepted))) = answers.pop().flatten() else {
        panic!("expected an acceptance")
    };
    assert_eq!(envelope.sender, operator.public_key());
    assert_eq!(accepted.task, 1);
    assert_eq!(accepted.assignment, ContentId::of_value(&assignment));
    // It took the input in before answering.
    assert_eq!(operator.api().store().result(&id, 0).unwrap(), Some(input));

    operator.shutdown().await;
}

/// Whether process `pid` has ended (gone, or a zombie not reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// A queued attempt waits for the lease, then runs its program (on the operator's queue
/// thread); shutting the node down stops that program too: nothing is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_attempt_runs_when_the_lease_frees_and_stops_with_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let mut opts = options(dir.path(), Role::Operator, &[]);
    let op = opts.operator.as_mut().expect("an operator");
    // One core: the second task waits in the queue for the first one's lease.
    op.capacity = Some(Capacity {
        cpu: 1,
        memory_mb: 4096,
        disk_mb: 10_000,
        gpus: Vec::new(),
    });
    op.config = op.config.clone().with_program(
        "hold",
        "1",
        ProgramSpec::Command(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("echo $$ >> {}; exec sleep 60", pids.display()),
        ]),
    );
    let operator = Node::spawn(opts).await.expect("operator starts");
    let mm = Keypair::generate();
    let (client, _events) = plain_peer(&mm, operator.listen_addrs().to_vec());
    let peer = network::peer_id_of(&operator.public_key()).expect("ed25519 key");

    let text = "name = \"queued\"\n[[task]]\nid = \"first\"\nprogram = \"sleep@1\"\nargs = [\"--ms\", \"200\"]\n\n[[task]]\nid = \"held\"\nprogram = \"hold@1\"\n";
    let workflow = spec::load(text, Format::Toml).expect("valid workflow").0;
    let id = workflow.id();
    let now = now_ms();
    let me = operator.public_key();
    let assignments = Message::Assignments(vec![
        attempt_one(id, 0, me, mm.public(), now, false),
        attempt_one(id, 1, me, mm.public(), now, true),
    ]);
    // Before anything is delivered: the first task runs 200 ms after this at the earliest.
    let started = Instant::now();
    for (nonce, message) in (1..).zip([submission_push(workflow, mm.public()), assignments]) {
        let envelope = Envelope::seal(&mm, DOMAIN, &message, nonce, now + 60_000);
        deliver(&client, peer, &envelope).await;
    }
    // The queued task starts only once the first one's lease is free.
    let pid: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pids)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(started.elapsed() < WAIT, "the queued task never started");
        sleep(Duration::from_millis(10)).await;
    };
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the queued task started before the first one freed the core"
    );
    assert!(!ended(pid), "the queued task's program is running");

    operator.shutdown().await;
    let stopping = Instant::now();
    while !ended(pid) {
        assert!(
            stopping.elapsed() < Duration::from_secs(5),
            "process {pid} outlived its node"
        );
        sleep(Duration::from_millis(10)).await;
    }
}
