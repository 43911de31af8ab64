//! `proofmesh quote FILE`: before opening an escrow, what a workflow would cost at the asks of
//! the operators a node saw in the last minute, and which of its stages none of them could run.
//! One `key=value` line (`id= tasks= escrow_wei= lowest_wei= highest_wei= operators=
//! unmatched_tasks=`), a warning per such stage on stderr, and exit code 3 when there is one, so
//! a script can hold its money back.

use super::rpc_args::{block_on, RpcArgs};
use super::submit::stage_warning;
use anyhow::Context;
use clap::Args;
use proofmesh_node::rpc::Quote;
use proofmesh_protocol::spec::{self, Format};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code when some task no operator could run.
pub const UNMATCHED_EXIT: u8 = 3;

/// Arguments of `proofmesh quote`.
#[derive(Args, Debug)]
pub struct QuoteArgs {
    /// Workflow file (TOML, or JSON by a .json name).
    pub file: PathBuf,
    #[command(flatten)]
    pub rpc: RpcArgs,
}

/// The quote as one line.
pub fn format_quote(q: &Quote) -> String {
    format!(
        "id={} tasks={} escrow_wei={} lowest_wei={} highest_wei={} operators={} unmatched_tasks={}",
        q.id, q.tasks, q.escrow_wei, q.lowest_wei, q.highest_wei, q.operators, q.unmatched_tasks
    )
}

/// Run it.
pub fn run(args: QuoteArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let format = Format::from_file_name(&args.file.to_string_lossy());
    // A bad file fails here, without a node.
    spec::load(&text, format)
        .with_context(|| format!("{} is not a valid workflow", args.file.display()))?;
    let format = match format {
        Format::Json => "json",
        Format::Toml => "toml",
    };
    block_on(async move {
        let mut client = args.rpc.connect().await?;
        let quote = client.quote(&text, format).await?;
        println!("{}", format_quote(&quote));
        for u in &quote.unmatched {
            eprintln!("{}", stage_warning(u));
        }
        Ok(if quote.unmatched_tasks > 0 {
            ExitCode::from(UNMATCHED_EXIT)
        } else {
            ExitCode::SUCCESS
        })
    })
}
