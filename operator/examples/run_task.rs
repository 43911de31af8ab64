//! Run one command as an operator task on this machine and show what it saw, e.g. that a task
//! sees only its leased GPU:
//!
//! `cargo run -p proofmesh-operator --example run_task -- --gpus 0 [--timeout-ms 60000] [-- CMD ARGS...]`
//!
//! The default command writes its `CUDA_VISIBLE_DEVICES` / `NVIDIA_VISIBLE_DEVICES` to the
//! output and, where `nvidia-smi` exists, the index, name and UUID of exactly those devices
//! (`nvidia-smi -i $CUDA_VISIBLE_DEVICES`). The GPUs are leased from the discovered capacity, so
//! an unknown index is refused exactly as for a real task.

use anyhow::{bail, Context};
use proofmesh_operator::{
    discover, CancellationToken, LeaseManager, LeaseRequest, Operator, OperatorConfig, Outcome,
    ProgramSpec, TaskSpec,
};
use proofmesh_protocol::{ContentId, Keypair, Program, Resources};
use std::time::Duration;

const DEFAULT_CMD: &str = "echo \"CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES\" \
    | tee \"$PROOFMESH_OUTPUT\"; if command -v nvidia-smi >/dev/null && [ -n \"$CUDA_VISIBLE_DEVICES\" ]; then \
    nvidia-smi -i \"$CUDA_VISIBLE_DEVICES\" --query-gpu=index,name,uuid --format=csv,noheader | tee -a \"$PROOFMESH_OUTPUT\"; fi";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut gpus, mut timeout_ms, mut argv) = (Vec::new(), 60_000u64, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--gpus" => {
                let list = args.next().context("--gpus needs a list like 0,1")?;
                gpus = list.split(',').filter(|s| !s.is_empty()).map(str::parse).collect::<Result<_, _>>().context("--gpus")?;
            }
            "--timeout-ms" => timeout_ms = args.next().context("--timeout-ms needs a value")?.parse()?,
            "--" => argv = args.by_ref().collect(),
            other => bail!("unknown argument {other:?}; usage: run_task [--gpus 0,1] [--timeout-ms N] [-- CMD ARGS...]"),
        }
    }
    if argv.is_empty() {
        argv = vec!["/bin/sh".into(), "-c".into(), DEFAULT_CMD.into()];
    }
    let dir = tempfile::tempdir()?;
    let config = OperatorConfig::new(dir.path().join("work")).with_program(
        "probe",
        "1",
        ProgramSpec::Command(argv),
    );
    let discovery = tokio::task::spawn_blocking({
        let (r, w) = (config.resources.clone(), config.work_dir.clone());
        move || discover(&r, &w)
    })
    .await?;
    eprintln!(
        "discovered: {}",
        serde_json::to_string(&discovery.capacity)?
    );
    let operator = Operator::with_discovery(config, Keypair::generate(), None, discovery)?;
    let leases: &LeaseManager = operator.leases();
    let resources = Resources {
        cpu: 1,
        gpu: gpus.len() as u32,
        ..Resources::default()
    };
    let lease = leases
        .acquire(&LeaseRequest::new(gpus, resources))
        .context("lease refused")?;
    let spec = TaskSpec {
        workflow: ContentId::of_bytes(b"run_task example"),
        task: 0,
        name: "probe[0]".into(),
        attempt: 1,
        program: Program {
            name: "probe".into(),
            version: "1".into(),
        },
        args: vec![],
        inputs: vec![],
        timeout: Duration::from_millis(timeout_ms),
    };
    let report = operator.run(spec, lease, CancellationToken::new()).await;
    eprintln!("stdout tail:\n{}", report.diagnostics.stdout_tail);
    eprintln!("stderr tail:\n{}", report.diagnostics.stderr_tail);
    match report.outcome {
        Outcome::Completed(signed) => {
            signed.verify()?;
            let bytes = operator.executor().blobs().get(&signed.result.output)?;
            println!(
                "output {} ({} bytes), gpus {:?}:",
                signed.result.output,
                bytes.len(),
                signed.result.gpus
            );
            println!("{}", String::from_utf8_lossy(&bytes));
            Ok(())
        }
        Outcome::Failed(f) => bail!("task failed: {:?}", f.cause),
        Outcome::Cancelled => bail!("cancelled"),
    }
}
