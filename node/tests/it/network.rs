//! The p2p layer over real sockets on 127.0.0.1 (port 0): gossip propagation across many nodes,
//! rejection and scoring of a misbehaving peer, publish-before-mesh, direct request-response
//! and verified blob transfer.

use prometheus_client::registry::Registry;
use proofmesh_node::network::{
    self, BlobChunk, BlobError, BlobProvider, Client, Clock, MemoryBlobProvider, Multiaddr,
    NetworkConfig, NetworkError, NetworkEvent, PeerId, PublishOutcome, Topic,
};
use proofmesh_protocol::messages::{
    Acceptance, Assignment, Heartbeat, SignedResult, SyncReply, SyncUpdate, TaskResult,
};
use proofmesh_protocol::{ContentId, Domain, Envelope, Keypair, Message, Resources};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

const DOMAIN: Domain = Domain {
    network_id: 42,
    chain_id: 31337,
};
/// The tests' fixed "now": envelopes expire relative to it, whatever the wall clock says.
const NOW_MS: u64 = 1_700_000_000_000;
const WAIT: Duration = Duration::from_secs(20);

fn fixed_clock() -> Clock {
    Arc::new(|| NOW_MS)
}

struct Node {
    name: String,
    keypair: Keypair,
    client: Client,
    events: mpsc::Receiver<NetworkEvent>,
    addr: Multiaddr,
    registry: Registry,
}

impl Node {
    fn peer_id(&self) -> PeerId {
        self.client.local_peer_id()
    }
}

async fn spawn_node(
    name: &str,
    bootstrap: Vec<Multiaddr>,
    tweak: impl FnOnce(&mut NetworkConfig),
) -> Node {
    let keypair = Keypair::generate();
    let mut config = NetworkConfig::test(DOMAIN);
    config.bootstrap = bootstrap;
    config.clock = fixed_clock();
    tweak(&mut config);
    let mut registry = Registry::default();
    let (client, events) = network::spawn(config, &keypair, &mut registry).expect("network starts");
    let addrs = timeout(WAIT, client.listen_addrs())
        .await
        .expect("listening in time")
        .expect("loop alive");
    let addr = addrs.into_iter().next().expect("one listen address");
    Node {
        name: name.to_string(),
        keypair,
        client,
        events,
        addr,
        registry,
    }
}

fn heartbeat(kp: &Keypair, nonce: u64, domain: Domain, expires_at_ms: u64) -> Envelope {
    let msg = Message::Heartbeat(Heartbeat {
        operator: kp.public(),
        at_ms: NOW_MS,
        running: vec![],
    });
    Envelope::seal(kp, domain, &msg, nonce, expires_at_ms)
}

const FUTURE: u64 = NOW_MS + 60_000;

/// Wait until every node has a gossip mesh peer on `topic`.
async fn wait_for_mesh(nodes: &[&Node], topic: Topic) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut missing = Vec::new();
        for n in nodes {
            if n.client
                .mesh_peers(topic)
                .await
                .expect("loop alive")
                .is_empty()
            {
                missing.push(n.name.clone());
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {topic} mesh peer after {WAIT:?} on nodes {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Next gossip message delivered to `node`, skipping other events; `None` after `wait`.
async fn next_message(node: &mut Node, wait: Duration) -> Option<(PeerId, Envelope, Message)> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, node.events.recv()).await {
            Ok(Some(NetworkEvent::Message {
                from,
                envelope,
                message,
            })) => return Some((from, envelope, message)),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

/// A line of `n` nodes, each bootstrapped to the previous one.
async fn line(n: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let bootstrap = nodes
            .last()
            .map(|prev| vec![prev.addr.clone()])
            .unwrap_or_default();
        nodes.push(spawn_node(&format!("node{i}"), bootstrap, |_| {}).await);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_every_node_of_a_line() {
    let mut nodes = line(8).await;
    wait_for_mesh(&nodes.iter().collect::<Vec<_>>(), Topic::Heartbeats).await;

    let env = heartbeat(&nodes[0].keypair, 1, DOMAIN, FUTURE);
    assert_eq!(
        nodes[0].client.publish(&env).await.unwrap(),
        PublishOutcome::Sent
    );

    let mut missing = Vec::new();
    for node in nodes.iter_mut().skip(1) {
        match next_message(node, WAIT).await {
            Some((_, got, Message::Heartbeat(hb))) => {
                assert_eq!(got, env, "{} delivered a different envelope", node.name);
                assert_eq!(hb.operator, env.sender);
            }
            other => missing.push(format!("{}: {other:?}", node.name)),
        }
    }
    assert!(
        missing.is_empty(),
        "message from node0 did not reach every node within {WAIT:?}: {missing:?}"
    );
    // The publisher never gets its own message back, and nobody gets it twice.
    for node in nodes.iter_mut() {
        assert!(
            next_message(node, Duration::from_millis(300))
                .await
                .is_none(),
            "{} got a duplicate",
            node.name
        );
    }
}

/// Sum of a counter family in the text exposition, over series whose labels contain `filter`.
fn metric_sum(registry: &Registry, name: &str, filter: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("metrics encode");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_are_rejected_and_their_sender_scored_down() {
    // Star of five honest nodes around node0; the attacker connects to node0 only.
    let hub = spawn_node("node0", vec![], |_| {}).await;
    let mut honest = vec![hub];
    for i in 1..5 {
        let boot = vec![honest[0].addr.clone()];
        honest.push(spawn_node(&format!("node{i}"), boot, |_| {}).await);
    }
    // The attacker's own limit is larger, so it can send what honest nodes refuse.
    let max = NetworkConfig::test(DOMAIN).max_message_bytes;
    let attacker = spawn_node("attacker", vec![honest[0].addr.clone()], |c| {
        c.max_message_bytes = max + 1024;
        c.kad_bootstrap_interval = Duration::from_secs(3600);
    })
    .await;
    wait_for_mesh(&honest.iter().collect::<Vec<_>>(), Topic::Heartbeats).await;
    let deadline = Instant::now() + WAIT;
    while !attacker
        .client
        .topic_peers(Topic::Heartbeats)
        .await
        .unwrap()
        .contains(&honest[0].peer_id())
    {
        assert!(
            Instant::now() < deadline,
            "attacker never saw node0 subscribe"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let kp = &attacker.keypair;
    let mut bad_signature = heartbeat(kp, 2, DOMAIN, FUTURE);
    bad_signature.signature.0[0] ^= 1;
    let wrong_chain = heartbeat(
        kp,
        3,
        Domain {
            chain_id: 1,
            ..DOMAIN
        },
        FUTURE,
    );
    let wrong_network = heartbeat(
        kp,
        4,
        Domain {
            network_id: 7,
            ..DOMAIN
        },
        FUTURE,
    );
    let expired = heartbeat(kp, 5, DOMAIN, NOW_MS - 1);
    let attacks: Vec<(&str, Topic, Vec<u8>)> = vec![
        (
            "garbage",
            Topic::Heartbeats,
            b"definitely not an envelope".to_vec(),
        ),
        ("bad signature", Topic::Heartbeats, bad_signature.to_bytes()),
        ("wrong chain id", Topic::Heartbeats, wrong_chain.to_bytes()),
        (
            "wrong network id",
            Topic::Heartbeats,
            wrong_network.to_bytes(),
        ),
        ("expired", Topic::Heartbeats, expired.to_bytes()),
        (
            "wrong topic",
            Topic::Results,
            heartbeat(kp, 6, DOMAIN, FUTURE).to_bytes(),
        ),
        ("oversized", Topic::Heartbeats, vec![0u8; max + 1]),
    ];
    for (what, topic, bytes) in attacks {
        let outcome = attacker.client.publish_raw(topic, bytes).await;
        assert!(
            matches!(outcome, Ok(PublishOutcome::Sent)),
            "attacker could not send {what}: {outcome:?}"
        );
    }

    // node0 rejects them and scores the attacker down. Two rejections (-100 each, squared)
    // graylist the attacker, after which node0 drops its messages unread.
    let attacker_id = attacker.peer_id();
    let rejected = |reason: &str| {
        metric_sum(
            &honest[0].registry,
            "p2p_gossip_messages_rejected_total",
            reason,
        )
    };
    let deadline = Instant::now() + WAIT;
    let attacker_score = loop {
        let score = honest[0].client.peer_score(attacker_id).await.unwrap();
        if rejected("") >= 2.0 && score.is_some_and(|s| s < 0.0) {
            break score.unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "node0 rejected {} messages, attacker's score {score:?}",
            rejected("")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        rejected("reason=\"undecodable\"") >= 1.0,
        "garbage was not counted as undecodable"
    );

    // Honest traffic still flows everywhere, and only honest traffic is delivered.
    let good = heartbeat(&honest[3].keypair, 1, DOMAIN, FUTURE);
    honest[3].client.publish(&good).await.unwrap();
    for node in honest.iter_mut() {
        if node.name == "node3" {
            continue; // the publisher
        }
        let got = next_message(node, WAIT).await;
        let Some((_, env, _)) = got else {
            panic!("{} never delivered the honest message", node.name)
        };
        assert_eq!(
            env, good,
            "{} delivered something other than the honest message",
            node.name
        );
    }
    for node in honest.iter_mut() {
        let extra = next_message(node, Duration::from_millis(300)).await;
        assert!(
            extra.is_none(),
            "{} delivered an attacker message: {extra:?}",
            node.name
        );
    }
    // The hub, which only forwarded valid messages, stays far above the attacker.
    for node in &honest[1..] {
        let score = node.client.peer_score(honest[0].peer_id()).await.unwrap();
        assert!(
            score.unwrap_or(0.0) > attacker_score && score.unwrap_or(0.0) > -50.0,
            "honest hub scored down at {}: {score:?} (attacker at node0: {attacker_score})",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_before_any_peer_is_delivered_once_the_mesh_forms() {
    let early = spawn_node("early", vec![], |_| {}).await;
    let env = heartbeat(&early.keypair, 1, DOMAIN, FUTURE);
    assert_eq!(
        early.client.publish(&env).await.unwrap(),
        PublishOutcome::Queued
    );

    let mut late = spawn_node("late", vec![early.addr.clone()], |_| {}).await;
    let got = next_message(&mut late, WAIT).await;
    let Some((from, delivered, _)) = got else {
        panic!("queued publication never arrived")
    };
    assert_eq!(delivered, env);
    assert_eq!(from, early.peer_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_for_the_peer_that_has_it_is_gossiped_only_to_others() {
    let mut b = spawn_node("b", vec![], |_| {}).await;
    let a = spawn_node("a", vec![b.addr.clone()], |_| {}).await;
    wait_for_mesh(&[&a, &b], Topic::Heartbeats).await;

    // b (which had it directly) is the only follower: not gossiped at all.
    let first = heartbeat(&a.keypair, 1, DOMAIN, FUTURE);
    assert_eq!(
        a.client.publish_beyond(&first, b.peer_id()).await.unwrap(),
        PublishOutcome::Unneeded
    );

    // Another follower joins: now it is gossiped, and reaches it.
    let mut c = spawn_node("c", vec![a.addr.clone()], |_| {}).await;
    wait_for_mesh(&[&c], Topic::Heartbeats).await;
    let second = heartbeat(&a.keypair, 2, DOMAIN, FUTURE);
    assert_eq!(
        a.client.publish_beyond(&second, b.peer_id()).await.unwrap(),
        PublishOutcome::Sent
    );
    let (_, got, _) = next_message(&mut c, WAIT).await.expect("c gets the copy");
    assert_eq!(got, second);
    // The first never left a: what b hears next is the second.
    let (_, got, _) = next_message(&mut b, WAIT).await.expect("b gets the second");
    assert_eq!(got, second);
}

fn assignment(matchmaker: &Keypair, operator: &Keypair, nonce: u64) -> Envelope {
    let msg = Message::Assignment(Assignment {
        workflow: ContentId::of_bytes(b"workflow"),
        task: 3,
        attempt: 1,
        operator: operator.public(),
        gpus: vec![0],
        resources: Resources {
            cpu: 1,
            memory_mb: 512,
            gpu: 1,
            vram_mb: 1024,
            disk_mb: 0,
        },
        accept_by_ms: NOW_MS + 1_000,
        deadline_ms: NOW_MS + 10_000,
        price_wei: 1,
        matchmaker: matchmaker.public(),
        queued: false,
    });
    Envelope::seal(matchmaker, DOMAIN, &msg, nonce, FUTURE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_request_response_round_trip() {
    let mut operator = spawn_node("operator", vec![], |_| {}).await;
    let matchmaker = spawn_node("matchmaker", vec![operator.addr.clone()], |_| {}).await;
    let op_key = operator.keypair.clone();

    // The operator answers each assignment with a signed acceptance, and refuses task 99.
    let server = tokio::spawn(async move {
        let mut answered = 0;
        while let Some(event) = operator.events.recv().await {
            let NetworkEvent::DirectRequest {
                envelope,
                message,
                responder,
                ..
            } = event
            else {
                continue;
            };
            let Message::Assignment(a) = message else {
                responder.reject("expected an assignment");
                continue;
            };
            if a.task == 99 {
                responder.reject("task 99 is not for me");
                continue;
            }
            let acceptance = Message::Acceptance(Acceptance {
                assignment: ContentId::of_value(&envelope),
                workflow: a.workflow,
                task: a.task,
                attempt: a.attempt,
                operator: op_key.public(),
                accepted_at_ms: NOW_MS,
                eth: None,
            });
            responder.reply(Envelope::seal(
                &op_key,
                DOMAIN,
                &acceptance,
                1 + answered,
                FUTURE,
            ));
            answered += 1;
        }
    });

    let request = assignment(&matchmaker.keypair, &operator.keypair, 1);
    let peer = network::peer_id_of(&operator.keypair.public()).expect("ed25519 key");
    let (env, msg) = timeout(WAIT, matchmaker.client.send_direct(peer, &request))
        .await
        .expect("answer in time")
        .expect("direct request succeeds")
        .expect("an acceptance envelope, not a bare ack");
    assert_eq!(env.sender, operator.keypair.public());
    let Message::Acceptance(acc) = msg else {
        panic!("expected an acceptance, got {msg:?}")
    };
    assert_eq!(acc.assignment, ContentId::of_value(&request));
    assert_eq!(acc.task, 3);

    // A replayed request is refused by the network layer, before the node sees it.
    let replay = matchmaker.client.send_direct(peer, &request).await;
    assert!(
        matches!(&replay, Err(NetworkError::Rejected { reason, .. }) if reason.contains("duplicate")),
        "{replay:?}"
    );

    // A badly signed request in another signer's name is refused too: the connection's
    // handshake vouches only for its own peer.
    let stranger = Keypair::generate();
    let mut forged = assignment(&stranger, &operator.keypair, 2);
    forged.signature.0[5] ^= 0x10;
    let refused = matchmaker.client.send_direct(peer, &forged).await;
    assert!(
        matches!(&refused, Err(NetworkError::Rejected { reason, .. }) if reason.contains("signature")),
        "{refused:?}"
    );
    // The connection's own peer needs no signature check: its noise handshake proved who sent
    // the bytes (`validation::check_direct`).
    let mut unchecked = assignment(&matchmaker.keypair, &operator.keypair, 4);
    unchecked.signature.0[5] ^= 0x10;
    let taken = timeout(WAIT, matchmaker.client.send_direct(peer, &unchecked))
        .await
        .expect("answer in time");
    assert!(
        matches!(&taken, Ok(Some((_, Message::Acceptance(_))))),
        "{taken:?}"
    );

    // The node's own refusal reaches the requester.
    let mut no = assignment(&matchmaker.keypair, &operator.keypair, 3);
    if let Ok(Message::Assignment(mut a)) = no.open(DOMAIN, NOW_MS) {
        a.task = 99;
        no = Envelope::seal(
            &matchmaker.keypair,
            DOMAIN,
            &Message::Assignment(a),
            3,
            FUTURE,
        );
    }
    let refused = matchmaker.client.send_direct(peer, &no).await;
    assert!(
        matches!(&refused, Err(NetworkError::Rejected { reason, .. }) if reason.contains("task 99")),
        "{refused:?}"
    );
    server.abort();
}

/// Claims to have every blob it was told about, but flips a byte when serving it.
struct TamperingProvider(MemoryBlobProvider);

impl BlobProvider for TamperingProvider {
    fn read_chunk(
        &self,
        id: &ContentId,
        offset: u64,
        max_len: usize,
    ) -> std::io::Result<Option<BlobChunk>> {
        let mut chunk = self.0.read_chunk(id, offset, max_len)?;
        if let Some(c) = chunk.as_mut() {
            if offset == 0 && !c.data.is_empty() {
                c.data[0] ^= 0xff;
            }
        }
        Ok(chunk)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_fetch_verifies_chunks_and_refuses_tampered_blobs() {
    let blob: Vec<u8> = (0..(3 * 1024 * 1024 + 12_345u32))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let honest_store = MemoryBlobProvider::new();
    let id = honest_store.insert(blob.clone());
    let tamper_store = MemoryBlobProvider::new();
    assert_eq!(tamper_store.insert(blob.clone()), id);

    let store = honest_store.clone();
    let honest = spawn_node("honest", vec![], move |c| c.blobs = Arc::new(store)).await;
    let liar = spawn_node("liar", vec![], move |c| {
        c.blobs = Arc::new(TamperingProvider(tamper_store))
    })
    .await;
    let fetcher = spawn_node(
        "fetcher",
        vec![honest.addr.clone(), liar.addr.clone()],
        |_| {},
    )
    .await;
    let deadline = Instant::now() + WAIT;
    let want: BTreeSet<PeerId> = [honest.peer_id(), liar.peer_id()].into();
    while !want.is_subset(&fetcher.client.peers().await.unwrap().into_iter().collect()) {
        assert!(
            Instant::now() < deadline,
            "fetcher did not connect to both providers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Four 1 MiB chunks from the honest peer, verified.
    let got = fetcher
        .client
        .fetch_blob(Some(honest.peer_id()), id)
        .await
        .expect("honest fetch");
    assert!(got == blob, "fetched blob differs from the original");

    // The liar's bytes fail verification.
    let err = fetcher
        .client
        .fetch_blob(Some(liar.peer_id()), id)
        .await
        .expect_err("tampered blob accepted");
    let NetworkError::BlobUnavailable { attempts, .. } = &err else {
        panic!("unexpected error {err}")
    };
    assert!(
        matches!(attempts.as_slice(), [(p, BlobError::HashMismatch { .. })] if *p == liar.peer_id()),
        "{err}"
    );

    // Asking "anyone" skips the liar (whatever the order) and returns verified bytes.
    let got = fetcher
        .client
        .fetch_blob(None, id)
        .await
        .expect("some peer serves the blob honestly");
    assert!(got == blob);

    // A blob nobody has is reported as such by every peer asked.
    let missing = ContentId::of_bytes(b"nobody has this");
    let err = fetcher
        .client
        .fetch_blob(None, missing)
        .await
        .expect_err("missing blob fetched");
    let NetworkError::BlobUnavailable { attempts, .. } = &err else {
        panic!("unexpected error {err}")
    };
    assert!(
        !attempts.is_empty()
            && attempts
                .iter()
                .all(|(_, e)| matches!(e, BlobError::NotFound(_))),
        "{err}"
    );
}

/// A result sealed by `operator` naming `output` as its output.
fn result_naming(operator: &Keypair, output: &[u8], nonce: u64) -> Envelope {
    let result = TaskResult {
        workflow: ContentId::of_bytes(b"workflow"),
        task: 3,
        attempt: 1,
        operator: operator.public(),
        output: ContentId::of_bytes(output),
        output_bytes: output.len() as u64,
        started_ms: NOW_MS,
        finished_ms: NOW_MS,
        resources: Resources::default(),
        gpus: vec![],
    };
    let msg = Message::Result(SignedResult::sign(operator, result));
    Envelope::seal(operator, DOMAIN, &msg, nonce, FUTURE)
}

/// An operator node dialed to a matchmaker node that acknowledges every direct request: the
/// operator, the matchmaker's client and peer id, and the acknowledging task.
async fn operator_and_acking_matchmaker() -> (Node, Client, PeerId, tokio::task::JoinHandle<()>) {
    let mut matchmaker = spawn_node("matchmaker", vec![], |_| {}).await;
    let operator = spawn_node("operator", vec![matchmaker.addr.clone()], |_| {}).await;
    let mm_client = matchmaker.client.clone();
    let peer = network::peer_id_of(&matchmaker.keypair.public()).expect("ed25519 key");
    let server = tokio::spawn(async move {
        while let Some(event) = matchmaker.events.recv().await {
            if let NetworkEvent::DirectRequest { responder, .. } = event {
                responder.ack();
            }
        }
    });
    (operator, mm_client, peer, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_keeps_the_outputs_it_names_and_drops_other_attachments() {
    let (operator, mm_client, peer, server) = operator_and_acking_matchmaker().await;
    let output = b"the output".to_vec();
    let stranger = b"bytes the result does not name".to_vec();

    let request = result_naming(&operator.keypair, &output, 1);
    let answer = timeout(
        WAIT,
        operator.client.send_direct_in_order(
            peer,
            &request,
            vec![stranger.clone(), output.clone()],
        ),
    )
    .await
    .expect("answer in time");
    assert!(matches!(answer, Ok(None)), "{answer:?}");
    // Kept by the receiving network before the request was delivered (and acknowledged).
    assert_eq!(
        mm_client.take_attachment(&ContentId::of_bytes(&output)),
        Some(output.clone())
    );
    assert_eq!(
        mm_client.take_attachment(&ContentId::of_bytes(&output)),
        None,
        "taken once"
    );
    assert_eq!(
        mm_client.take_attachment(&ContentId::of_bytes(&stranger)),
        None,
        "an attachment the message does not name is dropped"
    );

    // Bytes whose length differs from the signed size are not the output either, and a
    // message that names no output (an assignment) keeps nothing.
    let claims_longer = {
        let mut r = result_naming(&operator.keypair, &output, 2);
        if let Ok(Message::Result(mut signed)) = r.open(DOMAIN, NOW_MS) {
            signed.result.output_bytes += 1;
            let signed = SignedResult::sign(&operator.keypair, signed.result);
            r = Envelope::seal(
                &operator.keypair,
                DOMAIN,
                &Message::Result(signed),
                2,
                FUTURE,
            );
        }
        r
    };
    let answer = operator
        .client
        .send_direct_in_order(peer, &claims_longer, vec![output.clone()])
        .await;
    assert!(matches!(answer, Ok(None)), "{answer:?}");
    let answer = operator
        .client
        .send_direct_in_order(
            peer,
            &assignment(&operator.keypair, &operator.keypair, 3),
            vec![output.clone()],
        )
        .await;
    assert!(matches!(answer, Ok(None)), "{answer:?}");
    assert_eq!(
        mm_client.take_attachment(&ContentId::of_bytes(&output)),
        None
    );

    // An input push (a sync reply) names the outputs of the results it carries.
    let Ok(Message::Result(carried)) = request.open(DOMAIN, NOW_MS) else {
        panic!("the result opens")
    };
    let push = Envelope::seal(
        &operator.keypair,
        DOMAIN,
        &Message::SyncReply(SyncReply {
            workflows: vec![SyncUpdate {
                workflow: carried.result.workflow,
                accepted: vec![carried],
                failed: None,
                completed: false,
                vouched: Vec::new(),
                pruned: false,
            }],
            submissions: vec![],
            more: false,
        }),
        4,
        FUTURE,
    );
    let answer = operator
        .client
        .send_direct_in_order(peer, &push, vec![stranger.clone(), output.clone()])
        .await;
    assert!(matches!(answer, Ok(None)), "{answer:?}");
    assert_eq!(
        mm_client.take_attachment(&ContentId::of_bytes(&output)),
        Some(output)
    );
    assert_eq!(
        mm_client.take_attachment(&ContentId::of_bytes(&stranger)),
        None
    );
    server.abort();
}

/// Direct requests share one stream per connection and direction: they reach the peer in the
/// order they were sent, each answer finds its own request whatever order the answers come
/// in, a flood is read only as fast as it is answered, a request left unanswered fails with a
/// timeout (and the stream goes on serving), and one in flight when the connection drops
/// fails as a closed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_requests_keep_their_order_match_their_answers_and_fail_cleanly() {
    let short = |c: &mut NetworkConfig| c.request_timeout = Duration::from_secs(2);
    let operator = spawn_node("operator", vec![], short).await;
    let matchmaker = spawn_node("matchmaker", vec![operator.addr.clone()], short).await;
    let peer = operator.peer_id();
    let Node {
        client: op_client,
        events: mut op_events,
        keypair: op_key,
        ..
    } = operator;
    let deadline = Instant::now() + WAIT;
    while !matchmaker.client.peers().await.unwrap().contains(&peer) {
        assert!(Instant::now() < deadline, "nodes did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The operator holds the first 8 requests and answers them last-first; nonce 9 and 11 it
    // never answers; nonces from 1000 (a flood) it holds until told to answer; anything else
    // at once. Each answer names the nonce it answers.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let (release_tx, mut release_rx) = mpsc::unbounded_channel::<()>();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        let mut flood: Vec<(u64, network::DirectResponder)> = Vec::new();
        let mut never = Vec::new();
        loop {
            let event = tokio::select! {
                event = op_events.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
                Some(()) = release_rx.recv() => {
                    for (n, r) in flood.drain(..) {
                        r.reject(format!("answer to {n}"));
                    }
                    continue;
                }
            };
            let NetworkEvent::DirectRequest {
                envelope,
                responder,
                ..
            } = event
            else {
                continue;
            };
            let nonce = envelope.nonce;
            let _ = seen_tx.send(nonce);
            match nonce {
                1..=8 => {
                    held.push((nonce, responder));
                    if held.len() == 8 {
                        for (n, r) in held.drain(..).rev() {
                            r.reject(format!("answer to {n}"));
                        }
                    }
                }
                9 | 11 => never.push(responder),
                1000..=1999 => flood.push((nonce, responder)),
                n => responder.reject(format!("answer to {n}")),
            }
        }
    });

    // Handed to the network in call order; `answered` checks the answer names its nonce.
    let send = |n: u64| {
        let request = assignment(&matchmaker.keypair, &op_key, n);
        matchmaker
            .client
            .send_direct_in_order(peer, &request, Vec::new())
    };
    async fn answered(
        answer: impl std::future::Future<Output = Result<Option<(Envelope, Message)>, NetworkError>>,
        n: u64,
    ) {
        let answer = timeout(WAIT, answer).await.expect("answered in time");
        assert!(
            matches!(&answer, Err(NetworkError::Rejected { reason, .. }) if *reason == format!("answer to {n}")),
            "request {n} got {answer:?}"
        );
    }

    let sent: Vec<_> = (1..=8).map(send).collect();
    for (n, answer) in (1u64..).zip(sent) {
        answered(answer, n).await;
    }
    let order: Vec<u64> = (0..8).map(|_| seen_rx.try_recv().unwrap()).collect();
    assert_eq!(order, (1..=8).collect::<Vec<u64>>(), "arrival order");

    // A flood of 300 requests the operator does not answer: it reads 256 of them, then the
    // stream waits until it answers some; answered, the rest come in and every one is answered.
    let flood: Vec<_> = (1000..1300).map(send).collect();
    for _ in 0..256 {
        timeout(WAIT, seen_rx.recv()).await.expect("read in time");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        seen_rx.try_recv().is_err(),
        "more than 256 unanswered requests were read from one stream"
    );
    release_tx.send(()).unwrap();
    for _ in 0..44 {
        timeout(WAIT, seen_rx.recv()).await.expect("read in time");
        release_tx.send(()).unwrap();
    }
    for (n, answer) in (1000u64..).zip(flood) {
        answered(answer, n).await;
    }

    let unanswered = timeout(WAIT, send(9)).await.expect("fails in time");
    assert!(
        matches!(&unanswered, Err(NetworkError::Request { reason, .. }) if reason.contains("timeout")),
        "{unanswered:?}"
    );
    // The stream serves on after a timeout.
    answered(send(10), 10).await;

    // Nonce 11 is in flight when the operator's network stops.
    let in_flight = send(11);
    while seen_rx.recv().await != Some(11) {}
    drop(op_client);
    let lost = timeout(WAIT, in_flight).await.expect("fails in time");
    assert!(
        matches!(&lost, Err(NetworkError::Request { reason, .. }) if reason.contains("connection closed")),
        "{lost:?}"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_whose_output_came_attached_is_judged_at_once_unless_it_is_a_proof() {
    use proofmesh_node::runtime::verify::{precheck_now, VerifiedResults};
    let (operator, mm_client, peer, server) = operator_and_acking_matchmaker().await;
    let task = |program: &str| {
        let text = format!("name = \"w\"\n[[task]]\nid = \"t\"\nprogram = \"{program}@1\"\n");
        let workflow =
            proofmesh_protocol::spec::load(&text, proofmesh_protocol::spec::Format::Toml)
                .expect("valid workflow")
                .0;
        workflow.tasks[0].clone()
    };
    let (sleep, proof) = (task("sleep"), task("aggregate"));
    let opened = |envelope: &Envelope| match envelope.open(DOMAIN, NOW_MS) {
        Ok(Message::Result(r)) => r,
        other => panic!("a result: {other:?}"),
    };

    // An honest result and its output.
    let output = b"an honest output".to_vec();
    let honest = result_naming(&operator.keypair, &output, 1);
    // A result in the operator's name whose signature is another key's, with its own output.
    let forged_output = b"a forged result's output".to_vec();
    let forged = {
        let mut r = opened(&result_naming(&operator.keypair, &forged_output, 2));
        r = SignedResult::sign(&Keypair::generate(), r.result);
        Envelope::seal(&operator.keypair, DOMAIN, &Message::Result(r), 2, FUTURE)
    };
    for (envelope, bytes) in [(&honest, &output), (&forged, &forged_output)] {
        let answer = operator
            .client
            .send_direct_in_order(peer, envelope, vec![bytes.clone()])
            .await;
        assert!(matches!(answer, Ok(None)), "{answer:?}");
    }

    let verified = VerifiedResults::default();
    let checked = precheck_now(&mm_client, &verified, &sleep, &opened(&honest))
        .expect("judged at once: its output is here");
    assert_eq!(checked.verdict, Ok(()));
    assert_eq!(
        checked.fetched,
        Some((ContentId::of_bytes(&output), output.clone())),
        "the output is handed over to be stored with the verdict"
    );
    assert!(
        precheck_now(&mm_client, &verified, &sleep, &opened(&honest)).is_none(),
        "taken once: without it the result is checked in the background (a fetch)"
    );

    // A proof is verified in the background, and its attachment stays for that check.
    assert!(precheck_now(&mm_client, &verified, &proof, &opened(&forged)).is_none());
    let checked = precheck_now(&mm_client, &verified, &sleep, &opened(&forged))
        .expect("the attachment was left for the proof's check");
    let reason = checked.verdict.expect_err("a forged result is rejected");
    assert!(reason.contains("bad result signature"), "{reason}");
    assert_eq!(
        checked.fetched, None,
        "bytes no signature vouches for are not kept"
    );
    server.abort();
}

// Nodes started together (a devnet, a compose file) may dial a bootstrap peer before it
// listens. The refused dial is retried until it connects: once, it left the node off that
// peer for good (the peer, with no bootstrap list of its own, never dialed back), and a
// submission gossiped at once never reached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_peer_that_starts_listening_late_is_dialed_again() {
    let late_key = Keypair::generate();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .unwrap()
        .port();
    let late_peer = network::peer_id_of(&late_key.public()).expect("an ed25519 key");
    let late_addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{late_peer}")
        .parse()
        .unwrap();
    let early = spawn_node("early", vec![late_addr], |_| {}).await;
    // Its first dial is refused; let a retry or two fail as well.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(early.client.peers().await.unwrap().is_empty());

    let mut config = NetworkConfig::test(DOMAIN);
    config.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
    config.clock = fixed_clock();
    let (late, _events) =
        network::spawn(config, &late_key, &mut Registry::default()).expect("network starts");
    assert_eq!(late.local_peer_id(), late_peer);
    let deadline = Instant::now() + WAIT;
    while !early.client.peers().await.unwrap().contains(&late_peer) {
        assert!(
            Instant::now() < deadline,
            "the bootstrap peer was never dialed again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
