//! The console's JSON endpoints. Each one builds the envelope `dcish` sends for the same command
//! (the same payload builders, [`crate::control::request`]) and hands it to the dispatcher the
//! control socket uses ([`crate::control::dispatch`]); what comes back is turned into the
//! documents `dcish --json` prints. So the console and the shell cannot disagree, and every action
//! is one logged envelope.
//!
//! Backups and restores may run for hours: they are started as jobs, and the page polls
//! `/api/jobs` for their state.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use dci_proto::archive::ArchiveRef;
use dci_proto::backup::{
    archives_from_payload, listing_from_payload, restored_from_payload, settings_from_payload,
    BackupRequest, RestoreArgs, SettingsChange,
};
use dci_proto::control::{
    error_from_payload, events_from_payload, members_from_payload, notices_from_payload,
    seats_from_payload, ControlRequest,
};
use dci_proto::{Envelope, Kind, Payload, Sender};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::auth::Session;
use crate::control::Query;

/// Jobs remembered; the oldest finished ones are forgotten beyond it.
const MAX_JOBS: usize = 64;

/// The agent's control path, as the console reaches it.
pub struct Control {
    /// The agent, as the control socket answers for it.
    me: Sender,
    /// This agent's member name.
    name: String,
    queries: mpsc::Sender<Query>,
    messenger: crate::router::MessengerHandle,
    jobs: Mutex<Jobs>,
}

#[derive(Default)]
struct Jobs {
    next: u64,
    list: VecDeque<Job>,
}

struct Job {
    id: u64,
    kind: &'static str,
    blade: String,
    user: String,
    started_ms: u64,
    started: Instant,
    /// `None` while it runs; then the result document or the one-line error.
    outcome: Option<(Result<Value, String>, u64)>,
}

/// A refusal from the agent (or of the request), as the page shows it.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    /// A body that is not the form's JSON, or is over the size limit (413).
    fn rejected(e: axum::extract::rejection::JsonRejection) -> ApiError {
        ApiError(e.status(), e.body_text())
    }

    /// The agent's error code decides the status: bad input is the client's, a stopping agent
    /// is unavailable, anything else is a refusal of a well-formed request.
    fn refused(code: &str, message: &str) -> ApiError {
        let status = match code {
            "stopping" => StatusCode::SERVICE_UNAVAILABLE,
            c if c.starts_with("bad-") || c.starts_with("no-such") || c == "unknown-command" => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError(status, format!("{code}: {message}"))
    }

    fn reply(e: impl std::fmt::Display) -> ApiError {
        ApiError(
            StatusCode::BAD_GATEWAY,
            format!("the agent answered badly: {e}"),
        )
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A `dcish --json` document as a value.
fn doc(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

impl Control {
    /// The control path of the agent `node_id` (member `name`).
    pub fn new(
        node_id: String,
        name: String,
        queries: mpsc::Sender<Query>,
        messenger: crate::router::MessengerHandle,
    ) -> Control {
        Control {
            me: Sender {
                node: node_id,
                blade: None,
                app: dci_proto::control::CONTROL_APP.into(),
                instance: None,
            },
            name,
            queries,
            messenger,
            jobs: Mutex::new(Jobs::default()),
        }
    }

    /// Logs `env` as `user`'s and answers it as the control socket would.
    async fn exchange(&self, user: &str, env: Envelope) -> Envelope {
        tracing::info!(
            target: "dci::console",
            user,
            id = %env.id,
            envelope = %env.to_xml(),
            "console request"
        );
        crate::control::dispatch(&self.me, env, &self.queries, &self.messenger).await
    }

    /// Sends a control command as `user` and returns the reply's payload.
    async fn call(&self, user: &str, payload: Payload) -> Result<Payload, ApiError> {
        let reply = self
            .exchange(user, crate::control::request(operator(), payload))
            .await;
        match reply.kind {
            Kind::Reply => Ok(reply.payload),
            Kind::Error => {
                let (code, message) = error_from_payload(&reply.payload)
                    .unwrap_or_else(|| ("error".into(), "the agent refused the request".into()));
                Err(ApiError::refused(&code, &message))
            }
            Kind::Request | Kind::Event => Err(ApiError::reply(format!(
                "unexpected {} envelope in reply",
                reply.kind
            ))),
        }
    }

    /// Starts `work` as a job of `user` and returns its id at once.
    fn start_job<F>(self: &Arc<Self>, user: &str, kind: &'static str, blade: &str, work: F) -> u64
    where
        F: std::future::Future<Output = Result<Value, ApiError>> + Send + 'static,
    {
        let id = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.next += 1;
            let id = jobs.next;
            if jobs.list.len() >= MAX_JOBS {
                if let Some(i) = jobs.list.iter().position(|j| j.outcome.is_some()) {
                    jobs.list.remove(i);
                }
            }
            jobs.list.push_back(Job {
                id,
                kind,
                blade: blade.to_owned(),
                user: user.to_owned(),
                started_ms: unix_ms(),
                started: Instant::now(),
                outcome: None,
            });
            id
        };
        let me = self.clone();
        tokio::spawn(async move {
            let result = work.await.map_err(|ApiError(_, m)| m);
            if let Err(e) = &result {
                tracing::warn!(target: "dci::console", job = id, "{kind} failed: {e}");
            }
            let mut jobs = me.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(j) = jobs.list.iter_mut().find(|j| j.id == id) {
                j.outcome = Some((result, unix_ms()));
            }
        });
        id
    }

    fn jobs_json(&self) -> Value {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let rows: Vec<Value> = jobs
            .list
            .iter()
            .rev()
            .map(|j| {
                let (state, result, error, finished) = match &j.outcome {
                    None => ("running", Value::Null, Value::Null, Value::Null),
                    Some((Ok(v), at)) => ("done", v.clone(), Value::Null, json!(at)),
                    Some((Err(e), at)) => ("failed", Value::Null, json!(e), json!(at)),
                };
                json!({
                    "id": j.id, "kind": j.kind, "blade": j.blade, "user": j.user,
                    "started_ms": j.started_ms, "finished_ms": finished,
                    "elapsed_ms": j.started.elapsed().as_millis() as u64,
                    "state": state, "result": result, "error": error,
                })
            })
            .collect();
        Value::Array(rows)
    }
}

/// The sender of what the console sends: this node's operator, as for `dcish`.
fn operator() -> Sender {
    Sender {
        node: "console".into(),
        blade: None,
        app: dci_proto::control::CONTROL_APP.into(),
        instance: None,
    }
}

/// A path as a glob that matches only itself: restore selects paths by glob (backslash escapes
/// a glob's special characters on Unix).
fn literal_glob(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The JSON routes, for a router that has already checked the session (and, for changes, the
/// CSRF token) and put the [`Session`] in the request's extensions.
pub fn routes() -> Router<Arc<Control>> {
    Router::new()
        .route("/session", get(session))
        .route("/overview", get(overview))
        .route("/alerts", get(alerts))
        .route("/discover", post(discover))
        .route("/jobs", get(jobs))
        .route("/blades/{blade}/settings", get(settings).post(configure))
        .route("/blades/{blade}/backup", post(backup))
        .route("/blades/{blade}/archives", get(archives))
        .route("/blades/{blade}/archives/{id}/files", get(files))
        .route("/blades/{blade}/restore", post(restore))
}

async fn session(State(c): State<Arc<Control>>, Extension(s): Extension<Session>) -> ApiResult {
    Ok(Json(
        json!({ "user": s.user, "csrf": s.csrf, "node": c.name }),
    ))
}

async fn overview(State(c): State<Arc<Control>>, Extension(s): Extension<Session>) -> ApiResult {
    let members = members_from_payload(&c.call(&s.user, ControlRequest::Nodes.to_payload()).await?)
        .map_err(ApiError::reply)?;
    let seats = seats_from_payload(&c.call(&s.user, ControlRequest::Seats.to_payload()).await?)
        .map_err(ApiError::reply)?;
    Ok(Json(json!({
        "node": c.name,
        "members": doc(crate::shell::nodes_json(&members)),
        "seats": doc(crate::shell::seats_json(&seats)),
    })))
}

/// The failure notices this agent received (`dcish notices`) and the membership events
/// (`dcish events`), newest first.
async fn alerts(State(c): State<Arc<Control>>, Extension(s): Extension<Session>) -> ApiResult {
    let events = events_from_payload(&c.call(&s.user, ControlRequest::Events.to_payload()).await?)
        .map_err(ApiError::reply)?;
    let notices = notices_from_payload(
        &c.call(&s.user, ControlRequest::Notices.to_payload())
            .await?,
    )
    .map_err(ApiError::reply)?;
    let newest_first = |text: String| {
        let mut v = doc(text);
        if let Value::Array(rows) = &mut v {
            rows.reverse();
        }
        v
    };
    Ok(Json(json!({
        "events": newest_first(crate::shell::events_json(&events)),
        "notices": newest_first(crate::shell::notices_json(&notices)),
    })))
}

async fn discover(State(c): State<Arc<Control>>, Extension(s): Extension<Session>) -> ApiResult {
    let members = members_from_payload(
        &c.call(&s.user, ControlRequest::Discover.to_payload())
            .await?,
    )
    .map_err(ApiError::reply)?;
    Ok(Json(doc(crate::shell::nodes_json(&members))))
}

async fn jobs(State(c): State<Arc<Control>>) -> ApiResult {
    Ok(Json(c.jobs_json()))
}

fn settings_json(p: &Payload) -> ApiResult {
    let b = settings_from_payload(p).map_err(ApiError::reply)?;
    Ok(Json(json!({
        "blade": b.blade, "root": b.root, "factor": b.factor,
        "exclude_dirs": b.exclude_dirs, "exclude_exts": b.exclude_exts,
        "schedule": b.schedule, "method": b.method, "continuous": b.continuous,
    })))
}

async fn settings(
    State(c): State<Arc<Control>>,
    Extension(s): Extension<Session>,
    Path(blade): Path<String>,
) -> ApiResult {
    let request = BackupRequest::GetSettings { blade };
    settings_json(&c.call(&s.user, request.to_payload()).await?)
}

/// A configuration form: every field replaces the blade's setting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsForm {
    root: Option<String>,
    factor: u64,
    exclude_dirs: Vec<String>,
    exclude_exts: Vec<String>,
    schedule: Vec<String>,
}

/// Trims each entry and drops blank ones, as the form's comma lists are written by hand.
fn entries(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect()
}

async fn configure(
    State(c): State<Arc<Control>>,
    Extension(s): Extension<Session>,
    Path(blade): Path<String>,
    form: Result<Json<SettingsForm>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(f) = form.map_err(ApiError::rejected)?;
    let request = BackupRequest::Configure(SettingsChange {
        blade,
        root: f
            .root
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty()),
        factor: Some(f.factor),
        exclude_dirs: Some(entries(f.exclude_dirs)),
        exclude_exts: Some(entries(f.exclude_exts)),
        schedule: Some(entries(f.schedule)),
    });
    settings_json(&c.call(&s.user, request.to_payload()).await?)
}

async fn backup(
    State(c): State<Arc<Control>>,
    Extension(s): Extension<Session>,
    Path(blade): Path<String>,
) -> ApiResult {
    let request = BackupRequest::Now {
        blade: Some(blade.clone()),
        wait: true,
    };
    let (me, user) = (c.clone(), s.user.clone());
    let id = c.start_job(&s.user, "backup", &blade, async move {
        let p = me.call(&user, request.to_payload()).await?;
        let archives = archives_from_payload(&p).map_err(ApiError::reply)?;
        Ok(doc(crate::shell::backup::archives_json(&archives)))
    });
    Ok(Json(json!({ "job": id })))
}

async fn archives(
    State(c): State<Arc<Control>>,
    Extension(s): Extension<Session>,
    Path(blade): Path<String>,
) -> ApiResult {
    let request = BackupRequest::Archives { blade };
    let p = c.call(&s.user, request.to_payload()).await?;
    let archives = archives_from_payload(&p).map_err(ApiError::reply)?;
    Ok(Json(doc(crate::shell::backup::archives_json(&archives))))
}

async fn files(
    State(c): State<Arc<Control>>,
    Extension(s): Extension<Session>,
    Path((blade, id)): Path<(String, String)>,
) -> ApiResult {
    let request = BackupRequest::Ls {
        blade,
        path: String::new(),
        archive: Some(archive_ref(&id)?),
        recursive: true,
    };
    let p = c.call(&s.user, request.to_payload()).await?;
    let entries = listing_from_payload(&p).map_err(ApiError::reply)?;
    Ok(Json(doc(crate::shell::backup::listing_json(&entries))))
}

fn archive_ref(id: &str) -> Result<ArchiveRef, ApiError> {
    id.parse()
        .map_err(|e: String| ApiError::refused("bad-archive", &e))
}

/// A restore from the recovery view (`archive` only: sequentially up to it) or the archive view
/// (`files` too: only those).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreForm {
    /// EPOCH.NUMBER.
    archive: String,
    #[serde(default)]
    files: Vec<String>,
    /// The node that restores; the node acting as the blade when absent.
    on: Option<String>,
    /// The directory, on that node; its backup root when absent.
    to: Option<String>,
}

async fn restore(
    State(c): State<Arc<Control>>,
    Extension(s): Extension<Session>,
    Path(blade): Path<String>,
    form: Result<Json<RestoreForm>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(f) = form.map_err(ApiError::rejected)?;
    let blank = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let request = BackupRequest::Restore(RestoreArgs {
        blade: blade.clone(),
        archive: Some(archive_ref(&f.archive)?),
        paths: f.files.iter().map(|p| literal_glob(p)).collect(),
        to: blank(f.to),
        // The blade's data goes back to the node acting as it, unless the operator says.
        on: Some(blank(f.on).unwrap_or_else(|| blade.clone())),
    });
    let (me, user) = (c.clone(), s.user.clone());
    let id = c.start_job(&s.user, "restore", &blade, async move {
        let p = me.call(&user, request.to_payload()).await?;
        let r = restored_from_payload(&p).map_err(ApiError::reply)?;
        Ok(json!({
            "node": r.node, "target": r.target, "archives": r.archives,
            "entries": r.entries, "bytes": r.bytes, "refused": r.refused,
        }))
    });
    Ok(Json(json!({ "job": id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_glob_matches_its_path_only() {
        for path in ["docs/a.txt", "odd/[x]*?{y}!.txt", "back\\slash"] {
            let g = globset::GlobBuilder::new(&literal_glob(path))
                .literal_separator(true)
                .build()
                .unwrap()
                .compile_matcher();
            assert!(g.is_match(path), "{path}");
            assert!(!g.is_match(format!("{path}x")), "{path}");
        }
        let g = globset::Glob::new(&literal_glob("a*"))
            .unwrap()
            .compile_matcher();
        assert!(!g.is_match("abc"));
    }
}
