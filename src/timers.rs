//! A queue of timed items, earliest first and first-in-first-out among equals: the driver side of the
//! sans-IO cores' timers, shared by the agent's event loop and the simulator. The insertion order
//! breaks ties so that a run is reproducible.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Duration;

struct Entry<T> {
    at: Duration,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Items due at points in time.
pub struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T> TimerQueue<T> {
    /// Adds `item`, due at `at`.
    pub fn push(&mut self, at: Duration, item: T) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            item,
        }));
    }

    /// When the earliest item is due.
    pub fn next_due(&self) -> Option<Duration> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Takes the earliest item with its due time.
    pub fn pop(&mut self) -> Option<(Duration, T)> {
        self.heap.pop().map(|Reverse(e)| (e.at, e.item))
    }

    /// Takes the earliest item if it is due at or before `now`.
    pub fn pop_due(&mut self, now: Duration) -> Option<T> {
        if self.next_due()? <= now {
            self.pop().map(|(_, item)| item)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_by_time_then_in_insertion_order() {
        let mut q = TimerQueue::default();
        let ms = Duration::from_millis;
        q.push(ms(20), "c");
        q.push(ms(10), "a");
        q.push(ms(10), "b");
        assert_eq!(q.next_due(), Some(ms(10)));
        assert_eq!(q.pop_due(ms(5)), None);
        assert_eq!(q.pop_due(ms(10)), Some("a"));
        assert_eq!(q.pop_due(ms(10)), Some("b"));
        assert_eq!(q.pop(), Some((ms(20), "c")));
        assert_eq!(q.pop(), None);
    }
}
