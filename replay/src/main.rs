//! `watchword-replay`: verify Watchword's event history without trusting the servers.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use watchword_events::verify::RootKeys;
use watchword_replay::{ReplayError, verify_stream};

#[derive(Debug, Parser)]
#[command(name = "watchword-replay", version, about = "Verify Watchword's event history offline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify every signature, hash chain and stream sequence of a live stream.
    ///
    /// Exit status 0 when everything verifies, 1 at the first failure (named with
    /// its stream sequence), 2 for an invalid command line, 69 when the stream
    /// cannot be read.
    Verify {
        /// NATS server holding the stream.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Name of the event stream.
        #[arg(long, default_value = "WATCHWORD_EVENTS")]
        stream: String,
        /// Trusted HSM root public key (64 hex digits, from `watchword hsm root-key`); repeatable.
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<String>,
    },
}

fn main() -> ExitCode {
    let Command::Verify { nats, stream, root_keys } = Cli::parse().command;
    let roots = match parse_roots(&root_keys) {
        Ok(roots) => roots,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(verify_stream(&nats, &stream, &roots)) {
        Ok(report) => {
            println!(
                "verified {} events up to stream sequence {}: {} secrets, {} signing keys",
                report.events,
                report.last_sequence,
                report.state.secrets.len(),
                report.state.signing_keys.len()
            );
            ExitCode::SUCCESS
        }
        Err(error @ ReplayError::Source { .. }) => {
            eprintln!("error: {error}");
            ExitCode::from(69)
        }
        Err(error) => {
            eprintln!("verification failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse_roots(keys: &[String]) -> Result<RootKeys, String> {
    let mut raw = Vec::new();
    for key in keys {
        let bytes = hex::decode(key.trim()).map_err(|_| format!("root key {key:?} is not hexadecimal"))?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|_| format!("root key {key:?} must be 32 bytes (64 hex digits)"))?;
        raw.push(bytes);
    }
    RootKeys::new(&raw).map_err(|e| format!("root key is not a valid Ed25519 public key: {e}"))
}
