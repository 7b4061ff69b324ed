//! Member records and the membership wire messages.
//!
//! A node's record (name, role, zone, addresses, incarnation, heartbeat, alive or left) is signed with
//! that node's own identity key. Records are relayed by gossip, so the signature, not the connection
//! they came over, is what proves who wrote them: no member can forge another's heartbeat or `left`.

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::Role;

/// Largest membership message accepted from the network, checked before decoding.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Most records one message may carry.
pub const MAX_RECORDS: usize = 4096;
/// Most addresses one record may carry.
pub const MAX_ADDRS: usize = 16;
/// Longest address, name, zone or version string in a record.
pub const MAX_FIELD_BYTES: usize = 256;

/// Whether the node says it is running or has left on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Running.
    Alive,
    /// Stopped gracefully; not a failure.
    Left,
}

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Blade name.
    pub name: String,
    /// Active or spare.
    pub role: Role,
    /// Zone name.
    pub zone: String,
    /// Multiaddrs it listens on.
    pub addrs: Vec<String>,
    /// Bumped at every start (persisted), so a restarted node's records win over its old ones.
    pub incarnation: u64,
    /// Bumped at every gossip interval while running.
    pub heartbeat: u64,
    /// Alive or left.
    pub status: Status,
    /// Agent version.
    pub version: String,
}

impl MemberRecord {
    /// The order in which records of one node supersede each other.
    pub fn version_key(&self) -> (u64, u64) {
        (self.incarnation, self.heartbeat)
    }

    fn check_limits(&self) -> Result<(), RecordError> {
        let long = [&self.name, &self.zone, &self.version]
            .into_iter()
            .chain(self.addrs.iter())
            .any(|s| s.len() > MAX_FIELD_BYTES);
        if long || self.addrs.len() > MAX_ADDRS {
            return Err(RecordError::TooLarge);
        }
        Ok(())
    }
}

/// A record with its author's public key and signature, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    /// Postcard encoding of a [`MemberRecord`]; the signed bytes.
    pub body: Vec<u8>,
    /// The author's public key, protobuf-encoded; its `PeerId` is the record's subject.
    pub public_key: Vec<u8>,
    /// Signature of `body` by that key.
    pub signature: Vec<u8>,
}

/// Why a record was refused. Refusing a record never changes the member table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes do not decode as a record or a key.
    #[error("record does not decode")]
    Malformed,
    /// The signature does not match the key.
    #[error("record signature is invalid")]
    BadSignature,
    /// A field is longer than the limits allow.
    #[error("record exceeds size limits")]
    TooLarge,
}

impl SignedRecord {
    /// Signs `record` with `key`.
    pub fn sign(key: &Keypair, record: &MemberRecord) -> SignedRecord {
        let body = postcard::to_stdvec(record).unwrap_or_default();
        // Signing with an ed25519 key cannot fail; other key types are never used here.
        let signature = key.sign(&body).unwrap_or_default();
        SignedRecord {
            body,
            public_key: key.public().encode_protobuf(),
            signature,
        }
    }

    /// Decodes the subject and the record *without* checking the signature (cheap; used to see
    /// whether the record is news before paying for [`SignedRecord::verify`]).
    pub fn peek(&self) -> Result<(PeerId, MemberRecord), RecordError> {
        let key =
            PublicKey::try_decode_protobuf(&self.public_key).map_err(|_| RecordError::Malformed)?;
        let record: MemberRecord =
            postcard::from_bytes(&self.body).map_err(|_| RecordError::Malformed)?;
        record.check_limits()?;
        Ok((key.to_peer_id(), record))
    }

    /// Checks the signature.
    pub fn verify(&self) -> Result<(), RecordError> {
        let key =
            PublicKey::try_decode_protobuf(&self.public_key).map_err(|_| RecordError::Malformed)?;
        if key.verify(&self.body, &self.signature) {
            Ok(())
        } else {
            Err(RecordError::BadSignature)
        }
    }
}

/// One gossiped record with how stale the sender's copy was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipEntry {
    /// The record.
    pub record: SignedRecord,
    /// Milliseconds since the sender last saw this record's heartbeat advance. It lets a newcomer
    /// tell a long-silent member from a live one; it is only trusted for members it did not know.
    pub age_ms: u64,
}

/// The membership protocol's one message type (request and response alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipMessage {
    /// Push-pull exchange: the sender's table; the receiver answers with its own.
    Gossip(Vec<GossipEntry>),
    /// The sender is leaving; its signed `Left` record.
    Leave(SignedRecord),
    /// Acknowledges a `Leave`.
    Ack,
}

impl MembershipMessage {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes from the wire, refusing oversized input before decoding.
    pub fn decode(bytes: &[u8]) -> Result<MembershipMessage, RecordError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(RecordError::TooLarge);
        }
        let msg: MembershipMessage =
            postcard::from_bytes(bytes).map_err(|_| RecordError::Malformed)?;
        if let MembershipMessage::Gossip(entries) = &msg {
            if entries.len() > MAX_RECORDS {
                return Err(RecordError::TooLarge);
            }
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> MemberRecord {
        MemberRecord {
            name: "blade-01".into(),
            role: Role::Active,
            zone: "default".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            incarnation: 1,
            heartbeat: 7,
            status: Status::Alive,
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn a_signed_record_verifies_and_names_its_author() {
        let key = Keypair::generate_ed25519();
        let signed = SignedRecord::sign(&key, &record());
        signed.verify().unwrap();
        let (peer, rec) = signed.peek().unwrap();
        assert_eq!(peer, key.public().to_peer_id());
        assert_eq!(rec, record());
    }

    #[test]
    fn a_record_altered_in_transit_fails_verification() {
        let key = Keypair::generate_ed25519();
        let mut signed = SignedRecord::sign(&key, &record());
        let mut forged = record();
        forged.status = Status::Left;
        signed.body = postcard::to_stdvec(&forged).unwrap();
        assert_eq!(signed.verify(), Err(RecordError::BadSignature));
    }

    #[test]
    fn a_record_signed_by_another_key_speaks_for_that_key_only() {
        let victim = Keypair::generate_ed25519();
        let forger = Keypair::generate_ed25519();
        let mut signed = SignedRecord::sign(&forger, &record());
        signed.public_key = victim.public().encode_protobuf();
        assert_eq!(signed.verify(), Err(RecordError::BadSignature));
    }

    #[test]
    fn garbage_and_oversized_messages_are_refused() {
        assert!(MembershipMessage::decode(b"\xff\xff\xff garbage").is_err());
        assert_eq!(
            MembershipMessage::decode(&vec![0u8; MAX_MESSAGE_BYTES + 1]),
            Err(RecordError::TooLarge)
        );
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = MembershipMessage::decode(&bytes);
        }
    }
}
