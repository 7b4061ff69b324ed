//! Failover: which node holds each blade, and how a replacement is chosen when a holder fails.
//!
//! [`election`] is the sans-IO core: the seat table, claims and promises, majority quorums and the
//! holder's lease. [`rank`] orders the candidates for a blade the same way on every node.
//! [`driver`] runs the core inside the agent: membership in, messages over libp2p, state in sled.
//! [`degraded`] decides what a holder does on its own sustained degradation (move, or helpers).

pub mod degraded;
pub mod driver;
pub mod election;
pub mod rank;
pub mod steps;
