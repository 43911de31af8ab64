//! Validation of every envelope that arrives from the network, before it is forwarded or
//! delivered. Sans-IO: the caller passes the bytes, the expected domain and `now`.
//!
//! [`check`] decides Reject (the sending peer is at fault: its score drops); [`ReplayGuard`]
//! decides Ignore (a duplicate `(sender, nonce)` is not the forwarder's fault).

use proofmesh_protocol::{Domain, Envelope, EnvelopeError, Message, MessageKind, PublicKey};
use std::collections::{BTreeSet, HashMap};

use super::topics::Topic;

/// Why an envelope was rejected. The forwarding peer is penalized for each.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    /// Larger than the configured limit.
    #[error("message is {size} bytes, over the {limit}-byte limit")]
    Oversized {
        /// bytes received
        size: usize,
        /// the limit
        limit: usize,
    },
    /// Bad signature, wrong network, chain or version, expired, undecodable payload, or a
    /// payload of another kind than the header claims.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// A valid envelope on a topic that does not carry its kind.
    #[error("{kind:?} is not carried on topic {topic}")]
    WrongTopic {
        /// the envelope's kind
        kind: MessageKind,
        /// the topic it arrived on
        topic: Topic,
    },
}

impl Invalid {
    /// Metrics label for the reason.
    pub fn label(&self) -> &'static str {
        match self {
            Invalid::Oversized { .. } => "oversized",
            Invalid::WrongTopic { .. } => "wrong_topic",
            Invalid::Envelope(e) => match e {
                EnvelopeError::Decode(_) => "undecodable",
                EnvelopeError::Version { .. } => "wrong_version",
                EnvelopeError::WrongNetwork { .. } => "wrong_network",
                EnvelopeError::WrongChain { .. } => "wrong_chain",
                EnvelopeError::Expired { .. } => "expired",
                EnvelopeError::Signature(_) => "bad_signature",
                EnvelopeError::Payload(_) => "bad_payload",
                EnvelopeError::KindMismatch { .. } => "kind_mismatch",
                EnvelopeError::Batch(_) => "bad_batch",
            },
        }
    }
}

/// The checks that need no signature: size, envelope decoding and the topic rule (cheap, so
/// floods of misrouted messages cost little).
fn decode_routed(
    bytes: &[u8],
    topic: Option<Topic>,
    max_bytes: usize,
) -> Result<Envelope, Invalid> {
    if bytes.len() > max_bytes {
        return Err(Invalid::Oversized {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    let envelope = Envelope::from_bytes(bytes)?;
    if let Some(topic) = topic {
        if !topic.carries(envelope.kind) {
            return Err(Invalid::WrongTopic {
                kind: envelope.kind,
                topic,
            });
        }
    }
    Ok(envelope)
}

/// Decode and fully check an envelope. `topic` is `None` for direct messages (no topic rule).
pub fn check(
    bytes: &[u8],
    topic: Option<Topic>,
    domain: Domain,
    now_ms: u64,
    max_bytes: usize,
) -> Result<(Envelope, Message), Invalid> {
    let envelope = decode_routed(bytes, topic, max_bytes)?;
    let message = envelope.open(domain, now_ms)?;
    Ok((envelope, message))
}

/// Content hashes (blake3 of the wire bytes) of envelopes whose signature this node has
/// verified, so the same bytes arriving again (the gossip copy of a direct message, a direct
/// reply also gossiped) skip the ed25519 check; every other check still runs. Bounded: the
/// oldest are forgotten first (a forgotten one is simply verified again).
pub type VerifiedDigests = crate::bounded_set::BoundedSet<[u8; 32], 32_768>;

/// Shared between the event loop and the client (direct replies are checked off the loop).
pub type SharedVerified = std::sync::Arc<std::sync::Mutex<VerifiedDigests>>;

/// [`check`], skipping the signature when these exact bytes were verified before; returns the
/// bytes' blake3 digest too.
pub fn check_cached(
    bytes: &[u8],
    topic: Option<Topic>,
    domain: Domain,
    now_ms: u64,
    max_bytes: usize,
    verified: &SharedVerified,
) -> Result<(Envelope, Message, [u8; 32]), Invalid> {
    let envelope = decode_routed(bytes, topic, max_bytes)?;
    open_cached(envelope, bytes, domain, now_ms, verified)
}

/// [`check_cached`]'s checks after decoding `envelope` from `bytes`.
fn open_cached(
    envelope: Envelope,
    bytes: &[u8],
    domain: Domain,
    now_ms: u64,
    verified: &SharedVerified,
) -> Result<(Envelope, Message, [u8; 32]), Invalid> {
    let digest = *blake3::hash(bytes).as_bytes();
    let lock = || {
        verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let message = if lock().contains(&digest) {
        // Same bytes as an envelope whose signature verified: version, domain, expiry again.
        envelope.open_verified(domain, now_ms)?
    } else {
        let message = envelope.open(domain, now_ms)?;
        lock().insert(digest);
        message
    };
    Ok((envelope, message, digest))
}

/// [`check_cached`] for an envelope that arrived on a direct connection from `peer` (a
/// request on it, or the answer to one of ours). When the envelope's sender is that peer, the
/// connection's noise handshake, keyed by the same ed25519 key, already proved who sent these
/// bytes, so the signature is not checked again: a matchmaker checked two per task this way
/// (each operator's answer and its result), an operator one (its assignments), ~50 µs each
/// (bench/e2e.md, stop 31). Every other check still runs.
///
/// Nothing such an envelope carries is later shown to anyone as signed: evidence is an
/// acceptance's Ethereum signature or a result's own signature, both checked where they are
/// used, and a node publishes only envelopes it sealed itself. Its digest is not remembered as
/// verified, so a gossip copy of the same bytes is checked in full (a sender cannot get a bad
/// signature forwarded on gossip under this node's name).
pub fn check_direct(
    bytes: &[u8],
    peer: &libp2p::PeerId,
    domain: Domain,
    now_ms: u64,
    max_bytes: usize,
    verified: &SharedVerified,
) -> Result<(Envelope, Message, [u8; 32]), Invalid> {
    let envelope = decode_routed(bytes, None, max_bytes)?;
    if super::peer_id_of(&envelope.sender).as_ref() != Some(peer) {
        return open_cached(envelope, bytes, domain, now_ms, verified);
    }
    let digest = *blake3::hash(bytes).as_bytes();
    let message = envelope.open_verified(domain, now_ms)?;
    Ok((envelope, message, digest))
}

/// How a message reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// gossipsub
    Gossip,
    /// direct request-response
    Direct,
}

/// What the guard has seen of a `(sender, nonce)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time: deliver.
    New,
    /// The same envelope arrived before by the other path only (a direct assignment that is
    /// also gossiped): forward it on gossip, but do not deliver it twice.
    OtherPathOnly,
    /// Already seen by this path (a replay), or a different envelope under the same
    /// `(sender, nonce)`.
    Duplicate,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    digest: [u8; 32],
    expires_at_ms: u64,
    gossip: bool,
    direct: bool,
}

/// One [`ReplayGuard`] for the swarm's task (gossip) and every connection's (direct requests).
pub type SharedGuard = std::sync::Arc<std::sync::Mutex<ReplayGuard>>;

/// The shared guard, locked (a poisoned lock is taken over: a panic midway through an update
/// can at worst forget an entry early or keep one too long).
pub fn lock_guard(guard: &SharedGuard) -> std::sync::MutexGuard<'_, ReplayGuard> {
    guard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Bounded memory of `(sender, nonce)` pairs until their envelopes expire.
///
/// An entry is forgotten once its envelope has expired (the expiry check rejects it from then
/// on), or, when the guard is full, earliest-expiring first. That eviction is the one weakness:
/// a flood of `capacity` valid envelopes can push out an older one that is then replayable
/// until it expires. Signed envelopes make such a flood attributable.
#[derive(Debug)]
pub struct ReplayGuard {
    entries: HashMap<(PublicKey, u64), Entry>,
    by_expiry: BTreeSet<(u64, PublicKey, u64)>,
    capacity: usize,
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` (at least 1) envelopes.
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Number of remembered envelopes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Record that `envelope` (content digest `digest`) arrived via `via` at `now_ms`.
    pub fn observe(
        &mut self,
        envelope: &Envelope,
        digest: [u8; 32],
        via: Via,
        now_ms: u64,
    ) -> Seen {
        self.prune(now_ms);
        let key = (envelope.sender, envelope.nonce);
        if let Some(entry) = self.entries.get_mut(&key) {
            if entry.digest != digest {
                return Seen::Duplicate;
            }
            let seen_here = match via {
                Via::Gossip => &mut entry.gossip,
                Via::Direct => &mut entry.direct,
            };
            if *seen_here {
                return Seen::Duplicate;
            }
            *seen_here = true;
            return Seen::OtherPathOnly;
        }
        if self.entries.len() >= self.capacity {
            if let Some(oldest) = self.by_expiry.pop_first() {
                self.entries.remove(&(oldest.1, oldest.2));
            }
        }
        let entry = Entry {
            digest,
            expires_at_ms: envelope.expires_at_ms,
            gossip: via == Via::Gossip,
            direct: via == Via::Direct,
        };
        self.entries.insert(key, entry);
        self.by_expiry.insert((entry.expires_at_ms, key.0, key.1));
        Seen::New
    }

    fn prune(&mut self, now_ms: u64) {
        while let Some(&(expires, sender, nonce)) = self.by_expiry.first() {
            if expires >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&(sender, nonce));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proofmesh_protocol::messages::Heartbeat;
    use proofmesh_protocol::Keypair;

    const DOMAIN: Domain = Domain {
        network_id: 1,
        chain_id: 31337,
    };

    fn heartbeat(kp: &Keypair, nonce: u64, at_ms: u64, expires: u64) -> Envelope {
        let msg = Message::Heartbeat(Heartbeat {
            operator: kp.public(),
            at_ms,
            running: vec![],
        });
        Envelope::seal(kp, DOMAIN, &msg, nonce, expires)
    }

    #[test]
    fn check_rejects_each_kind_of_invalid_envelope() {
        let kp = Keypair::generate();
        let good = heartbeat(&kp, 1, 0, 1_000).to_bytes();
        assert!(check(&good, Some(Topic::Heartbeats), DOMAIN, 500, 1 << 20).is_ok());
        let label = |r: Result<_, Invalid>| r.err().map(|e| e.label());
        assert_eq!(
            label(check(&good, Some(Topic::Results), DOMAIN, 500, 1 << 20)),
            Some("wrong_topic")
        );
        assert_eq!(
            label(check(&good, None, DOMAIN, 1_001, 1 << 20)),
            Some("expired")
        );
        assert_eq!(
            label(check(&good, None, DOMAIN, 500, 10)),
            Some("oversized")
        );
        assert_eq!(
            label(check(b"garbage", None, DOMAIN, 500, 1 << 20)),
            Some("undecodable")
        );
        let other_chain = Domain {
            chain_id: 1,
            ..DOMAIN
        };
        assert_eq!(
            label(check(&good, None, other_chain, 500, 1 << 20)),
            Some("wrong_chain")
        );
        let mut forged = heartbeat(&kp, 1, 0, 1_000);
        forged.nonce = 2;
        assert_eq!(
            label(check(&forged.to_bytes(), None, DOMAIN, 500, 1 << 20)),
            Some("bad_signature")
        );
    }

    #[test]
    fn cached_check_skips_only_the_signature_of_known_bytes() {
        let kp = Keypair::generate();
        let verified = SharedVerified::default();
        let good = heartbeat(&kp, 1, 0, 1_000).to_bytes();
        let (_, _, digest) = check_cached(
            &good,
            Some(Topic::Heartbeats),
            DOMAIN,
            500,
            1 << 20,
            &verified,
        )
        .unwrap();
        assert!(verified.lock().unwrap().contains(&digest));
        // Known bytes: still checked for topic, expiry and domain.
        assert!(check_cached(
            &good,
            Some(Topic::Heartbeats),
            DOMAIN,
            500,
            1 << 20,
            &verified
        )
        .is_ok());
        let label = |r: Result<_, Invalid>| r.err().map(|e| e.label());
        assert_eq!(
            label(check_cached(
                &good,
                Some(Topic::Results),
                DOMAIN,
                500,
                1 << 20,
                &verified
            )),
            Some("wrong_topic")
        );
        assert_eq!(
            label(check_cached(&good, None, DOMAIN, 1_001, 1 << 20, &verified)),
            Some("expired")
        );
        let other_chain = Domain {
            chain_id: 1,
            ..DOMAIN
        };
        assert_eq!(
            label(check_cached(
                &good,
                None,
                other_chain,
                500,
                1 << 20,
                &verified
            )),
            Some("wrong_chain")
        );
        // A forgery is new bytes: fully verified, and not remembered.
        let mut forged = heartbeat(&kp, 1, 0, 1_000);
        forged.nonce = 2;
        let forged = forged.to_bytes();
        assert_eq!(
            label(check_cached(&forged, None, DOMAIN, 500, 1 << 20, &verified)),
            Some("bad_signature")
        );
        assert!(!verified
            .lock()
            .unwrap()
            .contains(blake3::hash(&forged).as_bytes()));
    }

    #[test]
    fn a_direct_envelope_from_its_own_sender_skips_only_the_signature() {
        let kp = Keypair::generate();
        let other = Keypair::generate();
        let peer = crate::network::peer_id_of(&kp.public()).unwrap();
        let verified = SharedVerified::default();
        let label = |r: Result<_, Invalid>| r.err().map(|e| e.label());
        // A bad signature from the connection's own peer: the handshake vouches for the bytes.
        let mut unsigned = heartbeat(&kp, 1, 0, 1_000);
        unsigned.nonce = 2;
        let unsigned = unsigned.to_bytes();
        let (envelope, _, digest) =
            check_direct(&unsigned, &peer, DOMAIN, 500, 1 << 20, &verified).unwrap();
        assert_eq!(envelope.nonce, 2);
        // ... and is not remembered as verified (a gossip copy is checked in full).
        assert!(!verified.lock().unwrap().contains(&digest));
        assert_eq!(
            label(check_cached(
                &unsigned,
                None,
                DOMAIN,
                500,
                1 << 20,
                &verified
            )),
            Some("bad_signature")
        );
        // Everything else is still checked.
        assert_eq!(
            label(check_direct(
                &unsigned,
                &peer,
                DOMAIN,
                1_001,
                1 << 20,
                &verified
            )),
            Some("expired")
        );
        let other_chain = Domain {
            chain_id: 1,
            ..DOMAIN
        };
        assert_eq!(
            label(check_direct(
                &unsigned,
                &peer,
                other_chain,
                500,
                1 << 20,
                &verified
            )),
            Some("wrong_chain")
        );
        assert_eq!(
            label(check_direct(&unsigned, &peer, DOMAIN, 500, 10, &verified)),
            Some("oversized")
        );
        // Another signer's envelope relayed by this peer is verified as usual.
        let mut relayed = heartbeat(&other, 1, 0, 1_000);
        relayed.nonce = 2;
        assert_eq!(
            label(check_direct(
                &relayed.to_bytes(),
                &peer,
                DOMAIN,
                500,
                1 << 20,
                &verified
            )),
            Some("bad_signature")
        );
        let good = heartbeat(&other, 3, 0, 1_000).to_bytes();
        assert!(check_direct(&good, &peer, DOMAIN, 500, 1 << 20, &verified).is_ok());
    }

    #[test]
    fn verified_digests_are_bounded() {
        let mut v = VerifiedDigests::default();
        for i in 0..(VerifiedDigests::CAP + 10) {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&(i as u64).to_le_bytes());
            v.insert(d);
        }
        assert_eq!(v.len(), VerifiedDigests::CAP);
        assert!(!v.contains(&[0u8; 32]));
    }

    #[test]
    fn replay_guard_distinguishes_paths_and_forgets_expired() {
        let kp = Keypair::generate();
        let env = heartbeat(&kp, 7, 0, 100);
        let mut guard = ReplayGuard::new(10);
        assert_eq!(guard.observe(&env, [1; 32], Via::Direct, 0), Seen::New);
        assert_eq!(
            guard.observe(&env, [1; 32], Via::Direct, 0),
            Seen::Duplicate
        );
        assert_eq!(
            guard.observe(&env, [1; 32], Via::Gossip, 0),
            Seen::OtherPathOnly
        );
        assert_eq!(
            guard.observe(&env, [1; 32], Via::Gossip, 0),
            Seen::Duplicate
        );
        // Same (sender, nonce), different content: a replay or equivocation.
        assert_eq!(
            guard.observe(&env, [2; 32], Via::Gossip, 0),
            Seen::Duplicate
        );
        // Past its expiry the entry is dropped (the expiry check rejects the envelope anyway).
        assert_eq!(
            guard.observe(&heartbeat(&kp, 8, 0, 500), [3; 32], Via::Gossip, 101),
            Seen::New
        );
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn replay_guard_is_bounded() {
        let kp = Keypair::generate();
        let mut guard = ReplayGuard::new(3);
        for nonce in 0..10u64 {
            let env = heartbeat(&kp, nonce, 0, 1_000 + nonce);
            assert_eq!(
                guard.observe(&env, [nonce as u8; 32], Via::Gossip, 0),
                Seen::New
            );
            assert!(guard.len() <= 3);
        }
        // The newest entries survive eviction.
        let newest = heartbeat(&kp, 9, 0, 1_009);
        assert_eq!(
            guard.observe(&newest, [9; 32], Via::Gossip, 0),
            Seen::Duplicate
        );
    }
}
