//! External peerlets: any program that reads and writes envelopes on stdin and stdout, each
//! framed as on the mesh (a 4-byte big-endian length, then the envelope's XML), described by a
//! manifest `peerlets/<name>/peerlet.toml`:
//!
//! ```toml
//! app = "upper"                     # the app type it serves
//! command = ["python3", "upper.py"] # run from the manifest's directory
//! queue = 256                       # envelopes held while it starts or is busy
//! max_envelope_bytes = 1048576      # larger output is refused and the process stopped
//! ```
//!
//! With `mode = "wrap"` the manifest wraps an unmodified command-line program instead: each
//! request runs `command` plus the text of the payload's `<arg>` elements as further arguments
//! (killed after `timeout_ms`, each output capped at `max_output` bytes), and the answer carries
//! its stdout, stderr and exit code like `exec`'s. Anyone who can reach the peerlet chooses the
//! arguments, so wrap only programs that are safe with any.
//!
//! One process runs per instance; it is started on the first envelope for the instance (which
//! waits in the queue meanwhile) and killed when the instance is stopped. What it writes is
//! routed as if the instance sent it: the sender fields are overwritten with the instance's, so a
//! program cannot speak for another. A frame that is not a valid envelope is logged and skipped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use dci_peerlet::{Envelope, Identity, Outbox, Refusal};
use dci_proto::{frame, Limits};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// A parsed `peerlet.toml`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The app type the program serves.
    pub app: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Envelopes queued per instance before new ones are refused.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The largest envelope read from the program.
    #[serde(default = "default_max")]
    pub max_envelope_bytes: usize,
    /// `envelopes` (the program speaks envelopes) or `wrap` (a plain program run per request).
    #[serde(default)]
    pub mode: Mode,
    /// `wrap`: the longest a run may take, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// `wrap`: bytes kept of each of stdout and stderr.
    #[serde(default = "default_max_output")]
    pub max_output: usize,
    /// The message types it answers without changing anything (`*`: all), which a helper of a
    /// loaded blade may serve (see [`dci_peerlet::PeerletType::read_only`]).
    #[serde(default)]
    pub read_only: Vec<String>,
    /// The directory the program runs in (the manifest's).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// How an external peerlet talks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Envelopes framed on stdin and stdout, one process per instance.
    #[default]
    Envelopes,
    /// A plain program run once per request, arguments from the payload.
    Wrap,
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_max_output() -> usize {
    1 << 20
}

fn default_queue() -> usize {
    256
}

fn default_max() -> usize {
    dci_proto::DEFAULT_MAX_ENVELOPE_BYTES
}

/// Why a manifest was refused; one line naming the file.
#[derive(Debug, thiserror::Error)]
#[error("peerlet manifest {path}: {reason}")]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl Manifest {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let err = |reason: String| ManifestError {
            path: path.into(),
            reason: crate::config::one_line(&reason),
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut m: Manifest = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        if m.app.is_empty()
            || !m
                .app
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(err(format!("app {:?} is not 1+ of [A-Za-z0-9._-]", m.app)));
        }
        if m.command.is_empty() {
            return Err(err("command is empty".into()));
        }
        if m.queue == 0 || m.queue > 65_536 {
            return Err(err("queue must be 1 to 65536".into()));
        }
        m.dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(m)
    }

    /// Every `*/peerlet.toml` under `dir`: the good manifests, and one error per bad one (a bad
    /// manifest does not keep the others out).
    pub fn scan(dir: &Path) -> (Vec<Manifest>, Vec<ManifestError>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                let reason = crate::config::one_line(&e.to_string());
                return (
                    Vec::new(),
                    vec![ManifestError {
                        path: dir.into(),
                        reason,
                    }],
                );
            }
        };
        let (mut found, mut bad) = (Vec::new(), Vec::new());
        for entry in entries.flatten() {
            let path = entry.path().join("peerlet.toml");
            if path.is_file() {
                match Manifest::load(&path) {
                    Ok(m) => found.push(m),
                    Err(e) => bad.push(e),
                }
            }
        }
        found.sort_by(|a, b| a.app.cmp(&b.app));
        (found, bad)
    }
}

/// The host's side of a running (or starting) external instance. Dropping it stops the process.
pub struct Handle {
    queue: mpsc::Sender<Envelope>,
}

impl Handle {
    /// Starts the program for `identity` in the background; envelopes pushed meanwhile wait.
    pub fn start(manifest: Arc<Manifest>, identity: Identity, outbox: Arc<dyn Outbox>) -> Handle {
        let (tx, rx) = mpsc::channel(manifest.queue);
        tokio::spawn(run(manifest, identity, outbox, rx));
        Handle { queue: tx }
    }

    /// Queues `env` for the program.
    pub fn push(&self, env: Envelope) -> Result<(), Refusal> {
        self.queue.try_send(env).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                Refusal::new("busy", "the peerlet's queue is full")
            }
            mpsc::error::TrySendError::Closed(_) => {
                Refusal::new("peerlet-stopped", "the peerlet's process has stopped")
            }
        })
    }
}

async fn run(
    manifest: Arc<Manifest>,
    identity: Identity,
    outbox: Arc<dyn Outbox>,
    mut queue: mpsc::Receiver<Envelope>,
) {
    let app = &manifest.app;
    let mut child = match tokio::process::Command::new(&manifest.command[0])
        .args(&manifest.command[1..])
        .current_dir(&manifest.dir)
        .env("DCI_APP", app)
        .env("DCI_INSTANCE", identity.instance.to_string())
        .env("DCI_NODE", &identity.node)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(app = %app, "cannot start external peerlet {:?}: {e}", manifest.command[0]);
            // Answer what was queued, so that nothing waits for a program that never ran.
            queue.close();
            while let Some(env) = queue.recv().await {
                if env.kind == dci_peerlet::Kind::Request {
                    let refusal =
                        Refusal::new("peerlet-failed", format!("cannot start {app}: {e}"));
                    outbox.post(identity.reply(
                        &env,
                        dci_peerlet::Kind::Error,
                        refusal.to_payload(),
                    ));
                }
            }
            return;
        }
    };
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return;
    };
    let reader_identity = identity.clone();
    let max = manifest.max_envelope_bytes;
    let reader_app = app.clone();
    let reader = tokio::spawn(async move {
        let limits = Limits {
            max_envelope_bytes: max,
            ..Limits::default()
        };
        loop {
            match frame::read_frame(&mut stdout, max).await {
                Ok(Some(bytes)) => match Envelope::from_xml(&bytes, &limits) {
                    Ok(mut env) => {
                        env.sender.node = reader_identity.node.clone();
                        env.sender.blade = reader_identity.blade.clone();
                        env.sender.app = reader_identity.app.clone();
                        env.sender.instance = Some(reader_identity.instance);
                        env.epoch = reader_identity.epoch;
                        if !outbox.post(env) {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(app = %reader_app, "external peerlet wrote a bad envelope: {e}")
                    }
                },
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(app = %reader_app, "external peerlet output: {e}; stopping it");
                    return;
                }
            }
        }
    });
    while let Some(env) = queue.recv().await {
        let Ok(bytes) = frame::encode_frame(env.to_xml().as_bytes()) else {
            continue;
        };
        if let Err(e) = async {
            stdin.write_all(&bytes).await?;
            stdin.flush().await
        }
        .await
        {
            tracing::warn!(app = %app, "external peerlet input closed: {e}");
            break;
        }
    }
    // The instance was stopped (or the program closed its input): end the program.
    drop(stdin);
    reader.abort();
    let _ = child.kill().await;
}

/// A wrapped command-line program (see the module docs).
pub struct Wrapped(pub Arc<Manifest>);

impl dci_peerlet::Peerlet for Wrapped {
    fn handle(
        &mut self,
        env: &Envelope,
        ctx: &mut dci_peerlet::Context<'_>,
    ) -> Result<(), Refusal> {
        if env.kind != dci_peerlet::Kind::Request {
            return Ok(());
        }
        let mut args = self.0.command.clone();
        // A program named by a relative path lives beside its manifest.
        if args[0].contains('/') && Path::new(&args[0]).is_relative() {
            args[0] = self.0.dir.join(&args[0]).display().to_string();
        }
        args.extend(dci_peerlet_exec::args(&env.payload)?);
        let (manifest, later, request) = (Arc::clone(&self.0), ctx.later(), env.clone());
        std::thread::Builder::new()
            .name("dci-wrap".into())
            .spawn(move || {
                let timeout = std::time::Duration::from_millis(manifest.timeout_ms);
                later.answer(
                    &request,
                    dci_peerlet_exec::run(&args, timeout, manifest.max_output),
                );
            })
            .map_err(|e| Refusal::new("exec-failed", format!("cannot start a thread: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_manifest_is_named_and_does_not_keep_the_good_ones_out() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("peerlet.toml"), text).unwrap();
        };
        write("good", "app = \"good\"\ncommand = [\"true\"]\n");
        write("typo", "app = \"typo\"\ncommand = [\"true\"]\nqueu = 3\n");
        write("empty", "app = \"empty\"\ncommand = []\n");
        let (found, bad) = Manifest::scan(dir.path());
        assert_eq!(
            found.iter().map(|m| m.app.as_str()).collect::<Vec<_>>(),
            ["good"]
        );
        assert_eq!(found[0].mode, Mode::Envelopes);
        assert_eq!(bad.len(), 2);
        for e in &bad {
            let line = e.to_string();
            assert!(
                line.contains("peerlet.toml") && !line.contains('\n'),
                "{line}"
            );
        }
    }
}
