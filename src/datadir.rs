//! The data directory: identity key, sled database, control socket, and the lock that keeps a second
//! agent out.
//!
//! The lock is an exclusive `flock` on the directory itself, so taking it writes nothing: an agent
//! refused at start-up (locked dir, port in use, bad key) leaves the data dir exactly as it found it.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// Why the data dir cannot be used. Nothing is written when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the lock.
    #[error("data dir {0} is in use by another dcid")]
    Locked(PathBuf),
    /// It exists but is not a directory.
    #[error("data dir {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The agent may not write there.
    #[error("data dir {0} is not writable")]
    NotWritable(PathBuf),
    /// The identity key exists but cannot be read or decoded.
    #[error("identity key {path} is unusable: {reason}")]
    BadIdentity {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Any other I/O failure, with the path it concerns.
    #[error("data dir {path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An inspected, possibly not yet created, data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    lock: Option<File>,
}

impl DataDir {
    /// Looks at `path` without writing: if it exists it must be a writable directory, and it is
    /// locked for this process. If it does not exist, [`DataDir::create`] makes it later.
    pub fn inspect(path: &Path) -> Result<DataDir, DataDirError> {
        let mut dir = DataDir {
            path: path.to_path_buf(),
            lock: None,
        };
        match fs::metadata(path) {
            Ok(meta) if !meta.is_dir() => Err(DataDirError::NotADirectory(path.into())),
            Ok(_) => {
                if !writable(path) {
                    return Err(DataDirError::NotWritable(path.into()));
                }
                dir.lock()?;
                Ok(dir)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                if parent.exists() && !writable(parent) {
                    return Err(DataDirError::NotWritable(path.into()));
                }
                Ok(dir)
            }
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Creates the directory (mode 0700) if needed and takes the lock if not yet held.
    pub fn create(&mut self) -> Result<(), DataDirError> {
        if !self.path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.path)
                .map_err(io(&self.path))?;
        }
        if self.lock.is_none() {
            self.lock()?;
        }
        Ok(())
    }

    fn lock(&mut self) -> Result<(), DataDirError> {
        let file = File::open(&self.path).map_err(io(&self.path))?;
        match file.try_lock() {
            Ok(()) => {
                self.lock = Some(file);
                Ok(())
            }
            Err(fs::TryLockError::WouldBlock) => Err(DataDirError::Locked(self.path.clone())),
            Err(fs::TryLockError::Error(e)) => Err(io(&self.path)(e)),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sled database directory.
    pub fn db_path(&self) -> PathBuf {
        self.path.join("db")
    }

    /// Where the blades this node took over keep their data sets (`blades/BLADE`).
    pub fn blades_path(&self) -> PathBuf {
        self.path.join("blades")
    }

    /// The control socket.
    pub fn socket_path(&self) -> PathBuf {
        self.path.join("dcid.sock")
    }

    /// The identity key file.
    pub fn identity_path(&self) -> PathBuf {
        self.path.join("identity.key")
    }

    /// Reads the identity key if one exists; `Ok(None)` if this data dir has none yet.
    pub fn read_identity(&self) -> Result<Option<Keypair>, DataDirError> {
        let path = self.identity_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(DataDirError::BadIdentity {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        Keypair::from_protobuf_encoding(&bytes)
            .map(Some)
            .map_err(|e| DataDirError::BadIdentity {
                path,
                reason: e.to_string(),
            })
    }

    /// Writes the identity key atomically with mode 0600 (temp file, fsync, rename).
    pub fn write_identity(&self, key: &Keypair) -> Result<(), DataDirError> {
        let path = self.identity_path();
        let bytes = key
            .to_protobuf_encoding()
            .map_err(|e| DataDirError::BadIdentity {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        write_atomic(&path, &bytes, 0o600)
    }
}

/// Writes `bytes` to `path` through a temp file, fsync and rename, with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.set_permissions(Permissions::from_mode(mode))
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_agent_cannot_lock_the_same_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let mut first = DataDir::inspect(tmp.path()).unwrap();
        first.create().unwrap();
        let err = DataDir::inspect(tmp.path()).unwrap_err();
        assert!(matches!(err, DataDirError::Locked(_)), "{err}");
        drop(first);
        DataDir::inspect(tmp.path()).unwrap();
    }

    #[test]
    fn inspecting_a_missing_dir_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("new");
        let mut dir = DataDir::inspect(&path).unwrap();
        assert!(!path.exists());
        dir.create().unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn the_identity_survives_a_restart_and_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = DataDir::inspect(tmp.path()).unwrap();
        dir.create().unwrap();
        assert!(dir.read_identity().unwrap().is_none());
        let key = Keypair::generate_ed25519();
        dir.write_identity(&key).unwrap();
        let again = dir.read_identity().unwrap().unwrap();
        assert_eq!(again.public(), key.public());
        let mode = fs::metadata(dir.identity_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_corrupt_identity_is_reported_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::inspect(tmp.path()).unwrap();
        fs::write(dir.identity_path(), b"garbage").unwrap();
        assert!(matches!(
            dir.read_identity(),
            Err(DataDirError::BadIdentity { .. })
        ));
        assert_eq!(fs::read(dir.identity_path()).unwrap(), b"garbage");
    }
}
