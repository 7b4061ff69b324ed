//! Membership events for the rest of the agent: a subscription instead of polling.
//!
//! The agent publishes every change the membership core reports, and every degradation its own
//! detector raises, as an [`Event`]. Failover and replication subscribe with
//! [`EventHub::subscribe`]; the last [`RECENT`] events are also kept for `dcish events`.

use std::collections::VecDeque;
use std::time::SystemTime;

use libp2p::PeerId;
use tokio::sync::broadcast;

/// How many past events are kept for operators.
pub const RECENT: usize = 256;
/// How many events a slow subscriber may fall behind before it misses some (and is told so).
const CHANNEL_CAPACITY: usize = 1024;

/// What happened to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// First heard of.
    Joined,
    /// Alive again after suspicion, a broken link or a death declared in error.
    Alive,
    /// Its probes fail; dead unless it refutes in time.
    Suspect,
    /// Confirmed dead on every liveness channel.
    Dead,
    /// Left gracefully.
    Left,
    /// Its metadata (role, addresses, resources) changed.
    MetaChanged,
    /// Its probes fail but it is alive on the relay channel: a broken link, no failover.
    LinkUnreachable,
    /// A resource figure stayed above its high mark for the sustained window.
    Degraded,
    /// After being degraded, it stayed below its low mark for the recovery window.
    Recovered,
}

impl EventKind {
    /// The spelling in logs, `dcish events` and the control protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Joined => "joined",
            EventKind::Alive => "alive",
            EventKind::Suspect => "suspect",
            EventKind::Dead => "dead",
            EventKind::Left => "left",
            EventKind::MetaChanged => "metadata-changed",
            EventKind::LinkUnreachable => "link-unreachable",
            EventKind::Degraded => "degraded",
            EventKind::Recovered => "recovered",
        }
    }
}

/// One event about one member (possibly this node itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The member.
    pub id: PeerId,
    /// Its name.
    pub name: String,
    /// What happened.
    pub kind: EventKind,
    /// When this node saw it.
    pub at: SystemTime,
    /// More, for people (e.g. which metric degraded).
    pub detail: String,
}

/// Publishes events to every subscriber and keeps the recent ones.
pub struct EventHub {
    tx: broadcast::Sender<Event>,
    recent: VecDeque<Event>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            recent: VecDeque::with_capacity(RECENT),
        }
    }
}

impl EventHub {
    /// A receiver of every event published from now on. A receiver that falls more than 1024
    /// events behind gets `RecvError::Lagged` and then the newest ones.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Publishes one event.
    pub fn publish(&mut self, event: Event) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(event.clone());
        // No subscriber is not an error.
        let _ = self.tx.send(event);
    }

    /// The last [`RECENT`] events, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &Event> {
        self.recent.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Event {
        Event {
            id: PeerId::random(),
            name: format!("n{n}"),
            kind: EventKind::Joined,
            at: SystemTime::UNIX_EPOCH,
            detail: String::new(),
        }
    }

    #[test]
    fn subscribers_get_every_event_and_the_history_is_bounded() {
        let mut hub = EventHub::default();
        let mut rx = hub.subscribe();
        for n in 0..RECENT + 10 {
            hub.publish(event(n));
        }
        assert_eq!(rx.try_recv().unwrap().name, "n0");
        assert_eq!(hub.recent().count(), RECENT);
        assert_eq!(hub.recent().next().unwrap().name, "n10");
    }
}
