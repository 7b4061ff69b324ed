//! `fs`: the folders a blade exports (`[fs] export` in its config), listed, read and written by
//! operators over the mesh. `dcish` shows them as `/blades/<blade>/<export>/...`.
//!
//! Requests and answers are [`dci_peerlet::fs`] payloads. Every path is relative to an export and
//! must stay inside it: `..` and absolute paths are refused outright, and what a path names is
//! resolved (symlinks followed) and checked against the export's own resolved path, so a symlink
//! pointing out of the folder is refused too. Writes go to read-write exports only, in chunks to a
//! temporary file beside the target, which the last chunk syncs and renames into place: a reader
//! sees the old file or the new one, never half of it. Sizes are bounded: a chunk, a `find`'s
//! results, the entries a walk visits. The work runs on a thread of its own per request, so the
//! agent keeps routing meanwhile.
#![deny(missing_docs)]

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use dci_peerlet::fs::{
    chunk_to_payload, entries_to_payload, exports_to_payload, usage_to_payload, written_to_payload,
    Chunk, ExportInfo, FsRequest, ListEntry, Usage, MAX_CHUNK, MAX_FIND,
};
use dci_peerlet::{check_operator, Context, Envelope, Kind, Payload, Peerlet, PeerletType};
use dci_peerlet::{Refusal, Uuid};

/// Its application type.
pub const APP: &str = "fs";
/// The most entries a `find` or `du` walk visits before it stops (and says so).
pub const MAX_WALK: u64 = 1_000_000;
/// The prefix of upload temporary files, beside their target.
pub const UPLOAD_PREFIX: &str = ".dci-upload-";
/// An upload's temporary file untouched this long was abandoned; a new upload into the same
/// directory removes it.
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// One exported folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Its name: the first component of its paths.
    pub name: String,
    /// The folder on this node.
    pub path: PathBuf,
    /// Whether operators may write into it.
    pub writable: bool,
}

/// What is exported, to whom.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The exported folders.
    pub exports: Vec<Export>,
    /// Blade names or node ids whose operators (`control` or `task` app) may use them.
    pub operators: Vec<String>,
}

/// Makes fs instances under one policy.
pub struct FsType(pub Policy);

impl PeerletType for FsType {
    fn app(&self) -> &str {
        APP
    }

    fn create(&self, _instance: Uuid) -> Box<dyn Peerlet> {
        Box::new(Fs(self.0.clone()))
    }
}

/// One fs instance.
pub struct Fs(Policy);

impl Peerlet for Fs {
    fn handle(&mut self, env: &Envelope, ctx: &mut Context<'_>) -> Result<(), Refusal> {
        if env.kind != Kind::Request {
            return Err(Refusal::new("bad-kind", "fs only answers requests"));
        }
        check_operator(&env.sender, &self.0.operators, "use exported folders")?;
        let request = FsRequest::from_payload(&env.payload)
            .map_err(|e| Refusal::new("bad-payload", e.to_string()))?;
        if request == FsRequest::Exports {
            let exports: Vec<ExportInfo> = self
                .0
                .exports
                .iter()
                .map(|e| ExportInfo {
                    name: e.name.clone(),
                    writable: e.writable,
                })
                .collect();
            ctx.reply(env, exports_to_payload(&exports));
            return Ok(());
        }
        let later = ctx.later();
        let envelope = env.clone();
        let policy = self.0.clone();
        std::thread::Builder::new()
            .name("dci-fs".into())
            .spawn(move || {
                later.answer(&envelope, serve(&policy, request));
            })
            .map_err(|e| Refusal::new("fs-failed", format!("cannot start a thread: {e}")))?;
        Ok(())
    }
}

/// Answers one request (not `Exports`) under `policy`.
pub fn serve(policy: &Policy, request: FsRequest) -> Result<Payload, Refusal> {
    match request {
        FsRequest::Exports => Err(Refusal::new("internal", "exports are answered inline")),
        FsRequest::List { export, path } => {
            let at = Resolved::existing(policy, &export, &path)?;
            let meta = at.metadata()?;
            let mut entries = Entries::new(MAX_FIND);
            let mut complete = true;
            if meta.is_dir() {
                for item in fs::read_dir(&at.real).map_err(|e| at.io(e))? {
                    let item = item.map_err(|e| at.io(e))?;
                    let rel = at.child(&item.file_name().to_string_lossy());
                    if !entries.push(entry(&rel, &item.path())?) {
                        complete = false;
                        break;
                    }
                }
                entries.list.sort_by(|a, b| a.path.cmp(&b.path));
            } else {
                entries.push(entry(&at.rel, &at.real)?);
            }
            Ok(entries_to_payload(&entries.list, !complete))
        }
        FsRequest::Stat { export, path } => {
            let at = Resolved::existing(policy, &export, &path)?;
            Ok(entries_to_payload(&[entry(&at.rel, &at.real)?], false))
        }
        FsRequest::Read {
            export,
            path,
            offset,
            length,
        } => {
            if length > MAX_CHUNK {
                return Err(too_large(format!(
                    "a read may ask for at most {MAX_CHUNK} bytes, not {length}"
                )));
            }
            let at = Resolved::existing(policy, &export, &path)?;
            // Checked before opening: opening a FIFO would wait for a writer.
            if !at.metadata()?.is_file() {
                return Err(not_a_file(&at));
            }
            let mut file = File::open(&at.real).map_err(|e| at.io(e))?;
            let meta = file.metadata().map_err(|e| at.io(e))?;
            file.seek(SeekFrom::Start(offset)).map_err(|e| at.io(e))?;
            let mut data = Vec::with_capacity(length.min(meta.len()) as usize);
            file.take(length)
                .read_to_end(&mut data)
                .map_err(|e| at.io(e))?;
            Ok(chunk_to_payload(&Chunk {
                offset,
                total: meta.len(),
                data,
            }))
        }
        FsRequest::Write {
            export,
            path,
            upload,
            offset,
            last,
            data,
        } => write(policy, &export, &path, &upload, offset, last, &data),
        FsRequest::Find {
            export,
            path,
            name,
            max,
        } => {
            if max > MAX_FIND {
                return Err(too_large(format!(
                    "find answers at most {MAX_FIND} entries, not {max}"
                )));
            }
            let at = Resolved::existing(policy, &export, &path)?;
            let mut found = Entries::new(max);
            let mut failed = None;
            let complete = walk(&at, &mut |rel, p, _| {
                let base = rel.rsplit('/').next().unwrap_or(rel);
                if rel == at.rel || base.starts_with(UPLOAD_PREFIX) {
                    return true;
                }
                if name
                    .as_ref()
                    .is_some_and(|n| !glob(n.as_bytes(), base.as_bytes()))
                {
                    return true;
                }
                match entry(rel, p) {
                    Ok(e) => found.push(e),
                    Err(r) => {
                        failed = Some(r);
                        false
                    }
                }
            })?;
            if let Some(r) = failed {
                return Err(r);
            }
            Ok(entries_to_payload(&found.list, !complete))
        }
        FsRequest::Du { export, path } => {
            let at = Resolved::existing(policy, &export, &path)?;
            let mut usage = Usage::default();
            usage.truncated = !walk(&at, &mut |_, _, meta| {
                if meta.is_dir() {
                    usage.dirs += 1;
                } else if meta.is_file() {
                    usage.files += 1;
                    usage.bytes += meta.len();
                }
                true
            })?;
            Ok(usage_to_payload(&usage))
        }
    }
}

/// The entries of one answer: at most a count, and few enough bytes of XML that the answer fits
/// in one envelope (1 MiB by default) with room to spare.
struct Entries {
    list: Vec<ListEntry>,
    /// Bytes of XML the list takes, at most.
    bytes: usize,
    max: u64,
}

impl Entries {
    /// Room for the XML of the entries of one answer.
    const BUDGET: usize = 768 << 10;

    fn new(max: u64) -> Entries {
        Entries {
            list: Vec::new(),
            bytes: 0,
            max,
        }
    }

    /// Adds `e`; false, leaving it out, when the answer is full.
    fn push(&mut self, e: ListEntry) -> bool {
        // The attributes besides path and target take under 120 bytes.
        let cost = 120 + escaped_len(&e.path) + e.target.as_deref().map_or(0, escaped_len);
        if self.list.len() as u64 >= self.max || self.bytes + cost > Self::BUDGET {
            return false;
        }
        self.bytes += cost;
        self.list.push(e);
        true
    }
}

/// The length of `s` as an XML attribute value.
fn escaped_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '&' => 5,
            '<' | '>' => 4,
            '"' | '\'' => 6,
            c => c.len_utf8(),
        })
        .sum()
}

fn too_large(message: String) -> Refusal {
    Refusal::new("too-large", message)
}

fn not_a_file(at: &Resolved) -> Refusal {
    Refusal::new(
        "not-a-file",
        format!("{} is not a regular file", at.shown()),
    )
}

/// A path inside an export, checked and resolved.
struct Resolved {
    export: String,
    /// Relative to the export, `/`-separated, without `.` or empty components.
    rel: String,
    /// The export's folder, resolved.
    root: PathBuf,
    /// What the path names, resolved (symlinks followed); inside `root`.
    real: PathBuf,
}

/// The export named `export`, its resolved folder, and the components of `path` (refused if
/// absolute or holding `..`).
fn parts<'p>(
    policy: &'p Policy,
    export: &str,
    path: &str,
) -> Result<(&'p Export, PathBuf, Vec<String>), Refusal> {
    let Some(ex) = policy.exports.iter().find(|e| e.name == export) else {
        return Err(Refusal::new(
            "no-such-export",
            format!("no export named {export:?} here"),
        ));
    };
    if path.starts_with('/') {
        return Err(Refusal::new(
            "bad-path",
            format!("{path}: absolute paths are refused; give a path inside the export"),
        ));
    }
    let mut comps = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Refusal::new(
                    "bad-path",
                    format!("{export}/{path}: `..` is refused; paths stay inside the export"),
                ))
            }
            c => comps.push(c.to_owned()),
        }
    }
    let root = fs::canonicalize(&ex.path).map_err(|e| {
        Refusal::new(
            "export-unavailable",
            format!("export {export} ({}): {e}", ex.path.display()),
        )
    })?;
    Ok((ex, root, comps))
}

fn outside(export: &str, rel: &str) -> Refusal {
    Refusal::new(
        "outside-export",
        format!("{export}/{rel} resolves outside the export (a symlink leaves the folder)"),
    )
}

impl Resolved {
    /// An existing path: resolved, and refused unless it stays inside the export.
    fn existing(policy: &Policy, export: &str, path: &str) -> Result<Resolved, Refusal> {
        let (_, root, comps) = parts(policy, export, path)?;
        let rel = comps.join("/");
        let mut at = Resolved {
            export: export.to_owned(),
            real: root.join(&rel),
            root,
            rel,
        };
        at.real = fs::canonicalize(&at.real).map_err(|e| at.io(e))?;
        if !at.real.starts_with(&at.root) {
            return Err(outside(export, &at.rel));
        }
        Ok(at)
    }

    /// The path as the user wrote it: `export/rel`.
    fn shown(&self) -> String {
        if self.rel.is_empty() {
            self.export.clone()
        } else {
            format!("{}/{}", self.export, self.rel)
        }
    }

    /// An entry of this directory, relative to the export.
    fn child(&self, name: &str) -> String {
        if self.rel.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.rel)
        }
    }

    fn metadata(&self) -> Result<Metadata, Refusal> {
        fs::metadata(&self.real).map_err(|e| self.io(e))
    }

    /// An I/O error on this path, as one line.
    fn io(&self, e: std::io::Error) -> Refusal {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => "no-such-path",
            std::io::ErrorKind::PermissionDenied => "permission-denied",
            _ => "io-error",
        };
        Refusal::new(code, format!("{}: {e}", self.shown()))
    }
}

/// The listing entry of `p` (not following a final symlink), named `rel`.
fn entry(rel: &str, p: &Path) -> Result<ListEntry, Refusal> {
    let meta =
        fs::symlink_metadata(p).map_err(|e| Refusal::new("io-error", format!("{rel}: {e}")))?;
    let kind = if meta.is_dir() {
        "dir"
    } else if meta.file_type().is_symlink() {
        "symlink"
    } else {
        "file"
    };
    Ok(ListEntry {
        path: rel.to_owned(),
        kind: kind.into(),
        size: meta.len(),
        mode: meta.permissions().mode() & 0o7777,
        mtime: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
        target: fs::read_link(p)
            .ok()
            .map(|t| t.to_string_lossy().into_owned()),
    })
}

/// Visits `at` and everything under it, depth first, without following symlinks, calling
/// `visit(rel, path, metadata)` until it returns false. True when the walk went through, false
/// when `visit` stopped it or it reached [`MAX_WALK`] entries. Unreadable subdirectories are
/// passed over; the starting point must be readable.
fn walk(
    at: &Resolved,
    visit: &mut dyn FnMut(&str, &Path, &Metadata) -> bool,
) -> Result<bool, Refusal> {
    let meta = at.metadata()?;
    let mut seen = 1u64;
    if !visit(&at.rel, &at.real, &meta) {
        return Ok(false);
    }
    let mut stack = Vec::new();
    if meta.is_dir() {
        stack.push((at.rel.clone(), at.real.clone()));
    }
    while let Some((rel, dir)) = stack.pop() {
        let Ok(items) = fs::read_dir(&dir) else {
            continue;
        };
        for item in items.flatten() {
            let Ok(meta) = item.metadata() else { continue };
            let name = item.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            seen += 1;
            if seen > MAX_WALK || !visit(&child, &item.path(), &meta) {
                return Ok(false);
            }
            if meta.is_dir() {
                stack.push((child, item.path()));
            }
        }
    }
    Ok(true)
}

/// Whether `name` matches `pattern`, where `*` stands for any run of bytes and `?` for one.
pub fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it has covered up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// One chunk of an upload: appended to the upload's temporary file beside the target; the last
/// chunk syncs it and renames it over the target.
fn write(
    policy: &Policy,
    export: &str,
    path: &str,
    upload: &str,
    offset: u64,
    last: bool,
    data: &[u8],
) -> Result<Payload, Refusal> {
    let (ex, root, comps) = parts(policy, export, path)?;
    if !ex.writable {
        return Err(Refusal::new(
            "read-only",
            format!("export {export} is read-only"),
        ));
    }
    if data.len() as u64 > MAX_CHUNK {
        return Err(too_large(format!(
            "a write chunk holds at most {MAX_CHUNK} bytes, not {}",
            data.len()
        )));
    }
    let upload = Uuid::parse_str(upload)
        .map_err(|_| Refusal::new("bad-payload", "the upload id is not a UUID"))?;
    let Some((name, dirs)) = comps.split_last() else {
        return Err(Refusal::new(
            "bad-path",
            format!("{export}: give a file name inside the export"),
        ));
    };
    let at = Resolved {
        export: export.to_owned(),
        rel: comps.join("/"),
        real: root.join(dirs.join("/")),
        root,
    };
    let dir = fs::canonicalize(&at.real).map_err(|e| at.io(e))?;
    if !dir.starts_with(&at.root) {
        return Err(outside(export, &at.rel));
    }
    let target = dir.join(name);
    if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
        return Err(not_a_file(&at));
    }
    let temp = dir.join(format!("{UPLOAD_PREFIX}{upload}"));
    if fs::symlink_metadata(&temp).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(outside(export, &at.rel));
    }
    if offset == 0 {
        remove_abandoned(&dir);
    }
    let mut file = if offset == 0 {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
    } else {
        OpenOptions::new().append(true).open(&temp)
    }
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Refusal::new(
            "bad-offset",
            format!("{}: no upload {upload} in progress", at.shown()),
        ),
        _ => at.io(e),
    })?;
    let have = file.metadata().map_err(|e| at.io(e))?.size();
    if have != offset {
        return Err(Refusal::new(
            "bad-offset",
            format!("{}: the upload has {have} bytes, not {offset}", at.shown()),
        ));
    }
    file.write_all(data).map_err(|e| at.io(e))?;
    if last {
        file.sync_all().map_err(|e| at.io(e))?;
        fs::rename(&temp, &target).map_err(|e| at.io(e))?;
        // The rename lasts once the directory is synced too.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| at.io(e))?;
    }
    Ok(written_to_payload(offset + data.len() as u64, last))
}

/// Removes the temporary files of uploads in `dir` untouched for [`ABANDONED_AFTER`] (a `dcish`
/// stopped mid-copy, a blade left out of a `put` to a set). Best effort: what fails stays.
fn remove_abandoned(dir: &Path) {
    let Ok(items) = fs::read_dir(dir) else { return };
    for item in items.flatten() {
        let abandoned = item
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= ABANDONED_AFTER);
        if abandoned
            && item
                .file_name()
                .to_string_lossy()
                .starts_with(UPLOAD_PREFIX)
        {
            let _ = fs::remove_file(item.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dci_peerlet::fs::{chunk_from_payload, entries_from_payload, usage_from_payload};

    fn policy(dir: &Path) -> Policy {
        fs::create_dir_all(dir.join("ro/sub")).unwrap();
        fs::create_dir_all(dir.join("rw")).unwrap();
        fs::write(dir.join("ro/a.log"), b"hello").unwrap();
        fs::write(dir.join("ro/sub/b.log"), b"world!").unwrap();
        fs::write(dir.join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), dir.join("ro/leak")).unwrap();
        std::os::unix::fs::symlink("a.log", dir.join("ro/inside")).unwrap();
        Policy {
            exports: vec![
                Export {
                    name: "logs".into(),
                    path: dir.join("ro"),
                    writable: false,
                },
                Export {
                    name: "up".into(),
                    path: dir.join("rw"),
                    writable: true,
                },
            ],
            operators: vec!["b1".into()],
        }
    }

    fn code(r: Result<Payload, Refusal>) -> String {
        r.unwrap_err().code
    }

    fn read(export: &str, path: &str, offset: u64, length: u64) -> FsRequest {
        FsRequest::Read {
            export: export.into(),
            path: path.into(),
            offset,
            length,
        }
    }

    #[test]
    fn files_are_listed_read_in_ranges_found_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let p = policy(d.path());
        let list = serve(
            &p,
            FsRequest::List {
                export: "logs".into(),
                path: "".into(),
            },
        )
        .unwrap();
        let (entries, _) = entries_from_payload(&list).unwrap();
        let names: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.path.as_str(), e.kind.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("a.log", "file"),
                ("inside", "symlink"),
                ("leak", "symlink"),
                ("sub", "dir")
            ]
        );
        let c = chunk_from_payload(&serve(&p, read("logs", "sub/./b.log", 2, 3)).unwrap()).unwrap();
        assert_eq!((c.data.as_slice(), c.total), (&b"rld"[..], 6));
        let c = chunk_from_payload(&serve(&p, read("logs", "inside", 0, 100)).unwrap()).unwrap();
        assert_eq!(c.data, b"hello");
        let found = serve(
            &p,
            FsRequest::Find {
                export: "logs".into(),
                path: "".into(),
                name: Some("*.log".into()),
                max: 10,
            },
        )
        .unwrap();
        let (mut found, truncated) = entries_from_payload(&found).unwrap();
        found.sort_by(|a, b| a.path.cmp(&b.path));
        let paths: Vec<&str> = found.iter().map(|e| e.path.as_str()).collect();
        assert_eq!((paths, truncated), (vec!["a.log", "sub/b.log"], false));
        let u = usage_from_payload(
            &serve(
                &p,
                FsRequest::Du {
                    export: "logs".into(),
                    path: "".into(),
                },
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!((u.bytes, u.files, u.dirs), (11, 2, 2));
    }

    #[test]
    fn paths_leaving_the_export_and_oversize_reads_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = policy(d.path());
        assert_eq!(code(serve(&p, read("logs", "../secret", 0, 1))), "bad-path");
        assert_eq!(
            code(serve(&p, read("logs", "/etc/passwd", 0, 1))),
            "bad-path"
        );
        assert_eq!(
            code(serve(&p, read("logs", "leak", 0, 1))),
            "outside-export"
        );
        assert_eq!(
            code(serve(&p, read("nope", "a.log", 0, 1))),
            "no-such-export"
        );
        assert_eq!(
            code(serve(&p, read("logs", "missing", 0, 1))),
            "no-such-path"
        );
        assert_eq!(code(serve(&p, read("logs", "sub", 0, 1))), "not-a-file");
        assert_eq!(
            code(serve(&p, read("logs", "a.log", 0, MAX_CHUNK + 1))),
            "too-large"
        );
    }

    fn put(
        export: &str,
        path: &str,
        upload: &str,
        offset: u64,
        last: bool,
        data: &[u8],
    ) -> FsRequest {
        FsRequest::Write {
            export: export.into(),
            path: path.into(),
            upload: upload.into(),
            offset,
            last,
            data: data.to_vec(),
        }
    }

    #[test]
    fn an_upload_appears_whole_at_its_last_chunk_and_only_in_writable_exports() {
        let d = tempfile::tempdir().unwrap();
        let p = policy(d.path());
        let id = Uuid::new_v4().to_string();
        serve(&p, put("up", "f.bin", &id, 0, false, b"abc")).unwrap();
        assert!(
            !d.path().join("rw/f.bin").exists(),
            "not before the last chunk"
        );
        assert_eq!(
            code(serve(&p, put("up", "f.bin", &id, 1, false, b"x"))),
            "bad-offset"
        );
        serve(&p, put("up", "f.bin", &id, 3, true, b"def")).unwrap();
        assert_eq!(fs::read(d.path().join("rw/f.bin")).unwrap(), b"abcdef");
        assert_eq!(fs::read_dir(d.path().join("rw")).unwrap().count(), 1);
        // An upload abandoned long ago is cleared by the next one; a recent one is left alone.
        let old = d.path().join(format!("rw/{UPLOAD_PREFIX}old"));
        let recent = d.path().join(format!("rw/{UPLOAD_PREFIX}recent"));
        fs::write(&old, b"x").unwrap();
        fs::write(&recent, b"x").unwrap();
        let long_ago = std::time::SystemTime::now() - ABANDONED_AFTER * 2;
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        serve(
            &p,
            put("up", "g", &Uuid::new_v4().to_string(), 0, true, b"g"),
        )
        .unwrap();
        assert!(!old.exists() && recent.exists());
        assert_eq!(
            code(serve(&p, put("logs", "x", &id, 0, true, b"x"))),
            "read-only"
        );
        assert_eq!(
            code(serve(&p, put("up", "../x", &id, 0, true, b"x"))),
            "bad-path"
        );
        assert_eq!(
            code(serve(&p, put("up", "x", "../../etc", 0, true, b"x"))),
            "bad-payload"
        );
        // A directory symlinked out of the folder is not written through.
        std::os::unix::fs::symlink(d.path(), d.path().join("rw/out")).unwrap();
        assert_eq!(
            code(serve(&p, put("up", "out/x", &id, 0, true, b"x"))),
            "outside-export"
        );
        assert!(!d.path().join("x").exists());
    }

    #[test]
    fn a_listing_too_large_for_one_answer_is_cut_and_said_so() {
        let d = tempfile::tempdir().unwrap();
        let p = policy(d.path());
        let long = "x".repeat(200);
        for i in 0..4000 {
            fs::write(d.path().join(format!("rw/{long}{i}")), b"").unwrap();
        }
        let list = FsRequest::List {
            export: "up".into(),
            path: "".into(),
        };
        let answer = serve(&p, list).unwrap();
        let (entries, truncated) = entries_from_payload(&answer).unwrap();
        assert!(truncated && entries.len() < 4000, "{}", entries.len());
        assert!(answer.as_str().len() < 1 << 20);
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob(b"*.log", b"a.log"));
        assert!(glob(b"a*b?c", b"axxbyc"));
        assert!(!glob(b"*.log", b"a.logs"));
        assert!(glob(b"*", b""));
    }
}
