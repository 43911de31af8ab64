//! The operator's Ethereum identity: it signs the on-chain evidence (EIP-712) that the protocol
//! messages carry beside their ed25519 signatures, so a matchmaker can slash it on-chain.

use proofmesh_chain::bindings::ProofMarket;
use proofmesh_chain::evidence::{self, SignedAcceptance, SignedProofClaim};
use proofmesh_chain::{workflow_key, Address, PrivateKeySigner, U256};
use proofmesh_protocol::messages::{Assignment, EthAcceptance, EthAddress, SignedResult};
use proofmesh_protocol::WorkflowId;

/// An Ethereum key bound to one market on one chain.
#[derive(Clone)]
pub struct EthIdentity {
    signer: PrivateKeySigner,
    chain_id: u64,
    market: Address,
}

impl std::fmt::Debug for EthIdentity {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthIdentity")
            .field("address", &self.signer.address())
            .field("chain_id", &self.chain_id)
            .field("market", &self.market)
            .finish()
    }
}

impl EthIdentity {
    /// `signer` on the market at `market` on chain `chain_id`.
    pub fn new(signer: PrivateKeySigner, chain_id: u64, market: Address) -> Self {
        EthIdentity {
            signer,
            chain_id,
            market,
        }
    }

    /// The account's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The address in protocol form.
    pub fn eth_address(&self) -> EthAddress {
        self.signer.address().into_array()
    }

    /// Signs the on-chain acceptance of `a`: the evidence for a missed-deadline slash.
    pub fn sign_acceptance(&self, a: &Assignment) -> Result<EthAcceptance, String> {
        let acc = evidence::acceptance(
            workflow_key(&a.workflow),
            a.task,
            a.attempt,
            a.deadline_ms,
            a.price_wei,
        );
        let deadline_s = acc.deadline;
        let signed = SignedAcceptance::sign(&self.signer, self.chain_id, self.market, acc)
            .map_err(|e| e.to_string())?;
        Ok(EthAcceptance {
            deadline_s,
            price_wei: a.price_wei,
            signature: signed.signature.to_vec(),
        })
    }

    /// Signs the claim that `proof_file` is this operator's final proof for the attempt: the
    /// evidence for an invalid-proof slash if the on-chain verifier rejects it.
    pub fn sign_final_claim(
        &self,
        workflow: &WorkflowId,
        task: u32,
        attempt: u32,
        proof_file: &[u8],
    ) -> Result<Vec<u8>, String> {
        let (proof, inputs) = calldata(proof_file)?;
        let claim = SignedProofClaim::sign(
            &self.signer,
            self.chain_id,
            self.market,
            workflow_key(workflow),
            task,
            attempt,
            proof.into(),
            inputs,
        )
        .map_err(|e| e.to_string())?;
        Ok(claim.signature.to_vec())
    }
}

/// A proof file in the verifier's calldata form: `(proof bytes, public inputs)`.
pub fn calldata(proof_file: &[u8]) -> Result<(Vec<u8>, Vec<U256>), String> {
    let c = proofmesh_prover::solidity::Calldata::from_proof_file(proof_file)
        .map_err(|e| format!("not a proof file the on-chain verifier can take: {e}"))?;
    let inputs = c
        .public_inputs
        .iter()
        .map(|w| U256::from_be_bytes(*w))
        .collect();
    Ok((c.proof, inputs))
}

/// The on-chain acceptance an [`EthAcceptance`] signed, for the acceptance's attempt.
pub fn acceptance_of(
    workflow: &WorkflowId,
    task: u32,
    attempt: u32,
    eth: &EthAcceptance,
) -> ProofMarket::Acceptance {
    ProofMarket::Acceptance {
        workflowId: workflow_key(workflow),
        task,
        attempt,
        deadline: eth.deadline_s,
        price: eth.price_wei,
    }
}

/// The invalid-proof evidence in a signed result carrying an Ethereum claim.
pub fn proof_claim_of(
    result: &SignedResult,
    operator: Address,
    proof_file: &[u8],
) -> Result<SignedProofClaim, String> {
    let signature = result
        .eth_claim
        .clone()
        .ok_or("the result carries no Ethereum claim signature")?;
    let (proof, public_inputs) = calldata(proof_file)?;
    let r = &result.result;
    Ok(SignedProofClaim {
        operator,
        workflow: workflow_key(&r.workflow),
        task: r.task,
        attempt: r.attempt,
        proof: proof.into(),
        public_inputs,
        signature: signature.into(),
    })
}
