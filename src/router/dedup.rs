//! Duplicate suppression with bounded memory: two generations of seen keys. A key is remembered
//! for at least one generation (`capacity` later keys) and at most two, so memory never exceeds
//! two generations whatever the traffic.

use std::collections::HashSet;

/// Keys already seen: an envelope id and the node it was headed for at this hop (the same id
/// legitimately passes a node twice when the node relays a multicast copy and also gets its own).
pub type Key = (u128, u64);

/// The set of recently seen keys.
#[derive(Debug)]
pub struct Dedup {
    current: HashSet<Key>,
    previous: HashSet<Key>,
    capacity: usize,
}

impl Dedup {
    /// Remembers up to `capacity` keys per generation (at least 1).
    pub fn new(capacity: usize) -> Dedup {
        let capacity = capacity.max(1);
        Dedup {
            current: HashSet::with_capacity(capacity),
            previous: HashSet::new(),
            capacity,
        }
    }

    /// Records `key`; false when it was seen within the last generation or two.
    pub fn first_time(&mut self, key: Key) -> bool {
        if self.previous.contains(&key) || !self.current.insert(key) {
            return false;
        }
        if self.current.len() >= self.capacity {
            self.previous =
                std::mem::replace(&mut self.current, HashSet::with_capacity(self.capacity));
        }
        true
    }

    /// How many keys are held now (at most twice the capacity).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_key_seen_twice_is_refused_the_second_time() {
        let mut d = Dedup::new(4);
        assert!(d.first_time((1, 0)));
        assert!(!d.first_time((1, 0)));
        assert!(d.first_time((1, 1)), "another destination is another key");
    }

    proptest! {
        #[test]
        fn memory_stays_within_two_generations_and_recent_keys_are_remembered(
            keys in proptest::collection::vec(0u128..5000, 1..3000),
            capacity in 1usize..200,
        ) {
            let mut d = Dedup::new(capacity);
            for (i, k) in keys.iter().enumerate() {
                d.first_time((*k, 0));
                prop_assert!(d.len() <= 2 * capacity);
                // The key just recorded is always remembered.
                prop_assert!(!d.first_time((*k, 0)), "key {} at {} forgotten", k, i);
            }
        }
    }
}
