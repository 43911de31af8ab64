//! The node's side of on-chain settlement (the `[chain]` config section).
//!
//! - [`setup`]: connect (the RPC's chain id must match), check the contract, register and stake
//!   an operator once.
//! - [`identity`]: the operator's Ethereum key signing EIP-712 evidence carried in protocol
//!   messages (acceptances; claims of final proofs).
//! - [`settler`]: the matchmaker's settlement hook: batched payment of completed workflows and
//!   slashing on evidence, in a background task with retries.
//! - [`retry`]: which chain errors are transient, and backoff.
//!
//! Only the final proof can be checked on-chain (only it has a Solidity verifier), so only an
//! invalid final proof is slashed on-chain; an invalid intermediate proof is rejected and its
//! task reassigned off-chain, without a slash.

pub mod escrow;
pub mod identity;
pub mod retry;
pub mod settler;
pub mod setup;

pub use identity::EthIdentity;
pub use settler::ChainSettlement;
pub use setup::{ChainParams, ChainSetupError};

use crate::config::NodeConfig;
use crate::runtime::NodeOptions;
use proofmesh_protocol::messages::Capacity;
use std::sync::Arc;

/// The chain parameters of a configuration, or `None` when it has no `chain.rpc_url`.
pub fn params_from_config(config: &NodeConfig) -> Result<Option<ChainParams>, ChainSetupError> {
    let Some(rpc_url) = config.chain.rpc_url.clone() else {
        return Ok(None);
    };
    let contract = config
        .contract_address()
        .map_err(|m| ChainSetupError::Config(format!("chain.contract: {m}")))?
        .ok_or_else(|| {
            ChainSetupError::Config(
                "chain.rpc_url is set but chain.contract is not (set --chain.contract / PROOFMESH_CONTRACT)".into(),
            )
        })?;
    let path = config.chain.eth_key_file.clone().ok_or_else(|| {
        ChainSetupError::Config(
            "chain.rpc_url is set but chain.eth_key_file is not (set --chain.eth-key-file / PROOFMESH_ETH_KEY_FILE)".into(),
        )
    })?;
    let signer = setup::read_eth_key(&path)?;
    Ok(Some(ChainParams {
        rpc_url,
        contract: contract.into(),
        chain_id: config.chain.chain_id,
        signer,
        stake_wei: config.stake_wei().map_err(ChainSetupError::Config)?,
    }))
}

/// Prepares a node for on-chain settlement before it starts: an operator registers and stakes
/// (once), advertises its Ethereum address and signs evidence with it; a matchmaker gets the
/// settlement hook to pass to [`crate::runtime::Node::spawn_with`] (then call
/// [`ChainSettlement::attach_store`] with the node's store). `None`: no chain configured, or
/// a node with neither role.
pub async fn prepare(
    config: &NodeConfig,
    options: &mut NodeOptions,
) -> Result<Option<Arc<ChainSettlement>>, ChainSetupError> {
    // A gateway submits and relays only: it needs no key and sends no transactions.
    if options.operator.is_none() && options.matchmaker.is_none() {
        return Ok(None);
    }
    let Some(params) = params_from_config(config)? else {
        return Ok(None);
    };
    let client = setup::connect(&params).await?;
    if let Some(op) = options.operator.as_mut() {
        let keypair = match options.keypair.clone() {
            Some(k) => k,
            None => crate::runtime::load_or_create_key(&options.data_dir)
                .map_err(|e| ChainSetupError::Config(e.to_string()))?,
        };
        options.keypair = Some(keypair.clone());
        let capacity = op.capacity.clone().unwrap_or_else(|| Capacity {
            cpu: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            ..Capacity::default()
        });
        setup::ensure_registered(&client, &keypair, &capacity, params.stake_wei).await?;
        let id = EthIdentity::new(params.signer.clone(), params.chain_id, params.contract);
        op.eth_address = Some(id.eth_address());
        op.eth = Some(id);
    }
    if options.matchmaker.is_some() {
        return Ok(Some(Arc::new(ChainSettlement::spawn(client))));
    }
    Ok(None)
}
