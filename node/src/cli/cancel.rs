//! `proofmesh cancel ID`: the requester withdraws a workflow. With chain flags (`--devnet DIR`
//! or `--eth-key FILE ...`) the key that paid the escrow signs the cancellation, and any node
//! may carry it; without, the node at `--rpc` must own the workflow (it was submitted to it as
//! a file). The active matchmaker fails the workflow as cancelled: its tasks stop, the work
//! accepted so far is paid and the rest of the escrow is released to the requester.
//! `--wait` follows the status until it says `failed`, sending the cancellation again every
//! few seconds meanwhile (one sent while the active matchmaker was dying is lost with it).

use super::chain_args::{ChainClient, ChainClientArgs};
use super::rpc_args::{block_on, RpcArgs};
use super::status::format_status;
use anyhow::{bail, Context};
use clap::Args;
use proofmesh_chain::{evidence, workflow_key};
use proofmesh_protocol::WorkflowId;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often `--wait` sends the cancellation again while the workflow still runs.
const RESEND_EVERY: Duration = Duration::from_secs(5);

/// Arguments of `proofmesh cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// Workflow id (64 hex digits).
    pub id: String,
    /// Wait until the workflow's status says it failed (at most this many seconds).
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "60")]
    pub wait: Option<u64>,
    #[command(flatten)]
    pub rpc: RpcArgs,
    /// With a chain: the requester's key signs the cancellation.
    #[command(flatten)]
    pub chain: ChainClientArgs,
}

/// Run it.
pub fn run(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let id: WorkflowId = args
        .id
        .parse()
        .with_context(|| format!("workflow id {:?}", args.id))?;
    let signature = match args.chain.resolve(true)? {
        None => None,
        Some(ChainClient { params, .. }) => Some(evidence::sign_cancel(
            &params.signer,
            workflow_key(&id),
            params.chain_id,
            params.contract,
        )?),
    };
    block_on(async move {
        let mut client = args.rpc.connect().await?;
        client.cancel(&id.to_hex(), signature.as_deref()).await?;
        println!("id={} cancel=sent", id.to_hex());
        let Some(wait) = args.wait else {
            return Ok(ExitCode::SUCCESS);
        };
        let deadline = Instant::now() + Duration::from_secs(wait);
        let mut sent = Instant::now();
        loop {
            let status = client.status(&id.to_hex()).await?;
            match status.state.as_str() {
                "failed" => {
                    print!("{}", format_status(&status));
                    return Ok(ExitCode::SUCCESS);
                }
                "completed" => {
                    print!("{}", format_status(&status));
                    bail!(
                        "workflow {} completed before the cancellation took effect",
                        id.to_hex()
                    );
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                bail!(
                    "workflow {} still {} after {wait} s: no active matchmaker failed it yet",
                    id.to_hex(),
                    status.state
                );
            }
            if sent.elapsed() >= RESEND_EVERY {
                // Refused now only if it ended meanwhile: the next status read says how.
                let _ = client.cancel(&id.to_hex(), signature.as_deref()).await;
                sent = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
