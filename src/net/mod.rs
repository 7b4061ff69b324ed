//! The libp2p shell: transport, discovery and the mesh protocols.
//!
//! Only the agent's event loop owns the [`Swarm`]. Every connection is TCP, then (with a cluster key)
//! the libp2p private-network handshake, then noise (authenticated to a `PeerId`) and yamux. The
//! private-network layer encrypts everything under the cluster key, so a node without the key fails
//! the noise handshake and never reaches any protocol: it is neither connected nor seen. QUIC is left
//! out on purpose, because the private-network layer cannot wrap it and it would bypass admission.
//!
//! Blocks travel on a second swarm with its own listener, so on connections of their own: a bulk
//! transfer on a lossy link fills its TCP connection's buffers for seconds, and probes, lease
//! renewals and envelopes queued behind it on the same connection would miss their deadlines (a
//! live node declared dead, a holder's lease lapsing). The two swarms share the identity key. The
//! data swarm has no private-network layer: every byte there would be encrypted twice (its
//! XSalsa20 was a fifth of a backup's CPU), and admission is already decided on the mesh. A data
//! connection is noise-authenticated to a `PeerId` and accepted only from a member of the mesh
//! (its allow list, which the agent fills from the member table); anyone else is disconnected
//! right after the handshake, before any request is read.

pub mod backoff;
pub mod codec;
pub mod frames;

use std::time::Duration;

use futures::future::Either;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{identify, mdns, noise, ping, tcp, yamux, PeerId, StreamProtocol, Swarm};

use codec::FrameCodec;

/// Identify's protocol version; a peer announcing another one is disconnected.
pub const PROTOCOL_VERSION: &str = "/dci/1";
/// The membership gossip protocol: long-lived streams of length-prefixed packets.
pub const MEMBERSHIP_PROTOCOL: StreamProtocol = StreamProtocol::new("/dci/membership/2");
/// The election protocol (`crate::failover`), framed as membership's.
pub const ELECTION_PROTOCOL: StreamProtocol = StreamProtocol::new("/dci/election/3");
/// How long a connection upgrade (private network, noise, yamux) may take.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often each connection is pinged; a connection whose ping goes unanswered for
/// [`PING_TIMEOUT`] is closed, so that long-lived streams do not keep writing into a dead peer's.
const PING_INTERVAL: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a block-protocol request may take: a forwarded restore answers when it is done.
const BLOCKS_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// Connections without traffic are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub use behaviour::{Behaviour, BehaviourEvent, DataBehaviour, DataBehaviourEvent};

/// The behaviour lives in its own module because its derive generates an undocumented event enum.
#[allow(missing_docs)]
mod behaviour {
    use libp2p::swarm::{behaviour::toggle::Toggle, NetworkBehaviour};
    use libp2p::{allow_block_list, request_response};
    use libp2p::{identify, mdns, ping};

    /// The data swarm's: blocks and archives between a blade's owner and its holders
    /// (`crate::replication`), with members of the mesh only.
    #[derive(NetworkBehaviour)]
    pub struct DataBehaviour {
        /// Denies connections with peers the mesh has not admitted.
        pub members: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
        /// The blocks protocol.
        pub blocks: request_response::Behaviour<super::FrameCodec>,
    }

    /// One field per protocol; see the module docs.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Exchanges agent version and listen addresses on connect.
        pub identify: identify::Behaviour,
        /// Local-subnet discovery, off with `--no-mdns`.
        pub mdns: Toggle<mdns::tokio::Behaviour>,
        /// Finds dead connections.
        pub ping: ping::Behaviour,
        /// Long-lived streams: envelopes (the router's messenger task), membership and election
        /// messages ([`super::frames`]).
        pub stream: libp2p_stream::Behaviour,
    }
}

/// Why the network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The noise configuration could not be made from the identity.
    #[error("noise setup failed: {0}")]
    Noise(#[from] noise::Error),
    /// mDNS could not start (e.g. no usable interface).
    #[error("mDNS could not start: {0}")]
    Mdns(std::io::Error),
}

fn transport(
    key: &Keypair,
    psk: Option<PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let noise = noise::Config::new(key)?;
    let yamux = yamux::Config::default();
    // With a key, every byte after the TCP handshake is encrypted under it before noise starts.
    let admitted = tcp.and_then(move |socket, _| async move {
        match psk {
            Some(psk) => PnetConfig::new(psk)
                .handshake(socket)
                .await
                .map(Either::Left),
            None => Ok(Either::Right(socket)),
        }
    });
    Ok(admitted
        .upgrade(Version::V1)
        .authenticate(noise)
        .multiplex(yamux)
        .timeout(UPGRADE_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// DNS settings from `/etc/resolv.conf` and `/etc/hosts`; with none, only the hosts file and IPs work.
fn resolver() -> (libp2p::dns::ResolverConfig, libp2p::dns::ResolverOpts) {
    hickory_resolver::system_conf::read_system_conf().unwrap_or_else(|e| {
        tracing::warn!("no DNS configuration ({e}); peer names resolve through /etc/hosts only");
        (
            libp2p::dns::ResolverConfig::from_name_servers(Vec::new()),
            libp2p::dns::ResolverOpts::default(),
        )
    })
}

/// Builds the swarm for `key`, admitting only holders of `psk` when one is given.
pub fn build_swarm(
    key: Keypair,
    psk: Option<PreSharedKey>,
    enable_mdns: bool,
) -> Result<Swarm<Behaviour>, NetError> {
    let local_peer = key.public().to_peer_id();
    let mdns = if enable_mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), local_peer)
                .map_err(NetError::Mdns)?,
        )
    } else {
        None
    };
    let (dns_config, dns_opts) = resolver();
    let transport = transport(&key, psk)?;
    let Ok(builder) = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|_| transport);
    let Ok(builder) = builder
        .with_dns_config(dns_config, dns_opts)
        .with_behaviour(|key| Behaviour {
            identify: identify::Behaviour::new(
                identify::Config::new(PROTOCOL_VERSION.into(), key.public())
                    .with_agent_version(format!("dcid/{}", env!("CARGO_PKG_VERSION"))),
            ),
            mdns: Toggle::from(mdns),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            ),
            stream: libp2p_stream::Behaviour::new(),
        });
    Ok(builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build())
}

/// Builds the data swarm for `key`: the blocks protocol, with the members the agent allows
/// (see the module docs).
pub fn build_data_swarm(key: Keypair) -> Result<Swarm<DataBehaviour>, NetError> {
    let transport = transport(&key, None)?;
    let Ok(builder) = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|_| transport);
    let Ok(builder) = builder.with_behaviour(|_| DataBehaviour {
        members: Default::default(),
        blocks: request_response::Behaviour::with_codec(
            FrameCodec {
                max_bytes: crate::replication::protocol::MAX_FRAME_BYTES,
            },
            [(crate::replication::BLOCKS_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(BLOCKS_REQUEST_TIMEOUT)
                .with_max_concurrent_streams(64),
        ),
    });
    Ok(builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build())
}

/// The data listener beside a mesh listen address: the same IP on a port the system picks.
pub fn data_listen_addr(mesh: &libp2p::Multiaddr) -> libp2p::Multiaddr {
    mesh.iter()
        .map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(_) => libp2p::multiaddr::Protocol::Tcp(0),
            p => p,
        })
        .collect()
}

/// A fresh random cluster key, in the file format `--cluster-key` reads.
pub fn generate_cluster_key() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes);
    PreSharedKey::new(bytes).to_key_file()
}
