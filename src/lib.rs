//! DCI: the agent (`dcid`) that runs on every blade of a cluster, and its shell (`dcish`).
//!
//! Layers, each depending only on those above it in this list:
//! - [`config`], [`datadir`]: operator input and the on-disk home of a node, validated before use.
//! - [`timers`]: the timer queue that drives the cores, in the agent and in the simulator.
//! - [`resources`], [`degradation`]: this host's resource figures and the sans-IO detector of
//!   sustained degradation.
//! - [`membership`]: the sans-IO SWIM + Lifeguard core and the agent's signed instance of it.
//! - [`events`], [`notice`], [`hook`]: membership events for subscribers, failure notices, and
//!   the operator's commands run at given moments.
//! - [`store`]: blocks (content-defined chunks, BLAKE3 ids) and the archive catalog.
//! - [`backup`]: scanning a tree into archives (snapshot, delta) and restoring them.
//! - [`replication`]: placement of a blade's holders, and the block protocol between nodes.
//! - [`failover`]: the seat table and the sans-IO election of a blade's holder.
//! - [`net`]: the libp2p shell (transport, admission by cluster key, discovery, framing).
//! - [`control`]: the local control socket that carries XML envelopes from `dcish`.
//! - [`peerlet_host`], [`router`]: peerlet instances, and envelope routing over the mesh with the
//!   message log.
//! - [`package`]: signed software packages, their installer, and deploying them over the mesh.
//! - [`agent`]: the one event loop that owns the swarm and drives the cores.
//! - [`shell`]: `dcish`, the operator's client.
//! - [`console`]: the web console the agent serves, a client of the same control path as
//!   [`shell`] (and showing the same `--json` documents).
//! - [`sim`]: the deterministic simulator that runs the protocol cores at scale.
#![deny(missing_docs)]

pub mod agent;
pub mod backup;
pub mod config;
pub mod console;
pub mod control;
pub mod datadir;
pub mod degradation;
pub mod events;
pub mod failover;
pub mod hook;
pub mod membership;
pub mod net;
pub mod notice;
pub mod package;
pub mod peerlet_host;
pub mod replication;
pub mod resources;
pub mod router;
pub mod shell;
pub mod sim;
pub mod store;
pub mod timers;
