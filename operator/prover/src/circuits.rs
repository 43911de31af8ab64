//! The three Groth16 circuits of the pipeline. All share one public-input layout,
//! `[block, first, count, digest]`: the proof speaks for leaves `first .. first+count` of batch
//! `block`, summarized by `digest`.
//!
//! - leaf: `digest = H(LEAF_TAG, block, first, chunk[0..LEAF_CHUNK])` with `count = 1`; the chunk
//!   is private, so the proof shows knowledge of the leaf's data behind a public digest.
//! - aggregate: `digest = H(AGG_TAG, block, first, count, d[0..MAX_ARITY])` over private child
//!   digests (unused slots are zero). The children's proofs are verified natively by the
//!   aggregating stage, not in-circuit: see docs/proving.md.
//! - final: `digest = H(FINAL_TAG, block, first, count, root)` with `first = 0` and a private root
//!   digest; this is the statement checked on-chain.

use ark_bn254::Fr;
use ark_r1cs_std::alloc::AllocVar;
use ark_r1cs_std::eq::EqGadget;
use ark_r1cs_std::fields::fp::FpVar;
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};

use crate::poseidon;

/// Field elements of batch data per leaf. Sized so that a leaf proof takes well under a second on
/// 2 cores (see bench/prover.md).
pub const LEAF_CHUNK: usize = 32;
/// Most children one aggregation proof can combine.
pub const MAX_ARITY: usize = 4;
/// Number of public inputs of every circuit: block, first, count, digest.
pub const NUM_PUBLIC_INPUTS: usize = 4;

/// Domain-separation tags ("pm-leaf", "pm-agg", "pm-final" as big-endian integers), so that a
/// digest of one kind can never be passed off as another.
pub const LEAF_TAG: u64 = 0x70_6d2d_6c65_6166;
pub const AGG_TAG: u64 = 0x706d_2d61_6767;
pub const FINAL_TAG: u64 = 0x706d_2d66_696e_616c;

/// Which circuit a proof belongs to; its byte value is the proof file's circuit tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CircuitKind {
    Leaf = 1,
    Aggregate = 2,
    Final = 3,
}

impl CircuitKind {
    pub const ALL: [CircuitKind; 3] = [
        CircuitKind::Leaf,
        CircuitKind::Aggregate,
        CircuitKind::Final,
    ];

    pub fn tag(self) -> u8 {
        self as u8
    }

    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Self::Leaf),
            2 => Some(Self::Aggregate),
            3 => Some(Self::Final),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Leaf => "leaf",
            Self::Aggregate => "aggregate",
            Self::Final => "final",
        }
    }
}

impl std::fmt::Display for CircuitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Native digest of one leaf's chunk.
pub fn leaf_digest(block: u64, index: u64, chunk: &[Fr]) -> Fr {
    let mut inputs = vec![Fr::from(LEAF_TAG), Fr::from(block), Fr::from(index)];
    inputs.extend_from_slice(chunk);
    poseidon::hash(&inputs)
}

/// Native digest of an aggregation over `children` (at most [`MAX_ARITY`]; missing slots are 0).
pub fn aggregate_digest(block: u64, first: u64, count: u64, children: &[Fr; MAX_ARITY]) -> Fr {
    let mut inputs = vec![
        Fr::from(AGG_TAG),
        Fr::from(block),
        Fr::from(first),
        Fr::from(count),
    ];
    inputs.extend_from_slice(children);
    poseidon::hash(&inputs)
}

/// Native batch commitment proven by the final circuit.
pub fn final_commitment(block: u64, count: u64, root: Fr) -> Fr {
    poseidon::hash(&[
        Fr::from(FINAL_TAG),
        Fr::from(block),
        Fr::from(0u64),
        Fr::from(count),
        root,
    ])
}

/// The public statement `[block, first, count, digest]` shared by all circuits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    pub block: u64,
    pub first: u64,
    pub count: u64,
    pub digest: Fr,
}

impl Statement {
    pub fn to_field_elements(&self) -> Vec<Fr> {
        vec![
            Fr::from(self.block),
            Fr::from(self.first),
            Fr::from(self.count),
            self.digest,
        ]
    }

    /// Allocates the four public inputs in their fixed order.
    fn allocate(&self, cs: &ConstraintSystemRef<Fr>) -> Result<[FpVar<Fr>; 4], SynthesisError> {
        let block = FpVar::new_input(cs.clone(), || Ok(Fr::from(self.block)))?;
        let first = FpVar::new_input(cs.clone(), || Ok(Fr::from(self.first)))?;
        let count = FpVar::new_input(cs.clone(), || Ok(Fr::from(self.count)))?;
        let digest = FpVar::new_input(cs.clone(), || Ok(self.digest))?;
        Ok([block, first, count, digest])
    }
}

/// Knowledge of a leaf's chunk behind its public digest.
#[derive(Clone)]
pub struct LeafCircuit {
    pub statement: Statement,
    pub chunk: Vec<Fr>,
}

impl LeafCircuit {
    /// A circuit with the right shape and dummy values, for key generation.
    pub fn blank() -> Self {
        Self {
            statement: Statement {
                block: 0,
                first: 0,
                count: 1,
                digest: Fr::from(0u64),
            },
            chunk: vec![Fr::from(0u64); LEAF_CHUNK],
        }
    }
}

impl ConstraintSynthesizer<Fr> for LeafCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        if self.chunk.len() != LEAF_CHUNK {
            return Err(SynthesisError::Unsatisfiable);
        }
        let [block, first, count, digest] = self.statement.allocate(&cs)?;
        count.enforce_equal(&FpVar::Constant(Fr::from(1u64)))?;
        let mut inputs = vec![FpVar::Constant(Fr::from(LEAF_TAG)), block, first];
        for x in &self.chunk {
            inputs.push(FpVar::new_witness(cs.clone(), || Ok(*x))?);
        }
        poseidon::hash_gadget(cs, &inputs)?.enforce_equal(&digest)
    }
}

/// Knowledge of child digests whose combination is the public digest.
#[derive(Clone)]
pub struct AggregateCircuit {
    pub statement: Statement,
    pub children: [Fr; MAX_ARITY],
}

impl AggregateCircuit {
    pub fn blank() -> Self {
        Self {
            statement: Statement {
                block: 0,
                first: 0,
                count: 0,
                digest: Fr::from(0u64),
            },
            children: [Fr::from(0u64); MAX_ARITY],
        }
    }
}

impl ConstraintSynthesizer<Fr> for AggregateCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let [block, first, count, digest] = self.statement.allocate(&cs)?;
        let mut inputs = vec![FpVar::Constant(Fr::from(AGG_TAG)), block, first, count];
        for d in &self.children {
            inputs.push(FpVar::new_witness(cs.clone(), || Ok(*d))?);
        }
        poseidon::hash_gadget(cs, &inputs)?.enforce_equal(&digest)
    }
}

/// Knowledge of a root digest covering leaves `0..count` behind the public batch commitment.
#[derive(Clone)]
pub struct FinalCircuit {
    pub statement: Statement,
    pub root: Fr,
}

impl FinalCircuit {
    pub fn blank() -> Self {
        Self {
            statement: Statement {
                block: 0,
                first: 0,
                count: 0,
                digest: Fr::from(0u64),
            },
            root: Fr::from(0u64),
        }
    }
}

impl ConstraintSynthesizer<Fr> for FinalCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let [block, first, count, digest] = self.statement.allocate(&cs)?;
        first.enforce_equal(&FpVar::Constant(Fr::from(0u64)))?;
        let root = FpVar::new_witness(cs.clone(), || Ok(self.root))?;
        let inputs = vec![
            FpVar::Constant(Fr::from(FINAL_TAG)),
            block,
            first,
            count,
            root,
        ];
        poseidon::hash_gadget(cs, &inputs)?.enforce_equal(&digest)
    }
}

/// Number of R1CS constraints of a circuit.
pub fn num_constraints(kind: CircuitKind) -> Result<usize, SynthesisError> {
    let cs = ark_relations::gr1cs::ConstraintSystem::<Fr>::new_ref();
    match kind {
        CircuitKind::Leaf => LeafCircuit::blank().generate_constraints(cs.clone())?,
        CircuitKind::Aggregate => AggregateCircuit::blank().generate_constraints(cs.clone())?,
        CircuitKind::Final => FinalCircuit::blank().generate_constraints(cs.clone())?,
    }
    cs.finalize();
    Ok(cs.num_constraints())
}
