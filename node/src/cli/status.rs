//! `proofmesh status ID`: a workflow's state and per-stage progress as `key=value` lines.
//! Exits non-zero for an unknown id.

use super::rpc_args::{block_on, RpcArgs};
use clap::Args;
use proofmesh_node::rpc::WorkflowStatus;
use std::process::ExitCode;

/// Arguments of `proofmesh status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Workflow id (64 hex digits).
    pub id: String,
    #[command(flatten)]
    pub rpc: RpcArgs,
}

/// One line for the workflow, then one per stage.
pub fn format_status(s: &WorkflowStatus) -> String {
    let mut out = format!(
        "id={} name={} state={} tasks={} done={}",
        s.id, s.name, s.state, s.tasks, s.done
    );
    if let Some(reason) = &s.reason {
        out.push_str(&format!(" reason={reason:?}"));
    }
    out.push('\n');
    for st in &s.stages {
        out.push_str(&format!(
            "stage={} total={} done={} running={} pending={} failed={} failed_attempts={}\n",
            st.name, st.total, st.done, st.running, st.pending, st.failed, st.failed_attempts
        ));
    }
    out
}

/// Run it.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let mut client = args.rpc.connect().await?;
        let status = client.status(&args.id).await?;
        print!("{}", format_status(&status));
        Ok(if status.state == "failed" {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        })
    })
}
