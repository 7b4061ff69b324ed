//! Helpers shared by the test modules.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use dci_proto::{Envelope, Limits, ProtoError};

/// The crate directory (`proto/`).
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `proto/examples/*.xml`, sorted.
pub fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(crate_dir().join("examples"))
        .expect("proto/examples exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    files
}

/// The text of an example.
pub fn example(name: &str) -> String {
    std::fs::read_to_string(crate_dir().join("examples").join(name)).expect("example exists")
}

/// Parses under the default limits.
pub fn parse(xml: &str) -> Result<Envelope, ProtoError> {
    Envelope::from_xml(xml.as_bytes(), &Limits::default())
}

/// Whether xmllint is on PATH; says once when it is not.
fn xmllint_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let found = Command::new("xmllint")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            // Written to the real stderr, past the test harness's capture, so it always shows.
            let _ = writeln!(
                std::io::stderr(),
                "note: xmllint is not on PATH, so schema checks are skipped"
            );
        }
        found
    })
}

/// Validates `xml` with `xmllint --noout --schema proto/dci.xsd -`: `None` when xmllint is not
/// on PATH, otherwise the verdict with xmllint's complaint.
pub fn xmllint(xml: &[u8]) -> Option<Result<(), String>> {
    if !xmllint_available() {
        return None;
    }
    let mut child = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(crate_dir().join("dci.xsd"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xmllint starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(xml)
        .expect("xmllint reads its input");
    let out = child.wait_with_output().expect("xmllint finishes");
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}
