//! Shared setup: anvil, a deployed market over the test verifier, funded actors.

use proofmesh_chain::anvil::AnvilInstance;
use proofmesh_chain::bindings::ProofMarket;
use proofmesh_chain::client::{connect, deploy_test_verifier};
use proofmesh_chain::{MarketClient, MarketParams, TxOutcome, U256};
use proofmesh_protocol::identity::Keypair;

pub const ETH: u128 = 1_000_000_000_000_000_000;

pub fn wei(x: u128) -> U256 {
    U256::from(x)
}

pub struct Env {
    pub anvil: AnvilInstance,
    pub market: MarketClient,
    pub verifier: proofmesh_chain::Address,
    pub params: MarketParams,
}

pub async fn setup() -> Env {
    let anvil = match AnvilInstance::spawn().await {
        Ok(a) => a,
        Err(e) => panic!("chain tests need a local anvil: {e}"),
    };
    let deployer = anvil
        .funded_signer(wei(1_000 * ETH))
        .await
        .expect("fund deployer");
    let provider = connect(&anvil.endpoint(), deployer.clone())
        .await
        .expect("connect");
    let verifier = deploy_test_verifier(&provider)
        .await
        .expect("deploy verifier");
    let params = MarketParams::devnet();
    let market = MarketClient::deploy(&anvil.endpoint(), deployer, verifier, &params)
        .await
        .expect("deploy market");
    Env {
        anvil,
        market,
        verifier,
        params,
    }
}

impl Env {
    /// A new account holding `eth` ether, attached to the market.
    pub async fn actor(&self, eth: u128) -> MarketClient {
        let signer = self
            .anvil
            .funded_signer(wei(eth * ETH))
            .await
            .expect("fund actor");
        self.market
            .as_signer(&self.anvil.endpoint(), signer)
            .await
            .expect("attach actor")
    }

    /// A registered operator with `stake` wei.
    pub async fn operator(&self, stake: u128) -> MarketClient {
        let op = self.actor(100).await;
        op.register(&Keypair::generate(), capacity(), stake)
            .await
            .expect("register");
        op
    }

    pub async fn balance(&self, c: &MarketClient) -> U256 {
        self.market.balance(c.account()).await.expect("balance")
    }

    pub async fn now(&self) -> u64 {
        self.market.block_timestamp().await.expect("timestamp")
    }
}

pub fn capacity() -> ProofMarket::Capacity {
    ProofMarket::Capacity {
        cpuCores: 16,
        memoryGb: 64,
        gpus: 1,
        vramGbPerGpu: 80,
    }
}

/// Asserts that `after == before + gained - fee` to the wei.
pub fn assert_balance(before: U256, after: U256, gained: U256, tx: &TxOutcome, what: &str) {
    assert_eq!(
        after,
        before + gained - tx.fee_wei,
        "{what}: balance off (before {before}, after {after}, gained {gained}, fee {})",
        tx.fee_wei
    );
}
