//! `exec`: runs a command on the node and answers with its standard output, standard error and
//! exit code. Only operators named in the agent's configuration may use it, each run has a time
//! limit (the process is killed when it passes) and each output is capped (the rest is
//! discarded, and the answer says so).
//!
//! Request (namespace [`NAMESPACE`]): `<exec timeout-ms="5000"><arg>uname</arg><arg>-n</arg></exec>`;
//! answer: `<result exit="0" timed-out="false" truncated="false"><stdout>…</stdout><stderr>…</stderr></result>`.
//! The command runs on a thread of its own, so the agent keeps routing meanwhile.
#![deny(missing_docs)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dci_peerlet::{
    escape, unescape, Context, Envelope, Kind, Payload, Peerlet, PeerletType, Refusal, Uuid,
};

/// The exec peerlet's namespace.
pub const NAMESPACE: &str = "urn:dci:exec:1";
/// Its application type.
pub const APP: &str = "exec";
/// The most arguments a request may carry.
pub const MAX_ARGS: usize = 256;

/// Who may run what, for how long.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Blade names or node ids whose operator (`control` or `task` app) may run commands.
    pub operators: Vec<String>,
    /// The longest run allowed; a request may ask for less.
    pub max_timeout: Duration,
    /// Bytes kept of each of stdout and stderr.
    pub max_output: usize,
}

impl Default for Policy {
    /// Nobody authorized, 60 s, 1 MiB.
    fn default() -> Self {
        Policy {
            operators: Vec::new(),
            max_timeout: Duration::from_secs(60),
            max_output: 1 << 20,
        }
    }
}

/// Makes exec instances under one policy.
pub struct ExecType(pub Policy);

impl PeerletType for ExecType {
    fn app(&self) -> &str {
        APP
    }

    fn create(&self, _instance: Uuid) -> Box<dyn Peerlet> {
        Box::new(Exec(self.0.clone()))
    }
}

/// One exec instance.
pub struct Exec(Policy);

impl Peerlet for Exec {
    fn handle(&mut self, env: &Envelope, ctx: &mut Context<'_>) -> Result<(), Refusal> {
        if env.kind != Kind::Request {
            return Err(Refusal::new("bad-kind", "exec only answers requests"));
        }
        let s = &env.sender;
        let operator = matches!(s.app.as_str(), "control" | "task")
            && self
                .0
                .operators
                .iter()
                .any(|o| o == &s.node || s.blade.as_deref() == Some(o.as_str()));
        if !operator {
            return Err(Refusal::new(
                "not-authorized",
                format!(
                    "{} ({}) is not an operator allowed to run commands here",
                    s.blade.as_deref().unwrap_or(&s.node),
                    s.app
                ),
            ));
        }
        let (args, timeout) = parse(&env.payload)?;
        let timeout = timeout.map_or(self.0.max_timeout, |t| t.min(self.0.max_timeout));
        let later = ctx.later();
        let request = env.clone();
        let max_output = self.0.max_output;
        std::thread::Builder::new()
            .name("dci-exec".into())
            .spawn(move || {
                let result = run(&args, timeout, max_output);
                later.answer(&request, result);
            })
            .map_err(|e| Refusal::new("exec-failed", format!("cannot start a thread: {e}")))?;
        Ok(())
    }
}

/// The arguments and the requested timeout of an `<exec>` payload.
fn parse(payload: &Payload) -> Result<(Vec<String>, Option<Duration>), Refusal> {
    let xml = payload.as_str();
    let bad = |m: &str| Refusal::new("bad-payload", m.to_owned());
    if !xml.trim_start().starts_with("<exec") || !xml.contains(NAMESPACE) {
        return Err(bad(
            "exec expects <exec xmlns=\"urn:dci:exec:1\"><arg>…</arg>…</exec>",
        ));
    }
    let timeout = match dci_peerlet::first_attribute(payload, "timeout-ms") {
        Some(v) => Some(Duration::from_millis(
            v.parse().map_err(|_| bad("timeout-ms is not a number"))?,
        )),
        None => None,
    };
    let args = args(payload)?;
    if args.is_empty() {
        return Err(bad("no command: give at least one <arg>"));
    }
    Ok((args, timeout))
}

/// The text of every `<arg>` element of a payload, in order (entities decoded).
pub fn args(payload: &Payload) -> Result<Vec<String>, Refusal> {
    let bad = |m: &str| Refusal::new("bad-payload", m.to_owned());
    let mut args = Vec::new();
    let mut rest = payload.as_str();
    while let Some(start) = rest.find("<arg>") {
        let after = &rest[start + 5..];
        let end = after
            .find("</arg>")
            .ok_or_else(|| bad("an <arg> is not closed"))?;
        if after[..end].contains('<') {
            return Err(bad("an <arg> holds markup"));
        }
        args.push(unescape(&after[..end]));
        if args.len() > MAX_ARGS {
            return Err(bad("too many arguments"));
        }
        rest = &after[end + 6..];
    }
    Ok(args)
}

/// Reads at most `cap` bytes of `r` and discards the rest; says whether anything was discarded.
fn capped(mut r: impl Read, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut cut = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return (kept, cut),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
}

/// Runs `args`, killing it after `timeout`; answers with the result payload.
pub fn run(args: &[String], timeout: Duration, max_output: usize) -> Result<Payload, Refusal> {
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Refusal::new("exec-failed", format!("cannot run {}: {e}", args[0])))?;
    let out = child
        .stdout
        .take()
        .map(|o| std::thread::spawn(move || capped(o, max_output)));
    let err = child
        .stderr
        .take()
        .map(|e| std::thread::spawn(move || capped(e, max_output)));
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= timeout => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let join = |h: Option<std::thread::JoinHandle<(Vec<u8>, bool)>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let ((stdout, cut_out), (stderr, cut_err)) = (join(out), join(err));
    let exit = status
        .and_then(|s| s.code())
        .map_or_else(|| "-1".to_string(), |c| c.to_string());
    let xml = format!(
        "<result xmlns=\"{NAMESPACE}\" exit=\"{exit}\" timed-out=\"{timed_out}\" truncated=\"{}\"><stdout>{}</stdout><stderr>{}</stderr></result>",
        cut_out || cut_err,
        escape(&String::from_utf8_lossy(&stdout)),
        escape(&String::from_utf8_lossy(&stderr)),
    );
    Payload::new(xml).map_err(|e| Refusal::new("internal", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_command_answers_with_its_output_and_exit_code() {
        let p = run(
            &args(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(5),
            1024,
        )
        .unwrap();
        let x = p.as_str();
        assert!(
            x.contains("exit=\"3\"")
                && x.contains("<stdout>out\n</stdout>")
                && x.contains("<stderr>err\n</stderr>"),
            "{x}"
        );
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_and_said_so() {
        let start = Instant::now();
        let p = run(&args(&["sleep", "5"]), Duration::from_millis(100), 1024).unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(p.as_str().contains("timed-out=\"true\""), "{}", p.as_str());
    }

    #[test]
    fn output_past_the_cap_is_cut_and_said_so() {
        let p = run(
            &args(&["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"]),
            Duration::from_secs(5),
            10,
        )
        .unwrap();
        assert!(
            p.as_str().contains("truncated=\"true\"")
                && p.as_str().contains("<stdout>xxxxxxxxxx</stdout>")
        );
    }

    #[test]
    fn a_payload_is_read_into_arguments_and_bad_ones_refused() {
        let p = Payload::new("<exec xmlns=\"urn:dci:exec:1\" timeout-ms=\"50\"><arg>echo</arg><arg>a &amp; b</arg></exec>").unwrap();
        assert_eq!(
            parse(&p).unwrap(),
            (args(&["echo", "a & b"]), Some(Duration::from_millis(50)))
        );
        let none = Payload::new("<exec xmlns=\"urn:dci:exec:1\"/>").unwrap();
        assert_eq!(parse(&none).unwrap_err().code, "bad-payload");
    }
}
