//! Property tests: random DAGs, operators, faults and matchmaker failover, run through the
//! seeded simulation, which checks after every step that no operator is oversubscribed, no task
//! is assigned before its dependencies are accepted, no task is accepted twice, a stream's
//! earlier sequence is never passed over under contention nor finalized later.

use crate::common::replay_across_snapshot;
use proofmesh_matchmaker::sim::{sim_task, with_ordering, Faults, Sim, SimConfig, SimWorkflow};
use proofmesh_matchmaker::Matchmaker;
use proofmesh_protocol::Workflow;
use proptest::prelude::*;

fn arb_workflow(max_tasks: usize) -> impl Strategy<Value = SimWorkflow> {
    (1..=max_tasks)
        .prop_flat_map(|n| {
            (
                Just(n),
                proptest::collection::vec(
                    (proptest::collection::vec(any::<u32>(), 0..3), 1u64..20),
                    n,
                ),
                0u64..40,
            )
        })
        .prop_map(|(n, specs, submit)| {
            let mut tasks = Vec::with_capacity(n);
            let mut durations = Vec::with_capacity(n);
            for (i, (deps, dur)) in specs.into_iter().enumerate() {
                let mut deps: Vec<u32> = if i == 0 {
                    vec![]
                } else {
                    deps.into_iter().map(|d| d % i as u32).collect()
                };
                deps.sort_unstable();
                deps.dedup();
                tasks.push(sim_task(format!("t{i}"), "work", deps, dur, 6));
                durations.push(dur);
            }
            let workflow = Workflow {
                name: format!("w{submit}-{n}"),
                ordering: None,
                deadline_ms: 0,
                tasks,
            };
            SimWorkflow {
                workflow,
                durations,
                submit_at_ms: submit,
            }
        })
}

fn scenario() -> impl Strategy<Value = (SimConfig, Vec<SimWorkflow>)> {
    (
        any::<u64>(),
        1usize..6,
        proptest::collection::vec(1u32..4, 1..4),
        proptest::collection::vec((arb_workflow(30), proptest::option::of(0u64..4)), 1..4),
        0.0f64..0.3,
        1usize..3,
        proptest::option::of(0u64..80),
    )
        .prop_map(|(seed, operators, gpu_mix, wfs, rate, mms, kill)| {
            let mut cfg = SimConfig::new(operators, seed);
            cfg.gpu_mix = gpu_mix;
            cfg.matchmakers = mms;
            cfg.faults = Faults {
                per_attempt: rate,
                downtime_ms: 50,
                kill_matchmaker_at_ms: kill,
            };
            cfg.matchmaker.accept_timeout_ms = 5;
            cfg.max_time_ms = 600_000;
            let wfs = wfs
                .into_iter()
                .enumerate()
                .map(|(i, (mut w, seq))| {
                    // Distinct names keep ids distinct.
                    w.workflow.name = format!("{}-{i}", w.workflow.name);
                    match seq {
                        Some(s) => with_ordering(w, "stream", s * 10 + i as u64),
                        None => w,
                    }
                })
                .collect();
            (cfg, wfs)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_completable_workflow_completes_with_all_invariants(
        (cfg, wfs) in scenario(),
        cut_permille in 0usize..=1000,
    ) {
        let n = wfs.len();
        let mm0 = cfg.matchmakers;
        let (r, sim) = Sim::new(cfg, wfs).run();
        prop_assert!(r.violations.is_empty(), "violations: {:?}", r.violations);
        prop_assert_eq!(r.completed.len(), n, "{} {:?}", r.line(), r.failure_reasons);
        prop_assert_eq!(r.lost, 0);
        // Replay determinism for every matchmaker's log (dead ones included).
        for m in 0..mm0 {
            let (replayed, _) = Matchmaker::replay(sim.matchmaker_config(m), Sim::checker(), sim.logs()[m].to_vec());
            prop_assert!(replayed == *sim.matchmakers()[m], "replay of matchmaker {} differs", m);
            // And from a snapshot taken anywhere in it, with the events after.
            let log = sim.logs()[m];
            let cut = log.len() * cut_permille / 1000;
            let (restored, _) =
                replay_across_snapshot(sim.matchmaker_config(m), Sim::checker, log, cut);
            prop_assert!(restored == replayed, "matchmaker {} restored at {} of {} differs", m, cut, log.len());
        }
    }
}
