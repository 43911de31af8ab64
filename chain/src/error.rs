//! Errors of the chain client.

use alloy::primitives::B256;

/// What went wrong talking to the chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The RPC endpoint could not be reached or answered with an error.
    #[error("RPC error calling {call}: {message}")]
    Rpc { call: &'static str, message: String },
    /// The contract reverted; `reason` is the decoded custom error when the ABI knows it.
    #[error("{call} reverted: {reason}")]
    Reverted { call: &'static str, reason: String },
    /// The transaction was mined but failed (status 0).
    #[error("{call}: transaction {tx} failed on-chain (status 0)")]
    TxFailed { call: &'static str, tx: B256 },
    /// An argument cannot be represented on-chain.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The cursor store failed.
    #[error("cursor store: {0}")]
    Cursor(String),
    /// Spawning or reaching the local anvil failed.
    #[error("anvil: {0}")]
    Anvil(String),
}
