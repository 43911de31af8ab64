//! Circuit keys from an INSECURE, deterministic development setup.
//!
//! Each circuit's Groth16 parameters come from a ChaCha20 RNG seeded with a fixed, public string,
//! so anyone can recompute the toxic waste and forge proofs: fine for a dev network, never for
//! real value (a deployment would run a multi-party ceremony and ship its keys).
//!
//! The verifying keys are embedded in the binary (`operator/prover/keys/*.vk`, written by
//! `proofmesh-prover export-keys`), so verification needs no setup and no disk. Proving keys are
//! regenerated from the seed on first use and cached on disk (`$PROOFMESH_PROVER_CACHE`, else
//! `$XDG_CACHE_HOME/proofmesh-prover`, else `~/.cache/proofmesh-prover`); a cached key is only
//! used if its verifying key equals the embedded one.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ark_bn254::{Bn254, Fr};
use ark_groth16::{Groth16, PreparedVerifyingKey, ProvingKey, VerifyingKey};
use ark_relations::gr1cs::ConstraintSynthesizer;
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_snark::SNARK;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::circuits::{AggregateCircuit, CircuitKind, FinalCircuit, LeafCircuit};
use crate::error::{Error, Result};

/// Bump when the setup procedure changes (invalidates cached proving keys by name).
const SETUP_VERSION: &str = "v1";

const LEAF_VK: &[u8] = include_bytes!("../keys/leaf.vk");
const AGGREGATE_VK: &[u8] = include_bytes!("../keys/aggregate.vk");
const FINAL_VK: &[u8] = include_bytes!("../keys/final.vk");

/// The embedded, compressed verifying key bytes of a circuit.
pub fn embedded_vk_bytes(kind: CircuitKind) -> &'static [u8] {
    match kind {
        CircuitKind::Leaf => LEAF_VK,
        CircuitKind::Aggregate => AGGREGATE_VK,
        CircuitKind::Final => FINAL_VK,
    }
}

/// The embedded verifying key of a circuit.
pub fn verifying_key(kind: CircuitKind) -> Result<&'static VerifyingKey<Bn254>> {
    Ok(&prepared_verifying_key(kind)?.vk)
}

/// The embedded verifying key, prepared for fast verification (parsed once per process).
pub fn prepared_verifying_key(kind: CircuitKind) -> Result<&'static PreparedVerifyingKey<Bn254>> {
    static PVKS: [OnceLock<Result<PreparedVerifyingKey<Bn254>, String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = &PVKS[usize::from(kind.tag() - 1)];
    slot.get_or_init(|| {
        let vk = VerifyingKey::<Bn254>::deserialize_compressed(embedded_vk_bytes(kind)).map_err(
            |e| {
                format!(
                    "embedded {kind} verifying key is missing or corrupt ({e}); \
                     run `proofmesh-prover export-keys --out operator/prover/keys` and rebuild"
                )
            },
        )?;
        Ok(ark_groth16::prepare_verifying_key(&vk))
    })
    .as_ref()
    .map_err(|e| Error::Keys(e.clone()))
}

fn seeded_rng(kind: CircuitKind) -> ChaCha20Rng {
    let seed = blake3::hash(
        format!(
            "proofmesh-prover/INSECURE-dev-setup/{SETUP_VERSION}/{}",
            kind.name()
        )
        .as_bytes(),
    );
    ChaCha20Rng::from_seed(*seed.as_bytes())
}

fn run_setup<C: ConstraintSynthesizer<Fr>>(
    kind: CircuitKind,
    circuit: C,
) -> Result<ProvingKey<Bn254>> {
    let mut rng = seeded_rng(kind);
    let (pk, _vk) = Groth16::<Bn254>::circuit_specific_setup(circuit, &mut rng)
        .map_err(|e| Error::Keys(format!("{kind} setup failed: {e}")))?;
    Ok(pk)
}

/// Runs the deterministic setup of a circuit (no cache). Same output on every machine.
pub fn setup(kind: CircuitKind) -> Result<ProvingKey<Bn254>> {
    match kind {
        CircuitKind::Leaf => run_setup(kind, LeafCircuit::blank()),
        CircuitKind::Aggregate => run_setup(kind, AggregateCircuit::blank()),
        CircuitKind::Final => run_setup(kind, FinalCircuit::blank()),
    }
}

/// Compressed bytes of a verifying key (the format of `keys/*.vk`).
pub fn vk_to_bytes(vk: &VerifyingKey<Bn254>) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = vk.serialize_compressed(&mut out);
    out
}

/// Where proving keys are cached.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PROOFMESH_PROVER_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("proofmesh-prover"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("proofmesh-prover"))
}

fn cache_path(dir: &Path, kind: CircuitKind) -> PathBuf {
    // The embedded key's hash in the name: a changed circuit never picks up an old key.
    let tag = blake3::hash(embedded_vk_bytes(kind)).to_hex();
    dir.join(format!(
        "{}-{SETUP_VERSION}-{}.pk",
        kind.name(),
        &tag.as_str()[..16]
    ))
}

fn load_cached(path: &Path, expected: &VerifyingKey<Bn254>) -> Option<ProvingKey<Bn254>> {
    let bytes = std::fs::read(path).ok()?;
    // Unchecked: the file is our own local cache and the vk comparison below catches a stale or
    // foreign key; a corrupted point elsewhere only yields proofs that fail verification.
    let pk = ProvingKey::<Bn254>::deserialize_uncompressed_unchecked(bytes.as_slice()).ok()?;
    (pk.vk == *expected).then_some(pk)
}

fn store_cached(path: &Path, pk: &ProvingKey<Bn254>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = Vec::new();
    pk.serialize_uncompressed(&mut bytes)
        .map_err(std::io::Error::other)?;
    // Write then rename, so concurrent stages never read a half-written key.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, path)
}

/// The proving key of a circuit: from memory, the disk cache, or a fresh deterministic setup.
/// Fails if the setup no longer matches the embedded verifying key (stale `keys/`).
pub fn proving_key(kind: CircuitKind) -> Result<&'static ProvingKey<Bn254>> {
    static PKS: [OnceLock<&'static ProvingKey<Bn254>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    static INIT: Mutex<()> = Mutex::new(());
    let slot = &PKS[usize::from(kind.tag() - 1)];
    if let Some(pk) = slot.get() {
        return Ok(pk);
    }
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pk) = slot.get() {
        return Ok(pk);
    }
    let expected = verifying_key(kind)?;
    let cached = cache_dir().map(|d| cache_path(&d, kind));
    let pk = match cached.as_deref().and_then(|p| load_cached(p, expected)) {
        Some(pk) => pk,
        None => {
            let started = std::time::Instant::now();
            let pk = setup(kind)?;
            tracing::info!(circuit = %kind, ms = started.elapsed().as_millis() as u64, "ran setup");
            if pk.vk != *expected {
                return Err(Error::Keys(format!(
                    "the {kind} circuit's setup no longer matches its embedded verifying key; \
                     run `proofmesh-prover export-keys --out operator/prover/keys` and \
                     `proofmesh-prover export-verifier --out contracts/src/generated`, then rebuild"
                )));
            }
            if let Some(path) = cached.as_deref() {
                if let Err(e) = store_cached(path, &pk) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot cache proving key");
                }
            }
            pk
        }
    };
    // Leaked once per circuit per process: keys live as long as the process anyway.
    let pk: &'static ProvingKey<Bn254> = Box::leak(Box::new(pk));
    let _ = slot.set(pk);
    Ok(pk)
}
