//! The message log: envelopes sent or received, kept in sled as their XML (the archivable form:
//! what was on the wire, readable without this program) with the fields queries filter on.
//!
//! Keys are (time, sequence) so that a time range is one range scan; a second tree maps an
//! envelope id to its key, for replay. The log keeps at most `max_records`; the oldest go first.

use serde::{Deserialize, Serialize};

use dci_proto::Envelope;

/// One logged envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When it was logged, Unix milliseconds.
    pub at_ms: u64,
    /// `out` (this node sent it) or `in` (this node received it).
    pub dir: String,
    /// The envelope's id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Sender node, blade and app.
    pub sender_node: String,
    /// The sender's blade, if any.
    pub sender_blade: Option<String>,
    /// The sender's app type.
    pub sender_app: String,
    /// The destination, `node:ID`, `blade:NAME`, `group:NAME` or `broadcast`.
    pub target: String,
    /// The target app type, if any.
    pub target_app: Option<String>,
    /// The id of the logged envelope this one replays.
    pub replay_of: Option<String>,
    /// The envelope's XML.
    pub xml: String,
}

impl Record {
    /// A record of `env` logged now.
    pub fn new(env: &Envelope, dir: &str, at_ms: u64, replay_of: Option<String>) -> Record {
        Record {
            at_ms,
            dir: dir.into(),
            id: env.id.to_string(),
            kind: env.kind.to_string(),
            sender_node: env.sender.node.clone(),
            sender_blade: env.sender.blade.clone(),
            sender_app: env.sender.app.clone(),
            target: env.target.to.to_string(),
            target_app: env.target.app.clone(),
            replay_of,
            xml: env.to_xml(),
        }
    }
}

/// What a log query selects; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The sender's or the target's app type.
    pub app: Option<String>,
    /// The sender's node id or blade.
    pub sender: Option<String>,
    /// The destination (`blade:NAME`, ...) or just its name.
    pub target: Option<String>,
    /// Logged at or after, Unix ms.
    pub since_ms: Option<u64>,
    /// Logged before, Unix ms.
    pub until_ms: Option<u64>,
    /// The newest this many (default 100, at most 10,000).
    pub limit: Option<usize>,
}

impl Filter {
    fn matches(&self, r: &Record) -> bool {
        let app_ok = self
            .app
            .as_ref()
            .is_none_or(|a| &r.sender_app == a || r.target_app.as_ref() == Some(a));
        let sender_ok = self
            .sender
            .as_ref()
            .is_none_or(|s| &r.sender_node == s || r.sender_blade.as_ref() == Some(s));
        let target_ok = self.target.as_ref().is_none_or(|t| {
            &r.target == t || r.target.split_once(':').is_some_and(|(_, name)| name == t)
        });
        app_ok && sender_ok && target_ok
    }
}

/// The log in sled.
pub struct MessageLog {
    records: sled::Tree,
    by_id: sled::Tree,
    seq: u64,
    max_records: usize,
    since_trim: usize,
}

/// Why the log could not be read or written (logged, never fatal: routing goes on).
pub type LogError = sled::Error;

impl MessageLog {
    /// Opens the log's trees in `db`.
    pub fn open(db: &sled::Db, max_records: usize) -> Result<MessageLog, LogError> {
        let records = db.open_tree("msglog")?;
        let by_id = db.open_tree("msglog-id")?;
        let seq = records
            .last()?
            .and_then(|(k, _)| k.get(8..16).and_then(|s| <[u8; 8]>::try_from(s).ok()))
            .map_or(0, |s| u64::from_be_bytes(s) + 1);
        Ok(MessageLog {
            records,
            by_id,
            seq,
            max_records: max_records.max(1),
            since_trim: 0,
        })
    }

    /// Appends a record.
    pub fn append(&mut self, record: &Record) -> Result<(), LogError> {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&record.at_ms.to_be_bytes());
        key[8..].copy_from_slice(&self.seq.to_be_bytes());
        self.seq += 1;
        let value = postcard::to_stdvec(record).unwrap_or_default();
        self.records.insert(key, value)?;
        self.by_id.insert(record.id.as_bytes(), &key)?;
        self.since_trim += 1;
        // Trim in steps, so the log exceeds its limit by a tenth at most.
        if self.since_trim >= (self.max_records / 10).clamp(1, 1000) {
            self.since_trim = 0;
            self.trim()?;
        }
        Ok(())
    }

    fn trim(&mut self) -> Result<(), LogError> {
        let excess = self.records.len().saturating_sub(self.max_records);
        for _ in 0..excess {
            if let Some((_, v)) = self.records.pop_min()? {
                if let Ok(r) = postcard::from_bytes::<Record>(&v) {
                    self.by_id.remove(r.id.as_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// The newest records matching `filter`, oldest first.
    pub fn query(&self, filter: &Filter) -> Result<Vec<Record>, LogError> {
        let limit = filter.limit.unwrap_or(100).min(10_000);
        let lo = filter.since_ms.unwrap_or(0).to_be_bytes();
        let hi = filter.until_ms.unwrap_or(u64::MAX).to_be_bytes();
        let mut out = Vec::new();
        for item in self.records.range(lo..hi).rev() {
            let (_, v) = item?;
            let Ok(r) = postcard::from_bytes::<Record>(&v) else {
                continue;
            };
            if filter.matches(&r) {
                out.push(r);
                if out.len() == limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The record of envelope `id`.
    pub fn get(&self, id: &str) -> Result<Option<Record>, LogError> {
        let Some(key) = self.by_id.get(id.as_bytes())? else {
            return Ok(None);
        };
        Ok(self
            .records
            .get(key)?
            .and_then(|v| postcard::from_bytes(&v).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dci_proto::{Destination, Payload, Sender, Target};

    fn env(app: &str, to: &str) -> Envelope {
        Envelope::request(
            Sender {
                node: "n1".into(),
                blade: Some("blade-1".into()),
                app: app.into(),
                instance: None,
            },
            Target {
                to: Destination::Blade(to.into()),
                app: Some("echo".into()),
                instance: None,
            },
            Payload::empty(),
        )
    }

    #[test]
    fn records_are_found_by_app_sender_target_and_time_and_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut log = MessageLog::open(&db, 100).unwrap();
        let (a, b) = (env("control", "blade-2"), env("chat", "blade-3"));
        log.append(&Record::new(&a, "out", 1000, None)).unwrap();
        log.append(&Record::new(&b, "out", 2000, None)).unwrap();
        let q = |f: Filter| {
            log.query(&f)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            q(Filter {
                app: Some("chat".into()),
                ..Filter::default()
            }),
            vec![b.id.to_string()]
        );
        assert_eq!(
            q(Filter {
                target: Some("blade-2".into()),
                ..Filter::default()
            }),
            vec![a.id.to_string()]
        );
        assert_eq!(
            q(Filter {
                sender: Some("blade-1".into()),
                ..Filter::default()
            })
            .len(),
            2
        );
        assert_eq!(
            q(Filter {
                since_ms: Some(1500),
                ..Filter::default()
            }),
            vec![b.id.to_string()]
        );
        assert_eq!(
            q(Filter {
                until_ms: Some(1500),
                ..Filter::default()
            }),
            vec![a.id.to_string()]
        );
        let got = log.get(&a.id.to_string()).unwrap().unwrap();
        assert_eq!(
            Envelope::from_xml(got.xml.as_bytes(), &Default::default()).unwrap(),
            a
        );
    }

    #[test]
    fn the_log_keeps_at_most_its_limit_dropping_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut log = MessageLog::open(&db, 10).unwrap();
        let first = env("control", "b");
        log.append(&Record::new(&first, "out", 1, None)).unwrap();
        for i in 0..1100 {
            log.append(&Record::new(&env("control", "b"), "out", 2 + i, None))
                .unwrap();
        }
        assert!(log.records.len() <= 11);
        assert!(log.get(&first.id.to_string()).unwrap().is_none());
    }
}
