//! Node sets, spelled as ClusterShell's `nodeset` and pdsh's `-w` spell them: `blade-[01-08,10]`,
//! comma lists, the groups `@all`, `@active`, `@spares` and `@zone:NAME`, and exclusion.
//!
//! A set is resolved against the member table, so a group means what the mesh holds now, and a
//! name the mesh does not know is an error rather than a silent no-op. Output headers fold a set
//! back into ranges (`blade-[01-03,05]`); expanding a folded set gives the same names again.

use std::collections::{BTreeMap, BTreeSet};

/// The most names one expression may expand to: a typo like `n[1-99999999]` is refused, not
/// allocated.
pub const MAX_NAMES: usize = 100_000;

/// A malformed or unresolvable node set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSetError {
    /// The expression does not parse; nothing was resolved.
    #[error("bad node set {expr:?}: {reason}")]
    Syntax {
        /// The expression.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The expression names members the mesh does not know; nothing was resolved.
    #[error("unknown blade(s): {0}")]
    Unknown(String),
    /// The expression names a group that does not exist.
    #[error("unknown group @{0} (groups: @all, @active, @spares, @zone:NAME)")]
    UnknownGroup(String),
}

/// What a set is resolved against: a member's name, role and zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its blade (or node) name.
    pub name: String,
    /// `active` or `spare`.
    pub role: String,
    /// Its zone.
    pub zone: String,
}

fn syntax(expr: &str, reason: impl Into<String>) -> NodeSetError {
    NodeSetError::Syntax {
        expr: expr.to_owned(),
        reason: reason.into(),
    }
}

/// Splits at the commas outside brackets.
fn terms(expr: &str) -> Result<Vec<&str>, NodeSetError> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in expr.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(syntax(expr, "nested '['")),
            ']' if depth == 1 => depth = 0,
            ']' => return Err(syntax(expr, "']' without '['")),
            ',' if depth == 0 => {
                out.push(expr[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(syntax(expr, "'[' without ']'"));
    }
    out.push(expr[start..].trim());
    if out.iter().any(|t| t.is_empty()) {
        return Err(syntax(expr, "an empty name"));
    }
    Ok(out)
}

/// The numbers a bracket lists (`01-08,10`), each as written with its padding.
fn range_items(expr: &str, inner: &str) -> Result<Vec<String>, NodeSetError> {
    let mut out = Vec::new();
    for part in inner.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(syntax(expr, format!("{part:?} is not a number or a range")));
        }
        let too_long = || syntax(expr, format!("{part:?} is too large"));
        let a: u64 = lo.parse().map_err(|_| too_long())?;
        let b: u64 = hi.parse().map_err(|_| too_long())?;
        if a > b {
            return Err(syntax(expr, format!("{part:?} runs backwards")));
        }
        if (b - a) as usize >= MAX_NAMES || out.len() + (b - a) as usize >= MAX_NAMES {
            return Err(syntax(expr, format!("more than {MAX_NAMES} names")));
        }
        // `01-10` pads every number to the width of its first; `1-10` pads nothing.
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        out.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

/// Expands one pattern (`rack[1-2]-n[01-03]`) into names, brackets multiplied out.
pub fn expand(pattern: &str) -> Result<Vec<String>, NodeSetError> {
    let mut names = vec![String::new()];
    let mut rest = pattern;
    while let Some(open) = rest.find('[') {
        let close = rest[open..]
            .find(']')
            .map(|i| open + i)
            .ok_or_else(|| syntax(pattern, "'[' without ']'"))?;
        let items = range_items(pattern, &rest[open + 1..close])?;
        if names.len() * items.len() > MAX_NAMES {
            return Err(syntax(pattern, format!("more than {MAX_NAMES} names")));
        }
        let literal = &rest[..open];
        names = names
            .iter()
            .flat_map(|n| items.iter().map(move |i| format!("{n}{literal}{i}")))
            .collect();
        rest = &rest[close + 1..];
    }
    if rest.contains(']') {
        return Err(syntax(pattern, "']' without '['"));
    }
    for n in &mut names {
        n.push_str(rest);
    }
    Ok(names)
}

/// Resolves `expr`, less `exclude`, against the members: the names, in folding order. Every
/// literal name must be a member; groups select by role and zone.
pub fn resolve(
    expr: &str,
    exclude: Option<&str>,
    members: &[Candidate],
) -> Result<Vec<String>, NodeSetError> {
    let mut chosen = select(expr, members)?;
    if let Some(x) = exclude {
        for name in select(x, members)? {
            chosen.remove(&name);
        }
    }
    Ok(sorted(chosen))
}

fn select(expr: &str, members: &[Candidate]) -> Result<BTreeSet<String>, NodeSetError> {
    let mut out = BTreeSet::new();
    let mut unknown = Vec::new();
    for term in terms(expr)? {
        if let Some(group) = term.strip_prefix('@') {
            let pick = |m: &Candidate| match group {
                "all" => Ok(true),
                "active" => Ok(m.role == "active"),
                "spares" | "spare" => Ok(m.role == "spare"),
                g => match g.strip_prefix("zone:") {
                    Some(zone) if !zone.is_empty() => Ok(m.zone == zone),
                    _ => Err(NodeSetError::UnknownGroup(g.to_owned())),
                },
            };
            for m in members {
                if pick(m)? {
                    out.insert(m.name.clone());
                }
            }
            continue;
        }
        for name in expand(term)? {
            if members.iter().any(|m| m.name == name) {
                out.insert(name);
            } else {
                unknown.push(name);
            }
        }
    }
    if !unknown.is_empty() {
        return Err(NodeSetError::Unknown(fold(&unknown)));
    }
    Ok(out)
}

/// A name cut around its last run of digits: (before, digits, after).
fn split_number(name: &str) -> Option<(&str, &str, &str)> {
    let end = name.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = name[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    Some((&name[..start], &name[start..end], &name[end..]))
}

/// How a name's number is written: `Some(width)` when zero-padded (`007`), `None` when not.
fn padding(digits: &str) -> Option<usize> {
    (digits.len() > 1 && digits.starts_with('0')).then_some(digits.len())
}

/// Names in the order a person reads them: by prefix, then by number, then by suffix.
pub fn sorted(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = names.into_iter().collect();
    v.sort_by_cached_key(|n| sort_key(n));
    v.dedup();
    v
}

fn sort_key(name: &str) -> (String, u128, String, String) {
    match split_number(name) {
        Some((pre, digits, post)) if digits.len() <= 38 => (
            pre.to_owned(),
            digits.parse().unwrap_or(0),
            post.to_owned(),
            name.to_owned(),
        ),
        _ => (name.to_owned(), 0, String::new(), name.to_owned()),
    }
}

/// Folds names into ranges: `blade-01,blade-02,blade-03,blade-05` → `blade-[01-03,05]`.
/// Numbers fold together only when written the same way (same padding), so that expanding the
/// result gives back exactly the names given.
pub fn fold(names: &[String]) -> String {
    // (prefix, suffix, padded width or 0) → numbers; names without a number stay as they are.
    let mut groups: BTreeMap<(String, String, usize), BTreeSet<u64>> = BTreeMap::new();
    let mut plain = Vec::new();
    let padded: BTreeSet<(&str, &str, usize)> = names
        .iter()
        .filter_map(|n| split_number(n))
        .filter_map(|(pre, digits, post)| Some((pre, post, padding(digits)?)))
        .collect();
    for name in names {
        match split_number(name) {
            Some((pre, digits, post)) if digits.len() <= 18 => {
                // An unpadded number as wide as a padded one is written the same way: `09,10`.
                let width = padding(digits)
                    .or_else(|| {
                        padded
                            .contains(&(pre, post, digits.len()))
                            .then_some(digits.len())
                    })
                    .unwrap_or(0);
                let n = digits.parse().unwrap_or(0);
                groups
                    .entry((pre.to_owned(), post.to_owned(), width))
                    .or_default()
                    .insert(n);
            }
            _ => plain.push(name.clone()),
        }
    }
    let mut parts: Vec<(String, String)> = plain.into_iter().map(|p| (p.clone(), p)).collect();
    for ((pre, post, width), numbers) in groups {
        let first = numbers.first().copied().unwrap_or(0);
        let text = if numbers.len() == 1 {
            format!("{pre}{first:0width$}{post}")
        } else {
            format!("{pre}[{}]{post}", ranges(&numbers, width))
        };
        parts.push((format!("{pre}{first:020}{post}"), text));
    }
    parts.sort();
    parts
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

/// `1,2,3,5` → `1-3,5`, each number written `width` wide.
fn ranges(numbers: &BTreeSet<u64>, width: usize) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = numbers.iter().copied().peekable();
    while let Some(lo) = iter.next() {
        let mut hi = lo;
        while iter.peek() == Some(&(hi + 1)) {
            hi += 1;
            iter.next();
        }
        out.push(if lo == hi {
            format!("{lo:0width$}")
        } else {
            format!("{lo:0width$}-{hi:0width$}")
        });
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members() -> Vec<Candidate> {
        let m = |name: &str, role: &str, zone: &str| Candidate {
            name: name.into(),
            role: role.into(),
            zone: zone.into(),
        };
        vec![
            m("blade-01", "active", "a"),
            m("blade-02", "active", "a"),
            m("blade-03", "active", "b"),
            m("blade-10", "active", "b"),
            m("spare-1", "spare", "a"),
        ]
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn brackets_expand_with_their_padding_and_multiply_out() {
        assert_eq!(
            expand("blade-[01-03,10]").unwrap(),
            names(&["blade-01", "blade-02", "blade-03", "blade-10"])
        );
        assert_eq!(expand("n[8-10]").unwrap(), names(&["n8", "n9", "n10"]));
        assert_eq!(
            expand("r[1-2]n[1-2].x").unwrap(),
            names(&["r1n1.x", "r1n2.x", "r2n1.x", "r2n2.x"])
        );
        assert_eq!(expand("plain").unwrap(), names(&["plain"]));
    }

    #[test]
    fn malformed_sets_are_one_line_errors() {
        for bad in [
            "b[1-",
            "b1]",
            "b[a-b]",
            "b[3-1]",
            "b[[1]]",
            "b[]",
            "a,,b",
            "",
            "n[1-99999999]",
            "n[99999999999999999999999]",
        ] {
            let e = resolve(bad, None, &members()).unwrap_err().to_string();
            assert!(
                !e.contains('\n') && e.contains("bad node set"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn groups_select_by_role_and_zone_and_exclusion_removes() {
        let m = members();
        assert_eq!(resolve("@all", None, &m).unwrap().len(), 5);
        assert_eq!(
            resolve("@active", Some("blade-[02-03]"), &m).unwrap(),
            names(&["blade-01", "blade-10"])
        );
        assert_eq!(resolve("@spares", None, &m).unwrap(), names(&["spare-1"]));
        assert_eq!(
            resolve("@zone:a", Some("@spares"), &m).unwrap(),
            names(&["blade-01", "blade-02"])
        );
        assert_eq!(
            resolve("blade-10,blade-01", None, &m).unwrap(),
            names(&["blade-01", "blade-10"])
        );
        assert_eq!(
            resolve("@racks", None, &m),
            Err(NodeSetError::UnknownGroup("racks".into()))
        );
    }

    #[test]
    fn names_the_mesh_does_not_know_are_named_folded() {
        assert_eq!(
            resolve("blade-[01-05]", None, &members())
                .unwrap_err()
                .to_string(),
            "unknown blade(s): blade-[04-05]"
        );
    }

    #[test]
    fn folding_makes_ranges_per_prefix_and_padding() {
        let f = |v: &[&str]| fold(&names(v));
        assert_eq!(
            f(&["blade-01", "blade-02", "blade-03", "blade-05"]),
            "blade-[01-03,05]"
        );
        assert_eq!(f(&["n9", "n10", "n11"]), "n[9-11]");
        assert_eq!(f(&["n09", "n10"]), "n[09-10]");
        assert_eq!(f(&["spare-1", "blade-2", "web"]), "blade-2,spare-1,web");
        assert_eq!(f(&["a1b", "a2b", "a3c"]), "a[1-2]b,a3c");
        assert_eq!(f(&["n1", "n01"]), "n01,n1");
    }

    proptest! {
        /// Whatever names are folded, expanding the fold gives exactly those names back.
        #[test]
        fn expanding_a_fold_gives_back_the_same_names(
            raw in prop::collection::btree_set(
                ("[a-c]{1,2}-?", 0u64..40, 0usize..4, "(\\.x)?"),
                0..30,
            )
        ) {
            let names: BTreeSet<String> = raw
                .iter()
                .map(|(pre, n, width, post)| format!("{pre}{n:0width$}{post}"))
                .collect();
            let list: Vec<String> = names.iter().cloned().collect();
            let folded = fold(&list);
            let mut back = BTreeSet::new();
            if !list.is_empty() {
                for term in terms(&folded).unwrap() {
                    back.extend(expand(term).unwrap());
                }
            }
            prop_assert_eq!(back, names, "fold was {}", folded);
        }

        /// Expansion never panics, and never yields more than its limit.
        #[test]
        fn any_expression_parses_or_is_refused(expr in "[a-c0-9\\[\\],@:-]{0,24}") {
            if let Ok(v) = resolve(&expr, None, &members()) {
                prop_assert!(v.len() <= MAX_NAMES);
            }
        }
    }
}
