//! The mesh's files as one tree: `ls`, `cd`, `pwd`, `cat`, `get`, `put`, `find` and `du` over
//! two branches:
//!
//! - `/blades/<blade>/<export>/...`: the folders each blade exports (`[fs] export`), served by
//!   its `fs` peerlet;
//! - `/archives/<blade>/<archive>/...`: a blade's archived trees (`<archive>` is an id or
//!   `latest`), served by any node holding them.
//!
//! Paths are relative to the session's working directory (`cd`), which lasts for a prompt or a
//! script; `.` and `..` are resolved here, on the tree's names, so a `..` never reaches a blade
//! (which refuses one anyway). Files travel in chunks of [`MAX_CHUNK`] bytes, one request each;
//! large copies show their progress on standard error when it is a terminal.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use dci_proto::archive::ArchiveRef;
use dci_proto::backup::ListEntry;
use dci_proto::control::{members_from_payload, ControlRequest};
use dci_proto::fs::{
    chunk_from_payload, entries_from_payload, exports_from_payload, usage_from_payload,
    written_from_payload, FsRequest, Usage, MAX_CHUNK, MAX_FIND,
};
use dci_proto::{Destination, Envelope, Kind, Payload, Target};
use serde_json::json;

use super::backup;
use super::client::{Client, ClientError};
use super::msg::{answers_of, operator, usage};
use super::nodeset;
use crate::router::core::NODE_SET_PREFIX;

/// What a session remembers between commands.
#[derive(Debug, Clone)]
pub struct Session {
    /// The working directory, absolute and normalized.
    pub cwd: String,
}

impl Default for Session {
    fn default() -> Self {
        Session { cwd: "/".into() }
    }
}

/// `dcish get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The file in the tree; with `--from`, `EXPORT/PATH` on each blade of the set.
    pub remote: String,
    /// Where to write it; a directory keeps the remote name; `-` is standard output. With
    /// `--from`, a directory that gets each blade's copy as `NAME.BLADE`.
    pub local: PathBuf,
    /// Copy from every blade of this node set instead (`b[1-3]`, `@active`, ...).
    #[arg(long, value_name = "SET")]
    pub from: Option<String>,
}

/// `dcish put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The local file.
    pub local: PathBuf,
    /// Where in the tree (`/blades/B/EXPORT/PATH`); with `--to`, `EXPORT/PATH` on each blade of
    /// the set. A trailing `/` keeps the local name.
    pub remote: String,
    /// Copy to every blade of this node set instead (`b[1-3]`, `@active`, ...).
    #[arg(long, value_name = "SET")]
    pub to: Option<String>,
}

/// `dcish find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// Where to look [default: the working directory].
    pub path: Option<String>,
    /// Only names matching this pattern (`*` and `?`).
    #[arg(long)]
    pub name: Option<String>,
    /// The most entries printed.
    #[arg(long, default_value_t = 1000)]
    pub max: u64,
}

/// A place in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Root,
    Blades,
    Blade(String),
    Export {
        blade: String,
        export: String,
        path: String,
    },
    Archives,
    ArchiveBlade(String),
    Archive {
        blade: String,
        archive: Option<ArchiveRef>,
        path: String,
    },
}

/// `path` made absolute against `cwd`, with `.`, `..` and empty components resolved.
fn normalize(cwd: &str, path: &str) -> Result<String, ClientError> {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{cwd}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(usage(format!("{path}: `..` climbs above /")));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn place(abs: &str) -> Result<Place, ClientError> {
    let parts: Vec<&str> = abs.split('/').filter(|c| !c.is_empty()).collect();
    let rest = |n: usize| parts.get(n..).unwrap_or_default().join("/");
    Ok(match parts.as_slice() {
        [] => Place::Root,
        ["blades"] => Place::Blades,
        ["blades", b] => Place::Blade((*b).into()),
        ["blades", b, e, ..] => Place::Export {
            blade: (*b).into(),
            export: (*e).into(),
            path: rest(3),
        },
        ["archives"] => Place::Archives,
        ["archives", b] => Place::ArchiveBlade((*b).into()),
        ["archives", b, a, ..] => Place::Archive {
            blade: (*b).into(),
            archive: match *a {
                "latest" => None,
                id => Some(id.parse().map_err(|_: String| {
                    usage(format!(
                        "{abs}: an archive is an id (EPOCH.NUMBER, or NUMBER) or `latest`, not {id:?}"
                    ))
                })?),
            },
            path: rest(3),
        },
        [top, ..] => {
            return Err(usage(format!(
                "no {abs}: the tree holds /blades and /archives, not /{top}"
            )))
        }
    })
}

fn resolve(session: &Session, path: Option<&str>) -> Result<(String, Place), ClientError> {
    let abs = normalize(&session.cwd, path.unwrap_or("."))?;
    let p = place(&abs)?;
    Ok((abs, p))
}

/// A local file's error, as one line.
fn local_error(path: &Path, e: std::io::Error) -> ClientError {
    ClientError::Refused {
        code: "local".into(),
        message: format!("{}: {e}", path.display()),
    }
}

fn protocol(e: dci_proto::ProtoError) -> ClientError {
    ClientError::Refused {
        code: "bad-answer".into(),
        message: e.to_string(),
    }
}

/// The fs request `req` to each of `blades` (one request to the set); what each answered, by
/// blade. A blade that did not answer in time is reported as such.
async fn ask_all(
    client: &mut Client,
    blades: &[String],
    req: &FsRequest,
) -> Result<BTreeMap<String, Result<Payload, ClientError>>, ClientError> {
    let to = match blades {
        [one] => Destination::Blade(one.clone()),
        _ => Destination::Group(format!("{NODE_SET_PREFIX}{}", blades.join(","))),
    };
    let env = Envelope::request(
        operator(),
        Target {
            to,
            app: Some(dci_peerlet_fs::APP.into()),
            instance: None,
        },
        req.to_payload(),
    );
    let (_, answers) = answers_of(client, &env).await?;
    let mut out = BTreeMap::new();
    for a in answers {
        let who = a.sender.blade.clone().unwrap_or(a.sender.node.clone());
        let result = if a.kind == Kind::Error {
            let (code, message) = dci_proto::control::error_from_payload(&a.payload)
                .unwrap_or_else(|| ("error".into(), a.payload.as_str().to_owned()));
            // The peerlet's refusals name the blade; a router's already say what is wrong.
            let message = if a.sender.app == dci_peerlet_fs::APP {
                format!("{who}: {message}")
            } else {
                message
            };
            Err(ClientError::Refused { code, message })
        } else {
            Ok(a.payload)
        };
        // A lone blade's refusal may come from a router that knows no such blade.
        let key = if blades.len() == 1 {
            blades[0].clone()
        } else {
            who
        };
        out.insert(key, result);
    }
    for b in blades {
        out.entry(b.clone()).or_insert_with(|| {
            Err(ClientError::Refused {
                code: "no-answer".into(),
                message: format!("{b} did not answer in time"),
            })
        });
    }
    Ok(out)
}

/// The fs request `req` to one blade; its answer.
async fn ask(client: &mut Client, blade: &str, req: &FsRequest) -> Result<Payload, ClientError> {
    let blades = [blade.to_owned()];
    ask_all(client, &blades, req)
        .await?
        .remove(blade)
        .unwrap_or_else(|| Err(usage(format!("{blade} did not answer"))))
}

/// The names of the members the mesh knows (and of the blades they hold), sorted.
async fn blade_names(client: &mut Client) -> Result<Vec<String>, ClientError> {
    let payload = client.request(ControlRequest::Nodes.to_payload()).await?;
    let mut names: Vec<String> = members_from_payload(&payload)
        .map_err(protocol)?
        .into_iter()
        .filter(|m| m.state != "left")
        .flat_map(|m| std::iter::once(m.name).chain(m.blade.map(|(b, _)| b)))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn dir_entry(name: &str) -> ListEntry {
    ListEntry {
        path: name.into(),
        kind: "dir".into(),
        size: 0,
        mode: 0o555,
        mtime: 0,
        target: None,
    }
}

/// The entries of a place that is a directory (or the file it names), and whether the blade
/// cut the list short.
async fn list(client: &mut Client, p: &Place) -> Result<(Vec<ListEntry>, bool), ClientError> {
    let entries = match p {
        Place::Root => vec![dir_entry("archives"), dir_entry("blades")],
        Place::Blades | Place::Archives => blade_names(client)
            .await?
            .iter()
            .map(|b| dir_entry(b))
            .collect(),
        Place::Blade(blade) => {
            let payload = ask(client, blade, &FsRequest::Exports).await?;
            exports_from_payload(&payload)
                .map_err(protocol)?
                .into_iter()
                .map(|e| ListEntry {
                    mode: if e.writable { 0o755 } else { 0o555 },
                    ..dir_entry(&e.name)
                })
                .collect()
        }
        Place::Export {
            blade,
            export,
            path,
        } => {
            let req = FsRequest::List {
                export: export.clone(),
                path: path.clone(),
            };
            return entries_from_payload(&ask(client, blade, &req).await?).map_err(protocol);
        }
        Place::ArchiveBlade(blade) => {
            let mut entries: Vec<ListEntry> = backup::archive_list(client, blade)
                .await?
                .iter()
                .map(|a| ListEntry {
                    size: a.bytes,
                    mtime: a.time_ms / 1000,
                    ..dir_entry(&a.id.to_string())
                })
                .collect();
            if !entries.is_empty() {
                entries.push(dir_entry("latest"));
            }
            entries
        }
        Place::Archive {
            blade,
            archive,
            path,
        } => backup::ls(client, blade, path, *archive, false).await?,
    };
    Ok((entries, false))
}

/// The names in the directory `dir` (relative to the session's working directory), a
/// directory's with a `/` after it: what Tab offers for a path at the prompt.
pub async fn names_in(
    client: &mut Client,
    session: &Session,
    dir: &str,
) -> Result<Vec<String>, ClientError> {
    let (_, p) = resolve(session, Some(dir))?;
    let (entries, _) = list(client, &p).await?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let name = e.path.rsplit('/').next().unwrap_or_default();
            if e.kind == "dir" {
                format!("{name}/")
            } else {
                name.to_owned()
            }
        })
        .collect())
}

/// `dcish ls [PATH]`.
pub async fn ls(
    client: &mut Client,
    session: &Session,
    path: Option<&str>,
    json: bool,
) -> Result<String, ClientError> {
    let (_, p) = resolve(session, path)?;
    let (entries, truncated) = list(client, &p).await?;
    if json {
        return Ok(backup::listing_json(&entries));
    }
    let mut text = backup::listing_text(&entries);
    if truncated {
        text.push_str(&format!(
            "\n(cut at {} entries to fit one answer; narrow it with find --name)",
            entries.len()
        ));
    }
    Ok(text)
}

/// `dcish cd [PATH]`: moves the session's working directory to a directory that exists.
pub async fn cd(
    client: &mut Client,
    session: &mut Session,
    path: Option<&str>,
) -> Result<(), ClientError> {
    let (abs, p) = resolve(session, Some(path.unwrap_or("/")))?;
    match &p {
        Place::Export {
            blade,
            export,
            path,
        } => {
            let req = FsRequest::Stat {
                export: export.clone(),
                path: path.clone(),
            };
            let (entries, _) =
                entries_from_payload(&ask(client, blade, &req).await?).map_err(protocol)?;
            if entries.first().is_none_or(|e| e.kind != "dir") {
                return Err(usage(format!("{abs} is not a directory")));
            }
        }
        _ => {
            list(client, &p).await?;
        }
    }
    session.cwd = abs;
    Ok(())
}

/// Shows a copy's progress on standard error when it is a terminal and the copy is large.
struct Progress {
    name: String,
    total: u64,
    shown: bool,
}

impl Progress {
    fn new(name: &str, total: u64) -> Progress {
        Progress {
            name: name.into(),
            total,
            shown: total > MAX_CHUNK && std::io::stderr().is_terminal(),
        }
    }

    fn at(&self, done: u64) {
        if self.shown {
            let pct = (done * 100).checked_div(self.total).unwrap_or(100);
            eprint!(
                "\r{}: {} of {} ({pct}%)",
                self.name,
                backup::bytes(done),
                backup::bytes(self.total)
            );
            if done >= self.total {
                eprintln!();
            }
        }
    }
}

/// Copies a file of the tree into `out` (named `to` in errors), chunk by chunk; returns its size.
async fn read_into(
    client: &mut Client,
    abs: &str,
    p: &Place,
    out: &mut dyn Write,
    to: &Path,
) -> Result<u64, ClientError> {
    let local = |e: std::io::Error| local_error(to, e);
    match p {
        Place::Export {
            blade,
            export,
            path,
        } => {
            let mut offset = 0;
            let mut progress: Option<Progress> = None;
            loop {
                let req = FsRequest::Read {
                    export: export.clone(),
                    path: path.clone(),
                    offset,
                    length: MAX_CHUNK,
                };
                let chunk =
                    chunk_from_payload(&ask(client, blade, &req).await?).map_err(protocol)?;
                let progress = progress.get_or_insert_with(|| Progress::new(abs, chunk.total));
                out.write_all(&chunk.data).map_err(local)?;
                offset += chunk.data.len() as u64;
                progress.at(offset);
                if chunk.data.is_empty() || offset >= chunk.total {
                    return Ok(offset);
                }
            }
        }
        Place::Archive {
            blade,
            archive,
            path,
        } => {
            let data = backup::cat(client, blade, path, *archive).await?;
            out.write_all(&data).map_err(local)?;
            Ok(data.len() as u64)
        }
        _ => Err(usage(format!("{abs} is a directory, not a file"))),
    }
}

/// `dcish cat PATH`: the file's bytes on standard output.
pub async fn cat(client: &mut Client, session: &Session, path: &str) -> Result<(), ClientError> {
    let (abs, p) = resolve(session, Some(path))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    read_into(client, &abs, &p, &mut out, Path::new("standard output")).await?;
    out.flush()
        .map_err(|e| local_error(Path::new("standard output"), e))
}

/// `dcish get REMOTE LOCAL`: written beside the target, then renamed into place.
pub async fn get(
    client: &mut Client,
    session: &Session,
    args: &GetArgs,
    json: bool,
) -> Result<String, ClientError> {
    if let Some(set) = &args.from {
        return get_from_set(client, set, args, json).await;
    }
    let (abs, p) = resolve(session, Some(&args.remote))?;
    if args.local == Path::new("-") {
        cat(client, session, &args.remote).await?;
        return Ok(String::new());
    }
    let name = abs.rsplit('/').next().unwrap_or_default();
    let target = if args.local.is_dir() {
        args.local.join(name)
    } else {
        args.local.clone()
    };
    let part = target.with_file_name(format!(
        ".{}.dcish-part",
        target.file_name().unwrap_or_default().to_string_lossy()
    ));
    let local = |e: std::io::Error| local_error(&target, e);
    let mut file = std::fs::File::create(&part).map_err(local)?;
    let copied = read_into(client, &abs, &p, &mut file, &target).await;
    let size = match copied {
        Ok(size) => size,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    file.sync_all().map_err(local)?;
    std::fs::rename(&part, &target).map_err(local)?;
    Ok(if json {
        json!({"from": abs, "to": target, "bytes": size}).to_string()
    } else {
        format!("{abs} -> {} ({})", target.display(), backup::bytes(size))
    })
}

/// `dcish put LOCAL REMOTE [--to SET]`: the file in chunks to each blade, which puts it in place
/// atomically with the last chunk. A blade that refuses a chunk is left out of the next ones.
pub async fn put(
    client: &mut Client,
    session: &Session,
    args: &PutArgs,
    json: bool,
) -> Result<String, ClientError> {
    let local_name = args
        .local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let remote = if args.remote.ends_with('/') {
        format!("{}{local_name}", args.remote)
    } else {
        args.remote.clone()
    };
    let (blades, export, path) = match &args.to {
        Some(set) => {
            let (export, path) = export_path(&remote)?;
            (set_names(client, set).await?, export, path)
        }
        None => match resolve(session, Some(&remote))?.1 {
            Place::Export {
                blade,
                export,
                path,
            } => (vec![blade], export, path),
            _ => {
                return Err(usage(format!(
                    "{remote}: files are written under /blades/<blade>/<export>/"
                )))
            }
        },
    };
    if blades.is_empty() || export.is_empty() || path.is_empty() {
        return Err(usage(format!(
            "{remote}: name a blade, an export and a file (e.g. /blades/b1/up/file)"
        )));
    }
    let local = |e: std::io::Error| local_error(&args.local, e);
    let mut file = std::fs::File::open(&args.local).map_err(local)?;
    let total = file.metadata().map_err(local)?.len();
    let shown = format!("{}:{export}/{path}", nodeset::fold(&blades));
    let progress = Progress::new(&shown, total);
    let upload = uuid::Uuid::new_v4().to_string();
    let mut failed: BTreeMap<String, ClientError> = BTreeMap::new();
    let mut live = blades.clone();
    let mut offset = 0u64;
    let mut buf = vec![0u8; MAX_CHUNK as usize];
    loop {
        let n = read_full(&mut file, &mut buf).map_err(local)?;
        let last = n < buf.len() || offset + n as u64 >= total;
        let req = FsRequest::Write {
            export: export.clone(),
            path: path.clone(),
            upload: upload.clone(),
            offset,
            last,
            data: buf[..n].to_vec(),
        };
        for (blade, answer) in ask_all(client, &live, &req).await? {
            let checked = answer.and_then(|p| written_from_payload(&p).map_err(protocol));
            if let Err(e) = checked {
                failed.insert(blade, e);
            }
        }
        live.retain(|b| !failed.contains_key(b));
        offset += n as u64;
        progress.at(offset);
        if last || live.is_empty() {
            break;
        }
    }
    let text = if json {
        let rows: Vec<serde_json::Value> = blades
            .iter()
            .map(|b| json!({"blade": b, "export": export, "path": path, "bytes": offset, "error": failed.get(b).map(|e| e.to_string())}))
            .collect();
        serde_json::to_string_pretty(&rows).unwrap_or_default()
    } else if !live.is_empty() {
        format!(
            "{} -> {}:{export}/{path} ({})",
            args.local.display(),
            nodeset::fold(&live),
            backup::bytes(offset)
        )
    } else {
        String::new()
    };
    if args.to.is_none() {
        // One blade: its refusal is the whole story.
        if let Some((_, e)) = failed.pop_first() {
            return Err(e);
        }
    }
    outcome("put", text, failed, blades.len(), json)
}

/// The result of a copy to or from several blades: `text` when none failed; else `text` and each
/// failure printed, and an error naming the blades that failed.
fn outcome(
    what: &str,
    text: String,
    failed: BTreeMap<String, ClientError>,
    blades: usize,
    json: bool,
) -> Result<String, ClientError> {
    if failed.is_empty() {
        return Ok(text);
    }
    let mut out = std::io::stdout().lock();
    if !text.is_empty() {
        let _ = writeln!(out, "{text}");
    }
    if !json {
        for e in failed.values() {
            let _ = writeln!(out, "{e}");
        }
    }
    let names: Vec<String> = failed.keys().cloned().collect();
    Err(ClientError::Refused {
        code: what.into(),
        message: format!(
            "{} of {blades} blade(s) failed: {}",
            failed.len(),
            nodeset::fold(&names)
        ),
    })
}

/// The members a node set names, resolved against the member table.
async fn set_names(client: &mut Client, set: &str) -> Result<Vec<String>, ClientError> {
    let payload = client.request(ControlRequest::Nodes.to_payload()).await?;
    let candidates: Vec<nodeset::Candidate> = members_from_payload(&payload)
        .map_err(protocol)?
        .into_iter()
        .filter(|m| m.state != "left")
        .map(|m| nodeset::Candidate {
            name: m.name,
            role: m.role,
            zone: m.zone,
        })
        .collect();
    nodeset::resolve(set, None, &candidates).map_err(|e| usage(e.to_string()))
}

/// `EXPORT/PATH` (as `--to` and `--from` take it) split into the export and the path in it.
fn export_path(remote: &str) -> Result<(String, String), ClientError> {
    let abs = normalize("/", remote)?;
    let mut parts = abs.trim_start_matches('/').splitn(2, '/');
    let export = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    Ok((export, path))
}

/// `get EXPORT/PATH DIR --from SET`: each blade's copy of the file into DIR as `NAME.BLADE` (as
/// `rpdcp` does), one request per chunk to the blades still reading.
async fn get_from_set(
    client: &mut Client,
    set: &str,
    args: &GetArgs,
    json: bool,
) -> Result<String, ClientError> {
    let (export, path) = export_path(&args.remote)?;
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    if export.is_empty() || name.is_empty() {
        return Err(usage(format!(
            "{}: with --from, give EXPORT/PATH of a file",
            args.remote
        )));
    }
    if !args.local.is_dir() {
        return Err(usage(format!(
            "{}: with --from, LOCAL is a directory (each blade's copy is NAME.BLADE)",
            args.local.display()
        )));
    }
    let blades = set_names(client, set).await?;
    let mut copies: BTreeMap<String, (PathBuf, std::fs::File, u64)> = BTreeMap::new();
    for b in &blades {
        let part = args.local.join(format!(".{name}.{b}.dcish-part"));
        let file = std::fs::File::create(&part).map_err(|e| local_error(&part, e))?;
        copies.insert(b.clone(), (part, file, 0));
    }
    let mut failed: BTreeMap<String, ClientError> = BTreeMap::new();
    let mut live = blades.clone();
    let mut offset = 0u64;
    while !live.is_empty() {
        let req = FsRequest::Read {
            export: export.clone(),
            path: path.clone(),
            offset,
            length: MAX_CHUNK,
        };
        let mut done = Vec::new();
        for (blade, answer) in ask_all(client, &live, &req).await? {
            let Some((part, file, size)) = copies.get_mut(&blade) else {
                continue;
            };
            let written = answer
                .and_then(|p| chunk_from_payload(&p).map_err(protocol))
                .and_then(|c| {
                    file.write_all(&c.data).map_err(|e| local_error(part, e))?;
                    *size += c.data.len() as u64;
                    Ok((c.data.len() as u64) < MAX_CHUNK || *size >= c.total)
                });
            match written {
                Ok(true) => done.push(blade),
                Ok(false) => {}
                Err(e) => {
                    failed.insert(blade, e);
                }
            }
        }
        live.retain(|b| !failed.contains_key(b) && !done.contains(b));
        offset += MAX_CHUNK;
    }
    let mut rows = Vec::new();
    for (blade, (part, file, size)) in copies {
        if failed.contains_key(&blade) {
            let _ = std::fs::remove_file(&part);
            continue;
        }
        let target = args.local.join(format!("{name}.{blade}"));
        file.sync_all().map_err(|e| local_error(&part, e))?;
        std::fs::rename(&part, &target).map_err(|e| local_error(&target, e))?;
        rows.push((blade, target, size));
    }
    let text = if json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|(b, t, n)| json!({"blade": b, "to": t, "bytes": n}))
            .collect();
        serde_json::to_string_pretty(&rows).unwrap_or_default()
    } else {
        rows.iter()
            .map(|(b, t, n)| {
                format!(
                    "{b}:{export}/{path} -> {} ({})",
                    t.display(),
                    backup::bytes(*n)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    outcome("get", text, failed, blades.len(), json)
}

/// Fills `buf` from `r` as far as the file goes; how many bytes it holds.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Everything under an archived path, at any depth, with tree paths.
async fn archived_under(
    client: &mut Client,
    blade: &str,
    archive: Option<ArchiveRef>,
    path: &str,
) -> Result<Vec<ListEntry>, ClientError> {
    let mut entries = backup::ls(client, blade, path, archive, true).await?;
    let id = archive.map_or("latest".to_string(), |a| a.to_string());
    for e in &mut entries {
        e.path = format!("/archives/{blade}/{id}/{}", e.path);
    }
    Ok(entries)
}

fn nowhere_to_search(abs: &str) -> ClientError {
    usage(format!(
        "{abs}: find and du work inside /blades/<blade>/<export> or /archives/<blade>/<archive>"
    ))
}

/// `dcish find [PATH] [--name GLOB] [--max N]`: one path of the tree per line.
pub async fn find(
    client: &mut Client,
    session: &Session,
    args: &FindArgs,
    json: bool,
) -> Result<String, ClientError> {
    if args.max == 0 || args.max > MAX_FIND {
        return Err(usage(format!("--max must be between 1 and {MAX_FIND}")));
    }
    let (abs, p) = resolve(session, args.path.as_deref())?;
    let (mut entries, truncated) = match p {
        Place::Export {
            blade,
            export,
            path,
        } => {
            let req = FsRequest::Find {
                export: export.clone(),
                path,
                name: args.name.clone(),
                max: args.max,
            };
            let (mut entries, truncated) =
                entries_from_payload(&ask(client, &blade, &req).await?).map_err(protocol)?;
            for e in &mut entries {
                e.path = format!("/blades/{blade}/{export}/{}", e.path);
            }
            (entries, truncated)
        }
        // An archive's tree is read whole by the agent: the match is made here.
        Place::Archive {
            blade,
            archive,
            path,
        } => {
            let mut hits: Vec<ListEntry> = archived_under(client, &blade, archive, &path)
                .await?
                .into_iter()
                .filter(|e| {
                    let base = e.path.rsplit('/').next().unwrap_or_default();
                    args.name
                        .as_ref()
                        .is_none_or(|n| dci_peerlet_fs::glob(n.as_bytes(), base.as_bytes()))
                })
                .collect();
            let truncated = hits.len() as u64 > args.max;
            hits.truncate(args.max as usize);
            (hits, truncated)
        }
        _ => return Err(nowhere_to_search(&abs)),
    };
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if json {
        return Ok(backup::listing_json(&entries));
    }
    let mut lines: Vec<String> = entries.iter().map(|e| e.path.clone()).collect();
    if truncated {
        lines.push(format!(
            "(stopped at {} entries: raise --max or narrow --name)",
            entries.len()
        ));
    }
    Ok(lines.join("\n"))
}

/// `dcish du [PATH]`: bytes, files and directories under a path.
pub async fn du(
    client: &mut Client,
    session: &Session,
    path: Option<&str>,
    json: bool,
) -> Result<String, ClientError> {
    let (abs, p) = resolve(session, path)?;
    let u = match p {
        Place::Export {
            blade,
            export,
            path,
        } => usage_from_payload(&ask(client, &blade, &FsRequest::Du { export, path }).await?)
            .map_err(protocol)?,
        Place::Archive {
            blade,
            archive,
            path,
        } => {
            let entries = archived_under(client, &blade, archive, &path).await?;
            // A file's listing is the file itself; a directory's holds what is under it.
            let is_file = matches!(entries.as_slice(), [e] if e.path == abs && e.kind != "dir");
            let mut u = Usage {
                dirs: u64::from(!is_file),
                ..Usage::default()
            };
            for e in &entries {
                match e.kind.as_str() {
                    "dir" => u.dirs += 1,
                    "file" => {
                        u.files += 1;
                        u.bytes += e.size;
                    }
                    _ => {}
                }
            }
            u
        }
        _ => return Err(nowhere_to_search(&abs)),
    };
    Ok(if json {
        json!({"path": abs, "bytes": u.bytes, "files": u.files, "dirs": u.dirs, "truncated": u.truncated}).to_string()
    } else {
        format!(
            "{}  {} files  {} dirs  {abs}{}",
            backup::bytes(u.bytes),
            u.files,
            u.dirs,
            if u.truncated { " (stopped early)" } else { "" }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_resolved_against_the_working_directory() {
        assert_eq!(
            normalize("/blades/b1", "logs/./a").unwrap(),
            "/blades/b1/logs/a"
        );
        assert_eq!(normalize("/blades/b1/logs", "..").unwrap(), "/blades/b1");
        assert_eq!(
            normalize("/blades", "/archives//b1/").unwrap(),
            "/archives/b1"
        );
        assert!(normalize("/", "../x").is_err());
        assert_eq!(
            place("/archives/b1/latest/etc/x").unwrap(),
            Place::Archive {
                blade: "b1".into(),
                archive: None,
                path: "etc/x".into()
            }
        );
        assert_eq!(
            place("/blades/b1/logs").unwrap(),
            Place::Export {
                blade: "b1".into(),
                export: "logs".into(),
                path: String::new()
            }
        );
        assert!(place("/etc/passwd").is_err());
        assert!(place("/archives/b1/x7").is_err());
        assert_eq!(
            place("/archives/b1/3.12/etc").unwrap(),
            Place::Archive {
                blade: "b1".into(),
                archive: Some("3.12".parse().unwrap()),
                path: "etc".into()
            }
        );
    }
}
