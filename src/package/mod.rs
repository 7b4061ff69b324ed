//! Software packages: signed bundles of files with XML install instructions, installed on a blade
//! by its agent, and deployed across the mesh through the block store.
//!
//! - [`keys`]: the operator's ed25519 signing key and the public halves agents trust.
//! - [`format`]: the package file (manifest, instructions, files with BLAKE3 hashes, signature),
//!   built from a directory and read back with every check.
//! - [`install`]: the installer: verifies, turns the instructions into actions under the install
//!   root, rolls back with the undo steps on failure, and records what is installed in sled.
//! - [`deploy`]: the mesh side: the origin stores the package as blocks and asks each target to
//!   install it; targets pull the blocks from the origin and from each other.

pub mod deploy;
pub mod format;
pub mod install;
pub mod keys;

use std::cmp::Ordering;

/// This machine's platform as packages name it: `linux-x86_64`, `linux-aarch64`.
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// Compares two versions: dot-separated parts, numerically where both are numbers.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut pa = a.split('.');
    let mut pb = b.split('.');
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return Ordering::Equal,
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// Whether `name` is a safe package name or version: 1 to 64 of `[A-Za-z0-9._+-]`, not starting
/// with a dot (it names a directory under the install root).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// Checks a path from a package or its instructions: relative, made only of normal components,
/// so that joined to the install root it cannot leave it.
pub fn safe_relative(path: &str) -> Result<&std::path::Path, String> {
    // By segment, not by `Path::components`, which drops inner `.` and trailing `/` silently.
    let normal = path.len() <= 1024
        && !path.contains('\0')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if normal {
        Ok(std::path::Path::new(path))
    } else {
        Err(format!(
            "path {path:?} escapes the install root (absolute, empty or with ..)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number_then_text() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.0", "1.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.0", "1.0.1"), Ordering::Less);
        assert_eq!(compare_versions("1.0-b", "1.0-a"), Ordering::Greater);
    }

    #[test]
    fn only_plain_relative_paths_are_safe() {
        for good in ["a", "a/b.txt", "bin/x"] {
            assert!(safe_relative(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "./a",
            "a/./b",
            "a/",
            "a//b",
            "a\0b",
        ] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
        assert!(valid_name("upper-1.0+b"));
        assert!(!valid_name("../x") && !valid_name(".hidden") && !valid_name(""));
    }
}
