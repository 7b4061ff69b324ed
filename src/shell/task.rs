//! `dcish run TASK.xml`: a task of several steps, each a request to a peerlet on some blade,
//! where a step's output can feed a later step's input (after the seeds' example: blade B
//! fetches a page, A combines it with local notes, C stores the result).
//!
//! ```xml
//! <task xmlns="urn:dci:task:1">
//!   <step id="fetch" to="b2" app="exec"><payload><exec xmlns="urn:dci:exec:1"><arg>cat</arg><arg>page.txt</arg></exec></payload></step>
//!   <step id="combine" to="b1" app="upper"><payload><text xmlns="urn:x:1">notes: {{fetch}}</text></payload></step>
//! </task>
//! ```
//!
//! Steps run in order; `{{ID}}` in a payload is replaced by the text of step ID's answer (its
//! text content, escaped). The envelopes go out from app `task` (logged by default). The first
//! step that fails stops the task.

use dci_proto::{Envelope, Kind, Payload, Sender, Target};
use serde_json::json;

use super::client::{Client, ClientError};
use super::msg::{answers_of, children, destination, inner};

/// The task document's namespace.
pub const TASK_NAMESPACE: &str = "urn:dci:task:1";
/// The largest task document read.
pub const MAX_TASK_BYTES: u64 = 1 << 20;
/// The most steps a task may have.
pub const MAX_STEPS: usize = 100;

/// One step of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Its name, for `{{ID}}` references and the output.
    pub id: String,
    /// The destination, as `dcish send` reads it.
    pub to: String,
    /// The peerlet type.
    pub app: String,
    /// The instance, if any.
    pub instance: Option<uuid::Uuid>,
    /// The payload, with `{{ID}}` references unresolved.
    pub payload: String,
}

fn bad(message: String) -> ClientError {
    ClientError::Refused {
        code: "bad-task".into(),
        message,
    }
}

/// Reads a task document.
pub fn parse(xml: &str) -> Result<Vec<Step>, ClientError> {
    let roots = children(xml).map_err(|e| bad(format!("not XML: {e}")))?;
    let [(attrs, whole)] = &roots[..] else {
        return Err(bad("a task document has exactly one <task> element".into()));
    };
    if attrs.get("").map(String::as_str) != Some("task")
        || attrs.get("xmlns").map(String::as_str) != Some(TASK_NAMESPACE)
    {
        return Err(bad(format!(
            "the root must be <task xmlns=\"{TASK_NAMESPACE}\">"
        )));
    }
    let mut steps = Vec::new();
    for (a, step) in children(inner(whole)).map_err(|e| bad(e.to_string()))? {
        if a.get("").map(String::as_str) != Some("step") {
            return Err(bad("a task holds only <step> elements".into()));
        }
        let get = |k: &str| {
            a.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("a step has no {k}")))
        };
        let payload = children(inner(step))
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .find(|(pa, _)| pa.get("").map(String::as_str) == Some("payload"))
            .map(|(_, p)| inner(p).trim().to_owned())
            .unwrap_or_default();
        let instance = a
            .get("instance")
            .map(|i| {
                i.parse()
                    .map_err(|_| bad(format!("instance {i:?} is not a UUID")))
            })
            .transpose()?;
        steps.push(Step {
            id: get("id")?,
            to: get("to")?,
            app: get("app")?,
            instance,
            payload,
        });
        if steps.len() > MAX_STEPS {
            return Err(bad(format!("more than {MAX_STEPS} steps")));
        }
    }
    if steps.is_empty() {
        return Err(bad("the task has no steps".into()));
    }
    Ok(steps)
}

/// The text content of a payload, entities decoded.
fn text_of(payload: &Payload) -> String {
    let mut r = quick_xml::Reader::from_str(payload.as_str());
    let mut out = String::new();
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Text(t)) => {
                out.push_str(&t.unescape().map(|c| c.into_owned()).unwrap_or_default())
            }
            Ok(quick_xml::events::Event::CData(c)) => out.push_str(&String::from_utf8_lossy(&c)),
            Ok(quick_xml::events::Event::Eof) | Err(_) => return out.trim().to_owned(),
            Ok(_) => {}
        }
    }
}

/// Runs the task in `path`, printing each step's result.
pub async fn run(
    client: &mut Client,
    path: &std::path::Path,
    json: bool,
) -> Result<String, ClientError> {
    let len = std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| bad(format!("{}: {e}", path.display())))?;
    if len > MAX_TASK_BYTES {
        return Err(bad(format!(
            "{} is over {MAX_TASK_BYTES} bytes",
            path.display()
        )));
    }
    let xml = std::fs::read_to_string(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let steps = parse(&xml)?;
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut report = Vec::new();
    let mut text = String::new();
    for step in &steps {
        let mut payload = step.payload.clone();
        for (id, out) in &outputs {
            payload = payload.replace(&format!("{{{{{id}}}}}"), &dci_peerlet::escape(out));
        }
        let payload = Payload::new(payload).map_err(|e| bad(format!("step {}: {e}", step.id)))?;
        let env = Envelope::request(
            Sender {
                node: "dcish".into(),
                blade: None,
                app: "task".into(),
                instance: None,
            },
            Target {
                to: destination(&step.to)?,
                app: Some(step.app.clone()),
                instance: step.instance,
            },
            payload,
        );
        let (_, answers) = answers_of(client, &env).await?;
        let answer = answers.into_iter().next();
        let (ok, out) = match &answer {
            Some(a) if a.kind == Kind::Reply => (true, text_of(&a.payload)),
            Some(a) => (
                false,
                dci_proto::control::error_from_payload(&a.payload)
                    .map_or_else(|| text_of(&a.payload), |(c, m)| format!("{c}: {m}")),
            ),
            None => (false, "no answer in time".into()),
        };
        text.push_str(&format!(
            "step {} ({} on {}): {}{}\n",
            step.id,
            step.app,
            step.to,
            if ok { "" } else { "FAILED " },
            out
        ));
        report.push(json!({"step": step.id, "ok": ok, "output": out, "payload": answer.map(|a| a.payload.into_string())}));
        if !ok {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{text}");
            }
            return Err(ClientError::Refused {
                code: "step-failed".into(),
                message: format!("step {} failed", step.id),
            });
        }
        outputs.push((step.id.clone(), out));
    }
    if json {
        return Ok(serde_json::to_string_pretty(&report).unwrap_or_default());
    }
    Ok(text.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_document_is_read_into_steps_and_bad_ones_refused() {
        let steps = parse(r#"<task xmlns="urn:dci:task:1"><step id="a" to="b2" app="echo"><payload><x xmlns="urn:x">{{z}}</x></payload></step></task>"#).unwrap();
        assert_eq!(steps[0].payload, r#"<x xmlns="urn:x">{{z}}</x>"#);
        assert!(parse("<task/>").is_err());
        assert!(parse(r#"<task xmlns="urn:dci:task:1"/>"#).is_err());
        assert!(parse(r#"<task xmlns="urn:dci:task:1"><step to="b" app="x"/></task>"#).is_err());
        assert!(parse("not xml <").is_err());
    }
}
