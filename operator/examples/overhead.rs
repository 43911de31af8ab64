//! Per-task operator overhead: spawn, materialize inputs, hash output, sign, clean up.
//!
//! `cargo run --release -p proofmesh-operator --example overhead -- [--tasks N] [--prover PATH]
//! [--link-inputs true|false]`
//!
//! Three paths, each running a noop program N times sequentially with one 1 KiB input, timing
//! `Operator::run` end to end (the program does nothing, so all of it is overhead):
//! - `subprocess`: a fresh process per task. The noop program is this binary re-executed with
//!   `--as-noop` (a real compiled program that writes its output file and exits), or
//!   `PATH noop` with `--prover PATH` (proofmesh-prover's noop).
//! - `worker`: a persistent worker (this binary with `--as-worker`, line protocol).
//! - `builtin`: the in-process `noop`.
//!
//! `--link-inputs` forces hard-linked (or copied) inputs; the default is the store's (link
//! unless running as root). Prints P50/P99/mean per path and a final `key=value` line.

use anyhow::{bail, Context};
use proofmesh_operator::discovery::{Discovery, GpuSource};
use proofmesh_operator::worker::serve_stdio;
use proofmesh_operator::{
    BlobStore, CancellationToken, FsBlobStore, LeaseRequest, Operator, OperatorConfig, Outcome,
    ProgramSpec, TaskSpec,
};
use proofmesh_protocol::messages::Capacity;
use proofmesh_protocol::{ContentId, Keypair, Program, Resources};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--as-noop") => {
            let out = std::env::var("PROOFMESH_OUTPUT").context("PROOFMESH_OUTPUT unset")?;
            std::fs::write(out, b"")?;
            Ok(())
        }
        Some("--as-worker") => Ok(serve_stdio(|req| {
            std::fs::write(&req.output, b"").map_err(|e| e.to_string())
        })?),
        _ => tokio::runtime::Runtime::new()?.block_on(bench(args)),
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    Stats {
        p50: pick(0.5),
        p99: pick(0.99),
        mean,
    }
}

async fn bench(args: Vec<String>) -> anyhow::Result<()> {
    let (mut tasks, mut prover, mut link) = (2000usize, None, None);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--tasks" => tasks = it.next().context("--tasks N")?.parse()?,
            "--prover" => prover = Some(it.next().context("--prover PATH")?),
            "--link-inputs" => link = Some(it.next().context("--link-inputs true|false")?.parse()?),
            other => bail!("unknown argument {other:?}"),
        }
    }
    let me = std::env::current_exe()?.display().to_string();
    let subprocess = match prover {
        Some(p) => vec![p, "noop".into()],
        None => vec![me.clone(), "--as-noop".into()],
    };
    let dir = tempfile::tempdir()?;
    let config = OperatorConfig::new(dir.path().join("work"))
        .with_program(
            "noop-subprocess",
            "1",
            ProgramSpec::Command(subprocess.clone()),
        )
        .with_program(
            "noop-worker",
            "1",
            ProgramSpec::Worker {
                worker: vec![me, "--as-worker".into()],
            },
        )
        .with_program(
            "noop",
            "1",
            ProgramSpec::Builtin {
                builtin: "noop".into(),
            },
        );
    let mut blobs = FsBlobStore::open(dir.path().join("blobs"))?;
    if let Some(link) = link {
        blobs = blobs.with_link_inputs(link);
    }
    let link = blobs.links_inputs();
    let blobs = Arc::new(blobs);
    let input = blobs.put(&[7u8; 1024])?;
    let store: Arc<dyn BlobStore> = blobs;
    let capacity = Capacity {
        cpu: 2,
        memory_mb: 4096,
        disk_mb: 1024,
        gpus: vec![],
    };
    let discovery = Discovery {
        capacity,
        gpu_source: GpuSource::Disabled,
        notes: vec![],
    };
    let operator = Operator::with_discovery(config, Keypair::generate(), Some(store), discovery)?;
    println!(
        "machine: {} cores; {tasks} sequential tasks per path; inputs {}; work dir {}; subprocess program: {subprocess:?}",
        std::thread::available_parallelism()?,
        if link { "hard-linked" } else { "copied" },
        dir.path().display()
    );
    let mut summary = Vec::new();
    for (label, program) in [
        ("subprocess", "noop-subprocess"),
        ("worker", "noop-worker"),
        ("builtin", "noop"),
    ] {
        let run_one = |i: usize| {
            let spec = TaskSpec {
                workflow: ContentId::of_bytes(b"overhead bench"),
                task: i as u32,
                name: format!("noop[{i}]"),
                attempt: 1,
                program: Program {
                    name: program.into(),
                    version: "1".into(),
                },
                args: vec![],
                inputs: vec![input],
                timeout: Duration::from_secs(30),
            };
            let lease = operator.leases().acquire(&LeaseRequest::new(
                vec![],
                Resources {
                    cpu: 1,
                    ..Resources::default()
                },
            ));
            (spec, lease)
        };
        // Warm up (first worker spawn, page cache).
        for i in 0..20 {
            let (spec, lease) = run_one(i);
            operator.run(spec, lease?, CancellationToken::new()).await;
        }
        let mut samples = Vec::with_capacity(tasks);
        let mut setup = Vec::with_capacity(tasks);
        let mut collect = Vec::with_capacity(tasks);
        let wall = Instant::now();
        for i in 0..tasks {
            let (spec, lease) = run_one(i);
            let lease = lease?;
            let t = Instant::now();
            let report = operator.run(spec, lease, CancellationToken::new()).await;
            samples.push(t.elapsed());
            if !matches!(report.outcome, Outcome::Completed(_)) {
                bail!("{label}: task {i} did not complete: {:?}", report.outcome);
            }
            setup.push(report.diagnostics.timings.setup);
            collect.push(report.diagnostics.timings.collect);
        }
        let per_s = tasks as f64 / wall.elapsed().as_secs_f64();
        let (s, su, co) = (stats(samples), stats(setup), stats(collect));
        println!(
            "{label:>10}: p50 {:>8.1} us  p99 {:>8.1} us  mean {:>8.1} us  ({per_s:.0} tasks/s; p50 setup {:.1} us, collect+sign {:.1} us)",
            us(s.p50), us(s.p99), us(s.mean), us(su.p50), us(co.p50)
        );
        summary.push(format!(
            "{label}_p50_us={:.1} {label}_p99_us={:.1}",
            us(s.p50),
            us(s.p99)
        ));
    }
    operator.shutdown().await;
    println!("{}", summary.join(" "));
    Ok(())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
