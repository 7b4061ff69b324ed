//! `dcish peerlets [SET]` and `dcish peerlets stop BLADE TYPE`: the peerlet types each blade
//! offers and the instances it runs, asked of every blade at once through the `peerlets` app
//! its router answers itself (one envelope to the literal set, as `exec` sends).

use clap::{Args, Subcommand};
use dci_proto::{Destination, Envelope, Kind, Payload, Target};
use serde_json::json;

use super::client::{Client, ClientError};
use super::exec::{members, resolve};
use super::msg::{answers_of, children, inner, operator, usage};
use super::{format_age, nodeset, table};
use crate::router::core::NODE_SET_PREFIX;
use crate::router::peerlets::{PEERLETS_APP, PEERLETS_NAMESPACE};

/// `dcish peerlets`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PeerletsArgs {
    /// The blades (a node set) [default: @all].
    pub set: Option<String>,
    /// Stop instances instead of listing them.
    #[command(subcommand)]
    pub action: Option<PeerletsAction>,
}

/// What `dcish peerlets` can do besides listing.
#[derive(Debug, Subcommand)]
pub enum PeerletsAction {
    /// Stop a blade's instances of a peerlet type (the next envelope to it starts one afresh).
    Stop {
        /// The blade.
        blade: String,
        /// The peerlet type (app).
        app: String,
        /// Only this instance.
        #[arg(long)]
        instance: Option<dci_peerlet::Uuid>,
    },
}

/// What one blade said.
struct Listing {
    blade: String,
    types: Vec<String>,
    /// (type, instance, idle ms).
    instances: Vec<(String, String, u64)>,
    /// Instances the blade left out of its answer.
    cut: u64,
    error: Option<String>,
}

fn request(to: Destination, xml: String) -> Result<Envelope, ClientError> {
    let payload = Payload::new(xml).map_err(|e| usage(e.to_string()))?;
    Ok(Envelope::request(
        operator(),
        Target {
            to,
            app: Some(PEERLETS_APP.into()),
            instance: None,
        },
        payload,
    ))
}

fn error_of(answer: &Envelope) -> Option<String> {
    (answer.kind == Kind::Error).then(|| {
        dci_proto::control::error_from_payload(&answer.payload).map_or_else(
            || answer.payload.as_str().to_owned(),
            |(c, m)| format!("{c}: {m}"),
        )
    })
}

/// Runs `dcish peerlets`.
pub async fn peerlets(
    client: &mut Client,
    args: &PeerletsArgs,
    json: bool,
) -> Result<String, ClientError> {
    if let Some(PeerletsAction::Stop {
        blade,
        app,
        instance,
    }) = &args.action
    {
        return stop(client, blade, app, *instance, json).await;
    }
    let all = members(client).await?;
    let names = resolve(&all, args.set.as_deref().unwrap_or("@all"), None)?;
    let to = Destination::Group(format!("{NODE_SET_PREFIX}{}", names.join(",")));
    let env = request(to, format!("<list xmlns=\"{PEERLETS_NAMESPACE}\"/>"))?;
    let (_, answers) = answers_of(client, &env).await?;
    let mut listings: Vec<Listing> = names
        .iter()
        .map(|blade| {
            let answer = answers
                .iter()
                .find(|a| a.sender.blade.as_deref().unwrap_or(&a.sender.node) == blade.as_str());
            listing(blade, answer)
        })
        .collect();
    listings.sort_by(|a, b| a.blade.cmp(&b.blade));
    let failed: Vec<&str> = listings
        .iter()
        .filter(|l| l.error.is_some())
        .map(|l| l.blade.as_str())
        .collect();
    let text = if json {
        let rows: Vec<serde_json::Value> = listings
            .iter()
            .map(|l| {
                let instances: Vec<_> = l
                    .instances
                    .iter()
                    .map(|(app, id, idle)| json!({"app": app, "instance": id, "idle_ms": idle}))
                    .collect();
                json!({"blade": l.blade, "types": l.types, "instances": instances, "cut": l.cut, "error": l.error})
            })
            .collect();
        serde_json::to_string_pretty(&rows).unwrap_or_default()
    } else {
        text(&listings)
    };
    if failed.is_empty() {
        return Ok(text);
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{text}\n").as_bytes());
    Err(ClientError::Refused {
        code: "incomplete".into(),
        message: format!(
            "peerlets: {} of {} blade(s) failed: {}",
            failed.len(),
            listings.len(),
            nodeset::fold(&failed.iter().map(|b| b.to_string()).collect::<Vec<_>>())
        ),
    })
}

fn listing(blade: &str, answer: Option<&Envelope>) -> Listing {
    let mut l = Listing {
        blade: blade.to_owned(),
        types: Vec::new(),
        instances: Vec::new(),
        cut: 0,
        error: None,
    };
    let Some(answer) = answer else {
        l.error = Some("no answer in time".into());
        return l;
    };
    if let Some(e) = error_of(answer) {
        l.error = Some(e);
        return l;
    }
    let root = children(answer.payload.as_str()).unwrap_or_default();
    let Some((attrs, whole)) = root.first() else {
        l.error = Some(format!("bad answer: {}", answer.payload.as_str()));
        return l;
    };
    l.cut = attrs.get("cut").and_then(|c| c.parse().ok()).unwrap_or(0);
    for (attrs, _) in children(inner(whole)).unwrap_or_default() {
        let get = |k: &str| attrs.get(k).cloned().unwrap_or_default();
        match attrs.get("").map(String::as_str) {
            Some("type") => l.types.push(get("app")),
            Some("instance") => {
                l.instances
                    .push((get("app"), get("id"), get("idle-ms").parse().unwrap_or(0)))
            }
            _ => {}
        }
    }
    l
}

fn text(listings: &[Listing]) -> String {
    let offers: Vec<Vec<String>> = listings
        .iter()
        .map(|l| {
            let what = l
                .error
                .as_ref()
                .map_or_else(|| l.types.join(" "), |e| format!("error: {e}"));
            vec![l.blade.clone(), what]
        })
        .collect();
    let running: Vec<Vec<String>> = listings
        .iter()
        .flat_map(|l| {
            l.instances.iter().map(|(app, id, idle)| {
                vec![l.blade.clone(), app.clone(), id.clone(), format_age(*idle)]
            })
        })
        .collect();
    let mut out = table(&["BLADE", "OFFERS"], &offers, None, false);
    out.push('\n');
    if running.is_empty() {
        out.push_str("no instance running");
    } else {
        out.push_str(&table(
            &["BLADE", "TYPE", "INSTANCE", "IDLE"],
            &running,
            None,
            false,
        ));
        out.push_str(&format!("{} instance(s) running", running.len()));
    }
    let cut: u64 = listings.iter().map(|l| l.cut).sum();
    if cut > 0 {
        out.push_str(&format!(" ({cut} more not listed)"));
    }
    out
}

async fn stop(
    client: &mut Client,
    blade: &str,
    app: &str,
    instance: Option<dci_peerlet::Uuid>,
    json: bool,
) -> Result<String, ClientError> {
    let mut xml = format!(
        "<stop xmlns=\"{PEERLETS_NAMESPACE}\" app=\"{}\"",
        dci_peerlet::escape(app)
    );
    if let Some(i) = instance {
        xml.push_str(&format!(" instance=\"{i}\""));
    }
    xml.push_str("/>");
    let env = request(Destination::Blade(blade.to_owned()), xml)?;
    let (_, answers) = answers_of(client, &env).await?;
    let Some(answer) = answers.first() else {
        return Err(ClientError::Refused {
            code: "no-answer".into(),
            message: format!("{blade} did not answer in time"),
        });
    };
    if let Some(e) = error_of(answer) {
        let (code, message) = e.split_once(": ").unwrap_or(("error", &e));
        return Err(ClientError::Refused {
            code: code.into(),
            message: message.into(),
        });
    }
    let count: u64 = dci_peerlet::first_attribute(&answer.payload, "count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(if json {
        json!({"blade": blade, "app": app, "stopped": count}).to_string()
    } else {
        format!("stopped {count} {app} instance(s) on {blade}")
    })
}
