//! Rendezvous (highest random weight) ranking: every node orders the candidates for a blade the
//! same way from nothing but the blade's name and the candidates' ids, so no coordinator is needed
//! to agree on who should claim first, and removing one candidate leaves the others' order intact.

use std::hash::{Hash, Hasher};

/// FNV-1a, 64 bits: stable across Rust versions and platforms (unlike the standard hasher), so
/// that nodes running different builds still rank alike.
struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The weight of `candidate` for `blade`; higher ranks first.
pub fn weight<Id: Hash>(blade: &str, candidate: &Id) -> u64 {
    let mut h = Fnv1a(0xcbf2_9ce4_8422_2325);
    blade.hash(&mut h);
    candidate.hash(&mut h);
    // FNV's low bits mix poorly for short inputs; a final avalanche spreads them.
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// `candidates` ordered for `blade`, best first (ties, which need a 64-bit collision, by id).
pub fn ranked<Id: Hash + Ord + Copy>(
    blade: &str,
    candidates: impl IntoIterator<Item = Id>,
) -> Vec<Id> {
    let mut v: Vec<(u64, Id)> = candidates
        .into_iter()
        .map(|c| (weight(blade, &c), c))
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    v.into_iter().map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_candidate_keeps_the_order_of_the_others() {
        let all = ranked("blade-03", 0u32..20);
        let without: Vec<u32> = ranked("blade-03", (0u32..20).filter(|c| *c != all[0]));
        assert_eq!(&all[1..], &without[..]);
    }

    #[test]
    fn blades_spread_their_first_choice_over_the_candidates() {
        let firsts: std::collections::BTreeSet<u32> = (0..200)
            .map(|b| ranked(&format!("blade-{b}"), 0u32..10)[0])
            .collect();
        assert_eq!(firsts.len(), 10, "every candidate is first for some blade");
    }
}
