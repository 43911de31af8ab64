//! `proofmesh operators`: one line per known operator, `key=value` pairs including
//! `completed= failed= slashed=` and `present=` (advertised within the last minute).

use super::chain_args::ChainClientArgs;
use super::rpc_args::{block_on, RpcArgs};
use anyhow::Context;
use clap::Args;
use proofmesh_node::rpc::offers::SEEN_WITHIN_MS;
use proofmesh_node::rpc::OperatorInfo;
use std::process::ExitCode;

/// Arguments of `proofmesh operators`.
#[derive(Args, Debug)]
pub struct OperatorsArgs {
    #[command(flatten)]
    pub rpc: RpcArgs,
    /// With a chain: add each operator's on-chain payment and reputation.
    #[command(flatten)]
    pub chain: ChainClientArgs,
    /// Only operators present: advertised within the last minute (those a quote or an
    /// unmatched stage is judged against).
    #[arg(long)]
    pub present: bool,
}

/// Whether `o` advertised within [`SEEN_WITHIN_MS`] of `now_ms`.
pub fn is_present(o: &OperatorInfo, now_ms: u64) -> bool {
    o.last_seen_ms.saturating_add(SEEN_WITHIN_MS) >= now_ms
}

/// The line for one operator; `present=` as of `now_ms`.
pub fn format_operator(o: &OperatorInfo, now_ms: u64) -> String {
    let programs = if o.programs.is_empty() {
        "-".to_owned()
    } else {
        o.programs.join(",")
    };
    format!(
        "key={} eth={} completed={} failed={} slashed={} cpu={} memory_mb={} gpus={} price_wei={} programs={} last_seen_ms={} present={}",
        o.key,
        o.eth_address.as_deref().unwrap_or("-"),
        o.completed,
        o.failed,
        o.slashed,
        o.cpu,
        o.memory_mb,
        o.gpus,
        o.price_wei,
        programs,
        o.last_seen_ms,
        is_present(o, now_ms)
    )
}

/// Run it.
pub fn run(args: OperatorsArgs) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let mut client = args.rpc.connect().await?;
        let chain = match args.chain.resolve(false)? {
            Some(c) => Some(
                proofmesh_node::chain::setup::connect(&c.params)
                    .await
                    .context("connecting to the chain")?,
            ),
            None => None,
        };
        let paid = match &chain {
            Some(m) => m.paid_totals().await?,
            None => Default::default(),
        };
        let now_ms = proofmesh_node::network::system_clock()();
        for o in client.operators().await? {
            if args.present && !is_present(&o, now_ms) {
                continue;
            }
            let mut line = format_operator(&o, now_ms);
            let eth = o
                .eth_address
                .as_deref()
                .and_then(|a| a.parse::<proofmesh_chain::Address>().ok());
            if let (Some(m), Some(eth)) = (&chain, eth) {
                let rep = m.reputation(eth).await?;
                let claimable = m.claimable(eth).await?;
                line.push_str(&format!(
                    " paid_wei={} claimable_wei={} chain_completed={} chain_failed={} chain_slashed={} stake_wei={}",
                    paid.get(&eth).copied().unwrap_or_default(),
                    claimable,
                    rep.completed,
                    rep.failed,
                    rep.slashed,
                    rep.stake
                ));
            }
            println!("{line}");
        }
        Ok(ExitCode::SUCCESS)
    })
}
