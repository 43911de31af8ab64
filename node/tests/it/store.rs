//! The redb store: round trips, reopen, schema-version refusal, and crash safety under
//! `kill -9` (a child process re-executes this test binary and writes in a loop).

use proofmesh_node::store::{
    ChainCursor, OperatorStats, Store, StoreError, TaskState, WorkflowState, INLINE_BLOB_MAX,
    SCHEMA_VERSION,
};
use proofmesh_protocol::messages::{
    Capacity, OperatorAdvert, SignedResult, Submission, TaskResult,
};
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{ContentId, Keypair, Program, Resources};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// A valid submission: witness -> `leaves` leaves -> final, named `name`.
pub fn submission(name: &str, leaves: u32, owner: &Keypair) -> Submission {
    let text = format!(
        r#"
name = "{name}"
[[task]]
id = "witness"
program = "noop@1"
[[task]]
id = "leaf"
program = "noop@1"
count = {leaves}
deps = ["witness"]
[[task]]
id = "final"
program = "noop@1"
deps = ["leaf"]
"#
    );
    let (workflow, _) = spec::load(&text, Format::Toml).expect("test workflow is valid");
    Submission {
        workflow,
        owner: owner.public(),
        owner_eth: None,
        escrow: None,
        submitted_at_ms: 1_000,
    }
}

/// A signed result for task `task` of `sub`, with output `output`.
pub fn signed_result(
    sub: &Submission,
    task: u32,
    output: ContentId,
    operator: &Keypair,
) -> SignedResult {
    SignedResult::sign(
        operator,
        TaskResult {
            workflow: sub.workflow.id(),
            task,
            attempt: 1,
            operator: operator.public(),
            output,
            output_bytes: 3,
            started_ms: 10,
            finished_ms: 20,
            resources: Resources {
                cpu: 1,
                ..Resources::default()
            },
            gpus: Vec::new(),
        },
    )
}

#[test]
fn workflow_task_and_result_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let owner = Keypair::generate();
    let sub = submission("round-trip", 4, &owner);

    let (id, new) = store.put_workflow(&sub, 5_000).unwrap();
    assert!(new);
    assert_eq!(id, sub.workflow.id());
    assert_eq!(
        store.put_workflow(&sub, 6_000).unwrap(),
        (id, false),
        "re-submission changes nothing"
    );
    let record = store.workflow(&id).unwrap().unwrap();
    assert_eq!(record.submission, sub);
    assert_eq!(record.state, WorkflowState::Active);
    assert_eq!(record.accepted_at_ms, 5_000);
    assert!(store.workflow(&ContentId([9; 32])).unwrap().is_none());

    // Unwritten tasks are pending; a task index past the end is refused.
    assert_eq!(store.task(&id, 2).unwrap().state, TaskState::Pending);
    let bad = store.set_task_state(&id, 99, TaskState::Ready).unwrap_err();
    assert!(
        matches!(
            bad,
            StoreError::UnknownTask {
                task: 99,
                tasks: 6,
                ..
            }
        ),
        "{bad}"
    );

    let op = Keypair::generate();
    store
        .set_task_state(
            &id,
            0,
            TaskState::Assigned {
                attempt: 1,
                operator: op.public(),
            },
        )
        .unwrap();
    store
        .update_task(&id, 0, |r| {
            r.attempts.push(proofmesh_node::store::AttemptRecord {
                attempt: 1,
                operator: op.public(),
                cause: Some("timed out".into()),
            });
            r.state = TaskState::Ready;
        })
        .unwrap();
    let result = signed_result(&sub, 0, ContentId::of_bytes(b"out"), &op);
    let result_id = store.accept_result(&result).unwrap();
    assert_eq!(
        store.accept_result(&result).unwrap(),
        result_id,
        "accepting the same result twice is a no-op"
    );
    let other = signed_result(&sub, 0, ContentId::of_bytes(b"different"), &op);
    assert!(matches!(
        store.accept_result(&other),
        Err(StoreError::ConflictingResult { task: 0, .. })
    ));

    let task = store.task(&id, 0).unwrap();
    assert_eq!(task.state, TaskState::Done { result: result_id });
    assert_eq!(
        task.attempts.len(),
        1,
        "attempt 1 already recorded, not duplicated"
    );
    assert_eq!(task.attempts[0].cause.as_deref(), Some("timed out"));
    assert_eq!(store.result(&id, 0).unwrap(), Some(result.clone()));
    assert_eq!(store.results(&id).unwrap(), vec![(0, result)]);
    assert_eq!(store.tasks(&id).unwrap().len(), 1);

    store
        .set_workflow_state(
            &id,
            WorkflowState::Failed {
                reason: "leaf[1] failed 3 times".into(),
            },
        )
        .unwrap();
    assert_eq!(
        store.workflows().unwrap(),
        vec![(
            id,
            WorkflowState::Failed {
                reason: "leaf[1] failed 3 times".into()
            }
        )]
    );
}

#[test]
fn results_within_returns_only_wanted_results_up_to_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let owner = Keypair::generate();
    let sub = submission("within", 4, &owner);
    let (id, _) = store.put_workflow(&sub, 5_000).unwrap();
    let op = Keypair::generate();
    let results: Vec<_> = (0..5u32)
        .map(|t| signed_result(&sub, t, ContentId::of_bytes(&t.to_le_bytes()), &op))
        .collect();
    for r in &results {
        store.accept_result(r).unwrap();
    }
    let size = proofmesh_protocol::encoding::encode(&results[0]).len();

    // The asker has tasks 0 and 3: it gets 1, 2 and 4, in order, and the budget pays for them.
    let mut budget = 10 * size;
    let (got, more) = store
        .results_within(&id, |t| t != 0 && t != 3, &mut budget)
        .unwrap();
    assert_eq!(
        got,
        vec![results[1].clone(), results[2].clone(), results[4].clone()]
    );
    assert!(!more);
    assert_eq!(budget, 7 * size);

    // Room for two: the third is left out and flagged.
    let mut budget = 2 * size + size / 2;
    let (got, more) = store.results_within(&id, |_| true, &mut budget).unwrap();
    assert_eq!(got, results[..2].to_vec());
    assert!(more, "a result that does not fit says there is more");

    // An unknown workflow has none.
    let mut budget = 10 * size;
    let (got, more) = store
        .results_within(&ContentId([7; 32]), |_| true, &mut budget)
        .unwrap();
    assert!(got.is_empty() && !more);
}

#[test]
fn blobs_events_cursors_and_operators_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Keypair::generate();
    let sub = submission("reopen", 2, &owner);
    let small = b"a small proof".to_vec();
    let large: Vec<u8> = (0..INLINE_BLOB_MAX + 12_345)
        .map(|i| (i % 251) as u8)
        .collect();
    let op = Keypair::generate();
    let advert = OperatorAdvert {
        operator: op.public(),
        eth_address: Some([7; 20]),
        capacity: Capacity {
            cpu: 8,
            memory_mb: 16_384,
            disk_mb: 0,
            gpus: Vec::new(),
        },
        programs: vec![Program {
            name: "noop".into(),
            version: "1".into(),
        }],
        price_wei: 42,
        queue: 0,
        max_tasks: 0,
        trusts: Vec::new(),
    };
    let (small_id, large_id, id);
    {
        let store = Store::open(dir.path()).unwrap();
        id = store.put_workflow(&sub, 1).unwrap().0;
        small_id = store.put_blob(&small).unwrap();
        large_id = store.put_blob(&large).unwrap();
        assert!(
            dir.path().join("blobs").join(large_id.to_hex()).is_file(),
            "large blob lives in a file"
        );
        assert!(
            !dir.path().join("blobs").join(small_id.to_hex()).exists(),
            "small blob lives inline"
        );
        assert_eq!(
            store
                .append_events(&[b"e0".to_vec(), b"e1".to_vec(), b"e2".to_vec()])
                .unwrap(),
            0..3
        );
        assert_eq!(
            store
                .append_events(&[b"e3".to_vec(), b"e4".to_vec()])
                .unwrap(),
            3..5
        );
        store
            .set_chain_cursor(ChainCursor {
                block: 1234,
                hash: [5; 32],
            })
            .unwrap();
        store.set_stream_cursor("blocks", 17).unwrap();
        store.put_operator_advert(&advert, 99).unwrap();
        store
            .update_operator(&op.public(), |r| r.stats.completed += 3)
            .unwrap();
        store
            .accept_result(&signed_result(&sub, 3, large_id, &op))
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(store.workflow(&id).unwrap().is_some());
    assert_eq!(
        store.blob(&small_id).unwrap().as_deref(),
        Some(small.as_slice())
    );
    assert_eq!(
        store.blob(&large_id).unwrap().as_deref(),
        Some(large.as_slice())
    );
    let chunk = store.blob_chunk(&large_id, 100_000, 1000).unwrap().unwrap();
    assert_eq!(chunk.total_len, large.len() as u64);
    assert_eq!(chunk.data, &large[100_000..101_000]);
    let tail = store
        .blob_chunk(&large_id, large.len() as u64 - 10, 1000)
        .unwrap()
        .unwrap();
    assert_eq!(tail.data, &large[large.len() - 10..]);
    assert!(store.blob(&ContentId([1; 32])).unwrap().is_none());
    assert!(!store.put_blob_expected(&small_id, b"not it").unwrap());

    let events: Vec<_> = store.iter_events_from(2).map(|e| e.unwrap()).collect();
    assert_eq!(
        events,
        vec![
            (2, b"e2".to_vec()),
            (3, b"e3".to_vec()),
            (4, b"e4".to_vec())
        ]
    );
    assert_eq!(store.last_event_seq().unwrap(), Some(4));
    assert_eq!(
        store.chain_cursor().unwrap(),
        Some(ChainCursor {
            block: 1234,
            hash: [5; 32]
        })
    );
    assert_eq!(store.stream_cursor("blocks").unwrap(), Some(17));
    assert_eq!(store.stream_cursor("other").unwrap(), None);
    let ops = store.operators().unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].1.advert.as_ref(), Some(&advert));
    assert_eq!(
        ops[0].1.stats,
        OperatorStats {
            completed: 3,
            failed: 0,
            slashed: 0,
            last_seen_ms: 99
        }
    );
    assert_eq!(store.task(&id, 3).unwrap().state.label(), "done");
}

#[test]
fn event_log_iterates_across_batches_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let events: Vec<Vec<u8>> = (0u32..2500).map(|i| i.to_le_bytes().to_vec()).collect();
    assert_eq!(store.append_events(&events).unwrap(), 0..2500);
    let read: Vec<_> = store.iter_events_from(0).map(|e| e.unwrap()).collect();
    assert_eq!(read.len(), 2500);
    assert!(read
        .iter()
        .enumerate()
        .all(|(i, (seq, bytes))| *seq == i as u64 && *bytes == events[i]));
    // Nothing is dropped that no stored snapshot includes.
    assert_eq!(store.prune_snapshotted_events(1500).unwrap(), 0);
    // Then a bounded number at a time, oldest first, up to the snapshot's last event (kept).
    store
        .save_matchmaker_snapshot(2000, b"through 2000")
        .unwrap();
    assert_eq!(store.prune_snapshotted_events(1500).unwrap(), 1500);
    assert_eq!(store.iter_events_from(0).next().unwrap().unwrap().0, 1500);
    assert_eq!(store.prune_snapshotted_events(1500).unwrap(), 500);
    assert_eq!(store.prune_snapshotted_events(1500).unwrap(), 0);
    assert_eq!(store.iter_events_from(0).next().unwrap().unwrap().0, 2000);
    // Sequence numbers keep growing after a prune.
    assert_eq!(store.append_events(&[vec![1]]).unwrap(), 2500..2501);
}

#[test]
fn the_matchmaker_snapshot_is_replaced_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.matchmaker_snapshot().unwrap(), None);
        store.save_matchmaker_snapshot(10, b"first").unwrap();
        store.save_matchmaker_snapshot(20, b"second").unwrap();
        assert_eq!(
            store.matchmaker_snapshot().unwrap(),
            Some((20, b"second".to_vec()))
        );
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.matchmaker_snapshot().unwrap(),
        Some((20, b"second".to_vec()))
    );
}

#[test]
fn a_release_owed_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (ContentId([1; 32]), ContentId([2; 32]));
    {
        let store = Store::open(dir.path()).unwrap();
        assert!(store.release_owed().unwrap().is_empty());
        store.mark_release_owed(&a, 1).unwrap();
        store.mark_release_owed(&b, 2).unwrap();
        store.mark_release_owed(&a, 3).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.release_owed().unwrap(), [a, b].into_iter().collect());
}

#[test]
fn refuses_a_newer_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.force_schema_version(SCHEMA_VERSION + 1).unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found, supported, .. } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION)
    );
    let msg = err.to_string();
    assert!(
        msg.contains("upgrade proofmesh") && msg.contains("data_dir"),
        "{msg}"
    );
}

const CRASH_DIR_ENV: &str = "PROOFMESH_STORE_CRASH_DIR";
const CRASH_ROUND_ENV: &str = "PROOFMESH_STORE_CRASH_ROUND";

/// The writer half of the crash test: runs only when re-executed by `survives_kill_9` (it is
/// `#[ignore]`d so a normal run skips it). Prints `ack ...` after each commit returns.
#[test]
#[ignore = "child process of survives_kill_9"]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let round = std::env::var(CRASH_ROUND_ENV).unwrap_or_default();
    let store = Store::open(std::path::Path::new(&dir)).unwrap();
    let owner = Keypair::from_secret_bytes([1; 32]);
    let op = Keypair::from_secret_bytes([2; 32]);
    for i in 0u64.. {
        let sub = submission(&format!("crash-{round}-{i}"), 2, &owner);
        let (id, _) = store.put_workflow(&sub, i).unwrap();
        println!("ack wf {id}");
        let out = ContentId::of_bytes(&i.to_le_bytes());
        store
            .accept_result(&signed_result(&sub, 3, out, &op))
            .unwrap();
        println!("ack res {id}");
        let seqs = store
            .append_events(&[format!("{round}-{i}").into_bytes()])
            .unwrap();
        println!("ack ev {} {round}-{i}", seqs.start);
        if i % 7 == 0 {
            // A file-backed blob: exercises temp + fsync + rename + index commit.
            let mut blob = vec![0u8; INLINE_BLOB_MAX + 1];
            blob[..8].copy_from_slice(&i.to_le_bytes());
            blob[8..8 + round.len()].copy_from_slice(round.as_bytes());
            let id = store.put_blob(&blob).unwrap();
            println!("ack blob {id}");
        }
    }
}

#[test]
fn survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Kill after different numbers of acknowledgements, so the SIGKILL lands at varied points
    // of the write loop (mid-commit, between tables, mid-blob-file).
    for (round, kill_after) in [3usize, 20, 57, 111, 9].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .env(CRASH_ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acks = Vec::new();
        while acks.len() < kill_after {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("ack ") => acks.push(line),
                Some(Ok(_)) => {}
                _ => panic!(
                    "writer stopped before {kill_after} acks (round {round}); got {}",
                    acks.len()
                ),
            }
        }
        child.kill().unwrap(); // SIGKILL
                               // Lines already in the pipe were printed after their commit: they count too.
        acks.extend(
            lines
                .map_while(Result::ok)
                .filter(|l| l.starts_with("ack ")),
        );
        child.wait().unwrap();

        let store = Store::open(dir.path()).expect("store reopens cleanly after kill -9");
        let events: Vec<(u64, Vec<u8>)> = store.iter_events_from(0).map(|e| e.unwrap()).collect();
        for ack in &acks {
            let parts: Vec<&str> = ack.split(' ').collect();
            match parts[1] {
                "wf" => {
                    let id: ContentId = parts[2].parse().unwrap();
                    assert!(
                        store.workflow(&id).unwrap().is_some(),
                        "acknowledged workflow {id} lost (round {round})"
                    );
                }
                "res" => {
                    let id: ContentId = parts[2].parse().unwrap();
                    let r = store.result(&id, 3).unwrap();
                    assert!(
                        r.is_some(),
                        "acknowledged result of {id} lost (round {round})"
                    );
                    assert!(matches!(
                        store.task(&id, 3).unwrap().state,
                        TaskState::Done { .. }
                    ));
                }
                "ev" => {
                    let seq: u64 = parts[2].parse().unwrap();
                    let found = events.iter().find(|(s, _)| *s == seq);
                    assert_eq!(
                        found.map(|(_, b)| b.as_slice()),
                        Some(parts[3].as_bytes()),
                        "event {seq} lost"
                    );
                }
                "blob" => {
                    let id: ContentId = parts[2].parse().unwrap();
                    let bytes = store.blob(&id).unwrap().expect("acknowledged blob lost");
                    assert_eq!(
                        ContentId::of_bytes(&bytes),
                        id,
                        "blob {id} is not its bytes"
                    );
                }
                other => panic!("unexpected ack kind {other}"),
            }
        }
        // Event sequence numbers stay dense: a crash never leaves a hole.
        assert!(events.iter().enumerate().all(|(i, (s, _))| *s == i as u64));
        assert!(
            std::fs::read_dir(dir.path().join("blobs"))
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().contains(".tmp")),
            "interrupted blob temp files are cleaned up on open"
        );
    }
}

#[test]
fn batched_writes_share_one_transaction_until_the_batch_ends() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Keypair::generate();
    let op = Keypair::generate();
    let sub = submission("batched", 2, &owner);
    let id = sub.workflow.id();
    {
        let store = Store::open(dir.path()).unwrap();
        let batch = store.deferred().batched();
        let before = store.deferred_writes();
        batch.put_workflow(&sub, 1).unwrap();
        batch
            .lazy()
            .set_task_state(&id, 1, TaskState::Ready)
            .unwrap();
        let result = signed_result(&sub, 0, ContentId::of_bytes(b"out"), &op);
        batch.accept_result(&result).unwrap();
        let blob = batch.put_blob(b"batched blob").unwrap();
        // Read-your-writes through the batched handle, nothing for the others yet.
        assert!(batch.has_workflow(&id).unwrap());
        assert_eq!(batch.task(&id, 1).unwrap().state, TaskState::Ready);
        assert_eq!(batch.result(&id, 0).unwrap(), Some(result.clone()));
        assert!(batch.has_blob(&blob).unwrap());
        assert_eq!(batch.blob(&blob).unwrap(), Some(b"batched blob".to_vec()));
        // ... without ending the batch (a blob read through the open batch costs no commit).
        assert!(!store.has_blob(&blob).unwrap());
        assert!(!store.has_workflow(&id).unwrap());
        assert!(store.deferred_writes() > before);
        assert!(store.needs_sync());
        batch.end_batch().unwrap();
        assert!(store.has_workflow(&id).unwrap());
        assert_eq!(store.result(&id, 0).unwrap(), Some(result));
        // Any other read through the batched handle ends the batch first.
        batch.put_blob(b"second").unwrap();
        assert_eq!(batch.tasks(&id).unwrap().len(), 2);
        assert!(store.has_blob(&ContentId::of_bytes(b"second")).unwrap());
        // A sync ends the open batch and makes it durable.
        batch.put_blob(b"third").unwrap();
        batch.sync().unwrap();
        assert!(!store.needs_sync());
        // The batch's own commit can be the durable one; with nothing pending it syncs nothing.
        assert!(!batch.end_batch_durably().unwrap());
        batch.put_blob(b"fourth").unwrap();
        assert!(store.needs_sync());
        assert!(batch.end_batch_durably().unwrap());
        assert!(!store.needs_sync());
        assert!(store.has_blob(&ContentId::of_bytes(b"fourth")).unwrap());
        // A deferred write outside the batch, and no batch open: an ordinary sync.
        store.deferred().put_blob(b"fifth").unwrap();
        assert!(batch.end_batch_durably().unwrap());
        assert!(!store.needs_sync());
    }
    let store = Store::open(dir.path()).unwrap();
    assert!(store.has_workflow(&id).unwrap());
    assert!(store.has_blob(&ContentId::of_bytes(b"third")).unwrap());
    assert!(store.has_blob(&ContentId::of_bytes(b"fifth")).unwrap());
    assert_eq!(store.task(&id, 1).unwrap().state, TaskState::Ready);
}

#[test]
fn a_lazy_handle_holds_small_blobs_until_the_next_sync_and_reads_see_them_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7u8; INLINE_BLOB_MAX + 1];
    let small = b"an operator's output".to_vec();
    let (written, lost) = (
        b"held when a sync ran".to_vec(),
        b"held at the end".to_vec(),
    );
    {
        let store = Store::open(dir.path()).unwrap();
        let lazy = store.lazy();
        let id = lazy.put_blob(&small).unwrap();
        assert_eq!(store.held_blob_bytes(), small.len());
        // Every handle reads it at once: whole, in chunks, by presence.
        assert!(store.has_blob(&id).unwrap());
        assert_eq!(store.blob(&id).unwrap(), Some(small.clone()));
        let chunk = store.blob_chunk(&id, 3, 5).unwrap().expect("held blob");
        assert_eq!(
            (chunk.total_len, chunk.data),
            (small.len() as u64, small[3..8].to_vec())
        );
        // Putting it again holds it once; a file-sized blob is written through.
        lazy.put_blob(&small).unwrap();
        assert_eq!(store.held_blob_bytes(), small.len());
        let big_id = lazy.put_blob(&big).unwrap();
        assert_eq!(store.held_blob_bytes(), small.len());
        assert_eq!(store.blob(&big_id).unwrap(), Some(big.clone()));
        // The periodic flush writes held blobs, durably, and lets go of them.
        assert!(store.flush().unwrap());
        assert_eq!(store.held_blob_bytes(), 0);
        assert_eq!(store.blob(&id).unwrap(), Some(small.clone()));
        assert!(!store.flush().unwrap(), "nothing left to flush");
        // Any sync writes held blobs; one still held when the process ends is a lazy copy,
        // gone with it (as redb's non-durable commits are).
        lazy.put_blob(&written).unwrap();
        store.sync().unwrap();
        lazy.put_blob(&lost).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.blob(&ContentId::of_bytes(&small)).unwrap(),
        Some(small)
    );
    assert!(store.has_blob(&ContentId::of_bytes(&written)).unwrap());
    assert!(!store.has_blob(&ContentId::of_bytes(&lost)).unwrap());
}

#[test]
fn held_blobs_are_bounded_and_past_the_bound_puts_write_through() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let lazy = store.lazy();
    let per = INLINE_BLOB_MAX;
    let fits = proofmesh_node::store::HELD_BLOBS_MAX_BYTES / per;
    let mut ids = Vec::new();
    for i in 0..fits + 3 {
        let mut bytes = vec![0u8; per];
        bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
        ids.push(lazy.put_blob(&bytes).unwrap());
    }
    assert_eq!(store.held_blob_bytes(), fits * per);
    // Held or written, every one reads back.
    for id in &ids {
        assert!(store.has_blob(id).unwrap());
    }
    store.flush().unwrap();
    assert_eq!(store.held_blob_bytes(), 0);
    assert!(ids.iter().all(|id| store.has_blob(id).unwrap()));
}
