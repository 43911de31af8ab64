//! Connecting a node to the market: the RPC's chain id must be the configured one, the contract
//! must exist, and an operator registers (binding its ed25519 node key) and stakes itself once.

use super::retry::with_retry;
use proofmesh_chain::bindings::ProofMarket;
use proofmesh_chain::{Address, ChainError, MarketClient, PrivateKeySigner};
use proofmesh_protocol::messages::Capacity;
use proofmesh_protocol::Keypair;
use std::path::{Path, PathBuf};

/// Why the chain could not be set up. Messages name the setting to change.
#[derive(Debug, thiserror::Error)]
pub enum ChainSetupError {
    /// The RPC serves another chain.
    #[error("chain.rpc_url {url} serves chain id {actual}, but chain.chain_id is {expected} (fix --chain.id / PROOFMESH_CHAIN_ID or point --chain.rpc-url at the right chain)")]
    WrongChain {
        /// RPC URL.
        url: String,
        /// Configured.
        expected: u64,
        /// What the RPC says.
        actual: u64,
    },
    /// No contract at the configured address.
    #[error("no contract at chain.contract {contract} on {url} (deploy it, or fix --chain.contract / PROOFMESH_CONTRACT)")]
    NoContract {
        /// Address.
        contract: Address,
        /// RPC URL.
        url: String,
    },
    /// The Ethereum key file is unreadable or malformed.
    #[error("chain.eth_key_file {path}: {problem} (a file holding one 0x-prefixed hex private key; set --chain.eth-key-file / PROOFMESH_ETH_KEY_FILE)")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The configuration is incomplete.
    #[error("{0}")]
    Config(String),
    /// The node key is bound to another account, or this account to another node key.
    #[error("account {account} is registered with node key {registered}, not this node's {ours} (use the node key it registered with, or another eth key)")]
    KeyMismatch {
        /// Account.
        account: Address,
        /// Registered key (hex).
        registered: String,
        /// Ours (hex).
        ours: String,
    },
    /// A chain call failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Everything a node needs to reach the market.
#[derive(Clone, Debug)]
pub struct ChainParams {
    /// Ethereum JSON-RPC URL.
    pub rpc_url: String,
    /// ProofMarket address.
    pub contract: Address,
    /// Chain id the node expects.
    pub chain_id: u64,
    /// This node's Ethereum key.
    pub signer: PrivateKeySigner,
    /// Stake an operator puts up when it registers, wei.
    pub stake_wei: u128,
}

/// Parses a hex private key (with or without `0x`, surrounding whitespace ignored).
pub fn parse_eth_key(text: &str) -> Result<PrivateKeySigner, String> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    t.parse::<PrivateKeySigner>()
        .map_err(|e| format!("not a hex secp256k1 private key: {e}"))
}

/// Reads a private key file.
pub fn read_eth_key(path: &Path) -> Result<PrivateKeySigner, ChainSetupError> {
    let err = |problem: String| ChainSetupError::Key {
        path: path.to_owned(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_eth_key(&text).map_err(err)
}

/// Writes `signer`'s key to `path` (mode 0600).
pub fn write_eth_key(path: &Path, signer: &PrivateKeySigner) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "0x{}", hex::encode(signer.to_bytes()))
}

/// Connects, checking the chain id and that the contract exists. Transient RPC errors are
/// retried (the chain may still be starting).
pub async fn connect(p: &ChainParams) -> Result<MarketClient, ChainSetupError> {
    let client = with_retry("connect", || {
        MarketClient::connect(&p.rpc_url, p.signer.clone(), p.contract)
    })
    .await?;
    if client.chain_id() != p.chain_id {
        return Err(ChainSetupError::WrongChain {
            url: p.rpc_url.clone(),
            expected: p.chain_id,
            actual: client.chain_id(),
        });
    }
    use alloy::providers::Provider;
    let code = client
        .provider()
        .get_code_at(p.contract)
        .await
        .map_err(|e| ChainError::Rpc {
            call: "eth_getCode",
            message: e.to_string(),
        })?;
    if code.is_empty() {
        return Err(ChainSetupError::NoContract {
            contract: p.contract,
            url: p.rpc_url.clone(),
        });
    }
    Ok(client)
}

/// Registers this account as an operator bound to `node_key` with `stake_wei`, unless it is
/// registered already. Returns whether it registered now.
pub async fn ensure_registered(
    client: &MarketClient,
    node_key: &Keypair,
    capacity: &Capacity,
    stake_wei: u128,
) -> Result<bool, ChainSetupError> {
    let ours = proofmesh_chain::B256::from(node_key.public().0);
    let registered = with_retry("operatorInfo", || {
        client.registered_node_key(client.account())
    })
    .await?;
    match registered {
        Some(k) if k == ours => return Ok(false),
        Some(k) => {
            return Err(ChainSetupError::KeyMismatch {
                account: client.account(),
                registered: hex::encode(k),
                ours: hex::encode(ours),
            })
        }
        None => {}
    }
    let cap = ProofMarket::Capacity {
        cpuCores: capacity.cpu,
        memoryGb: u32::try_from(capacity.memory_mb / 1024).unwrap_or(u32::MAX),
        gpus: u32::try_from(capacity.gpus.len()).unwrap_or(u32::MAX),
        vramGbPerGpu: capacity
            .gpus
            .iter()
            .map(|g| u32::try_from(g.vram_mb / 1024).unwrap_or(u32::MAX))
            .min()
            .unwrap_or(0),
    };
    let out = with_retry("register", || {
        client.register(node_key, cap.clone(), stake_wei)
    })
    .await?;
    tracing::info!(account = %client.account(), stake_wei, tx = %out.tx_hash, "registered and staked on-chain");
    Ok(true)
}
