//! Cancelling a workflow submitted as a file: the node it was submitted to owns it and may
//! cancel it (the requester's Ethereum signature, the other way, is in the e2e settlement
//! tests); any other node is refused, naming why.

use crate::cluster::{matchmaker_and_operator, options, sleep_workflow, Role};
use proofmesh_node::runtime::{Node, NodeError};
use proofmesh_node::store::WorkflowState;
use proofmesh_protocol::ContentId;
use std::time::Duration;
use tokio::time::{sleep, Instant};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owning_node_cancels_its_workflow_and_no_other_node_may() {
    let (mm_dir, op_dir, gw_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (mm, _op) =
        matchmaker_and_operator(options(mm_dir.path(), Role::Matchmaker, &[]), op_dir.path()).await;
    let gw = Node::spawn(options(gw_dir.path(), Role::Gateway, mm.listen_addrs()))
        .await
        .expect("gateway starts");
    // Long enough to be running when cancelled.
    let id = gw
        .api()
        .submit(sleep_workflow("cancel-me", 6, 5_000, 1))
        .await
        .expect("submitted");
    let deadline = Instant::now() + WAIT;
    while mm.api().status(&id).expect("readable").is_none() {
        assert!(
            Instant::now() < deadline,
            "the matchmaker never heard the workflow"
        );
        sleep(Duration::from_millis(20)).await;
    }

    // The matchmaker holds it too, but does not own it.
    let err = mm.api().cancel(id, None).await.expect_err("not the owner");
    assert!(
        matches!(&err, NodeError::CancelRefused { reason, .. } if reason.contains("only the workflow's owner")),
        "{err}"
    );
    let err = gw
        .api()
        .cancel(ContentId([7; 32]), None)
        .await
        .expect_err("unknown");
    assert!(matches!(err, NodeError::UnknownWorkflow(_)), "{err}");

    gw.api().cancel(id, None).await.expect("the owner cancels");
    for (name, node) in [("gateway", &gw), ("matchmaker", &mm)] {
        let deadline = Instant::now() + WAIT;
        loop {
            let state = node
                .api()
                .status(&id)
                .expect("readable")
                .expect("known")
                .record
                .state;
            if let WorkflowState::Failed { reason } = &state {
                assert_eq!(reason, "cancelled by its requester", "{name}");
                break;
            }
            assert!(Instant::now() < deadline, "{name}: still {state:?}");
            sleep(Duration::from_millis(20)).await;
        }
    }
    let err = gw.api().cancel(id, None).await.expect_err("ended");
    assert!(err.to_string().contains("it has ended (failed)"), "{err}");
}
