//! Operators that queue: CPU tasks assigned beyond what fits now wait on the machine.

use crate::common::*;
use proofmesh_matchmaker::sim::sim_task;
use proofmesh_matchmaker::{Decision, Event, Matchmaker, SlashEvidence};
use proofmesh_protocol::{Resources, Workflow};

fn cpu_tasks(n: u32, gpu: u32) -> Workflow {
    Workflow {
        name: "flat".into(),
        ordering: None,
        deadline_ms: 0,
        tasks: (0..n)
            .map(|i| {
                let mut t = sim_task(format!("t{i}"), "work", vec![], 100, 3);
                t.resources = Resources {
                    cpu: 1,
                    memory_mb: 100,
                    gpu,
                    vram_mb: 0,
                    disk_mb: 0,
                };
                t
            })
            .collect(),
    }
}

/// Operators 1..=n with 4 cores (no GPU, or one) and a queue of `queue`.
fn queueing(n: u8, gpus: u32, queue: u32) -> Matchmaker {
    let mut mm = Matchmaker::new(config());
    for i in 1..=n {
        let mut a = advert(&key(i), gpus, 24_576);
        a.capacity.cpu = 4;
        a.queue = queue;
        mm.handle(0, Event::OperatorAdvert(a));
    }
    mm
}

#[test]
fn cpu_tasks_fill_the_queue_and_start_in_this_view_as_running_ones_finish() {
    let mut mm = queueing(1, 0, 2);
    let (_, d) = submit(&mut mm, 0, &cpu_tasks(10, 0));
    let a = assignments(&d);
    // 4 cores run 4 now, 2 more wait in the operator's queue, 4 stay with the matchmaker.
    assert_eq!(a.len(), 6, "{d:?}");
    assert_eq!(mm.ready_len(), 4);
    mm.check_invariants().expect("invariants");
    // The queued ones' deadlines count from when those ahead of them must be done.
    let first_deadline = a[0].deadline_ms;
    assert!(a[..4]
        .iter()
        .all(|x| x.deadline_ms == first_deadline && !x.queued));
    assert!(a[4..].iter().all(|x| x.queued && x.gpus.is_empty()));
    assert!(
        a[4..].iter().all(|x| x.deadline_ms > first_deadline),
        "queued deadlines {:?} not after {first_deadline}",
        a[4..].iter().map(|x| x.deadline_ms).collect::<Vec<_>>()
    );
    for x in &a {
        mm.handle(1, accept(x, 1));
    }
    // One finishes: a queued task takes its core here too, and one more joins the queue.
    let k = key(1);
    let d = mm.handle(100, result_for(&a[0], &k, 1, 100, true));
    let next = assignments(&d);
    assert_eq!(next.len(), 1, "{d:?}");
    assert!(next[0].deadline_ms > next[0].accept_by_ms + 300);
    assert_eq!(mm.ready_len(), 3);
    mm.check_invariants().expect("invariants");
}

#[test]
fn an_operator_with_room_now_wins_over_one_that_would_queue() {
    let mut mm = queueing(2, 0, 8);
    // 8 tasks: both operators' cores fill (4 + 4) before anything is queued.
    let (_, d) = submit(&mut mm, 0, &cpu_tasks(8, 0));
    let a = assignments(&d);
    assert_eq!(a.len(), 8);
    for op in [key(1).public(), key(2).public()] {
        let on = a.iter().filter(|x| x.operator == op).count();
        assert_eq!(
            on, 4,
            "operator got {on} of 8 while the other had free cores"
        );
    }
    mm.check_invariants().expect("invariants");
}

#[test]
fn gpu_tasks_are_never_queued() {
    let mut mm = queueing(1, 1, 4);
    let (_, d) = submit(&mut mm, 0, &cpu_tasks(3, 1));
    // One GPU: one runs, the others wait with the matchmaker.
    assert_eq!(assignments(&d).len(), 1, "{d:?}");
    assert_eq!(mm.ready_len(), 2);
    mm.check_invariants().expect("invariants");
}

#[test]
fn queued_tasks_of_an_operator_that_goes_down_move_to_another() {
    let mut mm = queueing(2, 0, 2);
    let (_, d) = submit(&mut mm, 0, &cpu_tasks(12, 0));
    let a = assignments(&d);
    assert_eq!(a.len(), 12, "4 + 2 on each of two operators");
    for x in &a {
        mm.handle(1, accept(x, 1));
    }
    // Operator 1 falls silent (presumed down 300 ms after its last word); operator 2 keeps
    // heartbeating and gets all of 1's tasks as its own finish (before their 400 ms deadline).
    let mut t = 50;
    let mut moved = 0;
    while t <= 350 {
        let d = mm.handle(t, heartbeat(&key(2), t));
        moved += assignments(&d)
            .iter()
            .filter(|x| x.operator == key(2).public() && x.attempt == 2)
            .count();
        t += 50;
    }
    mm.check_invariants().expect("invariants");
    // Operator 2 holds at most 6 (4 cores + 2 queued); its own 6 never finished, so none of
    // operator 1's six could be placed yet: they wait with the matchmaker, not lost.
    assert_eq!(moved, 0);
    assert_eq!(mm.ready_len(), 6);
    let d = (0..6)
        .filter(|i| a[*i].operator == key(2).public())
        .chain((6..12).filter(|i| a[*i].operator == key(2).public()))
        .map(|i| mm.handle(t, result_for(&a[i], &key(2), 1, t, true)))
        .collect::<Vec<_>>();
    let reassigned: Vec<_> = d.iter().flat_map(|d| assignments(d)).collect();
    assert_eq!(reassigned.len(), 6, "{reassigned:?}");
    assert!(reassigned.iter().all(|x| x.attempt == 2));
    mm.check_invariants().expect("invariants");
}

#[test]
fn a_dead_operator_is_slashed_for_what_it_ran_not_for_what_waited_in_its_queue() {
    let mut mm = queueing(2, 0, 2);
    let (_, d) = submit(&mut mm, 0, &cpu_tasks(12, 0));
    let a = assignments(&d);
    for x in &a {
        mm.handle(1, accept(x, 1));
    }
    let victim = key(1).public();
    let running = a
        .iter()
        .filter(|x| x.operator == victim && !x.queued)
        .count();
    assert_eq!(running, 4);
    assert_eq!(a.iter().filter(|x| x.operator == victim).count(), 6);
    mm.handle(2, Event::OperatorDown(victim));
    let latest = a.iter().map(|x| x.deadline_ms).max().unwrap_or(0);
    let slashed: Vec<_> = mm
        .tick(latest)
        .into_iter()
        .filter_map(|x| match x {
            Decision::Slash(SlashEvidence::MissedDeadline { acceptance, .. })
                if acceptance.operator == victim =>
            {
                Some(acceptance.task)
            }
            _ => None,
        })
        .collect();
    let mut want: Vec<u32> = a
        .iter()
        .filter(|x| x.operator == victim && !x.queued)
        .map(|x| x.task)
        .collect();
    want.sort();
    let mut got = slashed;
    got.sort();
    assert_eq!(got, want, "slashed for its four running attempts only");
}

#[test]
fn an_advertised_task_limit_caps_what_runs_and_the_rest_queues() {
    let mut mm = Matchmaker::new(config());
    let mut ad = advert(&key(1), 0, 0);
    ad.capacity.cpu = 4;
    ad.queue = 2;
    ad.max_tasks = 1;
    mm.handle(0, Event::OperatorAdvert(ad));
    let (_, d) = submit(&mut mm, 0, &cpu_tasks(5, 0));
    let a = assignments(&d);
    // Four free cores but one task at a time: one runs, two queue, two wait here.
    assert_eq!(a.len(), 3, "{d:?}");
    assert_eq!(a.iter().filter(|x| !x.queued).count(), 1);
    assert!(a.iter().filter(|x| x.queued).all(|x| x.gpus.is_empty()));
    mm.check_invariants().expect("invariants");
    for x in &a {
        mm.handle(1, accept(x, 1));
    }
    let d = mm.handle(50, result_for(&a[0], &key(1), 1, 50, true));
    assert_eq!(assignments(&d).len(), 1, "one place freed in the queue");
    mm.check_invariants().expect("invariants");
}

#[test]
fn a_result_frees_its_operators_place_before_it_is_judged_and_only_once() {
    // One operator, 4 cores, no queue: of 7 tasks 4 run and 3 wait with the matchmaker.
    let mut mm = queueing(1, 0, 0);
    let (_, d) = submit(&mut mm, 0, &cpu_tasks(7, 0));
    let a = assignments(&d);
    assert_eq!(a.len(), 4, "{d:?}");
    let arrived = |x: &proofmesh_protocol::messages::Assignment, from: u8| Event::ResultArrived {
        workflow: x.workflow,
        task: x.task,
        attempt: x.attempt,
        operator: key(from).public(),
    };
    // Another operator's word frees nothing.
    assert!(assignments(&mm.handle(5, arrived(&a[0], 9))).is_empty());
    // The holder's result is in, not yet judged: its core takes the next task meanwhile.
    let next = assignments(&mm.handle(10, arrived(&a[0], 1)));
    assert_eq!(next.len(), 1, "the freed core is used at once");
    assert!(!next[0].queued);
    mm.check_invariants().expect("invariants");
    // Judged: accepted, and the place it held is not given back a second time.
    let d = mm.handle(12, result_for(&a[0], &key(1), 1, 10, true));
    assert!(d.iter().any(|x| matches!(x, Decision::Verdict(_))), "{d:?}");
    assert!(assignments(&d).is_empty(), "freed twice: {d:?}");
    mm.check_invariants().expect("invariants");
    // A result that fails its check after arriving: the task goes back to be placed again
    // (on the core its own arrival freed), still without freeing anything twice.
    let next2 = assignments(&mm.handle(20, arrived(&a[1], 1)));
    assert_eq!(next2.len(), 1);
    let d = mm.handle(22, forged_result(&a[1], &key(1)));
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::Slash(SlashEvidence::InvalidResult { .. }))),
        "{d:?}"
    );
    assert!(assignments(&d).is_empty(), "freed twice: {d:?}");
    assert_eq!(
        mm.ready_len(),
        2,
        "the rejected task waits to be placed again"
    );
    mm.check_invariants().expect("invariants");
}
