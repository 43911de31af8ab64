//! The witness stage's output: a batch's data, derived deterministically from the block number
//! (a stand-in for real transaction data), split into fixed-size leaf chunks.
//!
//! ```text
//! offset  size                      field
//! 0       4                         magic "PMWT"
//! 4       1                         format version (1)
//! 5       8                         block (u64, big-endian)
//! 13      4                         leaves L (u32, big-endian)
//! 17      4                         chunk length C (u32, big-endian; must equal LEAF_CHUNK)
//! 21      32*L*C                    leaf data, canonical big-endian BN254 scalars, leaf-major
//! ```

use ark_bn254::Fr;
use ark_ff::PrimeField;

use crate::circuits::LEAF_CHUNK;
use crate::error::{Error, Result};
use crate::field;

pub const MAGIC: &[u8; 4] = b"PMWT";
pub const VERSION: u8 = 1;
const HEADER: usize = 21;
/// Largest batch a witness may describe (4 MiB of data at 32 scalars per leaf).
pub const MAX_LEAVES: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub block: u64,
    /// `leaves[i]` is leaf i's chunk of exactly `LEAF_CHUNK` scalars.
    pub leaves: Vec<Vec<Fr>>,
}

impl Witness {
    /// The batch data of `block`, split into `leaves` chunks.
    pub fn generate(block: u64, leaves: u32) -> Result<Self> {
        if leaves == 0 || leaves > MAX_LEAVES {
            return Err(Error::BadInput(format!(
                "--leaves {leaves} is out of range 1..={MAX_LEAVES}"
            )));
        }
        let mut hasher = blake3::Hasher::new_derive_key("proofmesh-prover witness v1");
        hasher.update(&block.to_be_bytes());
        let mut xof = hasher.finalize_xof();
        let mut word = [0u8; 32];
        let leaves = (0..leaves)
            .map(|_| {
                (0..LEAF_CHUNK)
                    .map(|_| {
                        xof.fill(&mut word);
                        Fr::from_be_bytes_mod_order(&word)
                    })
                    .collect()
            })
            .collect();
        Ok(Self { block, leaves })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 32 * LEAF_CHUNK * self.leaves.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.block.to_be_bytes());
        out.extend_from_slice(&(self.leaves.len() as u32).to_be_bytes());
        out.extend_from_slice(&(LEAF_CHUNK as u32).to_be_bytes());
        for x in self.leaves.iter().flatten() {
            out.extend_from_slice(&field::to_be_bytes(x));
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::MalformedWitness(m);
        crate::header::check(bytes, MAGIC, VERSION, HEADER).map_err(bad)?;
        let u32_at = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let mut block = [0u8; 8];
        block.copy_from_slice(&bytes[5..13]);
        let block = u64::from_be_bytes(block);
        let leaves = u32_at(13);
        let chunk = u32_at(17);
        if leaves == 0 || leaves > MAX_LEAVES {
            return Err(bad(format!(
                "{leaves} leaves is out of range 1..={MAX_LEAVES}"
            )));
        }
        if chunk as usize != LEAF_CHUNK {
            return Err(bad(format!(
                "chunk length {chunk}, this prover's leaf circuit takes {LEAF_CHUNK}"
            )));
        }
        let expected = HEADER + 32 * LEAF_CHUNK * leaves as usize;
        if bytes.len() != expected {
            return Err(bad(format!(
                "{} bytes, expected exactly {expected} for {leaves} leaves",
                bytes.len()
            )));
        }
        let mut data = bytes[HEADER..].chunks_exact(32).enumerate().map(|(i, w)| {
            let mut word = [0u8; 32];
            word.copy_from_slice(w);
            field::from_be_bytes(&word)
                .ok_or_else(|| bad(format!("scalar {i} of the data is not canonical")))
        });
        let mut out = Vec::with_capacity(leaves as usize);
        for _ in 0..leaves {
            let chunk = (&mut data).take(LEAF_CHUNK).collect::<Result<Vec<Fr>>>()?;
            out.push(chunk);
        }
        Ok(Self { block, leaves: out })
    }
}
