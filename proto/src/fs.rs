//! Payloads of the `fs` peerlet (namespace [`FS_NAMESPACE`], `proto/fs.xsd`): the folders a blade
//! exports, read and written by `dcish` over the mesh.
//!
//! Every request names an export and a path relative to it (`/`-separated, no `..`). File bodies
//! travel as base64 text in chunks of at most [`MAX_CHUNK`] bytes, so that one chunk and its
//! envelope stay under the default envelope limit. Parsing is as strict as the control
//! payloads': one element, the declared attributes and children, nothing else.

pub use crate::backup::ListEntry;
use crate::backup::{attr, base64_decode, base64_encode, boolean, entry_from, push_entries};
use crate::control::{
    attributes, named_element, no_content, number, only_element, required, text_content,
};
use crate::error::shown;
use crate::xml::{Child, Node};
use crate::{Payload, ProtoError};

/// The namespace of fs payloads; the version is part of it.
pub const FS_NAMESPACE: &str = "urn:dci:fs:1";
/// The most file bytes one read answer or one write request carries (base64 makes it 4/3 of
/// this on the wire, well under the 1 MiB envelope).
pub const MAX_CHUNK: u64 = 512 << 10;
/// The most entries one `find` answers with.
pub const MAX_FIND: u64 = 10_000;

/// A request to the fs peerlet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsRequest {
    /// `<exports/>`: the exported folders, answered by [`exports_to_payload`].
    Exports,
    /// `<list export path/>`: a directory's entries (or a file's own), answered by
    /// [`entries_to_payload`].
    List {
        /// The export's name.
        export: String,
        /// Relative to the export; empty for its root.
        path: String,
    },
    /// `<stat export path/>`: one entry, answered by [`entries_to_payload`].
    Stat {
        /// The export's name.
        export: String,
        /// Relative to the export.
        path: String,
    },
    /// `<read export path offset length/>`: at most `length` bytes from `offset`, answered by
    /// [`chunk_to_payload`].
    Read {
        /// The export's name.
        export: String,
        /// The file, relative to the export.
        path: String,
        /// Where to start.
        offset: u64,
        /// How many bytes at most (no more than [`MAX_CHUNK`]).
        length: u64,
    },
    /// `<write export path upload offset last>BASE64</write>`: one chunk of an upload, answered
    /// by [`written_to_payload`]. Chunks go to a temporary file named after `upload`; the last
    /// one makes it the file, atomically.
    Write {
        /// The export's name.
        export: String,
        /// The file, relative to the export.
        path: String,
        /// The upload's id (a UUID), the same for every chunk.
        upload: String,
        /// Where this chunk goes: the bytes received so far.
        offset: u64,
        /// Whether this is the last chunk.
        last: bool,
        /// The chunk's bytes.
        data: Vec<u8>,
    },
    /// `<find export path name max/>`: entries under a directory, at any depth, whose name
    /// matches `name` (`*` and `?` wildcards), answered by [`entries_to_payload`].
    Find {
        /// The export's name.
        export: String,
        /// The directory searched, relative to the export.
        path: String,
        /// The name pattern; every entry when absent.
        name: Option<String>,
        /// The most entries answered (no more than [`MAX_FIND`]).
        max: u64,
    },
    /// `<du export path/>`: bytes and entries under a path, answered by [`usage_to_payload`].
    Du {
        /// The export's name.
        export: String,
        /// Relative to the export.
        path: String,
    },
}

/// One exported folder as `dcish` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Its name, the first component of its paths.
    pub name: String,
    /// Whether it may be written.
    pub writable: bool,
}

/// A chunk of a file read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Where it starts.
    pub offset: u64,
    /// The file's size when it was read.
    pub total: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// What `du` counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of regular files.
    pub bytes: u64,
    /// Regular files.
    pub files: u64,
    /// Directories, the one asked for included.
    pub dirs: u64,
    /// Whether the walk stopped at its entry limit.
    pub truncated: bool,
}

fn path_attrs(s: &mut String, export: &str, path: &str) {
    attr(s, "export", export);
    attr(s, "path", path);
}

impl FsRequest {
    /// The request payload.
    pub fn to_payload(&self) -> Payload {
        let mut s = String::new();
        match self {
            FsRequest::Exports => s.push_str("<exports"),
            FsRequest::List { export, path } => {
                s.push_str("<list");
                path_attrs(&mut s, export, path);
            }
            FsRequest::Stat { export, path } => {
                s.push_str("<stat");
                path_attrs(&mut s, export, path);
            }
            FsRequest::Du { export, path } => {
                s.push_str("<du");
                path_attrs(&mut s, export, path);
            }
            FsRequest::Read {
                export,
                path,
                offset,
                length,
            } => {
                s.push_str("<read");
                path_attrs(&mut s, export, path);
                attr(&mut s, "offset", &offset.to_string());
                attr(&mut s, "length", &length.to_string());
            }
            FsRequest::Find {
                export,
                path,
                name,
                max,
            } => {
                s.push_str("<find");
                path_attrs(&mut s, export, path);
                if let Some(n) = name {
                    attr(&mut s, "name", n);
                }
                attr(&mut s, "max", &max.to_string());
            }
            FsRequest::Write {
                export,
                path,
                upload,
                offset,
                last,
                data,
            } => {
                s.push_str("<write");
                path_attrs(&mut s, export, path);
                attr(&mut s, "upload", upload);
                attr(&mut s, "offset", &offset.to_string());
                attr(&mut s, "last", if *last { "true" } else { "false" });
                attr(&mut s, "xmlns", FS_NAMESPACE);
                s.push('>');
                s.push_str(&base64_encode(data));
                s.push_str("</write>");
                return Payload::trusted(s);
            }
        }
        attr(&mut s, "xmlns", FS_NAMESPACE);
        s.push_str("/>");
        Payload::trusted(s)
    }

    /// Reads a request.
    pub fn from_payload(payload: &Payload) -> Result<FsRequest, ProtoError> {
        let root = only_element(payload, "request", FS_NAMESPACE)?;
        let el = root.local.as_str();
        if el == "write" {
            let [export, path, upload, offset, last] = attributes(
                &root,
                "write",
                ["export", "path", "upload", "offset", "last"],
            )?;
            let data = base64_decode(&text_content(&root, "write")?)
                .ok_or_else(|| ProtoError::invalid("write", "the body is not base64"))?;
            return Ok(FsRequest::Write {
                export: required("write/@export", export)?.to_owned(),
                path: required("write/@path", path)?.to_owned(),
                upload: required("write/@upload", upload)?.to_owned(),
                offset: number("write/@offset", offset)?,
                last: boolean("write/@last", last)?,
                data,
            });
        }
        no_content(&root, "request")?;
        if el == "exports" {
            let [] = attributes(&root, "exports", [])?;
            return Ok(FsRequest::Exports);
        }
        let [export, path, offset, length, name, max] = attributes(
            &root,
            "request",
            ["export", "path", "offset", "length", "name", "max"],
        )?;
        let export = required("request/@export", export)?.to_owned();
        let path = path.unwrap_or_default().to_owned();
        let only_paths = |extra: bool| {
            if extra {
                Err(ProtoError::invalid(
                    "request",
                    format!("<{}> takes only export and path", shown(el)),
                ))
            } else {
                Ok(())
            }
        };
        let extras = offset.is_some() || length.is_some() || name.is_some() || max.is_some();
        match el {
            "list" => only_paths(extras).map(|_| FsRequest::List { export, path }),
            "stat" => only_paths(extras).map(|_| FsRequest::Stat { export, path }),
            "du" => only_paths(extras).map(|_| FsRequest::Du { export, path }),
            "read" => Ok(FsRequest::Read {
                export,
                path,
                offset: number("read/@offset", offset)?,
                length: number("read/@length", length)?,
            }),
            "find" => Ok(FsRequest::Find {
                export,
                path,
                name: name.map(str::to_owned),
                max: number("find/@max", max)?,
            }),
            other => Err(ProtoError::invalid(
                "request",
                format!("unknown fs request <{}>", shown(other)),
            )),
        }
    }
}

/// The elements among `e`'s children (whitespace aside), which must be `<name>` in the fs
/// namespace.
fn children<'n>(e: &'n Node, name: &str) -> Result<Vec<&'n Node>, ProtoError> {
    let mut out = Vec::new();
    for child in &e.children {
        match child {
            Child::Text(t) if t.trim().is_empty() => {}
            Child::Element(c)
                if c.local == name && c.namespace.as_deref() == Some(FS_NAMESPACE) =>
            {
                out.push(c)
            }
            _ => {
                return Err(ProtoError::invalid(
                    e.local.clone(),
                    format!("may hold only <{name}> elements"),
                ))
            }
        }
    }
    Ok(out)
}

/// The answer to [`FsRequest::Exports`].
pub fn exports_to_payload(exports: &[ExportInfo]) -> Payload {
    let mut s = format!("<export-list xmlns=\"{FS_NAMESPACE}\">");
    for e in exports {
        s.push_str("<export");
        attr(&mut s, "name", &e.name);
        attr(&mut s, "mode", if e.writable { "rw" } else { "ro" });
        s.push_str("/>");
    }
    s.push_str("</export-list>");
    Payload::trusted(s)
}

/// Reads [`exports_to_payload`]'s output.
pub fn exports_from_payload(payload: &Payload) -> Result<Vec<ExportInfo>, ProtoError> {
    let root = named_element(payload, "export-list", FS_NAMESPACE)?;
    children(&root, "export")?
        .into_iter()
        .map(|e| {
            let [name, mode] = attributes(e, "export", ["name", "mode"])?;
            Ok(ExportInfo {
                name: required("export/@name", name)?.to_owned(),
                writable: match required("export/@mode", mode)? {
                    "rw" => true,
                    "ro" => false,
                    m => return Err(ProtoError::invalid("export/@mode", shown(m))),
                },
            })
        })
        .collect()
}

/// The answer to list, stat and find: entries with paths relative to the export, and whether
/// more were left out.
pub fn entries_to_payload(entries: &[ListEntry], truncated: bool) -> Payload {
    let mut s = format!("<entries xmlns=\"{FS_NAMESPACE}\"");
    attr(
        &mut s,
        "truncated",
        if truncated { "true" } else { "false" },
    );
    s.push('>');
    push_entries(&mut s, entries);
    s.push_str("</entries>");
    Payload::trusted(s)
}

/// Reads [`entries_to_payload`]'s output.
pub fn entries_from_payload(payload: &Payload) -> Result<(Vec<ListEntry>, bool), ProtoError> {
    let root = named_element(payload, "entries", FS_NAMESPACE)?;
    let [truncated] = attributes(&root, "entries", ["truncated"])?;
    let entries = children(&root, "entry")?
        .into_iter()
        .map(entry_from)
        .collect::<Result<_, ProtoError>>()?;
    Ok((entries, boolean("entries/@truncated", truncated)?))
}

/// The answer to [`FsRequest::Read`].
pub fn chunk_to_payload(chunk: &Chunk) -> Payload {
    let mut s = String::from("<data");
    attr(&mut s, "offset", &chunk.offset.to_string());
    attr(&mut s, "total", &chunk.total.to_string());
    attr(&mut s, "size", &chunk.data.len().to_string());
    attr(&mut s, "xmlns", FS_NAMESPACE);
    s.push('>');
    s.push_str(&base64_encode(&chunk.data));
    s.push_str("</data>");
    Payload::trusted(s)
}

/// Reads [`chunk_to_payload`]'s output; refuses a body whose length is not the stated size.
pub fn chunk_from_payload(payload: &Payload) -> Result<Chunk, ProtoError> {
    let root = named_element(payload, "data", FS_NAMESPACE)?;
    let [offset, total, size] = attributes(&root, "data", ["offset", "total", "size"])?;
    let data = base64_decode(&text_content(&root, "data")?)
        .ok_or_else(|| ProtoError::invalid("data", "the body is not base64"))?;
    if data.len() as u64 != number("data/@size", size)? {
        return Err(ProtoError::invalid("data/@size", "does not match the body"));
    }
    Ok(Chunk {
        offset: number("data/@offset", offset)?,
        total: number("data/@total", total)?,
        data,
    })
}

/// The answer to [`FsRequest::Write`]: the bytes received so far, and whether the file is now
/// in place.
pub fn written_to_payload(received: u64, done: bool) -> Payload {
    let mut s = String::from("<written");
    attr(&mut s, "received", &received.to_string());
    attr(&mut s, "done", if done { "true" } else { "false" });
    attr(&mut s, "xmlns", FS_NAMESPACE);
    s.push_str("/>");
    Payload::trusted(s)
}

/// Reads [`written_to_payload`]'s output.
pub fn written_from_payload(payload: &Payload) -> Result<(u64, bool), ProtoError> {
    let root = named_element(payload, "written", FS_NAMESPACE)?;
    let [received, done] = attributes(&root, "written", ["received", "done"])?;
    no_content(&root, "written")?;
    Ok((
        number("written/@received", received)?,
        boolean("written/@done", done)?,
    ))
}

/// The answer to [`FsRequest::Du`].
pub fn usage_to_payload(u: &Usage) -> Payload {
    let mut s = String::from("<usage");
    attr(&mut s, "bytes", &u.bytes.to_string());
    attr(&mut s, "files", &u.files.to_string());
    attr(&mut s, "dirs", &u.dirs.to_string());
    attr(
        &mut s,
        "truncated",
        if u.truncated { "true" } else { "false" },
    );
    attr(&mut s, "xmlns", FS_NAMESPACE);
    s.push_str("/>");
    Payload::trusted(s)
}

/// Reads [`usage_to_payload`]'s output.
pub fn usage_from_payload(payload: &Payload) -> Result<Usage, ProtoError> {
    let root = named_element(payload, "usage", FS_NAMESPACE)?;
    let [bytes, files, dirs, truncated] =
        attributes(&root, "usage", ["bytes", "files", "dirs", "truncated"])?;
    no_content(&root, "usage")?;
    Ok(Usage {
        bytes: number("usage/@bytes", bytes)?,
        files: number("usage/@files", files)?,
        dirs: number("usage/@dirs", dirs)?,
        truncated: boolean("usage/@truncated", truncated)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_request() -> Vec<FsRequest> {
        vec![
            FsRequest::Exports,
            FsRequest::List {
                export: "logs".into(),
                path: "a b/&c".into(),
            },
            FsRequest::Stat {
                export: "logs".into(),
                path: "x".into(),
            },
            FsRequest::Du {
                export: "logs".into(),
                path: String::new(),
            },
            FsRequest::Read {
                export: "logs".into(),
                path: "f".into(),
                offset: 7,
                length: 9,
            },
            FsRequest::Find {
                export: "logs".into(),
                path: "d".into(),
                name: Some("*.log".into()),
                max: 5,
            },
            FsRequest::Write {
                export: "up".into(),
                path: "f".into(),
                upload: "u".into(),
                offset: 3,
                last: true,
                data: vec![0, 1, 255],
            },
        ]
    }

    #[test]
    fn every_request_round_trips_and_unknown_attributes_are_refused() {
        for r in every_request() {
            assert_eq!(FsRequest::from_payload(&r.to_payload()).unwrap(), r);
        }
        let bad = Payload::new("<list xmlns=\"urn:dci:fs:1\" export=\"a\" max=\"3\"/>").unwrap();
        assert!(FsRequest::from_payload(&bad).is_err());
        let bad = Payload::new("<rm xmlns=\"urn:dci:fs:1\" export=\"a\"/>").unwrap();
        assert!(FsRequest::from_payload(&bad).is_err());
    }

    /// Every payload this module writes is valid under `proto/fs.xsd` (when xmllint exists).
    #[test]
    fn payloads_validate_against_the_schema() {
        let entry = ListEntry {
            path: "a".into(),
            kind: "file".into(),
            size: 1,
            mode: 0o644,
            mtime: 2,
            target: None,
        };
        let mut payloads: Vec<Payload> =
            every_request().iter().map(FsRequest::to_payload).collect();
        payloads.extend([
            exports_to_payload(&[ExportInfo {
                name: "logs".into(),
                writable: true,
            }]),
            entries_to_payload(&[entry], false),
            chunk_to_payload(&Chunk {
                offset: 0,
                total: 3,
                data: b"abc".to_vec(),
            }),
            written_to_payload(3, true),
            usage_to_payload(&Usage::default()),
        ]);
        crate::backup::tests::assert_valid(
            concat!(env!("CARGO_MANIFEST_DIR"), "/fs.xsd"),
            &payloads,
        );
    }

    #[test]
    fn answers_round_trip() {
        let e = ExportInfo {
            name: "logs".into(),
            writable: false,
        };
        assert_eq!(
            exports_from_payload(&exports_to_payload(std::slice::from_ref(&e))).unwrap(),
            vec![e]
        );
        let entry = ListEntry {
            path: "a/b".into(),
            kind: "symlink".into(),
            size: 3,
            mode: 0o644,
            mtime: 5,
            target: Some("../x".into()),
        };
        assert_eq!(
            entries_from_payload(&entries_to_payload(std::slice::from_ref(&entry), true)).unwrap(),
            (vec![entry], true)
        );
        let c = Chunk {
            offset: 4,
            total: 10,
            data: b"abc".to_vec(),
        };
        assert_eq!(chunk_from_payload(&chunk_to_payload(&c)).unwrap(), c);
        assert_eq!(
            written_from_payload(&written_to_payload(9, true)).unwrap(),
            (9, true)
        );
        let u = Usage {
            bytes: 1,
            files: 2,
            dirs: 3,
            truncated: false,
        };
        assert_eq!(usage_from_payload(&usage_to_payload(&u)).unwrap(), u);
    }
}
