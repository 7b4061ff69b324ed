//! The deterministic simulator: the real protocol cores, thousands of them, in one process with
//! virtual time and a seeded RNG, on a network that loses, delays, partitions and crashes on demand.
//! A run is a pure function of its configuration and seed; every report prints the seed to replay.

pub mod election;
pub mod membership;
