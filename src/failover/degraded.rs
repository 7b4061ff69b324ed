//! Fail-over condition (3), sustained degradation (seed `000`): what a blade's holder does when its
//! own detector raises `degraded`, by the `[failover] on_degraded` policy. Sans-IO: the agent
//! feeds it the transitions, the blade it acts as and the spares in rank order, and carries out
//! the decisions.
//!
//! - `move`: the blade is handed over to the best spare, through the declared-failover path (a
//!   last backup, a release, the spare's claim through the same majority as any takeover).
//! - `helper`: the best spare not yet helping is asked to help at the holder's epoch. It restores
//!   the blade's latest archive and answers when ready; the holder then announces it in its
//!   member metadata, and routers send it the blade's read-only envelopes while the seat stays at
//!   that epoch. Each further sustained window above the high mark asks one more spare; on
//!   `recovered` every helper is released.
//!
//! Only the holder acts on its own degradation: it knows first, and it alone may release its
//! blade. A helper never holds a seat through helping: it drops the role at once when the seat
//! leaves the epoch it was granted at, when its holder is down, or when the holder stops listing
//! it.

use dci_proto::archive::ArchiveId;
use serde::Deserialize;

use super::election::{Blade, Seat};

/// What a holder does on its own sustained degradation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDegraded {
    /// Nothing: the `degraded` event and notice only.
    #[default]
    None,
    /// Hand the blade over to a spare.
    Move,
    /// Add a helper for read-only traffic.
    Helper,
}

impl OnDegraded {
    /// The spelling in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDegraded::None => "none",
            OnDegraded::Move => "move",
            OnDegraded::Helper => "helper",
        }
    }
}

/// What the holder must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<Id> {
    /// Nothing (policy `none`).
    Nothing,
    /// This node acts as no blade: nothing to move or help.
    NotHolding,
    /// Hand the blade over to this spare.
    Move(Blade, Id),
    /// Ask this spare to help with the blade at the epoch.
    AskHelper(Blade, u64, Id),
    /// The policy needs a spare and none is free: the blade stays here as it is.
    NoSpare(Blade),
}

/// The holder's helpers: for which seat, those ready, and the one asked.
#[derive(Debug, Clone)]
pub struct Helpers<Id> {
    at: Option<(Blade, u64)>,
    ready: Vec<Id>,
    asked: Option<Id>,
}

impl<Id> Default for Helpers<Id> {
    fn default() -> Self {
        Helpers {
            at: None,
            ready: Vec::new(),
            asked: None,
        }
    }
}

impl<Id: Copy + PartialEq> Helpers<Id> {
    /// A sustained degradation here (first, or a further window): what to do, given the blade
    /// this node acts as and the free spares in rank order.
    pub fn on_degraded(
        &mut self,
        policy: OnDegraded,
        acting: Option<&(Blade, u64)>,
        spares: impl IntoIterator<Item = Id>,
    ) -> Decision<Id> {
        if policy == OnDegraded::None {
            return Decision::Nothing;
        }
        let Some((blade, epoch)) = acting.cloned() else {
            return Decision::NotHolding;
        };
        let mut spares = spares.into_iter();
        if policy == OnDegraded::Move {
            return match spares.next() {
                Some(to) => Decision::Move(blade, to),
                None => Decision::NoSpare(blade),
            };
        }
        self.sync(acting);
        if self.asked.is_some() {
            // One request at a time: the next window asks again if this one is not answered.
            self.asked = None;
        }
        match spares.find(|s| !self.ready.contains(s)) {
            Some(to) => {
                self.asked = Some(to);
                Decision::AskHelper(blade, epoch, to)
            }
            None => Decision::NoSpare(blade),
        }
    }

    /// A spare answered the request to help with `blade` at `epoch`: whether it is a helper now
    /// (it was asked, for this seat, and it is ready).
    pub fn on_answer(&mut self, from: Id, blade: &str, epoch: u64, ready: bool) -> bool {
        let current = self
            .at
            .as_ref()
            .is_some_and(|(b, e)| b == blade && *e == epoch);
        if !current || self.asked != Some(from) {
            return false;
        }
        self.asked = None;
        if ready && !self.ready.contains(&from) {
            self.ready.push(from);
        }
        ready
    }

    /// Recovered: every helper (and the one asked) is released.
    pub fn on_recovered(&mut self) -> Vec<Id> {
        let mut all: Vec<Id> = self.ready.drain(..).collect();
        all.extend(self.asked.take());
        all
    }

    /// The blade this node acts as is now `acting`: helpers of another seat are released.
    pub fn sync(&mut self, acting: Option<&(Blade, u64)>) -> Vec<Id> {
        if self.at.as_ref() == acting {
            return Vec::new();
        }
        self.at = acting.cloned();
        self.on_recovered()
    }

    /// A helper went down or gave up: it no longer serves.
    pub fn remove(&mut self, id: Id) -> bool {
        let before = self.ready.len();
        self.ready.retain(|h| *h != id);
        if self.asked == Some(id) {
            self.asked = None;
        }
        before != self.ready.len()
    }

    /// The ready helpers, and the seat they serve.
    pub fn ready(&self) -> Option<(&(Blade, u64), &[Id])> {
        self.at.as_ref().map(|at| (at, self.ready.as_slice()))
    }

    /// Whether `id` helps or was asked to.
    pub fn involves(&self, id: Id) -> bool {
        self.ready.contains(&id) || self.asked == Some(id)
    }

    /// Whether any spare helps or was asked to.
    pub fn any(&self) -> bool {
        !self.ready.is_empty() || self.asked.is_some()
    }
}

/// This node's role as a helper of another node's blade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helping<Id> {
    /// The blade.
    pub blade: Blade,
    /// The holder's seat it was granted at.
    pub seat: Seat<Id>,
    /// Whether its copy of the blade's data is restored (it serves only then).
    pub ready: bool,
    /// The archive its copy holds (none: none yet, or the blade has no complete archive).
    pub copy: Option<ArchiveId>,
    /// Whether the copy is being made or brought up to date.
    pub copying: bool,
    /// Whether the holder's metadata was seen listing it.
    listed: bool,
}

impl<Id: Copy + PartialEq> Helping<Id> {
    /// A spare asked by `holder` to help with `blade` at `epoch`: the role, if the seat table
    /// agrees that `holder` holds the blade at that epoch and this node may help (a free spare
    /// helping no other blade).
    pub fn grant(
        holder: Id,
        blade: &str,
        epoch: u64,
        seat: Option<Seat<Id>>,
        free: bool,
    ) -> Result<Helping<Id>, &'static str> {
        if !free {
            return Err("this node is not a free spare");
        }
        let asked = Seat { holder, epoch };
        if seat != Some(asked) {
            return Err("the seat table does not name the asker as the holder at that epoch");
        }
        Ok(Helping {
            blade: blade.into(),
            seat: asked,
            ready: false,
            copy: None,
            copying: false,
            listed: false,
        })
    }

    /// Whether the grant still holds: the seat is where it was, its holder is up, and the holder
    /// lists this node (once it has been seen doing so: a new helper is listed only after it
    /// answered ready).
    pub fn holds(&mut self, seat: Option<Seat<Id>>, holder_up: bool, listed: bool) -> bool {
        self.listed |= listed;
        seat == Some(self.seat) && holder_up && (listed || !self.listed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64) -> (Blade, u64) {
        ("blade-a".to_string(), epoch)
    }

    #[test]
    fn the_policy_decides_and_only_a_holder_acts() {
        let mut h = Helpers::<u32>::default();
        assert_eq!(
            h.on_degraded(OnDegraded::None, Some(&at(2)), [7]),
            Decision::Nothing
        );
        assert_eq!(
            h.on_degraded(OnDegraded::Move, None, [7]),
            Decision::NotHolding
        );
        assert_eq!(
            h.on_degraded(OnDegraded::Move, Some(&at(2)), [7, 8]),
            Decision::Move("blade-a".into(), 7)
        );
        assert_eq!(
            h.on_degraded(OnDegraded::Move, Some(&at(2)), []),
            Decision::NoSpare("blade-a".into())
        );
    }

    #[test]
    fn each_window_adds_one_helper_and_recovery_releases_them_all() {
        let mut h = Helpers::<u32>::default();
        let a = at(2);
        assert_eq!(
            h.on_degraded(OnDegraded::Helper, Some(&a), [7, 8]),
            Decision::AskHelper("blade-a".into(), 2, 7)
        );
        // An answer from a node not asked, or for another epoch, changes nothing.
        assert!(!h.on_answer(8, "blade-a", 2, true));
        assert!(!h.on_answer(7, "blade-a", 1, true));
        assert!(h.on_answer(7, "blade-a", 2, true));
        assert_eq!(h.ready(), Some((&a, &[7][..])));
        // A further window: the next spare.
        assert_eq!(
            h.on_degraded(OnDegraded::Helper, Some(&a), [7, 8]),
            Decision::AskHelper("blade-a".into(), 2, 8)
        );
        assert!(h.on_answer(8, "blade-a", 2, true));
        assert_eq!(
            h.on_degraded(OnDegraded::Helper, Some(&a), [7, 8]),
            Decision::NoSpare("blade-a".into())
        );
        let mut released = h.on_recovered();
        released.sort();
        assert_eq!(released, [7, 8]);
        assert_eq!(h.ready(), Some((&a, &[][..])));
    }

    #[test]
    fn helpers_of_an_old_seat_are_released_when_the_seat_changes() {
        let mut h = Helpers::<u32>::default();
        h.on_degraded(OnDegraded::Helper, Some(&at(2)), [7]);
        assert!(h.on_answer(7, "blade-a", 2, true));
        assert!(h.sync(Some(&at(2))).is_empty());
        assert_eq!(h.sync(Some(&at(3))), [7]);
        assert_eq!(h.sync(None), Vec::<u32>::new());
        assert!(
            !h.on_answer(7, "blade-a", 2, true),
            "a late answer for the old seat"
        );
    }

    #[test]
    fn a_helper_is_granted_only_by_the_holder_of_record_and_drops_the_role_when_the_grant_goes() {
        let seat = Seat {
            holder: 1u32,
            epoch: 2,
        };
        assert!(Helping::grant(1, "blade-a", 2, Some(seat), false).is_err());
        assert!(Helping::grant(1, "blade-a", 1, Some(seat), true).is_err());
        assert!(Helping::grant(9, "blade-a", 2, Some(seat), true).is_err());
        let mut h = Helping::grant(1, "blade-a", 2, Some(seat), true).unwrap();
        // Not listed yet (it answers once restored): it holds.
        assert!(h.holds(Some(seat), true, false));
        assert!(h.holds(Some(seat), true, true));
        assert!(!h.holds(Some(seat), false, true), "holder down");
        let moved = Seat {
            holder: 3,
            epoch: 3,
        };
        assert!(!h.holds(Some(moved), true, true), "the seat moved on");
        assert!(
            !h.holds(Some(seat), true, false),
            "listed once, then no more"
        );
    }
}
