//! [`BoundedSet`]: "have I seen this?" with bounded memory, for de-duplication caches fed by
//! the network (envelopes handled, signatures verified). The oldest entries are forgotten
//! first; forgetting one only costs doing its work again.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// A set that keeps at most `CAP` entries, forgetting the oldest first.
#[derive(Debug)]
pub struct BoundedSet<T, const CAP: usize> {
    set: HashSet<T>,
    order: VecDeque<T>,
}

impl<T, const CAP: usize> Default for BoundedSet<T, CAP> {
    fn default() -> Self {
        BoundedSet {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: Hash + Eq + Copy, const CAP: usize> BoundedSet<T, CAP> {
    /// Most entries kept.
    pub const CAP: usize = CAP;

    /// Whether `item` is remembered.
    pub fn contains(&self, item: &T) -> bool {
        self.set.contains(item)
    }

    /// Remember `item`; true when it was new.
    pub fn insert(&mut self, item: T) -> bool {
        if !self.set.insert(item) {
            return false;
        }
        self.order.push_back(item);
        if self.order.len() > CAP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Entries remembered now.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_cap_and_forgets_the_oldest_first() {
        let mut s = BoundedSet::<u32, 3>::default();
        assert!(s.insert(1));
        assert!(!s.insert(1), "a repeat is not new");
        s.insert(2);
        s.insert(3);
        s.insert(4);
        assert_eq!(s.len(), 3);
        assert!(!s.contains(&1), "the oldest went first");
        assert!(s.contains(&2) && s.contains(&4));
        assert!(s.insert(1), "a forgotten entry is new again");
    }
}
