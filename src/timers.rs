//! A queue of timed items, earliest first and first-in-first-out among equals: the driver side of the
//! sans-IO cores' timers, shared by the agent's event loop and the simulator. The insertion order
//! breaks ties so that a run is reproducible.
//!
//! It is a calendar queue. Items due in the next few seconds wait unsorted in one bucket per 200
//! microseconds, and a bucket is sorted once, when its turn comes; items pushed into the current
//! bucket after that wait in a small heap beside it, and items due later in a second heap. A
//! simulator of 10,000 nodes keeps about a hundred thousand items pending and pops twenty million a
//! minute, nearly all due within a second: a single heap sifted every pop through a dozen levels, a
//! fifth of the run time. Buckets are narrower than a simulated LAN hop (250 microseconds), so that a
//! packet sent now lands in a later bucket, not in the heap beside the current one: one sort per
//! bucket costs less than half of what a heap pop per item did.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::membership::table::prefetch;

/// Width of a bucket.
const BUCKET_NANOS: u64 = 200_000;
/// Buckets in the ring: how far ahead, in buckets, items are kept unsorted (3.3 s).
const RING: u64 = 16384;

/// Due time in nanoseconds, insertion number, slot of the item.
type Key = (u64, u64, u32);

/// Items due at points in time.
///
/// Keys are small (due time, insertion number, slot); the items wait in a slab, so that sorting
/// never moves them: a simulator's items carry whole packets.
pub struct TimerQueue<T> {
    /// Keys of the current bucket as it was when its turn came, sorted latest first.
    near: Vec<Key>,
    /// Keys pushed into the current bucket (or an earlier one) since.
    late: BinaryHeap<Reverse<Key>>,
    /// Keys of the next `RING - 1` buckets, bucket `b` at `b % RING`, unsorted.
    ring: Vec<Vec<Key>>,
    /// Keys in the ring.
    in_ring: usize,
    /// Keys of later buckets.
    far: BinaryHeap<Reverse<Key>>,
    /// The current bucket.
    cursor: u64,
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            near: Vec::new(),
            late: BinaryHeap::new(),
            ring: (0..RING).map(|_| Vec::new()).collect(),
            in_ring: 0,
            far: BinaryHeap::new(),
            cursor: 0,
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn bucket(key: &Key) -> u64 {
    key.0 / BUCKET_NANOS
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
        self.file((nanos(at), self.seq, slot));
    }

    /// Puts a key where its bucket says.
    fn file(&mut self, key: Key) {
        let b = bucket(&key);
        if b <= self.cursor {
            self.late.push(Reverse(key));
        } else if b - self.cursor < RING {
            self.ring[(b % RING) as usize].push(key);
            self.in_ring += 1;
        } else {
            self.far.push(Reverse(key));
        }
    }

    /// Makes the current bucket hold the earliest key, moving the cursor to its bucket; false
    /// when the queue is empty.
    fn settle(&mut self) -> bool {
        if !self.near.is_empty() || !self.late.is_empty() {
            return true;
        }
        let next = if self.in_ring > 0 {
            // The earliest non-empty bucket of the ring is the earliest of all: `far` holds
            // only buckets past the ring's end.
            (self.cursor + 1..self.cursor + RING)
                .find(|b| !self.ring[(b % RING) as usize].is_empty())
        } else {
            self.far.peek().map(|Reverse(key)| bucket(key))
        };
        let Some(next) = next else {
            return false;
        };
        self.cursor = next;
        // Drained, not taken: the bucket keeps its allocation for its next turn round the ring.
        let keys = &mut self.ring[(next % RING) as usize];
        self.in_ring -= keys.len();
        self.near.append(keys);
        // The ring now reaches further: bring in the far keys that fall inside it.
        while let Some(Reverse(key)) = self.far.peek() {
            if bucket(key) - self.cursor >= RING {
                break;
            }
            let Some(Reverse(key)) = self.far.pop() else {
                break;
            };
            if bucket(&key) == self.cursor {
                self.near.push(key);
            } else {
                self.file(key);
            }
        }
        // Keys are unique (the insertion number), so an unstable sort is exact.
        self.near.sort_unstable_by(|a, b| b.cmp(a));
        !self.near.is_empty()
    }

    /// The earliest key, and whether it is in `late` rather than `near`.
    fn earliest(&mut self) -> Option<(Key, bool)> {
        if !self.settle() {
            return None;
        }
        match (self.near.last(), self.late.peek()) {
            (Some(near), Some(Reverse(late))) if late < near => Some((*late, true)),
            (Some(near), _) => Some((*near, false)),
            (None, Some(Reverse(late))) => Some((*late, true)),
            (None, None) => None,
        }
    }

    /// When the earliest item is due.
    pub fn next_due(&mut self) -> Option<Duration> {
        self.earliest()
            .map(|((at, _, _), _)| Duration::from_nanos(at))
    }

    /// The earliest item, without taking it.
    pub fn peek(&mut self) -> Option<&T> {
        let ((_, _, slot), _) = self.earliest()?;
        self.slots[slot as usize].as_ref()
    }

    /// The `k`-th next item of the current bucket (0: the next), as a hint of what comes soon:
    /// it ignores items pushed since the bucket was sorted and those of later buckets.
    pub fn upcoming(&self, k: usize) -> Option<&T> {
        let i = self.near.len().checked_sub(k + 1)?;
        self.slots[self.near[i].2 as usize].as_ref()
    }

    /// Starts bringing the `k`-th next item of the current bucket into the cache (see
    /// [`TimerQueue::upcoming`]), without reading it. Changes nothing.
    pub fn prefetch_upcoming(&self, k: usize) {
        let Some(i) = self.near.len().checked_sub(k + 1) else {
            return;
        };
        if let Some(slot) = self.slots.get(self.near[i].2 as usize) {
            prefetch(slot);
        }
    }

    /// Takes the earliest item with its due time.
    pub fn pop(&mut self) -> Option<(Duration, T)> {
        let ((at, _, slot), late) = self.earliest()?;
        if late {
            self.late.pop();
        } else {
            self.near.pop();
        }
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
    use proptest::prelude::*;

    #[test]
    fn items_come_out_by_time_then_in_insertion_order() {
        let mut q = TimerQueue::default();
        let ms = Duration::from_millis;
        q.push(ms(20), "c");
        q.push(ms(10), "a");
        q.push(ms(10), "b");
        assert_eq!(q.next_due(), Some(ms(10)));
        assert_eq!(q.peek(), Some(&"a"));
        assert_eq!(q.pop_due(ms(5)), None);
        assert_eq!(q.pop_due(ms(10)), Some("a"));
        assert_eq!(q.pop_due(ms(10)), Some("b"));
        assert_eq!(q.pop(), Some((ms(20), "c")));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn items_far_past_the_ring_and_in_the_past_keep_their_order() {
        let mut q = TimerQueue::default();
        let s = Duration::from_secs;
        q.push(s(3600), "an hour");
        q.push(s(5), "five seconds");
        q.push(s(3600), "an hour, later");
        assert_eq!(q.pop(), Some((s(5), "five seconds")));
        q.push(s(1), "in the past");
        assert_eq!(q.pop(), Some((s(1), "in the past")));
        assert_eq!(q.pop(), Some((s(3600), "an hour")));
        assert_eq!(q.pop(), Some((s(3600), "an hour, later")));
        assert_eq!(q.pop(), None);
    }

    proptest! {
        /// Whatever is pushed, in whatever order and interleaved with pops, comes out as a
        /// stable sort by due time would give it.
        #[test]
        fn the_queue_pops_what_a_stable_sort_by_time_gives(
            ops in proptest::collection::vec(
                prop_oneof![
                    // Due within a bucket or two, within the ring, or past it.
                    (0u64..3_000_000).prop_map(Some),
                    (0u64..5_000_000_000).prop_map(Some),
                    (0u64..40_000_000_000).prop_map(Some),
                    Just(None),
                ],
                1..400,
            )
        ) {
            let mut q = TimerQueue::default();
            let mut model: Vec<(u64, usize)> = Vec::new();
            let mut now = 0u64;
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    // Drivers schedule from the current time onwards.
                    Some(delay) => {
                        q.push(Duration::from_nanos(now + delay), i);
                        model.push((now + delay, i));
                    }
                    None => {
                        model.sort_by_key(|(at, _)| *at);
                        let expected = (!model.is_empty()).then(|| model.remove(0));
                        let got = q.pop().map(|(at, i)| (nanos(at), i));
                        prop_assert_eq!(got, expected);
                        if let Some((at, _)) = got {
                            now = at;
                        }
                    }
                }
            }
            model.sort_by_key(|(at, _)| *at);
            for expected in model {
                prop_assert_eq!(q.pop().map(|(at, i)| (nanos(at), i)), Some(expected));
            }
            prop_assert_eq!(q.pop(), None);
        }
    }
}
