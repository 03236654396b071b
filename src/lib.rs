//! Watchword: the server, the CLI and the compute agent.
#![forbid(unsafe_code)]

pub mod hsm;
pub mod pki;
pub mod tls;
