//! Envelopes on hostile input, and replay protection.

use proofmesh_protocol::encoding::{self, DecodeError};
use proofmesh_protocol::messages::Heartbeat;
use proofmesh_protocol::replay::Admitted;
use proofmesh_protocol::{
    Domain, Envelope, EnvelopeError, Keypair, Message, ReplayError, ReplayGuard, Workflow,
};

pub const DOMAIN: Domain = Domain {
    network_id: 7,
    chain_id: 31337,
};

pub fn heartbeat(kp: &Keypair, nonce: u64) -> Envelope {
    let msg = Message::Heartbeat(Heartbeat {
        operator: kp.public(),
        at_ms: 5,
        running: vec![],
    });
    Envelope::seal(kp, DOMAIN, &msg, nonce, 10_000)
}

#[test]
fn sealed_envelope_opens_and_survives_the_wire() {
    let kp = Keypair::generate();
    let env = heartbeat(&kp, 1);
    let back = Envelope::from_bytes(&env.to_bytes()).unwrap();
    assert_eq!(back, env);
    assert!(matches!(
        back.open(DOMAIN, 1_000),
        Ok(Message::Heartbeat(_))
    ));
    assert!(matches!(
        back.open(
            Domain {
                network_id: 8,
                ..DOMAIN
            },
            1_000
        ),
        Err(EnvelopeError::WrongNetwork { .. })
    ));
    assert!(matches!(
        back.open(
            Domain {
                chain_id: 1,
                ..DOMAIN
            },
            1_000
        ),
        Err(EnvelopeError::WrongChain { .. })
    ));
    assert!(matches!(
        back.open(DOMAIN, 10_001),
        Err(EnvelopeError::Expired { .. })
    ));
}

#[test]
fn a_statement_opens_after_its_expiry_but_not_forged_or_from_another_network() {
    let kp = Keypair::generate();
    let env = heartbeat(&kp, 1);
    // Long expired as an action, still a signed statement of fact.
    assert!(matches!(
        env.open(DOMAIN, 1_000_000),
        Err(EnvelopeError::Expired { .. })
    ));
    assert!(matches!(
        env.open_statement(DOMAIN),
        Ok(Message::Heartbeat(_))
    ));
    assert!(matches!(
        env.open_statement(Domain {
            chain_id: 1,
            ..DOMAIN
        }),
        Err(EnvelopeError::WrongChain { .. })
    ));
    // Claimed by another key, or with a byte of its payload changed: the signature fails.
    let mut claimed = env.clone();
    claimed.sender = Keypair::generate().public();
    assert!(matches!(
        claimed.open_statement(DOMAIN),
        Err(EnvelopeError::Signature(_))
    ));
    let mut altered = env.clone();
    *altered.payload.last_mut().unwrap() ^= 1;
    assert!(matches!(
        altered.open_statement(DOMAIN),
        Err(EnvelopeError::Signature(_))
    ));
}

/// bincode varint for u64::MAX: marker 253 then 8 bytes.
fn huge_len() -> Vec<u8> {
    let mut v = vec![253u8];
    v.extend_from_slice(&u64::MAX.to_le_bytes());
    v
}

#[test]
fn hostile_length_prefixes_fail_without_allocating() {
    // The header of a real envelope, then a payload length of 2^64 - 1.
    let kp = Keypair::generate();
    let env = heartbeat(&kp, 1);
    let header = encoding::encode(&(
        env.version,
        env.domain,
        env.kind,
        env.sender,
        env.nonce,
        env.expires_at_ms,
    ));
    let mut bytes = header;
    bytes.extend(huge_len());
    bytes.extend([0u8; 64]);
    assert!(matches!(
        Envelope::from_bytes(&bytes),
        Err(EnvelopeError::Decode(DecodeError::Malformed(_)))
    ));

    // A workflow claiming 2^64 - 1 tasks, and a string claiming 2^64 - 1 bytes.
    let mut wf = encoding::encode(&"name".to_string());
    wf.push(0); // ordering: None
    wf.push(0); // deadline
    wf.extend(huge_len());
    assert!(encoding::decode::<Workflow>(&wf).is_err());
    assert!(encoding::decode::<String>(&huge_len()).is_err());
    // 4 MiB limit on the input itself.
    let big = vec![0u8; encoding::MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        Envelope::from_bytes(&big),
        Err(EnvelopeError::Decode(DecodeError::TooLarge { .. }))
    ));
}

#[test]
fn a_looser_limit_decodes_records_larger_than_any_message() {
    // A node's own records (its log, its snapshots) may exceed the 4 MiB message limit.
    let record = vec![7u8; encoding::MAX_MESSAGE_BYTES + 1];
    let bytes = encoding::encode(&record);
    assert!(matches!(
        encoding::decode::<Vec<u8>>(&bytes),
        Err(DecodeError::TooLarge { .. })
    ));
    let back: Vec<u8> = encoding::decode_with_limit(&bytes, 2 * encoding::MAX_MESSAGE_BYTES)
        .expect("within the looser limit");
    assert_eq!(back, record);
    // Still bounded: the input's size, and hostile lengths inside it.
    assert!(matches!(
        encoding::decode_with_limit::<Vec<u8>>(&bytes, encoding::MAX_MESSAGE_BYTES + 1),
        Err(DecodeError::TooLarge { limit, .. }) if limit == encoding::MAX_MESSAGE_BYTES + 1
    ));
    assert!(matches!(
        encoding::decode_with_limit::<String>(&huge_len(), usize::MAX),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let kp = Keypair::generate();
    let mut bytes = heartbeat(&kp, 1).to_bytes();
    bytes.push(0);
    assert!(matches!(
        Envelope::from_bytes(&bytes),
        Err(EnvelopeError::Decode(DecodeError::TrailingBytes(1)))
    ));
}

#[test]
fn replay_guard_refuses_a_replayed_envelope() {
    let kp = Keypair::generate();
    let env = heartbeat(&kp, 42);
    let mut guard = ReplayGuard::new(1024, 60_000);
    let now = 1_000;
    env.open(DOMAIN, now).unwrap();
    assert_eq!(guard.check_envelope(&env, now), Ok(Admitted::Fresh));
    // The identical bytes again, e.g. re-gossiped by an attacker.
    let replay = Envelope::from_bytes(&env.to_bytes()).unwrap();
    replay.open(DOMAIN, now + 1).unwrap();
    assert_eq!(
        guard.check_envelope(&replay, now + 1),
        Err(ReplayError::Duplicate {
            sender: kp.public(),
            nonce: 42
        })
    );
    // A new nonce is fine.
    assert_eq!(
        guard.check_envelope(&heartbeat(&kp, 43), now + 1),
        Ok(Admitted::Fresh)
    );
}

#[test]
fn replay_guard_memory_stays_bounded_under_a_flood() {
    let kp = Keypair::generate();
    let mut guard = ReplayGuard::new(100, 60_000);
    for nonce in 0..10_000u64 {
        guard.check(kp.public(), nonce, 50_000 + nonce, 0).unwrap();
        assert!(guard.len() <= 100);
    }
    // Once everything has expired the guard is empty again.
    guard.forget_expired(1_000_000);
    assert!(guard.is_empty());
}

#[test]
fn sync_bitmap_names_exactly_the_tasks_the_asker_has() {
    use proofmesh_protocol::messages::SyncWant;
    let want = SyncWant {
        workflow: proofmesh_protocol::ContentId([1; 32]),
        have: SyncWant::bitmap([0, 7, 8, 1024]),
        results: true,
    };
    for t in 0..1100 {
        assert_eq!(want.has(t), [0, 7, 8, 1024].contains(&t), "task {t}");
    }
    assert_eq!(want.have.len(), 129, "1,025 tasks fit in 129 bytes");
}

#[test]
fn sync_messages_seal_open_and_are_direct_only() {
    use proofmesh_protocol::messages::{SyncReply, SyncRequest, SyncUpdate, SyncWant};
    let kp = Keypair::generate();
    let workflow = proofmesh_protocol::ContentId([2; 32]);
    let req = Message::SyncRequest(SyncRequest {
        workflows: vec![SyncWant {
            workflow,
            have: SyncWant::bitmap([3]),
            results: false,
        }],
        known_active: Some(vec![workflow]),
    });
    let rep = Message::SyncReply(SyncReply {
        workflows: vec![SyncUpdate {
            workflow,
            accepted: vec![],
            failed: Some("task 3: every attempt timed out".into()),
            completed: false,
            vouched: Vec::new(),
            pruned: false,
        }],
        submissions: vec![],
        more: false,
    });
    for msg in [req, rep] {
        let env = Envelope::seal(&kp, DOMAIN, &msg, 1, 10_000);
        assert!(
            env.kind.direct_only(),
            "{:?} must never be gossiped",
            env.kind
        );
        assert_eq!(env.open(DOMAIN, 1_000).unwrap(), msg);
    }
    assert!(!heartbeat(&kp, 2).kind.direct_only());
}

#[test]
fn batches_open_only_from_one_to_one_and_within_their_bounds() {
    use proofmesh_protocol::messages::{
        Acceptance, Answer, Assignment, Dispatch, FailureCause, SignedResult, TaskFailure,
        TaskResult, Verdict, MAX_BATCH,
    };
    use proofmesh_protocol::{ContentId, PublicKey, Resources};
    let mm = Keypair::generate();
    let (op, other) = (Keypair::generate().public(), Keypair::generate().public());
    let assignment = |task: u32, operator: PublicKey| Assignment {
        workflow: ContentId([1; 32]),
        task,
        attempt: 1,
        operator,
        gpus: vec![],
        resources: Resources::default(),
        accept_by_ms: 5,
        deadline_ms: 9,
        price_wei: 0,
        matchmaker: mm.public(),
        queued: task > 0,
    };
    let accepted = |task: u32, operator: PublicKey| {
        Answer::Accepted(Acceptance {
            assignment: ContentId([task as u8; 32]),
            workflow: ContentId([1; 32]),
            task,
            attempt: 1,
            operator,
            accepted_at_ms: 3,
            eth: None,
        })
    };
    let refused = Answer::Refused(TaskFailure {
        workflow: ContentId([1; 32]),
        task: 9,
        attempt: 1,
        operator: op,
        cause: FailureCause::Refused("busy".into()),
    });
    let open = |m: &Message| Envelope::seal(&mm, DOMAIN, m, 1, 10_000).open(DOMAIN, 1);
    let verdict = |task: u32| {
        let result = TaskResult {
            workflow: ContentId([1; 32]),
            task,
            attempt: 1,
            operator: op,
            output: ContentId([2; 32]),
            output_bytes: 1,
            started_ms: 1,
            finished_ms: 2,
            resources: Resources::default(),
            gpus: vec![],
        };
        Verdict::Accepted(SignedResult::sign(&Keypair::generate(), result))
    };
    let input = |task: u32| match verdict(task) {
        Verdict::Accepted(result) => result,
        Verdict::Rejected { result, .. } => result,
    };
    let dispatch = |inputs: Vec<SignedResult>, assignments: Vec<Assignment>| {
        Message::Dispatch(Dispatch {
            inputs,
            assignments,
            tasks: vec![],
        })
    };
    // Assignments with their tasks' definitions (for an operator without their workflow).
    let defined = |assignments: Vec<Assignment>, definitions: usize| {
        Message::Dispatch(Dispatch {
            inputs: vec![],
            assignments,
            tasks: (0..definitions as u32)
                .map(|t| crate::validation::task(format!("t{t}"), vec![]))
                .collect(),
        })
    };

    let good = [
        Message::Assignments(vec![assignment(0, op), assignment(1, op)]),
        Message::Assignments((0..MAX_BATCH as u32).map(|t| assignment(t, op)).collect()),
        Message::Answers(vec![accepted(0, op), refused.clone()]),
        Message::Verdicts(vec![verdict(0), verdict(1)]),
        // A dispatch may carry a single assignment: its inputs are what it saves a push for.
        dispatch(vec![input(0), input(1)], vec![assignment(2, op)]),
        dispatch(
            vec![input(0)],
            (0..MAX_BATCH as u32).map(|t| assignment(t, op)).collect(),
        ),
        // Definitions alone are enough, one per assignment.
        defined(vec![assignment(0, op)], 1),
        defined(vec![assignment(0, op), assignment(1, op)], 2),
    ];
    for m in good {
        assert_eq!(open(&m).expect("a valid batch opens"), m);
    }
    let bad = [
        (Message::Assignments(vec![]), "assignment batch of 0 parts"),
        (
            Message::Assignments(vec![assignment(0, op)]),
            "assignment batch of 1 parts",
        ),
        (
            Message::Assignments((0..=MAX_BATCH as u32).map(|t| assignment(t, op)).collect()),
            "assignment batch of 65 parts",
        ),
        (
            Message::Assignments(vec![
                assignment(0, op),
                assignment(1, other),
                assignment(2, op),
            ]),
            "assignment batch mixes operators",
        ),
        (
            Message::Answers(vec![accepted(0, other), refused]),
            "answer batch mixes operators",
        ),
        (
            Message::Verdicts(vec![verdict(0)]),
            "verdict batch of 1 parts",
        ),
        (
            dispatch(vec![], vec![assignment(0, op)]),
            "dispatch without inputs or task definitions",
        ),
        (
            defined(vec![assignment(0, op), assignment(1, op)], 1),
            "dispatch of 2 assignments with 1 task definitions",
        ),
        (
            defined(vec![assignment(0, op)], 2),
            "dispatch of 1 assignments with 2 task definitions",
        ),
        (
            dispatch(vec![input(0)], vec![]),
            "dispatch of 0 assignments",
        ),
        (
            dispatch(
                vec![input(0)],
                (0..=MAX_BATCH as u32).map(|t| assignment(t, op)).collect(),
            ),
            "dispatch of 65 assignments",
        ),
        (
            dispatch(
                vec![input(0)],
                vec![assignment(0, op), assignment(1, other)],
            ),
            "dispatch mixes operators",
        ),
    ];
    for (m, says) in bad {
        let err = open(&m).expect_err("an invalid batch is refused");
        assert!(matches!(err, EnvelopeError::Batch(_)), "{err:?}");
        assert!(err.to_string().contains(says), "{err} should say {says}");
    }
}
