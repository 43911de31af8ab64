//! Ethereum settlement: deploy and drive the ProofMarket contract (register and stake operators,
//! escrow workflows, settle in batches, slash on evidence, read reputation) and index its events.
//!
//! - [`bindings`]: alloy `sol!` bindings generated from the committed forge artifacts in
//!   `chain/abi/` (refresh with `chain/abi/update.sh`; a test fails when they are stale).
//! - [`client::MarketClient`]: one signer's view of one deployed market; every state-changing
//!   call waits for its receipt and turns a revert into a decoded [`ChainError::Reverted`].
//! - [`evidence`]: the EIP-712 messages an operator's Ethereum key signs (acceptance of an
//!   assignment, claim of a final proof) and the ed25519 binding of its node key.
//! - [`indexer::Indexer`]: polls `eth_getLogs` in block ranges from a persisted cursor and
//!   handles reorgs of the last few blocks.
//! - [`anvil::AnvilInstance`]: spawns the pinned local anvil (tests, devnet).

pub mod anvil;
pub mod bindings;
pub mod client;
mod error;
pub mod evidence;
pub mod indexer;

pub use alloy::primitives::{Address, B256, U256};
pub use alloy::signers::local::PrivateKeySigner;
pub use client::{MarketClient, MarketParams, OperatorPayout, TxOutcome};
pub use error::ChainError;
pub use evidence::{SignedAcceptance, SignedProofClaim};
pub use indexer::{
    Cursor, CursorStore, IndexedEvent, Indexer, IndexerConfig, IndexerItem, MemoryCursorStore,
};

use proofmesh_protocol::WorkflowId;

/// The on-chain key of a workflow: its content id, as bytes32.
pub fn workflow_key(id: &WorkflowId) -> B256 {
    B256::from(id.0)
}
