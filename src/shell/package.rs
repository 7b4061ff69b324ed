//! `dcish keygen`, `package build`, `deploy`, `undeploy` and `packages`.
//!
//! `keygen` and `package build` work on local files without an agent. The others resolve their
//! node set against the mesh (as `exec` does) and give the blades to the local agent, which does
//! the work and answers per blade; the package file is read by the agent, from the path given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use dci_proto::package::{
    installed_from_payload, reports_from_payload, InstalledInfo, PackageRequest, Report,
};
use serde_json::json;

use super::client::{Client, ClientError};
use super::exec::{members, resolve};
use super::msg::usage;
use super::nodeset;

/// A deploy moves and installs whole packages; it gets this long.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(3600);

/// `dcish package ...`.
#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Build a package from DIR (package.toml, install.xml and the files it names).
    Build {
        /// The package's source directory.
        dir: PathBuf,
        /// Sign with this secret key (`dcish keygen`); without it the package is unsigned, and
        /// every agent refuses it.
        #[arg(long, value_name = "KEYFILE")]
        sign: Option<PathBuf>,
        /// Where to write the package.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// `dcish deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The package file (read by the local agent).
    pub package: PathBuf,
    /// The blades: a node set (`blade-[01-04]`, `@all`, `@active`, …).
    #[arg(long)]
    pub to: String,
    /// Leave these blades out (a node set).
    #[arg(short = 'x', long)]
    pub exclude: Option<String>,
    /// Start at this time of day, `HH:MM` or `HH:MM:SS` UTC (the next one to come): the package
    /// and the set are checked now, the set resolved again then.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

fn local(message: String) -> ClientError {
    ClientError::Refused {
        code: "package".into(),
        message,
    }
}

/// `dcish keygen FILE`.
pub fn keygen(file: &Path, json: bool) -> Result<String, ClientError> {
    let fp = crate::package::keys::keygen(file).map_err(local)?;
    let public = crate::package::keys::public_path(file);
    Ok(if json {
        json!({"secret": file, "public": public, "fingerprint": fp}).to_string()
    } else {
        format!(
            "secret key {} (keep it private), public key {} (give it to every agent with --trusted-key), fingerprint {fp}",
            file.display(),
            public.display()
        )
    })
}

/// `dcish package build`.
pub fn build(command: &PackageCommand, json: bool) -> Result<String, ClientError> {
    let PackageCommand::Build { dir, sign, output } = command;
    let key = sign
        .as_deref()
        .map(crate::package::keys::read_secret)
        .transpose()
        .map_err(local)?;
    let bytes = crate::package::format::build(dir, key.as_ref()).map_err(local)?;
    let package =
        crate::package::format::Package::parse(bytes.clone()).map_err(|e| local(e.to_string()))?;
    crate::datadir::write_atomic(output, &bytes, 0o644).map_err(|e| local(e.to_string()))?;
    let signer = key
        .map(|k| crate::package::keys::fingerprint(&k.verifying_key()))
        .unwrap_or_else(|| "unsigned".into());
    Ok(if json {
        json!({
            "file": output,
            "name": package.header.name,
            "version": package.header.version,
            "platform": package.header.platform,
            "files": package.header.files.len(),
            "bytes": bytes.len(),
            "signer": signer,
        })
        .to_string()
    } else {
        format!(
            "{}: {} for {}, {} file(s), {} bytes, signed by {signer}",
            output.display(),
            package.label(),
            package.header.platform,
            package.header.files.len(),
            bytes.len()
        )
    })
}

async fn blades(
    client: &mut Client,
    set: &str,
    exclude: Option<&str>,
) -> Result<Vec<String>, ClientError> {
    let members = members(client).await?;
    resolve(&members, set, exclude)
}

/// Prints the reports; fails, naming the blades, when any failed.
fn reports_out(reports: &[Report], json: bool) -> Result<String, ClientError> {
    let text = if json {
        let rows: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                json!({
                    "blade": r.blade,
                    "status": r.status,
                    "package": r.package,
                    "step": r.step,
                    "output": r.output,
                })
            })
            .collect();
        serde_json::to_string_pretty(&rows).unwrap_or_default()
    } else {
        let rows: Vec<Vec<String>> = reports
            .iter()
            .map(|r| {
                vec![
                    r.blade.clone(),
                    r.status.clone(),
                    r.package.clone(),
                    r.step.clone().unwrap_or_default(),
                    r.output.replace('\n', " "),
                ]
            })
            .collect();
        super::table(
            &["BLADE", "STATUS", "PACKAGE", "STEP", "OUTPUT"],
            &rows,
            None,
            false,
        )
    };
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.status == "failed")
        .map(|r| r.blade.clone())
        .collect();
    if failed.is_empty() {
        return Ok(text);
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{text}\n").as_bytes());
    Err(ClientError::Refused {
        code: "package".into(),
        message: format!(
            "{} of {} blade(s) failed: {}",
            failed.len(),
            reports.len(),
            nodeset::fold(&nodeset::sorted(failed.into_iter()))
        ),
    })
}

/// `dcish deploy PKG --to SET`.
pub async fn deploy(
    client: &mut Client,
    args: &DeployArgs,
    json: bool,
) -> Result<String, ClientError> {
    let wait = super::moves::wait_of(args.at.as_deref())?;
    let path = std::fs::canonicalize(&args.package)
        .map_err(|e| usage(format!("{}: {e}", args.package.display())))?;
    let mut targets = blades(client, &args.to, args.exclude.as_deref()).await?;
    if super::moves::wait_for(client, wait).await? {
        targets = blades(client, &args.to, args.exclude.as_deref()).await?;
    }
    let request = PackageRequest::Deploy {
        path: path.display().to_string(),
        blades: targets,
    };
    reports(client, request, json).await
}

/// Sends a deploy or undeploy and prints its reports.
async fn reports(
    client: &mut Client,
    request: PackageRequest,
    json: bool,
) -> Result<String, ClientError> {
    let payload = client
        .request_within(request.to_payload(), DEPLOY_TIMEOUT)
        .await?;
    reports_out(&reports_from_payload(&payload).map_err(protocol)?, json)
}

/// `dcish undeploy NAME --from SET`.
pub async fn undeploy(
    client: &mut Client,
    name: &str,
    from: &str,
    json: bool,
) -> Result<String, ClientError> {
    let blades = blades(client, from, None).await?;
    let request = PackageRequest::Undeploy {
        name: name.into(),
        blades,
    };
    reports(client, request, json).await
}

/// `dcish packages [SET]`.
pub async fn packages(
    client: &mut Client,
    set: Option<&str>,
    json: bool,
) -> Result<String, ClientError> {
    let blades = blades(client, set.unwrap_or("@all"), None).await?;
    let payload = client
        .request(PackageRequest::List { blades }.to_payload())
        .await?;
    let (rows, errors) = installed_from_payload(&payload).map_err(protocol)?;
    Ok(if json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r: &InstalledInfo| {
                json!({
                    "blade": r.blade,
                    "name": r.name,
                    "version": r.version,
                    "provides": r.provides,
                    "signer": r.signer,
                    "time_ms": r.time_ms,
                })
            })
            .collect();
        let errors: Vec<serde_json::Value> = errors
            .iter()
            .map(|(b, e)| json!({"blade": b, "error": e}))
            .collect();
        serde_json::to_string_pretty(&json!({"installed": rows, "errors": errors}))
            .unwrap_or_default()
    } else {
        let mut out: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.blade.clone(),
                    r.name.clone(),
                    r.version.clone(),
                    r.provides.join(" "),
                    r.signer.clone(),
                ]
            })
            .collect();
        out.extend(errors.iter().map(|(b, e)| {
            vec![
                b.clone(),
                "?".into(),
                String::new(),
                format!("[{e}]"),
                String::new(),
            ]
        }));
        super::table(
            &["BLADE", "PACKAGE", "VERSION", "PROVIDES", "SIGNER"],
            &out,
            None,
            false,
        )
    })
}

fn protocol(e: dci_proto::ProtoError) -> ClientError {
    ClientError::Protocol {
        path: PathBuf::from("control socket"),
        reason: e.to_string(),
    }
}
