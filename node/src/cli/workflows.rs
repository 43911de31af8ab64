//! `proofmesh workflows`: the workflows a node holds, newest first, one `key=value` line each
//! (`id= name= state= tasks= done= accepted_at_ms=`), for finding a workflow whose id was lost
//! and for scripts that watch a node; with `--state pruned`, those it pruned after their
//! retention, most lately pruned first (`ended=` says how each ended).

use super::rpc_args::{block_on, RpcArgs};
use clap::{Args, ValueEnum};
use proofmesh_node::rpc::{WorkflowListing, DEFAULT_LISTED_WORKFLOWS};
use std::process::ExitCode;

/// A workflow state to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// Still running.
    Active,
    /// Every task has an accepted result.
    Completed,
    /// Failed or cancelled.
    Failed,
    /// Pruned after its retention (only how it ended is left).
    Pruned,
}

/// Arguments of `proofmesh workflows`.
#[derive(Args, Debug)]
pub struct WorkflowsArgs {
    /// Only workflows in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateFilter>,
    /// Most workflows listed (newest first; at most 1000).
    #[arg(long, default_value_t = DEFAULT_LISTED_WORKFLOWS)]
    pub limit: usize,
    #[command(flatten)]
    pub rpc: RpcArgs,
}

/// The line for one workflow.
pub fn format_listing(w: &WorkflowListing) -> String {
    let line = format!(
        "id={} name={:?} state={} tasks={} done={} accepted_at_ms={}",
        w.id, w.name, w.state, w.tasks, w.done, w.accepted_at_ms
    );
    match &w.ended {
        Some(ended) => format!("{line} ended={ended}"),
        None => line,
    }
}

/// Run it.
pub fn run(args: WorkflowsArgs) -> anyhow::Result<ExitCode> {
    let state = args.state.map(|s| match s {
        StateFilter::Active => "active",
        StateFilter::Completed => "completed",
        StateFilter::Failed => "failed",
        StateFilter::Pruned => "pruned",
    });
    block_on(async move {
        let mut client = args.rpc.connect().await?;
        for w in client.workflows(state, args.limit).await? {
            println!("{}", format_listing(&w));
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_one_line_with_its_name_quoted() {
        let w = WorkflowListing {
            id: "ab".into(),
            name: "block 7 proof".into(),
            state: "active".into(),
            tasks: 9,
            done: 4,
            accepted_at_ms: 17,
            ended: None,
        };
        assert_eq!(
            format_listing(&w),
            "id=ab name=\"block 7 proof\" state=active tasks=9 done=4 accepted_at_ms=17"
        );
        let pruned = WorkflowListing {
            state: "pruned".into(),
            ended: Some("failed".into()),
            ..w
        };
        assert_eq!(
            format_listing(&pruned),
            "id=ab name=\"block 7 proof\" state=pruned tasks=9 done=4 accepted_at_ms=17 ended=failed"
        );
    }
}
