//! The operator's package-signing key: ed25519, written as hex (secret mode 0600, public beside
//! it as `FILE.pub`), and the fingerprint that names a key in reports and listings.

use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};

/// Writes a new secret key to `file` (mode 0600, never overwriting) and its public half to
/// `file.pub`; returns the fingerprint.
pub fn keygen(file: &Path) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let public = public_path(file);
    let create = |path: &Path, mode: u32, text: String| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if public.exists() {
        return Err(format!("{} exists; not overwritten", public.display()));
    }
    create(file, 0o600, format!("{}\n", hex::encode(key.to_bytes())))?;
    create(
        &public,
        0o644,
        format!("{}\n", hex::encode(key.verifying_key().to_bytes())),
    )?;
    Ok(fingerprint(&key.verifying_key()))
}

/// `FILE.pub`.
pub fn public_path(file: &Path) -> std::path::PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".pub");
    s.into()
}

fn read_hex32(path: &Path) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out)
        .map_err(|_| format!("{}: not a key (64 hex digits)", path.display()))?;
    Ok(out)
}

/// Reads a secret key written by [`keygen`].
pub fn read_secret(path: &Path) -> Result<SigningKey, String> {
    Ok(SigningKey::from_bytes(&read_hex32(path)?))
}

/// Reads a public key written by [`keygen`].
pub fn read_public(path: &Path) -> Result<VerifyingKey, String> {
    VerifyingKey::from_bytes(&read_hex32(path)?)
        .map_err(|_| format!("{}: not a valid ed25519 public key", path.display()))
}

/// A key's short name: the first 16 hex digits of its public half.
pub fn fingerprint(key: &VerifyingKey) -> String {
    hex::encode(&key.to_bytes()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_pair_is_written_once_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("op.key");
        let fp = keygen(&file).unwrap();
        let secret = read_secret(&file).unwrap();
        let public = read_public(&public_path(&file)).unwrap();
        assert_eq!(secret.verifying_key(), public);
        assert_eq!(fingerprint(&public), fp);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(keygen(&file).is_err());
        std::fs::write(dir.path().join("bad"), "zz").unwrap();
        assert!(read_public(&dir.path().join("bad")).is_err());
    }
}
