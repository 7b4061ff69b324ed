//! Redial backoff: when to try a peer or seed address again after a failed or lost connection.
//!
//! Pure bookkeeping with time passed in, so it is testable without a clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// First retry delay.
pub const INITIAL: Duration = Duration::from_millis(500);
/// Longest delay between tries.
pub const MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    next_at: Duration,
}

/// Exponential backoff per key (a peer id or a seed address).
#[derive(Debug)]
pub struct Backoff<K> {
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Default for Backoff<K> {
    fn default() -> Self {
        Backoff {
            entries: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    /// Whether `key` may be dialled at `now`; if so, the next try is pushed back (doubling).
    pub fn try_now(&mut self, key: &K, now: Duration) -> bool {
        let e = self.entries.entry(key.clone()).or_insert(Entry {
            delay: INITIAL,
            next_at: now,
        });
        if now < e.next_at {
            return false;
        }
        e.next_at = now + e.delay;
        e.delay = (e.delay * 2).min(MAX);
        true
    }

    /// The connection succeeded: the next loss retries quickly again.
    pub fn reset(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_the_cap_and_reset_on_success() {
        let mut b = Backoff::default();
        let mut t = Duration::ZERO;
        assert!(b.try_now(&"x", t));
        assert!(!b.try_now(&"x", t + INITIAL / 2));
        t += INITIAL;
        assert!(b.try_now(&"x", t));
        assert!(!b.try_now(&"x", t + INITIAL));
        t += INITIAL * 2;
        assert!(b.try_now(&"x", t));
        for _ in 0..20 {
            t += MAX;
            assert!(b.try_now(&"x", t));
        }
        assert!(!b.try_now(&"x", t + MAX / 2));
        b.reset(&"x");
        assert!(b.try_now(&"x", t + Duration::from_millis(1)));
    }
}
