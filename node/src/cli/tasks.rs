//! `proofmesh tasks ID`: each task of a workflow, one `key=value` line (`task= name= state=`, the
//! attempt and operator holding it or whose result was accepted, `failed_attempts=` and, when
//! any failed, `causes=`), so a requester sees why work was retried while the workflow runs, not
//! only in the failure reason at its end.

use super::rpc_args::{block_on, RpcArgs};
use clap::{Args, ValueEnum};
use proofmesh_node::rpc::{TaskInfo, TaskQuery, MAX_LISTED_TASKS};
use std::process::ExitCode;

/// A task state to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TaskStateFilter {
    /// Some dependency has no accepted result yet.
    Pending,
    /// Waiting for an operator.
    Ready,
    /// Handed to an operator, not yet confirmed.
    Assigned,
    /// Running, or queued on its operator.
    Running,
    /// With an accepted result.
    Done,
    /// Attempts exhausted.
    Failed,
}

/// Arguments of `proofmesh tasks`.
#[derive(Args, Debug)]
pub struct TasksArgs {
    /// Workflow id (64 hex digits).
    pub id: String,
    /// Only tasks in this state.
    #[arg(long, value_enum)]
    pub state: Option<TaskStateFilter>,
    /// Only tasks with at least one failed attempt.
    #[arg(long)]
    pub retried: bool,
    #[command(flatten)]
    pub rpc: RpcArgs,
}

/// The line for one task; operators in `causes=` by their first 16 hex digits.
pub fn format_task(t: &TaskInfo) -> String {
    let mut line = format!("task={} name={} state={}", t.task, t.name, t.state);
    if let Some(attempt) = t.attempt {
        line.push_str(&format!(" attempt={attempt}"));
    }
    if let Some(operator) = &t.operator {
        line.push_str(&format!(" operator={operator}"));
    }
    line.push_str(&format!(" failed_attempts={}", t.failed_attempts.len()));
    if !t.failed_attempts.is_empty() {
        let causes: Vec<String> = t
            .failed_attempts
            .iter()
            .map(|a| {
                let short = a.operator.get(..16).unwrap_or(&a.operator);
                format!("{} by {short}: {}", a.attempt, a.cause)
            })
            .collect();
        line.push_str(&format!(" causes={:?}", causes.join("; ")));
    }
    line
}

/// Run it.
pub fn run(args: TasksArgs) -> anyhow::Result<ExitCode> {
    let state = args.state.map(|s| match s {
        TaskStateFilter::Pending => "pending",
        TaskStateFilter::Ready => "ready",
        TaskStateFilter::Assigned => "assigned",
        TaskStateFilter::Running => "running",
        TaskStateFilter::Done => "done",
        TaskStateFilter::Failed => "failed",
    });
    block_on(async move {
        let mut client = args.rpc.connect().await?;
        // One page of at most MAX_LISTED_TASKS at a time; the next starts after its last task.
        let mut query = TaskQuery {
            state: state.map(str::to_owned),
            retried: args.retried,
            from: 0,
            limit: Some(MAX_LISTED_TASKS),
        };
        loop {
            let page = client.tasks(&args.id, &query).await?;
            for t in &page {
                println!("{}", format_task(t));
            }
            match page.last() {
                Some(last) if page.len() == MAX_LISTED_TASKS => query.from = last.task + 1,
                _ => return Ok(ExitCode::SUCCESS),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proofmesh_node::rpc::FailedAttempt;

    #[test]
    fn a_task_line_names_its_holder_and_every_failed_attempt() {
        let mut t = TaskInfo {
            task: 3,
            name: "leaf[3]".into(),
            state: "pending".into(),
            attempt: None,
            operator: None,
            failed_attempts: Vec::new(),
        };
        assert_eq!(
            format_task(&t),
            "task=3 name=leaf[3] state=pending failed_attempts=0"
        );
        t.state = "running".into();
        t.attempt = Some(3);
        t.operator = Some("cd".repeat(32));
        t.failed_attempts = vec![
            FailedAttempt {
                attempt: 1,
                operator: "ab".repeat(32),
                cause: "no result by the deadline".into(),
            },
            FailedAttempt {
                attempt: 2,
                operator: "ef".repeat(32),
                cause: "crashed (exit 3)".into(),
            },
        ];
        assert_eq!(
            format_task(&t),
            format!(
                "task=3 name=leaf[3] state=running attempt=3 operator={} failed_attempts=2 \
                 causes=\"1 by abababababababab: no result by the deadline; 2 by efefefefefefefef: \
                 crashed (exit 3)\"",
                "cd".repeat(32)
            )
        );
    }
}
