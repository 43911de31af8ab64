//! `proofmesh submit FILE [--wait]`: validate locally, submit over RPC, print the workflow id.
//! With `--wait`, follow the progress subscription with one indicatif bar per stage (done /
//! running / failed / ETA) and exit 0 only when the workflow completed (every task has an
//! accepted result); a failed workflow exits 1 and prints its reason.

use super::chain_args::ChainClientArgs;
use super::rpc_args::{block_on, RpcArgs};
use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use proofmesh_node::rpc::{RpcClient, WorkflowStatus};
use proofmesh_node::rpc::{SubmitOutcome, UnmatchedStage};
use proofmesh_protocol::messages::Submission;
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{encoding, Keypair};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `proofmesh submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Workflow file (TOML, or JSON by a .json name).
    pub file: PathBuf,
    /// Follow progress until the workflow completes or fails.
    #[arg(long)]
    pub wait: bool,
    /// Quote it first and submit nothing (no escrow opened either) when some stage has no
    /// operator the node saw lately that could run it: exit 3 with a warning per such stage.
    #[arg(long)]
    pub require_match: bool,
    #[command(flatten)]
    pub rpc: RpcArgs,
    /// With a chain: open the escrow (sum of task prices) before submitting.
    #[command(flatten)]
    pub chain: ChainClientArgs,
}

/// Run it.
pub fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let format = Format::from_file_name(&args.file.to_string_lossy());
    // Validate here first: a bad file fails fast and without a node.
    let (workflow, _) = spec::load(&text, format)
        .with_context(|| format!("{} is not a valid workflow", args.file.display()))?;
    let chain = args.chain.resolve(true)?;
    let format = match format {
        Format::Json => "json",
        Format::Toml => "toml",
    };
    block_on(async move {
        let mut client = args.rpc.connect().await?;
        if args.require_match {
            let quote = client
                .quote(&text, format)
                .await
                .context("quoting it first")?;
            if !quote.unmatched.is_empty() {
                for u in &quote.unmatched {
                    eprintln!("{}", stage_warning(u));
                }
                eprintln!("error: not submitted (--require-match): no escrow was opened");
                return Ok(ExitCode::from(super::quote::UNMATCHED_EXIT));
            }
        }
        let outcome: SubmitOutcome = match chain {
            None => client.submit_workflow(&text, format).await?,
            Some(chain) => {
                // Escrow first: matchmakers settle from it as soon as the workflow completes.
                let opened = proofmesh_node::chain::escrow::open_escrow(
                    &chain.params,
                    &workflow,
                    &chain.settlers,
                )
                .await
                .context("opening the escrow")?;
                eprintln!(
                    "escrow {} amount_wei={} settlers={} contract={}",
                    if opened.new { "opened" } else { "exists" },
                    opened.amount_wei,
                    chain.settlers.len(),
                    chain.params.contract
                );
                let submission = Submission {
                    workflow,
                    owner: Keypair::generate().public(),
                    owner_eth: Some(chain.params.signer.address().into_array()),
                    escrow: Some(opened.escrow),
                    submitted_at_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                };
                let hexed = hex::encode(encoding::encode(&submission));
                client
                    .call(
                        "pm_submitWorkflow",
                        serde_json::json!({ "submission": hexed }),
                    )
                    .await?
            }
        };
        println!("{}", outcome.id);
        for line in unmatched_warnings(&outcome) {
            eprintln!("{line}");
        }
        if !args.wait {
            return Ok(ExitCode::SUCCESS);
        }
        wait(&mut client, &outcome.id).await
    })
}

/// The warning for a stage no operator seen lately could run.
pub fn stage_warning(u: &UnmatchedStage) -> String {
    format!(
        "warning: stage {}: no operator seen in the last minute can run its tasks ({})",
        u.stage, u.reason
    )
}

/// One line per stage that no operator seen lately could run: the workflow is accepted, but
/// those tasks wait for such an operator, and the requester may rather cancel it.
pub fn unmatched_warnings(outcome: &SubmitOutcome) -> Vec<String> {
    outcome
        .unmatched
        .iter()
        .map(|u| {
            format!(
                "{}; they wait for one (`proofmesh cancel {}` stops the workflow)",
                stage_warning(u),
                outcome.id
            )
        })
        .collect()
}

struct Bars {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    style: ProgressStyle,
}

impl Bars {
    fn new() -> Self {
        let style = ProgressStyle::with_template(
            "{prefix:>14} [{bar:32.cyan/blue}] {pos:>5}/{len:<5} {msg} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Bars {
            multi: MultiProgress::new(),
            bars: HashMap::new(),
            style,
        }
    }

    fn update(&mut self, status: &WorkflowStatus) {
        for stage in &status.stages {
            let bar = self.bars.entry(stage.name.clone()).or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(stage.total));
                bar.set_style(self.style.clone());
                bar.set_prefix(stage.name.clone());
                bar
            });
            bar.set_position(stage.done);
            let mut message = format!(
                "running={} failed={} retries={}",
                stage.running, stage.failed, stage.failed_attempts
            );
            if stage.unmatched.is_some() {
                message.push_str(" waiting for an operator that can run it");
            }
            bar.set_message(message);
        }
    }

    fn finish(&self) {
        for bar in self.bars.values() {
            bar.abandon();
        }
    }
}

/// Follow workflow `id`'s progress subscription with a bar per stage until it ends: exit 0 when
/// it completed, 1 (with its reason) when it failed.
pub async fn wait(client: &mut RpcClient, id: &str) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    client
        .subscribe_progress(id)
        .await
        .context("subscribing to progress")?;
    let mut bars = Bars::new();
    loop {
        let status = client.next_progress().await.context("following progress")?;
        bars.update(&status);
        if !status.is_final() {
            continue;
        }
        bars.finish();
        let elapsed = started.elapsed().as_secs_f64();
        if status.state == "completed" {
            println!(
                "state=completed tasks={} done={} elapsed_s={elapsed:.3}",
                status.tasks, status.done
            );
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "state={} tasks={} done={} elapsed_s={elapsed:.3}",
            status.state, status.tasks, status.done
        );
        eprintln!(
            "error: workflow {id} {}: {}",
            status.state,
            status.reason.as_deref().unwrap_or("no reason given")
        );
        return Ok(ExitCode::FAILURE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unmatched_stage_gets_a_warning_naming_it_and_how_to_stop() {
        let mut outcome = SubmitOutcome {
            id: "ab12".into(),
            new: true,
            tasks: 3,
            unmatched: Vec::new(),
        };
        assert!(unmatched_warnings(&outcome).is_empty());
        outcome.unmatched.push(UnmatchedStage {
            stage: "final".into(),
            reason: "needs 8 cores; operators running sleep@1 (1) have at most 2".into(),
        });
        assert_eq!(
            unmatched_warnings(&outcome),
            ["warning: stage final: no operator seen in the last minute can run its tasks (needs \
              8 cores; operators running sleep@1 (1) have at most 2); they wait for one \
              (`proofmesh cancel ab12` stops the workflow)"]
        );
    }
}
