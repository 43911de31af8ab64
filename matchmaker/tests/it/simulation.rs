use crate::common;
use proofmesh_matchmaker::sim::{zk_pipeline, Faults, Sim, SimConfig, SimWorkflow};
use proofmesh_matchmaker::{Decision, Matchmaker};

/// `n` pipelines of `leaves` leaves named `{name}-{k}`, submitted `every_ms` apart.
fn staggered(name: &str, n: u64, leaves: u32, every_ms: u64) -> Vec<SimWorkflow> {
    (0..n)
        .map(|k| {
            let mut w = zk_pipeline(leaves, 10, 5, 5, 5);
            w.workflow.name = format!("{name}-{k}");
            w.submit_at_ms = k * every_ms;
            w
        })
        .collect()
}

/// Two matchmakers, the first killed at `kill_at_ms`, and operators of two GPUs each, with
/// the standard faults at `per_attempt`.
fn two_matchmakers_with_faults(
    operators: usize,
    seed: u64,
    per_attempt: f64,
    kill_at_ms: u64,
) -> SimConfig {
    let mut cfg = SimConfig::new(operators, seed);
    cfg.gpu_mix = vec![2];
    cfg.matchmakers = 2;
    cfg.faults = Faults::standard();
    cfg.faults.per_attempt = per_attempt;
    cfg.faults.kill_matchmaker_at_ms = Some(kill_at_ms);
    cfg
}

#[test]
fn pipeline_without_faults_is_within_two_percent_of_ideal() {
    let cfg = SimConfig::new(32, 7);
    let (r, _) = Sim::new(cfg, vec![zk_pipeline(512, 10, 5, 5, 5)]).run();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.completed.len(), 1);
    assert_eq!(r.lost, 0);
    assert_eq!(r.reassigned, 0);
    assert!(r.efficiency >= 0.98, "{}", r.line());
}

#[test]
fn pipeline_with_faults_completes_and_loses_nothing() {
    for seed in [1, 7, 42] {
        let mut cfg = SimConfig::new(32, seed);
        cfg.faults = Faults::standard();
        let (r, _) = Sim::new(cfg, vec![zk_pipeline(512, 10, 5, 5, 5)]).run();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.completed.len(), 1, "seed {seed}: {}", r.line());
        assert_eq!(r.lost, 0);
        assert!(
            r.faults > 0 && r.reassigned > 0,
            "faults were injected: {}",
            r.line()
        );
    }
}

#[test]
fn pipeline_survives_the_active_matchmaker_dying() {
    let mut cfg = SimConfig::new(16, 3);
    cfg.gpu_mix = vec![4];
    cfg.matchmakers = 3;
    cfg.faults.kill_matchmaker_at_ms = Some(40);
    let (r, sim) = Sim::new(cfg, vec![zk_pipeline(128, 10, 5, 5, 5)]).run();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.completed.len(), 1, "{}", r.line());
    assert_eq!(r.lost, 0);
    // Matchmaker 0 is dead; at most one accepted result per task is checked by the simulation.
    assert_eq!(sim.matchmakers().len(), 3);
}

#[test]
fn finished_attempts_and_workflows_leave_no_timers_behind() {
    // Every task's deadline lies long after its result: a timer kept until then would fire as
    // a no-op, and a busy matchmaker held ~100k of them (and wrote them into its snapshots).
    let cfg = SimConfig::new(8, 3);
    let mut workflows = staggered("no-timers", 4, 16, 50);
    for w in &mut workflows {
        w.workflow.deadline_ms = 600_000;
    }
    let (r, sim) = Sim::new(cfg, workflows).run();
    assert_eq!(r.completed.len(), 4, "{}", r.line());
    let mm = sim.matchmakers()[0];
    assert_eq!(mm.inflight_len(), 0);
    assert_eq!(mm.timers_len(), 0, "timers of finished work are kept");
}

#[test]
fn finished_workflows_leave_and_their_slots_are_reused_without_harm() {
    // 60 small workflows, one every 40 ms, under faults and with a matchmaker death: each
    // leaves the engine 100 ms after it finishes (the simulation checks every invariant after
    // every step), so the engine holds a few at a time instead of all 60.
    let mut cfg = two_matchmakers_with_faults(6, 9, 0.1, 900);
    cfg.matchmaker.retire_after_ms = 100;
    let (r, sim) = Sim::new(cfg, staggered("leaves", 60, 4, 40)).run();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.completed.len(), 60, "{}", r.line());
    assert_eq!(r.lost, 0);
    for (m, mm) in sim.matchmakers().into_iter().enumerate() {
        let (held, slots) = mm.workflows_held();
        assert!(slots < 30, "matchmaker {m}: {slots} slots for 60 workflows");
        assert!(held <= slots);
        // Replays, and snapshots cut anywhere, agree with the live engine.
        let log = sim.logs()[m];
        let (replayed, _) =
            Matchmaker::replay(sim.matchmaker_config(m), Sim::checker(), log.to_vec());
        assert!(replayed == *mm, "matchmaker {m}: the replay differs");
        for cut in [log.len() / 4, log.len() / 2, 3 * log.len() / 4] {
            let (restored, _) =
                common::replay_across_snapshot(sim.matchmaker_config(m), Sim::checker, log, cut);
            assert!(
                restored == *mm,
                "matchmaker {m}, cut at {cut}: the states differ"
            );
        }
    }
}

#[test]
fn a_snapshot_and_the_events_after_it_rebuild_what_the_whole_log_does() {
    // Faults and a matchmaker death: snapshots cut through retries, evidence timers, held
    // results and a takeover.
    let cfg = two_matchmakers_with_faults(8, 5, 0.2, 60);
    let (r, sim) = Sim::new(cfg, vec![zk_pipeline(32, 10, 5, 5, 5)]).run();
    assert_eq!(r.completed.len(), 1, "{}", r.line());
    for m in 0..sim.logs().len() {
        let log = sim.logs()[m].to_vec();
        let mut live = Matchmaker::with_checker(sim.matchmaker_config(m), Sim::checker());
        let mut decided: Vec<Vec<Decision>> = Vec::new();
        for (now, event) in &log {
            decided.push(live.handle(*now, event.clone()));
        }
        assert!(
            live == *sim.matchmakers()[m],
            "the log's replay differs from the live one"
        );
        for cut in [
            0,
            1,
            log.len() / 7,
            log.len() / 3,
            log.len() / 2,
            log.len() - 1,
            log.len(),
        ] {
            let (restored, tail) =
                common::replay_across_snapshot(sim.matchmaker_config(m), Sim::checker, &log, cut);
            assert!(
                restored == live,
                "matchmaker {m}, cut at {cut}: the states differ"
            );
            let expected: Vec<Decision> = decided[cut..].concat();
            assert_eq!(
                tail, expected,
                "matchmaker {m}, cut at {cut}: the decisions differ"
            );
        }
    }
}

#[test]
fn replaying_the_event_log_rebuilds_identical_state_and_decisions() {
    let mut cfg = SimConfig::new(8, 11);
    cfg.gpu_mix = vec![2];
    cfg.faults = Faults::standard();
    cfg.faults.per_attempt = 0.2;
    let (r, sim) = Sim::new(cfg, vec![zk_pipeline(32, 10, 5, 5, 5)]).run();
    assert_eq!(r.completed.len(), 1);
    let log = sim.logs()[0].to_vec();
    let (a, da) = Matchmaker::replay(sim.matchmaker_config(0), Sim::checker(), log.clone());
    let (b, db) = Matchmaker::replay(sim.matchmaker_config(0), Sim::checker(), log.clone());
    assert!(
        a == *sim.matchmakers()[0],
        "replayed state differs from the live one"
    );
    assert!(a == b);
    assert_eq!(da, db);
    assert!(!da.is_empty());
    // The log survives serialization (what the node persists).
    let json = serde_json::to_string(&log).expect("events serialize");
    let back: Vec<(u64, proofmesh_matchmaker::Event)> =
        serde_json::from_str(&json).expect("events deserialize");
    let (c, dc) = Matchmaker::replay(sim.matchmaker_config(0), Sim::checker(), back);
    assert!(c == a);
    assert_eq!(dc, da);
}
