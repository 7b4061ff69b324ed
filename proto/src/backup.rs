//! Control payloads of backup and restore (namespace [`BACKUP_NAMESPACE`], `proto/backup.xsd`).
//!
//! They travel on the control socket like the commands of [`crate::control`], in a namespace of
//! their own so that backup commands can grow without touching the others. Parsing is as strict:
//! one element, the declared attributes and children, nothing else.

use crate::archive::{ArchiveId, ArchiveRef};
use crate::control::{
    attributes, named_element, no_content, number, only_element, required, text_content,
};
use crate::error::shown;
use crate::xml::{self, Child, Node};
use crate::{Payload, ProtoError};

/// The namespace of backup payloads; the version is part of it.
pub const BACKUP_NAMESPACE: &str = "urn:dci:backup:1";

/// Archive kinds as spelled on the wire.
pub const KINDS: [&str; 2] = ["snapshot", "delta"];

/// A backup command from `dcish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupRequest {
    /// `<backup-now blade=".." wait="true|false"/>`: make an archive now; answered by
    /// [`archives_to_payload`] with the one archive.
    Now {
        /// The blade; absent means the agent's own.
        blade: Option<String>,
        /// Answer only once the archive is complete or has failed.
        wait: bool,
    },
    /// `<archives blade=".."/>`: list a blade's archives; answered by [`archives_to_payload`].
    Archives {
        /// The blade.
        blade: String,
    },
    /// `<restore ...><path>GLOB</path>...</restore>`; answered by [`restored_to_payload`].
    Restore(RestoreArgs),
    /// `<ls blade=".." path=".." archive=".." recursive=".."/>`: a directory of the blade's
    /// archived tree (the latest archive unless one is named), from any node that holds it;
    /// answered by [`listing_to_payload`].
    Ls {
        /// The blade.
        blade: String,
        /// A directory (or file) relative to the backup root; empty for the root.
        path: String,
        /// The archive whose tree is read; the latest when absent.
        archive: Option<ArchiveRef>,
        /// Everything under the directory, at any depth, instead of its entries.
        recursive: bool,
    },
    /// `<cat blade=".." path=".." archive=".."/>`: one file of the blade's archived tree (the
    /// latest archive unless one is named); answered by [`file_to_payload`].
    Cat {
        /// The blade.
        blade: String,
        /// The file, relative to the backup root.
        path: String,
        /// The archive whose tree is read; the latest when absent.
        archive: Option<ArchiveRef>,
    },
    /// `<get-settings blade=".."/>`: a blade's backup settings, read on the node acting as it;
    /// answered by [`settings_to_payload`].
    GetSettings {
        /// The blade.
        blade: String,
    },
    /// `<configure blade="..">...</configure>`: change some of a blade's backup settings on the
    /// node acting as it; answered by [`settings_to_payload`] with the settings now in force.
    Configure(SettingsChange),
}

/// A change of a blade's backup settings: each field that is set replaces the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    /// The blade.
    pub blade: String,
    /// The backup root, an absolute directory on the blade's node.
    pub root: Option<String>,
    /// Holders besides the blade's own node.
    pub factor: Option<u64>,
    /// Directory names (or paths relative to the root) left out.
    pub exclude_dirs: Option<Vec<String>>,
    /// File extensions left out.
    pub exclude_exts: Option<Vec<String>>,
    /// Schedule rules (`hourly`, `daily HH:MM`, `weekly DAY HH:MM`, `every DURATION`).
    pub schedule: Option<Vec<String>>,
}

/// A blade's backup settings as its node applies them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BladeSettings {
    /// The blade.
    pub blade: String,
    /// The backup root; absent on a node that only holds others' data.
    pub root: Option<String>,
    /// Holders besides the blade's own node.
    pub factor: u64,
    /// Directory exclusions.
    pub exclude_dirs: Vec<String>,
    /// Extension exclusions.
    pub exclude_exts: Vec<String>,
    /// Schedule rules, in their written form.
    pub schedule: Vec<String>,
    /// `snapshot` or `delta` (from the config file only).
    pub method: String,
    /// Whether changes are backed up as they happen (from the config file only).
    pub continuous: bool,
}

/// The lists of settings payloads: (element, its items) in the order they are written.
const LISTS: [&str; 3] = ["exclude-dirs", "exclude-extensions", "schedule"];

fn push_list(s: &mut String, name: &str, items: &[String]) {
    s.push_str(&format!("<{name}>"));
    for i in items {
        s.push_str("<item>");
        xml::escape_text(s, i);
        s.push_str("</item>");
    }
    s.push_str(&format!("</{name}>"));
}

/// Reads the lists of a settings payload: each present at most once, `None` when absent.
fn read_lists(e: &Node, element: &str) -> Result<[Option<Vec<String>>; 3], ProtoError> {
    let mut out: [Option<Vec<String>>; 3] = Default::default();
    for c in children(e, element, &LISTS)? {
        let i = LISTS.iter().position(|l| *l == c.local).unwrap_or(0);
        if out[i].is_some() {
            return Err(ProtoError::invalid(element, format!("<{}> twice", c.local)));
        }
        let [] = attributes(c, &c.local, [])?;
        let mut items = Vec::new();
        for item in children(c, &c.local, &["item"])? {
            let [] = attributes(item, "item", [])?;
            items.push(text_content(item, "item")?);
        }
        out[i] = Some(items);
    }
    Ok(out)
}

/// The reply to [`BackupRequest::GetSettings`] and [`BackupRequest::Configure`].
pub fn settings_to_payload(b: &BladeSettings) -> Payload {
    let mut s = String::from("<blade-settings");
    attr(&mut s, "blade", &b.blade);
    if let Some(r) = &b.root {
        attr(&mut s, "root", r);
    }
    attr(&mut s, "factor", &b.factor.to_string());
    attr(&mut s, "method", &b.method);
    attr(
        &mut s,
        "continuous",
        if b.continuous { "true" } else { "false" },
    );
    attr(&mut s, "xmlns", BACKUP_NAMESPACE);
    s.push('>');
    for (name, items) in LISTS
        .iter()
        .zip([&b.exclude_dirs, &b.exclude_exts, &b.schedule])
    {
        push_list(&mut s, name, items);
    }
    s.push_str("</blade-settings>");
    Payload::trusted(s)
}

/// Reads [`settings_to_payload`]'s output.
pub fn settings_from_payload(payload: &Payload) -> Result<BladeSettings, ProtoError> {
    let root = named_element(payload, "blade-settings", BACKUP_NAMESPACE)?;
    let [blade, backup_root, factor, method, continuous] = attributes(
        &root,
        "blade-settings",
        ["blade", "root", "factor", "method", "continuous"],
    )?;
    let [dirs, exts, schedule] = read_lists(&root, "blade-settings")?;
    Ok(BladeSettings {
        blade: required("blade-settings/@blade", blade)?.to_owned(),
        root: backup_root.map(str::to_owned),
        factor: number("blade-settings/@factor", factor)?,
        exclude_dirs: dirs.unwrap_or_default(),
        exclude_exts: exts.unwrap_or_default(),
        schedule: schedule.unwrap_or_default(),
        method: required("blade-settings/@method", method)?.to_owned(),
        continuous: boolean("blade-settings/@continuous", continuous)?,
    })
}

/// One entry of a listing (`dcish ls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Path relative to the backup root.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch (0 before it).
    pub mtime: u64,
    /// Link target, for symlinks.
    pub target: Option<String>,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64, padded: file bodies travel as XML text, which cannot carry every byte.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads [`base64_encode`]'s output; `None` if it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for q in bytes.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &b) in q.iter().enumerate() {
            let v = match b {
                b'=' if i >= 2 => {
                    pad += 1;
                    0
                }
                _ if pad > 0 => return None,
                _ => B64.iter().position(|x| *x == b)? as u32,
            };
            n = n << 6 | v;
        }
        let got = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&got[..3 - pad]);
    }
    Some(out)
}

/// The reply to [`BackupRequest::Ls`].
pub fn listing_to_payload(entries: &[ListEntry]) -> Payload {
    let mut s = format!("<listing xmlns=\"{BACKUP_NAMESPACE}\">");
    push_entries(&mut s, entries);
    s.push_str("</listing>");
    Payload::trusted(s)
}

/// Appends one `<entry/>` per listing entry (the fs peerlet's answers use the same element).
pub(crate) fn push_entries(s: &mut String, entries: &[ListEntry]) {
    for e in entries {
        s.push_str("<entry");
        attr(s, "path", &e.path);
        attr(s, "kind", &e.kind);
        attr(s, "size", &e.size.to_string());
        attr(s, "mode", &e.mode.to_string());
        attr(s, "mtime", &e.mtime.to_string());
        if let Some(t) = &e.target {
            attr(s, "target", t);
        }
        s.push_str("/>");
    }
}

/// Reads one `<entry/>` written by [`push_entries`].
pub(crate) fn entry_from(e: &Node) -> Result<ListEntry, ProtoError> {
    let [path, kind, size, mode, mtime, target] = attributes(
        e,
        "entry",
        ["path", "kind", "size", "mode", "mtime", "target"],
    )?;
    no_content(e, "entry")?;
    Ok(ListEntry {
        path: required("entry/@path", path)?.to_owned(),
        kind: required("entry/@kind", kind)?.to_owned(),
        size: number("entry/@size", size)?,
        mode: u32::try_from(number("entry/@mode", mode)?)
            .map_err(|_| ProtoError::invalid("entry/@mode", "out of range"))?,
        mtime: number("entry/@mtime", mtime)?,
        target: target.map(str::to_owned),
    })
}

/// Reads [`listing_to_payload`]'s output.
pub fn listing_from_payload(payload: &Payload) -> Result<Vec<ListEntry>, ProtoError> {
    let root = named_element(payload, "listing", BACKUP_NAMESPACE)?;
    let [] = attributes(&root, "listing", [])?;
    children(&root, "listing", &["entry"])?
        .into_iter()
        .map(entry_from)
        .collect()
}

/// The reply to [`BackupRequest::Cat`]: the file's bytes, base64.
pub fn file_to_payload(path: &str, data: &[u8]) -> Payload {
    let mut s = String::from("<file");
    attr(&mut s, "path", path);
    attr(&mut s, "size", &data.len().to_string());
    attr(&mut s, "xmlns", BACKUP_NAMESPACE);
    s.push('>');
    s.push_str(&base64_encode(data));
    s.push_str("</file>");
    Payload::trusted(s)
}

/// Reads [`file_to_payload`]'s output; refuses a body whose length is not the stated size.
pub fn file_from_payload(payload: &Payload) -> Result<Vec<u8>, ProtoError> {
    let root = named_element(payload, "file", BACKUP_NAMESPACE)?;
    let [path, size] = attributes(&root, "file", ["path", "size"])?;
    required("file/@path", path)?;
    let size = number("file/@size", size)?;
    let data = base64_decode(&text_content(&root, "file")?)
        .ok_or_else(|| ProtoError::invalid("file", "the body is not base64"))?;
    if data.len() as u64 != size {
        return Err(ProtoError::invalid("file/@size", "does not match the body"));
    }
    Ok(data)
}

/// What to restore, where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreArgs {
    /// The blade whose archives are restored.
    pub blade: String,
    /// Restore sequentially up to and including this archive; the latest when absent.
    pub archive: Option<ArchiveRef>,
    /// Only paths matching one of these globs (relative to the backup root); all when empty.
    pub paths: Vec<String>,
    /// The directory to restore into, on the restoring node; its backup root when absent.
    pub to: Option<String>,
    /// The node (by name) that restores; the one asked when absent.
    pub on: Option<String>,
}

/// One archive as `dcish archives` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Its id within the blade.
    pub id: ArchiveId,
    /// When it was made, ms since the Unix epoch.
    pub time_ms: u64,
    /// One of [`KINDS`].
    pub kind: String,
    /// File bytes it lists.
    pub bytes: u64,
    /// Entries it lists.
    pub files: u64,
    /// Files skipped (unreadable or special).
    pub skipped: u64,
    /// Every holder acknowledged all of its blocks.
    pub complete: bool,
    /// Names of the nodes holding it.
    pub holders: Vec<String>,
    /// Names of chosen holders that still lack some of it.
    pub lacking: Vec<String>,
}

/// The result of a restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The node that restored.
    pub node: String,
    /// The directory restored into.
    pub target: String,
    /// Archives applied, in order.
    pub archives: u64,
    /// Entries written.
    pub entries: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Entries refused (paths that would leave the target, and the like).
    pub refused: u64,
}

/// Appends ` name="value"`, escaped.
pub(crate) fn attr(s: &mut String, name: &str, value: &str) {
    s.push(' ');
    s.push_str(name);
    s.push_str("=\"");
    xml::escape_attribute(s, value);
    s.push('"');
}

pub(crate) fn boolean(field: &'static str, value: Option<&str>) -> Result<bool, ProtoError> {
    match value {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(ProtoError::invalid(
            field,
            format!("{} is not true or false", shown(v)),
        )),
        None => Err(ProtoError::MissingField(field)),
    }
}

/// The children of `e`: elements of the backup namespace named in `names`.
fn children<'n>(e: &'n Node, element: &str, names: &[&str]) -> Result<Vec<&'n Node>, ProtoError> {
    children_in(e, element, names, BACKUP_NAMESPACE)
}

/// The children of `e`, which must all be elements of `namespace` named in `names`
/// (whitespace between them aside).
pub(crate) fn children_in<'n>(
    e: &'n Node,
    element: &str,
    names: &[&str],
    namespace: &str,
) -> Result<Vec<&'n Node>, ProtoError> {
    let mut out = Vec::new();
    for child in &e.children {
        match child {
            Child::Text(t) if t.bytes().all(xml::is_space) => {}
            Child::Text(_) => return Err(ProtoError::invalid(element, "text is not allowed here")),
            Child::Element(c)
                if names.contains(&c.local.as_str())
                    && c.namespace.as_deref() == Some(namespace) =>
            {
                out.push(c)
            }
            Child::Element(c) => {
                return Err(ProtoError::invalid(
                    element,
                    format!("unexpected <{}>", shown(&c.local)),
                ))
            }
        }
    }
    Ok(out)
}

impl BackupRequest {
    /// The request payload.
    pub fn to_payload(&self) -> Payload {
        let mut s = String::new();
        match self {
            BackupRequest::Now { blade, wait } => {
                s.push_str("<backup-now");
                if let Some(b) = blade {
                    attr(&mut s, "blade", b);
                }
                attr(&mut s, "wait", if *wait { "true" } else { "false" });
                attr(&mut s, "xmlns", BACKUP_NAMESPACE);
                s.push_str("/>");
            }
            BackupRequest::Ls {
                blade,
                path,
                archive,
                ..
            }
            | BackupRequest::Cat {
                blade,
                path,
                archive,
            } => {
                s.push_str(if matches!(self, BackupRequest::Ls { .. }) {
                    "<ls"
                } else {
                    "<cat"
                });
                attr(&mut s, "blade", blade);
                attr(&mut s, "path", path);
                if let Some(a) = archive {
                    attr(&mut s, "archive", &a.to_string());
                }
                if let BackupRequest::Ls {
                    recursive: true, ..
                } = self
                {
                    attr(&mut s, "recursive", "true");
                }
                attr(&mut s, "xmlns", BACKUP_NAMESPACE);
                s.push_str("/>");
            }
            BackupRequest::Archives { blade } => {
                s.push_str("<archives");
                attr(&mut s, "blade", blade);
                attr(&mut s, "xmlns", BACKUP_NAMESPACE);
                s.push_str("/>");
            }
            BackupRequest::Restore(r) => {
                s.push_str("<restore");
                attr(&mut s, "blade", &r.blade);
                if let Some(a) = r.archive {
                    attr(&mut s, "archive", &a.to_string());
                }
                if let Some(t) = &r.to {
                    attr(&mut s, "to", t);
                }
                if let Some(o) = &r.on {
                    attr(&mut s, "on", o);
                }
                attr(&mut s, "xmlns", BACKUP_NAMESPACE);
                s.push('>');
                for p in &r.paths {
                    s.push_str("<path>");
                    xml::escape_text(&mut s, p);
                    s.push_str("</path>");
                }
                s.push_str("</restore>");
            }
            BackupRequest::GetSettings { blade } => {
                s.push_str("<get-settings");
                attr(&mut s, "blade", blade);
                attr(&mut s, "xmlns", BACKUP_NAMESPACE);
                s.push_str("/>");
            }
            BackupRequest::Configure(c) => {
                s.push_str("<configure");
                attr(&mut s, "blade", &c.blade);
                if let Some(r) = &c.root {
                    attr(&mut s, "root", r);
                }
                if let Some(f) = c.factor {
                    attr(&mut s, "factor", &f.to_string());
                }
                attr(&mut s, "xmlns", BACKUP_NAMESPACE);
                s.push('>');
                for (name, items) in
                    LISTS
                        .iter()
                        .zip([&c.exclude_dirs, &c.exclude_exts, &c.schedule])
                {
                    if let Some(items) = items {
                        push_list(&mut s, name, items);
                    }
                }
                s.push_str("</configure>");
            }
        }
        Payload::trusted(s)
    }

    /// Reads a request: `None` when the payload is not in the backup namespace (another
    /// subsystem's command), else the command or why it is refused.
    pub fn from_payload(payload: &Payload) -> Option<Result<BackupRequest, ProtoError>> {
        if !payload.as_str().contains(BACKUP_NAMESPACE) {
            return None;
        }
        Some(Self::parse(payload))
    }

    fn parse(payload: &Payload) -> Result<BackupRequest, ProtoError> {
        let root = only_element(payload, "command", BACKUP_NAMESPACE)?;
        match root.local.as_str() {
            "backup-now" => {
                let [blade, wait] = attributes(&root, "backup-now", ["blade", "wait"])?;
                no_content(&root, "backup-now")?;
                Ok(BackupRequest::Now {
                    blade: blade.map(str::to_owned),
                    wait: boolean("backup-now/@wait", wait)?,
                })
            }
            "archives" => {
                let [blade] = attributes(&root, "archives", ["blade"])?;
                no_content(&root, "archives")?;
                Ok(BackupRequest::Archives {
                    blade: required("archives/@blade", blade)?.to_owned(),
                })
            }
            "ls" | "cat" => {
                let [blade, path, archive, recursive] =
                    attributes(&root, "ls", ["blade", "path", "archive", "recursive"])?;
                no_content(&root, "ls")?;
                let blade = required("ls/@blade", blade)?.to_owned();
                let path = path.unwrap_or_default().to_owned();
                let archive = archive.map(|a| archive_ref("ls/@archive", a)).transpose()?;
                Ok(if root.local == "ls" {
                    BackupRequest::Ls {
                        blade,
                        path,
                        archive,
                        recursive: recursive
                            .map(|r| boolean("ls/@recursive", Some(r)))
                            .transpose()?
                            .unwrap_or(false),
                    }
                } else if recursive.is_some() {
                    return Err(ProtoError::invalid("cat/@recursive", "unknown attribute"));
                } else {
                    BackupRequest::Cat {
                        blade,
                        path,
                        archive,
                    }
                })
            }
            "restore" => {
                let [blade, archive, to, on] =
                    attributes(&root, "restore", ["blade", "archive", "to", "on"])?;
                let mut paths = Vec::new();
                for p in children(&root, "restore", &["path"])? {
                    let [] = attributes(p, "path", [])?;
                    paths.push(text_content(p, "restore/path")?);
                }
                Ok(BackupRequest::Restore(RestoreArgs {
                    blade: required("restore/@blade", blade)?.to_owned(),
                    archive: archive
                        .map(|a| archive_ref("restore/@archive", a))
                        .transpose()?,
                    paths,
                    to: to.map(str::to_owned),
                    on: on.map(str::to_owned),
                }))
            }
            "get-settings" => {
                let [blade] = attributes(&root, "get-settings", ["blade"])?;
                no_content(&root, "get-settings")?;
                Ok(BackupRequest::GetSettings {
                    blade: required("get-settings/@blade", blade)?.to_owned(),
                })
            }
            "configure" => {
                let [blade, backup_root, factor] =
                    attributes(&root, "configure", ["blade", "root", "factor"])?;
                let [exclude_dirs, exclude_exts, schedule] = read_lists(&root, "configure")?;
                Ok(BackupRequest::Configure(SettingsChange {
                    blade: required("configure/@blade", blade)?.to_owned(),
                    root: backup_root.map(str::to_owned),
                    factor: factor
                        .map(|f| number("configure/@factor", Some(f)))
                        .transpose()?,
                    exclude_dirs,
                    exclude_exts,
                    schedule,
                }))
            }
            other => Err(ProtoError::invalid(
                "command",
                format!("unknown backup command <{}>", shown(other)),
            )),
        }
    }
}

fn archive_ref(field: &'static str, value: &str) -> Result<ArchiveRef, ProtoError> {
    value
        .parse()
        .map_err(|e: String| ProtoError::invalid(field, e))
}

/// The reply to [`BackupRequest::Archives`] and [`BackupRequest::Now`].
pub fn archives_to_payload(archives: &[ArchiveInfo]) -> Payload {
    let mut s = format!("<archive-list xmlns=\"{BACKUP_NAMESPACE}\">");
    for a in archives {
        s.push_str("<archive");
        attr(&mut s, "id", &a.id.to_string());
        attr(&mut s, "time", &a.time_ms.to_string());
        attr(&mut s, "kind", &a.kind);
        attr(&mut s, "bytes", &a.bytes.to_string());
        attr(&mut s, "files", &a.files.to_string());
        attr(&mut s, "skipped", &a.skipped.to_string());
        attr(
            &mut s,
            "complete",
            if a.complete { "true" } else { "false" },
        );
        s.push('>');
        for (tag, names) in [("holder", &a.holders), ("lacking", &a.lacking)] {
            for h in names {
                s.push_str(&format!("<{tag}>"));
                xml::escape_text(&mut s, h);
                s.push_str(&format!("</{tag}>"));
            }
        }
        s.push_str("</archive>");
    }
    s.push_str("</archive-list>");
    Payload::trusted(s)
}

/// Reads [`archives_to_payload`]'s output.
pub fn archives_from_payload(payload: &Payload) -> Result<Vec<ArchiveInfo>, ProtoError> {
    let root = named_element(payload, "archive-list", BACKUP_NAMESPACE)?;
    let [] = attributes(&root, "archive-list", [])?;
    children(&root, "archive-list", &["archive"])?
        .into_iter()
        .map(|a| {
            let [id, time, kind, bytes, files, skipped, complete] = attributes(
                a,
                "archive",
                [
                    "id", "time", "kind", "bytes", "files", "skipped", "complete",
                ],
            )?;
            let kind = required("archive/@kind", kind)?;
            if !KINDS.contains(&kind) {
                return Err(ProtoError::invalid(
                    "archive/@kind",
                    format!("{} is not a kind", shown(kind)),
                ));
            }
            let mut holders = Vec::new();
            let mut lacking = Vec::new();
            for c in children(a, "archive", &["holder", "lacking"])? {
                let name = text_content(c, "archive/holder")?;
                if c.local == "holder" {
                    holders.push(name);
                } else {
                    lacking.push(name);
                }
            }
            Ok(ArchiveInfo {
                id: required("archive/@id", id)?
                    .parse()
                    .map_err(|e: String| ProtoError::invalid("archive/@id", e))?,
                time_ms: number("archive/@time", time)?,
                kind: kind.to_owned(),
                bytes: number("archive/@bytes", bytes)?,
                files: number("archive/@files", files)?,
                skipped: number("archive/@skipped", skipped)?,
                complete: boolean("archive/@complete", complete)?,
                holders,
                lacking,
            })
        })
        .collect()
}

/// The reply to [`BackupRequest::Restore`].
pub fn restored_to_payload(r: &RestoreSummary) -> Payload {
    let mut s = String::from("<restored");
    attr(&mut s, "node", &r.node);
    attr(&mut s, "target", &r.target);
    attr(&mut s, "archives", &r.archives.to_string());
    attr(&mut s, "entries", &r.entries.to_string());
    attr(&mut s, "bytes", &r.bytes.to_string());
    attr(&mut s, "refused", &r.refused.to_string());
    attr(&mut s, "xmlns", BACKUP_NAMESPACE);
    s.push_str("/>");
    Payload::trusted(s)
}

/// Reads [`restored_to_payload`]'s output.
pub fn restored_from_payload(payload: &Payload) -> Result<RestoreSummary, ProtoError> {
    let root = named_element(payload, "restored", BACKUP_NAMESPACE)?;
    let [node, target, archives, entries, bytes, refused] = attributes(
        &root,
        "restored",
        ["node", "target", "archives", "entries", "bytes", "refused"],
    )?;
    no_content(&root, "restored")?;
    Ok(RestoreSummary {
        node: required("restored/@node", node)?.to_owned(),
        target: required("restored/@target", target)?.to_owned(),
        archives: number("restored/@archives", archives)?,
        entries: number("restored/@entries", entries)?,
        bytes: number("restored/@bytes", bytes)?,
        refused: number("restored/@refused", refused)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = [
            BackupRequest::Now {
                blade: None,
                wait: true,
            },
            BackupRequest::Now {
                blade: Some("b<1>".into()),
                wait: false,
            },
            BackupRequest::Archives { blade: "b1".into() },
            BackupRequest::Restore(RestoreArgs {
                blade: "b1".into(),
                archive: Some("3.7".parse().unwrap()),
                paths: vec!["docs/**".into(), "a&b".into()],
                to: Some("/tmp/x".into()),
                on: Some("n2".into()),
            }),
            BackupRequest::GetSettings { blade: "b1".into() },
            BackupRequest::Configure(SettingsChange {
                blade: "b1".into(),
                root: Some("/srv/<data>".into()),
                factor: Some(3),
                exclude_dirs: Some(vec!["tmp".into(), "a&b".into()]),
                exclude_exts: Some(Vec::new()),
                schedule: None,
            }),
            BackupRequest::Configure(SettingsChange {
                blade: "b1".into(),
                ..SettingsChange::default()
            }),
        ];
        for r in reqs {
            let p = r.to_payload();
            assert_eq!(BackupRequest::from_payload(&p).unwrap().unwrap(), r);
        }
    }

    #[test]
    fn base64_round_trips_every_length_and_refuses_garbage() {
        for n in 0..70u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert!(base64_decode("a=bc").is_none());
        assert!(base64_decode("abc").is_none());
        assert!(base64_decode("ab!c").is_none());
        let p = file_to_payload("x", b"\0\x01binary\xff");
        assert_eq!(file_from_payload(&p).unwrap(), b"\0\x01binary\xff");
        let e = ListEntry {
            path: "a/b".into(),
            kind: "symlink".into(),
            size: 0,
            mode: 0o777,
            mtime: 5,
            target: Some("../x".into()),
        };
        assert_eq!(
            listing_from_payload(&listing_to_payload(std::slice::from_ref(&e))).unwrap(),
            vec![e]
        );
        let ls = BackupRequest::Ls {
            blade: "b".into(),
            path: "docs".into(),
            archive: None,
            recursive: true,
        };
        assert_eq!(
            BackupRequest::from_payload(&ls.to_payload())
                .unwrap()
                .unwrap(),
            ls
        );
        let cat = BackupRequest::Cat {
            blade: "b".into(),
            path: "a".into(),
            archive: Some("3".parse().unwrap()),
        };
        assert_eq!(
            BackupRequest::from_payload(&cat.to_payload())
                .unwrap()
                .unwrap(),
            cat
        );
    }

    /// Every payload this module writes is valid under `proto/backup.xsd` (when xmllint exists).
    #[test]
    fn payloads_validate_against_the_schema() {
        let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/backup.xsd");
        let payloads = [
            BackupRequest::Now {
                blade: Some("b".into()),
                wait: false,
            }
            .to_payload(),
            BackupRequest::Archives { blade: "b".into() }.to_payload(),
            BackupRequest::Restore(RestoreArgs {
                blade: "b".into(),
                archive: Some("1".parse().unwrap()),
                paths: vec!["x/**".into()],
                to: Some("/t".into()),
                on: None,
            })
            .to_payload(),
            BackupRequest::Ls {
                blade: "b".into(),
                path: "d".into(),
                archive: Some("4.2".parse().unwrap()),
                recursive: true,
            }
            .to_payload(),
            file_to_payload("f", b"bytes"),
            restored_to_payload(&RestoreSummary::default()),
            BackupRequest::GetSettings { blade: "b".into() }.to_payload(),
            BackupRequest::Configure(SettingsChange {
                blade: "b".into(),
                root: Some("/r".into()),
                factor: Some(1),
                exclude_dirs: Some(vec!["tmp".into()]),
                exclude_exts: Some(vec!["mp3".into()]),
                schedule: Some(vec!["daily 02:00".into()]),
            })
            .to_payload(),
            settings_to_payload(&settings()),
        ];
        assert_valid(schema, &payloads);
    }

    /// Checks each payload against `schema` with xmllint, when this machine has it.
    pub(crate) fn assert_valid(schema: &str, payloads: &[Payload]) {
        use std::io::Write;
        use std::process::{Command, Stdio};
        for p in payloads {
            let Ok(mut child) = Command::new("xmllint")
                .args(["--noout", "--schema", schema, "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
            else {
                return; // no xmllint here
            };
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(p.as_str().as_bytes()).unwrap();
            }
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                p.as_str(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn settings() -> BladeSettings {
        BladeSettings {
            blade: "b".into(),
            root: Some("/srv/b".into()),
            factor: 2,
            exclude_dirs: vec!["tmp".into()],
            exclude_exts: vec!["mp3".into(), "iso".into()],
            schedule: vec!["every 3600s".into()],
            method: "delta".into(),
            continuous: false,
        }
    }

    #[test]
    fn settings_round_trip_and_a_list_given_twice_is_refused() {
        let b = settings();
        assert_eq!(settings_from_payload(&settings_to_payload(&b)).unwrap(), b);
        let twice = Payload::new(format!(
            "<configure xmlns=\"{BACKUP_NAMESPACE}\" blade=\"b\"><schedule/><schedule/></configure>"
        ))
        .unwrap();
        assert!(BackupRequest::from_payload(&twice).unwrap().is_err());
    }

    #[test]
    fn replies_round_trip() {
        let a = ArchiveInfo {
            id: ArchiveId {
                epoch: 4,
                number: 2,
            },
            time_ms: 5,
            kind: "delta".into(),
            bytes: 10,
            files: 3,
            skipped: 1,
            complete: false,
            holders: vec!["n1".into()],
            lacking: vec!["n2".into()],
        };
        let got = archives_from_payload(&archives_to_payload(std::slice::from_ref(&a))).unwrap();
        assert_eq!(got, vec![a]);
        let r = RestoreSummary {
            node: "n".into(),
            target: "/t".into(),
            archives: 2,
            entries: 3,
            bytes: 4,
            refused: 0,
        };
        assert_eq!(restored_from_payload(&restored_to_payload(&r)).unwrap(), r);
    }

    #[test]
    fn foreign_and_malformed_commands_are_told_apart() {
        let nodes = crate::control::ControlRequest::Nodes.to_payload();
        assert!(BackupRequest::from_payload(&nodes).is_none());
        let bad = Payload::new(format!(
            "<backup-now xmlns=\"{BACKUP_NAMESPACE}\" wait=\"maybe\"/>"
        ))
        .unwrap();
        assert!(BackupRequest::from_payload(&bad).unwrap().is_err());
        let unknown = Payload::new(format!("<format-disk xmlns=\"{BACKUP_NAMESPACE}\"/>")).unwrap();
        assert!(BackupRequest::from_payload(&unknown).unwrap().is_err());
    }
}
