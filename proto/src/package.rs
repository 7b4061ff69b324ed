//! Software packages (namespace [`PACKAGE_NAMESPACE`], `proto/package.xsd`): the install
//! instructions a package carries, and the control payloads of `dcish deploy`, `undeploy` and
//! `packages`.
//!
//! The instructions are the portable form of an install: each blade turns the steps into actions
//! of its own (a path under its install root, a process with its limits, a peerlet registered in
//! its host). Every step has an undo, so a failed install is rolled back and an uninstall is the
//! undo steps in reverse. Parsing is as strict as the control payloads': declared attributes and
//! children only.

use crate::backup::{attr, children_in};
use crate::control::{
    attributes, named_element, no_content, number, only_element, required, text_content,
};
use crate::error::shown;
use crate::xml::{self, Node};
use crate::{Payload, ProtoError};

/// The namespace of package payloads and instructions; the version is part of it.
pub const PACKAGE_NAMESPACE: &str = "urn:dci:package:1";

/// The most steps one package may carry.
pub const MAX_STEPS: usize = 256;
/// The most arguments of one command.
pub const MAX_ARGS: usize = 256;

/// A command a step runs: the program, its arguments, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCommand {
    /// The program and its arguments (no shell).
    pub args: Vec<String>,
    /// Killed after this many milliseconds.
    pub timeout_ms: u64,
}

/// One install step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `<place file to mode/>`: write a file of the package under the install root. Undo: remove it.
    Place {
        /// The file's path in the package.
        file: String,
        /// Where it goes, relative to the install root [default: `file`].
        to: String,
        /// Permission bits (octal in the XML) [default: 0644].
        mode: u32,
    },
    /// `<mode path mode/>`: set a placed file's permission bits. Undo: the bits it had.
    Mode {
        /// Relative to the install root.
        path: String,
        /// Permission bits (octal in the XML).
        mode: u32,
    },
    /// `<run timeout-ms><arg/>…<undo timeout-ms><arg/>…</undo></run>`: run a program in the
    /// install root. Undo: the `<undo>` command, if any.
    Run {
        /// The command.
        command: RunCommand,
        /// What undoes it.
        undo: Option<RunCommand>,
    },
    /// `<register-peerlet manifest/>`: make the external peerlet of a `peerlet.toml` under the
    /// install root available. Undo: unregister it (or bring back the one it replaced).
    RegisterPeerlet {
        /// The manifest, relative to the install root.
        manifest: String,
    },
    /// `<restart-peerlet app/>`: stop the running instances of an app, so that the next envelope
    /// starts the new version. Undo: the same.
    RestartPeerlet {
        /// The app type.
        app: String,
    },
}

impl Step {
    /// The step as a report names it: `run sh -c …`, `place upper.py`.
    pub fn describe(&self) -> String {
        match self {
            Step::Place { to, .. } => format!("place {to}"),
            Step::Mode { path, mode } => format!("mode {mode:o} {path}"),
            Step::Run { command, .. } => format!("run {}", command.args.join(" ")),
            Step::RegisterPeerlet { manifest } => format!("register-peerlet {manifest}"),
            Step::RestartPeerlet { app } => format!("restart-peerlet {app}"),
        }
    }
}

/// Reads `<install xmlns="urn:dci:package:1">` with its steps, in order.
pub fn instructions_from_xml(text: &str) -> Result<Vec<Step>, ProtoError> {
    let payload = Payload::new(text.trim())?;
    let root = named_element(&payload, "install", PACKAGE_NAMESPACE)?;
    let [] = attributes(&root, "install", [])?;
    let steps = children(
        &root,
        "install",
        &[
            "place",
            "mode",
            "run",
            "register-peerlet",
            "restart-peerlet",
        ],
    )?;
    if steps.len() > MAX_STEPS {
        return Err(ProtoError::invalid(
            "install",
            format!("more than {MAX_STEPS} steps"),
        ));
    }
    steps.into_iter().map(step).collect()
}

fn step(e: &Node) -> Result<Step, ProtoError> {
    Ok(match e.local.as_str() {
        "place" => {
            let [file, to, mode] = attributes(e, "place", ["file", "to", "mode"])?;
            no_content(e, "place")?;
            let file = required("place/@file", file)?.to_owned();
            Step::Place {
                to: to.map_or_else(|| file.clone(), str::to_owned),
                file,
                mode: mode.map_or(Ok(0o644), |m| octal("place/@mode", m))?,
            }
        }
        "mode" => {
            let [path, mode] = attributes(e, "mode", ["path", "mode"])?;
            no_content(e, "mode")?;
            Step::Mode {
                path: required("mode/@path", path)?.to_owned(),
                mode: octal("mode/@mode", required("mode/@mode", mode)?)?,
            }
        }
        "run" => {
            let command = run_command(e, "run", true)?;
            let undo = children(e, "run", &["arg", "undo"])?
                .into_iter()
                .filter(|c| c.local == "undo")
                .map(|u| run_command(u, "undo", false))
                .collect::<Result<Vec<_>, _>>()?;
            if undo.len() > 1 {
                return Err(ProtoError::invalid("run", "more than one <undo>"));
            }
            Step::Run {
                command,
                undo: undo.into_iter().next(),
            }
        }
        "register-peerlet" => {
            let [manifest] = attributes(e, "register-peerlet", ["manifest"])?;
            no_content(e, "register-peerlet")?;
            Step::RegisterPeerlet {
                manifest: required("register-peerlet/@manifest", manifest)?.to_owned(),
            }
        }
        _ => {
            let [app] = attributes(e, "restart-peerlet", ["app"])?;
            no_content(e, "restart-peerlet")?;
            Step::RestartPeerlet {
                app: required("restart-peerlet/@app", app)?.to_owned(),
            }
        }
    })
}

/// A `<run>` or `<undo>`: its `timeout-ms` and `<arg>`s (`<undo>` only inside `<run>`).
fn run_command(
    e: &Node,
    element: &'static str,
    undo_allowed: bool,
) -> Result<RunCommand, ProtoError> {
    let [timeout] = attributes(e, element, ["timeout-ms"])?;
    let names: &[&str] = if undo_allowed {
        &["arg", "undo"]
    } else {
        &["arg"]
    };
    let args = children(e, element, names)?
        .into_iter()
        .filter(|c| c.local == "arg")
        .map(|a| text_content(a, "arg"))
        .collect::<Result<Vec<_>, _>>()?;
    if args.is_empty() || args[0].is_empty() {
        return Err(ProtoError::invalid(element, "names no program"));
    }
    if args.len() > MAX_ARGS {
        return Err(ProtoError::invalid(
            element,
            format!("more than {MAX_ARGS} arguments"),
        ));
    }
    let timeout_ms = number("run/@timeout-ms", timeout)?;
    if timeout_ms == 0 {
        return Err(ProtoError::invalid("run/@timeout-ms", "must be at least 1"));
    }
    Ok(RunCommand { args, timeout_ms })
}

fn octal(field: &'static str, v: &str) -> Result<u32, ProtoError> {
    match u32::from_str_radix(v, 8) {
        Ok(m) if !v.is_empty() && m <= 0o777 => Ok(m),
        _ => Err(ProtoError::invalid(
            field,
            format!("{} is not permission bits in octal (0 to 777)", shown(v)),
        )),
    }
}

/// The children of `e`: elements of the package namespace named in `names`.
fn children<'n>(e: &'n Node, element: &str, names: &[&str]) -> Result<Vec<&'n Node>, ProtoError> {
    children_in(e, element, names, PACKAGE_NAMESPACE)
}

fn blades_xml(s: &mut String, blades: &[String]) {
    for b in blades {
        s.push_str("<blade>");
        xml::escape_text(s, b);
        s.push_str("</blade>");
    }
}

fn blades_of(e: &Node, element: &str) -> Result<Vec<String>, ProtoError> {
    let blades = children(e, element, &["blade"])?
        .into_iter()
        .map(|b| text_content(b, "blade"))
        .collect::<Result<Vec<_>, _>>()?;
    if blades.is_empty() {
        return Err(ProtoError::MissingField("blade"));
    }
    Ok(blades)
}

/// A package command from `dcish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageRequest {
    /// `<deploy path><blade/>…</deploy>`: install the package file at `path` (on the agent's
    /// machine) on these blades; answered by [`reports_to_payload`].
    Deploy {
        /// The package file, absolute.
        path: String,
        /// The blades.
        blades: Vec<String>,
    },
    /// `<undeploy name><blade/>…</undeploy>`: remove a package; answered by
    /// [`reports_to_payload`].
    Undeploy {
        /// The package name.
        name: String,
        /// The blades.
        blades: Vec<String>,
    },
    /// `<packages><blade/>…</packages>`: what is installed there; answered by
    /// [`installed_to_payload`].
    List {
        /// The blades.
        blades: Vec<String>,
    },
}

impl PackageRequest {
    /// The request payload.
    pub fn to_payload(&self) -> Payload {
        let mut s = String::new();
        let (element, blades) = match self {
            PackageRequest::Deploy { path, blades } => {
                s.push_str("<deploy");
                attr(&mut s, "path", path);
                ("deploy", blades)
            }
            PackageRequest::Undeploy { name, blades } => {
                s.push_str("<undeploy");
                attr(&mut s, "name", name);
                ("undeploy", blades)
            }
            PackageRequest::List { blades } => {
                s.push_str("<packages");
                ("packages", blades)
            }
        };
        attr(&mut s, "xmlns", PACKAGE_NAMESPACE);
        s.push('>');
        blades_xml(&mut s, blades);
        s.push_str(&format!("</{element}>"));
        Payload::trusted(s)
    }

    /// The request in `payload`; `None` if the payload is not in the package namespace.
    pub fn from_payload(payload: &Payload) -> Option<Result<PackageRequest, ProtoError>> {
        if !payload.as_str().contains(PACKAGE_NAMESPACE) {
            return None;
        }
        Some(Self::parse(payload))
    }

    fn parse(payload: &Payload) -> Result<PackageRequest, ProtoError> {
        let root = only_element(payload, "command", PACKAGE_NAMESPACE)?;
        match root.local.as_str() {
            "deploy" => {
                let [path] = attributes(&root, "deploy", ["path"])?;
                Ok(PackageRequest::Deploy {
                    path: required("deploy/@path", path)?.to_owned(),
                    blades: blades_of(&root, "deploy")?,
                })
            }
            "undeploy" => {
                let [name] = attributes(&root, "undeploy", ["name"])?;
                Ok(PackageRequest::Undeploy {
                    name: required("undeploy/@name", name)?.to_owned(),
                    blades: blades_of(&root, "undeploy")?,
                })
            }
            "packages" => {
                let [] = attributes(&root, "packages", [])?;
                Ok(PackageRequest::List {
                    blades: blades_of(&root, "packages")?,
                })
            }
            other => Err(ProtoError::invalid(
                "command",
                format!("unknown package command <{}>", shown(other)),
            )),
        }
    }
}

/// What one blade did with a deploy or undeploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The blade.
    pub blade: String,
    /// `installed`, `upgraded`, `already-installed`, `removed`, `not-installed` or `failed`.
    pub status: String,
    /// The package's name and version (empty when unknown).
    pub package: String,
    /// The step that failed, if one did.
    pub step: Option<String>,
    /// Why it failed, or the failing step's output.
    pub output: String,
}

/// `<reports><report blade status package step>output</report>…</reports>`.
pub fn reports_to_payload(reports: &[Report]) -> Payload {
    let mut s = format!("<reports xmlns=\"{PACKAGE_NAMESPACE}\">");
    for r in reports {
        s.push_str("<report");
        attr(&mut s, "blade", &r.blade);
        attr(&mut s, "status", &r.status);
        attr(&mut s, "package", &r.package);
        if let Some(step) = &r.step {
            attr(&mut s, "step", step);
        }
        s.push('>');
        xml::escape_text(&mut s, &r.output);
        s.push_str("</report>");
    }
    s.push_str("</reports>");
    Payload::trusted(s)
}

/// Reads [`reports_to_payload`]'s output.
pub fn reports_from_payload(payload: &Payload) -> Result<Vec<Report>, ProtoError> {
    let root = named_element(payload, "reports", PACKAGE_NAMESPACE)?;
    children(&root, "reports", &["report"])?
        .into_iter()
        .map(|e| {
            let [blade, status, package, step] =
                attributes(e, "report", ["blade", "status", "package", "step"])?;
            Ok(Report {
                blade: required("report/@blade", blade)?.to_owned(),
                status: required("report/@status", status)?.to_owned(),
                package: package.unwrap_or_default().to_owned(),
                step: step.map(str::to_owned),
                output: text_content(e, "report")?,
            })
        })
        .collect()
}

/// One package installed on one blade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledInfo {
    /// The blade.
    pub blade: String,
    /// The package name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it provides (`peerlet:upper`).
    pub provides: Vec<String>,
    /// The signing key's fingerprint.
    pub signer: String,
    /// When it was installed (Unix milliseconds).
    pub time_ms: u64,
}

/// `<installed><package blade name version signer time-ms><provides/>…</package>…<error
/// blade>why</error>…</installed>`: packages, and blades that could not say.
pub fn installed_to_payload(rows: &[InstalledInfo], errors: &[(String, String)]) -> Payload {
    let mut s = format!("<installed xmlns=\"{PACKAGE_NAMESPACE}\">");
    for r in rows {
        s.push_str("<package");
        attr(&mut s, "blade", &r.blade);
        attr(&mut s, "name", &r.name);
        attr(&mut s, "version", &r.version);
        attr(&mut s, "signer", &r.signer);
        attr(&mut s, "time-ms", &r.time_ms.to_string());
        s.push('>');
        for p in &r.provides {
            s.push_str("<provides>");
            xml::escape_text(&mut s, p);
            s.push_str("</provides>");
        }
        s.push_str("</package>");
    }
    for (blade, why) in errors {
        s.push_str("<error");
        attr(&mut s, "blade", blade);
        s.push('>');
        xml::escape_text(&mut s, why);
        s.push_str("</error>");
    }
    s.push_str("</installed>");
    Payload::trusted(s)
}

/// The rows and the per-blade errors of an [`installed_to_payload`] answer.
pub type Installed = (Vec<InstalledInfo>, Vec<(String, String)>);

/// Reads [`installed_to_payload`]'s output.
pub fn installed_from_payload(payload: &Payload) -> Result<Installed, ProtoError> {
    let root = named_element(payload, "installed", PACKAGE_NAMESPACE)?;
    let (mut rows, mut errors) = (Vec::new(), Vec::new());
    for e in children(&root, "installed", &["package", "error"])? {
        if e.local == "error" {
            let [blade] = attributes(e, "error", ["blade"])?;
            errors.push((
                required("error/@blade", blade)?.to_owned(),
                text_content(e, "error")?,
            ));
            continue;
        }
        let [blade, name, version, signer, time] = attributes(
            e,
            "package",
            ["blade", "name", "version", "signer", "time-ms"],
        )?;
        rows.push(InstalledInfo {
            blade: required("package/@blade", blade)?.to_owned(),
            name: required("package/@name", name)?.to_owned(),
            version: required("package/@version", version)?.to_owned(),
            signer: signer.unwrap_or_default().to_owned(),
            time_ms: number("package/@time-ms", time)?,
            provides: children(e, "package", &["provides"])?
                .into_iter()
                .map(|p| text_content(p, "provides"))
                .collect::<Result<Vec<_>, _>>()?,
        });
    }
    Ok((rows, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"<install xmlns="urn:dci:package:1">
  <place file="upper.py" mode="755"/>
  <place file="peerlet.toml" to="conf/peerlet.toml"/>
  <mode path="upper.py" mode="0700"/>
  <run timeout-ms="5000"><arg>python3</arg><arg>-c</arg><arg>pass</arg>
    <undo timeout-ms="1000"><arg>true</arg></undo></run>
  <register-peerlet manifest="conf/peerlet.toml"/>
  <restart-peerlet app="upper"/>
</install>"#;

    #[test]
    fn instructions_are_read_in_order_with_their_undo() {
        let steps = instructions_from_xml(EXAMPLE).unwrap();
        assert_eq!(steps.len(), 6);
        assert_eq!(
            steps[0],
            Step::Place {
                file: "upper.py".into(),
                to: "upper.py".into(),
                mode: 0o755
            }
        );
        assert!(
            matches!(&steps[1], Step::Place { to, mode: 0o644, .. } if to == "conf/peerlet.toml")
        );
        assert_eq!(
            steps[2],
            Step::Mode {
                path: "upper.py".into(),
                mode: 0o700
            }
        );
        let Step::Run { command, undo } = &steps[3] else {
            panic!("{:?}", steps[3]);
        };
        assert_eq!(command.args, ["python3", "-c", "pass"]);
        assert_eq!(command.timeout_ms, 5000);
        assert_eq!(undo.as_ref().unwrap().args, ["true"]);
        assert_eq!(steps[5].describe(), "restart-peerlet upper");
    }

    #[test]
    fn bad_instructions_are_refused_with_one_line() {
        for bad in [
            "<install/>",
            "<install xmlns=\"urn:dci:package:1\"><place/></install>",
            "<install xmlns=\"urn:dci:package:1\"><place file=\"a\" mode=\"9\"/></install>",
            "<install xmlns=\"urn:dci:package:1\"><place file=\"a\" mode=\"1777\"/></install>",
            "<install xmlns=\"urn:dci:package:1\"><run timeout-ms=\"5\"/></install>",
            "<install xmlns=\"urn:dci:package:1\"><run><arg>x</arg></run></install>",
            "<install xmlns=\"urn:dci:package:1\"><run timeout-ms=\"5\"><arg>x</arg><undo timeout-ms=\"1\"><arg>y</arg><undo/></undo></run></install>",
            "<install xmlns=\"urn:dci:package:1\"><format disk=\"sda\"/></install>",
            "<install xmlns=\"urn:dci:package:1\" x=\"1\"/>",
            "<!DOCTYPE x><install xmlns=\"urn:dci:package:1\"/>",
        ] {
            let e = instructions_from_xml(bad).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn requests_and_answers_round_trip() {
        for r in [
            PackageRequest::Deploy {
                path: "/tmp/a b.dcipkg".into(),
                blades: vec!["b1".into(), "b2".into()],
            },
            PackageRequest::Undeploy {
                name: "upper".into(),
                blades: vec!["b1".into()],
            },
            PackageRequest::List {
                blades: vec!["b<1>".into()],
            },
        ] {
            assert_eq!(
                PackageRequest::from_payload(&r.to_payload()).unwrap(),
                Ok(r)
            );
        }
        let reports = vec![Report {
            blade: "b1".into(),
            status: "failed".into(),
            package: "upper 1.0".into(),
            step: Some("run false".into()),
            output: "exit 1 & <oops>".into(),
        }];
        assert_eq!(
            reports_from_payload(&reports_to_payload(&reports)).unwrap(),
            reports
        );
        let rows = vec![InstalledInfo {
            blade: "b1".into(),
            name: "upper".into(),
            version: "1.0".into(),
            provides: vec!["peerlet:upper".into()],
            signer: "ab12".into(),
            time_ms: 7,
        }];
        let errors = vec![("b2".to_string(), "unreachable".to_string())];
        assert_eq!(
            installed_from_payload(&installed_to_payload(&rows, &errors)).unwrap(),
            (rows, errors)
        );
        assert!(
            PackageRequest::from_payload(&Payload::new("<x xmlns=\"urn:y\"/>").unwrap()).is_none()
        );
    }

    /// Every payload this module writes, and the example instructions, are valid under
    /// `proto/package.xsd` (when xmllint exists).
    #[test]
    fn payloads_validate_against_the_schema() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/package.xsd");
        let docs = [
            EXAMPLE.to_string(),
            PackageRequest::Deploy {
                path: "/p".into(),
                blades: vec!["b".into()],
            }
            .to_payload()
            .as_str()
            .to_owned(),
            reports_to_payload(&[]).as_str().to_owned(),
            installed_to_payload(&[], &[("b".into(), "x".into())])
                .as_str()
                .to_owned(),
        ];
        for doc in docs {
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
                stdin.write_all(doc.as_bytes()).unwrap();
            }
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{doc}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
