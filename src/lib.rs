//! Watchword: the server, the CLI and the compute agent.
#![forbid(unsafe_code)]

pub mod access;
pub mod agent;
pub mod api;
pub mod ca;
pub mod changes;
pub mod checkpoint;
pub mod cli;
pub mod client;
pub mod config;
pub mod digest;
pub mod entities;
pub mod hsm;
pub mod logging;
pub mod pki;
pub mod projector;
pub mod reader;
pub mod seal;
pub mod secrets;
pub mod server;
pub mod signer;
pub mod stream;
pub mod tls;
pub mod writer;
