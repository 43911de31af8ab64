//! Evidence an operator signs, and the binding of its two keys.
//!
//! An operator has two keys. Its ed25519 **node key** signs off-chain protocol messages
//! (envelopes, results). Its Ethereum account key signs **on-chain evidence** as EIP-712
//! typed data, because the EVM checks secp256k1 (`ecrecover`, ~3k gas) but not ed25519. Both
//! are bound at registration: the Ethereum account sends `register(nodeKey, ...)` itself, and
//! the node key signs [`binding_message`] (emitted in `OperatorRegistered` for indexers to
//! check with [`verify_binding`]).

use crate::bindings::ProofMarket;
use crate::error::ChainError;
use alloy::primitives::{Address, Bytes, Signature, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::{eip712_domain, Eip712Domain, SolStruct};
use proofmesh_protocol::identity::{
    Keypair, PublicKey, Signature as NodeSignature, SignatureError,
};

alloy::sol! {
    /// EIP-712 type of a final-proof claim (must match `PROOF_CLAIM_TYPEHASH` in the contract).
    #[derive(Debug, PartialEq, Eq)]
    struct ProofClaim {
        bytes32 workflowId;
        uint32 task;
        uint32 attempt;
        bytes proof;
        uint256[] publicInputs;
    }
}

/// The EIP-712 domain of one deployed market.
pub fn domain(chain_id: u64, market: Address) -> Eip712Domain {
    eip712_domain! {
        name: "ProofMarket",
        version: "1",
        chain_id: chain_id,
        verifying_contract: market,
    }
}

/// An operator's signed acceptance of one attempt: the evidence for a missed-deadline slash,
/// and what the operator hands to `declareFailure` to fail fast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedAcceptance {
    /// The operator's Ethereum address (the signer).
    pub operator: Address,
    /// What was accepted. `deadline` is unix seconds, `price` wei.
    pub acceptance: ProofMarket::Acceptance,
    /// 65 bytes: r, s, v (27/28).
    pub signature: Bytes,
}

impl SignedAcceptance {
    /// Signs `acceptance` with the operator's Ethereum key.
    pub fn sign(
        signer: &PrivateKeySigner,
        chain_id: u64,
        market: Address,
        acceptance: ProofMarket::Acceptance,
    ) -> Result<Self, ChainError> {
        let hash = acceptance.eip712_signing_hash(&domain(chain_id, market));
        let sig = signer
            .sign_hash_sync(&hash)
            .map_err(|e| ChainError::Signing(e.to_string()))?;
        Ok(SignedAcceptance {
            operator: signer.address(),
            acceptance,
            signature: Bytes::copy_from_slice(&sig.as_bytes()),
        })
    }

    /// Checks that `operator` signed this acceptance for this market.
    pub fn verify(&self, chain_id: u64, market: Address) -> Result<(), ChainError> {
        let hash = self
            .acceptance
            .eip712_signing_hash(&domain(chain_id, market));
        check_signer(self.operator, hash, &self.signature)
    }
}

/// Builds an acceptance from protocol values (deadline in ms, rounded up to whole seconds so
/// the on-chain deadline is never earlier than the off-chain one).
pub fn acceptance(
    workflow: B256,
    task: u32,
    attempt: u32,
    deadline_ms: u64,
    price_wei: u128,
) -> ProofMarket::Acceptance {
    ProofMarket::Acceptance {
        workflowId: workflow,
        task,
        attempt,
        deadline: deadline_ms.div_ceil(1000),
        price: price_wei,
    }
}

/// An operator's signed claim that `proof` (with `public_inputs`) is its final proof for one
/// attempt: if the verifier rejects the proof, this is the evidence for an invalid-proof slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedProofClaim {
    /// The operator's Ethereum address (the signer).
    pub operator: Address,
    /// Workflow, task and attempt.
    pub workflow: B256,
    /// Task index.
    pub task: u32,
    /// Attempt number (from 1).
    pub attempt: u32,
    /// The proof bytes exactly as the verifier takes them.
    pub proof: Bytes,
    /// Its public inputs.
    pub public_inputs: Vec<U256>,
    /// 65 bytes: r, s, v (27/28).
    pub signature: Bytes,
}

impl SignedProofClaim {
    /// Signs a claim with the operator's Ethereum key.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        signer: &PrivateKeySigner,
        chain_id: u64,
        market: Address,
        workflow: B256,
        task: u32,
        attempt: u32,
        proof: Bytes,
        public_inputs: Vec<U256>,
    ) -> Result<Self, ChainError> {
        let mut claim = SignedProofClaim {
            operator: signer.address(),
            workflow,
            task,
            attempt,
            proof,
            public_inputs,
            signature: Bytes::new(),
        };
        let sig = signer
            .sign_hash_sync(&claim.signing_hash(chain_id, market))
            .map_err(|e| ChainError::Signing(e.to_string()))?;
        claim.signature = Bytes::copy_from_slice(&sig.as_bytes());
        Ok(claim)
    }

    /// The EIP-712 digest the operator signs.
    pub fn signing_hash(&self, chain_id: u64, market: Address) -> B256 {
        ProofClaim {
            workflowId: self.workflow,
            task: self.task,
            attempt: self.attempt,
            proof: self.proof.clone(),
            publicInputs: self.public_inputs.clone(),
        }
        .eip712_signing_hash(&domain(chain_id, market))
    }

    /// Checks that `operator` signed this claim for this market.
    pub fn verify(&self, chain_id: u64, market: Address) -> Result<(), ChainError> {
        check_signer(
            self.operator,
            self.signing_hash(chain_id, market),
            &self.signature,
        )
    }
}

fn check_signer(expected: Address, hash: B256, sig: &[u8]) -> Result<(), ChainError> {
    let sig = Signature::try_from(sig)
        .map_err(|e| ChainError::Signing(format!("malformed signature: {e}")))?;
    let signer = sig
        .recover_address_from_prehash(&hash)
        .map_err(|e| ChainError::Signing(format!("unrecoverable signature: {e}")))?;
    if signer != expected {
        return Err(ChainError::Signing(format!(
            "signed by {signer}, expected {expected}"
        )));
    }
    Ok(())
}

/// Domain tag of the node-key binding.
pub const BINDING_TAG: &[u8] = b"proofmesh-operator-binding-v1";

/// What the ed25519 node key signs to bind itself to an Ethereum account on one market:
/// `BINDING_TAG || chain_id (8 bytes BE) || market (20) || account (20)`.
pub fn binding_message(chain_id: u64, market: Address, account: Address) -> Vec<u8> {
    let mut m = Vec::with_capacity(BINDING_TAG.len() + 48);
    m.extend_from_slice(BINDING_TAG);
    m.extend_from_slice(&chain_id.to_be_bytes());
    m.extend_from_slice(market.as_slice());
    m.extend_from_slice(account.as_slice());
    m
}

/// The node key's signature over the binding.
pub fn sign_binding(
    node_key: &Keypair,
    chain_id: u64,
    market: Address,
    account: Address,
) -> NodeSignature {
    node_key.sign(&binding_message(chain_id, market, account))
}

/// Checks a registration's binding signature (from the `OperatorRegistered` event).
pub fn verify_binding(
    node_key: &PublicKey,
    signature: &[u8],
    chain_id: u64,
    market: Address,
    account: Address,
) -> Result<(), SignatureError> {
    let sig: [u8; 64] = signature.try_into().map_err(|_| {
        SignatureError::BadSignature(format!(
            "{node_key:?}: binding signature is {} bytes, not 64",
            signature.len()
        ))
    })?;
    node_key.verify(
        &binding_message(chain_id, market, account),
        &NodeSignature(sig),
    )
}

/// The text a requester signs (EIP-191 `personal_sign`) to cancel its workflow `workflow`
/// (its [`crate::workflow_key`]) whose escrow is on the market at `market` on `chain_id`: bound
/// to one workflow on one market, so it cancels nothing else.
pub fn cancel_text(workflow: B256, chain_id: u64, market: Address) -> String {
    format!("proofmesh: cancel workflow {workflow:#x} on chain {chain_id}, market {market:#x}")
}

/// The requester's signature over [`cancel_text`] (65 bytes: r, s, v).
pub fn sign_cancel(
    signer: &PrivateKeySigner,
    workflow: B256,
    chain_id: u64,
    market: Address,
) -> Result<Vec<u8>, ChainError> {
    let text = cancel_text(workflow, chain_id, market);
    let sig = signer
        .sign_message_sync(text.as_bytes())
        .map_err(|e| ChainError::Signing(e.to_string()))?;
    Ok(sig.as_bytes().to_vec())
}

/// The account that signed [`cancel_text`] for this workflow and market.
pub fn cancel_signer(
    signature: &[u8],
    workflow: B256,
    chain_id: u64,
    market: Address,
) -> Result<Address, ChainError> {
    let sig = Signature::try_from(signature)
        .map_err(|e| ChainError::Signing(format!("malformed signature: {e}")))?;
    sig.recover_address_from_msg(cancel_text(workflow, chain_id, market).as_bytes())
        .map_err(|e| ChainError::Signing(format!("unrecoverable signature: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_signature_names_its_signer_for_that_workflow_and_market_only() {
        let requester = PrivateKeySigner::random();
        let market = Address::repeat_byte(0x42);
        let wf = B256::repeat_byte(0x07);
        let sig = sign_cancel(&requester, wf, 31337, market).expect("sign");
        assert_eq!(sig.len(), 65);
        assert_eq!(
            cancel_signer(&sig, wf, 31337, market).expect("recover"),
            requester.address()
        );
        // Another workflow, chain or market recovers someone else.
        for (w, c, m) in [
            (B256::repeat_byte(0x08), 31337, market),
            (wf, 1, market),
            (wf, 31337, Address::repeat_byte(0x43)),
        ] {
            assert_ne!(
                cancel_signer(&sig, w, c, m).ok(),
                Some(requester.address()),
                "{w} {c} {m}"
            );
        }
        assert!(cancel_signer(&sig[..64], wf, 31337, market).is_err());
    }
}
