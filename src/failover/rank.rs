//! Rendezvous (highest random weight) ranking of a blade's candidate successors: every node orders
//! them the same way from nothing but the blade's name and the candidates' ids, so no coordinator
//! is needed to agree on who claims first, and removing one candidate leaves the others' order
//! intact. The score is placement's ([`crate::replication::placement::score`]), over the id's text.

use std::fmt::Display;

use crate::replication::placement::score;

/// `candidates` ordered for `blade`, best first (ties, which need a 64-bit collision, by id).
pub fn ranked<Id: Display + Ord + Copy>(
    blade: &str,
    candidates: impl IntoIterator<Item = Id>,
) -> Vec<Id> {
    let mut v: Vec<(u64, Id)> = candidates
        .into_iter()
        .map(|c| (score(blade, &c.to_string()), c))
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
