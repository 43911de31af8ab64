//! Results relayed by nodes that are not trusted matchmakers. A matchmaker that takes a workflow
//! over from one that died hears of the results that one accepted from a gateway's catch-up
//! answer: the gateway keeps the matchmakers' signed verdicts and relays them unchanged, and
//! the matchmaker takes each on the signature of the matchmaker that accepted it. A bare result
//! for an attempt it never saw assigned is only its operator's claim, however well signed, and
//! is not taken (before, a known operator could get an output accepted for a task nobody
//! assigned it this way).

use crate::cluster::{
    deliver, metric, noop_advert, now_ms, options, plain_peer, self_signed_result, toml_workflow,
    wait_completed, Role, DOMAIN,
};
use proofmesh_node::network::NetworkEvent;
use proofmesh_node::runtime::{Node, NodeHandle};
use proofmesh_protocol::messages::{
    SignedResult, SyncReply, SyncRequest, SyncUpdate, SyncWant, Verdict,
};
use proofmesh_protocol::{Envelope, Keypair, Message, Program, TaskIndex, WorkflowId};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::{sleep, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// `signer`'s verdict accepting `result`, signed long ago (expired as a message).
fn old_verdict(signer: &Keypair, result: SignedResult) -> Envelope {
    Envelope::seal(
        signer,
        DOMAIN,
        &Message::Verdict(Verdict::Accepted(result)),
        1,
        now_ms() - 60_000,
    )
}

/// Tasks of `id` done at `node`.
fn done(node: &NodeHandle, id: &WorkflowId) -> usize {
    node.api().status(id).unwrap().expect("known").count("done")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matchmaker_takes_relayed_results_on_a_trusted_matchmakers_signed_verdict_only() {
    let dir = tempfile::tempdir().unwrap();
    // The matchmaker that accepted the results and died: trusted, never running here.
    let dead = Keypair::generate();
    let me = Keypair::generate();
    let mut o = options(dir.path(), Role::Matchmaker, &[]);
    o.trusted_matchmakers = vec![me.public(), dead.public()];
    o.keypair = Some(me);
    let mm = Node::spawn(o).await.expect("matchmaker starts");

    // The relayer: an operator the matchmaker knows, whose program no task here runs, so it is
    // assigned nothing.
    let relayer = Keypair::generate();
    let (client, mut events) = plain_peer(&relayer, mm.listen_addrs().to_vec());
    let mut advert = noop_advert(relayer.public());
    advert.programs = vec![Program {
        name: "other".into(),
        version: "1".into(),
    }];
    let advert = Envelope::seal(
        &relayer,
        DOMAIN,
        &Message::OperatorAdvert(advert),
        1,
        now_ms() + 60_000,
    );
    deliver(&client, mm.peer_id(), &advert).await;
    let deadline = Instant::now() + WAIT;
    while mm.api().store().operators().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the advert never counted");
        sleep(Duration::from_millis(50)).await;
    }

    let workflow = toml_workflow(
        "name = \"relays\"\n[[task]]\nid = \"a\"\nprogram = \"noop@1\"\n\n[[task]]\nid = \"b\"\nprogram = \"noop@1\"\n\n[[task]]\nid = \"c\"\nprogram = \"noop@1\"\n",
    );
    let id = mm.api().submit(workflow).await.expect("submitted");
    // Every output is here already: only who vouches for a result decides.
    let outputs: [&[u8]; 3] = [b"claimed", b"accepted", b"vouched by a stranger"];
    for bytes in outputs {
        mm.api().store().put_blob(bytes).unwrap();
    }
    let results: Vec<SignedResult> = (0..3)
        .map(|t| self_signed_result(&relayer, id, t, outputs[t as usize]))
        .collect();
    let update = SyncUpdate {
        workflow: id,
        // Task 0 bare: the relayer's word only.
        accepted: vec![results[0].clone()],
        failed: None,
        completed: false,
        pruned: false,
        // Task 1 on the dead matchmaker's signature; task 2 on a stranger's.
        vouched: vec![
            old_verdict(&dead, results[1].clone()),
            old_verdict(&Keypair::generate(), results[2].clone()),
        ],
    };

    // Answer the matchmaker's catch-up questions about the workflow with that, until task 1
    // counts and for two more seconds (it asks again at 1 s, 2 s, ..).
    let mut taken_at = None;
    let mut nonce = 10;
    loop {
        if taken_at.is_none() && done(&mm, &id) >= 1 {
            taken_at = Some(Instant::now());
        }
        if taken_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the matchmaker never took the dead matchmaker's verdict"
        );
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(100), events.recv()).await
        else {
            continue;
        };
        let NetworkEvent::DirectRequest {
            message, responder, ..
        } = event
        else {
            continue;
        };
        let Message::SyncRequest(SyncRequest { workflows, .. }) = message else {
            responder.ack();
            continue;
        };
        let asked = workflows.iter().any(|w| w.workflow == id && w.results);
        nonce += 1;
        let reply = Message::SyncReply(SyncReply {
            workflows: if asked {
                vec![update.clone()]
            } else {
                Vec::new()
            },
            submissions: Vec::new(),
            more: false,
        });
        responder.reply(Envelope::seal(
            &relayer,
            DOMAIN,
            &reply,
            nonce,
            now_ms() + 60_000,
        ));
    }

    let store = mm.api().store();
    assert_eq!(
        store.result(&id, 1).unwrap(),
        Some(results[1].clone()),
        "taken on the dead matchmaker's signed verdict, however old"
    );
    assert_eq!(
        store.result(&id, 0).unwrap(),
        None,
        "a bare result for an attempt nobody here assigned is not taken"
    );
    assert_eq!(
        store.result(&id, 2).unwrap(),
        None,
        "a statement signed by a key not listed is not a matchmaker's decision"
    );
    assert_eq!(done(&mm, &id), 1);
    assert!(metric(&mm, "proofmesh_untrusted_decisions_total") >= 1.0);
    assert!(
        metric(&mm, "proofmesh_relayed_results_refused_total") >= 1.0,
        "the bare result's refusal is counted"
    );
    mm.shutdown().await;
}

/// The tasks whose results `statements` accept for `id`, each statement opened as the asker
/// opens it and signed by `signer`.
fn vouched_tasks(
    statements: &[Envelope],
    id: &WorkflowId,
    signer: &Keypair,
) -> BTreeSet<TaskIndex> {
    let mut tasks = BTreeSet::new();
    for statement in statements {
        assert_eq!(
            statement.sender,
            signer.public(),
            "signed by the matchmaker"
        );
        let accepted = match statement.open_statement(DOMAIN).expect("opens") {
            Message::Verdict(v) => vec![v],
            Message::Verdicts(batch) => batch,
            other => panic!("not a verdict: {:?}", other.kind()),
        };
        for verdict in accepted {
            if let Verdict::Accepted(r) = verdict {
                if r.result.workflow == *id {
                    tasks.insert(r.result.task);
                }
            }
        }
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_relays_the_matchmakers_signed_verdicts_in_its_catch_up_answers() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let key = Keypair::generate();
    let mut mm = options(dirs[0].path(), Role::Matchmaker, &[]);
    mm.trusted_matchmakers = vec![key.public()];
    mm.keypair = Some(key.clone());
    let mm = Node::spawn(mm).await.expect("matchmaker starts");
    let mut op = options(dirs[1].path(), Role::Operator, mm.listen_addrs());
    op.trusted_matchmakers = vec![key.public()];
    let op = Node::spawn(op).await.expect("operator starts");
    let mut gw = options(dirs[2].path(), Role::Gateway, mm.listen_addrs());
    gw.trusted_matchmakers = vec![key.public()];
    let gw = Node::spawn(gw).await.expect("gateway starts");

    let workflow = toml_workflow(
        "name = \"vouched\"\n[[task]]\nid = \"a\"\nprogram = \"noop@1\"\n\n[[task]]\nid = \"b\"\nprogram = \"noop@1\"\n\n[[task]]\nid = \"c\"\nprogram = \"noop@1\"\ndeps = [\"a\", \"b\"]\n",
    );
    let id = gw.api().submit(workflow).await.expect("submitted");
    wait_completed(gw.api(), &id).await;

    // The gateway kept the matchmaker's verdicts, and they accept every task.
    let kept = gw.api().store().vouches(&id).unwrap();
    assert_eq!(vouched_tasks(&kept, &id, &key), BTreeSet::from([0, 1, 2]));
    // The matchmaker keeps none: its answer is its own word.
    assert!(mm.api().store().vouches(&id).unwrap().is_empty());

    // A peer that lacks task 2's result asks the gateway: it gets it as the matchmaker signed
    // it, and nothing bare.
    let asker = Keypair::generate();
    let (client, _events) = plain_peer(&asker, gw.listen_addrs().to_vec());
    let ask = |have: Vec<TaskIndex>, nonce| {
        Envelope::seal(
            &asker,
            DOMAIN,
            &Message::SyncRequest(SyncRequest {
                workflows: vec![SyncWant {
                    workflow: id,
                    have: SyncWant::bitmap(have),
                    results: true,
                }],
                known_active: None,
            }),
            nonce,
            now_ms() + 60_000,
        )
    };
    let Some((_, Message::SyncReply(reply))) =
        deliver(&client, gw.peer_id(), &ask(vec![0, 1], 1)).await
    else {
        panic!("the gateway answers")
    };
    let update = reply
        .workflows
        .iter()
        .find(|u| u.workflow == id)
        .expect("an update");
    assert!(update.accepted.is_empty(), "{:?}", update.accepted);
    assert!(vouched_tasks(&update.vouched, &id, &key).contains(&2));
    let Some((_, Message::SyncReply(reply))) =
        deliver(&client, gw.peer_id(), &ask(vec![0, 1, 2], 2)).await
    else {
        panic!("the gateway answers")
    };
    assert!(
        reply
            .workflows
            .iter()
            .all(|u| u.workflow != id || (u.vouched.is_empty() && u.accepted.is_empty())),
        "nothing relayed to a peer that has every result: {reply:?}"
    );

    gw.shutdown().await;
    op.shutdown().await;
    mm.shutdown().await;
}
