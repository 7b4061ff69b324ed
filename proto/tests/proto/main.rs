//! The dci-proto crate from outside: its example envelopes, its schema (through xmllint, an
//! independent validator), hostile input, and arbitrary values.
//!
//! Schema checks run when `xmllint` is on PATH and print a skip note otherwise.

mod control;
mod examples;
mod hostile;
mod round_trip;
mod strategies;
mod support;
