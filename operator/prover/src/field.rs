//! Canonical 32-byte big-endian encoding of BN254 scalars (the same bytes as a Solidity
//! `uint256`), rejecting non-canonical values (>= the field modulus).

use ark_bn254::Fr;
use ark_ff::{BigInteger, PrimeField};

pub fn to_be_bytes(x: &Fr) -> [u8; 32] {
    let bytes = x.into_bigint().to_bytes_be();
    let mut out = [0u8; 32];
    out[32 - bytes.len()..].copy_from_slice(&bytes);
    out
}

/// `None` when the integer is not below the field modulus.
pub fn from_be_bytes(bytes: &[u8; 32]) -> Option<Fr> {
    let x = Fr::from_be_bytes_mod_order(bytes);
    (to_be_bytes(&x) == *bytes).then_some(x)
}

/// The value as a u64, or `None` when it does not fit.
pub fn to_u64(x: &Fr) -> Option<u64> {
    let bytes = to_be_bytes(x);
    if bytes[..24].iter().any(|b| *b != 0) {
        return None;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[24..]);
    Some(u64::from_be_bytes(low))
}
