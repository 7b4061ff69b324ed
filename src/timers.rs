//! A queue of timed items, earliest first and first-in-first-out among equals: the driver side of the
//! sans-IO cores' timers, shared by the agent's event loop and the simulator. The insertion order
//! breaks ties so that a run is reproducible.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Items due at points in time.
///
/// The heap orders small keys (due time in nanoseconds, insertion number, slot); the items wait in
/// a slab. A simulator's items carry whole packets, and sifting those through the heap was a
/// quarter of its run time.
pub struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<T> TimerQueue<T> {
    /// Adds `item`, due at `at`.
    pub fn push(&mut self, at: Duration, item: T) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(item);
                slot
            }
            None => {
                self.slots.push(Some(item));
                // More than 4 billion pending items would exhaust memory long before this.
                (self.slots.len() - 1) as u32
            }
        };
        self.heap.push(Reverse((nanos(at), self.seq, slot)));
    }

    /// When the earliest item is due.
    pub fn next_due(&self) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _, _))| Duration::from_nanos(*at))
    }

    /// Takes the earliest item with its due time.
    pub fn pop(&mut self) -> Option<(Duration, T)> {
        let Reverse((at, _, slot)) = self.heap.pop()?;
        let item = self.slots[slot as usize].take()?;
        self.free.push(slot);
        Some((Duration::from_nanos(at), item))
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
