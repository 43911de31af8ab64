//! One key, two names: the node's protocol [`Keypair`] is also its libp2p identity, so a
//! [`PeerId`] and a protocol [`PublicKey`] name the same ed25519 key and convert both ways.

use libp2p::identity;
use libp2p::PeerId;
use proofmesh_protocol::{Keypair, PublicKey};

/// The libp2p keypair for a protocol keypair (same ed25519 secret).
pub fn libp2p_keypair(keypair: &Keypair) -> identity::Keypair {
    let mut secret = keypair.secret_bytes();
    // Cannot fail: any 32 bytes are a valid ed25519 secret key.
    identity::Keypair::ed25519_from_bytes(&mut secret).expect("32 bytes are an ed25519 secret")
}

/// The protobuf encoding of an ed25519 public key up to its 32 bytes (field 1, key type
/// Ed25519 = 1; field 2, 32 bytes): what an ed25519 [`PeerId`] inlines ahead of the key.
const ED25519_PROTOBUF_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];
/// The identity multihash code: the digest is the encoded key itself.
const IDENTITY_MULTIHASH: u64 = 0x00;

/// The [`PeerId`] of a protocol public key, built from its bytes as libp2p encodes it
/// (identity multihash of the protobuf-encoded key). The bytes are not checked to be a curve
/// point: that costs a point decompression, about a third of a signature check, per message
/// sent, and a key that is no point names a peer no one can authenticate as over noise.
pub fn peer_id_of(key: &PublicKey) -> Option<PeerId> {
    let mut digest = [0u8; 36];
    digest[..4].copy_from_slice(&ED25519_PROTOBUF_PREFIX);
    digest[4..].copy_from_slice(&key.0);
    let multihash = libp2p::multihash::Multihash::wrap(IDENTITY_MULTIHASH, &digest).ok()?;
    PeerId::from_multihash(multihash).ok()
}

/// The protocol public key inside a [`PeerId`]. ed25519 peer ids inline the key (identity
/// multihash), so this is exact; `None` for peer ids of other key types or hashed keys. Read
/// from the bytes, without decompressing the point (the peer id of a connected peer was
/// authenticated by the noise handshake).
pub fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH {
        return None;
    }
    let key = multihash.digest().strip_prefix(&ED25519_PROTOBUF_PREFIX)?;
    Some(PublicKey(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_and_public_key_round_trip() {
        let kp = Keypair::generate();
        let peer = libp2p_keypair(&kp).public().to_peer_id();
        assert_eq!(peer_id_of(&kp.public()), Some(peer));
        assert_eq!(public_key_of(&peer), Some(kp.public()));
    }

    #[test]
    fn conversions_match_libp2p_encoding() {
        for _ in 0..32 {
            let kp = Keypair::generate();
            let public = libp2p_keypair(&kp).public();
            let peer = PeerId::from_public_key(&public);
            assert_eq!(peer_id_of(&kp.public()), Some(peer));
            assert_eq!(public_key_of(&peer), Some(kp.public()));
        }
        // Peer ids of keys too long to inline are sha2-256 hashes: no key to read.
        let hashed = libp2p::multihash::Multihash::wrap(0x12, &[7u8; 32]).expect("32 bytes");
        let hashed = PeerId::from_multihash(hashed).expect("a sha2-256 peer id");
        assert_eq!(public_key_of(&hashed), None);
    }

    #[test]
    fn non_ed25519_peer_id_has_no_protocol_key() {
        assert_eq!(public_key_of(&PeerId::random()), None);
    }
}
