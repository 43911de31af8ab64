//! `proofmesh status ID`: a workflow's state and per-stage progress as `key=value` lines.
//! Exits non-zero for an unknown id. `--wait` follows it to its end instead (for a workflow
//! submitted without `submit --wait`, or by someone else).

use super::rpc_args::{block_on, RpcArgs};
use clap::Args;
use proofmesh_node::rpc::WorkflowStatus;
use std::process::ExitCode;

/// Arguments of `proofmesh status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Workflow id (64 hex digits).
    pub id: String,
    /// Follow its progress (a bar per stage) until it ends, as `submit --wait` does: exit 0
    /// when it completed, 1 when it failed.
    #[arg(long)]
    pub wait: bool,
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
    if let Some(waiting) = &s.waiting_for {
        out.push_str(&format!(" waiting_for={waiting:?}"));
    }
    out.push('\n');
    for st in &s.stages {
        out.push_str(&format!(
            "stage={} total={} done={} running={} pending={} failed={} failed_attempts={}",
            st.name, st.total, st.done, st.running, st.pending, st.failed, st.failed_attempts
        ));
        if let Some(why) = &st.unmatched {
            out.push_str(&format!(" unmatched={why:?}"));
        }
        out.push('\n');
    }
    out
}

/// Run it.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let mut client = args.rpc.connect().await?;
        if args.wait {
            return super::submit::wait(&mut client, &args.id).await;
        }
        let status = client.status(&args.id).await?;
        print!("{}", format_status(&status));
        Ok(if status.state == "failed" {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proofmesh_node::rpc::StageProgress;

    #[test]
    fn the_status_says_why_a_stage_or_the_workflow_waits() {
        let stage = |name: &str, unmatched: Option<&str>| StageProgress {
            name: name.into(),
            total: 1,
            pending: 1,
            running: 0,
            done: 0,
            failed: 0,
            failed_attempts: 0,
            unmatched: unmatched.map(str::to_owned),
        };
        let status = WorkflowStatus {
            id: "ab".into(),
            name: "w".into(),
            state: "active".into(),
            reason: None,
            submitted_at_ms: 0,
            deadline_ms: 1,
            tasks: 2,
            done: 0,
            stages: vec![stage("leaf", None), stage("final", Some("needs 8 cores"))],
            waiting_for: None,
        };
        let mut status = status;
        status.waiting_for =
            Some("sequence 4 of stream blocks (workflow cd) to finalize first".into());
        let text = format_status(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "id=ab name=w state=active tasks=2 done=0 waiting_for=\"sequence 4 of stream blocks \
             (workflow cd) to finalize first\""
        );
        assert_eq!(
            lines[1],
            "stage=leaf total=1 done=0 running=0 pending=1 failed=0 failed_attempts=0"
        );
        assert_eq!(
            lines[2],
            "stage=final total=1 done=0 running=0 pending=1 failed=0 failed_attempts=0 \
             unmatched=\"needs 8 cores\""
        );
    }
}
