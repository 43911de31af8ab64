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

/// The [`PeerId`] of a protocol public key, or `None` if the bytes are not an ed25519 point.
pub fn peer_id_of(key: &PublicKey) -> Option<PeerId> {
    let ed = identity::ed25519::PublicKey::try_from_bytes(&key.0).ok()?;
    Some(PeerId::from_public_key(&identity::PublicKey::from(ed)))
}

/// The protocol public key inside a [`PeerId`]. ed25519 peer ids inline the key (identity
/// multihash), so this is exact; `None` for peer ids of other key types or hashed keys.
pub fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let multihash = peer.as_ref();
    // 0x00 is the identity multihash: the digest is the protobuf-encoded public key.
    if multihash.code() != 0 {
        return None;
    }
    let key = identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed = key.try_into_ed25519().ok()?;
    Some(PublicKey(ed.to_bytes()))
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
    fn non_ed25519_peer_id_has_no_protocol_key() {
        assert_eq!(public_key_of(&PeerId::random()), None);
    }
}
