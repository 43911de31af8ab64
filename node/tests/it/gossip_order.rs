//! A matchmaker's gossip keeps its decisions in dependency order. A standby matchmaker ignores
//! an assignment of a task whose dependencies it has not seen accepted, so the verdict that
//! makes a task ready is published before that task's assignment, even though the assignment
//! leaves for its operator first and the verdict is signed while the batch syncs.

use crate::cluster::{options, plain_peer, toml_workflow, wait_completed, Role};
use proofmesh_node::network::{NetworkEvent, Topic};
use proofmesh_node::runtime::Node;
use proofmesh_protocol::messages::Verdict;
use proofmesh_protocol::{Keypair, Message};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// Tasks in the chain `t0 -> t1 -> ... -> t{CHAIN-1}`.
const CHAIN: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matchmaker_gossips_a_verdict_before_the_assignment_it_made_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mm = Node::spawn(options(&dir.path().join("mm"), Role::Matchmaker, &[]))
        .await
        .expect("matchmaker starts");
    let boot = mm.listen_addrs().to_vec();
    let op = Node::spawn(options(&dir.path().join("op"), Role::Operator, &boot))
        .await
        .expect("operator starts");
    // A follower of every topic, as a standby matchmaker is.
    let (client, mut events) = plain_peer(&Keypair::generate(), boot);
    let deadline = Instant::now() + Duration::from_secs(30);
    for topic in [Topic::Verdicts, Topic::Assignments] {
        while client.topic_peers(topic).await.unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "never saw the matchmaker on {topic}"
            );
            sleep(Duration::from_millis(50)).await;
        }
    }
    // The matchmaker learns the follower's subscriptions on the same exchange.
    sleep(Duration::from_millis(300)).await;

    let mut text = String::from("name = \"chain\"\n");
    for t in 0..CHAIN {
        text.push_str(&format!("[[task]]\nid = \"t{t}\"\nprogram = \"noop@1\"\n"));
        if t > 0 {
            text.push_str(&format!("deps = [\"t{}\"]\n", t - 1));
        }
    }
    let workflow = toml_workflow(&text);
    let id = mm.api().submit(workflow).await.expect("submitted");
    wait_completed(mm.api(), &id).await;

    // Where in the follower's stream each task was first assigned, and where accepted.
    let mut assigned: HashMap<u32, usize> = HashMap::new();
    let mut accepted: HashMap<u32, usize> = HashMap::new();
    let mut at = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while accepted.len() < CHAIN as usize && Instant::now() < until {
        let Ok(Some(event)) = tokio::time::timeout_at(until, events.recv()).await else {
            break;
        };
        let NetworkEvent::Message { message, .. } = event else {
            continue;
        };
        at += 1;
        let (assignments, verdicts) = match message {
            Message::Assignment(a) => (vec![a], Vec::new()),
            Message::Assignments(batch) => (batch, Vec::new()),
            Message::Dispatch(d) => (d.assignments, Vec::new()),
            Message::Verdict(v) => (Vec::new(), vec![v]),
            Message::Verdicts(batch) => (Vec::new(), batch),
            _ => continue,
        };
        for a in assignments.into_iter().filter(|a| a.workflow == id) {
            assigned.entry(a.task).or_insert(at);
        }
        for v in verdicts {
            if let Verdict::Accepted(r) = v {
                if r.result.workflow == id {
                    accepted.entry(r.result.task).or_insert(at);
                }
            }
        }
    }
    for t in 1..CHAIN {
        let (Some(ready), Some(assignment)) = (accepted.get(&(t - 1)), assigned.get(&t)) else {
            panic!("the follower missed t{}'s verdict or t{t}'s assignment: accepted {accepted:?}, assigned {assigned:?}", t - 1);
        };
        assert!(
            ready < assignment,
            "t{t}'s assignment (message {assignment}) was gossiped before the verdict on t{} \
             that made it ready (message {ready})",
            t - 1
        );
    }
    drop(client);
    op.shutdown().await;
    mm.shutdown().await;
}
