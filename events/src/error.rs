//! Errors of decoding, name checks, verification and the fold.

use crate::event::Aggregate;

/// Bytes that are not a well-formed event, frame or body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("malformed MessagePack: {0}")]
    Malformed(String),
    #[error(
        "not in canonical encoding (a value is encoded wider than needed, map keys are out of order or repeated, \
         or bytes follow the value)"
    )]
    NonCanonical,
    #[error("unsupported envelope format version {0}; this build reads version 1")]
    UnsupportedFormat(u8),
    #[error("unknown aggregate type {0:?}")]
    UnknownAggregateType(String),
}

/// A secret, client or group name that Watchword does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("invalid name: the name is empty")]
    Empty,
    #[error("invalid name: \".\" and \"..\" are reserved as URL path segments; add another character")]
    DotSegment,
    #[error("invalid name: {bytes} bytes long, the maximum is {max} bytes of UTF-8")]
    TooLong { bytes: usize, max: usize },
    #[error("invalid name: control character at character {position}; use printable characters only")]
    ControlCharacter { position: usize },
    #[error(
        "invalid name: invisible format character (such as a zero-width space or a direction override) \
         at character {position}; such names could pass for others"
    )]
    InvisibleCharacter { position: usize },
    #[error(
        "invalid name: its file name would be {bytes} bytes, the maximum is {max}; \
         characters other than A-Z a-z 0-9 - _ . @ + = , ~ : take 3 bytes each in a file name"
    )]
    FileNameTooLong { bytes: usize, max: usize },
}

/// A failure of the state view: the storage behind it, never the event.
#[derive(Debug, thiserror::Error)]
#[error("state storage failed: {0}")]
pub struct ViewError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// A stored event that fails verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("subject {actual:?} does not match the aggregate's subject {expected:?}")]
    SubjectMismatch { expected: String, actual: String },
    #[error("signature: key {key_id} is neither a trusted root key nor a certified signing key")]
    UnknownKey { key_id: String },
    #[error("signature: kind {kind} must be signed by a root key, but key {key_id} is not one")]
    RootKeyRequired { kind: String, key_id: String },
    #[error("signature: invalid signature by key {key_id}")]
    BadSignature { key_id: String },
    #[error(transparent)]
    View(#[from] ViewError),
}

/// An event that cannot be applied to the current state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FoldError {
    #[error("chain: {aggregate:?} is at version {current}, so the next event must have version {}, not {found}", current + 1)]
    VersionGap { aggregate: Aggregate, current: u64, found: u64 },
    #[error("chain: previous hash of {aggregate:?} version {version} does not match the hash of the event before it")]
    ChainBroken { aggregate: Aggregate, version: u64 },
    #[error("unknown event kind {kind:?}: upgrade this reader before replaying the stream")]
    UnknownKind { kind: String },
    #[error("event kind {kind:?} is not valid on a {aggregate:?}")]
    WrongAggregate { kind: String, aggregate: Aggregate },
    #[error("decode body of {kind}: {source}")]
    Body { kind: String, source: DecodeError },
    #[error("inconsistent {kind} on {aggregate:?}: {reason}")]
    Inconsistent { kind: String, aggregate: Aggregate, reason: String },
    #[error(transparent)]
    View(#[from] ViewError),
}

/// A stored event that could not be verified or applied, with its stream sequence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    #[error("stream sequence {sequence}: {source}")]
    Verify { sequence: u64, source: VerifyError },
    #[error("stream sequence {sequence}: {source}")]
    Fold { sequence: u64, source: FoldError },
    #[error(transparent)]
    View(#[from] ViewError),
}
