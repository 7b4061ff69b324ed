//! Failure notices on the agent's side: building the broadcast envelope, logging what arrives
//! once, and paging the operator for the two worst levels.
//!
//! Who sends: the node whose own suspicion timer declares a member dead (usually one or a few
//! nodes, not all of them), and any node about a fault of its own (a disk error, a sustained
//! degradation). Every agent that receives a notice logs it; several declarers of one death are
//! logged and paged once, because notices are deduplicated by (part, id, level) for a while.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use dci_proto::notice::{FailureNotice, Level, NOTICE_APP};
use dci_proto::{Destination, Envelope, Kind, Sender, Target};

/// How long a notice about the same (part, id, level) is not logged or paged again.
const DEDUP_WINDOW: Duration = Duration::from_secs(60);
/// Most distinct notices remembered for deduplication.
const DEDUP_CAPACITY: usize = 4096;

/// Where and how to page the operator.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PageConfig {
    /// The program and its arguments; none means "log only". The notice is in its environment:
    /// `DCI_NOTICE_LEVEL`, `_PART`, `_ID`, `_NAME`, `_ADDRESS`, `_AT` (ms since the epoch),
    /// `_DETAIL` and `_FROM` (the reporting node).
    pub command: Vec<String>,
    /// How long the command may run before it is killed.
    pub timeout: Duration,
}

/// The envelope that carries `notice` from `sender` to every member.
pub fn envelope(sender: Sender, notice: &FailureNotice) -> Envelope {
    let mut env = Envelope::request(
        sender,
        Target {
            to: Destination::Broadcast,
            app: Some(NOTICE_APP.into()),
            instance: None,
        },
        notice.to_payload(),
    );
    env.kind = Kind::Event;
    env
}

/// Reads a notice envelope; `None` when the envelope is something else.
pub fn from_envelope(env: &Envelope) -> Option<Result<FailureNotice, dci_proto::ProtoError>> {
    (env.kind == Kind::Event && env.target.app.as_deref() == Some(NOTICE_APP))
        .then(|| FailureNotice::from_payload(&env.payload))
}

/// Remembers recent notices so each is logged and paged once.
#[derive(Default)]
pub struct Dedup {
    seen: HashMap<(String, String, Level), Instant>,
    order: VecDeque<(String, String, Level)>,
}

impl Dedup {
    /// Whether `notice` is news at `now` (and remembers it).
    pub fn is_new(&mut self, notice: &FailureNotice, now: Instant) -> bool {
        let key = (
            notice.part.as_str().to_owned(),
            notice.id.clone(),
            notice.level,
        );
        if let Some(at) = self.seen.get(&key) {
            if now.duration_since(*at) < DEDUP_WINDOW {
                return false;
            }
        }
        if self.order.len() == DEDUP_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.retain(|k| *k != key);
        self.order.push_back(key.clone());
        self.seen.insert(key, now);
        true
    }
}

/// Logs a notice at the severity its level calls for.
pub fn log(notice: &FailureNotice, from: &str) {
    let name = notice.name.as_deref().unwrap_or("");
    let address = notice.address.as_deref().unwrap_or("");
    let (level, part) = (notice.level.as_str(), notice.part.as_str());
    if notice.level.pages() {
        tracing::error!(level, part, id = %notice.id, name, address, at_ms = notice.at_ms, from,
            "failure notice: {}", notice.detail);
    } else {
        tracing::warn!(level, part, id = %notice.id, name, address, at_ms = notice.at_ms, from,
            "failure notice: {}", notice.detail);
    }
}

/// Runs the paging command for `notice` in the background, if one is configured and the level
/// pages. Its output goes to the log; it is killed after the timeout.
pub fn page(config: &PageConfig, notice: &FailureNotice, from: &str) {
    if config.command.is_empty() || !notice.level.pages() {
        return;
    }
    let env = [
        ("DCI_NOTICE_LEVEL", notice.level.as_str().to_string()),
        ("DCI_NOTICE_PART", notice.part.as_str().to_string()),
        ("DCI_NOTICE_ID", notice.id.clone()),
        ("DCI_NOTICE_NAME", notice.name.clone().unwrap_or_default()),
        (
            "DCI_NOTICE_ADDRESS",
            notice.address.clone().unwrap_or_default(),
        ),
        ("DCI_NOTICE_AT", notice.at_ms.to_string()),
        ("DCI_NOTICE_DETAIL", notice.detail.clone()),
        ("DCI_NOTICE_FROM", from.to_string()),
    ];
    let (command, timeout) = (config.command.clone(), config.timeout);
    tokio::spawn(async move {
        match crate::hook::run(&command, &env, timeout).await {
            Ok(()) => tracing::info!(program = %command[0], "operator paged"),
            Err(e) => tracing::error!("paging command failed: {e}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use dci_proto::notice::Part;
    use dci_proto::Limits;

    fn notice(level: Level) -> FailureNotice {
        FailureNotice {
            level,
            part: Part::Node,
            id: "n1".into(),
            name: Some("blade-1".into()),
            address: None,
            at_ms: 1,
            detail: "gone".into(),
        }
    }

    #[test]
    fn a_notice_survives_its_envelope() {
        let sender = Sender {
            node: "me".into(),
            blade: None,
            app: NOTICE_APP.into(),
            instance: None,
        };
        let env = envelope(sender, &notice(Level::SystemDown));
        let back = Envelope::from_xml(env.to_xml().as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            from_envelope(&back).unwrap().unwrap(),
            notice(Level::SystemDown)
        );
        let mut other = back.clone();
        other.target.app = Some("chat".into());
        assert!(from_envelope(&other).is_none());
    }

    #[test]
    fn the_same_notice_is_news_once_per_window() {
        let mut d = Dedup::default();
        let t = Instant::now();
        assert!(d.is_new(&notice(Level::SystemDown), t));
        assert!(!d.is_new(&notice(Level::SystemDown), t + Duration::from_secs(1)));
        assert!(d.is_new(&notice(Level::Moderate), t));
        assert!(d.is_new(&notice(Level::SystemDown), t + DEDUP_WINDOW));
    }
}
