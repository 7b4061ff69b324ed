//! The control-socket client: one request envelope out, one reply envelope back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dci_proto::{frame, Envelope, Kind, Limits, Payload, Sender};
use tokio::net::UnixStream;

/// Largest reply accepted from the agent.
pub const MAX_REPLY_BYTES: usize = 64 << 20;
/// How long a request may take before the shell gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a request to the agent failed; each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error(
        "cannot reach the agent at {path}: {reason} (is dcid running? use --agent or DCI_AGENT)"
    )]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The connection broke or the reply was not a valid envelope.
    #[error("agent at {path}: {reason}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The agent did not answer in time.
    #[error("agent at {0} did not answer within {1:?}")]
    Timeout(PathBuf, Duration),
    /// The agent answered with an error envelope.
    #[error("{code}: {message}")]
    Refused {
        /// The error code.
        code: String,
        /// The agent's message.
        message: String,
    },
}

/// A connection to one agent's control socket.
pub struct Client {
    path: PathBuf,
    stream: UnixStream,
}

impl Client {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| ClientError::Connect {
                path: path.into(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            path: path.into(),
            stream,
        })
    }

    /// Connects again to the same socket (the agent closes a connection idle for minutes).
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        *self = Client::connect(&self.path.clone()).await?;
        Ok(())
    }

    /// Sends `payload` to the agent's control app and returns the reply's payload.
    pub async fn request(&mut self, payload: Payload) -> Result<Payload, ClientError> {
        self.request_within(payload, REQUEST_TIMEOUT).await
    }

    /// [`Client::request`] with its own time limit, for commands that run long (restores).
    pub async fn request_within(
        &mut self,
        payload: Payload,
        timeout: Duration,
    ) -> Result<Payload, ClientError> {
        let sender = Sender {
            node: "dcish".into(),
            blade: None,
            app: "control".into(),
            instance: None,
        };
        let reply = self
            .exchange_within(&crate::control::request(sender, payload), timeout)
            .await?;
        match reply.kind {
            Kind::Reply => Ok(reply.payload),
            Kind::Error => {
                let (code, message) = dci_proto::control::error_from_payload(&reply.payload)
                    .unwrap_or_else(|| ("error".into(), "the agent refused the request".into()));
                Err(ClientError::Refused { code, message })
            }
            Kind::Request | Kind::Event => Err(ClientError::Protocol {
                path: self.path.clone(),
                reason: format!("unexpected {} envelope in reply", reply.kind),
            }),
        }
    }

    /// Sends any envelope to the agent and returns the envelope it answers with.
    pub async fn exchange(&mut self, request: &Envelope) -> Result<Envelope, ClientError> {
        self.exchange_within(request, REQUEST_TIMEOUT).await
    }

    /// [`Client::exchange`] with its own time limit.
    pub async fn exchange_within(
        &mut self,
        request: &Envelope,
        timeout: Duration,
    ) -> Result<Envelope, ClientError> {
        let exchange = async {
            self.send(request).await?;
            self.receive().await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.path.clone(), timeout))?
    }

    /// Sends one envelope to the agent.
    pub async fn send(&mut self, request: &Envelope) -> Result<(), ClientError> {
        frame::write_frame(&mut self.stream, request.to_xml().as_bytes())
            .await
            .map_err(|e| self.protocol(e.to_string()))
    }

    /// Reads the next envelope the agent sends, however long it takes (the caller bounds it).
    pub async fn receive(&mut self) -> Result<Envelope, ClientError> {
        let bytes = frame::read_frame(&mut self.stream, MAX_REPLY_BYTES)
            .await
            .map_err(|e| self.protocol(e.to_string()))?
            .ok_or_else(|| self.protocol("the agent closed the connection".into()))?;
        Envelope::from_xml(&bytes, &reply_limits()).map_err(|e| self.protocol(e.to_string()))
    }

    /// The socket this client is connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            reason,
        }
    }
}

/// The limits of what the agent sends back: up to [`MAX_REPLY_BYTES`].
pub fn reply_limits() -> Limits {
    Limits {
        max_envelope_bytes: MAX_REPLY_BYTES,
        max_payload_bytes: MAX_REPLY_BYTES,
        ..Limits::default()
    }
}
