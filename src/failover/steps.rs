//! The steps of this node's latest takeover, for `dcish status` and `dcish seats`: each step
//! (the seat won, the restore, the peerlets, the notice, the archives adopted, the replicas) is
//! one line that is updated in place while it runs, so an operator sees where a takeover is and
//! how far it got. The agent and the backup service (which adopts and restores) share one log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One step: what it is, how it stands, and when it last changed (after the seat was won).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Which step ([`Kind`]).
    pub kind: Kind,
    /// How it stands, in words.
    pub what: String,
    /// When it last changed, counted from the won seat.
    pub after: Duration,
    /// Whether it is over (not only begun).
    pub finished: bool,
}

/// The steps of a takeover, in the order they run. The blade is served from the end of its
/// restore on; adopting its archives (for its backups here) comes after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The election won.
    Seat,
    /// The latest archive restored into the blade's data set here, from the holders.
    Restore,
    /// The blade's peerlets started.
    Peerlets,
    /// The failure notice sent.
    Notice,
    /// The blade's archives made this node's own, with every block in its store.
    Adopt,
    /// The blade's archives back on `replication_factor` holders.
    Replicas,
}

impl Kind {
    /// Its name in `dcish status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Seat => "seat",
            Kind::Restore => "restore",
            Kind::Peerlets => "peerlets",
            Kind::Notice => "notice",
            Kind::Adopt => "adopt",
            Kind::Replicas => "replicas",
        }
    }
}

#[derive(Debug)]
struct Log {
    blade: String,
    epoch: u64,
    started: Instant,
    steps: Vec<Step>,
}

/// The log of the latest takeover, shared by the agent and the backup service.
#[derive(Debug, Clone, Default)]
pub struct TakeoverSteps(Arc<Mutex<Option<Log>>>);

impl TakeoverSteps {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Log>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node won `blade` at `epoch`: a new log, whose first step says so.
    pub fn begin(&self, blade: &str, epoch: u64, what: impl Into<String>) {
        *self.lock() = Some(Log {
            blade: blade.into(),
            epoch,
            started: Instant::now(),
            steps: vec![Step {
                kind: Kind::Seat,
                what: what.into(),
                after: Duration::ZERO,
                finished: true,
            }],
        });
    }

    /// How step `kind` of `blade`'s takeover stands now, while it runs (replacing what it said
    /// before). Does nothing unless the latest takeover is of `blade`.
    pub fn set(&self, blade: &str, kind: Kind, what: impl Into<String>) {
        self.put(blade, kind, what.into(), false);
    }

    /// How step `kind` of `blade`'s takeover ended.
    pub fn finish(&self, blade: &str, kind: Kind, what: impl Into<String>) {
        self.put(blade, kind, what.into(), true);
    }

    fn put(&self, blade: &str, kind: Kind, what: String, finished: bool) {
        let mut log = self.lock();
        let Some(log) = log.as_mut().filter(|l| l.blade == blade) else {
            return;
        };
        let step = Step {
            kind,
            what,
            after: log.started.elapsed(),
            finished,
        };
        match log.steps.iter_mut().find(|s| s.kind == kind) {
            Some(s) => *s = step,
            None => {
                log.steps.push(step);
                log.steps.sort_by_key(|s| s.kind);
            }
        }
    }

    /// Whether step `kind` of `blade`'s latest takeover is over.
    pub fn finished(&self, blade: &str, kind: Kind) -> bool {
        self.lock().as_ref().is_some_and(|l| {
            l.blade == blade && l.steps.iter().any(|s| s.kind == kind && s.finished)
        })
    }

    /// The steps of the takeover of `blade` at `epoch`, if that is the latest one here.
    pub fn of(&self, blade: &str, epoch: u64) -> Vec<Step> {
        self.lock()
            .as_ref()
            .filter(|l| l.blade == blade && l.epoch == epoch)
            .map(|l| l.steps.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_is_one_line_updated_in_place_in_the_order_steps_run() {
        let steps = TakeoverSteps::default();
        steps.set("b1", Kind::Adopt, "before any takeover: ignored");
        assert!(steps.of("b1", 2).is_empty());
        steps.begin("b1", 2, "won at epoch 2");
        steps.set("b1", Kind::Adopt, "fetching archive 1.1 (1 of 3)");
        steps.set("b1", Kind::Restore, "restoring archive 1.3");
        steps.set("b1", Kind::Adopt, "fetching archive 1.2 (2 of 3)");
        steps.set("b9", Kind::Notice, "another blade: ignored");
        assert!(!steps.finished("b1", Kind::Restore), "still running");
        steps.finish("b1", Kind::Restore, "restored archive 1.3");
        let got: Vec<(Kind, String)> = steps
            .of("b1", 2)
            .into_iter()
            .map(|s| (s.kind, s.what))
            .collect();
        assert_eq!(
            got,
            [
                (Kind::Seat, "won at epoch 2".to_string()),
                (Kind::Restore, "restored archive 1.3".to_string()),
                (Kind::Adopt, "fetching archive 1.2 (2 of 3)".to_string()),
            ]
        );
        assert!(steps.finished("b1", Kind::Restore) && !steps.finished("b1", Kind::Adopt));
        assert!(!steps.finished("b1", Kind::Notice));
        assert!(steps.of("b1", 3).is_empty(), "another epoch's takeover");
        // A later takeover starts a new log.
        steps.begin("b2", 5, "won at epoch 5");
        assert!(steps.of("b1", 2).is_empty());
        assert_eq!(steps.of("b2", 5).len(), 1);
    }
}
