//! Blocks: content-defined chunks of a blade's data, named by the BLAKE3 hash of their bytes.
//!
//! Design decisions and invariants:
//! - A block's id is the hash of its *plain* bytes; what is stored and sent is its *encoded* form
//!   (one tag byte, then the bytes raw or zstd-compressed). Anyone holding an encoded block can
//!   check it against its id with [`decode_verified`], so a corrupt copy is caught wherever it lands.
//! - A block body exists under its id only once it is complete and durable: bodies are written to
//!   a temporary file, fsynced, then renamed into place (and the directory fsynced). `kill -9` at any
//!   moment leaves either no body or a whole one, never a torn one; stray temporaries are removed at
//!   open. The body files themselves are the block index: there is no second index to disagree with.
//! - Engines sit behind the narrow [`BlockStore`] trait, with [`MemBlockStore`] for tests.

pub mod catalog;
pub mod chunk;
mod fs;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::SystemTime;

pub use fs::FsBlockStore;

/// The largest plain block the chunker makes, and so the largest any peer may send.
pub const MAX_BLOCK_BYTES: usize = chunk::MAX_CHUNK;

/// A block's id: the BLAKE3 hash of its plain bytes.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct BlockId(pub [u8; 32]);

impl BlockId {
    /// The id of `plain`.
    pub fn of(plain: &[u8]) -> BlockId {
        BlockId(*blake3::hash(plain).as_bytes())
    }

    /// Lower-case hex, as in file names.
    pub fn to_hex(&self) -> String {
        // By table: `hex::encode` goes char by char, and every block access names a file.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 15)] as char);
        }
        out
    }

    /// Parses [`BlockId::to_hex`]'s output.
    pub fn from_hex(s: &str) -> Option<BlockId> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(BlockId(out))
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

/// Why a store operation failed. None of them changes what was stored before the call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused (e.g. a full disk); nothing partial is visible.
    #[error("block store {path}: {source}")]
    Io {
        /// The path concerned.
        path: std::path::PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// An encoded block is malformed, too large, or does not hash to its id (bad input).
    #[error("block {0:?} is corrupt: {1}")]
    Corrupt(BlockId, String),
}

/// Encoding tags: the first byte of an encoded block.
const RAW: u8 = 0;
const ZSTD: u8 = 1;

thread_local! {
    // zstd contexts kept per thread: making a fresh one for every block (twice when compressing)
    // was 3% of a backup's CPU.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// `data` compressed at level 1, with this thread's context.
fn zstd_compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|c| match c {
        Some(c) => c.compress(data),
        None => c.insert(zstd::bulk::Compressor::new(1)?).compress(data),
    })
}

/// `data` decompressed into at most `limit` bytes, with this thread's context.
fn zstd_decompress(data: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|d| match d {
        Some(d) => d.decompress(data, limit),
        None => d
            .insert(zstd::bulk::Decompressor::new()?)
            .decompress(data, limit),
    })
}

/// Encodes `plain` for storage and transfer: compressed when `compress` and it pays.
pub fn encode(plain: &[u8], compress: bool) -> Vec<u8> {
    if compress && compressible(plain) {
        if let Ok(z) = zstd_compress(plain) {
            // Keep the compressed form only when it saves at least an eighth.
            if z.len() + z.len() / 7 < plain.len() {
                let mut out = Vec::with_capacity(z.len() + 1);
                out.push(ZSTD);
                out.extend_from_slice(&z);
                return out;
            }
        }
    }
    let mut out = Vec::with_capacity(plain.len() + 1);
    out.push(RAW);
    out.extend_from_slice(plain);
    out
}

/// Whether a sample of the block compresses at all: random data (media, archives, encrypted
/// files) is half of many trees, and compressing it in full only to throw the result away costs
/// more than chunking and hashing it.
fn compressible(plain: &[u8]) -> bool {
    const SAMPLE: usize = 4096;
    if plain.len() <= SAMPLE {
        return true;
    }
    let mid = plain.len() / 2;
    let sample = &plain[mid - SAMPLE / 2..mid + SAMPLE / 2];
    zstd_compress(sample).is_ok_and(|z| z.len() < SAMPLE * 7 / 8)
}

/// Decodes an encoded block and checks it against `id`; never expands past [`MAX_BLOCK_BYTES`].
pub fn decode_verified(id: &BlockId, encoded: &[u8]) -> Result<Vec<u8>, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(*id, why.into());
    let plain = match encoded.split_first() {
        Some((&RAW, body)) if body.len() <= MAX_BLOCK_BYTES => body.to_vec(),
        Some((&RAW, _)) => return Err(corrupt("larger than the block limit")),
        Some((&ZSTD, body)) => zstd_decompress(body, MAX_BLOCK_BYTES)
            .map_err(|e| corrupt(&format!("bad zstd data: {e}")))?,
        Some((tag, _)) => return Err(corrupt(&format!("unknown encoding {tag}"))),
        None => return Err(corrupt("empty")),
    };
    if BlockId::of(&plain) != *id {
        return Err(corrupt("its bytes do not hash to its id"));
    }
    Ok(plain)
}

/// Where a node keeps encoded blocks. Every method is safe to call concurrently.
pub trait BlockStore: Send + Sync + 'static {
    /// Stores `encoded` under `id`, durably, before returning. The caller has checked the id
    /// (see [`decode_verified`]). Storing a block that is already there only refreshes its time.
    fn put(&self, id: &BlockId, encoded: &[u8]) -> Result<(), StoreError>;
    /// Stores several blocks, all durable before returning; engines override it to pay for
    /// durability once per batch rather than once per block.
    fn put_many(&self, blocks: &[(BlockId, Vec<u8>)]) -> Result<(), StoreError> {
        for (id, enc) in blocks {
            self.put(id, enc)?;
        }
        Ok(())
    }
    /// The encoded block, if present.
    fn get(&self, id: &BlockId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Whether the block is present; a present block's time is refreshed, so that garbage
    /// collection spares a block that a backup in progress has just decided to reuse.
    fn touch(&self, id: &BlockId) -> Result<bool, StoreError>;
    /// Removes the block (absent is fine).
    fn remove(&self, id: &BlockId) -> Result<(), StoreError>;
    /// Every stored block with the time it was last stored or touched.
    fn list(&self) -> Result<Vec<(BlockId, SystemTime)>, StoreError>;
}

/// An in-memory store for tests and the simulator.
#[derive(Default)]
pub struct MemBlockStore {
    blocks: Mutex<HashMap<BlockId, (Vec<u8>, SystemTime)>>,
}

impl MemBlockStore {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<BlockId, (Vec<u8>, SystemTime)>> {
        // A panic elsewhere while holding the lock leaves the map itself intact.
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlockStore for MemBlockStore {
    fn put(&self, id: &BlockId, encoded: &[u8]) -> Result<(), StoreError> {
        self.map()
            .insert(*id, (encoded.to_vec(), SystemTime::now()));
        Ok(())
    }
    fn get(&self, id: &BlockId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map().get(id).map(|(b, _)| b.clone()))
    }
    fn touch(&self, id: &BlockId) -> Result<bool, StoreError> {
        Ok(match self.map().get_mut(id) {
            Some(entry) => {
                entry.1 = SystemTime::now();
                true
            }
            None => false,
        })
    }
    fn remove(&self, id: &BlockId) -> Result<(), StoreError> {
        self.map().remove(id);
        Ok(())
    }
    fn list(&self) -> Result<Vec<(BlockId, SystemTime)>, StoreError> {
        Ok(self.map().iter().map(|(k, (_, t))| (*k, *t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_block_decodes_to_its_bytes_compressed_or_not() {
        let text = b"hello hello hello hello hello hello hello hello".repeat(100);
        for compress in [false, true] {
            let enc = encode(&text, compress);
            assert_eq!(decode_verified(&BlockId::of(&text), &enc).unwrap(), text);
        }
        assert!(encode(&text, true).len() < text.len() / 4);
    }

    #[test]
    fn a_block_that_does_not_hash_to_its_id_is_refused() {
        let enc = encode(b"abc", false);
        assert!(decode_verified(&BlockId::of(b"abd"), &enc).is_err());
        assert!(decode_verified(&BlockId::of(b"abc"), &[]).is_err());
        assert!(decode_verified(&BlockId::of(b"abc"), &[7, 1, 2]).is_err());
        assert!(decode_verified(&BlockId::of(b"abc"), &[ZSTD, 1, 2, 3]).is_err());
    }

    #[test]
    fn ids_round_trip_through_hex() {
        let id = BlockId::of(b"x");
        assert_eq!(BlockId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(BlockId::from_hex("zz"), None);
    }
}
