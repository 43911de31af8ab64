use crate::common::*;
use proofmesh_matchmaker::{Decision, Event, Matchmaker};
use std::collections::BTreeSet;

#[test]
fn tasks_wait_for_dependencies_and_reserve_exact_gpus() {
    let mut mm = with_operators(4, 2);
    let wf = pipeline(8);
    let (_, d) = submit(&mut mm, 0, &wf);
    let a = assignments(&d);
    assert_eq!(a.len(), 1, "only the witness is ready: {d:?}");
    assert_eq!(a[0].task, 0);
    assert_eq!(a[0].gpus.len(), 1);
    let k = keypair_of(&a[0], 4);
    mm.handle(1, accept(&a[0], 1));
    let d = mm.handle(6, result_for(&a[0], &k, 1, 6, true));
    assert!(d.iter().any(|d| matches!(
        d,
        Decision::Verdict(proofmesh_protocol::messages::Verdict::Accepted(_))
    )));
    let a = assignments(&d);
    // 8 leaves ready, 4 operators x 2 GPUs = 8 slots.
    assert_eq!(a.len(), 8, "{d:?}");
    let mut used = BTreeSet::new();
    for x in &a {
        assert!(
            x.task >= 1 && x.task <= 8,
            "only leaves are ready, got task {}",
            x.task
        );
        assert_eq!(x.gpus.len(), 1);
        assert!(
            used.insert((x.operator, x.gpus[0])),
            "GPU handed out twice: {x:?}"
        );
    }
    // Bursts spread: every operator got work.
    let ops: BTreeSet<_> = a.iter().map(|x| x.operator).collect();
    assert_eq!(ops.len(), 4);
    mm.check_invariants().expect("invariants");
}

#[test]
fn no_more_assignments_than_free_gpus() {
    let mut mm = with_operators(2, 1);
    let wf = proofmesh_protocol::Workflow {
        name: "flat".into(),
        ordering: None,
        deadline_ms: 0,
        tasks: (0..10)
            .map(|i| proofmesh_matchmaker::sim::sim_task(format!("t{i}"), "work", vec![], 100, 3))
            .collect(),
    };
    let (_, d) = submit(&mut mm, 0, &wf);
    let a = assignments(&d);
    assert_eq!(a.len(), 2);
    assert_eq!(mm.ready_len(), 8);
    mm.handle(1, accept(&a[0], 1));
    mm.handle(1, accept(&a[1], 1));
    // Finishing one frees exactly one slot.
    let k = keypair_of(&a[0], 2);
    let d = mm.handle(40, result_for(&a[0], &k, 0, 40, true));
    let next = assignments(&d);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].operator, a[0].operator);
    assert_eq!(next[0].gpus, a[0].gpus);
    mm.check_invariants().expect("invariants");
}

#[test]
fn an_operator_that_stops_heartbeating_is_presumed_down_and_its_task_moves() {
    let mut mm = with_operators(2, 1);
    let (_, d) = submit(&mut mm, 0, &chain(1, 3));
    let a = assignments(&d).remove(0);
    mm.handle(10, accept(&a, 10));
    let other = if a.operator == key(1).public() {
        key(2)
    } else {
        key(1)
    };
    // Only the other operator keeps heartbeating.
    let mut moved = None;
    for t in (100..=400).step_by(100) {
        let d = mm.handle(t, heartbeat(&other, t));
        if let Some(n) = assignments(&d).into_iter().next() {
            assert!(d.iter().any(
                |x| matches!(x, Decision::Cancel { operator, .. } if *operator == a.operator)
            ));
            moved = Some((t, n));
            break;
        }
    }
    let (t, n) = moved.expect("task reassigned after missed heartbeats");
    assert!(t <= 300 + 100, "detected at {t}");
    assert_eq!(n.operator, other.public());
    assert_eq!(n.attempt, 2);
}

#[test]
fn ordered_stream_finalizes_in_sequence_order() {
    let mut mm = with_operators(2, 1);
    let w1 = block("blocks", 1, 1);
    let w2 = block("blocks", 2, 1);
    // Block 2 is submitted first but block 1 goes first under contention (1 GPU each, 2 ops).
    let (id2, d2) = submit(&mut mm, 0, &w2);
    let (id1, d1) = submit(&mut mm, 0, &w1);
    let a2 = assignments(&d2).remove(0);
    let a1 = assignments(&d1).remove(0);
    // Block 2 finishes first: its completion is held.
    let d = mm.handle(10, result_for(&a2, &keypair_of(&a2, 2), 0, 10, true));
    assert!(
        !d.iter()
            .any(|x| matches!(x, Decision::WorkflowCompleted { .. })),
        "{d:?}"
    );
    let d = mm.handle(20, result_for(&a1, &keypair_of(&a1, 2), 0, 20, true));
    let done: Vec<_> = d
        .iter()
        .filter_map(|x| match x {
            Decision::WorkflowCompleted { workflow, .. } => Some(*workflow),
            _ => None,
        })
        .collect();
    assert_eq!(done, vec![id1, id2]);
}

#[test]
fn earlier_sequence_wins_contention() {
    let mut mm = with_operators(1, 1);
    let mk = |seq: u64| block("s", seq, 2);
    // Occupy the only GPU, then queue sequence 5 before sequence 4.
    let (_, d) = submit(&mut mm, 0, &chain(1, 3));
    let busy = assignments(&d).remove(0);
    let (_, d5) = submit(&mut mm, 1, &mk(5));
    let (id4, d4) = submit(&mut mm, 2, &mk(4));
    assert!(assignments(&d5).is_empty() && assignments(&d4).is_empty());
    let d = mm.handle(10, result_for(&busy, &key(1), 0, 10, true));
    let a = assignments(&d);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].workflow, id4, "sequence 4 must go before 5");
}

#[test]
fn memory_per_tracked_task_is_under_a_kibibyte() {
    let mut mm = with_operators(32, 8);
    submit(&mut mm, 0, &pipeline(512));
    let est = mm.memory_estimate();
    assert_eq!(est.tracked_tasks, 1025);
    assert!(est.per_task() < 1024, "{} bytes per task", est.per_task());
    let mut mm = Matchmaker::new(config());
    submit(&mut mm, 0, &pipeline(4096));
    assert!(mm.memory_estimate().per_task() < 1024);
}

#[test]
fn malformed_workflows_fail_with_a_reason() {
    let mut mm = with_operators(1, 1);
    let mut wf = chain(3, 3);
    wf.tasks[0].deps = vec![2];
    let (_, d) = submit(&mut mm, 0, &wf);
    match &d[..] {
        [Decision::WorkflowFailed { reason, .. }] => {
            assert!(reason.to_string().contains("cycle"), "{reason}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let mut wf = chain(2, 3);
    wf.tasks[1].deps = vec![7];
    let (_, d) = submit(&mut mm, 0, &wf);
    assert!(
        matches!(&d[..], [Decision::WorkflowFailed { reason, .. }] if reason.to_string().contains("does not exist"))
    );
}

#[test]
fn ready_tasks_no_live_operator_could_run_are_counted_until_one_joins() {
    // Two CPU-only operators: the witness and the leaves of the GPU pipeline find nobody.
    let mut mm = with_operators(2, 0);
    let (_, d) = submit(&mut mm, 0, &pipeline(4));
    assert!(assignments(&d).is_empty(), "{d:?}");
    assert_eq!((mm.ready_len(), mm.unmatched_ready_len()), (1, 1));
    // A GPU operator joins: the witness goes to it and nothing ready is left unmatched.
    let d = mm.handle(1, Event::OperatorAdvert(advert(&key(9), 1, 24_576)));
    let a = assignments(&d);
    assert_eq!((a.len(), a[0].task), (1, 0), "{d:?}");
    assert_eq!(a[0].operator, key(9).public());
    assert_eq!((mm.ready_len(), mm.unmatched_ready_len()), (0, 0));
    // It goes down: the witness is ready again with nobody to run it.
    let d = mm.handle(10_000, Event::Tick);
    assert!(
        d.iter().any(|d| matches!(d, Decision::Cancel { .. })),
        "{d:?}"
    );
    assert_eq!(mm.unmatched_ready_len(), 1);
    mm.check_invariants().expect("invariants");
}
