//! `exec`: runs a command on the node and answers with its standard output, standard error and
//! exit code. Only operators named in the agent's configuration may use it, each run has a time
//! limit (the process is killed when it passes) and each output is capped (the rest is
//! discarded, and the answer says so).
//!
//! Request (namespace [`NAMESPACE`]): `<exec timeout-ms="5000" stream="true"><arg>uname</arg>
//! <arg>-n</arg><stdin>BASE64</stdin></exec>` (`stream` and `stdin` optional); answer:
//! `<result exit="0" timed-out="false" truncated="false"><stdout>…</stdout><stderr>…</stderr></result>`.
//! With `stream="true"` the output goes out as it comes instead, in events correlated to the
//! request, `<output seq="0"><stdout>…</stdout><stderr>…</stderr></output>` (seq counting from
//! 0, whole lines unless a line passes [`CHUNK_BYTES`]), and the answer carries none of it but
//! `chunks="N"`, the number of events sent, so that a receiver can tell whether it lost any.
//! The command runs on a thread of its own, so the agent keeps routing meanwhile; while the
//! agent's queue is full that thread waits, and so does the command once its pipe is full.
#![deny(missing_docs)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use dci_peerlet::{
    check_operator, escape, unescape, Context, Envelope, Kind, Payload, Peerlet, PeerletType,
    Refusal, Uuid,
};

/// The exec peerlet's namespace.
pub const NAMESPACE: &str = "urn:dci:exec:1";
/// Its application type.
pub const APP: &str = "exec";
/// The most arguments a request may carry.
pub const MAX_ARGS: usize = 256;
/// The largest standard input a request may carry (before base64, which must still fit in one
/// envelope).
pub const MAX_STDIN: usize = 512 << 10;
/// The most output bytes of one stream in one streamed chunk.
pub const CHUNK_BYTES: usize = 16 << 10;
/// How long streamed output may wait to be sent with more.
const CHUNK_DELAY: Duration = Duration::from_millis(20);

/// Who may run what, for how long.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Blade names or node ids whose operator (`control` or `task` app) may run commands.
    pub operators: Vec<String>,
    /// The longest run allowed; a request may ask for less.
    pub max_timeout: Duration,
    /// Bytes kept (or streamed) of each of stdout and stderr.
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
        check_operator(&env.sender, &self.0.operators, "run commands")?;
        let request = parse(&env.payload)?;
        let job = Job {
            timeout: request
                .timeout
                .map_or(self.0.max_timeout, |t| t.min(self.0.max_timeout)),
            args: request.args,
            stdin: request.stdin,
            max_output: self.0.max_output,
        };
        let later = ctx.later();
        let request_env = env.clone();
        let stream = request.stream;
        std::thread::Builder::new()
            .name("dci-exec".into())
            .spawn(move || {
                let mut send = |chunk: Payload| {
                    let event = later.identity().reply(&request_env, Kind::Event, chunk);
                    later.post(event);
                };
                let chunks: Option<&mut dyn FnMut(Payload)> =
                    if stream { Some(&mut send) } else { None };
                let result = run_job(&job, chunks);
                later.answer(&request_env, result);
            })
            .map_err(|e| Refusal::new("exec-failed", format!("cannot start a thread: {e}")))?;
        Ok(())
    }
}

/// An `<exec>` request as read.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    args: Vec<String>,
    timeout: Option<Duration>,
    stream: bool,
    stdin: Option<Vec<u8>>,
}

/// Reads an `<exec>` payload.
fn parse(payload: &Payload) -> Result<Request, Refusal> {
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
    let stream = match dci_peerlet::first_attribute(payload, "stream") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("stream is neither true nor false")),
    };
    let stdin = match xml.find("<stdin>") {
        None => None,
        Some(start) => {
            let after = &xml[start + 7..];
            let end = after
                .find("</stdin>")
                .ok_or_else(|| bad("<stdin> is not closed"))?;
            let text: String = after[..end].split_whitespace().collect();
            if text.len() > MAX_STDIN.div_ceil(3) * 4 {
                return Err(bad("<stdin> is over the 512 KiB limit"));
            }
            Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| bad("<stdin> is not base64"))?,
            )
        }
    };
    let args = args(payload)?;
    if args.is_empty() {
        return Err(bad("no command: give at least one <arg>"));
    }
    Ok(Request {
        args,
        timeout,
        stream,
        stdin,
    })
}

/// The `<stdin>` element carrying `data` in a request.
pub fn stdin_element(data: &[u8]) -> String {
    format!(
        "<stdin>{}</stdin>",
        base64::engine::general_purpose::STANDARD.encode(data)
    )
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

/// One command to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The program and its arguments.
    pub args: Vec<String>,
    /// It is killed after this.
    pub timeout: Duration,
    /// What it reads on its standard input (none: /dev/null).
    pub stdin: Option<Vec<u8>>,
    /// Bytes kept (or streamed) of each of stdout and stderr; the rest is discarded.
    pub max_output: usize,
}

/// One output stream of a running command: what is kept or waits to be streamed.
#[derive(Default)]
struct Output {
    /// Bytes not yet streamed (streaming), or all of them (gathering).
    pending: Vec<u8>,
    taken: usize,
    cut: bool,
    open: bool,
}

impl Output {
    fn take(&mut self, bytes: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.taken);
        let n = bytes.len().min(room);
        self.pending.extend_from_slice(&bytes[..n]);
        self.taken += n;
        self.cut |= bytes.len() > room;
    }

    /// What may go out in a chunk now: whole lines within [`CHUNK_BYTES`], or a piece of a
    /// longer line (not cutting a character), or everything at the end.
    fn ready(&mut self, last: bool) -> Vec<u8> {
        if last {
            return std::mem::take(&mut self.pending);
        }
        let head = &self.pending[..self.pending.len().min(CHUNK_BYTES)];
        let lines = head.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
        let n = match lines {
            Some(n) => n,
            None if head.len() < CHUNK_BYTES => 0,
            // One line longer than a chunk: cut it, but not inside a character.
            None => match std::str::from_utf8(head) {
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                _ => CHUNK_BYTES,
            },
        };
        self.pending.drain(..n).collect()
    }
}

/// Runs `args`, killing it after `timeout`; answers with the result payload.
pub fn run(args: &[String], timeout: Duration, max_output: usize) -> Result<Payload, Refusal> {
    let job = Job {
        args: args.to_vec(),
        timeout,
        stdin: None,
        max_output,
    };
    run_job(&job, None)
}

/// Runs `job`. With `chunks`, its output goes there as it comes (`<output>` payloads) and the
/// result carries only the count; without, the result carries the output.
pub fn run_job(job: &Job, mut chunks: Option<&mut dyn FnMut(Payload)>) -> Result<Payload, Refusal> {
    let args = &job.args;
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(if job.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Refusal::new("exec-failed", format!("cannot run {}: {e}", args[0])))?;
    if let (Some(mut pipe), Some(data)) = (child.stdin.take(), job.stdin.clone()) {
        // Its own thread: a command may read its input only after writing much output.
        std::thread::spawn(move || pipe.write_all(&data));
    }
    // Both readers feed one bounded channel, so a stalled receiver stalls the command too.
    let (tx, rx) = mpsc::sync_channel::<(usize, Option<Vec<u8>>)>(64);
    let readers: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    ];
    let mut outputs: [Output; 2] = Default::default();
    for (i, r) in readers.into_iter().enumerate() {
        let Some(mut r) = r else { continue };
        outputs[i].open = true;
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => return tx.send((i, None)),
                    Ok(n) => {
                        if tx.send((i, Some(buf[..n].to_vec()))).is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + job.timeout;
    let mut timed_out = false;
    let mut status = None;
    let mut exited = false;
    let mut seq = 0u64;
    let mut last_sent = Instant::now();
    loop {
        if !exited {
            match child.try_wait() {
                Ok(Some(s)) => (exited, status) = (true, Some(s)),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = child.kill();
                    (exited, status) = (true, child.wait().ok());
                }
                Ok(None) => {}
                Err(_) => exited = true,
            }
        }
        let open = outputs.iter().any(|o| o.open);
        // A descendant may hold the pipes open after the command ended: wait for it no longer
        // than the time limit.
        if exited && (!open || Instant::now() >= deadline) {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok((i, Some(bytes))) => outputs[i].take(&bytes, job.max_output),
            Ok((i, None)) => outputs[i].open = false,
            Err(_) => {}
        }
        if let Some(send) = chunks.as_mut() {
            let full = outputs.iter().any(|o| o.pending.len() >= CHUNK_BYTES);
            if full || last_sent.elapsed() >= CHUNK_DELAY {
                seq += stream_chunk(&mut outputs, seq, false, send);
                last_sent = Instant::now();
            }
        }
    }
    while let Ok((i, Some(bytes))) = rx.try_recv() {
        outputs[i].take(&bytes, job.max_output);
    }
    let exit = status
        .and_then(|s| s.code())
        .map_or_else(|| "-1".to_string(), |c| c.to_string());
    let truncated = outputs.iter().any(|o| o.cut);
    let xml = match chunks {
        Some(send) => {
            seq += stream_chunk(&mut outputs, seq, true, send);
            format!(
                "<result xmlns=\"{NAMESPACE}\" exit=\"{exit}\" timed-out=\"{timed_out}\" truncated=\"{truncated}\" chunks=\"{seq}\"/>"
            )
        }
        None => format!(
            "<result xmlns=\"{NAMESPACE}\" exit=\"{exit}\" timed-out=\"{timed_out}\" truncated=\"{truncated}\"><stdout>{}</stdout><stderr>{}</stderr></result>",
            escape(&String::from_utf8_lossy(&outputs[0].pending)),
            escape(&String::from_utf8_lossy(&outputs[1].pending)),
        ),
    };
    Payload::new(xml).map_err(|e| Refusal::new("internal", e.to_string()))
}

/// Sends what is ready of both outputs as chunk `seq`; returns how many chunks it sent (0 or 1).
fn stream_chunk(
    outputs: &mut [Output; 2],
    seq: u64,
    last: bool,
    send: &mut dyn FnMut(Payload),
) -> u64 {
    let mut body = String::new();
    for (name, o) in ["stdout", "stderr"].iter().zip(outputs.iter_mut()) {
        let bytes = o.ready(last);
        if !bytes.is_empty() {
            body.push_str(&format!(
                "<{name}>{}</{name}>",
                escape(&String::from_utf8_lossy(&bytes))
            ));
        }
    }
    if body.is_empty() {
        return 0;
    }
    let xml = format!("<output xmlns=\"{NAMESPACE}\" seq=\"{seq}\">{body}</output>");
    match Payload::new(xml) {
        Ok(p) => {
            send(p);
            1
        }
        Err(_) => 0,
    }
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
            Request {
                args: args(&["echo", "a & b"]),
                timeout: Some(Duration::from_millis(50)),
                stream: false,
                stdin: None,
            }
        );
        let none = Payload::new("<exec xmlns=\"urn:dci:exec:1\"/>").unwrap();
        assert_eq!(parse(&none).unwrap_err().code, "bad-payload");
    }

    #[test]
    fn streamed_output_comes_in_numbered_chunks_of_whole_lines_and_loses_nothing() {
        let job = Job {
            args: args(&[
                "sh",
                "-c",
                "i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; echo err >&2",
            ]),
            timeout: Duration::from_secs(20),
            stdin: None,
            max_output: 1 << 20,
        };
        let mut chunks = Vec::new();
        let mut sink = |p: Payload| chunks.push(p.into_string());
        let result = run_job(&job, Some(&mut sink)).unwrap();
        let mut stdout = String::new();
        for (n, c) in chunks.iter().enumerate() {
            assert!(c.contains(&format!("seq=\"{n}\"")), "{c}");
            if let Some(start) = c.find("<stdout>") {
                let text = &c[start + 8..c.find("</stdout>").unwrap()];
                assert!(text.ends_with('\n'), "a chunk cut a line: {text:?}");
                stdout.push_str(text);
            }
        }
        let expected: String = (0..3000).map(|i| format!("line{i}\n")).collect();
        assert_eq!(stdout, expected);
        assert!(chunks.iter().any(|c| c.contains("<stderr>err\n</stderr>")));
        assert!(
            result
                .as_str()
                .contains(&format!("chunks=\"{}\"", chunks.len()))
                && !result.as_str().contains("<stdout>"),
            "{}",
            result.as_str()
        );
    }

    #[test]
    fn standard_input_reaches_the_command_and_travels_as_base64() {
        let data = b"one\ntwo & <three>\n".to_vec();
        let payload = Payload::new(format!(
            "<exec xmlns=\"urn:dci:exec:1\" stream=\"true\"><arg>cat</arg>{}</exec>",
            stdin_element(&data)
        ))
        .unwrap();
        let request = parse(&payload).unwrap();
        assert!(request.stream);
        assert_eq!(request.stdin.as_deref(), Some(&data[..]));
        let job = Job {
            args: request.args,
            timeout: Duration::from_secs(5),
            stdin: request.stdin,
            max_output: 1024,
        };
        let p = run_job(&job, None).unwrap();
        assert!(
            p.as_str()
                .contains("<stdout>one\ntwo &amp; &lt;three&gt;\n</stdout>"),
            "{}",
            p.as_str()
        );
        let bad =
            Payload::new("<exec xmlns=\"urn:dci:exec:1\"><arg>cat</arg><stdin>!!</stdin></exec>")
                .unwrap();
        assert_eq!(parse(&bad).unwrap_err().code, "bad-payload");
    }
}
