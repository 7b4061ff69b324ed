//! `dcish exec SET -- CMD ARGS...` and `dcish nodeset`: a command run on a node set through each
//! blade's `exec` peerlet, answers gathered by blade.
//!
//! One request goes to the literal set (`group:set:...`), or, when the set is larger than the
//! fan-out, one per blade with at most that many running at once (each on its own control
//! connection). The local agent fans each out and streams the answers back as they come: the
//! blades' output in numbered chunks, then each one's result. Blades the member table already
//! holds dead or gone are not asked, and are reported as such; a blade that did not answer by
//! the command's time limit (and a margin) is reported too, without holding the others up.
//! Identical outputs are printed once under a folded header, as `clush -b` does; `--lines`
//! prints each line as it arrives prefixed with its blade, as pdsh does, and keeps nothing.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use clap::Args;
use dci_proto::control::{members_from_payload, ControlRequest, MemberInfo};
use dci_proto::{Destination, Envelope, Kind, Payload, Target};
use serde_json::json;

use super::client::{Client, ClientError};
use super::msg::{children, inner, operator, stream_answers, usage};
use super::nodeset::{self, Candidate};
use crate::router::core::NODE_SET_PREFIX;

/// `dcish exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The blades: a node set (`blade-[01-04]`, `@all`, `@active`, `@spares`, `@zone:NAME`, lists).
    pub set: String,
    /// Leave these blades out (a node set).
    #[arg(short = 'x', long)]
    pub exclude: Option<String>,
    /// Seconds a command may run on each blade before it is killed (the agent's
    /// `exec_timeout_ms` caps it).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Print every output line as it arrives, as `blade: line`, instead of gathering identical
    /// outputs at the end.
    #[arg(long)]
    pub lines: bool,
    /// Send dcish's standard input (512 KiB at most) to the command on every blade.
    #[arg(long)]
    pub stdin: bool,
    /// How many blades run the command at once.
    #[arg(short, long, default_value_t = 64)]
    pub fanout: usize,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `dcish nodeset`.
#[derive(Debug, Args)]
pub struct NodesetArgs {
    /// The node set to resolve against the mesh.
    pub set: String,
    /// Leave these out (a node set).
    #[arg(short = 'x', long)]
    pub exclude: Option<String>,
    /// Print the folded form (`blade-[01-03]`) instead of one name per line.
    #[arg(short, long)]
    pub fold: bool,
}

/// What one blade did.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Why it did not run or did not finish: `code: message`.
    error: Option<String>,
}

impl Outcome {
    fn failed(error: String) -> Outcome {
        Outcome {
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            error: Some(error),
        }
    }

    fn ok(&self) -> bool {
        self.error.is_none() && self.exit_code == Some(0)
    }
}

/// Names as node sets see them, each with the member answering to it: a member acting as a
/// blade goes by the blade's name (a spare that took `b3` over is `b3`, no longer itself), the
/// others by their own. Where two claim one blade (its old holder, dead, still announcing it),
/// the higher epoch wins, then the live one.
pub(super) fn blades(members: &[MemberInfo]) -> Vec<(String, &MemberInfo)> {
    let mut by_name: BTreeMap<String, &MemberInfo> = BTreeMap::new();
    let rank = |m: &MemberInfo| (m.blade.as_ref().map_or(0, |(_, e)| *e), m.state == "alive");
    for m in members {
        let name = m.blade.as_ref().map_or(&m.name, |(b, _)| b).clone();
        match by_name.get(&name) {
            Some(other) if rank(other) >= rank(m) => {}
            _ => {
                by_name.insert(name, m);
            }
        }
    }
    by_name.into_iter().collect()
}

/// The member table as node sets see it.
pub(crate) async fn members(client: &mut Client) -> Result<Vec<MemberInfo>, ClientError> {
    let payload = client.request(ControlRequest::Nodes.to_payload()).await?;
    members_from_payload(&payload).map_err(|e| ClientError::Refused {
        code: "bad-answer".into(),
        message: e.to_string(),
    })
}

pub(super) fn resolve(
    members: &[MemberInfo],
    set: &str,
    exclude: Option<&str>,
) -> Result<Vec<String>, ClientError> {
    let candidates: Vec<Candidate> = blades(members)
        .into_iter()
        .filter(|(_, m)| m.state != "left")
        .map(|(name, m)| Candidate {
            name,
            role: if m.blade.is_some() {
                "active".into()
            } else {
                m.role.clone()
            },
            zone: m.zone.clone(),
        })
        .collect();
    let names = nodeset::resolve(set, exclude, &candidates).map_err(|e| usage(e.to_string()))?;
    if names.is_empty() {
        return Err(usage(format!("the node set {set:?} selects no blade")));
    }
    Ok(names)
}

/// Runs `dcish nodeset`.
pub async fn nodeset(
    client: &mut Client,
    args: &NodesetArgs,
    json: bool,
) -> Result<String, ClientError> {
    let members = members(client).await?;
    let names = resolve(&members, &args.set, args.exclude.as_deref())?;
    Ok(if json {
        serde_json::to_string_pretty(&names).unwrap_or_default()
    } else if args.fold {
        nodeset::fold(&names)
    } else {
        names.join("\n")
    })
}

/// The `exec` peerlet's request for `command`, its output streamed.
fn request_payload(
    command: &[String],
    timeout_ms: u64,
    stdin: Option<&[u8]>,
) -> Result<Payload, ClientError> {
    let mut xml = format!(
        "<exec xmlns=\"{}\" timeout-ms=\"{timeout_ms}\" stream=\"true\">",
        dci_peerlet_exec::NAMESPACE
    );
    for arg in command {
        xml.push_str(&format!("<arg>{}</arg>", dci_peerlet::escape(arg)));
    }
    if let Some(data) = stdin {
        xml.push_str(&dci_peerlet_exec::stdin_element(data));
    }
    xml.push_str("</exec>");
    Payload::new(xml).map_err(|e| usage(format!("the command is too large: {e}")))
}

/// Reads one answer of the `exec` peerlet.
fn outcome_of(answer: &Envelope) -> Outcome {
    if answer.kind == Kind::Error {
        let (code, message) = dci_proto::control::error_from_payload(&answer.payload)
            .unwrap_or_else(|| ("error".into(), answer.payload.as_str().to_owned()));
        return Outcome::failed(format!("{code}: {message}"));
    }
    let bad = || Outcome::failed(format!("bad answer: {}", answer.payload.as_str()));
    let Ok(elements) = children(answer.payload.as_str()) else {
        return bad();
    };
    let Some((attrs, whole)) = elements.into_iter().next() else {
        return bad();
    };
    let mut outcome = Outcome {
        exit_code: attrs.get("exit").and_then(|e| e.parse().ok()),
        stdout: String::new(),
        stderr: String::new(),
        error: None,
    };
    (outcome.stdout, outcome.stderr) = output_of(whole);
    if attrs.get("timed-out").map(String::as_str) == Some("true") {
        outcome.error = Some("timed-out: killed after the time limit".into());
    }
    outcome
}

/// The `<stdout>` and `<stderr>` texts inside an element (a result or a streamed chunk).
fn output_of(whole: &str) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    for (a, part) in children(inner(whole)).unwrap_or_default() {
        let text = dci_peerlet::unescape(inner(part));
        match a.get("").map(String::as_str) {
            Some("stdout") => out = text,
            Some("stderr") => err = text,
            _ => {}
        }
    }
    (out, err)
}

/// Chunks of one blade held until the ones before them arrive, at most; past it the blade's
/// output is reported lost (chunks from one blade come in order, so this never fills).
const MAX_HELD: usize = 1024;

/// One blade's run as its answers arrive.
#[derive(Default)]
struct Run {
    /// What it printed (gathered modes); with `--lines`, only the unfinished last lines.
    stdout: String,
    stderr: String,
    next_seq: u64,
    held: BTreeMap<u64, (String, String)>,
    lost: bool,
    outcome: Option<Outcome>,
}

/// The answers of every blade, printed as they arrive with `--lines`.
struct Progress {
    runs: BTreeMap<String, Run>,
    /// Member (node id, name), to tell which blade a router's refusal is about.
    ids: Vec<(String, String)>,
    lines: bool,
}

impl Progress {
    fn new(blades: &[String], members: &[MemberInfo], lines: bool) -> Progress {
        Progress {
            runs: blades.iter().map(|b| (b.clone(), Run::default())).collect(),
            ids: members
                .iter()
                .map(|m| (m.id.clone(), m.name.clone()))
                .collect(),
            lines,
        }
    }

    /// The blade an answer is about: its sender, or for a router's refusal the member it names
    /// (`no route to node ID`, `no live member holds blade NAME`); `None` if it names none.
    fn blade_of(&self, answer: &Envelope) -> Option<String> {
        let sender = answer
            .sender
            .blade
            .as_deref()
            .unwrap_or(&answer.sender.node);
        if answer.kind != Kind::Error || answer.sender.app == dci_peerlet_exec::APP {
            return Some(sender.to_owned());
        }
        let text = answer.payload.as_str();
        let by_id = self.ids.iter().find(|(id, _)| text.contains(id.as_str()));
        let by_name = || {
            self.runs.keys().find(|name| {
                text.split(|c: char| !(c.is_alphanumeric() || "-_.".contains(c)))
                    .any(|word| word == name.as_str())
            })
        };
        by_id.map(|(_, name)| name).or_else(by_name).cloned()
    }

    fn take(&mut self, answer: Envelope) {
        let Some(name) = self.blade_of(&answer) else {
            return;
        };
        let Some(run) = self.runs.get_mut(&name) else {
            return;
        };
        if answer.kind == Kind::Event {
            let seq = dci_peerlet::first_attribute(&answer.payload, "seq")
                .and_then(|s| s.parse::<u64>().ok());
            let chunk = children(answer.payload.as_str())
                .ok()
                .and_then(|e| e.into_iter().next())
                .map(|(_, whole)| output_of(whole));
            let (Some(seq), Some(chunk)) = (seq, chunk) else {
                return;
            };
            if seq >= run.next_seq && !run.lost {
                run.held.insert(seq, chunk);
                run.lost = run.held.len() > MAX_HELD;
            }
            while let Some(chunk) = run.held.remove(&run.next_seq) {
                run.next_seq += 1;
                run.stdout.push_str(&chunk.0);
                run.stderr.push_str(&chunk.1);
                if self.lines {
                    print_lines(&name, run, false);
                }
            }
            return;
        }
        if run.outcome.is_some() {
            return;
        }
        let mut outcome = outcome_of(&answer);
        let sent = dci_peerlet::first_attribute(&answer.payload, "chunks")
            .and_then(|c| c.parse::<u64>().ok());
        if let Some(sent) = sent.filter(|&n| n != run.next_seq || run.lost) {
            outcome.error = Some(format!(
                "lost-output: {} of {sent} output chunks arrived in order",
                run.next_seq
            ));
        }
        // A result may carry output itself (an agent that did not stream it).
        run.stdout.push_str(&std::mem::take(&mut outcome.stdout));
        run.stderr.push_str(&std::mem::take(&mut outcome.stderr));
        if self.lines {
            print_lines(&name, run, true);
            if let Some(status) = status_line(&outcome) {
                let _ = writeln!(std::io::stdout().lock(), "{name}: {status}");
            }
        } else {
            outcome.stdout = std::mem::take(&mut run.stdout);
            outcome.stderr = std::mem::take(&mut run.stderr);
        }
        run.outcome = Some(outcome);
    }

    /// Every blade's outcome; a blade without one did not answer in time (or `why`).
    fn outcomes(self, why: &BTreeMap<String, String>) -> BTreeMap<String, Outcome> {
        self.runs
            .into_iter()
            .map(|(name, run)| {
                let outcome = run.outcome.unwrap_or_else(|| {
                    let error = why.get(&name).cloned();
                    Outcome::failed(
                        error.unwrap_or_else(|| "no-answer: did not answer in time".into()),
                    )
                });
                (name, outcome)
            })
            .collect()
    }
}

/// Prints the finished lines of a blade's output, `blade: line` (stderr's on stderr), keeping
/// the unfinished last ones unless `all`.
fn print_lines(name: &str, run: &mut Run, all: bool) {
    for (text, to_stderr) in [(&mut run.stdout, false), (&mut run.stderr, true)] {
        let end = if all {
            text.len()
        } else {
            text.rfind('\n').map_or(0, |i| i + 1)
        };
        if end == 0 {
            continue;
        }
        let mut out = String::with_capacity(end + 16 * (end / 40 + 1));
        for line in text[..end].lines() {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(line);
            out.push('\n');
        }
        text.drain(..end);
        let _ = if to_stderr {
            std::io::stderr().lock().write_all(out.as_bytes())
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(out.as_bytes()).and_then(|()| o.flush())
        };
    }
}

/// Reads the standard input to send, refusing more than the exec peerlet takes.
fn read_stdin() -> Result<Vec<u8>, ClientError> {
    let max = dci_peerlet_exec::MAX_STDIN;
    let mut data = Vec::new();
    std::io::stdin()
        .take(max as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| usage(format!("--stdin: cannot read standard input: {e}")))?;
    if data.len() > max {
        return Err(usage(format!(
            "--stdin: standard input is over {} KiB, the most one command can carry",
            max >> 10
        )));
    }
    Ok(data)
}

/// Runs `dcish exec`: prints the outputs; fails, naming the blades, when any did not succeed.
pub async fn exec(client: &mut Client, args: &ExecArgs, json: bool) -> Result<String, ClientError> {
    if !(args.timeout > 0.0 && args.timeout <= 86_400.0) {
        return Err(usage(
            "--timeout must be between 0 and 86400 seconds".into(),
        ));
    }
    if args.fanout == 0 {
        return Err(usage("--fanout must be at least 1".into()));
    }
    let stdin = if args.stdin {
        Some(read_stdin()?)
    } else {
        None
    };
    let members = members(client).await?;
    let names = resolve(&members, &args.set, args.exclude.as_deref())?;
    let by_blade = blades(&members);
    let state = |name: &str| {
        by_blade
            .iter()
            .find(|(n, _)| n == name)
            .map_or("unknown", |(_, m)| m.state.as_str())
    };
    let mut why = BTreeMap::new();
    let mut reachable = Vec::new();
    for name in &names {
        match state(name) {
            s @ ("dead" | "left") => {
                why.insert(name.clone(), format!("{s}: not run"));
            }
            _ => reachable.push(name.clone()),
        }
    }
    let timeout_ms = (args.timeout * 1000.0) as u64;
    let payload = request_payload(&args.command, timeout_ms, stdin.as_deref())?;
    let wait = Duration::from_millis(timeout_ms) + crate::router::ANSWER_MARGIN;
    // Within the fan-out, one request for the whole set; past it, one per blade.
    let jobs: VecDeque<Vec<String>> = if reachable.is_empty() {
        VecDeque::new()
    } else if reachable.len() <= args.fanout {
        VecDeque::from([reachable.clone()])
    } else {
        reachable.iter().map(|b| vec![b.clone()]).collect()
    };
    let workers = args.fanout.min(jobs.len());
    let jobs = Mutex::new(jobs);
    let failures = Mutex::new(BTreeMap::new());
    let path = client.path().to_owned();
    let mut more = Vec::new();
    for _ in 1..workers {
        // Fewer connections if the agent takes no more: the jobs only run fewer at once.
        match Client::connect(&path).await {
            Ok(c) => more.push(c),
            Err(_) => break,
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Envelope>(1024);
    let job = Job {
        payload: &payload,
        wait,
        jobs: &jobs,
        failures: &failures,
    };
    let runs = futures::future::join_all(
        std::iter::once(client)
            .chain(more.iter_mut())
            .map(|c| job.work(c, tx.clone())),
    );
    drop(tx);
    let mut progress = Progress::new(&names, &members, args.lines && !json);
    let gather = async {
        while let Some(answer) = rx.recv().await {
            progress.take(answer);
        }
    };
    tokio::join!(runs, gather);
    why.extend(failures.into_inner().unwrap_or_else(|p| p.into_inner()));
    let unanswered: Vec<String> = progress
        .runs
        .iter()
        .filter(|(_, r)| r.outcome.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    let outcomes = progress.outcomes(&why);
    let text = if json {
        json_of(&names, &outcomes)
    } else if args.lines {
        // The answers were printed as they came; what never came is said last.
        unanswered
            .iter()
            .filter_map(|n| Some(format!("{n}: {}", status_line(outcomes.get(n)?)?)))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        gathered(&outcomes)
    };
    let failed: Vec<String> = names
        .iter()
        .filter(|n| !outcomes.get(*n).is_some_and(Outcome::ok))
        .cloned()
        .collect();
    if failed.is_empty() {
        return Ok(text);
    }
    if !text.is_empty() {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
    Err(ClientError::Refused {
        code: "exec".into(),
        message: format!(
            "{} of {} blade(s) failed: {}",
            failed.len(),
            names.len(),
            nodeset::fold(&failed)
        ),
    })
}

/// What every connection of one `dcish exec` shares: the request, and the blades left to run.
struct Job<'a> {
    payload: &'a Payload,
    wait: Duration,
    jobs: &'a Mutex<VecDeque<Vec<String>>>,
    /// Blades whose request failed as a whole, and why.
    failures: &'a Mutex<BTreeMap<String, String>>,
}

impl Job<'_> {
    /// Takes sets of blades off the queue and runs the command on each, until none is left;
    /// the answers go to `tx` as they arrive.
    async fn work(&self, client: &mut Client, tx: tokio::sync::mpsc::Sender<Envelope>) {
        loop {
            let next = lock(self.jobs).pop_front();
            let Some(blades) = next else { return };
            let env = Envelope::request(
                operator(),
                Target {
                    to: Destination::Group(format!("{NODE_SET_PREFIX}{}", blades.join(","))),
                    app: Some(dci_peerlet_exec::APP.into()),
                    instance: None,
                },
                self.payload.clone(),
            );
            let Err(e) = stream_answers(client, &env, self.wait, &tx).await else {
                continue;
            };
            lock(self.failures).extend(blades.into_iter().map(|b| (b, e.to_string())));
            // The connection is out of step after a failure: go on with a new one.
            match Client::connect(client.path()).await {
                Ok(c) => *client = c,
                Err(_) => return,
            }
        }
    }
}

/// A lock that a panicked holder did not spoil (the data are plain collections).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn json_of(names: &[String], outcomes: &BTreeMap<String, Outcome>) -> String {
    let rows: Vec<serde_json::Value> = names
        .iter()
        .filter_map(|n| {
            let o = outcomes.get(n)?;
            Some(json!({
                "blade": n,
                "exit_code": o.exit_code,
                "stdout": o.stdout,
                "stderr": o.stderr,
                "error": o.error,
            }))
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}

/// How a blade's run ended, if not well: `[exit 3]`, `[timed-out: …]`.
fn status_line(o: &Outcome) -> Option<String> {
    match (&o.error, o.exit_code) {
        (Some(e), _) => Some(format!("[{e}]")),
        (None, Some(0)) => None,
        (None, code) => Some(format!("[exit {}]", exit_text(code))),
    }
}

fn exit_text(code: Option<i32>) -> String {
    code.map_or_else(|| "by signal".into(), |c| c.to_string())
}

/// `clush -b`'s form: blades with identical results under one folded header.
fn gathered(outcomes: &BTreeMap<String, Outcome>) -> String {
    let mut groups: Vec<(&Outcome, Vec<String>)> = Vec::new();
    for (name, o) in outcomes {
        match groups.iter_mut().find(|(g, _)| *g == o) {
            Some((_, blades)) => blades.push(name.clone()),
            None => groups.push((o, vec![name.clone()])),
        }
    }
    let mut out = String::new();
    for (o, blades) in &mut groups {
        let header = nodeset::fold(&nodeset::sorted(blades.drain(..)));
        let status = status_line(o).map_or_else(String::new, |s| format!(" {s}"));
        out.push_str(&format!(
            "---------------\n{header}{status}\n---------------\n"
        ));
        out.push_str(&o.stdout);
        if !o.stderr.is_empty() {
            out.push_str(&o.stderr);
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dci_proto::Sender;

    fn member(name: &str, state: &str, role: &str, blade: Option<(&str, u64)>) -> MemberInfo {
        MemberInfo {
            id: format!("id-{name}"),
            name: name.into(),
            state: state.into(),
            role: role.into(),
            zone: "z".into(),
            incarnation: 1,
            last_heard_ms: 0,
            version: String::new(),
            addrs: Vec::new(),
            degraded: false,
            resources: [None; 4],
            channels: Vec::new(),
            blade: blade.map(|(b, e)| (b.to_string(), e)),
        }
    }

    #[test]
    fn a_spare_that_took_a_blade_over_goes_by_the_blade_s_name() {
        let members = [
            member("b1", "alive", "active", Some(("b1", 1))),
            member("b3", "dead", "active", Some(("b3", 1))),
            member("s1", "alive", "active", Some(("b3", 2))),
            member("s2", "alive", "spare", None),
        ];
        let view: Vec<(String, String)> = blades(&members)
            .into_iter()
            .map(|(n, m)| (n, m.name.clone()))
            .collect();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(view, pairs(&[("b1", "b1"), ("b3", "s1"), ("s2", "s2")]));
        assert_eq!(resolve(&members, "@active", None).unwrap(), ["b1", "b3"]);
        assert_eq!(resolve(&members, "@spares", None).unwrap(), ["s2"]);
    }

    fn ok(stdout: &str) -> Outcome {
        Outcome {
            exit_code: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
            error: None,
        }
    }

    #[test]
    fn identical_outputs_are_printed_once_under_a_folded_header() {
        let mut o = BTreeMap::new();
        for n in ["b1", "b2", "b3"] {
            o.insert(n.to_string(), ok("Linux\n"));
        }
        o.insert(
            "b4".into(),
            Outcome::failed("no-answer: did not answer in time".into()),
        );
        assert_eq!(
            gathered(&o),
            "---------------\nb[1-3]\n---------------\nLinux\n\
             ---------------\nb4 [no-answer: did not answer in time]\n---------------"
        );
    }

    #[test]
    fn a_failure_says_how() {
        let mut bad = ok("");
        bad.exit_code = Some(3);
        assert_eq!(status_line(&bad).as_deref(), Some("[exit 3]"));
        bad.exit_code = None;
        assert_eq!(status_line(&bad).as_deref(), Some("[exit by signal]"));
        assert_eq!(status_line(&ok("x")), None);
    }

    #[test]
    fn an_exec_answer_is_read_with_its_exit_code_and_escaped_output() {
        let payload = Payload::new(format!(
            "<result xmlns=\"{}\" exit=\"2\" timed-out=\"false\" truncated=\"false\"><stdout>a &lt; b\n</stdout><stderr>oops</stderr></result>",
            dci_peerlet_exec::NAMESPACE
        ))
        .unwrap();
        let env = Envelope::request(
            Sender {
                node: "n".into(),
                blade: Some("b1".into()),
                app: "exec".into(),
                instance: None,
            },
            Target {
                to: Destination::Node("x".into()),
                app: None,
                instance: None,
            },
            payload,
        );
        let o = outcome_of(&env);
        assert_eq!(o.exit_code, Some(2));
        assert_eq!(o.stdout, "a < b\n");
        assert_eq!(o.stderr, "oops");
        assert_eq!(o.error, None);
    }

    #[test]
    fn a_refusal_is_put_on_the_blade_it_names_not_on_the_router_that_sent_it() {
        let progress = Progress {
            runs: ["b1", "b2", "b3"]
                .iter()
                .map(|b| (b.to_string(), Run::default()))
                .collect(),
            ids: vec![("ID3".into(), "b3".into())],
            lines: false,
        };
        let answer = |app: &str, kind: Kind, text: &str| {
            let mut env = Envelope::request(
                Sender {
                    node: "ID1".into(),
                    blade: Some("b1".into()),
                    app: app.into(),
                    instance: None,
                },
                Target {
                    to: Destination::Node("x".into()),
                    app: None,
                    instance: None,
                },
                dci_proto::control::error_payload("e", text),
            );
            env.kind = kind;
            env
        };
        let of = |a: Envelope| progress.blade_of(&a);
        let r = Kind::Error;
        assert_eq!(
            of(answer("router", r, "no live member holds blade b2")).as_deref(),
            Some("b2")
        );
        assert_eq!(
            of(answer("router", r, "no route to node ID3")).as_deref(),
            Some("b3")
        );
        assert_eq!(of(answer("router", r, "no route to node ID9")), None);
        assert_eq!(of(answer("exec", r, "not allowed")).as_deref(), Some("b1"));
        assert_eq!(
            of(answer("router", Kind::Reply, "b2")).as_deref(),
            Some("b1")
        );
    }
}
