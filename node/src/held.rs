//! [`Held`]: messages kept until what they wait for arrives (a workflow's submission, an
//! operator's advert), with bounded memory and an age limit. Messages from different senders
//! arrive in any order; dropping one that came early can lose it for good.

use std::collections::HashMap;
use std::hash::Hash;

/// Items held per key, at most `max` in all, each for at most `ttl_ms`.
#[derive(Debug)]
pub struct Held<K, T> {
    by_key: HashMap<K, Vec<(u64, T)>>,
    len: usize,
    max: usize,
    ttl_ms: u64,
}

impl<K: Hash + Eq, T> Held<K, T> {
    /// Empty, holding at most `max` items, each for at most `ttl_ms`.
    pub fn new(max: usize, ttl_ms: u64) -> Self {
        Held {
            by_key: HashMap::new(),
            len: 0,
            max,
            ttl_ms,
        }
    }

    /// Hold `item` for `key` (it came at `now`, ms). When full, expired items make room
    /// first; if none has expired, `item` is dropped and this returns false.
    pub fn hold(&mut self, key: K, now: u64, item: T) -> bool {
        if self.len >= self.max {
            self.prune(now);
            if self.len >= self.max {
                return false;
            }
        }
        self.by_key.entry(key).or_default().push((now, item));
        self.len += 1;
        true
    }

    /// Take what is held for `key` and not expired at `now`, oldest first.
    pub fn take(&mut self, key: &K, now: u64) -> Vec<T> {
        let Some(items) = self.by_key.remove(key) else {
            return Vec::new();
        };
        self.len -= items.len();
        let ttl = self.ttl_ms;
        items
            .into_iter()
            .filter(|(at, _)| now.saturating_sub(*at) <= ttl)
            .map(|(_, item)| item)
            .collect()
    }

    /// Forget the items expired at `now`.
    pub fn prune(&mut self, now: u64) {
        if self.len == 0 {
            return;
        }
        let ttl = self.ttl_ms;
        self.by_key.retain(|_, items| {
            items.retain(|(at, _)| now.saturating_sub(*at) <= ttl);
            !items.is_empty()
        });
        self.len = self.by_key.values().map(Vec::len).sum();
    }

    /// Items held now (expired ones included until pruned).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_per_key_until_taken_and_forgets_what_expired() {
        let mut held: Held<u8, &str> = Held::new(3, 100);
        assert!(held.hold(1, 0, "a"));
        assert!(held.hold(1, 50, "b"));
        assert!(held.hold(2, 60, "c"));
        assert_eq!(held.len(), 3);
        // Full, nothing expired yet: the newcomer is dropped.
        assert!(!held.hold(2, 90, "d"));
        // At 120 "a" has expired: it makes room.
        assert!(held.hold(2, 120, "e"));
        assert_eq!(held.len(), 3);
        assert_eq!(held.take(&1, 120), ["b"]);
        assert_eq!(held.take(&1, 120), Vec::<&str>::new(), "taken once");
        // "c" (60) has expired at 170 by the time its key is taken; "e" (120) has not.
        assert_eq!(held.take(&2, 170), ["e"]);
        assert!(held.is_empty());
        held.hold(3, 0, "f");
        held.prune(101);
        assert!(held.is_empty());
    }
}
