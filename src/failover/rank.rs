//! Rendezvous (highest random weight) ranking of a blade's candidate successors: every node orders
//! them the same way from nothing but the blade's name, the candidates' ids and what their
//! metadata says, so no coordinator is needed to agree on who claims first, and removing one
//! candidate leaves the others' order intact. The score is placement's
//! ([`crate::replication::placement::score`]), over the id's text.
//!
//! Before the score comes the candidate's [`Fit`]: an active node that already holds a blade (one
//! an operator allowed to take more) goes after every spare, one that is strained (degraded, or
//! its disk nearly full) after every one that is not, and one outside the blade's zone after
//! those in it. A busy, strained or distant candidate is still a candidate, last: a blade is
//! better held there than down.

use std::cmp::Reverse;
use std::fmt::Display;

use crate::replication::placement::score;

/// How well a candidate suits a blade, compared before the rendezvous score (lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Fit {
    /// Already holds a blade: it takes another only when no spare can.
    pub busy: bool,
    /// Degraded, or its disk nearly full.
    pub strained: bool,
    /// In another zone than the blade's holder.
    pub elsewhere: bool,
}

impl Fit {
    /// A candidate's fit for a blade whose holder is in `blade_zone` (unknown: every zone fits).
    pub fn new(busy: bool, strained: bool, zone: u64, blade_zone: Option<u64>) -> Fit {
        Fit {
            busy,
            strained,
            elsewhere: blade_zone.is_some_and(|z| z != zone),
        }
    }
}

/// A zone's name as the number the election compares (the same on every node).
pub fn zone_key(zone: &str) -> u64 {
    let hash = blake3::hash(zone.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// `candidates` ordered for `blade`, best first: by fit, then by score (ties, which need a
/// 64-bit collision, by id).
pub fn ranked<Id: Display + Ord + Copy>(
    blade: &str,
    candidates: impl IntoIterator<Item = (Id, Fit)>,
) -> Vec<Id> {
    let mut v: Vec<(Fit, Reverse<u64>, Id)> = candidates
        .into_iter()
        .map(|(c, fit)| (fit, Reverse(score(blade, &c.to_string())), c))
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(ids: impl IntoIterator<Item = u32>) -> impl Iterator<Item = (u32, Fit)> {
        ids.into_iter().map(|c| (c, Fit::default()))
    }

    #[test]
    fn removing_a_candidate_keeps_the_order_of_the_others() {
        let all = ranked("blade-03", plain(0u32..20));
        let without: Vec<u32> = ranked("blade-03", plain((0u32..20).filter(|c| *c != all[0])));
        assert_eq!(&all[1..], &without[..]);
    }

    #[test]
    fn blades_spread_their_first_choice_over_the_candidates() {
        let firsts: std::collections::BTreeSet<u32> = (0..200)
            .map(|b| ranked(&format!("blade-{b}"), plain(0u32..10))[0])
            .collect();
        assert_eq!(firsts.len(), 10, "every candidate is first for some blade");
    }

    #[test]
    fn a_busy_or_strained_candidate_goes_last_and_one_in_the_blades_zone_first() {
        let (east, west) = (zone_key("east"), zone_key("west"));
        assert_ne!(east, west);
        for b in 0..50 {
            let blade = format!("blade-{b}");
            let order = ranked(&blade, plain(0u32..6));
            // The score's favourite, strained, falls behind every other candidate...
            let fits = (0u32..6).map(|c| (c, Fit::new(false, c == order[0], east, Some(east))));
            let strained = ranked(&blade, fits);
            assert_eq!(strained[5], order[0], "{blade}");
            assert_eq!(
                &strained[..5],
                &order[1..],
                "{blade}: the others keep their order"
            );
            // ...and the one candidate in the blade's zone comes first, whatever its score.
            let last = order[5];
            let zoned = (0u32..6).map(|c| {
                (
                    c,
                    Fit::new(
                        false,
                        false,
                        if c == last { west } else { east },
                        Some(west),
                    ),
                )
            });
            assert_eq!(ranked(&blade, zoned)[0], last, "{blade}");
            // A healthy candidate elsewhere still goes before a strained one at home.
            let mixed = [
                (1u32, Fit::new(false, true, west, Some(west))),
                (2, Fit::new(false, false, east, Some(west))),
            ];
            assert_eq!(ranked(&blade, mixed), [2, 1], "{blade}");
            // A spare, however strained and distant, goes before an active node with room.
            let spare_first = [
                (1u32, Fit::new(true, false, west, Some(west))),
                (2, Fit::new(false, true, east, Some(west))),
            ];
            assert_eq!(ranked(&blade, spare_first), [2, 1], "{blade}");
        }
    }
}
