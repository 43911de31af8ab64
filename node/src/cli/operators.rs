//! `proofmesh operators`: one line per known operator, `key=value` pairs including
//! `completed= failed= slashed=`.

use super::rpc_args::{block_on, RpcArgs};
use clap::Args;
use proofmesh_node::rpc::OperatorInfo;
use std::process::ExitCode;

/// Arguments of `proofmesh operators`.
#[derive(Args, Debug)]
pub struct OperatorsArgs {
    #[command(flatten)]
    pub rpc: RpcArgs,
}

/// The line for one operator.
pub fn format_operator(o: &OperatorInfo) -> String {
    let programs = if o.programs.is_empty() {
        "-".to_owned()
    } else {
        o.programs.join(",")
    };
    format!(
        "key={} eth={} completed={} failed={} slashed={} cpu={} memory_mb={} gpus={} price_wei={} programs={} last_seen_ms={}",
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
        o.last_seen_ms
    )
}

/// Run it.
pub fn run(args: OperatorsArgs) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let mut client = args.rpc.connect().await?;
        for o in client.operators().await? {
            println!("{}", format_operator(&o));
        }
        Ok(ExitCode::SUCCESS)
    })
}
