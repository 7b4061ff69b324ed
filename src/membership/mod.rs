//! Membership: who is in the mesh, and whether each member is alive.
//!
//! [`swim`] is the protocol core (SWIM with the Lifeguard extensions), sans-IO and generic so that the
//! simulator can run thousands of it; [`mesh`] is how the agent instantiates it: libp2p peer ids,
//! member metadata, ed25519-signed announcements and the wire codec.

pub mod mesh;
pub mod swim;
pub mod table;

use serde::{Deserialize, Serialize};

/// Whether a node holds a blade or waits as a spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds a blade.
    Active,
    /// Holds none; a candidate to replace a failed blade.
    Spare,
}

impl Role {
    /// The spelling used in output and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Spare => "spare",
        }
    }
}
