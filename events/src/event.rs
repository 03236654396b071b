//! The event envelope, its MessagePack encoding, the stored frame and the event hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::DecodeError;

/// Version of the envelope layout, the first element of every encoded envelope.
pub const FORMAT_VERSION: u8 = 1;

/// SHA-256 of an event's signed bytes.
pub type EventHash = [u8; 32];

/// The previous hash of the first event of every aggregate.
pub const ZERO_HASH: EventHash = [0; 32];

/// Kinds of aggregate: each has its own subject namespace and version sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum AggregateType {
    /// A secret, identified by its name.
    Secret,
    /// An in-process event signing key, identified by its key id.
    SigningKey,
    /// A client (a compute or a service), identified by its certificate identity.
    Client,
    /// A group of clients that grants read access to secrets, identified by its name.
    Group,
    /// The roles and tokens of an operator, identified by its client identity.
    Operator,
    /// The one chain of root-signed checkpoints of a stream.
    Checkpoint,
}

impl AggregateType {
    /// Returns the name used in the envelope and in subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateType::Secret => "secret",
            AggregateType::SigningKey => "signing_key",
            AggregateType::Client => "client",
            AggregateType::Group => "group",
            AggregateType::Operator => "operator",
            AggregateType::Checkpoint => "checkpoint",
        }
    }

    /// Parses the name used in the envelope.
    pub fn parse(name: &str) -> Option<AggregateType> {
        match name {
            "secret" => Some(AggregateType::Secret),
            "signing_key" => Some(AggregateType::SigningKey),
            "client" => Some(AggregateType::Client),
            "group" => Some(AggregateType::Group),
            "operator" => Some(AggregateType::Operator),
            "checkpoint" => Some(AggregateType::Checkpoint),
            _ => None,
        }
    }
}

/// An aggregate: the unit of ordering, versioning and hash chaining.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Aggregate {
    pub kind: AggregateType,
    pub id: String,
}

impl Aggregate {
    pub fn secret(name: &str) -> Aggregate {
        Aggregate { kind: AggregateType::Secret, id: name.to_owned() }
    }

    pub fn signing_key(key_id: &str) -> Aggregate {
        Aggregate { kind: AggregateType::SigningKey, id: key_id.to_owned() }
    }

    pub fn client(name: &str) -> Aggregate {
        Aggregate { kind: AggregateType::Client, id: name.to_owned() }
    }

    pub fn group(name: &str) -> Aggregate {
        Aggregate { kind: AggregateType::Group, id: name.to_owned() }
    }

    pub fn operator(identity: &str) -> Aggregate {
        Aggregate { kind: AggregateType::Operator, id: identity.to_owned() }
    }

    /// Returns the NATS subject that carries this aggregate's events.
    pub fn subject(&self) -> String {
        crate::names::event_subject(self.kind, &self.id)
    }
}

/// Principal that caused an event, and its authentication method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The authenticated principal: a certificate identity, an operator, or the server itself.
    pub principal: String,
    /// Authentication method of the principal, such as `mtls` or `hsm`.
    pub authentication: String,
}

/// An event as it is signed: every envelope field but the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Uuid,
    pub kind: String,
    pub aggregate: Aggregate,
    pub aggregate_version: u64,
    pub previous_hash: EventHash,
    /// Microseconds since the Unix epoch, UTC, as recorded by the writer.
    pub recorded_at_micros: i64,
    pub actor: Actor,
    pub correlation_id: String,
    pub key_id: String,
    /// The kind's body, itself MessagePack-encoded.
    pub body: Vec<u8>,
}

/// The wire layout of [`Event`]: a MessagePack array in field order.
#[derive(Serialize, Deserialize)]
struct EnvelopeWire<'a> {
    format_version: u8,
    #[serde(with = "serde_bytes")]
    id: [u8; 16],
    kind: &'a str,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    aggregate_version: u64,
    #[serde(with = "serde_bytes")]
    previous_hash: [u8; 32],
    recorded_at_micros: i64,
    actor: (&'a str, &'a str),
    correlation_id: &'a str,
    key_id: &'a str,
    #[serde(with = "serde_bytes")]
    body: &'a [u8],
}

/// The stored message: the signed bytes and the signature beside them.
#[derive(Serialize, Deserialize)]
struct FrameWire<'a> {
    #[serde(with = "serde_bytes")]
    signed: &'a [u8],
    #[serde(with = "serde_bytes")]
    signature: [u8; 64],
}

impl Event {
    /// Encodes the envelope into the exact bytes that are hashed and signed.
    pub fn to_signed_bytes(&self) -> Vec<u8> {
        let wire = EnvelopeWire {
            format_version: FORMAT_VERSION,
            id: *self.id.as_bytes(),
            kind: &self.kind,
            aggregate_type: self.aggregate.kind.as_str(),
            aggregate_id: &self.aggregate.id,
            aggregate_version: self.aggregate_version,
            previous_hash: self.previous_hash,
            recorded_at_micros: self.recorded_at_micros,
            actor: (&self.actor.principal, &self.actor.authentication),
            correlation_id: &self.correlation_id,
            key_id: &self.key_id,
            body: &self.body,
        };
        // Encoding into a Vec fails only on a serializer bug: every field has a
        // MessagePack representation.
        rmp_serde::to_vec(&wire).expect("envelope encodes")
    }

    /// Decodes signed bytes, rejecting anything that does not re-encode to the same bytes.
    pub fn from_signed_bytes(bytes: &[u8]) -> Result<Event, DecodeError> {
        let wire: EnvelopeWire<'_> = decode_exact(bytes).map_err(|error| unsupported_format(bytes).unwrap_or(error))?;
        if wire.format_version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedFormat(wire.format_version));
        }
        let kind = AggregateType::parse(wire.aggregate_type)
            .ok_or_else(|| DecodeError::UnknownAggregateType(wire.aggregate_type.to_owned()))?;
        let event = Event {
            id: Uuid::from_bytes(wire.id),
            kind: wire.kind.to_owned(),
            aggregate: Aggregate { kind, id: wire.aggregate_id.to_owned() },
            aggregate_version: wire.aggregate_version,
            previous_hash: wire.previous_hash,
            recorded_at_micros: wire.recorded_at_micros,
            actor: Actor { principal: wire.actor.0.to_owned(), authentication: wire.actor.1.to_owned() },
            correlation_id: wire.correlation_id.to_owned(),
            key_id: wire.key_id.to_owned(),
            body: wire.body.to_vec(),
        };
        if event.to_signed_bytes() != bytes {
            return Err(DecodeError::NonCanonical);
        }
        Ok(event)
    }
}

/// A signed event as stored in a stream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub signed: Vec<u8>,
    pub signature: [u8; 64],
}

impl Frame {
    /// Encodes the stored message payload.
    pub fn encode(&self) -> Vec<u8> {
        let wire = FrameWire { signed: &self.signed, signature: self.signature };
        rmp_serde::to_vec(&wire).expect("frame encodes")
    }

    /// Decodes a stored message payload; the envelope inside is not decoded yet.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        let wire: FrameWire<'_> = decode_exact(bytes)?;
        let frame = Frame { signed: wire.signed.to_vec(), signature: wire.signature };
        if frame.encode() != bytes {
            return Err(DecodeError::NonCanonical);
        }
        Ok(frame)
    }

    /// Returns the event hash: SHA-256 of the signed bytes.
    pub fn hash(&self) -> EventHash {
        Sha256::digest(&self.signed).into()
    }
}

/// Returns [`DecodeError::UnsupportedFormat`] if `bytes` are an array whose first
/// element is a format version other than this one.
///
/// A later format version may change the envelope's length or element types, so an
/// envelope that fails to decode as version 1 is probed for its version alone: the
/// reader then reports "upgrade" rather than "malformed". Skipping the other
/// elements recurses once per nesting level, so the depth is capped: rmp-serde's
/// default of 1024 levels overflowed a 2 MiB test thread's stack in a debug build.
fn unsupported_format(bytes: &[u8]) -> Option<DecodeError> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    deserializer.set_max_depth(32);
    let FormatVersionProbe(version) = FormatVersionProbe::deserialize(&mut deserializer).ok()?;
    (version != FORMAT_VERSION).then_some(DecodeError::UnsupportedFormat(version))
}

/// The first element of an envelope array of any format version, with the rest skipped.
struct FormatVersionProbe(u8);

impl<'de> Deserialize<'de> for FormatVersionProbe {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(FormatVersionVisitor)
    }
}

struct FormatVersionVisitor;

impl<'de> serde::de::Visitor<'de> for FormatVersionVisitor {
    type Value = FormatVersionProbe;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("an envelope array that starts with its format version")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let version = seq.next_element::<u8>()?.ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(FormatVersionProbe(version))
    }
}

/// Decodes one MessagePack value. Callers re-encode the value and compare, which
/// also rejects trailing bytes.
pub(crate) fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// Encodes a body or record as a MessagePack array.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("value encodes")
}
