use crate::common::*;
use proofmesh_matchmaker::{Config, Decision, Event, Matchmaker};
use proofmesh_protocol::messages::Verdict;
use proofmesh_protocol::PublicKey;

/// Two matchmakers A and B over the same operators; returns them with A active for `wf`.
fn pair(wf: &proofmesh_protocol::Workflow) -> (Matchmaker, Matchmaker, PublicKey, PublicKey) {
    let (a, b, ka, kb, _) = pair_deciding(wf);
    (a, b, ka, kb)
}

/// [`pair`], with what the active one decided on the submission (its first assignments; the
/// standby has not seen them).
fn pair_deciding(
    wf: &proofmesh_protocol::Workflow,
) -> (Matchmaker, Matchmaker, PublicKey, PublicKey, Vec<Decision>) {
    let ka = key(201).public();
    let kb = key(202).public();
    let mut a = Matchmaker::new(Config { me: ka, ..config() });
    let mut b = Matchmaker::new(Config { me: kb, ..config() });
    let mut decided = Vec::new();
    for m in [&mut a, &mut b] {
        m.handle(0, Event::Matchmakers(vec![ka, kb]));
        for i in 1..=3 {
            m.handle(0, Event::OperatorAdvert(advert(&key(i), 1, 24_576)));
        }
        let (_, d) = submit(m, 0, wf);
        decided.extend(d);
    }
    if a.is_active_for(&wf.id()) {
        (a, b, ka, kb, decided)
    } else {
        (b, a, kb, ka, decided)
    }
}

/// Matchmakers A and B (keys 201 and 202) over operators 1..=3, each with `live(its key)` as
/// its live set; returns them with their keys.
fn two_matchmakers(
    live: impl Fn(PublicKey) -> Vec<PublicKey>,
) -> (Vec<Matchmaker>, PublicKey, PublicKey) {
    let (ka, kb) = (key(201).public(), key(202).public());
    let ms = [ka, kb]
        .into_iter()
        .map(|me| {
            let mut m = Matchmaker::new(Config { me, ..config() });
            m.handle(0, Event::Matchmakers(live(me)));
            for i in 1..=3 {
                m.handle(0, Event::OperatorAdvert(advert(&key(i), 1, 24_576)));
            }
            m
        })
        .collect();
    (ms, ka, kb)
}

/// Forward the active one's decisions to the follower as gossip.
fn gossip(follower: &mut Matchmaker, now: u64, ds: &[Decision]) {
    for d in ds {
        let e = match d {
            Decision::Assign(x) => Event::Assigned(x.clone()),
            Decision::Verdict(v) => Event::Verdict(v.clone()),
            _ => continue,
        };
        assert!(
            follower.handle(now, e).is_empty(),
            "a follower decides nothing"
        );
    }
}

#[test]
fn standby_takes_over_in_flight_work_and_never_accepts_twice() {
    let wf = chain(3, 3);
    let id = wf.id();
    let (mut active, mut standby, _ka, kb, d) = pair_deciding(&wf);
    assert!(!standby.is_active_for(&id));
    gossip(&mut standby, 0, &d);
    let a0 = assignments(&d).remove(0);
    let k0 = keypair_of(&a0, 3);
    // Task 0 completes under the active matchmaker.
    let acc = accept(&a0, 1);
    active.handle(1, acc.clone());
    standby.handle(1, acc);
    let res = result_for(&a0, &k0, 1, 100, true);
    let d = active.handle(100, res.clone());
    assert!(standby.handle(100, res.clone()).is_empty());
    gossip(&mut standby, 100, &d);
    let a1 = assignments(&d).remove(0);
    assert_eq!(a1.task, 1);
    let acc1 = accept(&a1, 101);
    active.handle(101, acc1.clone());
    standby.handle(101, acc1);
    // The result of task 1 reaches both, then the active dies before gossiping its verdict.
    let r1 = result_for(&a1, &keypair_of(&a1, 3), 101, 200, true);
    active.handle(200, r1.clone());
    assert!(
        standby.handle(200, r1.clone()).is_empty(),
        "follower holds the result back"
    );
    let d = standby.handle(201, Event::Matchmakers(vec![kb]));
    let accepted: Vec<_> = d
        .iter()
        .filter(|x| matches!(x, Decision::Verdict(Verdict::Accepted(_))))
        .collect();
    assert_eq!(
        accepted.len(),
        1,
        "the held result is judged on takeover: {d:?}"
    );
    let a2 = assignments(&d).remove(0);
    assert_eq!((a2.task, a2.attempt), (2, 1));
    // A duplicate of an already accepted result is never accepted again.
    assert!(standby.handle(202, r1).is_empty());
    assert!(standby.handle(203, res).is_empty());
    standby.handle(204, accept(&a2, 204));
    let d = standby.handle(300, result_for(&a2, &keypair_of(&a2, 3), 204, 300, true));
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::WorkflowCompleted { workflow, .. } if *workflow == id)),
        "{d:?}"
    );
    standby.check_invariants().expect("invariants");
}

#[test]
fn takeover_rearms_timeouts_of_unaccepted_assignments() {
    let wf = chain(1, 3);
    let ka = key(201).public();
    let kb = key(202).public();
    let mut ms: Vec<Matchmaker> = [ka, kb]
        .iter()
        .map(|&me| Matchmaker::new(Config { me, ..config() }))
        .collect();
    for m in ms.iter_mut() {
        m.handle(0, Event::Matchmakers(vec![ka, kb]));
        for i in 1..=3 {
            m.handle(0, Event::OperatorAdvert(advert(&key(i), 1, 24_576)));
        }
    }
    let (ai, fi) = if ms[0].is_active_for(&wf.id()) {
        (0, 1)
    } else {
        (1, 0)
    };
    let (_, d) = submit(&mut ms[ai], 0, &wf);
    let (_, nothing) = submit(&mut ms[fi], 0, &wf);
    assert!(
        nothing.is_empty(),
        "the follower assigns nothing: {nothing:?}"
    );
    let a = assignments(&d).remove(0);
    gossip(&mut ms[fi], 0, &d);
    // The active dies; the operator never accepts.
    let survivor = if fi == 0 { ka } else { kb };
    let d = ms[fi].handle(1, Event::Matchmakers(vec![survivor]));
    assert!(
        assignments(&d).is_empty(),
        "the attempt in flight is kept, not duplicated: {d:?}"
    );
    assert_eq!(ms[fi].next_deadline(), Some(a.accept_by_ms));
    let d = ms[fi].tick(a.accept_by_ms);
    let b = assignments(&d).remove(0);
    assert_eq!(b.attempt, 2);
    assert_ne!(b.operator, a.operator);
    assert_eq!(b.matchmaker, survivor);
}

// A matchmaker that learns a workflow only after the active one accepted results and died
// (gossip missed the submission; catch-up discovery brought it later) must take the verdicts
// it heard meanwhile, not run those tasks again: every other node keeps the first accepted
// result, so a second run gives the task two different ones (stop 35's CI failure).
#[test]
fn a_workflow_learned_after_the_active_one_died_keeps_the_results_it_accepted() {
    let wf = chain(3, 3);
    let id = wf.id();
    let (mut ms, ka, kb) = two_matchmakers(|_| vec![key(201).public(), key(202).public()]);
    let (ai, li) = if ms[0].is_active_for(&id) {
        (0, 1)
    } else {
        (1, 0)
    };
    let late = if li == 0 { ka } else { kb };
    // The active one runs task 0 and assigns task 1; the late one hears only the gossip.
    let (_, d) = submit(&mut ms[ai], 0, &wf);
    let a0 = assignments(&d).remove(0);
    ms[ai].handle(1, accept(&a0, 1));
    let d0 = ms[ai].handle(100, result_for(&a0, &keypair_of(&a0, 3), 1, 100, true));
    let a1 = assignments(&d0).remove(0);
    assert_eq!(a1.task, 1);
    let acc1 = accept(&a1, 101);
    ms[ai].handle(101, acc1.clone());
    let gossip = d.iter().chain(&d0).filter_map(|x| match x {
        Decision::Assign(x) => Some(Event::Assigned(x.clone())),
        Decision::Verdict(v) => Some(Event::Verdict(v.clone())),
        _ => None,
    });
    for e in gossip.chain([acc1]) {
        assert!(ms[li].handle(101, e).is_empty(), "nothing to decide yet");
    }
    // The active one dies; then the late one learns the workflow, active for it at once.
    ms[li].handle(102, Event::Matchmakers(vec![late]));
    let (_, d) = submit(&mut ms[li], 103, &wf);
    assert!(ms[li].is_active_for(&id));
    assert!(
        assignments(&d).is_empty(),
        "task 0 is done and task 1 in flight: nothing to assign, {d:?}"
    );
    assert!(
        ms[li].describe_task(&id, 0).starts_with("Done"),
        "{}",
        ms[li].describe_task(&id, 0)
    );
    // Task 1's result (the operator's copy reaches the new active one) moves the chain on.
    let d = ms[li].handle(200, result_for(&a1, &keypair_of(&a1, 3), 101, 200, true));
    let next = assignments(&d);
    assert_eq!(next.len(), 1, "{d:?}");
    assert_eq!((next[0].task, next[0].attempt), (2, 1));
    ms[li].check_invariants().expect("invariants");
}

// Two matchmakers that both took a workflow as theirs: the first accepted result heard for a
// task wins, and the one that hears the other's verdict first calls its own attempt back.
#[test]
fn an_active_matchmaker_takes_another_ones_accepted_result_and_calls_back_its_attempt() {
    let wf = chain(2, 3);
    let id = wf.id();
    // Neither hears the other: both are active.
    let (mut ms, _, _) = two_matchmakers(|me| vec![me]);
    let (_, da) = submit(&mut ms[0], 0, &wf);
    let (_, db) = submit(&mut ms[1], 0, &wf);
    let (a0, b0) = (assignments(&da).remove(0), assignments(&db).remove(0));
    assert_eq!((a0.task, b0.task), (0, 0));
    ms[0].handle(1, accept(&a0, 1));
    let d = ms[0].handle(100, result_for(&a0, &keypair_of(&a0, 3), 1, 100, true));
    let verdict = d
        .iter()
        .find_map(|x| match x {
            Decision::Verdict(v) => Some(v.clone()),
            _ => None,
        })
        .expect("A accepts its result");
    ms[1].handle(2, accept(&b0, 2));
    let d = ms[1].handle(101, Event::Verdict(verdict));
    if b0.operator != a0.operator {
        assert!(
            d.iter().any(
                |x| matches!(x, Decision::Cancel { task: 0, attempt, .. } if *attempt == b0.attempt)
            ),
            "B calls back its own attempt at task 0: {d:?}"
        );
    }
    assert!(ms[1].describe_task(&id, 0).starts_with("Done"));
    let next = assignments(&d);
    assert_eq!(next.len(), 1, "task 1 goes out: {d:?}");
    assert_eq!(next[0].task, 1);
    // B's own result for task 0, arriving afterwards, is not accepted a second time.
    let d = ms[1].handle(150, result_for(&b0, &keypair_of(&b0, 3), 2, 150, true));
    assert!(
        !d.iter()
            .any(|x| matches!(x, Decision::Verdict(Verdict::Accepted(r)) if r.result.task == 0)),
        "{d:?}"
    );
    ms[1].check_invariants().expect("invariants");
}

/// The `SignedResult` inside a result event.
fn signed(e: Event) -> proofmesh_protocol::messages::SignedResult {
    match e {
        Event::Result(r) => r,
        e => panic!("not a result: {e:?}"),
    }
}

// The only matchmaker left after the active one died hears of results from nodes nobody vouches
// for (a gateway's or an operator's catch-up answer). It takes one only for an attempt it holds
// in flight on that operator (its own assignment, or one it followed from the dead matchmaker):
// then it is that operator's result come another way, checked and accepted as its own verdict.
// A result for an attempt it never saw assigned (the dead one's, or a task nobody assigned that
// operator), for a task still waiting for its inputs, signed by a key no operator advertised, or
// failing its check is dropped, and a standby takes none: the dead one's other decisions count
// only with its signed verdict (`Event::Verdict`, relayed unchanged by the node).
#[test]
fn a_relayed_result_is_taken_only_for_an_attempt_held_in_flight_while_active() {
    use proofmesh_protocol::messages::Assignment;
    let wf = chain(3, 3);
    let id = wf.id();
    let mut mm = with_operators(3, 1);
    let (_, d) = submit(&mut mm, 0, &wf);
    let ours = assignments(&d).remove(0);
    assert_eq!(ours.task, 0);
    mm.handle(1, accept(&ours, 1));
    let ours_key = keypair_of(&ours, 3);
    // Another known operator's well-signed result for task 0, which nobody here assigned it.
    let other = (1..=3)
        .map(key)
        .find(|k| k.public() != ours.operator)
        .unwrap();
    let theirs = Assignment {
        operator: other.public(),
        ..ours.clone()
    };
    let unassigned = signed(result_for(&theirs, &other, 1, 50, true));
    assert!(!mm.wants_relayed(&unassigned.result));
    assert!(
        mm.handle(10, Event::Relayed(unassigned)).is_empty(),
        "an attempt this matchmaker never saw assigned is nobody's word"
    );
    // Task 1 waits for task 0's result: nothing of it is in flight.
    let later = Assignment {
        task: 1,
        ..ours.clone()
    };
    let early = signed(result_for(&later, &ours_key, 51, 90, true));
    assert!(!mm.wants_relayed(&early.result));
    assert!(mm.handle(10, Event::Relayed(early)).is_empty());
    // A key no operator advertised, or an attempt beyond the task's: not taken.
    let stranger = key(99);
    let made_up = signed(result_for(
        &Assignment {
            operator: stranger.public(),
            ..ours.clone()
        },
        &stranger,
        1,
        50,
        true,
    ));
    assert!(!mm.wants_relayed(&made_up.result));
    assert!(mm.handle(10, Event::Relayed(made_up)).is_empty());
    let beyond = signed(result_for(
        &Assignment {
            attempt: 4,
            ..ours.clone()
        },
        &ours_key,
        1,
        50,
        true,
    ));
    assert!(!mm.wants_relayed(&beyond.result), "chain(_, 3): 3 attempts");
    assert!(mm.handle(10, Event::Relayed(beyond)).is_empty());
    // Our attempt's copy that fails its check: dropped, nobody slashed.
    let forged = signed(forged_result(&ours, &ours_key));
    assert!(mm.wants_relayed(&forged.result));
    assert!(
        mm.handle(10, Event::Relayed(forged)).is_empty(),
        "a copy that fails its check is dropped, nobody slashed"
    );
    assert!(mm.describe_task(&id, 0).starts_with("Inflight"));

    // Our operator's result, come by a relay: taken as this matchmaker's verdict.
    let relayed = signed(result_for(&ours, &ours_key, 1, 50, true));
    assert!(mm.wants_relayed(&relayed.result));
    let d = mm.handle(11, Event::Relayed(relayed.clone()));
    assert!(
        !d.iter().any(|x| matches!(x, Decision::Cancel { .. })),
        "the attempt in flight is the one relayed: nothing called back: {d:?}"
    );
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::Verdict(Verdict::Accepted(r)) if *r == relayed)),
        "accepted as this matchmaker's verdict: {d:?}"
    );
    assert_eq!(
        assignments(&d).iter().map(|a| a.task).collect::<Vec<_>>(),
        [1]
    );
    assert!(!mm.wants_relayed(&relayed.result), "done");
    assert!(mm.handle(12, Event::Relayed(relayed)).is_empty(), "once");
    mm.check_invariants().expect("invariants");

    // A standby judges nothing relayed; once the active one is gone, it takes the result of
    // the attempt it followed that one assign.
    let (_active, mut standby, _ka, kb, d) = pair_deciding(&wf);
    gossip(&mut standby, 0, &d);
    let a0 = assignments(&d).remove(0);
    let copy = signed(result_for(&a0, &keypair_of(&a0, 3), 1, 50, true));
    assert!(!standby.wants_relayed(&copy.result));
    assert!(standby.handle(14, Event::Relayed(copy.clone())).is_empty());
    assert!(!standby.describe_task(&id, 0).starts_with("Done"));
    standby.handle(15, Event::Matchmakers(vec![kb]));
    assert!(standby.is_active_for(&id));
    assert!(
        standby.wants_relayed(&copy.result),
        "the attempt it followed"
    );
    let d = standby.handle(16, Event::Relayed(copy.clone()));
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::Verdict(Verdict::Accepted(r)) if *r == copy)),
        "{d:?}"
    );
    standby.check_invariants().expect("invariants");
}

/// A workflow the active matchmaker failed ends on the standby too: when the standby takes it
/// over later it runs nothing of it again, and announces no second failure.
#[test]
fn a_workflow_the_active_one_failed_is_not_run_again_by_the_standby_taking_over() {
    let wf = chain(3, 3);
    let id = wf.id();
    // Control: without the failure, the standby left alone takes the workflow over and runs it.
    let (_active, mut standby, _ka, kb) = pair(&wf);
    let d = standby.handle(6, Event::Matchmakers(vec![kb]));
    assert_eq!(assignments(&d).len(), 1, "taken over and run: {d:?}");

    let (_active, mut standby, _ka, kb) = pair(&wf);
    let d = standby.handle(5, Event::WorkflowFailed { workflow: id });
    assert!(d.is_empty(), "a follower decides nothing: {d:?}");
    let d = standby.handle(6, Event::Matchmakers(vec![kb]));
    assert!(
        d.is_empty(),
        "nothing runs again, nothing is failed twice: {d:?}"
    );
    assert!(!standby.is_active_for(&id) || standby.ready_len() == 0);
}

/// A failure or cancellation of a workflow not known is not held: one that has left the engine
/// would be held for good (catch-up brings a failure again once the workflow is known).
#[test]
fn a_failure_or_cancellation_of_an_unknown_workflow_is_not_held() {
    let wf = chain(2, 3);
    let id = wf.id();
    let mut mm = with_operators(2, 1);
    assert!(mm
        .handle(0, Event::WorkflowFailed { workflow: id })
        .is_empty());
    assert!(mm
        .handle(0, Event::CancelRequested { workflow: id })
        .is_empty());
    let (_, d) = submit(&mut mm, 1, &wf);
    assert_eq!(assignments(&d).len(), 1, "it runs: {d:?}");
}

/// Failed elsewhere while this matchmaker is active for it: its attempt is called back, and a
/// later sequence of the same stream no longer waits for it.
#[test]
fn a_stream_goes_on_past_a_sequence_another_matchmaker_failed() {
    let mut mm = with_operators(2, 1);
    let mk = |seq: u64| block("blocks", seq, 1);
    let (id1, d1) = submit(&mut mm, 0, &mk(1));
    let (id2, d2) = submit(&mut mm, 0, &mk(2));
    let a1 = assignments(&d1).remove(0);
    let a2 = assignments(&d2).remove(0);
    let d = mm.handle(5, Event::WorkflowFailed { workflow: id1 });
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::Cancel { workflow, attempt, .. }
            if *workflow == id1 && *attempt == a1.attempt)),
        "its attempt is called back: {d:?}"
    );
    assert!(
        !d.iter()
            .any(|x| matches!(x, Decision::WorkflowFailed { .. })),
        "the failure was announced by the one that decided it: {d:?}"
    );
    let d = mm.handle(10, result_for(&a2, &keypair_of(&a2, 2), 0, 10, true));
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::WorkflowCompleted { workflow, .. } if *workflow == id2)),
        "sequence 2 finalizes: {d:?}"
    );
}

/// A requester's cancellation fails the workflow where it is active: its attempts are called
/// back and the failure says why. A standby leaves it to the active one.
#[test]
fn a_cancellation_fails_the_workflow_where_it_is_active_only() {
    let wf = chain(3, 3);
    let id = wf.id();
    let (mut active, mut standby, _ka, _kb, d) = pair_deciding(&wf);
    assert!(standby
        .handle(1, Event::CancelRequested { workflow: id })
        .is_empty());
    let a0 = assignments(&d).remove(0);
    let d = active.handle(2, Event::CancelRequested { workflow: id });
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::Cancel { workflow, attempt, .. }
            if *workflow == id && *attempt == a0.attempt)),
        "its attempt is called back: {d:?}"
    );
    let reasons: Vec<String> = d
        .iter()
        .filter_map(|x| match x {
            Decision::WorkflowFailed { workflow, reason } if *workflow == id => {
                Some(reason.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec!["cancelled by its requester".to_owned()]);
    assert!(
        active
            .handle(3, Event::CancelRequested { workflow: id })
            .is_empty(),
        "a second cancellation changes nothing"
    );
}
