//! Node identities: ed25519 keys. Verification is always `verify_strict` (rejects small-order
//! keys and non-canonical signatures), so a signature is valid for exactly one message.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A signing key. Its 32 secret bytes never appear in `Debug` output.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Keypair(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Rebuild from the 32 secret bytes.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Keypair(SigningKey::from_bytes(&secret))
    }

    /// The 32 secret bytes (for writing a key file).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Sign raw bytes. Callers add their own domain separation (see [`crate::envelope`]).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }

    /// The key-file text: two comment lines (what it is, and the public key so `cat` tells which
    /// node it belongs to) and the 32 secret bytes as 64 hex characters. The caller writes it
    /// with mode 0600.
    pub fn to_file_string(&self) -> String {
        format!(
            "# proofmesh node key (ed25519 secret key, hex). Keep this file private.\n# public: {}\n{}\n",
            self.public(),
            hex::encode(self.secret_bytes())
        )
    }

    /// Parse key-file text written by [`Keypair::to_file_string`]: blank lines and `#` comments
    /// are ignored; exactly one line must hold 64 hex characters (optional `0x`). If a
    /// `# public:` comment is present it must match the secret key, which catches a file whose
    /// key line was edited or swapped. Errors never contain secret material.
    pub fn from_file_string(text: &str) -> Result<Keypair, KeyFileError> {
        let mut secret: Option<[u8; 32]> = None;
        let mut claimed_public: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(comment) = line.strip_prefix('#') {
                if let Some(public) = comment.trim().strip_prefix("public:") {
                    claimed_public = Some(public.trim().to_ascii_lowercase());
                }
                continue;
            }
            if line.is_empty() {
                continue;
            }
            if secret.is_some() {
                return Err(KeyFileError::ExtraLine { line: n + 1 });
            }
            let digits = line.strip_prefix("0x").unwrap_or(line);
            if digits.len() != 64 {
                return Err(KeyFileError::Length {
                    line: n + 1,
                    chars: digits.chars().count(),
                });
            }
            let bytes = hex::decode(digits).map_err(|_| KeyFileError::NotHex { line: n + 1 })?;
            let mut arr = [0u8; 32];
            arr.copy_from_slice(&bytes);
            secret = Some(arr);
        }
        let keypair = Keypair::from_secret_bytes(secret.ok_or(KeyFileError::Missing)?);
        if let Some(claimed) = claimed_public {
            let actual = keypair.public().to_hex();
            if claimed.strip_prefix("0x").unwrap_or(&claimed) != actual {
                return Err(KeyFileError::PublicMismatch { claimed, actual });
            }
        }
        Ok(keypair)
    }
}

/// Why key-file text could not be read as a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileError {
    /// No key line at all.
    #[error("no key found: expected a line of 64 hex characters (the 32-byte ed25519 secret)")]
    Missing,
    /// A second non-comment line.
    #[error("line {line}: unexpected second key line; a key file holds exactly one key")]
    ExtraLine {
        /// 1-based line.
        line: usize,
    },
    /// Wrong number of characters.
    #[error("line {line}: key has {chars} characters, expected 64 hex characters")]
    Length {
        /// 1-based line.
        line: usize,
        /// Characters found.
        chars: usize,
    },
    /// Not hex.
    #[error("line {line}: key is not hexadecimal")]
    NotHex {
        /// 1-based line.
        line: usize,
    },
    /// The `# public:` comment names a different key.
    #[error("the file's `# public:` comment says {claimed} but its secret key belongs to {actual}: the file was edited or mixed up")]
    PublicMismatch {
        /// From the comment.
        claimed: String,
        /// Derived from the secret.
        actual: String,
    },
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair(public={})", self.public())
    }
}

/// An ed25519 public key (32 bytes), the identity of a node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct PublicKey(pub [u8; 32]);

/// Why a signature was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The public key bytes are not a valid (or are a weak) ed25519 point.
    #[error("invalid public key {0}")]
    BadKey(String),
    /// The signature does not verify for this key and message.
    #[error("signature does not verify for key {0}")]
    BadSignature(String),
}

/// Decompressed keys of recent signers: decompressing a point costs about a third of a
/// verification, and a network has few signers that each sign many messages.
static VERIFYING_KEYS: std::sync::OnceLock<
    std::sync::Mutex<std::collections::HashMap<[u8; 32], VerifyingKey>>,
> = std::sync::OnceLock::new();

/// Past this many cached keys the cache starts over (bounds memory against key floods).
const VERIFYING_KEYS_MAX: usize = 4096;

impl PublicKey {
    /// The decompressed key, refused when invalid or weak (only valid keys are cached).
    fn verifying_key(&self) -> Result<VerifyingKey, SignatureError> {
        let cache = VERIFYING_KEYS.get_or_init(Default::default);
        let lock = || {
            cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(key) = lock().get(&self.0) {
            return Ok(*key);
        }
        let key = VerifyingKey::from_bytes(&self.0)
            .map_err(|_| SignatureError::BadKey(self.to_string()))?;
        if key.is_weak() {
            return Err(SignatureError::BadKey(self.to_string()));
        }
        let mut keys = lock();
        if keys.len() >= VERIFYING_KEYS_MAX {
            keys.clear();
        }
        keys.insert(self.0, key);
        Ok(key)
    }

    /// Verify `sig` over `message` with ed25519 `verify_strict`.
    pub fn verify(&self, message: &[u8], sig: &Signature) -> Result<(), SignatureError> {
        let key = self.verifying_key()?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(message, &sig)
            .map_err(|_| SignatureError::BadSignature(self.to_string()))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex characters (optional 0x).
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s.strip_prefix("0x").unwrap_or(s)).ok()?;
        Some(PublicKey(bytes.try_into().ok()?))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..16])
    }
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..8]))
    }
}

// serde only derives arrays up to 32 elements; encode as a byte string.
impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                let arr: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature(arr))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Signature, A::Error> {
                let mut out = [0u8; 64];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }
        d.deserialize_bytes(V)
    }
}
