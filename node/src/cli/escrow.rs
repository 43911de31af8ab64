//! The money side for a requester or an operator, straight from the market contract:
//! `proofmesh escrow ID` prints a workflow's escrow as one `key=value` line (`--refund` takes
//! back what is left once its deadline passed), and `proofmesh claim` withdraws what the market
//! credited to a key: an operator's pay, or what a settler released back to a requester.

use super::chain_args::{ChainClient, ChainClientArgs};
use super::rpc_args::block_on;
use anyhow::{bail, Context};
use clap::Args;
use proofmesh_chain::{workflow_key, MarketClient, U256};
use proofmesh_protocol::WorkflowId;
use std::process::ExitCode;

/// Arguments of `proofmesh escrow`.
#[derive(Args, Debug)]
pub struct EscrowArgs {
    /// Workflow id (64 hex digits).
    pub id: String,
    /// Take back what is left in the escrow (the requester's key; only after its deadline, and
    /// only if no settler released it already).
    #[arg(long)]
    pub refund: bool,
    #[command(flatten)]
    pub chain: ChainClientArgs,
}

/// Arguments of `proofmesh claim`.
#[derive(Args, Debug)]
pub struct ClaimArgs {
    /// The key to withdraw for is `--eth-key` (or the devnet's requester key with `--devnet`).
    #[command(flatten)]
    pub chain: ChainClientArgs,
}

/// Connects with the given chain flags (the key signs when `need_key`).
async fn connect(chain: &ChainClientArgs, need_key: bool) -> anyhow::Result<MarketClient> {
    let Some(ChainClient { params, .. }) = chain.resolve(need_key)? else {
        bail!("no chain given: pass --devnet DIR, or --chain-rpc URL --contract ADDRESS");
    };
    proofmesh_node::chain::setup::connect(&params)
        .await
        .context("connecting to the chain")
}

/// The escrow's line.
fn format_escrow(
    id: &WorkflowId,
    e: &proofmesh_chain::bindings::ProofMarket::Escrow,
    claimable: U256,
) -> String {
    format!(
        "id={} requester={:#x} settler={:#x} held_wei={} paid_wei={} closed={} released={} proof_accepted={} deadline={} requester_claimable_wei={}",
        id.to_hex(),
        e.requester,
        e.settler,
        e.held,
        e.paid,
        e.refunded,
        e.released,
        e.proofAccepted,
        e.deadline,
        claimable
    )
}

/// Run `proofmesh escrow`.
pub fn run_escrow(args: EscrowArgs) -> anyhow::Result<ExitCode> {
    let id: WorkflowId = args
        .id
        .parse()
        .with_context(|| format!("workflow id {:?}", args.id))?;
    block_on(async move {
        let market = connect(&args.chain, args.refund).await?;
        let key = workflow_key(&id);
        let escrow = market.escrow(key).await?;
        if escrow.requester.is_zero() {
            bail!(
                "no escrow for workflow {} on the market at {:#x}",
                id.to_hex(),
                market.address()
            );
        }
        if args.refund {
            let out = market.refund(key).await?;
            println!("refunded_wei={} tx={:#x}", escrow.held, out.tx_hash);
        }
        let escrow = market.escrow(key).await?;
        let claimable = market.claimable(escrow.requester).await?;
        println!("{}", format_escrow(&id, &escrow, claimable));
        Ok(ExitCode::SUCCESS)
    })
}

/// Run `proofmesh claim`.
pub fn run_claim(args: ClaimArgs) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let market = connect(&args.chain, true).await?;
        let account = market.account();
        let amount = market.claimable(account).await?;
        if amount.is_zero() {
            println!("account={account:#x} claimed_wei=0");
            return Ok(ExitCode::SUCCESS);
        }
        let out = market.claim().await?;
        println!(
            "account={account:#x} claimed_wei={amount} tx={:#x}",
            out.tx_hash
        );
        Ok(ExitCode::SUCCESS)
    })
}
