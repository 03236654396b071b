//! Verification and reconstruction of Watchword's event history, for auditors.
//!
//! The replay tool trusts only the root public keys it is given. It reads the event
//! stream, live from NATS or from an exported archive, from its first message. It
//! checks that no stream sequence is missing, verifies and applies every event
//! through the same fold the server uses, and recomputes the Merkle root of every
//! checkpoint. It reports the first failure with its stream sequence and the check
//! that broke. The parts:
//!
//! - [`verify`]: the [`Verifier`] that every command reads the history through;
//! - [`pipeline`]: `verify` with signatures checked on a thread of their own;
//! - [`source`]: reading the messages from NATS or from an archive;
//! - [`archive`]: the archive format that `export` writes;
//! - [`query`]: state at a time or sequence, a secret's history, who could read it;
//! - [`model`]: rebuilding a redb read model and comparing two of them;
//! - [`output`]: tables as text, JSON or CSV.
//!
//! ```no_run
//! # async fn example() -> Result<(), watchword_replay::ReplayError> {
//! use watchword_events::verify::RootKeys;
//! use watchword_replay::source::Source;
//! use watchword_replay::verify::{SkipList, verify};
//!
//! let roots = RootKeys::new(&[[0u8; 32]]).expect("a valid Ed25519 key");
//! let source = Source::Archive("history.wwa".into());
//! let report = verify(&source, &roots, None, &SkipList::default()).await?;
//! println!("{} events verified", report.events);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod archive;
pub mod export;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod query;
pub mod source;
pub mod verify;

use watchword_events::AggregateType;
use watchword_events::error::{ApplyError, DecodeError, FoldError, VerifyError};

pub use verify::{Pin, Report, SkipList, Verifier};

/// A history that could not be read or does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The stream or archive could not be read (I/O, network).
    #[error("cannot read {source_name}: {message}")]
    Source { source_name: String, message: String },
    /// The archive file is not a well-formed archive.
    #[error("archive {path}: {message}")]
    Archive { path: String, message: String },
    #[error("stream sequence {found}: sequence gap: sequence {expected} is missing (deleted or never stored)")]
    SequenceGap { expected: u64, found: u64 },
    /// An event failed decoding, its signature, its chain or the fold.
    #[error("{0}")]
    Event(#[from] ApplyError),
    #[error("stream sequence {sequence}: checkpoint: {failure}")]
    Checkpoint { sequence: u64, failure: CheckpointFailure },
    #[error("pinned checkpoint at stream sequence {sequence}: {failure}")]
    Pin { sequence: u64, failure: PinFailure },
    /// A message listed as skipped (not an event) is a valid frame, or the bare
    /// signed bytes of an event.
    #[error(
        "stream sequence {sequence}: listed as skipped, but it holds an event (a valid frame or its signed \
         bytes); remove it from --skip-sequence"
    )]
    SkippedEvent { sequence: u64 },
    /// An invalid request: a bad argument, or a point past the history's end.
    #[error("{0}")]
    Usage(String),
    /// A bug in this tool, such as a panicked worker thread.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Reason a checkpoint does not match the events it covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointFailure {
    #[error("its range starts at {found}, but the previous checkpoint's range ends at {}", expected - 1)]
    RangeStart { expected: u64, found: u64 },
    #[error("its range ends at {last}, not before its own sequence")]
    RangeEnd { last: u64 },
    #[error("the Merkle root of sequences {first}..={last} does not match the events read")]
    MerkleRoot { first: u64, last: u64 },
    #[error("it does not link to the previous checkpoint at stream sequence {previous}")]
    PreviousLink { previous: u64 },
    #[error("body: {0}")]
    Body(DecodeError),
}

/// Reason a pinned checkpoint check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinFailure {
    #[error("missing: the history ends at stream sequence {last} (truncated?)")]
    Missing { last: u64 },
    #[error("the event there is not a checkpoint")]
    NotCheckpoint,
    #[error("its hash is {found}, not the pinned {expected}")]
    HashMismatch { expected: String, found: String },
}

/// The check that failed, as `verify` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Check {
    Source,
    Decode,
    Subject,
    Signature,
    Chain,
    Fold,
    Checkpoint,
    SequenceGap,
    PinnedCheckpoint,
    Skip,
    Usage,
    Internal,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Source => "source",
            Check::Decode => "decode",
            Check::Subject => "subject",
            Check::Signature => "signature",
            Check::Chain => "chain",
            Check::Fold => "fold",
            Check::Checkpoint => "checkpoint",
            Check::SequenceGap => "sequence gap",
            Check::PinnedCheckpoint => "pinned checkpoint",
            Check::Skip => "skip",
            Check::Usage => "usage",
            Check::Internal => "internal",
        }
    }
}

impl ReplayError {
    /// Returns the check that failed.
    pub fn check(&self) -> Check {
        match self {
            ReplayError::Source { .. } => Check::Source,
            ReplayError::Archive { .. } => Check::Decode,
            ReplayError::SequenceGap { .. } => Check::SequenceGap,
            ReplayError::Event(error) => apply_check(error),
            ReplayError::Checkpoint { .. } => Check::Checkpoint,
            ReplayError::Pin { .. } => Check::PinnedCheckpoint,
            ReplayError::SkippedEvent { .. } => Check::Skip,
            ReplayError::Usage(_) => Check::Usage,
            ReplayError::Internal(_) => Check::Internal,
        }
    }

    /// Returns the stream sequence of the first failing message, when one is known.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            ReplayError::SequenceGap { found, .. } => Some(*found),
            ReplayError::Event(ApplyError::Verify { sequence, .. } | ApplyError::Fold { sequence, .. }) => {
                Some(*sequence)
            }
            ReplayError::Checkpoint { sequence, .. }
            | ReplayError::Pin { sequence, .. }
            | ReplayError::SkippedEvent { sequence } => Some(*sequence),
            _ => None,
        }
    }
}

fn apply_check(error: &ApplyError) -> Check {
    match error {
        ApplyError::Verify { source, .. } => match source {
            VerifyError::Decode(_) => Check::Decode,
            VerifyError::SubjectMismatch { .. } => Check::Subject,
            VerifyError::UnknownKey { .. } | VerifyError::RootKeyRequired { .. } | VerifyError::BadSignature { .. } => {
                Check::Signature
            }
            _ => Check::Source,
        },
        ApplyError::Fold { source, .. } => match source {
            FoldError::VersionGap { .. } | FoldError::ChainBroken { .. } => Check::Chain,
            FoldError::Body { .. } => Check::Decode,
            FoldError::Inconsistent { aggregate, .. } if aggregate.kind == AggregateType::Checkpoint => {
                Check::Checkpoint
            }
            _ => Check::Fold,
        },
        _ => Check::Source,
    }
}
