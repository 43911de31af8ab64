//! The one hash every circuit uses: a Poseidon sponge over the BN254 scalar field, with a native
//! implementation (to compute public inputs) and an in-circuit gadget (to prove them) that must
//! agree bit for bit.

use std::sync::OnceLock;

use ark_bn254::Fr;
use ark_crypto_primitives::sponge::constraints::CryptographicSpongeVar;
use ark_crypto_primitives::sponge::poseidon::constraints::PoseidonSpongeVar;
use ark_crypto_primitives::sponge::poseidon::{
    find_poseidon_ark_and_mds, PoseidonConfig, PoseidonSponge,
};
use ark_crypto_primitives::sponge::CryptographicSponge;
use ark_r1cs_std::fields::fp::FpVar;
use ark_relations::gr1cs::{ConstraintSystemRef, SynthesisError};

/// Width-3 Poseidon (rate 2, capacity 1), x^5 S-box, 8 full and 57 partial rounds: the standard
/// 128-bit-security instance for BN254 (as in circomlib / the Poseidon paper's table).
const RATE: usize = 2;
const CAPACITY: usize = 1;
const FULL_ROUNDS: usize = 8;
const PARTIAL_ROUNDS: usize = 57;
const ALPHA: u64 = 5;

/// The Poseidon parameters, derived once (the Grain LFSR derivation takes a few milliseconds).
pub fn config() -> &'static PoseidonConfig<Fr> {
    static CONFIG: OnceLock<PoseidonConfig<Fr>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let (ark, mds) = find_poseidon_ark_and_mds::<Fr>(
            254,
            RATE,
            FULL_ROUNDS as u64,
            PARTIAL_ROUNDS as u64,
            0,
        );
        PoseidonConfig::new(FULL_ROUNDS, PARTIAL_ROUNDS, ALPHA, mds, ark, RATE, CAPACITY)
    })
}

/// Native Poseidon hash of a sequence of field elements (absorb all, squeeze one).
pub fn hash(inputs: &[Fr]) -> Fr {
    let mut sponge = PoseidonSponge::new(config());
    for x in inputs {
        sponge.absorb(x);
    }
    let out: Vec<Fr> = sponge.squeeze_field_elements(1);
    out[0]
}

/// In-circuit Poseidon hash; constrains the result to equal [`hash`] of the same values.
pub fn hash_gadget(
    cs: ConstraintSystemRef<Fr>,
    inputs: &[FpVar<Fr>],
) -> Result<FpVar<Fr>, SynthesisError> {
    let mut sponge = PoseidonSpongeVar::new(cs, config());
    for x in inputs {
        sponge.absorb(x)?;
    }
    let mut out = sponge.squeeze_field_elements(1)?;
    out.pop().ok_or(SynthesisError::Unsatisfiable)
}
