//! Archive ids, and how operators name archives.
//!
//! An archive's id is the epoch of its blade's seat when it was made and its number in the
//! blade's history, spelled `EPOCH.NUMBER` (`3.12`). One node at most acts as a blade at any
//! epoch, so two archives never share an id: a node that takes a blade over while the holders of
//! its latest archives are cut off numbers its own from what it sees, under its own epoch, and
//! the archives it could not see keep theirs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One archive of a blade. Ordered by epoch, then number: an archive's parent always sorts
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ArchiveId {
    /// The blade's seat epoch at the node that made it (0 before the blade's first seat).
    pub epoch: u64,
    /// Its number: one more than the highest that node knew for the blade.
    pub number: u64,
}

impl fmt::Display for ArchiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.number)
    }
}

/// An operator's name for an archive: a whole id, or a number alone, which names the one archive
/// of the blade with that number (and is refused where a takeover left two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveRef {
    /// The epoch, when given.
    pub epoch: Option<u64>,
    /// The number.
    pub number: u64,
}

impl ArchiveRef {
    /// Whether `id` is an archive this name may mean.
    pub fn matches(&self, id: &ArchiveId) -> bool {
        id.number == self.number && self.epoch.is_none_or(|e| e == id.epoch)
    }

    /// The one archive among `ids` this names, or why there is none.
    pub fn pick(&self, ids: impl IntoIterator<Item = ArchiveId>) -> Result<ArchiveId, PickError> {
        let found: Vec<ArchiveId> = ids.into_iter().filter(|id| self.matches(id)).collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(PickError::Missing(*self)),
            _ => Err(PickError::Ambiguous(*self, found)),
        }
    }
}

/// Why an operator's name picks no archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// No archive has that id or number.
    #[error("there is no archive {0}")]
    Missing(ArchiveRef),
    /// A number alone, which a takeover left on more than one archive.
    #[error("archive {0} is ambiguous: name one of {ids}", ids = joined(.1))]
    Ambiguous(ArchiveRef, Vec<ArchiveId>),
}

fn joined(ids: &[ArchiveId]) -> String {
    ids.iter()
        .map(ArchiveId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<ArchiveId> for ArchiveRef {
    fn from(id: ArchiveId) -> ArchiveRef {
        ArchiveRef {
            epoch: Some(id.epoch),
            number: id.number,
        }
    }
}

impl fmt::Display for ArchiveRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.epoch {
            Some(e) => write!(f, "{e}.{}", self.number),
            None => write!(f, "{}", self.number),
        }
    }
}

fn decimal(part: &str, whole: &str) -> Result<u64, String> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{whole:?} is not an archive id (EPOCH.NUMBER, or NUMBER)"
        ));
    }
    part.parse()
        .map_err(|_| format!("{whole:?} is out of range for an archive id"))
}

impl FromStr for ArchiveRef {
    type Err = String;
    fn from_str(s: &str) -> Result<ArchiveRef, String> {
        match s.split_once('.') {
            Some((epoch, number)) => Ok(ArchiveRef {
                epoch: Some(decimal(epoch, s)?),
                number: decimal(number, s)?,
            }),
            None => Ok(ArchiveRef {
                epoch: None,
                number: decimal(s, s)?,
            }),
        }
    }
}

impl FromStr for ArchiveId {
    type Err = String;
    fn from_str(s: &str) -> Result<ArchiveId, String> {
        match s.parse::<ArchiveRef>()? {
            ArchiveRef {
                epoch: Some(epoch),
                number,
            } => Ok(ArchiveId { epoch, number }),
            ArchiveRef { epoch: None, .. } => Err(format!(
                "{s:?} is not an archive id: it needs its epoch (EPOCH.NUMBER)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(epoch: u64, number: u64) -> ArchiveId {
        ArchiveId { epoch, number }
    }

    #[test]
    fn ids_read_back_and_order_by_epoch_first() {
        assert_eq!(id(3, 12).to_string(), "3.12");
        assert_eq!("3.12".parse::<ArchiveId>(), Ok(id(3, 12)));
        assert!(id(3, 40) < id(4, 1), "a later epoch's archives come after");
        assert!("12".parse::<ArchiveId>().unwrap_err().contains("epoch"));
        for bad in [
            "",
            ".",
            "3.",
            ".3",
            "a.1",
            "1.2.3",
            "-1",
            "1 ",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<ArchiveRef>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_number_alone_names_an_archive_only_when_one_has_it() {
        let ids = [id(1, 1), id(1, 2), id(2, 2), id(2, 3)];
        let r: ArchiveRef = "3".parse().unwrap();
        assert_eq!(r.pick(ids), Ok(id(2, 3)));
        let r: ArchiveRef = "2".parse().unwrap();
        let why = r.pick(ids).unwrap_err();
        assert_eq!(why, PickError::Ambiguous(r, vec![id(1, 2), id(2, 2)]));
        assert!(why.to_string().contains("1.2, 2.2"), "{why}");
        let r: ArchiveRef = "1.2".parse().unwrap();
        assert_eq!(r.pick(ids), Ok(id(1, 2)));
        assert!(ArchiveRef::from(id(5, 5)).pick(ids).is_err());
    }
}
