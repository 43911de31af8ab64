//! The versioned proof file every stage writes (documented in docs/proving.md):
//!
//! ```text
//! offset  size      field
//! 0       4         magic "PMPF"
//! 4       1         format version (1)
//! 5       1         circuit tag (1 leaf, 2 aggregate, 3 final)
//! 6       1         number of public inputs n (4)
//! 7       32*n      public inputs, each a canonical big-endian BN254 scalar
//! 7+32n   128       Groth16 proof, arkworks compressed: A (G1, 32) | B (G2, 64) | C (G1, 32)
//! ```
//!
//! Decoding is strict: exact length, canonical scalars, points on the curve and in the subgroup.

use ark_bn254::{Bn254, Fr};
use ark_groth16::Proof;
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};

use crate::circuits::{CircuitKind, Statement, NUM_PUBLIC_INPUTS};
use crate::error::{Error, Result};
use crate::field;

pub const MAGIC: &[u8; 4] = b"PMPF";
pub const VERSION: u8 = 1;
/// Compressed Groth16/BN254 proof size.
pub const PROOF_BYTES: usize = 128;
const HEADER: usize = 7;
/// Total file size for the fixed number of public inputs.
pub const FILE_BYTES: usize = HEADER + 32 * NUM_PUBLIC_INPUTS + PROOF_BYTES;

/// A decoded (not yet verified) proof file.
#[derive(Debug, Clone, PartialEq)]
pub struct ProofFile {
    pub circuit: CircuitKind,
    pub statement: Statement,
    pub proof: Proof<Bn254>,
}

impl ProofFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FILE_BYTES);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.circuit.tag());
        out.push(NUM_PUBLIC_INPUTS as u8);
        for x in self.statement.to_field_elements() {
            out.extend_from_slice(&field::to_be_bytes(&x));
        }
        // Serializing a valid in-memory proof into a Vec cannot fail.
        let before = out.len();
        if self.proof.serialize_compressed(&mut out).is_err() || out.len() - before != PROOF_BYTES {
            unreachable!("a Groth16/BN254 proof always compresses to {PROOF_BYTES} bytes");
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::MalformedProof(m);
        crate::header::check(bytes, MAGIC, VERSION, HEADER).map_err(bad)?;
        let circuit = CircuitKind::from_tag(bytes[5])
            .ok_or_else(|| bad(format!("unknown circuit tag {}", bytes[5])))?;
        if usize::from(bytes[6]) != NUM_PUBLIC_INPUTS {
            return Err(bad(format!(
                "{} public inputs, the {circuit} circuit has {NUM_PUBLIC_INPUTS}",
                bytes[6]
            )));
        }
        if bytes.len() != FILE_BYTES {
            return Err(bad(format!(
                "{} bytes, expected exactly {FILE_BYTES}",
                bytes.len()
            )));
        }
        let mut inputs = [Fr::from(0u64); NUM_PUBLIC_INPUTS];
        for (i, slot) in inputs.iter_mut().enumerate() {
            let start = HEADER + 32 * i;
            let mut word = [0u8; 32];
            word.copy_from_slice(&bytes[start..start + 32]);
            *slot = field::from_be_bytes(&word)
                .ok_or_else(|| bad(format!("public input {i} is not a canonical BN254 scalar")))?;
        }
        let small = |i: usize, name: &str| {
            field::to_u64(&inputs[i])
                .ok_or_else(|| bad(format!("public input {i} ({name}) does not fit in 64 bits")))
        };
        let statement = Statement {
            block: small(0, "block")?,
            first: small(1, "first")?,
            count: small(2, "count")?,
            digest: inputs[3],
        };
        let proof =
            Proof::<Bn254>::deserialize_compressed(&bytes[HEADER + 32 * NUM_PUBLIC_INPUTS..])
                .map_err(|e| bad(format!("proof points: {e}")))?;
        Ok(Self {
            circuit,
            statement,
            proof,
        })
    }
}
