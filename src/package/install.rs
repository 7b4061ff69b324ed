//! The installer: verifies a package, turns its instructions into actions on this blade, and
//! records what is installed.
//!
//! Each package version gets its own directory, `<root>/<name>/<version>/` (`[packages] root`,
//! by default `<data-dir>/packages`), the install root its steps are confined to: every path is
//! relative and plain, no existing part of it may be a symlink (a step that made one cannot write
//! through it), and commands run there with a cleared environment and a time limit (the step's,
//! capped by `[packages] max_step_ms`), killed with their whole process group when it passes.
//! With `[packages] run_as`, the directory is given to that user just before the first command
//! runs, and every command runs as that user, without root's supplementary groups. Every action
//! done is pushed on an undo stack; when a step fails the stack is run backwards and the directory
//! removed, so nothing half-installed is left. One install or removal runs at a time.
//!
//! An upgrade installs the new version beside the old one; once every step has succeeded the old
//! version's directory is removed, and the peerlets it registered that the new one does not are
//! unregistered (its own undo commands are not run: the new version has taken its place).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dci_proto::package::{instructions_from_xml, RunCommand, Step};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::format::Package;
use super::safe_relative;
use crate::peerlet_host::external::Manifest;
use crate::router::{MessengerHandle, PeerletChange};

/// Bytes kept of a failing command's output.
const MAX_OUTPUT: usize = 16 << 10;

/// The installer's settings, from `[packages]` and the data dir.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The keys whose packages are installed.
    pub trusted: Vec<VerifyingKey>,
    /// This blade's platform ([`super::platform`]).
    pub platform: String,
    /// Where packages are installed.
    pub root: PathBuf,
    /// The longest any one command may run, whatever the package asks.
    pub max_step: Duration,
    /// The signers whose packages on-demand retrieval installs (empty: any trusted).
    pub on_demand_signers: Vec<String>,
    /// The user install commands run as (none: dcid's own).
    pub run_as: Option<RunAs>,
}

/// A user install commands run as, from `[packages] run_as`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user name.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

impl RunAs {
    /// Looks `user` up in the password database.
    pub fn lookup(user: &str) -> Result<RunAs, String> {
        let name = std::ffi::CString::new(user).map_err(|_| "contains a NUL byte".to_string())?;
        let mut buf = vec![0 as libc::c_char; 1024];
        loop {
            // SAFETY: a plain C struct, all integers and pointers, for getpwnam_r to fill.
            let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
            let mut found = std::ptr::null_mut();
            // SAFETY: every pointer is valid for the call and `buf`'s length is its own; only the
            // integer fields of `pwd` are read after.
            let rc = unsafe {
                libc::getpwnam_r(
                    name.as_ptr(),
                    &mut pwd,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut found,
                )
            };
            match rc {
                0 if found.is_null() => return Err("no such user".into()),
                0 => {
                    return Ok(RunAs {
                        user: user.into(),
                        uid: pwd.pw_uid,
                        gid: pwd.pw_gid,
                    })
                }
                libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
                e => return Err(std::io::Error::from_raw_os_error(e).to_string()),
            }
        }
    }
}

/// What is installed, as kept in sled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// What it provides.
    pub provides: Vec<String>,
    /// The signer's fingerprint.
    pub signer: String,
    /// BLAKE3 of the package file.
    pub id: [u8; 32],
    /// When it was installed (Unix milliseconds).
    pub time_ms: u64,
    /// The instructions, for the undo steps of a removal.
    pub instructions: String,
    /// The install root.
    pub dir: PathBuf,
    /// The peerlets it registered: app and manifest path.
    pub registered: Vec<(String, PathBuf)>,
}

/// A successful install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Newly installed.
    Installed,
    /// Replaced this older version.
    Upgraded(String),
    /// The same package was already installed.
    Already,
}

impl Outcome {
    /// The status word of a report.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::Upgraded(_) => "upgraded",
            Outcome::Already => "already-installed",
        }
    }
}

/// Why an install or removal failed: the step (if one failed) and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The failing step, described.
    pub step: Option<String>,
    /// Its output or the reason, one line or a short tail.
    pub output: String,
}

fn refused(why: impl std::fmt::Display) -> Failure {
    Failure {
        step: None,
        output: why.to_string(),
    }
}

/// An action done, and how to take it back.
enum Undo {
    RemoveFile(PathBuf),
    Mode(PathBuf, u32),
    Run(RunCommand),
    /// Unregister the app, or bring back the manifest it replaced.
    Peerlet(String, Option<Manifest>),
    Restart(String),
}

/// Where a blade's data set keeps the packages installed for it, `NAME.dcipkg` each.
pub const BLADE_PACKAGES: &str = ".dci/packages";
/// Package files read from a blade's data set at most (each is checked as any package is).
const MAX_BLADE_PACKAGES: usize = 256;

/// The installer of one agent.
pub struct Installer {
    settings: Settings,
    tree: sled::Tree,
    peerlets: Option<MessengerHandle>,
    lock: tokio::sync::Mutex<()>,
    /// The data set of the blade this node acts as now, if it has one: what is installed here
    /// is kept there too, so that it follows the blade to the node that takes it over.
    blade_home: std::sync::Mutex<Option<PathBuf>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where the file of the package installed in `dir` is kept: `<dir>.dcipkg`.
fn package_file(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".dcipkg");
    s.into()
}

/// Gives `path` and everything under it to `to`, not following symlinks. Done once, before the
/// first command runs: until then only the installer has written there, so no link the user
/// planted can turn this onto a file outside.
fn chown_tree(path: &Path, to: &RunAs) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(to.uid), Some(to.gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), to)?;
        }
    }
    Ok(())
}

/// Creates the missing directories from `dir` down to `path` (which is under it), given to
/// `owner` when set.
fn make_dirs(dir: &Path, path: &Path, owner: Option<&RunAs>) -> Result<(), String> {
    let mut at = dir.to_path_buf();
    for part in path.strip_prefix(dir).unwrap_or(Path::new("")).components() {
        at.push(part);
        let made = match std::fs::create_dir(&at) {
            Ok(()) => match owner {
                Some(u) => std::os::unix::fs::lchown(&at, Some(u.uid), Some(u.gid)),
                None => Ok(()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        };
        made.map_err(|e| format!("{}: {e}", at.display()))?;
    }
    Ok(())
}

/// `rel` under `dir`, refused if it escapes or any existing part of it is a symlink.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let rel = safe_relative(rel)?;
    let mut at = dir.to_path_buf();
    for part in rel.components() {
        at.push(part);
        if at
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return Err(format!("{} is a symlink; not followed", at.display()));
        }
    }
    Ok(at)
}

impl Installer {
    /// The installer over `db`'s `packages` tree; `peerlets` is the messenger whose host the
    /// peerlet steps change (none: those steps fail).
    pub fn open(
        db: &sled::Db,
        settings: Settings,
        peerlets: Option<MessengerHandle>,
    ) -> Result<Installer, String> {
        let tree = db.open_tree("packages").map_err(|e| e.to_string())?;
        Ok(Installer {
            settings,
            tree,
            peerlets,
            lock: tokio::sync::Mutex::new(()),
            blade_home: std::sync::Mutex::new(None),
        })
    }

    /// Where the blade this node acts as now keeps its data (none: it acts as no blade, or the
    /// blade has no data set here). Set by the agent as that changes.
    pub fn set_blade_home(&self, home: Option<PathBuf>) {
        *self.blade_home.lock().unwrap_or_else(|e| e.into_inner()) = home;
    }

    fn blade_packages(&self) -> Option<PathBuf> {
        let home = self.blade_home.lock().unwrap_or_else(|e| e.into_inner());
        home.as_ref().map(|h| h.join(BLADE_PACKAGES))
    }

    /// Keeps the package file in the acting blade's data set: it is backed up with the blade,
    /// and the node that takes the blade over installs it again
    /// ([`Installer::install_blade_packages`]).
    fn keep_with_blade(&self, name: &str, bytes: &[u8]) {
        let Some(dir) = self.blade_packages() else {
            return;
        };
        let kept = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                crate::datadir::write_atomic(&package_file(&dir.join(name)), bytes, 0o600)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = kept {
            tracing::warn!(package = %name, dir = %dir.display(), "not kept with the blade's data, so it will not follow the blade: {e}");
        }
    }

    /// Installs the packages kept in the data set `home` of a blade this node now acts as (after
    /// a takeover's restore): each is verified and installed as a deploy would, and one already
    /// installed is left as it is. Answers each file's outcome.
    pub async fn install_blade_packages(
        &self,
        home: &Path,
    ) -> Vec<(PathBuf, Result<Outcome, Failure>)> {
        let Ok(entries) = std::fs::read_dir(home.join(BLADE_PACKAGES)) else {
            return Vec::new();
        };
        let files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "dcipkg"))
            .take(MAX_BLADE_PACKAGES)
            .collect();
        let mut outcomes = Vec::new();
        for file in files {
            let read = std::fs::metadata(&file)
                .map_err(|e| e.to_string())
                .and_then(|m| {
                    if m.len() > super::format::MAX_PACKAGE_BYTES {
                        Err(format!(
                            "larger than {} bytes",
                            super::format::MAX_PACKAGE_BYTES
                        ))
                    } else {
                        std::fs::read(&file).map_err(|e| e.to_string())
                    }
                });
            let outcome = match read {
                Ok(bytes) => self.install(bytes, &[]).await,
                Err(e) => Err(refused(e)),
            };
            outcomes.push((file, outcome));
        }
        outcomes
    }

    /// Every installed package.
    pub fn list(&self) -> Vec<Record> {
        self.tree
            .iter()
            .values()
            .filter_map(|v| v.ok())
            .filter_map(|v| postcard::from_bytes(&v).ok())
            .collect()
    }

    /// The kept file of an installed package that provides peerlet type `app`.
    pub fn provider(&self, app: &str) -> Option<PathBuf> {
        let wanted = format!("peerlet:{app}");
        self.list()
            .into_iter()
            .find(|r| r.provides.contains(&wanted))
            .map(|r| package_file(&r.dir))
    }

    /// Whether the package file with this hash is the one installed under its name.
    pub fn has(&self, id: &[u8; 32]) -> bool {
        self.list().iter().any(|r| &r.id == id)
    }

    fn get(&self, name: &str) -> Option<Record> {
        let v = self.tree.get(name).ok()??;
        postcard::from_bytes(&v).ok()
    }

    fn put(&self, r: &Record) -> Result<(), String> {
        let v = postcard::to_stdvec(r).map_err(|e| e.to_string())?;
        self.tree
            .insert(r.name.as_bytes(), v)
            .map_err(|e| e.to_string())?;
        self.tree.flush().map(|_| ()).map_err(|e| e.to_string())
    }

    /// Registers again the peerlets of installed packages (at agent start: the host forgets).
    pub async fn reregister(&self) {
        for r in self.list() {
            for (app, manifest) in &r.registered {
                let result = match Manifest::load(manifest) {
                    Ok(m) => self.change(PeerletChange::Register(m)).await.map(|_| ()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = result {
                    tracing::warn!(package = %r.name, %app, "installed peerlet not registered: {e}");
                }
            }
        }
    }

    async fn change(&self, change: PeerletChange) -> Result<Option<Manifest>, String> {
        match &self.peerlets {
            Some(m) => m.peerlets(change).await,
            None => Err("this agent has no peerlet host".into()),
        }
    }

    /// The signers whose packages on-demand retrieval installs (empty: any trusted).
    pub fn on_demand_signers(&self) -> &[String] {
        &self.settings.on_demand_signers
    }

    /// Verifies and installs a package file; `signers` (fingerprints), when not empty, narrows
    /// the trusted keys further.
    pub async fn install(&self, bytes: Vec<u8>, signers: &[String]) -> Result<Outcome, Failure> {
        let _one = self.lock.lock().await;
        let package = Package::parse(bytes).map_err(refused)?;
        let signer = package.verify(&self.settings.trusted).map_err(refused)?;
        if !signers.is_empty() && !signers.contains(&signer) {
            return Err(refused(format!(
                "signed by key {signer}, which is not allowed here for this install"
            )));
        }
        let h = &package.header;
        if h.platform != "any" && h.platform != self.settings.platform {
            return Err(refused(format!(
                "{} is built for {}; this blade is {}",
                package.label(),
                h.platform,
                self.settings.platform
            )));
        }
        let old = self.get(&h.name);
        if let Some(old) = &old {
            match super::compare_versions(&h.version, &old.version) {
                std::cmp::Ordering::Equal if old.id == package.id() => {
                    self.keep_with_blade(&h.name, package.bytes());
                    return Ok(Outcome::Already);
                }
                std::cmp::Ordering::Equal => {
                    return Err(refused(format!(
                        "{} is installed with other contents; give the new one a new version",
                        package.label()
                    )))
                }
                std::cmp::Ordering::Less => {
                    return Err(refused(format!(
                        "{} {} is installed, newer than {}",
                        old.name, old.version, h.version
                    )))
                }
                std::cmp::Ordering::Greater => {}
            }
        }
        let dir = self.settings.root.join(&h.name).join(&h.version);
        let fresh = std::fs::remove_dir_all(&dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            // Traversable: a run_as user reaches its directory through `<root>/<name>`.
            .and_then(|()| {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&dir)
            });
        if let Err(e) = fresh {
            return Err(refused(format!("{}: {e}", dir.display())));
        }
        let mut undo = Vec::new();
        let mut registered = Vec::new();
        // Set once the directory belongs to the run_as user: files placed after are given to it.
        let mut owner = None;
        for step in &package.steps {
            if let (Some(u), Step::Run { .. }, None) = (&self.settings.run_as, step, owner) {
                if let Err(e) = chown_tree(&dir, u) {
                    self.roll_back(undo, &dir).await;
                    return Err(Failure {
                        step: Some(step.describe()),
                        output: format!("cannot give {} to {}: {e}", dir.display(), u.user),
                    });
                }
                owner = Some(u);
            }
            if let Err(output) = self
                .apply(step, &package, &dir, owner, &mut undo, &mut registered)
                .await
            {
                self.roll_back(undo, &dir).await;
                return Err(Failure {
                    step: Some(step.describe()),
                    output,
                });
            }
        }
        let record = Record {
            name: h.name.clone(),
            version: h.version.clone(),
            provides: h.provides.clone(),
            signer,
            id: package.id(),
            time_ms: now_ms(),
            instructions: h.instructions.clone(),
            dir: dir.clone(),
            registered,
        };
        // The package file is kept beside its directory, for peers that retrieve it from here.
        let kept = crate::datadir::write_atomic(&package_file(&dir), package.bytes(), 0o600)
            .map_err(|e| e.to_string())
            .and_then(|()| self.put(&record));
        if let Err(e) = kept {
            let _ = std::fs::remove_file(package_file(&dir));
            self.roll_back(undo, &dir).await;
            return Err(refused(format!("cannot record the install: {e}")));
        }
        self.keep_with_blade(&h.name, package.bytes());
        Ok(match old {
            None => Outcome::Installed,
            Some(old) => {
                for (app, _) in &old.registered {
                    if !record.registered.iter().any(|(a, _)| a == app) {
                        let _ = self.change(PeerletChange::Unregister(app.clone())).await;
                    }
                }
                if let Err(e) = std::fs::remove_dir_all(&old.dir) {
                    tracing::warn!(dir = %old.dir.display(), "old version not removed: {e}");
                }
                let _ = std::fs::remove_file(package_file(&old.dir));
                Outcome::Upgraded(old.version)
            }
        })
    }

    async fn apply(
        &self,
        step: &Step,
        package: &Package,
        dir: &Path,
        owner: Option<&RunAs>,
        undo: &mut Vec<Undo>,
        registered: &mut Vec<(String, PathBuf)>,
    ) -> Result<(), String> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match step {
            Step::Place { file, to, mode } => {
                let bytes = package
                    .file_named(file)
                    .ok_or_else(|| format!("the package has no file {file}"))?;
                let dest = inside(dir, to)?;
                if let Some(parent) = dest.parent() {
                    make_dirs(dir, parent, owner)?;
                }
                let write = || -> std::io::Result<()> {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(*mode)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&dest)?;
                    f.write_all(bytes)?;
                    if let Some(u) = owner {
                        std::os::unix::fs::fchown(&f, Some(u.uid), Some(u.gid))?;
                    }
                    f.set_permissions(std::fs::Permissions::from_mode(*mode))?;
                    f.sync_all()
                };
                write().map_err(|e| format!("{}: {e}", dest.display()))?;
                undo.push(Undo::RemoveFile(dest));
            }
            Step::Mode { path, mode } => {
                let target = inside(dir, path)?;
                let old = std::fs::symlink_metadata(&target)
                    .map_err(|e| format!("{}: {e}", target.display()))?
                    .permissions()
                    .mode()
                    & 0o777;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| format!("{}: {e}", target.display()))?;
                undo.push(Undo::Mode(target, old));
            }
            Step::Run { command, undo: u } => {
                let env = [
                    ("DCI_PACKAGE_NAME", package.header.name.as_str()),
                    ("DCI_PACKAGE_VERSION", package.header.version.as_str()),
                ];
                self.run(command, dir, &env).await?;
                if let Some(u) = u {
                    undo.push(Undo::Run(u.clone()));
                }
            }
            Step::RegisterPeerlet { manifest } => {
                let path = inside(dir, manifest)?;
                let m = Manifest::load(&path).map_err(|e| e.to_string())?;
                let app = m.app.clone();
                let previous = self.change(PeerletChange::Register(m)).await?;
                undo.push(Undo::Peerlet(app.clone(), previous));
                registered.push((app, path));
            }
            Step::RestartPeerlet { app } => {
                self.change(PeerletChange::Restart(app.clone())).await?;
                undo.push(Undo::Restart(app.clone()));
            }
        }
        Ok(())
    }

    /// Runs a command in `dir` with the limits; its failure is its exit and output.
    async fn run(
        &self,
        command: &RunCommand,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<(), String> {
        let limit = Duration::from_millis(command.timeout_ms).min(self.settings.max_step);
        let program = if command.args[0].contains('/') {
            inside(dir, &command.args[0])?
        } else {
            PathBuf::from(&command.args[0])
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&command.args[1..])
            .current_dir(dir)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", dir)
            .env("DCI_PACKAGE_DIR", dir)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own process group, so that a timeout kills whatever it started too.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(u) = &self.settings.run_as {
            let (uid, gid) = (u.uid, u.gid);
            // Not Command::uid/gid: std runs pre_exec closures after its setuid, too late to drop
            // the groups here, and it ignores a failing setgroups.
            // SAFETY: the closure runs in the forked child before exec, where only
            // async-signal-safe calls are sound: it makes three system calls and reads errno.
            unsafe {
                cmd.pre_exec(move || {
                    // Root's supplementary groups first, then the group, then the user (after
                    // which the other two are no longer allowed).
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", command.args[0]))?;
        let pid = child.id();
        match tokio::time::timeout(limit, child.wait_with_output()).await {
            Err(_) => {
                if let Some(pid) = pid {
                    // SAFETY: signalling a process group this function created; no memory involved.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
                Err(format!("timed out after {} ms; killed", limit.as_millis()))
            }
            Ok(Err(e)) => Err(format!("{}: {e}", command.args[0])),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                let mut tail = text.len().saturating_sub(MAX_OUTPUT);
                while !text.is_char_boundary(tail) {
                    tail += 1;
                }
                Err(format!(
                    "exit {}: {}",
                    out.status
                        .code()
                        .map_or_else(|| "by signal".into(), |c| c.to_string()),
                    text[tail..].trim()
                ))
            }
        }
    }

    async fn roll_back(&self, undo: Vec<Undo>, dir: &Path) {
        for u in undo.into_iter().rev() {
            let result = match u {
                Undo::RemoveFile(p) => std::fs::remove_file(&p).map_err(|e| e.to_string()),
                Undo::Mode(p, m) => {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m))
                        .map_err(|e| e.to_string())
                }
                Undo::Run(c) => self.run(&c, dir, &[]).await,
                Undo::Peerlet(app, None) => self
                    .change(PeerletChange::Unregister(app))
                    .await
                    .map(|_| ()),
                Undo::Peerlet(_, Some(previous)) => self
                    .change(PeerletChange::Register(previous))
                    .await
                    .map(|_| ()),
                Undo::Restart(app) => self.change(PeerletChange::Restart(app)).await.map(|_| ()),
            };
            if let Err(e) = result {
                tracing::warn!(dir = %dir.display(), "undo step failed: {e}");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), "install root not removed: {e}");
        }
        if let Some(parent) = dir.parent() {
            // The package's own directory, if no version is left in it.
            let _ = std::fs::remove_dir(parent);
        }
    }

    /// Removes an installed package: its undo steps in reverse, then its directory and record.
    /// `Ok(false)` when it is not installed. A failing undo command is reported, after the rest
    /// of the removal is done (what is left cannot be rolled forward).
    pub async fn uninstall(&self, name: &str) -> Result<bool, Failure> {
        let _one = self.lock.lock().await;
        let Some(record) = self.get(name) else {
            return Ok(false);
        };
        let steps = instructions_from_xml(&record.instructions).map_err(refused)?;
        let env = [
            ("DCI_PACKAGE_NAME", record.name.as_str()),
            ("DCI_PACKAGE_VERSION", record.version.as_str()),
        ];
        let mut failed = None;
        for step in steps.iter().rev() {
            let result = match step {
                Step::Run { undo: Some(u), .. } => self.run(u, &record.dir, &env).await,
                Step::RegisterPeerlet { .. } | Step::Run { undo: None, .. } => Ok(()),
                Step::RestartPeerlet { app } => self
                    .change(PeerletChange::Restart(app.clone()))
                    .await
                    .map(|_| ()),
                // The directory goes as a whole.
                Step::Place { .. } | Step::Mode { .. } => Ok(()),
            };
            if let Err(output) = result {
                failed.get_or_insert(Failure {
                    step: Some(step.describe()),
                    output,
                });
            }
        }
        for (app, _) in &record.registered {
            let _ = self.change(PeerletChange::Unregister(app.clone())).await;
        }
        if let Err(e) = std::fs::remove_dir_all(&record.dir) {
            failed.get_or_insert(refused(format!("{}: {e}", record.dir.display())));
        }
        let _ = std::fs::remove_file(package_file(&record.dir));
        if let Some(dir) = self.blade_packages() {
            let _ = std::fs::remove_file(package_file(&dir.join(name)));
        }
        if let Some(parent) = record.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        self.tree
            .remove(name)
            .and_then(|_| self.tree.flush())
            .map_err(refused)?;
        match failed {
            Some(f) => Err(f),
            None => Ok(true),
        }
    }
}
