use crate::common::*;
use proofmesh_matchmaker::{AttemptCause, Decision, Event, FailureReason, SlashEvidence};
use proofmesh_matchmaker::{Config, Matchmaker};
use proofmesh_protocol::messages::{Assignment, FailureCause, Verdict};

#[test]
fn accept_timeout_reassigns_to_another_operator() {
    let mut mm = with_operators(2, 1);
    let (_, d) = submit(&mut mm, 0, &chain(1, 3));
    let a = assignments(&d).remove(0);
    assert_eq!(mm.next_deadline(), Some(a.accept_by_ms));
    let d = mm.tick(a.accept_by_ms);
    assert!(d.iter().any(|x| matches!(
        x,
        Decision::Cancel {
            reason: AttemptCause::AcceptTimeout,
            ..
        }
    )));
    let b = assignments(&d).remove(0);
    assert_eq!(b.attempt, 2);
    assert_ne!(
        b.operator, a.operator,
        "must not go back to the operator that just failed it"
    );
    // A late acceptance of the old attempt is ignored; the new one proceeds.
    mm.handle(a.accept_by_ms + 1, accept(&a, a.accept_by_ms + 1));
    assert_eq!(mm.inflight_len(), 1);
}

#[test]
fn result_timeout_reassigns_and_emits_missed_deadline_evidence() {
    let mut mm = with_operators(2, 1);
    let (_, d) = submit(&mut mm, 0, &chain(1, 3));
    let a = assignments(&d).remove(0);
    mm.handle(1, accept(&a, 1));
    // Keep both operators alive.
    for t in [90, 180, 270, 360] {
        for i in 1..=2 {
            mm.handle(t, heartbeat(&key(i), t));
        }
    }
    let d = mm.tick(a.deadline_ms);
    let slash = d.iter().find_map(|x| match x {
        Decision::Slash(SlashEvidence::MissedDeadline {
            acceptance,
            deadline_ms,
        }) => Some((acceptance, *deadline_ms)),
        _ => None,
    });
    let (acc, dl) = slash.expect("missed-deadline evidence");
    assert_eq!(acc.operator, a.operator);
    assert_eq!(dl, a.deadline_ms);
    let b = assignments(&d).remove(0);
    assert_ne!(b.operator, a.operator);
    // The old attempt's late result is not accepted.
    let d = mm.handle(
        a.deadline_ms + 1,
        result_for(&a, &keypair_of(&a, 2), 0, 1, true),
    );
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn declared_failure_reassigns_at_once() {
    let mut mm = with_operators(2, 1);
    let (_, d) = submit(&mut mm, 0, &chain(1, 3));
    let a = assignments(&d).remove(0);
    let d = mm.handle(
        5,
        failure(
            &a,
            FailureCause::Crashed {
                exit_code: Some(2),
                stderr_tail: "oom".into(),
            },
        ),
    );
    let b = assignments(&d).remove(0);
    assert_eq!(b.attempt, 2);
    assert_ne!(b.operator, a.operator);
}

#[test]
fn failed_task_goes_back_to_the_same_operator_only_when_no_other_can_run_it() {
    let mut mm = with_operators(1, 1);
    let (_, d) = submit(&mut mm, 0, &chain(1, 3));
    let a = assignments(&d).remove(0);
    let d = mm.handle(5, failure(&a, FailureCause::Timeout));
    let b = assignments(&d).remove(0);
    assert_eq!(b.operator, a.operator);
}

#[test]
fn invalid_result_is_rejected_slashed_and_reassigned() {
    let mut mm = with_operators(2, 1);
    let (_, d) = submit(&mut mm, 0, &chain(1, 3));
    let a = assignments(&d).remove(0);
    mm.handle(1, accept(&a, 1));
    let d = mm.handle(10, forged_result(&a, &keypair_of(&a, 2)));
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::Verdict(Verdict::Rejected { .. }))),
        "{d:?}"
    );
    assert!(d
        .iter()
        .any(|x| matches!(x, Decision::Slash(SlashEvidence::InvalidResult { .. }))));
    let b = assignments(&d).remove(0);
    assert_ne!(b.operator, a.operator);
    assert_eq!(b.attempt, 2);
}

#[test]
fn exhausted_attempts_fail_the_workflow_naming_task_and_every_cause() {
    let mut mm = with_operators(2, 1);
    let (id, d) = submit(&mut mm, 0, &chain(1, 2));
    let a = assignments(&d).remove(0);
    mm.handle(1, accept(&a, 1));
    let d = mm.handle(2, forged_result(&a, &keypair_of(&a, 2)));
    let b = assignments(&d).remove(0);
    let d = mm.handle(3, failure(&b, FailureCause::Input("blob missing".into())));
    let reason = d
        .iter()
        .find_map(|x| match x {
            Decision::WorkflowFailed { workflow, reason } if *workflow == id => {
                Some(reason.clone())
            }
            _ => None,
        })
        .expect("workflow failed");
    match &reason {
        FailureReason::AttemptsExhausted {
            task,
            name,
            attempts,
        } => {
            assert_eq!((*task, name.as_str()), (0, "step[0]"));
            assert_eq!(attempts.len(), 2);
            assert!(matches!(attempts[0].cause, AttemptCause::InvalidResult(_)));
            assert!(matches!(
                attempts[1].cause,
                AttemptCause::Declared(FailureCause::Input(_))
            ));
        }
        other => panic!("unexpected reason {other:?}"),
    }
    let text = reason.to_string();
    assert!(
        text.contains("step[0]")
            && text.contains("blob missing")
            && text.contains("invalid result"),
        "{text}"
    );
    assert_eq!(mm.is_finished(&id), Some(true));
    assert_eq!(mm.inflight_len(), 0);
}

#[test]
fn operator_down_holding_accepted_work_is_slashed_at_the_deadline_unless_it_delivers() {
    let mut mm = with_operators(2, 1);
    let (_, d) = submit(&mut mm, 0, &chain(1, 3));
    let a = assignments(&d).remove(0);
    mm.handle(1, accept(&a, 1));
    let d = mm.handle(2, Event::OperatorDown(a.operator));
    assert!(!assignments(&d).is_empty(), "reassigned at once");
    assert!(
        !d.iter().any(|x| matches!(x, Decision::Slash(_))),
        "no evidence before the deadline"
    );
    let d = mm.tick(a.deadline_ms);
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::Slash(SlashEvidence::MissedDeadline { .. }))),
        "{d:?}"
    );
}

/// A one-task chain whose attempt was accepted at 1, then its operator presumed down at 2.
fn accepted_then_down() -> (Matchmaker, Assignment) {
    let mut mm = with_operators(2, 1);
    let (_, d) = submit(&mut mm, 0, &chain(1, 3));
    let a = assignments(&d).remove(0);
    mm.handle(1, accept(&a, 1));
    mm.handle(2, Event::OperatorDown(a.operator));
    (mm, a)
}

#[test]
fn operator_presumed_down_that_declares_before_the_deadline_is_not_slashed() {
    // An operator that stops hands its attempts back; if its heartbeats were missed first, the
    // declaration still arrives before the deadline and clears the evidence.
    let (mut mm, a) = accepted_then_down();
    mm.handle(
        3,
        failure(&a, FailureCause::Refused("operator shutting down".into())),
    );
    let d = mm.tick(a.deadline_ms);
    assert!(
        !d.iter().any(|x| matches!(x, Decision::Slash(_))),
        "declared in time: {d:?}"
    );
    mm.check_invariants().expect("invariants");
}

#[test]
fn only_the_operators_own_declaration_clears_its_evidence() {
    let (mut mm, a) = accepted_then_down();
    // Another operator's declaration for the attempt does not clear it: only the one that
    // accepted it may.
    let mut forged = failure(&a, FailureCause::Refused("operator shutting down".into()));
    if let Event::Failure(f) = &mut forged {
        f.operator = key(9).public();
    }
    mm.handle(3, forged);
    let d = mm.tick(a.deadline_ms);
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::Slash(SlashEvidence::MissedDeadline { .. }))),
        "{d:?}"
    );
}

#[test]
fn operator_down_holding_accepted_work_is_slashed_even_when_the_workflow_finished_first() {
    // Others finishing the workflow before the deadline do not excuse the one that accepted
    // the work and vanished (e2e: the survivor finished in under the task timeout).
    let mut mm = with_operators(2, 1);
    let (id, d) = submit(&mut mm, 0, &chain(1, 3));
    let a = assignments(&d).remove(0);
    mm.handle(1, accept(&a, 1));
    let d = mm.handle(2, Event::OperatorDown(a.operator));
    let b = assignments(&d).remove(0);
    mm.handle(3, accept(&b, 3));
    let d = mm.handle(4, result_for(&b, &keypair_of(&b, 2), 3, 4, true));
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::WorkflowCompleted { .. })),
        "{d:?}"
    );
    assert_eq!(mm.is_finished(&id), Some(true));
    assert!(b.deadline_ms > 4 && a.deadline_ms > 4);
    let d = mm.tick(a.deadline_ms);
    let slashed: Vec<_> = d
        .iter()
        .filter_map(|x| match x {
            Decision::Slash(SlashEvidence::MissedDeadline { acceptance, .. }) => {
                Some(acceptance.operator)
            }
            _ => None,
        })
        .collect();
    assert_eq!(slashed, vec![a.operator], "{d:?}");
}

#[test]
fn operator_losses_do_not_use_up_attempts_but_have_their_own_budget() {
    // A one-attempt task survives its operators going down (churn is not the task's fault)...
    let cfg = Config {
        max_operator_losses: 3,
        ..config()
    };
    let mut mm = with_config(cfg, 4, 1);
    let (id, d) = submit(&mut mm, 0, &chain(1, 1));
    let mut a = assignments(&d).remove(0);
    let mut now = 1;
    for lost in 1..=3u32 {
        mm.handle(now, accept(&a, now));
        now += 1;
        let d = mm.handle(now, Event::OperatorDown(a.operator));
        now += 1;
        if lost < 3 {
            assert!(
                !d.iter()
                    .any(|x| matches!(x, Decision::WorkflowFailed { .. })),
                "loss {lost} of 3 must not fail a one-attempt task: {d:?}"
            );
            a = assignments(&d).remove(0);
            assert_eq!(a.attempt, lost + 1);
        } else {
            // ...but a task that keeps taking its operators down does not loop forever.
            let reason = d.iter().find_map(|x| match x {
                Decision::WorkflowFailed { workflow, reason } if *workflow == id => Some(reason),
                _ => None,
            });
            let text = reason.map(|r| r.to_string()).unwrap_or_default();
            assert!(text.contains("operator went down"), "{d:?}");
        }
    }
}

#[test]
fn operator_down_holding_several_tasks_of_a_workflow_that_fails_does_not_panic() {
    // One operator with two GPUs takes both independent tasks of a workflow that tolerates no
    // operator loss. Its loss ends the first attempt, which fails (and forgets) the workflow;
    // the second held attempt must then be skipped, not indexed into the forgotten task list.
    let cfg = Config {
        max_operator_losses: 1,
        ..config()
    };
    let mut mm = with_config(cfg, 1, 2);
    let mut wf = chain(2, 1);
    for t in &mut wf.tasks {
        t.deps.clear();
        t.inputs.clear();
    }
    let (id, d) = submit(&mut mm, 0, &wf);
    let a = assignments(&d);
    assert_eq!(a.len(), 2, "both tasks on the one operator: {d:?}");
    let d = mm.handle(2, Event::OperatorDown(a[0].operator));
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::WorkflowFailed { workflow, .. } if *workflow == id)),
        "{d:?}"
    );
    assert_eq!(mm.inflight_len(), 0);
}

#[test]
fn a_task_refused_again_and_again_backs_off_doubling() {
    let mut mm = with_operators(1, 1);
    let (_, d) = submit(&mut mm, 0, &chain(1, 3));
    let mut a = assignments(&d).remove(0);
    let mut now = 1;
    let base = Config::default().refusal_backoff_ms;
    for (n, expected) in [base, 2 * base, 4 * base, 8 * base].into_iter().enumerate() {
        assert!(assignments(&mm.handle(
            now,
            failure(
                &a,
                FailureCause::Refused("not among this operator's matchmakers".into())
            )
        ))
        .is_empty());
        let alive =
            |mm: &mut proofmesh_matchmaker::Matchmaker, t: u64| mm.handle(t, heartbeat(&key(1), t));
        // Timers fire on any input: what a heartbeat's handling decides counts too.
        let mut early = alive(&mut mm, now + expected - 1);
        early.extend(mm.tick(now + expected - 1));
        assert!(
            assignments(&early).is_empty(),
            "refusal {n}: placed before {expected} ms"
        );
        let mut due = alive(&mut mm, now + expected);
        due.extend(mm.tick(now + expected));
        let placed = assignments(&due);
        assert_eq!(
            placed.len(),
            1,
            "refusal {n}: placed again after {expected} ms"
        );
        a = placed.into_iter().next().unwrap();
        now += expected;
    }
    // Refusals did no work: they never use up the task's attempts.
    assert_eq!(mm.inflight_len(), 1);
}

#[test]
fn an_operator_that_never_accepts_loses_standing_to_one_untried() {
    let mut mm = with_operators(3, 1);
    let (_, d) = submit(&mut mm, 0, &chain(1, 3));
    let a = assignments(&d).remove(0);
    let black_hole = a.operator;
    let t = a.accept_by_ms;
    // Not accepted in time: the task goes to another operator, which takes it (now busy).
    let b = assignments(&mm.tick(t)).remove(0);
    assert_ne!(b.operator, black_hole);
    mm.handle(t + 1, accept(&b, t + 1));
    // The next workflow's candidates: the black hole and one never tried. Before the black
    // hole's timeout counted against it, both looked alike and the black hole could win.
    let mut w = chain(1, 3);
    w.name = "next".into();
    let (_, d) = submit(&mut mm, t + 2, &w);
    let c = assignments(&d).remove(0);
    assert_ne!(c.operator, b.operator, "that one is busy");
    assert_ne!(
        c.operator, black_hole,
        "offered to the operator that accepts nothing"
    );
}
