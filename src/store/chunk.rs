//! Content-defined chunking (FastCDC 2020): an edit moves only the chunk boundaries near it, so a
//! changed file shares most of its blocks with its previous version.

use std::io::Read;

use super::BlockId;

/// Smallest chunk, except a file's last.
pub const MIN_CHUNK: usize = 16 << 10;
/// Average chunk: small enough that a 1% edit ships little, large enough to keep per-block costs low.
pub const AVG_CHUNK: usize = 64 << 10;
/// Largest chunk.
pub const MAX_CHUNK: usize = 256 << 10;

/// One chunk of a stream: its id and plain bytes.
pub struct Chunk {
    /// BLAKE3 of `data`.
    pub id: BlockId,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Chunks `reader` as it reads it: at most one chunk is held in memory at a time.
pub fn chunks<R: Read>(reader: R) -> impl Iterator<Item = std::io::Result<Chunk>> {
    fastcdc::v2020::StreamCDC::new(reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK).map(|c| {
        let c = c.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })?;
        Ok(Chunk {
            id: BlockId::of(&c.data),
            data: c.data,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    #[test]
    fn chunks_cover_the_input_in_order_within_the_size_bounds() {
        let input = data(2 << 20, 1);
        let got: Vec<Chunk> = chunks(&input[..]).map(|c| c.unwrap()).collect();
        let joined: Vec<u8> = got.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(joined, input);
        assert!(got.iter().all(|c| c.data.len() <= MAX_CHUNK));
        assert!(got[..got.len() - 1]
            .iter()
            .all(|c| c.data.len() >= MIN_CHUNK));
    }

    #[test]
    fn an_edit_in_the_middle_leaves_most_chunks_unchanged() {
        let before = data(4 << 20, 2);
        let mut after = before.clone();
        after.splice(2_000_000..2_000_010, b"inserted!!!!!!!".iter().copied());
        let ids = |d: &[u8]| -> Vec<BlockId> { chunks(d).map(|c| c.unwrap().id).collect() };
        let (a, b) = (ids(&before), ids(&after));
        let new = b.iter().filter(|id| !a.contains(id)).count();
        assert!(new <= 3, "{new} of {} chunks changed", b.len());
    }
}
