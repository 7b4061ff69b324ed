//! The package file: what `dcish package build` writes and every agent reads before installing.
//!
//! Layout: the magic `DCIPKG1\n`, a 4-byte big-endian header length, the header (postcard: name,
//! version, platform, provides, the XML instructions, and each file's path, size, mode and BLAKE3
//! hash, sorted by path), the files' bytes in header order, then the trailer: nothing (unsigned)
//! or the signer's ed25519 public key and its signature over the digest. The digest is BLAKE3 (in
//! its key-derivation mode, so it means nothing elsewhere) of the header bytes; the header holds
//! every file's hash, so the signature covers every byte that gets installed. A reader checks the
//! sizes before it allocates, the signature against the trusted keys, and each file against its
//! hash; only then does an installer look at the instructions.

use std::collections::BTreeMap;
use std::path::Path;

use dci_proto::package::{instructions_from_xml, Step};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{keys, safe_relative, valid_name};

/// The first bytes of every package file.
pub const MAGIC: &[u8; 8] = b"DCIPKG1\n";
/// The largest package accepted (file bytes included).
pub const MAX_PACKAGE_BYTES: u64 = 1 << 30;
/// The largest header.
const MAX_HEADER_BYTES: usize = 4 << 20;
/// The most files in one package.
const MAX_FILES: usize = 4096;
/// Public key and signature.
const TRAILER_BYTES: usize = 32 + 64;
/// The digest's context string.
const DIGEST_CONTEXT: &str = "dci package v1 header digest";

/// `package.toml` in a package's source directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceManifest {
    /// The package name.
    pub name: String,
    /// Its version (dot-separated; numeric parts compare as numbers).
    pub version: String,
    /// `linux-x86_64`, `linux-aarch64`, … or `any`.
    pub platform: String,
    /// What it provides: `peerlet:APP` for a peerlet type.
    #[serde(default)]
    pub provides: Vec<String>,
    /// Path in the package → source file, relative to the source directory.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// One file of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path in the package.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// BLAKE3 of the bytes.
    pub hash: [u8; 32],
}

/// The signed header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Target platform, or `any`.
    pub platform: String,
    /// What it provides.
    pub provides: Vec<String>,
    /// The `<install>` document.
    pub instructions: String,
    /// The files, sorted by path.
    pub files: Vec<FileEntry>,
}

/// Why a package was refused: one line each, as reported per blade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    /// Not a package, truncated, or inconsistent.
    #[error("malformed package: {0}")]
    Malformed(String),
    /// No signature.
    #[error("the package is unsigned")]
    Unsigned,
    /// Signed by a key this agent does not trust.
    #[error("signed by key {0}, which this agent does not trust")]
    UnknownSigner(String),
    /// The signature does not match the header.
    #[error("bad signature by key {0}")]
    BadSignature(String),
    /// A file's bytes do not hash to the header's hash.
    #[error("hash mismatch for {0}")]
    HashMismatch(String),
}

fn malformed(why: impl Into<String>) -> PackageError {
    PackageError::Malformed(why.into())
}

/// A package read from its bytes; sizes and shape checked, signature and hashes not yet.
#[derive(Debug)]
pub struct Package {
    /// The header.
    pub header: Header,
    /// The parsed instructions.
    pub steps: Vec<Step>,
    header_bytes: Vec<u8>,
    /// Each file's offset in `bytes`, in header order.
    offsets: Vec<usize>,
    signature: Option<([u8; 32], [u8; 64])>,
    bytes: Vec<u8>,
}

fn digest(header_bytes: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(DIGEST_CONTEXT);
    h.update(header_bytes);
    *h.finalize().as_bytes()
}

/// Builds a package from `dir` (`package.toml`, `install.xml`, and the files the manifest names),
/// signed with `key` when given.
pub fn build(dir: &Path, key: Option<&SigningKey>) -> Result<Vec<u8>, String> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let source: SourceManifest = toml::from_str(&read("package.toml")?)
        .map_err(|e| format!("package.toml: {}", crate::config::one_line(&e.to_string())))?;
    let instructions = read("install.xml")?;
    let mut files = Vec::new();
    let mut data = Vec::new();
    for (path, from) in &source.files {
        safe_relative(path).map_err(|e| format!("package.toml [files]: {e}"))?;
        let bytes = std::fs::read(dir.join(from))
            .map_err(|e| format!("{}: {e}", dir.join(from).display()))?;
        files.push(FileEntry {
            path: path.clone(),
            size: bytes.len() as u64,
            hash: *blake3::hash(&bytes).as_bytes(),
        });
        data.extend_from_slice(&bytes);
    }
    let header = Header {
        name: source.name,
        version: source.version,
        platform: source.platform,
        provides: source.provides,
        instructions,
        files,
    };
    check_header(&header).map_err(|e| e.to_string())?;
    let header_bytes = postcard::to_stdvec(&header).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(header_bytes.len() + data.len() + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(&data);
    if let Some(key) = key {
        out.extend_from_slice(&key.verifying_key().to_bytes());
        out.extend_from_slice(&key.sign(&digest(&header_bytes)).to_bytes());
    }
    if out.len() as u64 > MAX_PACKAGE_BYTES {
        return Err(format!(
            "the package is larger than {MAX_PACKAGE_BYTES} bytes"
        ));
    }
    Ok(out)
}

/// The header's own rules: names, paths, provides, instructions.
fn check_header(h: &Header) -> Result<Vec<Step>, PackageError> {
    if !valid_name(&h.name) {
        return Err(malformed(format!("bad name {:?}", h.name)));
    }
    if !valid_name(&h.version) {
        return Err(malformed(format!("bad version {:?}", h.version)));
    }
    if h.platform != "any" && !valid_name(&h.platform) {
        return Err(malformed(format!("bad platform {:?}", h.platform)));
    }
    for p in &h.provides {
        match p.strip_prefix("peerlet:") {
            Some(app) if valid_name(app) => {}
            _ => {
                return Err(malformed(format!(
                    "provides {p:?}: only peerlet:APP is known"
                )))
            }
        }
    }
    if h.files.len() > MAX_FILES {
        return Err(malformed(format!("more than {MAX_FILES} files")));
    }
    for (i, f) in h.files.iter().enumerate() {
        safe_relative(&f.path).map_err(malformed)?;
        if i > 0 && h.files[i - 1].path >= f.path {
            return Err(malformed("files are not sorted by path, or repeated"));
        }
    }
    instructions_from_xml(&h.instructions).map_err(|e| malformed(format!("install.xml: {e}")))
}

impl Package {
    /// Reads a package, checking its layout, sizes and header (not yet its signature or hashes).
    pub fn parse(bytes: Vec<u8>) -> Result<Package, PackageError> {
        if bytes.len() as u64 > MAX_PACKAGE_BYTES {
            return Err(malformed("larger than the package limit"));
        }
        if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(malformed("not a DCI package (bad magic)"));
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[8..12]);
        let header_len = u32::from_be_bytes(len) as usize;
        if header_len > MAX_HEADER_BYTES || 12 + header_len > bytes.len() {
            return Err(malformed("header length out of range"));
        }
        let header_bytes = bytes[12..12 + header_len].to_vec();
        let header: Header =
            postcard::from_bytes(&header_bytes).map_err(|e| malformed(format!("header: {e}")))?;
        let steps = check_header(&header)?;
        let mut offsets = Vec::with_capacity(header.files.len());
        let mut at = 12 + header_len;
        for f in &header.files {
            offsets.push(at);
            at = usize::try_from(f.size)
                .ok()
                .and_then(|s| at.checked_add(s))
                .filter(|end| *end <= bytes.len())
                .ok_or_else(|| malformed(format!("{} runs past the end", f.path)))?;
        }
        let signature = match bytes.len() - at {
            0 => None,
            TRAILER_BYTES => {
                let mut key = [0u8; 32];
                let mut sig = [0u8; 64];
                key.copy_from_slice(&bytes[at..at + 32]);
                sig.copy_from_slice(&bytes[at + 32..]);
                Some((key, sig))
            }
            n => {
                return Err(malformed(format!(
                    "{n} bytes of trailer, not 0 or {TRAILER_BYTES}"
                )))
            }
        };
        Ok(Package {
            header,
            steps,
            header_bytes,
            offsets,
            signature,
            bytes,
        })
    }

    /// Checks the signature against `trusted` and every file against its hash; answers the
    /// signer's fingerprint.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<String, PackageError> {
        let Some((key, sig)) = &self.signature else {
            return Err(PackageError::Unsigned);
        };
        let key = VerifyingKey::from_bytes(key)
            .map_err(|_| PackageError::BadSignature(hex::encode(&key[..8])))?;
        let fp = keys::fingerprint(&key);
        if !trusted.contains(&key) {
            return Err(PackageError::UnknownSigner(fp));
        }
        key.verify(&digest(&self.header_bytes), &Signature::from_bytes(sig))
            .map_err(|_| PackageError::BadSignature(fp.clone()))?;
        for (i, f) in self.header.files.iter().enumerate() {
            if *blake3::hash(self.file(i)).as_bytes() != f.hash {
                return Err(PackageError::HashMismatch(f.path.clone()));
            }
        }
        Ok(fp)
    }

    /// The bytes of the `i`th file.
    pub fn file(&self, i: usize) -> &[u8] {
        let start = self.offsets[i];
        &self.bytes[start..start + self.header.files[i].size as usize]
    }

    /// The bytes of the file at `path` in the package.
    pub fn file_named(&self, path: &str) -> Option<&[u8]> {
        let i = self.header.files.iter().position(|f| f.path == path)?;
        Some(self.file(i))
    }

    /// `name version`.
    pub fn label(&self) -> String {
        format!("{} {}", self.header.name, self.header.version)
    }

    /// The whole package file.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// BLAKE3 of the whole file: the package's identity in the mesh.
    pub fn id(&self) -> [u8; 32] {
        *blake3::hash(&self.bytes).as_bytes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A source directory with one file and the given instructions.
    pub(crate) fn source(dir: &Path, version: &str, platform: &str, install: &str) {
        std::fs::write(
            dir.join("package.toml"),
            format!(
                "name = \"hello\"\nversion = \"{version}\"\nplatform = \"{platform}\"\nprovides = []\n[files]\n\"bin/hello.sh\" = \"hello.sh\"\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("hello.sh"), "#!/bin/sh\necho hello\n").unwrap();
        std::fs::write(dir.join("install.xml"), install).unwrap();
    }

    pub(crate) const PLACE: &str = "<install xmlns=\"urn:dci:package:1\"><place file=\"bin/hello.sh\" mode=\"755\"/></install>";

    #[test]
    fn a_built_package_verifies_and_any_change_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        source(dir.path(), "1.0", "any", PLACE);
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let bytes = build(dir.path(), Some(&key)).unwrap();
        let p = Package::parse(bytes.clone()).unwrap();
        assert_eq!(p.label(), "hello 1.0");
        assert_eq!(
            p.verify(&[key.verifying_key()]),
            Ok(keys::fingerprint(&key.verifying_key()))
        );
        assert_eq!(
            p.file_named("bin/hello.sh").unwrap(),
            b"#!/bin/sh\necho hello\n"
        );
        assert!(matches!(
            p.verify(&[other.verifying_key()]),
            Err(PackageError::UnknownSigner(_))
        ));
        // A flipped byte in a file: its hash no longer matches.
        let mut bad = bytes.clone();
        let at = bad.len() - TRAILER_BYTES - 3;
        bad[at] ^= 1;
        assert_eq!(
            Package::parse(bad).unwrap().verify(&[key.verifying_key()]),
            Err(PackageError::HashMismatch("bin/hello.sh".into()))
        );
        // A flipped byte in the header: the signature no longer matches (or it no longer parses).
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        if let Ok(p) = Package::parse(bad) {
            assert!(p.verify(&[key.verifying_key()]).is_err());
        }
        let unsigned = build(dir.path(), None).unwrap();
        assert_eq!(
            Package::parse(unsigned)
                .unwrap()
                .verify(&[key.verifying_key()]),
            Err(PackageError::Unsigned)
        );
    }

    #[test]
    fn garbage_and_truncations_are_refused_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        source(dir.path(), "1.0", "any", PLACE);
        let bytes = build(dir.path(), Some(&SigningKey::from_bytes(&[7; 32]))).unwrap();
        for n in 0..bytes.len() {
            if n != bytes.len() - TRAILER_BYTES {
                assert!(Package::parse(bytes[..n].to_vec()).is_err(), "{n}");
            }
        }
        assert!(Package::parse(b"DCIPKG1\n\xff\xff\xff\xffxx".to_vec()).is_err());
    }

    #[test]
    fn a_source_that_escapes_or_names_badly_is_refused_at_build() {
        let dir = tempfile::tempdir().unwrap();
        source(dir.path(), "1.0", "any", PLACE);
        let toml = std::fs::read_to_string(dir.path().join("package.toml")).unwrap();
        std::fs::write(
            dir.path().join("package.toml"),
            toml.replace("\"bin/hello.sh\"", "\"../hello.sh\""),
        )
        .unwrap();
        assert!(build(dir.path(), None).unwrap_err().contains("escapes"));
        source(dir.path(), "1 0", "any", PLACE);
        assert!(build(dir.path(), None).unwrap_err().contains("version"));
        source(dir.path(), "1.0", "any", "<install/>");
        assert!(build(dir.path(), None).unwrap_err().contains("install.xml"));
    }
}
