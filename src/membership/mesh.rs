//! The SWIM core as the agent runs it: node ids are libp2p `PeerId`s, metadata is what `dcish nodes`
//! shows, and alive or leave announcements are signed with the subject's identity key, so that no
//! member can forge another's refutation or departure. Packets travel as postcard, size-checked
//! before and after decoding.

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

#[cfg(test)]
use super::swim::Update;
use super::swim::{Authority, Message, Packet, Swim};
use super::Role;
use crate::resources::Resources;

/// Largest membership packet accepted, checked before decoding.
pub const MAX_PACKET_BYTES: usize = 4 << 20;
/// Most updates piggybacked on one packet.
pub const MAX_UPDATES: usize = 256;
/// Most members in one push-pull table.
pub const MAX_STATE: usize = 65_536;
/// Most addresses (and helpers) in one member's metadata.
pub const MAX_ADDRS: usize = 16;
/// Longest name, zone, version or address.
pub const MAX_FIELD_BYTES: usize = 256;

/// What a member says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMeta {
    /// Blade name.
    pub name: String,
    /// Active or spare.
    pub role: Role,
    /// Zone.
    pub zone: String,
    /// Listen addresses.
    pub addrs: Vec<String>,
    /// Listen addresses for block transfers (`crate::net`'s data swarm).
    pub data_addrs: Vec<String>,
    /// Agent version.
    pub version: String,
    /// Resource figures, re-announced when one moves by 5 points or more.
    pub resources: Resources,
    /// Whether a watched figure is in sustained degradation.
    pub degraded: bool,
    /// The blade this node acts as now (from the seat table and its lease), and its epoch.
    pub blade: Option<(String, u64)>,
    /// The node ids of the helpers serving that blade's read-only traffic, granted at that epoch.
    pub helpers: Vec<String>,
    /// Blades it may take beyond its own when no spare can (an operator's allowance for an
    /// active node with spare capacity; 0 for a spare).
    pub extra: u8,
}

impl MemberMeta {
    fn within_limits(&self) -> bool {
        self.addrs.len() <= MAX_ADDRS
            && self.data_addrs.len() <= MAX_ADDRS
            && self.helpers.len() <= MAX_ADDRS
            && [&self.name, &self.zone, &self.version]
                .into_iter()
                .chain(self.blade.as_ref().map(|(b, _)| b))
                .chain(&self.addrs)
                .chain(&self.data_addrs)
                .chain(&self.helpers)
                .all(|f| f.len() <= MAX_FIELD_BYTES)
    }
}

/// Signs this node's announcements with its identity key and checks others' against their ids.
pub struct Signer {
    key: Keypair,
}

impl Signer {
    /// Signs with `key`.
    pub fn new(key: Keypair) -> Signer {
        Signer { key }
    }
}

fn signed_bytes(inc: u64, meta: &MemberMeta, left: bool) -> Vec<u8> {
    postcard::to_stdvec(&(inc, meta, left)).unwrap_or_default()
}

impl Authority<PeerId, MemberMeta> for Signer {
    type Proof = Vec<u8>;

    fn prove(&self, inc: u64, meta: &MemberMeta, left: bool) -> Vec<u8> {
        // Signing with an ed25519 key cannot fail.
        self.key
            .sign(&signed_bytes(inc, meta, left))
            .unwrap_or_default()
    }

    fn verify(
        &self,
        subject: &PeerId,
        inc: u64,
        meta: &MemberMeta,
        left: bool,
        proof: &Vec<u8>,
    ) -> bool {
        // An ed25519 peer id carries its public key inline (identity multihash).
        let Ok(key) = PublicKey::try_decode_protobuf(subject.as_ref().digest()) else {
            return false;
        };
        key.to_peer_id() == *subject
            && meta.within_limits()
            && key.verify(&signed_bytes(inc, meta, left), proof)
    }
}

/// The agent's membership core.
pub type MeshSwim = Swim<PeerId, MemberMeta, Signer>;
/// One membership packet as the agent sends it.
pub type MeshPacket = Packet<PeerId, MemberMeta, Vec<u8>>;

/// Why a packet was refused; refusing it changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Larger than [`MAX_PACKET_BYTES`], or more updates or members than allowed.
    #[error("membership packet exceeds its limits")]
    TooLarge,
    /// Not a packet.
    #[error("membership packet does not decode")]
    Malformed,
}

/// Encodes a packet for the wire.
pub fn encode(packet: &MeshPacket) -> Vec<u8> {
    postcard::to_stdvec(packet).unwrap_or_default()
}

/// Decodes a packet, checking sizes before and after.
pub fn decode(bytes: &[u8]) -> Result<MeshPacket, PacketError> {
    if bytes.len() > MAX_PACKET_BYTES {
        return Err(PacketError::TooLarge);
    }
    let packet: MeshPacket = postcard::from_bytes(bytes).map_err(|_| PacketError::Malformed)?;
    let state = match &packet.message {
        Message::PushPull { state, .. } => state.len(),
        Message::Ping { .. }
        | Message::Ack { .. }
        | Message::PingReq { .. }
        | Message::Nack { .. }
        | Message::Gossip => 0,
    };
    if packet.updates.len() > MAX_UPDATES || state > MAX_STATE {
        return Err(PacketError::TooLarge);
    }
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> MemberMeta {
        MemberMeta {
            name: name.into(),
            role: Role::Active,
            zone: "default".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            data_addrs: vec!["/ip4/127.0.0.1/tcp/2".into()],
            version: "0.1.0".into(),
            resources: Resources::default(),
            degraded: false,
            blade: None,
            helpers: Vec::new(),
            extra: 0,
        }
    }

    #[test]
    fn an_announcement_verifies_only_for_its_own_subject_and_content() {
        let alice = Keypair::generate_ed25519();
        let bob = Keypair::generate_ed25519();
        let signer = Signer::new(alice.clone());
        let proof = signer.prove(3, &meta("a"), false);
        let check = Signer::new(bob.clone());
        let a = alice.public().to_peer_id();
        assert!(check.verify(&a, 3, &meta("a"), false, &proof));
        assert!(
            !check.verify(&a, 4, &meta("a"), false, &proof),
            "another incarnation"
        );
        assert!(
            !check.verify(&a, 3, &meta("a"), true, &proof),
            "a leave is not an alive"
        );
        assert!(
            !check.verify(&a, 3, &meta("evil"), false, &proof),
            "other metadata"
        );
        assert!(!check.verify(&bob.public().to_peer_id(), 3, &meta("a"), false, &proof));
    }

    #[test]
    fn packets_round_trip_and_garbage_or_oversize_is_refused() {
        let p: MeshPacket = Packet {
            message: Message::Ping { seq: 7 },
            updates: vec![Update::Suspect {
                id: PeerId::random(),
                inc: 2,
                from: PeerId::random(),
            }],
        };
        assert_eq!(decode(&encode(&p)).unwrap(), p);
        assert_eq!(decode(b"\xff\xff\xff\xff"), Err(PacketError::Malformed));
        assert_eq!(
            decode(&vec![0; MAX_PACKET_BYTES + 1]),
            Err(PacketError::TooLarge)
        );
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&bytes);
        }
    }
}
