//! The block protocol `/dci/blocks/1`: one postcard-encoded [`Request`] per stream, one
//! [`Response`] back. Frames are capped by the codec before decoding; every list in a request is
//! capped again here, and a holder answers only what the peer is entitled to.

use serde::{Deserialize, Serialize};

use dci_proto::archive::ArchiveId;

use crate::store::catalog::ArchiveRecord;
use crate::store::BlockId;

/// The largest frame either way: room for [`MAX_PUT_BLOCKS`] blocks at the block limit.
pub const MAX_FRAME_BYTES: usize = 8 << 20;
/// Ids per `Have` request.
pub const MAX_HAVE_IDS: usize = 16_384;
/// Blocks per `Put` or `Get`, so that a batch stays under the frame cap.
pub const MAX_PUT_BLOCKS: usize = 16;

/// A request between agents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// From a blade's owner: which of these blocks are missing here? Present ones are kept
    /// fresh, so garbage collection spares them until the archive that needs them is committed.
    Have {
        /// The blade.
        blade: String,
        /// Blocks the owner is about to rely on.
        ids: Vec<BlockId>,
    },
    /// From a blade's owner: store these encoded blocks; answered once they are durable.
    Put {
        /// The blade.
        blade: String,
        /// Encoded blocks.
        blocks: Vec<(BlockId, Bytes)>,
    },
    /// From a blade's owner: record this archive; refused unless every block it names is here.
    Commit {
        /// The archive.
        record: ArchiveRecord,
    },
    /// From a blade's owner (peersync): these are the archives it keeps; forget the others that
    /// `forget` covers, and say which archives are here.
    Sync {
        /// The blade.
        blade: String,
        /// The owner's archives.
        keep: Vec<ArchiveId>,
        /// Which archives missing from `keep` to forget.
        forget: Forget,
    },
    /// Encoded blocks, for a restore.
    Get {
        /// At most [`MAX_PUT_BLOCKS`] ids.
        ids: Vec<BlockId>,
    },
    /// The archive records of a blade kept here.
    Catalog {
        /// The blade.
        blade: String,
    },
    /// An operator's backup command, forwarded by the agent it was given to (a `backup-now` for
    /// another blade, a `restore --on` another node): the control payload's XML.
    Control(String),
    /// A package install, removal or listing, from the agent a `dcish deploy` was given to.
    Package(crate::package::deploy::Call),
}

/// Which of a holder's archives missing from the owner's list a `Sync` makes it forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forget {
    /// Every one: the holder is no longer in the blade's placement.
    All,
    /// Those made before this time (ms since the Unix epoch), which the owner's aging removed.
    /// Newer ones stay: an earlier node acting as the blade made them where the owner could not
    /// see, and the owner takes them in rather than lose what a holder acknowledged.
    MadeBefore(u64),
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// To `Have`: the ids missing here.
    Missing(Vec<BlockId>),
    /// To `Put`: every block is durable. To `Commit`: recorded.
    Done,
    /// To `Sync`: the archives here, those the owner did not list included.
    Held(Vec<ArchiveId>),
    /// To `Get`: each block, or `None` when not here.
    Blocks(Vec<Option<Bytes>>),
    /// To `Catalog`.
    Records(Vec<ArchiveRecord>),
    /// To `Control`: the reply payload's XML, or an error code and message.
    Control(Result<String, (String, String)>),
    /// To `Package`.
    Package(crate::package::deploy::Answer),
    /// The request is refused, and why (not entitled, malformed, a failure here).
    Refused(String),
}

/// A block body on the wire: one length and the raw bytes. serde's own `Vec<u8>` goes byte by
/// byte, which made encoding and decoding the largest cost of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// Encodes a message; our own types always encode.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_stdvec(msg).unwrap_or_default()
}

/// Decodes a message the codec has already size-checked.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("malformed block-protocol message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_panics_the_decoder() {
        for n in 0..200u32 {
            let bytes: Vec<u8> = (0..n)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
                .collect();
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
        let r = decode::<Request>(&encode(&Request::Catalog { blade: "b".into() })).unwrap();
        assert!(matches!(r, Request::Catalog { blade } if blade == "b"));
        let body = Bytes(vec![1, 2, 3]);
        let put = encode(&Request::Put {
            blade: "b".into(),
            blocks: vec![(BlockId::of(b"x"), body.clone())],
        });
        assert!(
            matches!(decode::<Request>(&put).unwrap(), Request::Put { blocks, .. } if blocks[0].1 == body)
        );
    }
}
