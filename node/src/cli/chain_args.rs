//! Chain flags of the client commands (`submit` opens escrows, `operators` reads payments and
//! on-chain reputation): explicit flags / environment, or everything from a devnet directory.

use anyhow::{bail, Context};
use clap::Args;
use proofmesh_node::chain::setup::{parse_eth_key, read_eth_key};
use proofmesh_node::chain::ChainParams;
use proofmesh_node::devnet::DevnetState;
use std::path::PathBuf;

/// Where the market is and who pays.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Chain")]
pub struct ChainClientArgs {
    /// Take the chain RPC, contract, requester key and settlers from this devnet directory.
    #[arg(long, value_name = "DIR")]
    pub devnet: Option<PathBuf>,
    /// Ethereum JSON-RPC URL (enables on-chain escrow / payment columns).
    #[arg(long, env = "PROOFMESH_CHAIN_RPC_URL", value_name = "URL")]
    pub chain_rpc: Option<String>,
    /// ProofMarket contract address.
    #[arg(long, env = "PROOFMESH_CONTRACT", value_name = "ADDRESS")]
    pub contract: Option<String>,
    /// File with the requester's Ethereum private key (pays the escrow).
    #[arg(long, env = "PROOFMESH_ETH_KEY_FILE", value_name = "FILE")]
    pub eth_key: Option<PathBuf>,
    /// Expected chain id (the RPC must serve it).
    #[arg(long, env = "PROOFMESH_CHAIN_ID", default_value_t = 31337)]
    pub chain_id: u64,
    /// Matchmakers' Ethereum addresses allowed to settle the escrow (comma-separated; the
    /// first is the settler, the rest fail-over backups). Default with --devnet: all of its
    /// matchmakers.
    #[arg(long = "settler", value_delimiter = ',', value_name = "ADDRESS")]
    pub settlers: Vec<String>,
}

/// Resolved chain settings.
pub struct ChainClient {
    /// Connection parameters (signer: the requester, or a throwaway key for reads).
    pub params: ChainParams,
    /// Settler addresses.
    pub settlers: Vec<proofmesh_chain::Address>,
}

impl ChainClientArgs {
    /// `None` when no chain is given. `need_key`: a requester key is required (escrow).
    pub fn resolve(&self, need_key: bool) -> anyhow::Result<Option<ChainClient>> {
        let mut rpc = self.chain_rpc.clone();
        let mut contract = self.contract.clone();
        let mut key = self.eth_key.clone();
        let mut chain_id = self.chain_id;
        let mut settlers = self.settlers.clone();
        if let Some(dir) = &self.devnet {
            let state = DevnetState::load(dir)?;
            let Some(c) = state.chain else {
                bail!(
                    "the devnet in {} has no chain (started with --no-chain)",
                    dir.display()
                );
            };
            rpc = rpc.or(Some(c.rpc));
            contract = contract.or(Some(c.contract));
            key = key.or(Some(c.requester_key));
            chain_id = c.chain_id;
            if settlers.is_empty() {
                settlers = c.settlers;
            }
        }
        let Some(rpc_url) = rpc else {
            return Ok(None);
        };
        let contract = contract
            .context("--chain-rpc needs --contract (or PROOFMESH_CONTRACT, or --devnet DIR)")?;
        let contract: proofmesh_chain::Address = contract
            .parse()
            .with_context(|| format!("--contract {contract:?} is not an address"))?;
        let signer = match key {
            Some(path) => read_eth_key(&path)?,
            None if need_key => bail!(
                "--chain-rpc needs --eth-key FILE (or PROOFMESH_ETH_KEY_FILE): the key that signs (the requester's, to pay an escrow)"
            ),
            // Reads only: any key will do.
            None => parse_eth_key(&format!("{:x}", proofmesh_chain::B256::repeat_byte(0x11)))
                .map_err(anyhow::Error::msg)?,
        };
        let settlers = settlers
            .iter()
            .map(|s| {
                s.parse()
                    .with_context(|| format!("--settler {s:?} is not an address"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(ChainClient {
            params: ChainParams {
                rpc_url,
                contract,
                chain_id,
                signer,
                stake_wei: 0,
            },
            settlers,
        }))
    }
}
