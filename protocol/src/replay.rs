//! Replay protection for envelopes, sans-IO: the caller passes the time.
//!
//! An envelope is identified by `(sender, nonce)`. The guard remembers each pair until the
//! envelope expires; after that [`crate::Envelope::open`] refuses it as expired anyway, so the
//! pair can be forgotten. Memory is bounded by `capacity`.
//!
//! When the guard is full the entry closest to expiry is evicted, and the newcomer is kept.
//! That is the one weakness: a sender that floods `capacity` valid envelopes can push out an
//! older one, which is then replayable until it expires. Flooding requires valid signatures,
//! so it is attributable, and the guard reports evictions so callers can count them. (The
//! alternative, refusing new envelopes when full, lets the same flood silence everyone.)

use crate::envelope::Envelope;
use crate::identity::PublicKey;
use std::collections::{BTreeSet, HashMap};

/// Why an envelope was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The `(sender, nonce)` pair was already seen and has not expired.
    #[error("replayed envelope: sender {sender} already used nonce {nonce}")]
    Duplicate {
        /// Sender.
        sender: PublicKey,
        /// Nonce.
        nonce: u64,
    },
    /// The envelope has expired (so it cannot be remembered, and must not be accepted).
    #[error("expired at {expires_at_ms} ms, now is {now_ms} ms")]
    Expired {
        /// Envelope expiry.
        expires_at_ms: u64,
        /// Caller's clock.
        now_ms: u64,
    },
    /// The envelope expires further in the future than the guard is willing to remember.
    #[error("expiry {expires_at_ms} ms is more than {max_ttl_ms} ms ahead of now ({now_ms} ms)")]
    TooFarAhead {
        /// Envelope expiry.
        expires_at_ms: u64,
        /// Caller's clock.
        now_ms: u64,
        /// The guard's horizon.
        max_ttl_ms: u64,
    },
}

/// What [`ReplayGuard::check`] did on success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Remembered; nothing was forgotten early.
    Fresh,
    /// Remembered, but the guard was full and forgot a not-yet-expired entry to make room.
    EvictedUnexpired,
}

/// Remembers `(sender, nonce)` until expiry, in bounded memory.
#[derive(Clone, Debug)]
pub struct ReplayGuard {
    expiry_of: HashMap<(PublicKey, u64), u64>,
    by_expiry: BTreeSet<(u64, PublicKey, u64)>,
    capacity: usize,
    max_ttl_ms: u64,
}

impl ReplayGuard {
    /// A guard holding at most `capacity` (at least 1) pairs, refusing envelopes that expire
    /// more than `max_ttl_ms` after `now` (they would pin memory for too long).
    pub fn new(capacity: usize, max_ttl_ms: u64) -> Self {
        ReplayGuard {
            expiry_of: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
            max_ttl_ms,
        }
    }

    /// Number of remembered pairs.
    pub fn len(&self) -> usize {
        self.expiry_of.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.expiry_of.is_empty()
    }

    /// Admit `(sender, nonce)` expiring at `expires_at_ms`, or refuse it as a replay.
    pub fn check(
        &mut self,
        sender: PublicKey,
        nonce: u64,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<Admitted, ReplayError> {
        self.forget_expired(now_ms);
        if expires_at_ms < now_ms {
            return Err(ReplayError::Expired {
                expires_at_ms,
                now_ms,
            });
        }
        if expires_at_ms - now_ms > self.max_ttl_ms {
            return Err(ReplayError::TooFarAhead {
                expires_at_ms,
                now_ms,
                max_ttl_ms: self.max_ttl_ms,
            });
        }
        if self.expiry_of.contains_key(&(sender, nonce)) {
            return Err(ReplayError::Duplicate { sender, nonce });
        }
        let mut admitted = Admitted::Fresh;
        if self.expiry_of.len() >= self.capacity {
            if let Some((_, s, n)) = self.by_expiry.pop_first() {
                self.expiry_of.remove(&(s, n));
                admitted = Admitted::EvictedUnexpired;
            }
        }
        self.expiry_of.insert((sender, nonce), expires_at_ms);
        self.by_expiry.insert((expires_at_ms, sender, nonce));
        Ok(admitted)
    }

    /// [`ReplayGuard::check`] for an envelope's header. Call it after
    /// [`Envelope::open`] succeeded, so that forged envelopes cannot fill the guard.
    pub fn check_envelope(
        &mut self,
        envelope: &Envelope,
        now_ms: u64,
    ) -> Result<Admitted, ReplayError> {
        self.check(
            envelope.sender,
            envelope.nonce,
            envelope.expires_at_ms,
            now_ms,
        )
    }

    /// Drop every pair that expired before `now_ms`.
    pub fn forget_expired(&mut self, now_ms: u64) {
        while let Some(&(expires, sender, nonce)) = self.by_expiry.first() {
            if expires >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.expiry_of.remove(&(sender, nonce));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    #[test]
    fn duplicate_is_refused_until_expiry() {
        let mut g = ReplayGuard::new(10, 60_000);
        assert_eq!(g.check(key(1), 7, 1_000, 0), Ok(Admitted::Fresh));
        assert_eq!(
            g.check(key(1), 7, 1_000, 500),
            Err(ReplayError::Duplicate {
                sender: key(1),
                nonce: 7
            })
        );
        // Same nonce, other sender: independent.
        assert_eq!(g.check(key(2), 7, 1_000, 500), Ok(Admitted::Fresh));
        // After expiry the pair is forgotten, and the envelope is refused as expired instead.
        assert_eq!(
            g.check(key(1), 7, 1_000, 1_001),
            Err(ReplayError::Expired {
                expires_at_ms: 1_000,
                now_ms: 1_001
            })
        );
        assert!(g.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_evicts_nearest_expiry() {
        let mut g = ReplayGuard::new(3, 60_000);
        for n in 0..3 {
            assert_eq!(g.check(key(1), n, 1_000 + n, 0), Ok(Admitted::Fresh));
        }
        assert_eq!(
            g.check(key(1), 99, 5_000, 0),
            Ok(Admitted::EvictedUnexpired)
        );
        assert_eq!(g.len(), 3);
        // nonce 0 (nearest expiry) was evicted; nonce 1 is still remembered.
        assert!(g.check(key(1), 1, 1_001, 0).is_err());
        assert_eq!(g.check(key(1), 0, 1_000, 0), Ok(Admitted::EvictedUnexpired));
    }

    #[test]
    fn far_future_expiry_is_refused() {
        let mut g = ReplayGuard::new(3, 1_000);
        assert!(matches!(
            g.check(key(1), 1, 10_000, 0),
            Err(ReplayError::TooFarAhead { .. })
        ));
        assert!(g.is_empty());
    }
}
