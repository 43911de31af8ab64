//! The matchmaker's snapshots: every `snapshot_every_events` events it saves its state and
//! drops the log's events before it, so the log stays bounded and a restart replays only the
//! events after its snapshot. A snapshot it cannot read stops the node with an error naming
//! it, rather than a matchmaker that forgot what it accepted.

use crate::cluster::{
    matchmaker_and_operator, metric, options, sleep_workflow, spawn_again, wait_completed, Role,
};
use proofmesh_node::network::Multiaddr;
use proofmesh_node::runtime::{Node, NodeOptions};
use proofmesh_node::store::Store;
use proofmesh_protocol::ContentId;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::time::{sleep, Instant};

const WAIT: Duration = Duration::from_secs(40);

fn matchmaker_options(
    dir: &Path,
    snapshot_every_events: u64,
    bootstrap: &[Multiaddr],
) -> NodeOptions {
    let mut o = options(dir, Role::Matchmaker, bootstrap);
    o.matchmaker
        .as_mut()
        .expect("a matchmaker")
        .snapshot_every_events = snapshot_every_events;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matchmaker_restarted_from_its_snapshot_finishes_its_workflow_and_keeps_its_log_short() {
    let (mm_dir, op_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let every = 10;
    let mm_options = matchmaker_options(mm_dir.path(), every, &[]);
    let (mm, op) = matchmaker_and_operator(mm_options, op_dir.path()).await;
    // 8 leaves of 400 ms on the operator's 2 slots: four rounds, so the restart lands inside.
    let workflow = sleep_workflow("snapshots", 8, 400, 1);
    let tasks = workflow.tasks.len();
    let id = mm.api().submit(workflow).await.expect("submitted");

    // Wait for two accepted results and a snapshot that includes them.
    let store = mm.api().store().clone();
    let deadline = Instant::now() + WAIT;
    let through = loop {
        let done = store.results(&id).unwrap().len();
        let snapshot = store.matchmaker_snapshot().unwrap();
        if let (true, Some((through, _))) = (done >= 2, snapshot) {
            if through > store.last_event_seq().unwrap().unwrap_or(0) / 2 {
                break through;
            }
        }
        assert!(Instant::now() < deadline, "no snapshot after two results");
        sleep(Duration::from_millis(20)).await;
    };
    assert!(
        metric(&mm, "proofmesh_matchmaker_snapshot_bytes") > 0.0,
        "the snapshot's size is reported"
    );
    // The log keeps only the snapshot's last event and those after it, once pruned.
    while store.iter_events_from(0).next().unwrap().unwrap().0 < through {
        assert!(Instant::now() < deadline, "the snapshot's events were kept");
        sleep(Duration::from_millis(20)).await;
    }
    let before: BTreeMap<u32, ContentId> = store
        .results(&id)
        .unwrap()
        .into_iter()
        .map(|(t, r)| (t, ContentId::of_value(&r)))
        .collect();
    assert!(
        before.len() < tasks,
        "the restart must land mid-workflow ({} of {tasks} done)",
        before.len()
    );
    drop(store);
    mm.shutdown().await;

    // Back on the same data (and a new port, so it dials the operator): the workflow's
    // submission is only in the snapshot now.
    let op_addrs = op.listen_addrs().to_vec();
    let mm = spawn_again(|| matchmaker_options(mm_dir.path(), every, &op_addrs)).await;
    let done = wait_completed(mm.api(), &id).await;
    assert_eq!(done.tasks.len(), tasks);
    let after: BTreeMap<u32, ContentId> = mm
        .api()
        .store()
        .results(&id)
        .unwrap()
        .into_iter()
        .map(|(t, r)| (t, ContentId::of_value(&r)))
        .collect();
    assert_eq!(after.len(), tasks, "every task has an accepted result");
    for (task, result) in &before {
        assert_eq!(
            after[task], *result,
            "task {task}'s result, accepted before the restart, stayed"
        );
    }
    assert_eq!(metric(&mm, "proofmesh_conflicting_results"), 0.0);
    // Bounded: after a whole workflow's events, the log holds about one snapshot's worth.
    let logged = mm.api().store().iter_events_from(0).count() as u64;
    assert!(
        logged <= 3 * every + 50,
        "{logged} events kept with a snapshot every {every}"
    );
    op.shutdown().await;
    mm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_another_format_stops_the_matchmaker_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut foreign = 999u32.to_le_bytes().to_vec();
        foreign.extend_from_slice(&1u32.to_le_bytes());
        foreign.extend_from_slice(b"state of a future layout");
        store.save_matchmaker_snapshot(41, &foreign).unwrap();
        store.flush().unwrap();
    }
    let error = Node::spawn(matchmaker_options(dir.path(), 10, &[]))
        .await
        .expect_err("an unreadable snapshot must not start a matchmaker");
    let message = format!("{error:#}");
    assert!(
        message.contains("matchmaker snapshot") && message.contains("through event 41"),
        "{message}"
    );
    assert!(message.contains("format 999.1"), "{message}");
    // A gateway on the same data does not need it.
    let gateway = Node::spawn(options(dir.path(), Role::Gateway, &[]))
        .await
        .expect("a node without the matchmaker role starts");
    gateway.shutdown().await;
}
