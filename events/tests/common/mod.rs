//! Helpers shared by the integration tests: fixed keys, a writer that chains and
//! signs events the way the server does, and an independent MessagePack encoder
//! written from `FORMAT.md`.
//!
//! Everything here is deterministic: keys come from fixed seeds, event ids and
//! times from the stream sequence, so a failing test reproduces exactly.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use watchword_events::body::{
    CertificateIssued, Created, DataKeyRef, Empty, EnrolmentTokenIssued, Grant, KIND_CLIENT_CERTIFICATE_ISSUED,
    KIND_CLIENT_CREATED, KIND_CLIENT_ENROLMENT_TOKEN_ISSUED, KIND_GROUP_CREATED, KIND_GROUP_DELETED,
    KIND_GROUP_GRANT_ADDED, KIND_GROUP_GRANT_REMOVED, KIND_GROUP_MEMBER_ADDED, KIND_GROUP_MEMBER_REMOVED,
    KIND_SECRET_VERSION_ADDED, KIND_SIGNING_KEY_CERTIFIED, Membership, SealedContent, SecretVersionAdded,
    SecretVersionAddedV2, SigningKeyCertified, encode_body,
};
use watchword_events::checkpoint::{Checkpoint, KIND_CHECKPOINT, leaf_input, merkle_root};
use watchword_events::error::ApplyError;
use watchword_events::event::Event;
use watchword_events::fold::{MemoryState, apply_message};
use watchword_events::readmodel::StoredMessage;
use watchword_events::verify::{RecordedEvent, RootKeys, key_id, sign};
use watchword_events::{Actor, Aggregate, EventHash, ZERO_HASH};

/// Seed of the trusted root key (the HSM root key in production).
pub const ROOT_SEED: [u8; 32] = [0x11; 32];

/// Seed of the in-process signing key that the root key certifies.
pub const SIGNER_SEED: [u8; 32] = [0x22; 32];

/// Seed of a third key, uncertified unless a test certifies it.
pub const STRANGER_SEED: [u8; 32] = [0x33; 32];

/// Recorded time of sequence 0: 2026-01-01T00:00:00Z in microseconds.
pub const BASE_MICROS: i64 = 1_767_225_600_000_000;

pub fn root_key() -> SigningKey {
    SigningKey::from_bytes(&ROOT_SEED)
}

pub fn signer_key() -> SigningKey {
    SigningKey::from_bytes(&SIGNER_SEED)
}

pub fn stranger_key() -> SigningKey {
    SigningKey::from_bytes(&STRANGER_SEED)
}

/// Returns the key id of a key pair, as it appears in envelopes.
pub fn id_of(key: &SigningKey) -> String {
    key_id(&key.verifying_key().to_bytes())
}

/// Returns the verifier's trust anchor: the root key alone.
pub fn roots() -> RootKeys {
    RootKeys::new(&[root_key().verifying_key().to_bytes()]).expect("the root key is a valid point")
}

/// Returns a version 7 UUID whose timestamp and counter derive from `sequence`.
pub fn event_id(sequence: u64) -> uuid::Uuid {
    let millis = (BASE_MICROS / 1000) as u64 + sequence * 1000;
    let mut counter = [0u8; 10];
    counter[2..].copy_from_slice(&sequence.to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(millis, &counter).into_uuid()
}

pub fn certified_body(key: &SigningKey) -> Vec<u8> {
    encode_body(&SigningKeyCertified { algorithm: "ed25519".to_owned(), public_key: key.verifying_key().to_bytes() })
}

/// Returns a body whose bytes derive from `content_version`. The ciphertext is
/// filler, not a real AES-GCM encryption.
pub fn version_added(content_version: u64) -> SecretVersionAdded {
    let fill = content_version as u8;
    SecretVersionAdded {
        version: content_version,
        content: SealedContent { nonce: [fill; 12], ciphertext: vec![fill ^ 0xa5; 21] },
        data_key: DataKeyRef {
            kek_id: "test-kek".to_owned(),
            store_key: format!("dk/{content_version}"),
            wrapped_sha256: [fill; 32],
        },
        size: 5,
        mode: Some(0o440),
    }
}

/// Returns a version-2 body without expiry, rollback or metadata, whose bytes
/// derive from `content_version` as those of [`version_added`] do.
pub fn version_added_v2(content_version: u64) -> SecretVersionAddedV2 {
    let body = version_added(content_version);
    SecretVersionAddedV2 {
        version: body.version,
        content: body.content,
        data_key: body.data_key,
        size: body.size,
        digest: [content_version as u8 ^ 0x3c; 32],
        expires_at_micros: None,
        rolled_back_from: None,
        metadata: None,
    }
}

pub fn version_added_body(content_version: u64) -> Vec<u8> {
    encode_body(&version_added(content_version))
}

/// Returns the body of `client.created` and `group.created`.
pub fn created_body(owner_group: Option<&str>, description: &str) -> Vec<u8> {
    encode_body(&Created { owner_group: owner_group.map(str::to_owned), description: description.to_owned() })
}

/// Returns the body of `client.disabled`, `client.enabled`, `client.deleted` and `group.deleted`.
pub fn empty_body() -> Vec<u8> {
    encode_body(&Empty {})
}

pub fn membership_body(client: &str) -> Vec<u8> {
    encode_body(&Membership { client: client.to_owned() })
}

pub fn grant_body(secret: &str) -> Vec<u8> {
    encode_body(&Grant { secret: secret.to_owned() })
}

/// Returns the body of `client.enrolment_token_issued`.
pub fn token_issued_body(token_sha256: [u8; 32], expires_at_micros: i64) -> Vec<u8> {
    encode_body(&EnrolmentTokenIssued { token_sha256, expires_at_micros })
}

/// Returns the body of `client.certificate_issued`; `token_sha256` is `None` for a renewal.
pub fn certificate_issued_body(serial: &str, not_after_micros: i64, token_sha256: Option<[u8; 32]>) -> Vec<u8> {
    encode_body(&CertificateIssued { serial: serial.to_owned(), not_after_micros, token_sha256 })
}

/// One stored stream message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub payload: Vec<u8>,
    pub sequence: u64,
    pub hash: EventHash,
}

impl Message {
    pub fn stored(&self) -> StoredMessage<'_> {
        StoredMessage { subject: &self.subject, payload: &self.payload, sequence: self.sequence }
    }
}

/// Signs `event` with `key` and frames it as the message at `sequence`.
pub fn seal(event: &Event, key: &SigningKey, sequence: u64) -> Message {
    let frame = sign(event, key);
    Message { subject: event.aggregate.subject(), payload: frame.encode(), sequence, hash: frame.hash() }
}

/// A stream writer: numbers sequences from 1, and gives each event of an
/// aggregate the next version and the hash of the aggregate's previous event.
#[derive(Debug, Default)]
pub struct Stream {
    pub messages: Vec<Message>,
    heads: BTreeMap<Aggregate, (u64, EventHash)>,
    content_versions: BTreeMap<String, u64>,
    /// Last sequence that a checkpoint covers, 0 before the first checkpoint.
    checkpoint_end: u64,
}

impl Stream {
    /// Returns a stream whose first message certifies the signer key.
    pub fn bootstrapped() -> Stream {
        let mut stream = Stream::default();
        stream.certify(&signer_key());
        stream
    }

    pub fn next_sequence(&self) -> u64 {
        self.messages.len() as u64 + 1
    }

    /// Builds the next event of `aggregate`, correctly chained, without recording it.
    pub fn next_event(&self, aggregate: Aggregate, kind: &str, key: &SigningKey, body: Vec<u8>) -> Event {
        let (version, previous_hash) = self.heads.get(&aggregate).copied().unwrap_or((0, ZERO_HASH));
        let sequence = self.next_sequence();
        Event {
            id: event_id(sequence),
            kind: kind.to_owned(),
            aggregate,
            aggregate_version: version + 1,
            previous_hash,
            recorded_at_micros: BASE_MICROS + sequence as i64 * 1_000_000,
            actor: Actor { principal: "operator:alice".to_owned(), authentication: "mtls".to_owned() },
            correlation_id: format!("req-{sequence}"),
            key_id: id_of(key),
            body,
        }
    }

    /// Signs `event` as the next message without recording it.
    pub fn seal_next(&self, event: &Event, key: &SigningKey) -> Message {
        seal(event, key, self.next_sequence())
    }

    /// Signs `event`, appends it and advances its aggregate's head.
    pub fn push(&mut self, event: &Event, key: &SigningKey) -> Message {
        let message = self.seal_next(event, key);
        self.heads.insert(event.aggregate.clone(), (event.aggregate_version, message.hash));
        self.messages.push(message.clone());
        message
    }

    /// Appends a certification of `key`, signed by the root key.
    pub fn certify(&mut self, key: &SigningKey) -> Message {
        let root = root_key();
        let event = self.next_event(
            Aggregate::signing_key(&id_of(key)),
            KIND_SIGNING_KEY_CERTIFIED,
            &root,
            certified_body(key),
        );
        self.push(&event, &root)
    }

    /// Builds the next content version of secret `name`, signed by `key`, without recording it.
    pub fn next_version_event(&self, name: &str, key: &SigningKey) -> Event {
        let content_version = self.content_versions.get(name).copied().unwrap_or(0) + 1;
        self.next_event(Aggregate::secret(name), KIND_SECRET_VERSION_ADDED, key, version_added_body(content_version))
    }

    /// Appends the next content version of secret `name`, signed by `key`.
    pub fn add_version_signed(&mut self, name: &str, key: &SigningKey) -> Message {
        let event = self.next_version_event(name, key);
        *self.content_versions.entry(name.to_owned()).or_insert(0) += 1;
        self.push(&event, key)
    }

    /// Appends the next content version of secret `name`, signed by the signer key.
    pub fn add_version(&mut self, name: &str) -> Message {
        self.add_version_signed(name, &signer_key())
    }

    /// Builds the next event of `kind` on `aggregate`, signed by the signer key,
    /// without recording it, so that a test can apply it and expect a rejection.
    pub fn next_message(&self, aggregate: Aggregate, kind: &str, body: Vec<u8>) -> Message {
        let event = self.next_event(aggregate, kind, &signer_key(), body);
        self.seal_next(&event, &signer_key())
    }

    /// Appends an event of `kind` on `aggregate`, signed by the signer key.
    pub fn append(&mut self, aggregate: Aggregate, kind: &str, body: Vec<u8>) -> Message {
        let event = self.next_event(aggregate, kind, &signer_key(), body);
        self.push(&event, &signer_key())
    }

    /// Appends a `client.created` with no owner group.
    pub fn create_client(&mut self, name: &str) -> Message {
        self.append(Aggregate::client(name), KIND_CLIENT_CREATED, created_body(None, "test client"))
    }

    /// Appends a client event whose body is empty: `client.disabled`, `client.enabled` or `client.deleted`.
    pub fn client_event(&mut self, name: &str, kind: &str) -> Message {
        self.append(Aggregate::client(name), kind, empty_body())
    }

    /// Appends a `group.created` with no owner group.
    pub fn create_group(&mut self, name: &str) -> Message {
        self.append(Aggregate::group(name), KIND_GROUP_CREATED, created_body(None, "test group"))
    }

    pub fn delete_group(&mut self, name: &str) -> Message {
        self.append(Aggregate::group(name), KIND_GROUP_DELETED, empty_body())
    }

    pub fn add_member(&mut self, group: &str, client: &str) -> Message {
        self.append(Aggregate::group(group), KIND_GROUP_MEMBER_ADDED, membership_body(client))
    }

    pub fn remove_member(&mut self, group: &str, client: &str) -> Message {
        self.append(Aggregate::group(group), KIND_GROUP_MEMBER_REMOVED, membership_body(client))
    }

    pub fn add_grant(&mut self, group: &str, secret: &str) -> Message {
        self.append(Aggregate::group(group), KIND_GROUP_GRANT_ADDED, grant_body(secret))
    }

    pub fn remove_grant(&mut self, group: &str, secret: &str) -> Message {
        self.append(Aggregate::group(group), KIND_GROUP_GRANT_REMOVED, grant_body(secret))
    }

    /// Appends a `client.enrolment_token_issued` for a token whose SHA-256 is
    /// `token_sha256`, expiring an hour after the event's recorded time.
    pub fn issue_token(&mut self, client: &str, token_sha256: [u8; 32]) -> Message {
        let expires_at_micros = BASE_MICROS + self.next_sequence() as i64 * 1_000_000 + 3_600_000_000;
        self.append(
            Aggregate::client(client),
            KIND_CLIENT_ENROLMENT_TOKEN_ISSUED,
            token_issued_body(token_sha256, expires_at_micros),
        )
    }

    /// Appends a `client.certificate_issued` whose serial derives from the stream
    /// sequence: an enrolment if `token_sha256` is set, else a renewal.
    pub fn issue_certificate(&mut self, client: &str, token_sha256: Option<[u8; 32]>) -> Message {
        let sequence = self.next_sequence();
        let serial = format!("{sequence:032x}");
        let not_after_micros = BASE_MICROS + sequence as i64 * 1_000_000 + 86_400_000_000;
        let body = certificate_issued_body(&serial, not_after_micros, token_sha256);
        self.append(Aggregate::client(client), KIND_CLIENT_CERTIFICATE_ISSUED, body)
    }

    /// Appends a message that is not a valid frame, such as anyone allowed to
    /// publish on the event subjects can store; its hash is its leaf input.
    pub fn non_event(&mut self, subject: &str, payload: &[u8]) -> Message {
        let message = Message {
            subject: subject.to_owned(),
            payload: payload.to_vec(),
            sequence: self.next_sequence(),
            hash: leaf_input(payload),
        };
        self.messages.push(message.clone());
        message
    }

    /// Appends a checkpoint, signed by the root key, that covers every message
    /// after the previous checkpoint's range.
    pub fn checkpoint(&mut self) -> Message {
        let first = self.checkpoint_end + 1;
        let last = self.messages.len() as u64;
        let hashes: Vec<EventHash> = self.messages[first as usize - 1..].iter().map(|m| m.hash).collect();
        let previous_checkpoint = self.heads.get(&Aggregate::checkpoint()).map_or(ZERO_HASH, |head| head.1);
        let body = Checkpoint {
            first_sequence: first,
            last_sequence: last,
            merkle_root: merkle_root(&hashes),
            previous_checkpoint,
        };
        let root = root_key();
        let event = self.next_event(Aggregate::checkpoint(), KIND_CHECKPOINT, &root, encode_body(&body));
        self.checkpoint_end = last;
        self.push(&event, &root)
    }

    pub fn stored(&self) -> Vec<StoredMessage<'_>> {
        self.messages.iter().map(Message::stored).collect()
    }

    /// Applies every message to a fresh in-memory state, panicking on the first error.
    pub fn memory_state(&self) -> MemoryState {
        let mut state = MemoryState::default();
        for message in &self.messages {
            apply_message(&mut state, &roots(), &message.subject, &message.payload, message.sequence)
                .unwrap_or_else(|error| panic!("sequence {} does not apply: {error}", message.sequence));
        }
        state
    }
}

/// Verifies `message` against `state` and applies it there.
pub fn apply_to(state: &mut MemoryState, message: &Message) -> Result<RecordedEvent, ApplyError> {
    apply_message(state, &roots(), &message.subject, &message.payload, message.sequence)
}

/// Applies `message`, expects an error and checks that the state did not change.
pub fn rejection(state: &mut MemoryState, message: &Message) -> ApplyError {
    let before = state.clone();
    let error = match apply_to(state, message) {
        Ok(recorded) => panic!("sequence {} applied, expected an error: {recorded:?}", message.sequence),
        Err(error) => error,
    };
    assert_eq!(*state, before, "a rejected message changed the state: {error}");
    error
}

/// An encoder written from `FORMAT.md` alone, without serde, so that a test can
/// check the specification against `rmp-serde` and build non-canonical variants.
pub mod msgpack {
    use watchword_events::body::{
        CertificateIssued, Created, Delivery, EnrolmentTokenIssued, Grant, Membership, MetadataSet, SecretMetadata,
        SecretVersionAdded, SecretVersionAddedV2, SigningKeyCertified, VersionRef,
    };
    use watchword_events::event::Event;

    pub fn array_header(len: usize) -> Vec<u8> {
        match len {
            0..=15 => vec![0x90 | len as u8],
            16..=0xffff => [&[0xdc][..], &(len as u16).to_be_bytes()].concat(),
            _ => [&[0xdd][..], &(len as u32).to_be_bytes()].concat(),
        }
    }

    pub fn array(elements: &[Vec<u8>]) -> Vec<u8> {
        [array_header(elements.len()), elements.concat()].concat()
    }

    pub fn uint(value: u64) -> Vec<u8> {
        match value {
            0..=0x7f => vec![value as u8],
            0x80..=0xff => vec![0xcc, value as u8],
            0x100..=0xffff => [&[0xcd][..], &(value as u16).to_be_bytes()].concat(),
            0x1_0000..=0xffff_ffff => [&[0xce][..], &(value as u32).to_be_bytes()].concat(),
            _ => [&[0xcf][..], &value.to_be_bytes()].concat(),
        }
    }

    /// Encodes a signed integer: a non-negative value exactly as [`uint`].
    pub fn int(value: i64) -> Vec<u8> {
        match value {
            0.. => uint(value as u64),
            -32..=-1 => vec![value as u8],
            -128..=-33 => vec![0xd0, value as u8],
            -32768..=-129 => [&[0xd1][..], &(value as i16).to_be_bytes()].concat(),
            -2_147_483_648..=-32769 => [&[0xd2][..], &(value as i32).to_be_bytes()].concat(),
            _ => [&[0xd3][..], &value.to_be_bytes()].concat(),
        }
    }

    pub fn str(value: &str) -> Vec<u8> {
        let len = value.len();
        let header = match len {
            0..=31 => vec![0xa0 | len as u8],
            32..=0xff => vec![0xd9, len as u8],
            0x100..=0xffff => [&[0xda][..], &(len as u16).to_be_bytes()].concat(),
            _ => [&[0xdb][..], &(len as u32).to_be_bytes()].concat(),
        };
        [header, value.as_bytes().to_vec()].concat()
    }

    pub fn bin(value: &[u8]) -> Vec<u8> {
        let len = value.len();
        let header = match len {
            0..=0xff => vec![0xc4, len as u8],
            0x100..=0xffff => [&[0xc5][..], &(len as u16).to_be_bytes()].concat(),
            _ => [&[0xc6][..], &(len as u32).to_be_bytes()].concat(),
        };
        [header, value.to_vec()].concat()
    }

    pub fn nil() -> Vec<u8> {
        vec![0xc0]
    }

    pub fn map_header(len: usize) -> Vec<u8> {
        match len {
            0..=15 => vec![0x80 | len as u8],
            16..=0xffff => [&[0xde][..], &(len as u16).to_be_bytes()].concat(),
            _ => [&[0xdf][..], &(len as u32).to_be_bytes()].concat(),
        }
    }

    /// Encodes a map of str to str with its entries in the order given, so that a
    /// test can also build unsorted maps and maps with duplicate keys.
    pub fn str_map(entries: &[(&str, &str)]) -> Vec<u8> {
        let encoded = entries.iter().map(|(key, value)| [str(key), str(value)].concat());
        [map_header(entries.len()), encoded.collect::<Vec<_>>().concat()].concat()
    }

    fn optional_str(value: Option<&str>) -> Vec<u8> {
        value.map_or_else(nil, str)
    }

    /// Returns the twelve encoded elements of an envelope, in order.
    pub fn envelope_elements(event: &Event) -> Vec<Vec<u8>> {
        vec![
            uint(1),
            bin(event.id.as_bytes()),
            str(&event.kind),
            str(event.aggregate.kind.as_str()),
            str(&event.aggregate.id),
            uint(event.aggregate_version),
            bin(&event.previous_hash),
            int(event.recorded_at_micros),
            array(&[str(&event.actor.principal), str(&event.actor.authentication)]),
            str(&event.correlation_id),
            str(&event.key_id),
            bin(&event.body),
        ]
    }

    pub fn envelope(event: &Event) -> Vec<u8> {
        array(&envelope_elements(event))
    }

    pub fn frame(signed: &[u8], signature: &[u8; 64]) -> Vec<u8> {
        array(&[bin(signed), bin(signature)])
    }

    pub fn version_added_body(body: &SecretVersionAdded) -> Vec<u8> {
        let mode = body.mode.map_or_else(nil, |mode| uint(mode.into()));
        array(&[
            uint(body.version),
            array(&[bin(&body.content.nonce), bin(&body.content.ciphertext)]),
            array(&[str(&body.data_key.kek_id), str(&body.data_key.store_key), bin(&body.data_key.wrapped_sha256)]),
            uint(body.size),
            mode,
        ])
    }

    pub fn version_added_v2_body(body: &SecretVersionAddedV2) -> Vec<u8> {
        array(&[
            uint(body.version),
            array(&[bin(&body.content.nonce), bin(&body.content.ciphertext)]),
            array(&[str(&body.data_key.kek_id), str(&body.data_key.store_key), bin(&body.data_key.wrapped_sha256)]),
            uint(body.size),
            bin(&body.digest),
            body.expires_at_micros.map_or_else(nil, int),
            body.rolled_back_from.map_or_else(nil, uint),
            body.metadata.as_ref().map_or_else(nil, metadata),
        ])
    }

    /// Encodes the metadata array; `labels` iterates in key order, as the spec requires.
    pub fn metadata(metadata: &SecretMetadata) -> Vec<u8> {
        let labels: Vec<(&str, &str)> = metadata.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        metadata_with_labels(metadata, &str_map(&labels))
    }

    /// Encodes the metadata array with `labels` as its already encoded element 2.
    pub fn metadata_with_labels(metadata: &SecretMetadata, labels: &[u8]) -> Vec<u8> {
        array(&[
            optional_str(metadata.owner_group.as_deref()),
            str(&metadata.description),
            labels.to_vec(),
            delivery(&metadata.delivery),
        ])
    }

    pub fn delivery(delivery: &Delivery) -> Vec<u8> {
        array(&[
            optional_str(delivery.file_name.as_deref()),
            optional_str(delivery.owner.as_deref()),
            optional_str(delivery.group.as_deref()),
            delivery.mode.map_or_else(nil, |mode| uint(mode.into())),
        ])
    }

    pub fn metadata_set_body(body: &MetadataSet) -> Vec<u8> {
        array(&[metadata(&body.metadata)])
    }

    pub fn version_ref_body(body: &VersionRef) -> Vec<u8> {
        array(&[uint(body.version)])
    }

    pub fn certified_body(body: &SigningKeyCertified) -> Vec<u8> {
        array(&[str(&body.algorithm), bin(&body.public_key)])
    }

    pub fn created_body(body: &Created) -> Vec<u8> {
        array(&[optional_str(body.owner_group.as_deref()), str(&body.description)])
    }

    pub fn empty_body() -> Vec<u8> {
        array(&[])
    }

    pub fn membership_body(body: &Membership) -> Vec<u8> {
        array(&[str(&body.client)])
    }

    pub fn grant_body(body: &Grant) -> Vec<u8> {
        array(&[str(&body.secret)])
    }

    pub fn token_issued_body(body: &EnrolmentTokenIssued) -> Vec<u8> {
        array(&[bin(&body.token_sha256), int(body.expires_at_micros)])
    }

    pub fn certificate_issued_body(body: &CertificateIssued) -> Vec<u8> {
        let token_sha256 = body.token_sha256.map_or_else(nil, |hash| bin(&hash));
        array(&[str(&body.serial), int(body.not_after_micros), token_sha256])
    }
}
