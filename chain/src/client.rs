//! [`MarketClient`]: one signer's view of one deployed ProofMarket.
//!
//! Every state-changing call estimates gas first (so a revert surfaces before anything is
//! sent, decoded into the contract's custom error), then waits for the receipt.

use crate::bindings::{ProofMarket, TestVerifier};
use crate::error::ChainError;
use crate::evidence::{binding_message, SignedAcceptance, SignedProofClaim};
use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolInterface;
use proofmesh_protocol::identity::Keypair;

/// Deployment parameters (see `ProofMarket.Params`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketParams {
    /// Smallest stake `register` accepts, wei.
    pub min_stake: u128,
    /// Seconds between `requestUnbond` and `withdraw`; must exceed `max_escrow_duration_s`.
    pub unbonding_delay_s: u64,
    /// Longest escrow, seconds.
    pub max_escrow_duration_s: u64,
    /// Penalty for a missed deadline, wei.
    pub missed_deadline_penalty: u128,
    /// Penalty for a signed invalid final proof, wei.
    pub invalid_proof_penalty: u128,
    /// Penalty for a failure declared before the deadline, wei (below the missed-deadline one).
    pub failure_penalty: u128,
    /// Share of a slash credited to the requester, basis points.
    pub requester_share_bps: u16,
    /// Share credited to the reporter, basis points (the rest is burned).
    pub reporter_share_bps: u16,
}

impl MarketParams {
    /// Values for devnets and tests: 1 ETH minimum stake, 1-day escrows, 2-day unbonding.
    pub fn devnet() -> Self {
        const ETH: u128 = 1_000_000_000_000_000_000;
        MarketParams {
            min_stake: ETH,
            unbonding_delay_s: 2 * 86_400,
            max_escrow_duration_s: 86_400,
            missed_deadline_penalty: ETH / 2,
            invalid_proof_penalty: ETH,
            failure_penalty: ETH / 10,
            requester_share_bps: 5_000,
            reporter_share_bps: 3_000,
        }
    }

    fn to_sol(&self) -> ProofMarket::Params {
        ProofMarket::Params {
            minStake: self.min_stake,
            unbondingDelay: self.unbonding_delay_s,
            maxEscrowDuration: self.max_escrow_duration_s,
            missedDeadlinePenalty: self.missed_deadline_penalty,
            invalidProofPenalty: self.invalid_proof_penalty,
            failurePenalty: self.failure_penalty,
            requesterShareBps: self.requester_share_bps,
            reporterShareBps: self.reporter_share_bps,
        }
    }
}

/// One operator's line in a settlement batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorPayout {
    /// The operator's Ethereum address.
    pub operator: Address,
    /// Total paid to it in this batch, wei.
    pub amount: u128,
    /// The (task index, attempt) pairs it completed. Attempts are 1..=254.
    pub tasks: Vec<(u32, u32)>,
}

/// What a mined transaction cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxOutcome {
    /// Transaction hash.
    pub tx_hash: B256,
    /// Block it was mined in.
    pub block_number: u64,
    /// Gas used.
    pub gas_used: u64,
    /// Wei paid for gas (gas used x effective gas price): subtract it to check balances to the wei.
    pub fee_wei: U256,
}

/// A signer bound to one deployed market.
#[derive(Clone, Debug)]
pub struct MarketClient {
    provider: DynProvider,
    market: ProofMarket::ProofMarketInstance<DynProvider>,
    signer: PrivateKeySigner,
    chain_id: u64,
}

/// A provider that signs with `signer`, over HTTP.
pub async fn connect(rpc_url: &str, signer: PrivateKeySigner) -> Result<DynProvider, ChainError> {
    // Nonces are fetched per transaction (`pending` count): alloy's default cached nonce
    // manager skips a nonce when a call fails in gas estimation, and every later transaction
    // then waits forever behind the gap. Send one transaction at a time per account.
    let provider = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect(rpc_url)
        .await
        .map_err(|e| ChainError::Rpc {
            call: "connect",
            message: format!("{rpc_url}: {e}"),
        })?;
    Ok(provider.erased())
}

/// Deploys the test-only verifier double (tests and devnets without the Groth16 verifier).
pub async fn deploy_test_verifier(provider: &DynProvider) -> Result<Address, ChainError> {
    let v = TestVerifier::deploy(provider.clone())
        .await
        .map_err(|e| contract_err("deploy TestVerifier", e))?;
    Ok(*v.address())
}

/// Deploys the real Groth16 final-proof verifier (devnets and production-like tests).
pub async fn deploy_groth16_verifier(provider: &DynProvider) -> Result<Address, ChainError> {
    let v = crate::bindings::Groth16ProofVerifier::deploy(provider.clone())
        .await
        .map_err(|e| contract_err("deploy Groth16ProofVerifier", e))?;
    Ok(*v.address())
}

impl MarketClient {
    /// Attaches to the market at `market`, signing with `signer`.
    pub async fn connect(
        rpc_url: &str,
        signer: PrivateKeySigner,
        market: Address,
    ) -> Result<Self, ChainError> {
        let provider = connect(rpc_url, signer.clone()).await?;
        Self::with_provider(provider, signer, market).await
    }

    /// Attaches using an existing signing provider (its wallet must hold `signer`).
    pub async fn with_provider(
        provider: DynProvider,
        signer: PrivateKeySigner,
        market: Address,
    ) -> Result<Self, ChainError> {
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|e| rpc_err("eth_chainId", e))?;
        let market = ProofMarket::new(market, provider.clone());
        Ok(MarketClient {
            provider,
            market,
            signer,
            chain_id,
        })
    }

    /// Deploys a new market over `verifier` and attaches to it.
    pub async fn deploy(
        rpc_url: &str,
        signer: PrivateKeySigner,
        verifier: Address,
        params: &MarketParams,
    ) -> Result<Self, ChainError> {
        let provider = connect(rpc_url, signer.clone()).await?;
        let m = ProofMarket::deploy(provider.clone(), verifier, params.to_sol())
            .await
            .map_err(|e| contract_err("deploy ProofMarket", e))?;
        Self::with_provider(provider, signer, *m.address()).await
    }

    /// The same market, signing as someone else (another operator, the settler, ...).
    pub async fn as_signer(
        &self,
        rpc_url: &str,
        signer: PrivateKeySigner,
    ) -> Result<Self, ChainError> {
        Self::connect(rpc_url, signer, *self.market.address()).await
    }

    /// The market's address.
    pub fn address(&self) -> Address {
        *self.market.address()
    }

    /// This client's Ethereum address.
    pub fn account(&self) -> Address {
        self.signer.address()
    }

    /// The signer (for EIP-712 evidence).
    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }

    /// Chain id of the connected chain.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The underlying provider (for the indexer, balances, anvil controls).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The raw contract instance, for calls this client does not wrap.
    pub fn contract(&self) -> &ProofMarket::ProofMarketInstance<DynProvider> {
        &self.market
    }

    // ------------------------------------------------------------- operators

    /// Registers this account as an operator bound to `node_key`, staking `stake_wei`. The node
    /// key signs the binding (see [`crate::evidence::binding_message`]).
    pub async fn register(
        &self,
        node_key: &Keypair,
        capacity: ProofMarket::Capacity,
        stake_wei: u128,
    ) -> Result<TxOutcome, ChainError> {
        let sig = node_key.sign(&binding_message(
            self.chain_id,
            self.address(),
            self.account(),
        ));
        let key = B256::from(node_key.public().0);
        send(
            "register",
            self.market
                .register(key, capacity, Bytes::copy_from_slice(&sig.0))
                .value(U256::from(stake_wei)),
        )
        .await
    }

    /// Updates the advertised capacity.
    pub async fn update_capacity(
        &self,
        capacity: ProofMarket::Capacity,
    ) -> Result<TxOutcome, ChainError> {
        send("updateCapacity", self.market.updateCapacity(capacity)).await
    }

    /// Adds stake.
    pub async fn stake(&self, amount_wei: u128) -> Result<TxOutcome, ChainError> {
        send("stake", self.market.stake().value(U256::from(amount_wei))).await
    }

    /// Starts unbonding `amount_wei` of stake.
    pub async fn request_unbond(&self, amount_wei: u128) -> Result<TxOutcome, ChainError> {
        send("requestUnbond", self.market.requestUnbond(amount_wei)).await
    }

    /// Withdraws unbonded stake once the delay has passed.
    pub async fn withdraw(&self) -> Result<TxOutcome, ChainError> {
        send("withdraw", self.market.withdraw()).await
    }

    // --------------------------------------------------------------- escrows

    /// Opens an escrow of `amount_wei` for `workflow` until `deadline_s` (unix seconds); only
    /// `settler` may pay operators from it.
    pub async fn open_escrow(
        &self,
        workflow: B256,
        settler: Address,
        deadline_s: u64,
        task_count: u32,
        amount_wei: u128,
    ) -> Result<TxOutcome, ChainError> {
        send(
            "openEscrow",
            self.market
                .openEscrow(workflow, settler, deadline_s, task_count)
                .value(U256::from(amount_wei)),
        )
        .await
    }

    /// Names further settlers of an escrow (requester only): failover matchmakers.
    pub async fn add_settlers(
        &self,
        workflow: B256,
        settlers: &[Address],
    ) -> Result<TxOutcome, ChainError> {
        send(
            "addSettlers",
            self.market.addSettlers(workflow, settlers.to_vec()),
        )
        .await
    }

    /// Whether `who` may settle `workflow`.
    pub async fn is_settler(&self, workflow: B256, who: Address) -> Result<bool, ChainError> {
        self.market
            .isSettler(workflow, who)
            .call()
            .await
            .map_err(|e| contract_err("isSettler", e))
    }

    /// Whether `account` is a registered operator (and its bound node key).
    pub async fn registered_node_key(&self, account: Address) -> Result<Option<B256>, ChainError> {
        let info = self
            .market
            .operatorInfo(account)
            .call()
            .await
            .map_err(|e| contract_err("operatorInfo", e))?;
        Ok((info.nodeKey != B256::ZERO).then_some(info.nodeKey))
    }

    /// Pays a batch (settler only). Each (task, attempt) is packed as `(task << 8) | attempt`.
    pub async fn settle(
        &self,
        workflow: B256,
        payouts: &[OperatorPayout],
    ) -> Result<TxOutcome, ChainError> {
        let batch = payouts
            .iter()
            .map(encode_payout)
            .collect::<Result<Vec<_>, _>>()?;
        send("settle", self.market.settle(workflow, batch)).await
    }

    /// Records a verified final proof (settler or requester).
    pub async fn submit_final_proof(
        &self,
        workflow: B256,
        proof: Bytes,
        public_inputs: Vec<U256>,
    ) -> Result<TxOutcome, ChainError> {
        send(
            "submitFinalProof",
            self.market.submitFinalProof(workflow, proof, public_inputs),
        )
        .await
    }

    /// Returns the unspent escrow to the requester (after the deadline).
    pub async fn refund(&self, workflow: B256) -> Result<TxOutcome, ChainError> {
        send("refund", self.market.refund(workflow)).await
    }

    /// Closes the escrow before its deadline (a settler, once a workflow ended and its work is
    /// paid): what is left is credited to the requester's `claimable`.
    pub async fn release(&self, workflow: B256) -> Result<TxOutcome, ChainError> {
        send("release", self.market.release(workflow)).await
    }

    /// Withdraws everything credited to this account.
    pub async fn claim(&self) -> Result<TxOutcome, ChainError> {
        send("claim", self.market.claim()).await
    }

    // -------------------------------------------------------------- slashing

    /// Reports a missed deadline with the operator's signed acceptance.
    pub async fn slash_missed_deadline(
        &self,
        evidence: &SignedAcceptance,
    ) -> Result<TxOutcome, ChainError> {
        send(
            "slashMissedDeadline",
            self.market.slashMissedDeadline(
                evidence.operator,
                evidence.acceptance.clone(),
                evidence.signature.clone(),
            ),
        )
        .await
    }

    /// Reports a signed final proof that the verifier rejects.
    pub async fn slash_invalid_proof(
        &self,
        evidence: &SignedProofClaim,
    ) -> Result<TxOutcome, ChainError> {
        let c = ProofMarket::ClaimRef {
            workflowId: evidence.workflow,
            task: evidence.task,
            attempt: evidence.attempt,
        };
        send(
            "slashInvalidProof",
            self.market.slashInvalidProof(
                evidence.operator,
                c,
                evidence.proof.clone(),
                evidence.public_inputs.clone(),
                evidence.signature.clone(),
            ),
        )
        .await
    }

    /// Fail fast: this operator gives up an accepted attempt before its deadline.
    pub async fn declare_failure(
        &self,
        acceptance: &ProofMarket::Acceptance,
    ) -> Result<TxOutcome, ChainError> {
        send(
            "declareFailure",
            self.market.declareFailure(acceptance.clone()),
        )
        .await
    }

    // ----------------------------------------------------------------- reads

    /// One operator's reputation and stake.
    pub async fn reputation(
        &self,
        operator: Address,
    ) -> Result<ProofMarket::Reputation, ChainError> {
        self.market
            .reputation(operator)
            .call()
            .await
            .map_err(|e| contract_err("reputation", e))
    }

    /// Many operators' reputations in one call.
    pub async fn reputations(
        &self,
        operators: &[Address],
    ) -> Result<Vec<ProofMarket::Reputation>, ChainError> {
        self.market
            .reputations(operators.to_vec())
            .call()
            .await
            .map_err(|e| contract_err("reputations", e))
    }

    /// An escrow's state (all zero if it does not exist).
    pub async fn escrow(&self, workflow: B256) -> Result<ProofMarket::Escrow, ChainError> {
        self.market
            .escrow(workflow)
            .call()
            .await
            .map_err(|e| contract_err("escrow", e))
    }

    /// Total paid to each operator by `settle` since deployment, wei (sum of `OperatorPaid`
    /// events; what it has claimed since is included).
    pub async fn paid_totals(
        &self,
    ) -> Result<std::collections::BTreeMap<Address, U256>, ChainError> {
        let events = self
            .market
            .OperatorPaid_filter()
            .from_block(0)
            .query()
            .await
            .map_err(|e| contract_err("OperatorPaid logs", e))?;
        let mut totals = std::collections::BTreeMap::new();
        for (e, _log) in events {
            *totals.entry(e.operator).or_insert(U256::ZERO) += e.amount;
        }
        Ok(totals)
    }

    /// What `account` can claim, wei.
    pub async fn claimable(&self, account: Address) -> Result<U256, ChainError> {
        self.market
            .claimable(account)
            .call()
            .await
            .map_err(|e| contract_err("claimable", e))
    }

    /// 0 unpaid, the paid attempt, or 255 closed unpaid.
    pub async fn paid_attempt(&self, workflow: B256, task: u32) -> Result<u8, ChainError> {
        let v = self
            .market
            .paidAttempt(workflow, U256::from(task))
            .call()
            .await
            .map_err(|e| contract_err("paidAttempt", e))?;
        u8::try_from(v)
            .map_err(|_| ChainError::InvalidArgument(format!("paidAttempt returned {v}")))
    }

    /// Wei burned by slashing so far.
    pub async fn total_burned(&self) -> Result<U256, ChainError> {
        self.market
            .totalBurned()
            .call()
            .await
            .map_err(|e| contract_err("totalBurned", e))
    }

    /// Balance of any account, wei.
    pub async fn balance(&self, account: Address) -> Result<U256, ChainError> {
        self.provider
            .get_balance(account)
            .await
            .map_err(|e| rpc_err("eth_getBalance", e))
    }

    /// Timestamp of the latest block (deadlines are compared against block time).
    pub async fn block_timestamp(&self) -> Result<u64, ChainError> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| rpc_err("eth_getBlockByNumber", e))?
            .ok_or_else(|| ChainError::Rpc {
                call: "eth_getBlockByNumber",
                message: "no latest block".into(),
            })?;
        Ok(block.header.timestamp)
    }
}

/// Packs a payout for the contract: tasks as `(task << 8) | attempt`.
pub fn encode_payout(p: &OperatorPayout) -> Result<ProofMarket::Payout, ChainError> {
    let tasks = p
        .tasks
        .iter()
        .map(|&(task, attempt)| {
            if attempt == 0 || attempt > 254 {
                return Err(ChainError::InvalidArgument(format!(
                    "task {task}: attempt {attempt} cannot be paid on-chain (1..=254)"
                )));
            }
            let packed = (u64::from(task) << 8) | u64::from(attempt);
            alloy::primitives::aliases::U40::try_from(packed)
                .map_err(|_| ChainError::InvalidArgument(format!("task {task} does not fit")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ProofMarket::Payout {
        operator: p.operator,
        amount: p.amount,
        tasks,
    })
}

async fn send<P, D>(call: &'static str, builder: CallBuilder<P, D>) -> Result<TxOutcome, ChainError>
where
    P: Provider,
    D: CallDecoder,
{
    let pending = builder.send().await.map_err(|e| contract_err(call, e))?;
    let receipt = wait_receipt(call, pending.provider(), *pending.tx_hash()).await?;
    let outcome = TxOutcome {
        tx_hash: receipt.transaction_hash,
        block_number: receipt.block_number.unwrap_or_default(),
        gas_used: receipt.gas_used,
        fee_wei: U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price),
    };
    if !receipt.status() {
        return Err(ChainError::TxFailed {
            call,
            tx: receipt.transaction_hash,
        });
    }
    tracing::debug!(call, gas = outcome.gas_used, tx = %outcome.tx_hash, "transaction mined");
    Ok(outcome)
}

/// Polls for the receipt directly (a dev chain mines at once; no block-watching heartbeat).
async fn wait_receipt<P: Provider>(
    call: &'static str,
    provider: &P,
    tx: B256,
) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
    let start = std::time::Instant::now();
    let mut delay = std::time::Duration::from_millis(5);
    loop {
        match provider.get_transaction_receipt(tx).await {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(e) => {
                return Err(ChainError::Rpc {
                    call,
                    message: format!("receipt of {tx}: {e}"),
                })
            }
        }
        if start.elapsed() > RECEIPT_TIMEOUT {
            return Err(ChainError::Rpc {
                call,
                message: format!("no receipt for {tx} after {RECEIPT_TIMEOUT:?}"),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_millis(500));
    }
}

/// How long to wait for a transaction to be mined.
const RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Turns a contract error into a readable one, decoding the market's custom errors.
fn contract_err(call: &'static str, e: alloy::contract::Error) -> ChainError {
    if let Some(data) = e.as_revert_data() {
        let reason = match ProofMarket::ProofMarketErrors::abi_decode(&data) {
            Ok(decoded) => format!("{decoded:?}"),
            Err(_) => format!("revert data 0x{}", alloy::primitives::hex::encode(&data)),
        };
        return ChainError::Reverted { call, reason };
    }
    ChainError::Rpc {
        call,
        message: e.to_string(),
    }
}

fn rpc_err(call: &'static str, e: impl std::fmt::Display) -> ChainError {
    ChainError::Rpc {
        call,
        message: e.to_string(),
    }
}
