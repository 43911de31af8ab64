//! `proofmesh result ID --out DIR`: download a completed workflow's final outputs (verified
//! against their blake3 ids) into DIR, one file per final task, plus `result.json`.

use super::rpc_args::{block_on, RpcArgs};
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `proofmesh result`.
#[derive(Args, Debug)]
pub struct ResultArgs {
    /// Workflow id (64 hex digits).
    pub id: String,
    /// Directory to write the outputs into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub rpc: RpcArgs,
}

/// A task name as a file name: `agg[3]` -> `agg_3_`.
pub fn file_stem(task_name: &str) -> String {
    task_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Run it.
pub fn run(args: ResultArgs) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let mut client = args.rpc.connect().await?;
        let info = client.result(&args.id).await?;
        match info.state.as_str() {
            "completed" => {}
            "failed" => bail!(
                "workflow {} failed: {}",
                args.id,
                info.reason.as_deref().unwrap_or("no reason given")
            ),
            other => bail!(
                "workflow {} is {other}, not completed yet: wait with `proofmesh status {}`",
                args.id,
                args.id
            ),
        }
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        for output in &info.outputs {
            let bytes = client
                .fetch_blob(&output.output)
                .await
                .with_context(|| format!("fetching output of {}", output.name))?;
            let path = args.out.join(format!("{}.out", file_stem(&output.name)));
            std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            println!(
                "task={} output={} bytes={} operator={} file={}",
                output.name,
                output.output,
                bytes.len(),
                output.operator,
                path.display()
            );
        }
        let json = serde_json::to_string_pretty(&info).context("encoding result.json")?;
        let path = args.out.join("result.json");
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        Ok(ExitCode::SUCCESS)
    })
}
