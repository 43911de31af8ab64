//! The requester's side: open the escrow of a workflow before submitting it, and name every
//! matchmaker that may settle it (see contracts/README.md, "Failover").

use super::retry::with_retry;
use super::setup::{self, ChainParams, ChainSetupError};
use proofmesh_chain::{workflow_key, Address, ChainError};
use proofmesh_protocol::messages::EscrowRef;
use proofmesh_protocol::Workflow;

/// What [`open_escrow`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedEscrow {
    /// The reference to put in the submission.
    pub escrow: EscrowRef,
    /// Amount escrowed, wei (the sum of every task's `max_price_wei`).
    pub amount_wei: u128,
    /// False when an escrow for this workflow existed already (resubmission).
    pub new: bool,
}

/// The most a workflow can cost: every task at its price ceiling.
pub fn max_payment(workflow: &Workflow) -> u128 {
    workflow.tasks.iter().map(|t| t.max_price_wei).sum()
}

/// Opens the escrow for `workflow` (requester = `params.signer`) holding [`max_payment`], for as
/// long as the market allows, payable by `settlers` (the first is the escrow's settler, the
/// others backups). An escrow that already exists is left as it is.
pub async fn open_escrow(
    params: &ChainParams,
    workflow: &Workflow,
    settlers: &[Address],
) -> Result<OpenedEscrow, ChainSetupError> {
    let client = setup::connect(params).await?;
    let key = workflow_key(&workflow.id());
    let escrow = EscrowRef {
        chain_id: client.chain_id(),
        contract: client.address().into_array(),
    };
    let amount = max_payment(workflow);
    let existing = with_retry("escrow", || client.escrow(key)).await?;
    if existing.requester != Address::ZERO {
        return Ok(OpenedEscrow {
            escrow,
            amount_wei: existing.held + existing.paid,
            new: false,
        });
    }
    if amount == 0 {
        return Err(ChainSetupError::Config(
            "every task has max_price_wei = 0: there is nothing to escrow (set max_price_wei in the workflow, or submit without a chain)".into(),
        ));
    }
    let task_count = u32::try_from(workflow.tasks.len())
        .map_err(|_| ChainError::InvalidArgument("more than 2^32 tasks".into()))?;
    let max_duration = client
        .contract()
        .maxEscrowDuration()
        .call()
        .await
        .map_err(|e| ChainError::Rpc {
            call: "maxEscrowDuration",
            message: e.to_string(),
        })?;
    let now = with_retry("block timestamp", || client.block_timestamp()).await?;
    // A minute of slack: the escrow's transaction lands in a later block than `now`.
    let deadline = now + max_duration.saturating_sub(60).max(1);
    let settler = settlers.first().copied().unwrap_or(client.account());
    with_retry("openEscrow", || {
        client.open_escrow(key, settler, deadline, task_count, amount)
    })
    .await?;
    if settlers.len() > 1 {
        with_retry("addSettlers", || client.add_settlers(key, &settlers[1..])).await?;
    }
    tracing::info!(workflow = %workflow.id().short(), amount_wei = amount, settlers = settlers.len(), "escrow opened");
    Ok(OpenedEscrow {
        escrow,
        amount_wei: amount,
        new: true,
    })
}
