//! Where a SWIM node keeps what it knows of each member.
//!
//! The id type chooses the table. The agent's ids are libp2p peer ids, kept in a hash map. The
//! simulator's ids are small, dense integers, kept in a vector indexed by the id itself: every node
//! of a 10,000-node simulation holds 10,000 entries, and a direct index costs one cache miss where a
//! hash map costs a hash and two (its control bytes and its bucket live apart). A dense table is
//! only for ids that the program itself hands out: an id of `n` makes room for `n` entries.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

/// A member id, and the table that fits it.
pub trait MemberId: Copy + Eq + Hash + Ord + Debug {
    /// The table of values keyed by this id.
    type Table<V>: Table<Self, V>;
}

/// A map from member ids to values. Entries are never removed: a member that leaves or dies is
/// remembered as such.
pub trait Table<K, V>: Default {
    /// The value for `k`.
    fn get(&self, k: &K) -> Option<&V>;
    /// The value for `k`, to change it.
    fn get_mut(&mut self, k: &K) -> Option<&mut V>;
    /// Sets the value for `k`.
    fn insert(&mut self, k: K, v: V);
    /// How many ids have a value.
    fn len(&self) -> usize;
    /// Whether no id has a value.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes room for `n` more entries.
    fn reserve(&mut self, n: usize);
    /// Every entry, in no particular order.
    fn entries<'a>(&'a self) -> impl Iterator<Item = (K, &'a V)>
    where
        V: 'a;
    /// Whether `k` has a value.
    fn contains(&self, k: &K) -> bool {
        self.get(k).is_some()
    }
    /// A hint that `k` is about to be looked up: starts bringing its entry into the cache. Changes
    /// nothing.
    fn prefetch(&self, _k: &K) {}
}

impl<K: Copy + Eq + Hash, V> Table<K, V> for HashMap<K, V> {
    fn get(&self, k: &K) -> Option<&V> {
        HashMap::get(self, k)
    }
    fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        HashMap::get_mut(self, k)
    }
    fn insert(&mut self, k: K, v: V) {
        HashMap::insert(self, k, v);
    }
    fn len(&self) -> usize {
        HashMap::len(self)
    }
    fn reserve(&mut self, n: usize) {
        HashMap::reserve(self, n)
    }
    fn entries<'a>(&'a self) -> impl Iterator<Item = (K, &'a V)>
    where
        V: 'a,
    {
        self.iter().map(|(k, v)| (*k, v))
    }
}

/// A table indexed directly by small integer ids (the simulator's and the tests').
#[derive(Debug, Clone)]
pub struct DenseTable<V> {
    slots: Vec<Slot<V>>,
    len: usize,
}

/// One entry of a dense table, aligned so that an entry of 32 bytes (the simulator's member)
/// never straddles two cache lines: a lookup is then one miss, not sometimes two. A large
/// allocation from glibc starts 16 bytes into a page, where half of such entries would straddle.
#[derive(Debug, Clone)]
#[repr(align(32))]
struct Slot<V>(Option<V>);

impl<V> Default for DenseTable<V> {
    fn default() -> Self {
        DenseTable {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<V> Table<u32, V> for DenseTable<V> {
    fn get(&self, k: &u32) -> Option<&V> {
        self.slots.get(*k as usize)?.0.as_ref()
    }
    fn get_mut(&mut self, k: &u32) -> Option<&mut V> {
        self.slots.get_mut(*k as usize)?.0.as_mut()
    }
    fn insert(&mut self, k: u32, v: V) {
        let i = k as usize;
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || Slot(None));
        }
        if self.slots[i].0.replace(v).is_none() {
            self.len += 1;
        }
    }
    fn len(&self) -> usize {
        self.len
    }
    fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
    }
    fn prefetch(&self, k: &u32) {
        if let Some(slot) = self.slots.get(*k as usize) {
            prefetch(slot);
        }
    }
    fn entries<'a>(&'a self) -> impl Iterator<Item = (u32, &'a V)>
    where
        V: 'a,
    {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i as u32, v.0.as_ref()?)))
    }
}

/// Starts loading the cache lines that hold `value`, without waiting for them: a simulator of
/// 10,000 nodes touches a random node and a random member entry per event, and a miss it has
/// already asked for overlaps with the work before it.
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = value as *const T as *const i8;
        for line in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: SSE is part of every x86_64 target; a prefetch never faults and never
            // changes memory, and the address lies inside `value`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

impl MemberId for u32 {
    type Table<V> = DenseTable<V>;
}

impl MemberId for libp2p::PeerId {
    type Table<V> = HashMap<libp2p::PeerId, V>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dense_table_counts_each_id_once_and_skips_the_gaps() {
        let mut t = DenseTable::default();
        t.insert(5, "five");
        t.insert(2, "two");
        t.insert(5, "five again");
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(&5), Some(&"five again"));
        assert_eq!(t.get(&3), None);
        assert_eq!(t.get(&1000), None);
        *t.get_mut(&2).unwrap() = "deux";
        let all: Vec<_> = t.entries().collect();
        assert_eq!(all, vec![(2, &"deux"), (5, &"five again")]);
    }
}
