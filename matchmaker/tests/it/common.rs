//! Helpers: keys, operators, workflows, and driving a matchmaker by hand.

use proofmesh_matchmaker::sim::{honest_output, sim_task, zk_pipeline};
use proofmesh_matchmaker::{Config, Decision, Event, Matchmaker};
use proofmesh_protocol::messages::{
    Acceptance, Assignment, Capacity, FailureCause, GpuInfo, Heartbeat, OperatorAdvert,
    SignedResult, TaskFailure, TaskResult,
};
use proofmesh_protocol::{ContentId, Keypair, Program, Workflow, WorkflowId};

pub fn key(i: u8) -> Keypair {
    Keypair::from_secret_bytes([i; 32])
}

pub fn advert(k: &Keypair, gpus: u32, vram_mb: u64) -> OperatorAdvert {
    OperatorAdvert {
        operator: k.public(),
        eth_address: None,
        capacity: Capacity {
            cpu: 4 * gpus.max(1),
            memory_mb: 32_768 * u64::from(gpus.max(1)),
            disk_mb: 100_000,
            gpus: (0..gpus)
                .map(|g| GpuInfo {
                    index: g,
                    model: "test".into(),
                    vram_mb,
                    uuid: format!("GPU-{g}"),
                })
                .collect(),
        },
        programs: ["witness", "leaf", "aggregate", "final", "work"]
            .iter()
            .map(|p| Program {
                name: (*p).into(),
                version: "1".into(),
            })
            .collect(),
        price_wei: 1_000,
        queue: 0,
        max_tasks: 0,
        trusts: Vec::new(),
    }
}

pub fn config() -> Config {
    Config {
        me: key(200).public(),
        heartbeat_interval_ms: 100,
        missed_heartbeats: 3,
        accept_timeout_ms: 50,
        result_grace_ms: 50,
        ..Config::default()
    }
}

/// A chain a -> b -> c of `work` tasks, 100 ms each (timeout 300 ms), `attempts` attempts.
pub fn chain(n: u32, attempts: u32) -> Workflow {
    let tasks = (0..n)
        .map(|i| {
            sim_task(
                format!("step[{i}]"),
                "work",
                if i == 0 { vec![] } else { vec![i - 1] },
                100,
                attempts,
            )
        })
        .collect();
    Workflow {
        name: "chain".into(),
        ordering: None,
        deadline_ms: 0,
        tasks,
    }
}

/// A `chain(n, 3)` named `block-SEQ`, at sequence `seq` of ordered stream `stream`.
pub fn block(stream: &str, seq: u64, n: u32) -> Workflow {
    let mut w = chain(n, 3);
    w.name = format!("block-{seq}");
    w.ordering = Some(proofmesh_protocol::Ordering {
        stream: stream.into(),
        sequence: seq,
    });
    w
}

pub fn pipeline(leaves: u32) -> Workflow {
    zk_pipeline(leaves, 10, 5, 5, 5).workflow
}

pub fn submit(mm: &mut Matchmaker, now: u64, wf: &Workflow) -> (WorkflowId, Vec<Decision>) {
    let id = wf.id();
    let d = mm.handle(
        now,
        Event::WorkflowSubmitted {
            id,
            workflow: wf.clone(),
            submitted_at_ms: now,
        },
    );
    (id, d)
}

pub fn assignments(ds: &[Decision]) -> Vec<Assignment> {
    ds.iter()
        .filter_map(|d| match d {
            Decision::Assign(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// `k`'s operator heartbeating at `at_ms`, running nothing it tells of.
pub fn heartbeat(k: &Keypair, at_ms: u64) -> Event {
    Event::Heartbeat(Heartbeat {
        operator: k.public(),
        at_ms,
        running: vec![],
    })
}

/// The operator of `a` declaring its attempt failed with `cause`.
pub fn failure(a: &Assignment, cause: FailureCause) -> Event {
    Event::Failure(TaskFailure {
        workflow: a.workflow,
        task: a.task,
        attempt: a.attempt,
        operator: a.operator,
        cause,
    })
}

pub fn accept(a: &Assignment, now: u64) -> Event {
    Event::Acceptance(Acceptance {
        assignment: ContentId::of_value(a),
        workflow: a.workflow,
        task: a.task,
        attempt: a.attempt,
        operator: a.operator,
        accepted_at_ms: now,
        eth: None,
    })
}

pub fn result_for(a: &Assignment, k: &Keypair, start: u64, end: u64, honest: bool) -> Event {
    let r = TaskResult {
        workflow: a.workflow,
        task: a.task,
        attempt: a.attempt,
        operator: a.operator,
        output: if honest {
            honest_output(&a.workflow, a.task)
        } else {
            ContentId::of_bytes(b"bad")
        },
        output_bytes: 1,
        started_ms: start,
        finished_ms: end,
        resources: a.resources,
        gpus: a.gpus.clone(),
    };
    Event::Result(SignedResult::sign(k, r))
}

/// A result whose signature is corrupted (fails the default checker).
pub fn forged_result(a: &Assignment, k: &Keypair) -> Event {
    match result_for(a, k, 0, 1, true) {
        Event::Result(mut s) => {
            s.signature.0[0] ^= 1;
            Event::Result(s)
        }
        e => e,
    }
}

/// Keys by public key for the test operators 1..=n.
pub fn keypair_of(a: &Assignment, n: u8) -> Keypair {
    (1..=n)
        .map(key)
        .find(|k| k.public() == a.operator)
        .expect("assignment names a test operator")
}

/// A matchmaker with `n` operators (keys 1..=n) of `gpus` GPUs each.
pub fn with_operators(n: u8, gpus: u32) -> Matchmaker {
    with_config(config(), n, gpus)
}

/// [`with_operators`] under `cfg`.
pub fn with_config(cfg: Config, n: u8, gpus: u32) -> Matchmaker {
    let mut mm = Matchmaker::new(cfg);
    for i in 1..=n {
        mm.handle(0, Event::OperatorAdvert(advert(&key(i), gpus, 24_576)));
    }
    mm
}

/// Replays `log[..cut]`, takes a snapshot through bincode (what the node stores), restores it
/// and handles the rest: returns the matchmaker and the decisions of `log[cut..]`.
pub fn replay_across_snapshot(
    cfg: Config,
    checker: impl Fn() -> Box<dyn proofmesh_matchmaker::ResultChecker + Send>,
    log: &[(u64, Event)],
    cut: usize,
) -> (Matchmaker, Vec<Decision>) {
    let (before, _) = Matchmaker::replay(cfg.clone(), checker(), log[..cut].to_vec());
    let bytes = bincode::serde::encode_to_vec(before.snapshot(), bincode::config::standard())
        .expect("a snapshot encodes");
    let (snapshot, read) = bincode::serde::decode_from_slice::<proofmesh_matchmaker::Snapshot, _>(
        &bytes,
        bincode::config::standard(),
    )
    .expect("a snapshot decodes");
    assert_eq!(read, bytes.len(), "a snapshot decodes to its end");
    let mut after = Matchmaker::restore(cfg, checker(), snapshot);
    assert!(
        after == before,
        "the restored state differs from the snapshotted one"
    );
    let mut decisions = Vec::new();
    for (now, event) in &log[cut..] {
        after.handle_into(*now, event.clone(), &mut decisions);
    }
    (after, decisions)
}
