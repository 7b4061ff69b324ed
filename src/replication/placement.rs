//! Which nodes hold a blade's data: a pure function of the blade, the candidates and the settings.
//!
//! Rendezvous hashing ranks every candidate by a hash of (blade, node), so every node computes the
//! same holders from the same member table, and a node joining or leaving moves only the blades it
//! ranks high for. Zones come first: the best-ranked node of each zone other than the owner's, so
//! at least one copy is remote whenever a remote node exists, then the rest by rank. A manual list
//! overrides all of it.

/// A node that may hold data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its node id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its zone.
    pub zone: String,
}

/// The placement settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// How many holders, besides the owner.
    pub factor: usize,
    /// Node names that hold the data instead of the automatic choice (those that are candidates).
    pub manual: Vec<String>,
    /// When not empty, only nodes in these zones hold data.
    pub zones: Vec<String>,
}

/// The rendezvous score of `node` (its id as text) for `blade`; higher ranks first. Failover ranks
/// a blade's candidate successors with it too, so both agree on every node.
pub fn score(blade: &str, node: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(blade.as_bytes());
    h.update(&[0]);
    h.update(node.as_bytes());
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// Every eligible candidate but the owner, best first: the placement order that repair walks.
pub fn ranked<'c>(
    blade: &str,
    owner_id: &str,
    candidates: &'c [Candidate],
    placement: &Placement,
) -> Vec<&'c Candidate> {
    let mut ranked: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.id != owner_id)
        .filter(|c| placement.zones.is_empty() || placement.zones.contains(&c.zone))
        .collect();
    ranked.sort_by(|a, b| {
        score(blade, &b.id)
            .cmp(&score(blade, &a.id))
            .then(a.id.cmp(&b.id))
    });
    ranked.dedup_by(|a, b| a.id == b.id);
    ranked
}

/// The holders of `blade` (node ids), owned by `owner_id` in `owner_zone`, among `candidates`.
pub fn holders(
    blade: &str,
    owner_id: &str,
    owner_zone: &str,
    candidates: &[Candidate],
    placement: &Placement,
) -> Vec<String> {
    if !placement.manual.is_empty() {
        let mut out: Vec<String> = Vec::new();
        for name in &placement.manual {
            if let Some(c) = candidates
                .iter()
                .find(|c| &c.name == name && c.id != owner_id)
            {
                if !out.contains(&c.id) {
                    out.push(c.id.clone());
                }
            }
        }
        return out;
    }
    let ranked = ranked(blade, owner_id, candidates, placement);
    let mut chosen: Vec<&Candidate> = Vec::new();
    let mut zones_used = vec![owner_zone];
    // One per zone not yet used, best-ranked first, so copies spread over failure domains.
    for c in &ranked {
        if chosen.len() == placement.factor {
            break;
        }
        if !zones_used.contains(&c.zone.as_str()) {
            zones_used.push(&c.zone);
            chosen.push(c);
        }
    }
    for c in &ranked {
        if chosen.len() == placement.factor {
            break;
        }
        if !chosen.iter().any(|x| x.id == c.id) {
            chosen.push(c);
        }
    }
    chosen.into_iter().map(|c| c.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &[(&str, &str)]) -> Vec<Candidate> {
        spec.iter()
            .map(|(n, z)| Candidate {
                id: format!("id-{n}"),
                name: n.to_string(),
                zone: z.to_string(),
            })
            .collect()
    }

    fn place(blade: &str, owner: &str, zone: &str, c: &[Candidate], p: &Placement) -> Vec<String> {
        holders(blade, &format!("id-{owner}"), zone, c, p)
    }

    #[test]
    fn placement_follows_the_table_of_cases() {
        let one_zone = nodes(&[("a", "z"), ("b", "z"), ("c", "z"), ("d", "z")]);
        let two_zones = nodes(&[
            ("a", "local"),
            ("b", "local"),
            ("c", "local"),
            ("r", "remote"),
        ]);
        let p = |factor: usize| Placement {
            factor,
            ..Placement::default()
        };
        let manual = Placement {
            factor: 2,
            manual: vec!["d".into(), "gone".into(), "a".into(), "c".into()],
            zones: vec![],
        };
        let only_z2 = Placement {
            factor: 3,
            manual: vec![],
            zones: vec!["remote".into()],
        };
        // (candidates, owner, owner's zone, settings, expected count, must include, must exclude)
        type Case<'a> = (
            &'a [Candidate],
            &'a str,
            &'a str,
            Placement,
            usize,
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: Vec<Case> = vec![
            (&one_zone, "a", "z", p(2), 2, &[], &["id-a"]),
            (
                &one_zone,
                "a",
                "z",
                p(9),
                3,
                &["id-b", "id-c", "id-d"],
                &["id-a"],
            ),
            (&one_zone, "a", "z", p(0), 0, &[], &[]),
            (&two_zones, "a", "local", p(1), 1, &["id-r"], &[]),
            (&two_zones, "a", "local", p(2), 2, &["id-r"], &["id-a"]),
            // A manual list is taken as given, less the owner and nodes not alive.
            (&one_zone, "a", "z", manual, 2, &["id-d", "id-c"], &["id-a"]),
            (&two_zones, "a", "local", only_z2, 1, &["id-r"], &[]),
            (&[], "a", "z", p(2), 0, &[], &[]),
        ];
        for (i, (cands, owner, zone, settings, count, yes, no)) in cases.into_iter().enumerate() {
            let got = place("blade-1", owner, zone, cands, &settings);
            assert_eq!(got.len(), count, "case {i}: {got:?}");
            for y in yes {
                assert!(
                    got.iter().any(|g| g == y),
                    "case {i}: {y} missing in {got:?}"
                );
            }
            for n in no {
                assert!(!got.iter().any(|g| g == n), "case {i}: {n} in {got:?}");
            }
        }
    }

    #[test]
    fn every_node_computes_the_same_holders_whatever_the_order_of_its_table() {
        let mut c = nodes(&[("a", "z"), ("b", "z"), ("c", "z"), ("d", "z"), ("e", "z")]);
        let p = Placement {
            factor: 2,
            ..Placement::default()
        };
        let first = place("blade-7", "a", "z", &c, &p);
        c.reverse();
        assert_eq!(place("blade-7", "a", "z", &c, &p), first);
    }

    #[test]
    fn losing_a_holder_replaces_only_that_holder() {
        let c = nodes(&[
            ("a", "z"),
            ("b", "z"),
            ("c", "z"),
            ("d", "z"),
            ("e", "z"),
            ("f", "z"),
        ]);
        let p = Placement {
            factor: 2,
            ..Placement::default()
        };
        for blade in ["x", "y", "z", "w"] {
            let before = place(blade, "a", "z", &c, &p);
            let survivors: Vec<Candidate> =
                c.iter().filter(|n| n.id != before[0]).cloned().collect();
            let after = place(blade, "a", "z", &survivors, &p);
            assert!(
                after.contains(&before[1]),
                "{blade}: {before:?} -> {after:?}"
            );
            assert_eq!(after.len(), 2);
        }
    }

    #[test]
    fn blades_spread_over_nodes() {
        let c = nodes(&[("a", "z"), ("b", "z"), ("c", "z"), ("d", "z"), ("e", "z")]);
        let p = Placement {
            factor: 1,
            ..Placement::default()
        };
        let mut counts = std::collections::HashMap::new();
        for i in 0..200 {
            let h = place(&format!("blade-{i}"), "a", "z", &c, &p);
            *counts.entry(h[0].clone()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|n| *n > 25), "{counts:?}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the members, zones and factor: distinct holders, never the owner, as many as
        /// the factor asks or every other node, and the same answer in any table order.
        #[test]
        fn holders_are_distinct_exclude_the_owner_and_ignore_table_order(
            n in 1usize..30,
            zones in 1usize..4,
            factor in 0usize..5,
            owner in 0usize..30,
            blade in "[a-z]{1,8}",
        ) {
            let c: Vec<Candidate> = (0..n)
                .map(|i| Candidate { id: format!("id{i}"), name: format!("n{i}"), zone: format!("z{}", i % zones) })
                .collect();
            let owner = format!("id{}", owner % n);
            let p = Placement { factor, ..Placement::default() };
            let got = holders(&blade, &owner, "z0", &c, &p);
            prop_assert_eq!(got.len(), factor.min(n - 1));
            prop_assert!(!got.contains(&owner));
            let mut sorted = got.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), got.len());
            let mut reversed = c.clone();
            reversed.reverse();
            prop_assert_eq!(holders(&blade, &owner, "z0", &reversed, &p), got.clone());
            // With another zone present, at least one copy leaves the owner's zone.
            if factor > 0 && c.iter().any(|x| x.zone != "z0" && x.id != owner) {
                prop_assert!(got.iter().any(|h| c.iter().any(|x| &x.id == h && x.zone != "z0")));
            }
        }
    }
}
