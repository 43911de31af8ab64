//! Blobs that arrived beside a direct message naming them, kept until the work that wants them
//! takes them: a result's output for the matchmaker's check, the outputs of the dependency
//! results an input push carries for the operator's task. Each saves a blob fetch (a
//! request-response round trip, and a store read on the node that serves it).
//!
//! Only bytes that hash to an output id (and size) the message names are kept (checked by the
//! event loop on arrival), and memory is bounded: at most [`MAX_ATTACHMENT_BYTES`] each and
//! [`Attachments::BUDGET`] in all, the oldest forgotten first. A forgotten or never-taken
//! attachment costs only the fetch it would have saved.

use proofmesh_protocol::ContentId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// Largest blob sent beside a direct message; larger outputs are fetched.
pub const MAX_ATTACHMENT_BYTES: usize = 64 * 1024;

/// Attached blobs by content id, bounded in total size.
#[derive(Debug, Default)]
pub struct Attachments {
    bytes: HashMap<ContentId, Vec<u8>>,
    order: VecDeque<ContentId>,
    total: usize,
}

/// Shared between the event loop (which adds) and the client (whose users take).
pub type SharedAttachments = Arc<Mutex<Attachments>>;

impl Attachments {
    /// Most bytes kept at once (they are taken within milliseconds of arriving).
    pub const BUDGET: usize = 16 * 1024 * 1024;

    /// Keep `bytes` (already checked to hash to `id`). Oversized ones are not kept.
    pub fn insert(&mut self, id: ContentId, bytes: Vec<u8>) {
        if bytes.len() > MAX_ATTACHMENT_BYTES || self.bytes.contains_key(&id) {
            return;
        }
        self.total += bytes.len();
        self.bytes.insert(id, bytes);
        self.order.push_back(id);
        // Taken ids stay in `order` until they reach its front; drop them in bulk now and
        // then, so the queue stays proportional to what is kept.
        if self.order.len() > 2 * self.bytes.len() + 1024 {
            let kept = &self.bytes;
            self.order.retain(|id| kept.contains_key(id));
        }
        while self.total > Self::BUDGET {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.bytes.remove(&old) {
                self.total -= gone.len();
            }
        }
    }

    /// Take the bytes of `id`, if they arrived and are still kept.
    pub fn take(&mut self, id: &ContentId) -> Option<Vec<u8>> {
        let bytes = self.bytes.remove(id)?;
        self.total -= bytes.len();
        Some(bytes)
    }

    /// Bytes kept now.
    pub fn total_bytes(&self) -> usize {
        self.total
    }

    /// Ids queued for eviction (kept ones and taken ones not yet dropped).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.order.len()
    }
}

/// Lock, tolerating a panicked holder (the map stays consistent between calls).
pub fn lock(shared: &SharedAttachments) -> std::sync::MutexGuard<'_, Attachments> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_are_taken_once_and_bounded_oldest_first() {
        let mut a = Attachments::default();
        let small = vec![7u8; 10];
        let id = ContentId::of_bytes(&small);
        a.insert(id, small.clone());
        assert_eq!(a.take(&id), Some(small));
        assert_eq!(a.take(&id), None, "taken once");
        assert_eq!(a.total_bytes(), 0);

        // Over the budget: the oldest go first, the newest stay.
        let n = Attachments::BUDGET / MAX_ATTACHMENT_BYTES + 3;
        let ids: Vec<ContentId> = (0..n)
            .map(|i| {
                let bytes = vec![i as u8; MAX_ATTACHMENT_BYTES];
                let mut id = ContentId::of_bytes(&bytes);
                id.0[31] ^= (i >> 8) as u8; // distinct ids even where the fill byte repeats
                a.insert(id, bytes);
                id
            })
            .collect();
        assert!(a.total_bytes() <= Attachments::BUDGET);
        assert!(a.take(&ids[0]).is_none(), "the oldest was forgotten");
        assert!(a.take(&ids[n - 1]).is_some(), "the newest is kept");

        // Larger than one attachment may be: never kept.
        let big = vec![1u8; MAX_ATTACHMENT_BYTES + 1];
        let big_id = ContentId::of_bytes(&big);
        a.insert(big_id, big);
        assert!(a.take(&big_id).is_none());

        // Taken ids do not pile up in the eviction queue.
        let mut a = Attachments::default();
        for i in 0u32..10_000 {
            let bytes = i.to_le_bytes().to_vec();
            let id = ContentId::of_bytes(&bytes);
            a.insert(id, bytes);
            assert!(a.take(&id).is_some());
        }
        assert!(a.queued() <= 1024 + 1, "queue holds {}", a.queued());
    }
}
