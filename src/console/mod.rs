//! The web console (`dcid --http ADDR`): the seeds' management screens (login, the discovered
//! blades, a blade's configuration and schedule, the recovery and archive views) served by the
//! agent itself.
//!
//! It is a client of the control path, like `dcish`: every action is a control envelope handed
//! to [`crate::control::dispatch`] (see [`api`]), so the two never disagree and every action is
//! logged. The pages are plain HTML, CSS and JavaScript compiled into the binary; any agent's
//! console shows the whole mesh, because any agent answers for the whole mesh.
//!
//! Security: nothing but the login page and the static assets is served without a session
//! ([`auth`]); a change needs the session's CSRF token too, and a request whose `Origin` is
//! another site is refused; request bodies are capped at [`MAX_BODY_BYTES`]; failed logins slow
//! their address down. The console speaks plain HTTP: bind it to localhost or a management
//! network, or put a TLS proxy in front of it.

pub mod api;
pub mod auth;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tokio::net::TcpListener;

use auth::{Auth, Refusal, COOKIE, CSRF_HEADER};

/// Largest request body accepted (forms and JSON are small).
pub const MAX_BODY_BYTES: usize = 64 << 10;

const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_HTML: &str = include_str!("assets/app.html");
const STYLE_CSS: &str = include_str!("assets/style.css");
const APP_JS: &str = include_str!("assets/app.js");

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The address could not be bound.
    #[error("cannot serve the console on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds the console's address (before the agent writes anything, like its other ports).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ConsoleError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ConsoleError::Bind { addr, source })
}

/// What every handler shares.
#[derive(Clone)]
struct Console {
    auth: Arc<Mutex<Auth>>,
    started: Instant,
}

impl Console {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn auth(&self) -> std::sync::MutexGuard<'_, Auth> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves the console on `listener` until the agent stops.
pub async fn serve(
    listener: TcpListener,
    config: crate::config::ConsoleConfig,
    control: api::Control,
) {
    let console = Console {
        auth: Arc::new(Mutex::new(Auth::new(config.users, config.session_idle))),
        started: Instant::now(),
    };
    let app = router(console, Arc::new(control));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "web console listening");
    }
    if let Err(e) = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    {
        tracing::error!("web console stopped: {e}");
    }
}

fn router(console: Console, control: Arc<api::Control>) -> Router {
    let api = api::routes()
        .with_state(control)
        .layer(middleware::from_fn_with_state(console.clone(), guard_api));
    let pages = Router::new()
        .route("/", get(page))
        .route("/blade/{blade}", get(page))
        .route("/blade/{blade}/recovery", get(page))
        .route("/blade/{blade}/archive/{id}", get(page));
    Router::new()
        .merge(pages)
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/style.css", get(|| asset("text/css", STYLE_CSS)))
        .route("/app.js", get(|| asset("text/javascript", APP_JS)))
        .nest("/api", api)
        .with_state(console)
        .layer(middleware::map_response(security_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// No framing, no sniffing, no inline script, nothing cached.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Not `no-referrer`: with it a browser sends `Origin: null`, which [`cross_origin`] refuses.
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

/// The session cookie's value in `headers`.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Whether the request came from another site: its `Origin` (sent by browsers with every
/// cross-origin request and every POST) names a host other than the one it was sent to.
fn cross_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    origin_host.is_none() || origin_host != host
}

fn refuse(status: StatusCode, why: impl std::fmt::Display) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// Every API call needs a session; a change (anything but GET) needs its CSRF token too, and
/// must not come from another site.
async fn guard_api(State(c): State<Console>, mut req: Request, next: Next) -> Response {
    let id = cookie(req.headers());
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if changes && cross_origin(req.headers()) {
        return refuse(StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    let csrf = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let now = c.now();
    let checked = if changes {
        c.auth()
            .session_for_change(id.as_deref(), csrf.as_deref(), now)
    } else {
        c.auth().session(id.as_deref(), now)
    };
    match checked {
        Ok(session) => {
            req.extensions_mut().insert(session);
            next.run(req).await
        }
        Err(r @ Refusal::NoSession) => refuse(StatusCode::UNAUTHORIZED, r),
        Err(r) => {
            tracing::warn!(target: "dci::console", "refused a change: {r}");
            refuse(StatusCode::FORBIDDEN, r)
        }
    }
}

/// The application's pages: one document whose script draws the page the path names; without
/// a session, the login page instead.
async fn page(State(c): State<Console>, headers: HeaderMap) -> Response {
    match c.auth().session(cookie(&headers).as_deref(), c.now()) {
        Ok(_) => Html(APP_HTML).into_response(),
        Err(_) => Redirect::to("/login").into_response(),
    }
}

fn login_form(status: StatusCode, error: &str) -> Response {
    let mut escaped = String::new();
    for ch in error.chars() {
        match ch {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    (status, Html(LOGIN_HTML.replace("{{error}}", &escaped))).into_response()
}

async fn login_page(State(c): State<Console>, headers: HeaderMap) -> Response {
    match c.auth().session(cookie(&headers).as_deref(), c.now()) {
        Ok(_) => Redirect::to("/").into_response(),
        Err(_) => login_form(StatusCode::OK, ""),
    }
}

/// The login form's fields.
#[derive(Deserialize)]
struct Login {
    user: String,
    password: String,
}

async fn login(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<Login>, axum::extract::rejection::FormRejection>,
) -> Response {
    if cross_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    let Ok(Form(form)) = form else {
        return login_form(StatusCode::BAD_REQUEST, "give a user name and a password");
    };
    let ip: IpAddr = peer.ip();
    let hash = {
        let auth = c.auth();
        if let Err(r) = auth.may_try(ip, c.now()) {
            return login_form(StatusCode::TOO_MANY_REQUESTS, &r.to_string());
        }
        auth.hash_of(&form.user)
    };
    let (password, (phc, known)) = (form.password, hash);
    let ok = tokio::task::spawn_blocking(move || auth::verify(&password, &phc))
        .await
        .unwrap_or(false)
        && known;
    let finished = c.auth().finish_login(ip, &form.user, ok, c.now());
    match finished {
        Ok((id, _)) => {
            tracing::info!(target: "dci::console", user = %form.user, %ip, "logged in");
            let max_age = auth::MAX_SESSION_AGE.as_secs();
            let cookie =
                format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}");
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(r) => {
            tracing::warn!(target: "dci::console", user = %form.user, %ip, "failed login");
            login_form(StatusCode::UNAUTHORIZED, &r.to_string())
        }
    }
}

/// Ends the session (with its CSRF token, like every change) and clears the cookie.
async fn logout(State(c): State<Console>, headers: HeaderMap) -> Response {
    if cross_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    let id = cookie(&headers);
    let csrf = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    let checked = c.auth().session_for_change(id.as_deref(), csrf, c.now());
    match (checked, id) {
        (Ok(s), Some(id)) => {
            c.auth().logout(&id);
            tracing::info!(target: "dci::console", user = %s.user, "logged out");
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_static(
                    "dci_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                ),
            );
            r
        }
        (Err(r @ Refusal::NoSession), _) | (Err(r), None) => refuse(StatusCode::UNAUTHORIZED, r),
        (Err(r), Some(_)) => refuse(StatusCode::FORBIDDEN, r),
        (Ok(_), None) => refuse(StatusCode::UNAUTHORIZED, Refusal::NoSession),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[(header::COOKIE, "a=1; dci_session=abc; b=2")]);
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
        let h = headers(&[(header::COOKIE, "x=1"), (header::COOKIE, "dci_session=z")]);
        assert_eq!(cookie(&h).as_deref(), Some("z"));
        assert_eq!(
            cookie(&headers(&[(header::COOKIE, "dci_sessionx=1")])),
            None
        );
    }

    #[test]
    fn a_request_from_another_site_is_told_apart() {
        let same = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
        ]);
        assert!(!cross_origin(&same));
        let other = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert!(cross_origin(&other));
        let opaque = headers(&[(header::HOST, "127.0.0.1:8080"), (header::ORIGIN, "null")]);
        assert!(cross_origin(&opaque));
        assert!(
            !cross_origin(&headers(&[(header::HOST, "h")])),
            "no Origin: not a browser's cross-site request"
        );
    }
}
