//! The local control socket `<data-dir>/dcid.sock`: the only way `dcish` talks to an agent.
//!
//! It carries the same XML envelopes as the mesh, framed as in `proto/README.md`, so that every
//! operator action is an envelope that can later be logged and replayed. The socket is mode 0600 in
//! a 0700 directory, and each connection's peer credentials must be this agent's user or root.
//! Each connection is served by its own task; it asks the agent's event loop for state through
//! [`Query`] messages, never by touching the agent's state itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dci_proto::control::{
    counters_to_payload, error_payload, events_to_payload, members_to_payload, seats_to_payload,
    ControlRequest, EventInfo, MemberInfo, SeatInfo,
};
use dci_proto::{frame, Envelope, Kind, Limits, Sender};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Largest request accepted on the control socket.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// How long a connection may sit between requests before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A question from a control connection to the agent's event loop.
#[derive(Debug)]
pub enum Query {
    /// The member table, as shown by `dcish nodes`.
    Members(oneshot::Sender<Vec<MemberInfo>>),
    /// The recent membership events, as shown by `dcish events`.
    Events(oneshot::Sender<Vec<EventInfo>>),
    /// The agent's counters, as shown by `dcish status`.
    Counters(oneshot::Sender<Vec<(String, u64)>>),
    /// The seat table, as shown by `dcish seats`.
    Seats(oneshot::Sender<Vec<SeatInfo>>),
    /// The failure notices received lately (`dcish notices`).
    Notices(oneshot::Sender<Vec<dci_proto::control::NoticeInfo>>),
    /// Dial the seeds afresh, then the member table (`dcish discover`).
    Discover(oneshot::Sender<Vec<MemberInfo>>),
    /// An operator declares a blade's holder failed (`dcish failover`).
    Failover {
        /// The blade.
        blade: String,
        /// The successor's name, if the operator chose it.
        to: Option<String>,
        /// The hand-over asked, or why not (code, message).
        reply: oneshot::Sender<Result<dci_proto::control::HandoverInfo, (String, String)>>,
    },
    /// An operator removes a dead or departed member from quorums (`dcish forget`).
    Forget {
        /// The member, by name or node id.
        node: String,
        /// Its (id, name), or why not (code, message).
        reply: oneshot::Sender<Result<(String, String), (String, String)>>,
    },
    /// A backup or package command (`dcish backup`, `restore`, `deploy`, …), for the replication
    /// service.
    Backup(crate::replication::ControlCall),
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The path is too long for a Unix socket (the kernel limit is 107 bytes).
    #[error("control socket path {0} is too long for a Unix socket; use a shorter --data-dir")]
    PathTooLong(PathBuf),
    /// Binding failed.
    #[error("cannot open control socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// Binds the socket at `path` (replacing a stale one: the caller holds the data dir lock).
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if path.as_os_str().as_bytes().len() > 107 {
        return Err(ControlError::PathTooLong(path.into()));
    }
    let bind_err = |source| ControlError::Bind {
        path: path.into(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Accepts control connections until the agent stops.
pub async fn serve(
    listener: UnixListener,
    node_id: String,
    queries: mpsc::Sender<Query>,
    messenger: crate::router::MessengerHandle,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let node_id = node_id.clone();
                let queries = queries.clone();
                let messenger = messenger.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, &node_id, &queries, &messenger).await {
                        tracing::debug!("control connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn authorized(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    stream
        .peer_cred()
        .map(|c| c.uid() == me || c.uid() == 0)
        .unwrap_or(false)
}

async fn serve_connection(
    mut stream: UnixStream,
    node_id: &str,
    queries: &mpsc::Sender<Query>,
    messenger: &crate::router::MessengerHandle,
) -> Result<(), String> {
    let me = Sender {
        node: node_id.to_string(),
        blade: None,
        app: "control".into(),
        instance: None,
    };
    if !authorized(&stream) {
        tracing::warn!("refused a control connection from another user");
        return Err("unauthorized peer".into());
    }
    let limits = Limits::default();
    loop {
        let bytes = match tokio::time::timeout(
            IDLE_TIMEOUT,
            frame::read_frame(&mut stream, MAX_REQUEST_BYTES),
        )
        .await
        {
            Err(_) => return Err("idle timeout".into()),
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                // The framing is lost; say why once and hang up.
                let reply = error_envelope(&me, "bad-frame", &e.to_string());
                let _ = frame::write_frame(&mut stream, reply.to_xml().as_bytes()).await;
                return Err(e.to_string());
            }
        };
        let parsed = Envelope::from_xml(&bytes, &limits);
        // A `<route>` request is answered by a stream of frames rather than one.
        if let Ok(request) = &parsed {
            let control = request.target.app.as_deref() == Some(dci_proto::control::CONTROL_APP);
            if let Some(route) = control
                .then(|| crate::router::control::route_of(request))
                .flatten()
            {
                crate::router::control::stream(&me, request, route, messenger, &mut stream)
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            }
        }
        let reply = match parsed {
            Err(e) => error_envelope(&me, "bad-envelope", &e.to_string()),
            Ok(request) => dispatch(&me, request, queries, messenger).await,
        };
        frame::write_frame(&mut stream, reply.to_xml().as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// The operator's request envelope for this agent's control app, as `dcish` and the console
/// send it: one builder, so that both speak the same envelopes.
pub fn request(sender: Sender, payload: dci_proto::Payload) -> Envelope {
    Envelope::request(
        sender,
        dci_proto::Target {
            to: dci_proto::Destination::Node("local".into()),
            app: Some(dci_proto::control::CONTROL_APP.into()),
            instance: None,
        },
        payload,
    )
}

/// Answers one operator request: a control command (membership, seats, backup, packages) is
/// asked of the event loop, anything for another app is routed as sent by this node's operator
/// (`dcish send`, `log`, ...). The control socket and the web console both come here, so the two
/// never disagree.
pub async fn dispatch(
    me: &Sender,
    request: Envelope,
    queries: &mpsc::Sender<Query>,
    messenger: &crate::router::MessengerHandle,
) -> Envelope {
    if request.target.app.as_deref() != Some(dci_proto::control::CONTROL_APP) {
        return crate::router::control::answer(me, request, messenger).await;
    }
    answer(me, &request, queries, messenger).await
}

fn error_envelope(me: &Sender, code: &str, message: &str) -> Envelope {
    let mut env = Envelope::request(
        me.clone(),
        dci_proto::Target {
            to: dci_proto::Destination::Node(me.node.clone()),
            app: Some("control".into()),
            instance: None,
        },
        error_payload(code, message),
    );
    env.kind = Kind::Error;
    env
}

async fn answer(
    me: &Sender,
    request: &Envelope,
    queries: &mpsc::Sender<Query>,
    messenger: &crate::router::MessengerHandle,
) -> Envelope {
    let fail =
        |code: &str, msg: &str| request.reply_to(me.clone(), Kind::Error, error_payload(code, msg));
    use crate::replication::Operator;
    let operator = dci_proto::backup::BackupRequest::from_payload(&request.payload)
        .map(|r| r.map(Operator::Backup))
        .or_else(|| {
            dci_proto::package::PackageRequest::from_payload(&request.payload)
                .map(|r| r.map(Operator::Package))
        });
    if let Some(operator) = operator {
        let answer = match operator {
            Err(e) => Err(("bad-command".to_string(), e.to_string())),
            Ok(b) => ask(queries, |tx| Query::Backup((b, tx)))
                .await
                .unwrap_or_else(|| Err(("stopping".into(), "the agent is shutting down".into()))),
        };
        return match answer {
            Ok(p) => request.reply_to(me.clone(), Kind::Reply, p),
            Err((code, msg)) => fail(&code, &msg),
        };
    }
    let command = match ControlRequest::from_payload(&request.payload) {
        Ok(c) => c,
        Err(e) => return fail("unknown-command", &e.to_string()),
    };
    let payload = match command {
        ControlRequest::Forget { node } => {
            return match ask(queries, |reply| Query::Forget { node, reply }).await {
                Some(Ok((id, name))) => request.reply_to(
                    me.clone(),
                    Kind::Reply,
                    dci_proto::control::forgotten_to_payload(&id, &name),
                ),
                Some(Err((code, msg))) => fail(&code, &msg),
                None => fail("stopping", "the agent is shutting down"),
            };
        }
        ControlRequest::Failover { blade, to } => {
            return match ask(queries, |reply| Query::Failover { blade, to, reply }).await {
                Some(Ok(h)) => request.reply_to(
                    me.clone(),
                    Kind::Reply,
                    dci_proto::control::handover_to_payload(&h),
                ),
                Some(Err((code, msg))) => fail(&code, &msg),
                None => fail("stopping", "the agent is shutting down"),
            };
        }
        ControlRequest::Nodes => ask(queries, Query::Members)
            .await
            .map(|m| members_to_payload(&m)),
        ControlRequest::Events => ask(queries, Query::Events)
            .await
            .map(|e| events_to_payload(&e)),
        ControlRequest::Notices => ask(queries, Query::Notices)
            .await
            .map(|n| dci_proto::control::notices_to_payload(&n)),
        ControlRequest::Discover => ask(queries, Query::Discover)
            .await
            .map(|m| members_to_payload(&m)),
        ControlRequest::Seats => ask(queries, Query::Seats)
            .await
            .map(|s| seats_to_payload(&s)),
        ControlRequest::Counters => match ask(queries, Query::Counters).await {
            Some(mut c) => {
                c.extend(messenger.stats().await);
                Some(counters_to_payload(&c))
            }
            None => None,
        },
    };
    match payload {
        Some(p) => request.reply_to(me.clone(), Kind::Reply, p),
        None => fail("stopping", "the agent is shutting down"),
    }
}

/// Asks the event loop; `None` when it has stopped.
async fn ask<T>(
    queries: &mpsc::Sender<Query>,
    query: impl FnOnce(oneshot::Sender<T>) -> Query,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    queries.send(query(tx)).await.ok()?;
    rx.await.ok()
}
