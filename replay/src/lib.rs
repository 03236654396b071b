//! Offline verification of Watchword's event history, for auditors.
//!
//! The replay tool trusts only the root public keys it is given. It reads the event
//! stream from its first message and checks that no stream sequence is missing. It
//! verifies and applies every event through the same fold the server uses, and
//! reports the first failure with its stream sequence and the check that broke.
//!
//! ```no_run
//! # async fn example() -> Result<(), watchword_replay::ReplayError> {
//! use watchword_events::verify::RootKeys;
//! let roots = RootKeys::new(&[[0u8; 32]]).expect("a valid Ed25519 key");
//! let report = watchword_replay::verify_stream("nats://127.0.0.1:4222", "WATCHWORD_EVENTS", &roots).await?;
//! println!("{} events verified", report.events);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use watchword_events::error::ApplyError;
use watchword_events::fold::{MemoryState, apply_message};
use watchword_events::verify::RootKeys;

/// A history that could not be read or does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error("cannot read stream {stream} from {url}: {message}")]
    Source { url: String, stream: String, message: String },
    #[error("stream sequence {found}: sequence {expected} is missing (deleted or never stored)")]
    MissingSequence { expected: u64, found: u64 },
    #[error(transparent)]
    Invalid(#[from] ApplyError),
}

/// Summary of a successful verification: events checked and the state they build.
#[derive(Debug, Default)]
pub struct Report {
    pub events: u64,
    pub last_sequence: u64,
    pub state: MemoryState,
}

/// Verifies messages given in stream order, starting at sequence 1.
#[derive(Debug)]
pub struct Verifier<'a> {
    roots: &'a RootKeys,
    report: Report,
}

impl<'a> Verifier<'a> {
    pub fn new(roots: &'a RootKeys) -> Verifier<'a> {
        Verifier { roots, report: Report::default() }
    }

    /// Verifies and applies the next message; its sequence must follow the last one.
    pub fn push(&mut self, subject: &str, payload: &[u8], sequence: u64) -> Result<(), ReplayError> {
        let expected = self.report.last_sequence + 1;
        if sequence != expected {
            return Err(ReplayError::MissingSequence { expected, found: sequence });
        }
        apply_message(&mut self.report.state, self.roots, subject, payload, sequence)?;
        self.report.events += 1;
        self.report.last_sequence = sequence;
        Ok(())
    }

    pub fn finish(self) -> Report {
        self.report
    }
}

/// Reads a live stream from its start to its last message at the time of the call,
/// and verifies it.
pub async fn verify_stream(url: &str, stream_name: &str, roots: &RootKeys) -> Result<Report, ReplayError> {
    let source_error =
        |message: String| ReplayError::Source { url: url.to_owned(), stream: stream_name.to_owned(), message };
    let client = async_nats::connect(url).await.map_err(|e| source_error(e.to_string()))?;
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(stream_name).await.map_err(|e| source_error(e.to_string()))?;
    let last = stream.info().await.map_err(|e| source_error(e.to_string()))?.state.last_sequence;

    let mut verifier = Verifier::new(roots);
    if last == 0 {
        return Ok(verifier.finish());
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() })
        .await
        .map_err(|e| source_error(e.to_string()))?;
    let mut messages = consumer.messages().await.map_err(|e| source_error(e.to_string()))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| source_error(e.to_string()))?;
        let sequence = message.info().map_err(|e| source_error(e.to_string()))?.stream_sequence;
        verifier.push(message.subject.as_str(), &message.payload, sequence)?;
        if sequence >= last {
            break;
        }
    }
    Ok(verifier.finish())
}
