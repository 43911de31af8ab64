//! The proving stages as pure functions of their input bytes. The CLI (and the local pipeline)
//! only add file I/O around these.

use ark_bn254::{Bn254, Fr};
use ark_groth16::Groth16;
use ark_relations::gr1cs::ConstraintSynthesizer;
use ark_snark::SNARK;

use crate::circuits::{
    aggregate_digest, final_commitment, leaf_digest, AggregateCircuit, CircuitKind, FinalCircuit,
    LeafCircuit, Statement, MAX_ARITY,
};
use crate::error::{Error, Result};
use crate::keys;
use crate::proof_file::ProofFile;
use crate::witness::Witness;

/// What a valid proof attests: its circuit and public statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicInputs {
    pub circuit: CircuitKind,
    pub block: u64,
    /// First leaf covered (the leaf index for a leaf proof; 0 for the final proof).
    pub first: u64,
    /// Number of leaves covered.
    pub count: u64,
    /// The digest (leaf, aggregate) or batch commitment (final), as a big-endian scalar.
    pub digest: [u8; 32],
}

impl PublicInputs {
    fn from_file(file: &ProofFile) -> Self {
        Self {
            circuit: file.circuit,
            block: file.statement.block,
            first: file.statement.first,
            count: file.statement.count,
            digest: crate::field::to_be_bytes(&file.statement.digest),
        }
    }
}

/// Decodes and verifies a proof file of any circuit.
pub fn verify_proof_file(bytes: &[u8]) -> Result<ProofFile> {
    let file = ProofFile::decode(bytes)?;
    let pvk = keys::prepared_verifying_key(file.circuit)?;
    let inputs = file.statement.to_field_elements();
    match Groth16::<Bn254>::verify_with_processed_vk(pvk, &inputs, &file.proof) {
        Ok(true) => Ok(file),
        _ => Err(Error::InvalidProof(file.circuit)),
    }
}

/// Decodes and verifies a proof file of any circuit; returns what it attests.
pub fn verify_proof_bytes(bytes: &[u8]) -> Result<PublicInputs> {
    verify_proof_file(bytes).map(|f| PublicInputs::from_file(&f))
}

fn prove<C: ConstraintSynthesizer<Fr>>(
    circuit: CircuitKind,
    statement: Statement,
    c: C,
) -> Result<Vec<u8>> {
    let pk = keys::proving_key(circuit)?;
    // Fresh OS randomness per proof: Groth16's zero-knowledge depends on it.
    let proof =
        Groth16::<Bn254>::prove(pk, c, &mut rand::rngs::OsRng).map_err(|e| Error::Proving {
            circuit,
            reason: e.to_string(),
        })?;
    let file = ProofFile {
        circuit,
        statement,
        proof,
    };
    let bytes = file.encode();
    // A prover must never publish a proof that does not verify (e.g. an unsatisfied witness
    // slips through arkworks' release-mode prover); 2 ms buys that guarantee.
    verify_proof_file(&bytes).map_err(|e| Error::Proving {
        circuit,
        reason: e.to_string(),
    })?;
    Ok(bytes)
}

/// `witness --block N --leaves L`: the batch's data.
pub fn witness(block: u64, leaves: u32) -> Result<Vec<u8>> {
    Ok(Witness::generate(block, leaves)?.encode())
}

/// `leaf --index I`: proves knowledge of leaf I's chunk of the witness.
pub fn leaf(witness_bytes: &[u8], index: u64) -> Result<Vec<u8>> {
    let witness = Witness::decode(witness_bytes)?;
    let chunk = usize::try_from(index)
        .ok()
        .and_then(|i| witness.leaves.get(i))
        .ok_or_else(|| {
            Error::BadInput(format!(
                "--index {index} is out of range: the witness has {} leaves",
                witness.leaves.len()
            ))
        })?;
    let statement = Statement {
        block: witness.block,
        first: index,
        count: 1,
        digest: leaf_digest(witness.block, index, chunk),
    };
    prove(
        CircuitKind::Leaf,
        statement,
        LeafCircuit {
            statement,
            chunk: chunk.clone(),
        },
    )
}

/// `aggregate`: verifies 1..=MAX_ARITY leaf or aggregate proofs of one block covering a
/// contiguous leaf range (in any input order), then proves the digest over their digests.
pub fn aggregate(children: &[Vec<u8>]) -> Result<Vec<u8>> {
    if children.is_empty() || children.len() > MAX_ARITY {
        return Err(Error::BadInput(format!(
            "aggregate takes 1 to {MAX_ARITY} child proofs, got {}",
            children.len()
        )));
    }
    let mut files = Vec::with_capacity(children.len());
    for (i, bytes) in children.iter().enumerate() {
        let file = verify_proof_file(bytes)
            .map_err(|e| Error::BadInput(format!("child proof {i}: {e}")))?;
        if file.circuit == CircuitKind::Final {
            return Err(Error::BadInput(format!(
                "child proof {i} is a final proof; aggregate takes leaf or aggregate proofs"
            )));
        }
        files.push(file);
    }
    files.sort_by_key(|f| f.statement.first);
    let block = files[0].statement.block;
    let first = files[0].statement.first;
    let mut next = first;
    let mut digests = [Fr::from(0u64); MAX_ARITY];
    for (slot, f) in digests.iter_mut().zip(&files) {
        let s = &f.statement;
        if s.block != block {
            return Err(Error::BadInput(format!(
                "children are from different blocks ({block} and {})",
                s.block
            )));
        }
        if s.first != next {
            return Err(Error::BadInput(format!(
                "children's leaf ranges are not contiguous: expected a child starting at leaf \
                 {next}, found one starting at {}",
                s.first
            )));
        }
        next = s
            .first
            .checked_add(s.count)
            .ok_or_else(|| Error::BadInput("children's leaf ranges overflow".to_string()))?;
        *slot = s.digest;
    }
    let count = next - first;
    let statement = Statement {
        block,
        first,
        count,
        digest: aggregate_digest(block, first, count, &digests),
    };
    prove(
        CircuitKind::Aggregate,
        statement,
        AggregateCircuit {
            statement,
            children: digests,
        },
    )
}

/// `final [--leaves L]`: verifies the root proof (covering leaves 0.., all L of them when
/// given) and proves the batch commitment, the statement checked on-chain.
pub fn finalize(root: &[u8], expect_leaves: Option<u64>) -> Result<Vec<u8>> {
    let file = verify_proof_file(root).map_err(|e| Error::BadInput(format!("root proof: {e}")))?;
    if file.circuit == CircuitKind::Final {
        return Err(Error::BadInput(
            "root proof is already a final proof; final takes a leaf or aggregate proof".into(),
        ));
    }
    let s = file.statement;
    if s.first != 0 {
        return Err(Error::BadInput(format!(
            "root proof covers leaves from {}, a final proof must cover the batch from leaf 0",
            s.first
        )));
    }
    if let Some(expected) = expect_leaves {
        if s.count != expected {
            return Err(Error::BadInput(format!(
                "root proof covers {} leaves, --leaves says the batch has {expected}",
                s.count
            )));
        }
    }
    let statement = Statement {
        block: s.block,
        first: 0,
        count: s.count,
        digest: final_commitment(s.block, s.count, s.digest),
    };
    prove(
        CircuitKind::Final,
        statement,
        FinalCircuit {
            statement,
            root: s.digest,
        },
    )
}
