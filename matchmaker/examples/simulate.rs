//! Seeded simulation of the zkSync-shaped pipeline on simulated operators with mixed GPUs.
//!
//! `cargo run --release -p proofmesh-matchmaker --example simulate -- --operators 32 --tasks 1025 --seed 7 [--faults]`
//!
//! Other flags: `--gpus 8,16,16,24` (GPUs per operator, cycled), `--leaf-ms 10`, `--agg-ms 5`,
//! `--witness-ms 5`, `--final-ms 5`, `--matchmakers 1`, `--kill-matchmaker-at MS`,
//! `--fault-rate 0.05`. The last line is `key=value` pairs.

use proofmesh_matchmaker::sim::{zk_pipeline, Faults, Sim, SimConfig};

fn parse<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
}

fn run() -> Result<(), String> {
    let mut operators = 32usize;
    let mut tasks = 1025u32;
    let mut seed = 7u64;
    let mut faults = false;
    let mut gpus: Option<Vec<u32>> = None;
    let (mut leaf, mut agg, mut witness, mut fin) = (10u64, 5u64, 5u64, 5u64);
    let mut matchmakers = 1usize;
    let mut kill_at: Option<u64> = None;
    let mut rate: Option<f64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--operators" => operators = parse(&a, args.next())?,
            "--tasks" => tasks = parse(&a, args.next())?,
            "--seed" => seed = parse(&a, args.next())?,
            "--faults" => faults = true,
            "--gpus" => {
                let v: String = parse(&a, args.next())?;
                let mix = v
                    .split(',')
                    .map(|x| x.trim().parse::<u32>())
                    .collect::<Result<Vec<_>, _>>();
                gpus = Some(
                    mix.map_err(|_| format!("--gpus: expected a list like 8,16,24, got {v:?}"))?,
                );
            }
            "--leaf-ms" => leaf = parse(&a, args.next())?,
            "--agg-ms" => agg = parse(&a, args.next())?,
            "--witness-ms" => witness = parse(&a, args.next())?,
            "--final-ms" => fin = parse(&a, args.next())?,
            "--matchmakers" => matchmakers = parse(&a, args.next())?,
            "--kill-matchmaker-at" => kill_at = Some(parse(&a, args.next())?),
            "--fault-rate" => rate = Some(parse(&a, args.next())?),
            other => {
                return Err(format!(
                    "unknown flag {other}; see the doc comment of examples/simulate.rs"
                ))
            }
        }
    }
    if operators == 0 {
        return Err("--operators must be at least 1".into());
    }
    // tasks = 1 witness + L leaves + (L - 1) aggregations + 1 final.
    let leaves = (tasks.saturating_sub(1) / 2).max(1);
    let mut cfg = SimConfig::new(operators, seed);
    if let Some(g) = gpus {
        cfg.gpu_mix = g;
    }
    cfg.matchmakers = matchmakers.max(1);
    if faults {
        cfg.faults = Faults::standard();
    }
    if let Some(r) = rate {
        cfg.faults.per_attempt = r;
    }
    cfg.faults.kill_matchmaker_at_ms = kill_at;
    let slots: u32 = (0..operators)
        .map(|i| cfg.gpu_mix[i % cfg.gpu_mix.len()].max(1))
        .sum();
    let wf = zk_pipeline(leaves, leaf, agg, witness, fin);
    let n = wf.workflow.tasks.len();
    let started = std::time::Instant::now();
    let (report, _) = Sim::new(cfg, vec![wf]).run();
    for v in report.violations.iter().take(10) {
        eprintln!("violation: {v}");
    }
    println!(
        "operators={operators} gpu_slots={slots} tasks={n} seed={seed} faults={faults} wall_ms={} {}",
        started.elapsed().as_millis(),
        report.line()
    );
    if !report.violations.is_empty() {
        return Err(format!("{} invariant violations", report.violations.len()));
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
