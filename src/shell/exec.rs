//! `dcish exec SET -- CMD ARGS...` and `dcish nodeset`: a command run on a node set through each
//! blade's `exec` peerlet, answers gathered by blade.
//!
//! One request goes to the literal set (`group:set:...`); the local agent fans it out and answers
//! with every reply that came back within its answer wait. Blades the member table already holds
//! dead or gone are not asked, and are reported as such; a blade that did not answer in time is
//! reported too, without holding the others up. Identical outputs are printed once under a
//! folded header, as `clush -b` does; `--lines` prefixes each line with its blade, as pdsh does.

use std::collections::BTreeMap;

use clap::Args;
use dci_proto::control::{members_from_payload, ControlRequest, MemberInfo};
use dci_proto::{Destination, Envelope, Kind, Payload, Target};
use serde_json::json;

use super::client::{Client, ClientError};
use super::msg::{answers_of, children, inner, operator, usage};
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
    /// Seconds a command may run on each blade before it is killed. The agent gathers answers
    /// for its `answer_wait_ms` (5 s by default), so a longer run is reported as not answering.
    #[arg(long, default_value_t = 4.0)]
    pub timeout: f64,
    /// Print every output line as `blade: line`, instead of gathering identical outputs.
    #[arg(long)]
    pub lines: bool,
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

/// The member table as node sets see it.
pub(super) async fn members(client: &mut Client) -> Result<Vec<MemberInfo>, ClientError> {
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
    let candidates: Vec<Candidate> = members
        .iter()
        .filter(|m| m.state != "left")
        .map(|m| Candidate {
            name: m.name.clone(),
            role: m.role.clone(),
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

/// The `exec` peerlet's request for `command`.
fn request_payload(command: &[String], timeout_ms: u64) -> Result<Payload, ClientError> {
    let mut xml = format!(
        "<exec xmlns=\"{}\" timeout-ms=\"{timeout_ms}\">",
        dci_peerlet_exec::NAMESPACE
    );
    for arg in command {
        xml.push_str(&format!("<arg>{}</arg>", dci_peerlet::escape(arg)));
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
    for (a, part) in children(inner(whole)).unwrap_or_default() {
        let text = dci_peerlet::unescape(inner(part));
        match a.get("").map(String::as_str) {
            Some("stdout") => outcome.stdout = text,
            Some("stderr") => outcome.stderr = text,
            _ => {}
        }
    }
    if attrs.get("timed-out").map(String::as_str) == Some("true") {
        outcome.error = Some("timed-out: killed after the time limit".into());
    }
    outcome
}

/// Runs `dcish exec`: prints the outputs; fails, naming the blades, when any did not succeed.
pub async fn exec(client: &mut Client, args: &ExecArgs, json: bool) -> Result<String, ClientError> {
    if !(args.timeout > 0.0 && args.timeout <= 86_400.0) {
        return Err(usage(
            "--timeout must be between 0 and 86400 seconds".into(),
        ));
    }
    let members = members(client).await?;
    let names = resolve(&members, &args.set, args.exclude.as_deref())?;
    let state = |name: &str| {
        members
            .iter()
            .find(|m| m.name == name)
            .map_or("unknown", |m| m.state.as_str())
    };
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut reachable = Vec::new();
    for name in &names {
        match state(name) {
            s @ ("dead" | "left") => {
                outcomes.insert(name.clone(), Outcome::failed(format!("{s}: not run")));
            }
            _ => reachable.push(name.clone()),
        }
    }
    if !reachable.is_empty() {
        let env = Envelope::request(
            operator(),
            Target {
                to: Destination::Group(format!("{NODE_SET_PREFIX}{}", reachable.join(","))),
                app: Some(dci_peerlet_exec::APP.into()),
                instance: None,
            },
            request_payload(&args.command, (args.timeout * 1000.0) as u64)?,
        );
        let (_, answers) = answers_of(client, &env).await?;
        for answer in &answers {
            let who = answer
                .sender
                .blade
                .clone()
                .unwrap_or_else(|| answer.sender.node.clone());
            if reachable.contains(&who) {
                outcomes.insert(who, outcome_of(answer));
            }
        }
        for name in reachable {
            outcomes
                .entry(name)
                .or_insert_with(|| Outcome::failed("no-answer: did not answer in time".into()));
        }
    }
    let text = if json {
        json_of(&names, &outcomes)
    } else if args.lines {
        lines_of(&names, &outcomes)
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
    let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{text}\n").as_bytes());
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

/// pdsh's form: each line of each blade's output, prefixed by the blade.
fn lines_of(names: &[String], outcomes: &BTreeMap<String, Outcome>) -> String {
    let mut out = String::new();
    for name in names {
        let Some(o) = outcomes.get(name) else {
            continue;
        };
        for line in o.stdout.lines().chain(o.stderr.lines()) {
            out.push_str(&format!("{name}: {line}\n"));
        }
        if let Some(e) = &o.error {
            out.push_str(&format!("{name}: [{e}]\n"));
        } else if o.exit_code != Some(0) {
            out.push_str(&format!("{name}: [exit {}]\n", exit_text(o.exit_code)));
        }
    }
    out.trim_end().to_owned()
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
        let status = match (&o.error, o.exit_code) {
            (Some(e), _) => format!(" [{e}]"),
            (None, Some(0)) => String::new(),
            (None, code) => format!(" [exit {}]", exit_text(code)),
        };
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
    fn lines_carry_their_blade_and_a_failure_says_how() {
        let mut o = BTreeMap::new();
        o.insert("b1".to_string(), ok("a\nb\n"));
        let mut bad = ok("");
        bad.exit_code = Some(3);
        o.insert("b2".to_string(), bad);
        let names = vec!["b1".to_string(), "b2".to_string()];
        assert_eq!(lines_of(&names, &o), "b1: a\nb1: b\nb2: [exit 3]");
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
}
