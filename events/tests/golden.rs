//! Golden event files: proof that this build writes the bytes the format specifies
//! and still reads every stream an earlier release wrote.
//!
//! The files under `tests/vectors/` are generated from the fixed inputs below. A
//! default run only compares, so any change to the encoding fails here. To write
//! the files after adding a vector, run
//! `WATCHWORD_BLESS=1 cargo test -p watchword-events --test golden`. Never bless a
//! change to a file that a release has already shipped.

mod common;
#[path = "golden/lifecycle.rs"]
mod lifecycle;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use watchword_events::body::{
    CertificateIssued, Created, DataKeyRef, Empty, EnrolmentTokenIssued, Grant, KIND_CLIENT_CERTIFICATE_ISSUED,
    KIND_CLIENT_CREATED, KIND_CLIENT_DELETED, KIND_CLIENT_DISABLED, KIND_CLIENT_ENABLED,
    KIND_CLIENT_ENROLMENT_TOKEN_ISSUED, KIND_GROUP_CREATED, KIND_GROUP_DELETED, KIND_GROUP_GRANT_ADDED,
    KIND_GROUP_GRANT_REMOVED, KIND_GROUP_MEMBER_ADDED, KIND_GROUP_MEMBER_REMOVED, KIND_SECRET_DELETED,
    KIND_SECRET_DESTROYED, KIND_SECRET_METADATA_SET, KIND_SECRET_RESTORED, KIND_SECRET_VERSION_ADDED,
    KIND_SECRET_VERSION_ADDED_V2, KIND_SECRET_VERSION_DESTROYED, KIND_SECRET_VERSION_EXPIRED,
    KIND_SIGNING_KEY_CERTIFIED, Membership, MetadataSet, SealedContent, SecretMetadata, SecretVersionAdded,
    SecretVersionAddedV2, SigningKeyCertified, VersionRef, content_aad, data_key_aad, decode_body, encode_body,
};
use watchword_events::event::Event;
use watchword_events::fold::{MemoryState, apply_message, may_read};
use watchword_events::readmodel::{ReadModel, StoredMessage};
use watchword_events::verify::{RootKeys, key_id, sign, verify_message};
use watchword_events::{Actor, Aggregate, AggregateType, EventHash, Frame, ZERO_HASH};

use common::msgpack;

/// Seed of the golden root key. Never change it: the stored signatures depend on it.
const ROOT_SEED: [u8; 32] = [0x11; 32];

/// Seed of the golden signing key.
const SIGNER_SEED: [u8; 32] = [0x22; 32];

/// A secret name with a slash, spaces and characters outside ASCII.
const SECRET_NAME: &str = "ops team/db password/clé 🔑";

/// A client id as a certificate carries it. The subject hashes the id, so its dots
/// do not split the NATS token.
const CLIENT_NAME: &str = "web-1.payments.example.net";

/// A group name with a space.
const GROUP_NAME: &str = "payments web";

/// Recorded time of golden stream sequence 1: 2026-01-01T00:00:00Z in microseconds.
const FIRST_MICROS: i64 = 1_767_225_600_000_000;

/// Wrapped data keys of the two versions as the data-key store would hold them: filler
/// bytes of the server's wrapped-key length (12-byte IV, 32-byte key, 16-byte tag).
const WRAPPED_KEY_1: [u8; 60] = [0x5a; 60];
const WRAPPED_KEY_2: [u8; 60] = [0x5b; 60];

/// The enrolment token of vectors 15 and 16 as the operator receives it: the
/// base64url encoding, without padding, of the 32 bytes 0x40 to 0x5f. The body
/// records the SHA-256 of these 43 ASCII characters.
const ENROLMENT_TOKEN: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8";

/// Certificate serials as the server's CA writes them: 16 bytes with the top bit
/// clear, in lowercase hex.
const ENROLMENT_SERIAL: &str = "1f2e3d4c5b6a79880123456789abcdef";
const RENEWAL_SERIAL: &str = "2a3b4c5d6e7f8091a2b3c4d5e6f70819";

/// One hour and one day in microseconds: the token lifetime and the certificate
/// lifetime of the golden enrolment.
const HOUR_MICROS: i64 = 3_600_000_000;
const DAY_MICROS: i64 = 24 * HOUR_MICROS;

/// One golden event and the inputs it is built from.
struct Vector {
    file: &'static str,
    description: &'static str,
    sequence: u64,
    event: Event,
    key: SigningKey,
    /// The wrapped data key that a version body commits to.
    wrapped_data_key: Option<&'static [u8]>,
    /// The enrolment token whose SHA-256 the body records.
    enrolment_token: Option<&'static str>,
}

fn root() -> SigningKey {
    SigningKey::from_bytes(&ROOT_SEED)
}

fn signer() -> SigningKey {
    SigningKey::from_bytes(&SIGNER_SEED)
}

fn id_of(key: &SigningKey) -> String {
    key_id(&key.verifying_key().to_bytes())
}

fn uuid(text: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(text).expect("a literal UUID")
}

fn hash_of(event: &Event) -> EventHash {
    Sha256::digest(event.to_signed_bytes()).into()
}

/// Builds the golden events from fixed inputs, chaining each secret event to the one before.
fn vectors() -> Vec<Vector> {
    let certification = Event {
        id: uuid("019b76da-a800-7000-8000-000000000001"),
        kind: KIND_SIGNING_KEY_CERTIFIED.to_owned(),
        aggregate: Aggregate::signing_key(&id_of(&signer())),
        aggregate_version: 1,
        previous_hash: ZERO_HASH,
        recorded_at_micros: 1_767_225_600_000_000,
        actor: Actor { principal: "server:wwd-1".to_owned(), authentication: "hsm".to_owned() },
        correlation_id: "bootstrap".to_owned(),
        key_id: id_of(&root()),
        body: encode_body(&SigningKeyCertified {
            algorithm: "ed25519".to_owned(),
            public_key: signer().verifying_key().to_bytes(),
        }),
    };

    let first_body = SecretVersionAdded {
        version: 1,
        content: SealedContent { nonce: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], ciphertext: (0xa0..0xb5).collect() },
        data_key: DataKeyRef {
            kek_id: "kek-2026".to_owned(),
            store_key: "dk/019b76da-abe8-7000-8000-000000000002".to_owned(),
            wrapped_sha256: Sha256::digest(WRAPPED_KEY_1).into(),
        },
        size: 5,
        mode: Some(0o440),
    };
    let first = Event {
        id: uuid("019b76da-abe8-7000-8000-000000000002"),
        kind: KIND_SECRET_VERSION_ADDED.to_owned(),
        aggregate: Aggregate::secret(SECRET_NAME),
        aggregate_version: 1,
        previous_hash: ZERO_HASH,
        recorded_at_micros: 1_767_225_601_000_000,
        actor: Actor { principal: "operator:alice".to_owned(), authentication: "mtls".to_owned() },
        correlation_id: "req-0001".to_owned(),
        key_id: id_of(&signer()),
        body: encode_body(&first_body),
    };

    let second_body = SecretVersionAdded {
        version: 2,
        content: SealedContent {
            nonce: [0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb],
            ciphertext: (0xc0..0xd7).collect(),
        },
        data_key: DataKeyRef {
            kek_id: "kek-2026".to_owned(),
            store_key: "dk/019b76da-afd0-7000-8000-000000000003".to_owned(),
            wrapped_sha256: Sha256::digest(WRAPPED_KEY_2).into(),
        },
        size: 7,
        mode: None,
    };
    let second = Event {
        id: uuid("019b76da-afd0-7000-8000-000000000003"),
        aggregate_version: 2,
        previous_hash: hash_of(&first),
        recorded_at_micros: 1_767_225_602_000_000,
        actor: Actor { principal: "deploy:oneops".to_owned(), authentication: "mtls".to_owned() },
        correlation_id: "deployment-7".to_owned(),
        body: encode_body(&second_body),
        ..first.clone()
    };

    let mut vectors = vec![
        Vector {
            file: "01-signing-key-certified.json",
            description: "The root key certifies the signing key; first event of the signing key's aggregate.",
            sequence: 1,
            event: certification,
            key: root(),
            wrapped_data_key: None,
            enrolment_token: None,
        },
        Vector {
            file: "02-secret-version-added-first.json",
            description: "First content version of a secret whose name has a slash, spaces and non-ASCII \
                          characters; signed by the certified signing key.",
            sequence: 2,
            event: first,
            key: signer(),
            wrapped_data_key: Some(&WRAPPED_KEY_1),
            enrolment_token: None,
        },
        Vector {
            file: "03-secret-version-added-second.json",
            description: "Second content version of the same secret, chained to the first; no file mode.",
            sequence: 3,
            event: second,
            key: signer(),
            wrapped_data_key: Some(&WRAPPED_KEY_2),
            enrolment_token: None,
        },
    ];
    vectors.extend(access_vectors());
    let client_deleted = event_of(&vectors, "13-client-deleted.json").clone();
    vectors.extend(enrolment_vectors(&client_deleted));
    let golden_last = event_of(&vectors, "03-secret-version-added-second.json").clone();
    vectors.extend(lifecycle::lifecycle_vectors(&golden_last));
    vectors
}

fn event_of<'a>(vectors: &'a [Vector], file: &str) -> &'a Event {
    &vectors.iter().find(|vector| vector.file == file).unwrap_or_else(|| panic!("no vector {file}")).event
}

/// Builds the golden event at stream `sequence`, signed by the signing key. It is
/// the first event of `aggregate` if `previous` is `None`, else the one after `previous`.
fn access_event(
    sequence: u64,
    id: &str,
    aggregate: Aggregate,
    previous: Option<&Event>,
    kind: &str,
    body: Vec<u8>,
) -> Event {
    Event {
        id: uuid(id),
        kind: kind.to_owned(),
        aggregate,
        aggregate_version: previous.map_or(1, |event| event.aggregate_version + 1),
        previous_hash: previous.map_or(ZERO_HASH, hash_of),
        recorded_at_micros: recorded_at(sequence),
        actor: Actor { principal: "operator:alice".to_owned(), authentication: "mtls".to_owned() },
        correlation_id: format!("req-{sequence:04}"),
        key_id: id_of(&signer()),
        body,
    }
}

/// Returns the recorded time of the access, enrolment and lifecycle vector at stream `sequence`:
/// one second per sequence after [`FIRST_MICROS`].
fn recorded_at(sequence: u64) -> i64 {
    FIRST_MICROS + (sequence as i64 - 1) * 1_000_000
}

/// Builds one golden event of each client and group kind, in stream order after
/// the secret events. The golden client may read the golden secret after
/// vectors 07 and 09 only (see [`READ_AFTER`]).
fn access_vectors() -> Vec<Vector> {
    let client = || Aggregate::client(CLIENT_NAME);
    let group = || Aggregate::group(GROUP_NAME);
    let membership = encode_body(&Membership { client: CLIENT_NAME.to_owned() });
    let grant = encode_body(&Grant { secret: SECRET_NAME.to_owned() });
    let empty = encode_body(&Empty {});

    let client_created = access_event(
        4,
        "019b76da-b3b8-7000-8000-000000000004",
        client(),
        None,
        KIND_CLIENT_CREATED,
        encode_body(&Created {
            owner_group: Some("payments admins".to_owned()),
            description: "web node 1, eu-west".to_owned(),
        }),
    );
    let group_created = access_event(
        5,
        "019b76da-b7a0-7000-8000-000000000005",
        group(),
        None,
        KIND_GROUP_CREATED,
        encode_body(&Created { owner_group: None, description: "Web tier of payments".to_owned() }),
    );
    let member_added = access_event(
        6,
        "019b76da-bb88-7000-8000-000000000006",
        group(),
        Some(&group_created),
        KIND_GROUP_MEMBER_ADDED,
        membership.clone(),
    );
    let grant_added = access_event(
        7,
        "019b76da-bf70-7000-8000-000000000007",
        group(),
        Some(&member_added),
        KIND_GROUP_GRANT_ADDED,
        grant.clone(),
    );
    let client_disabled = access_event(
        8,
        "019b76da-c358-7000-8000-000000000008",
        client(),
        Some(&client_created),
        KIND_CLIENT_DISABLED,
        empty.clone(),
    );
    let client_enabled = access_event(
        9,
        "019b76da-c740-7000-8000-000000000009",
        client(),
        Some(&client_disabled),
        KIND_CLIENT_ENABLED,
        empty.clone(),
    );
    let member_removed = access_event(
        10,
        "019b76da-cb28-7000-8000-00000000000a",
        group(),
        Some(&grant_added),
        KIND_GROUP_MEMBER_REMOVED,
        membership,
    );
    let grant_removed = access_event(
        11,
        "019b76da-cf10-7000-8000-00000000000b",
        group(),
        Some(&member_removed),
        KIND_GROUP_GRANT_REMOVED,
        grant,
    );
    let group_deleted = access_event(
        12,
        "019b76da-d2f8-7000-8000-00000000000c",
        group(),
        Some(&grant_removed),
        KIND_GROUP_DELETED,
        empty.clone(),
    );
    let client_deleted = access_event(
        13,
        "019b76da-d6e0-7000-8000-00000000000d",
        client(),
        Some(&client_enabled),
        KIND_CLIENT_DELETED,
        empty,
    );

    let vector = |file, description, sequence, event| Vector {
        file,
        description,
        sequence,
        event,
        key: signer(),
        wrapped_data_key: None,
        enrolment_token: None,
    };
    vec![
        vector(
            "04-client-created.json",
            "A client whose id has dots is created, managed by an owner group; first event of the client.",
            4,
            client_created,
        ),
        vector(
            "05-group-created.json",
            "A group whose name has a space is created, with no owner group.",
            5,
            group_created,
        ),
        vector("06-group-member-added.json", "The client joins the group.", 6, member_added),
        vector(
            "07-group-grant-added.json",
            "The group may read the golden secret, so the client may read it now.",
            7,
            grant_added,
        ),
        vector("08-client-disabled.json", "The client is disabled and may read nothing.", 8, client_disabled),
        vector("09-client-enabled.json", "The client is enabled and may read the secret again.", 9, client_enabled),
        vector("10-group-member-removed.json", "The client leaves the group.", 10, member_removed),
        vector("11-group-grant-removed.json", "The group may no longer read the secret.", 11, grant_removed),
        vector("12-group-deleted.json", "The group, now without members or grants, is deleted.", 12, group_deleted),
        vector("13-client-deleted.json", "The client is deleted; its chain is at version 4.", 13, client_deleted),
    ]
}

/// Builds the enrolment events after `client_deleted` (vector 13): the client is
/// created again, gets a token, enrols with it and renews its certificate. The
/// client has no memberships, so it may read nothing throughout.
fn enrolment_vectors(client_deleted: &Event) -> Vec<Vector> {
    let client = || Aggregate::client(CLIENT_NAME);
    let token_sha256: [u8; 32] = Sha256::digest(ENROLMENT_TOKEN).into();

    let created_again = access_event(
        14,
        "019b76da-dac8-7000-8000-00000000000e",
        client(),
        Some(client_deleted),
        KIND_CLIENT_CREATED,
        encode_body(&Created { owner_group: None, description: "web node 1, rebuilt".to_owned() }),
    );
    let token_issued = access_event(
        15,
        "019b76da-deb0-7000-8000-00000000000f",
        client(),
        Some(&created_again),
        KIND_CLIENT_ENROLMENT_TOKEN_ISSUED,
        encode_body(&EnrolmentTokenIssued { token_sha256, expires_at_micros: recorded_at(15) + HOUR_MICROS }),
    );

    // The server records an enrolment under the client's own identity, authenticated
    // by the token, and a renewal under the certificate it renews.
    let enrolled = Event {
        actor: Actor { principal: CLIENT_NAME.to_owned(), authentication: "enrolment-token".to_owned() },
        ..access_event(
            16,
            "019b76da-e298-7000-8000-000000000010",
            client(),
            Some(&token_issued),
            KIND_CLIENT_CERTIFICATE_ISSUED,
            encode_body(&CertificateIssued {
                serial: ENROLMENT_SERIAL.to_owned(),
                not_after_micros: recorded_at(16) + DAY_MICROS,
                token_sha256: Some(token_sha256),
            }),
        )
    };
    let renewed = Event {
        actor: Actor { principal: CLIENT_NAME.to_owned(), authentication: "mtls".to_owned() },
        ..access_event(
            17,
            "019b76da-e680-7000-8000-000000000011",
            client(),
            Some(&enrolled),
            KIND_CLIENT_CERTIFICATE_ISSUED,
            encode_body(&CertificateIssued {
                serial: RENEWAL_SERIAL.to_owned(),
                not_after_micros: recorded_at(17) + DAY_MICROS,
                token_sha256: None,
            }),
        )
    };

    let vector = |file, description, sequence, event, enrolment_token| Vector {
        file,
        description,
        sequence,
        event,
        key: signer(),
        wrapped_data_key: None,
        enrolment_token,
    };
    vec![
        vector(
            "14-client-created-again.json",
            "The deleted client is created again on the same chain, at version 5, without its memberships.",
            14,
            created_again,
            None,
        ),
        vector(
            "15-client-enrolment-token-issued.json",
            "An operator issues the client an enrolment token valid for one hour; the body records its SHA-256.",
            15,
            token_issued,
            Some(ENROLMENT_TOKEN),
        ),
        vector(
            "16-client-certificate-issued-enrolment.json",
            "The client enrols with the token: a certificate valid for one day, recorded directly after the \
             token's event with the token's SHA-256.",
            16,
            enrolled,
            Some(ENROLMENT_TOKEN),
        ),
        vector(
            "17-client-certificate-issued-renewal.json",
            "The client renews its certificate with the current one; no token, so the token hash is nil.",
            17,
            renewed,
            None,
        ),
    ]
}

/// Whether the golden client may read the golden secret after each stored vector.
/// From vector 12 on the client is in no group, so the lifecycle vectors check the
/// read rule through a grant of their own (see `lifecycle.rs`).
const READ_AFTER: [(&str, bool); 27] = [
    ("01-signing-key-certified.json", false),
    ("02-secret-version-added-first.json", false),
    ("03-secret-version-added-second.json", false),
    ("04-client-created.json", false),
    ("05-group-created.json", false),
    ("06-group-member-added.json", false),
    ("07-group-grant-added.json", true),
    ("08-client-disabled.json", false),
    ("09-client-enabled.json", true),
    ("10-group-member-removed.json", false),
    ("11-group-grant-removed.json", false),
    ("12-group-deleted.json", false),
    ("13-client-deleted.json", false),
    ("14-client-created-again.json", false),
    ("15-client-enrolment-token-issued.json", false),
    ("16-client-certificate-issued-enrolment.json", false),
    ("17-client-certificate-issued-renewal.json", false),
    ("18-secret-version-added-v2-metadata.json", false),
    ("19-secret-version-added-v2-upgrade.json", false),
    ("20-secret-metadata-set.json", false),
    ("21-secret-version-added-v2-rollback.json", false),
    ("22-secret-version-expired.json", false),
    ("23-secret-version-destroyed.json", false),
    ("24-secret-deleted.json", false),
    ("25-secret-restored.json", false),
    ("26-secret-destroyed.json", false),
    ("27-secret-version-added-v2-incarnation.json", false),
];

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn blessing() -> bool {
    std::env::var_os("WATCHWORD_BLESS").is_some_and(|value| value == "1")
}

fn key_json(seed: &[u8; 32]) -> Value {
    let key = SigningKey::from_bytes(seed);
    json!({
        "seed_hex": hex::encode(seed),
        "public_key_hex": hex::encode(key.verifying_key().to_bytes()),
        "key_id": id_of(&key),
    })
}

fn keys_document() -> Value {
    json!({
        "description": "Test keys of the golden vectors. Ed25519 signatures are deterministic (RFC 8032), \
                        so these seeds reproduce every stored signature. Verifiers trust the root key alone.",
        "root": key_json(&ROOT_SEED),
        "signer": key_json(&SIGNER_SEED),
    })
}

/// Returns the envelope fields of `event` as they appear in a vector file.
fn event_json(event: &Event) -> Value {
    json!({
        "format_version": 1,
        "id": event.id.to_string(),
        "kind": event.kind,
        "aggregate_type": event.aggregate.kind.as_str(),
        "aggregate_id": event.aggregate.id,
        "aggregate_version": event.aggregate_version,
        "previous_hash_hex": hex::encode(event.previous_hash),
        "recorded_at_micros": event.recorded_at_micros,
        "actor": { "principal": event.actor.principal, "authentication": event.actor.authentication },
        "correlation_id": event.correlation_id,
        "key_id": event.key_id,
        "body_hex": hex::encode(&event.body),
    })
}

/// Returns the decoded body of `event` as it appears in a vector file.
fn body_json(event: &Event) -> Value {
    match event.kind.as_str() {
        KIND_SIGNING_KEY_CERTIFIED => {
            let body: SigningKeyCertified = decode_body(&event.body).expect("a certification body");
            json!({ "algorithm": body.algorithm, "public_key_hex": hex::encode(body.public_key) })
        }
        KIND_SECRET_VERSION_ADDED => {
            let body: SecretVersionAdded = decode_body(&event.body).expect("a version_added body");
            json!({
                "version": body.version,
                "content": content_json(&body.content),
                "data_key": data_key_json(&body.data_key),
                "size": body.size,
                "mode": body.mode,
            })
        }
        KIND_SECRET_VERSION_ADDED_V2 => {
            let body: SecretVersionAddedV2 = decode_body(&event.body).expect("a version_added.v2 body");
            json!({
                "version": body.version,
                "content": content_json(&body.content),
                "data_key": data_key_json(&body.data_key),
                "size": body.size,
                "digest_hex": hex::encode(body.digest),
                "expires_at_micros": body.expires_at_micros,
                "rolled_back_from": body.rolled_back_from,
                "metadata": body.metadata.as_ref().map(metadata_json),
            })
        }
        KIND_SECRET_METADATA_SET => {
            let body: MetadataSet = decode_body(&event.body).expect("a metadata_set body");
            json!({ "metadata": metadata_json(&body.metadata) })
        }
        KIND_SECRET_VERSION_DESTROYED | KIND_SECRET_VERSION_EXPIRED => {
            let body: VersionRef = decode_body(&event.body).expect("a version reference body");
            json!({ "version": body.version })
        }
        KIND_CLIENT_CREATED | KIND_GROUP_CREATED => {
            let body: Created = decode_body(&event.body).expect("a created body");
            json!({ "owner_group": body.owner_group, "description": body.description })
        }
        KIND_CLIENT_DISABLED
        | KIND_CLIENT_ENABLED
        | KIND_CLIENT_DELETED
        | KIND_GROUP_DELETED
        | KIND_SECRET_DELETED
        | KIND_SECRET_RESTORED
        | KIND_SECRET_DESTROYED => {
            let Empty {} = decode_body(&event.body).expect("an empty body");
            json!({})
        }
        KIND_GROUP_MEMBER_ADDED | KIND_GROUP_MEMBER_REMOVED => {
            let body: Membership = decode_body(&event.body).expect("a membership body");
            json!({ "client": body.client })
        }
        KIND_GROUP_GRANT_ADDED | KIND_GROUP_GRANT_REMOVED => {
            let body: Grant = decode_body(&event.body).expect("a grant body");
            json!({ "secret": body.secret })
        }
        KIND_CLIENT_ENROLMENT_TOKEN_ISSUED => {
            let body: EnrolmentTokenIssued = decode_body(&event.body).expect("a token body");
            json!({
                "token_sha256_hex": hex::encode(body.token_sha256),
                "expires_at_micros": body.expires_at_micros,
            })
        }
        KIND_CLIENT_CERTIFICATE_ISSUED => {
            let body: CertificateIssued = decode_body(&event.body).expect("a certificate body");
            json!({
                "serial": body.serial,
                "not_after_micros": body.not_after_micros,
                "token_sha256_hex": body.token_sha256.map(hex::encode),
            })
        }
        other => panic!("no golden body layout for kind {other}"),
    }
}

fn content_json(content: &SealedContent) -> Value {
    json!({ "nonce_hex": hex::encode(content.nonce), "ciphertext_hex": hex::encode(&content.ciphertext) })
}

fn data_key_json(data_key: &DataKeyRef) -> Value {
    json!({
        "kek_id": data_key.kek_id,
        "store_key": data_key.store_key,
        "wrapped_sha256_hex": hex::encode(data_key.wrapped_sha256),
    })
}

/// Returns secret metadata as it appears in a vector file. JSON objects have no
/// order, so the labels' order is in `body_hex` alone.
fn metadata_json(metadata: &SecretMetadata) -> Value {
    let delivery = &metadata.delivery;
    json!({
        "owner_group": metadata.owner_group,
        "description": metadata.description,
        "labels": metadata.labels,
        "delivery": {
            "file_name": delivery.file_name,
            "owner": delivery.owner,
            "group": delivery.group,
            "mode": delivery.mode,
        },
    })
}

fn vector_document(vector: &Vector) -> Value {
    let frame = sign(&vector.event, &vector.key);
    let event = &vector.event;
    let mut document = json!({
        "description": vector.description,
        "subject": event.aggregate.subject(),
        "sequence": vector.sequence,
        "payload_hex": hex::encode(frame.encode()),
        "signed_hex": hex::encode(&frame.signed),
        "signature_hex": hex::encode(frame.signature),
        "hash_hex": hex::encode(frame.hash()),
        "event": event_json(event),
        "body": body_json(event),
    });
    if let Some(wrapped) = vector.wrapped_data_key {
        let name = &event.aggregate.id;
        document["wrapped_data_key_hex"] = json!(hex::encode(wrapped));
        document["content_aad_hex"] = json!(hex::encode(content_aad(name, event.aggregate_version)));
        document["data_key_aad_hex"] = json!(hex::encode(data_key_aad(name, event.aggregate_version)));
    }
    if let Some(token) = vector.enrolment_token {
        document["enrolment_token"] = json!(token);
    }
    document
}

fn read_json(path: &Path) -> Value {
    bless_if_requested();
    let text = fs::read_to_string(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("parse {}: {error}", path.display()))
}

fn write_json(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("JSON encodes") + "\n";
    fs::write(path, text).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
}

/// Writes every vector file once per test run if `WATCHWORD_BLESS=1`, before any
/// test reads one.
fn bless_if_requested() {
    static BLESS: Once = Once::new();
    if !blessing() {
        return;
    }
    BLESS.call_once(|| {
        write_json(&vectors_dir().join("keys.json"), &keys_document());
        for vector in vectors() {
            write_json(&vectors_dir().join(vector.file), &vector_document(&vector));
        }
    });
}

/// Compares `expected` with the stored file, field by field, so that a failure names
/// the first field that differs.
fn check_stored(path: &Path, expected: &Value) {
    let stored = read_json(path);
    let file = path.file_name().expect("a file name").to_string_lossy();
    if let (Some(stored_payload), Some(expected_payload)) = (stored.get("payload_hex"), expected.get("payload_hex")) {
        assert_eq!(stored_payload, expected_payload, "{file}: this build encodes the event differently");
    }

    let expected_fields = expected.as_object().expect("a JSON object");
    let stored_fields = stored.as_object().unwrap_or_else(|| panic!("{file} does not hold a JSON object"));
    for (field, value) in expected_fields {
        assert_eq!(stored_fields.get(field), Some(value), "{file}: field {field}");
    }
    for field in stored_fields.keys() {
        assert!(expected_fields.contains_key(field), "{file}: unexpected field {field}");
    }
}

fn hex_field(document: &Value, field: &str) -> Vec<u8> {
    let text = document[field].as_str().unwrap_or_else(|| panic!("field {field} is not a string"));
    hex::decode(text).unwrap_or_else(|error| panic!("field {field} is not hex: {error}"))
}

/// Returns every stored event vector, in file-name order, which is stream order.
fn stored_vectors() -> Vec<(String, Value)> {
    bless_if_requested();
    let mut names: Vec<String> = fs::read_dir(vectors_dir())
        .expect("tests/vectors exists")
        .map(|entry| entry.expect("directory entry").file_name().into_string().expect("UTF-8 file name"))
        .filter(|name| name.ends_with(".json") && name != "keys.json")
        .collect();
    names.sort();
    // Checkpoint vectors (30 and up) hold a Merkle tree or a whole stream rather
    // than one event; `tests/checkpoint.rs` checks them.
    names
        .into_iter()
        .map(|name| (name.clone(), read_json(&vectors_dir().join(name))))
        .filter(|(_, document)| document.get("payload_hex").is_some())
        .collect()
}

/// Returns the root keys named in the stored `keys.json`.
fn stored_roots() -> RootKeys {
    let keys = read_json(&vectors_dir().join("keys.json"));
    let public_key: [u8; 32] = hex::decode(keys["root"]["public_key_hex"].as_str().expect("root public key"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    RootKeys::new(&[public_key]).expect("a valid root key")
}

#[test]
fn encoder_matches_stored_vectors() {
    check_stored(&vectors_dir().join("keys.json"), &keys_document());
    for vector in vectors() {
        check_stored(&vectors_dir().join(vector.file), &vector_document(&vector));
    }
}

#[test]
fn stored_vectors_verify_and_fold() {
    let roots = stored_roots();
    let mut state = MemoryState::default();

    for (name, document) in stored_vectors() {
        let payload = hex_field(&document, "payload_hex");
        let subject = document["subject"].as_str().expect("subject");
        let sequence = document["sequence"].as_u64().expect("sequence");

        let frame = Frame::decode(&payload).unwrap_or_else(|error| panic!("{name}: frame: {error}"));
        assert_eq!(frame.signed, hex_field(&document, "signed_hex"), "{name}: signed bytes");
        assert_eq!(frame.signature.to_vec(), hex_field(&document, "signature_hex"), "{name}: signature");
        assert_eq!(frame.hash().to_vec(), hex_field(&document, "hash_hex"), "{name}: event hash");

        let event = Event::from_signed_bytes(&frame.signed).unwrap_or_else(|error| panic!("{name}: envelope: {error}"));
        assert_eq!(event_json(&event), document["event"], "{name}: envelope fields");
        assert_eq!(body_json(&event), document["body"], "{name}: body fields");

        let recorded = verify_message(&state, &roots, subject, &payload, sequence)
            .unwrap_or_else(|error| panic!("{name}: verify: {error}"));
        assert_eq!(recorded.hash.to_vec(), hex_field(&document, "hash_hex"), "{name}: verified hash");

        apply_message(&mut state, &roots, subject, &payload, sequence)
            .unwrap_or_else(|error| panic!("{name}: apply: {error}"));
    }

    // The lifecycle vectors end with the golden secret's second incarnation. The
    // state after each of them is checked in `lifecycle.rs`.
    let secret = state.secrets.get(SECRET_NAME).expect("the golden secret exists");
    assert_eq!(secret.current.version, 5);
    assert_eq!(secret.incarnation, 2);
    assert_eq!(secret.revision, 10);
    assert_eq!(secret.sequence, 27);
    assert_eq!(secret.metadata, SecretMetadata::default(), "a new incarnation starts with fresh metadata");
    assert_eq!(state.versions[&(SECRET_NAME.to_owned(), 4)].rolled_back_from, Some(2));
    assert_eq!(state.heads[&Aggregate::secret(lifecycle::CHECKOUT_SECRET)].version, 2);
    assert!(state.signing_keys.contains_key(&id_of(&signer())));

    // The access vectors delete the group and the client, whose chains remain. The
    // enrolment vectors create the client again, and its token and certificates
    // change only its stream sequence.
    assert!(state.groups.is_empty());
    assert!(state.memberships.is_empty());
    assert!(state.grants.is_empty());
    assert_eq!(state.heads[&Aggregate::group(GROUP_NAME)].version, 6);
    assert_eq!(state.clients.len(), 1);
    let client = &state.clients[CLIENT_NAME];
    assert!(client.enabled);
    assert_eq!(client.owner_group, None);
    assert_eq!(client.description, "web node 1, rebuilt");
    assert_eq!(client.created_at_micros, recorded_at(14), "the recorded time of vector 14");
    assert_eq!(client.created_by, "operator:alice", "the actor of vector 14, not of the enrolment");
    assert_eq!(client.sequence, 17);
    assert_eq!(state.heads[&Aggregate::client(CLIENT_NAME)].version, 8);
}

#[test]
fn stored_vectors_follow_read_rule() {
    let roots = stored_roots();
    let mut state = MemoryState::default();
    let documents = stored_vectors();
    let files: Vec<&str> = documents.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(files, READ_AFTER.map(|(file, _)| file), "READ_AFTER lists every stored vector in order");

    for ((name, document), (_, expected)) in documents.iter().zip(READ_AFTER) {
        let payload = hex_field(document, "payload_hex");
        let subject = document["subject"].as_str().expect("subject");
        let sequence = document["sequence"].as_u64().expect("sequence");
        apply_message(&mut state, &roots, subject, &payload, sequence)
            .unwrap_or_else(|error| panic!("{name}: apply: {error}"));

        let readable = may_read(&state, CLIENT_NAME, SECRET_NAME).expect("the memory state cannot fail");
        assert_eq!(readable, expected, "after {name}, may the golden client read the golden secret");
    }
}

#[test]
fn stored_aad_and_commitments_match() {
    for (name, document) in stored_vectors() {
        let kind = &document["event"]["kind"];
        if kind != KIND_SECRET_VERSION_ADDED && kind != KIND_SECRET_VERSION_ADDED_V2 {
            continue;
        }
        let secret = document["event"]["aggregate_id"].as_str().expect("aggregate id");
        let version = document["event"]["aggregate_version"].as_u64().expect("aggregate version");
        assert_eq!(content_aad(secret, version), hex_field(&document, "content_aad_hex"), "{name}: content AAD");
        assert_eq!(data_key_aad(secret, version), hex_field(&document, "data_key_aad_hex"), "{name}: data key AAD");

        let wrapped = hex_field(&document, "wrapped_data_key_hex");
        let commitment = document["body"]["data_key"]["wrapped_sha256_hex"].as_str().expect("commitment");
        assert_eq!(hex::encode(Sha256::digest(wrapped)), commitment, "{name}: wrapped key commitment");
    }
}

#[test]
fn stored_token_hashes_match() {
    let documents = stored_vectors();
    let mut checked = 0;
    for (name, document) in &documents {
        let Some(token) = document.get("enrolment_token") else {
            continue;
        };
        let token = token.as_str().expect("enrolment_token is a string");
        let recorded = document["body"]["token_sha256_hex"].as_str().expect("token_sha256_hex");
        assert_eq!(hex::encode(Sha256::digest(token)), recorded, "{name}: SHA-256 of the token's ASCII characters");
        checked += 1;
    }
    assert_eq!(checked, 2, "vectors 15 and 16 carry the token");
}

/// The chain alone shows that the golden enrolment consumed the golden token: the
/// certificate event comes directly after the token event and records its hash.
#[test]
fn stored_enrolment_follows_its_token() {
    let documents = stored_vectors();
    let document = |file: &str| &documents.iter().find(|(name, _)| name == file).expect("stored vector").1;
    let token = document("15-client-enrolment-token-issued.json");
    let enrolment = document("16-client-certificate-issued-enrolment.json");
    let renewal = document("17-client-certificate-issued-renewal.json");

    assert_eq!(enrolment["event"]["previous_hash_hex"], token["hash_hex"], "the enrolment follows the token");
    assert_eq!(
        enrolment["event"]["aggregate_version"],
        token["event"]["aggregate_version"].as_u64().expect("version") + 1
    );
    assert_eq!(enrolment["body"]["token_sha256_hex"], token["body"]["token_sha256_hex"]);
    let expires = token["body"]["expires_at_micros"].as_i64().expect("expires_at_micros");
    let enrolled_at = enrolment["event"]["recorded_at_micros"].as_i64().expect("recorded_at_micros");
    assert!(enrolled_at < expires, "the golden enrolment is recorded before the token expires");

    assert_eq!(renewal["body"]["token_sha256_hex"], Value::Null, "a renewal records no token");
    assert_eq!(renewal["event"]["previous_hash_hex"], enrolment["hash_hex"]);
}

#[test]
fn stored_vectors_project_into_redb() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let model = ReadModel::open(&dir.path().join("read-model.redb"), 1 << 20).expect("open read model");
    let roots = stored_roots();
    let documents = stored_vectors();
    let payloads: Vec<Vec<u8>> = documents.iter().map(|(_, document)| hex_field(document, "payload_hex")).collect();

    let messages: Vec<StoredMessage<'_>> = documents
        .iter()
        .zip(&payloads)
        .map(|((_, document), payload)| StoredMessage {
            subject: document["subject"].as_str().expect("subject"),
            payload,
            sequence: document["sequence"].as_u64().expect("sequence"),
        })
        .collect();
    let outcome = model.apply_batch(&roots, &messages).expect("the golden stream applies");
    assert_eq!(outcome.applied.len(), documents.len());

    let mut memory = MemoryState::default();
    for message in &messages {
        apply_message(&mut memory, &roots, message.subject, message.payload, message.sequence).expect("applies");
    }
    assert_eq!(model.snapshot().expect("snapshot"), memory);
}

#[test]
fn spec_encoder_matches_rmp_serde() {
    for vector in vectors() {
        let event = &vector.event;
        let frame = sign(event, &vector.key);
        assert_eq!(msgpack::envelope(event), frame.signed, "{}: envelope", vector.file);
        assert_eq!(msgpack::frame(&frame.signed, &frame.signature), frame.encode(), "{}: frame", vector.file);

        let body = match event.kind.as_str() {
            KIND_SIGNING_KEY_CERTIFIED => msgpack::certified_body(&decode_body(&event.body).expect("body")),
            KIND_SECRET_VERSION_ADDED => msgpack::version_added_body(&decode_body(&event.body).expect("body")),
            KIND_SECRET_VERSION_ADDED_V2 => msgpack::version_added_v2_body(&decode_body(&event.body).expect("body")),
            KIND_SECRET_METADATA_SET => msgpack::metadata_set_body(&decode_body(&event.body).expect("body")),
            KIND_SECRET_VERSION_DESTROYED | KIND_SECRET_VERSION_EXPIRED => {
                msgpack::version_ref_body(&decode_body(&event.body).expect("body"))
            }
            KIND_CLIENT_CREATED | KIND_GROUP_CREATED => msgpack::created_body(&decode_body(&event.body).expect("body")),
            KIND_GROUP_MEMBER_ADDED | KIND_GROUP_MEMBER_REMOVED => {
                msgpack::membership_body(&decode_body(&event.body).expect("body"))
            }
            KIND_GROUP_GRANT_ADDED | KIND_GROUP_GRANT_REMOVED => {
                msgpack::grant_body(&decode_body(&event.body).expect("body"))
            }
            KIND_CLIENT_ENROLMENT_TOKEN_ISSUED => msgpack::token_issued_body(&decode_body(&event.body).expect("body")),
            KIND_CLIENT_CERTIFICATE_ISSUED => {
                msgpack::certificate_issued_body(&decode_body(&event.body).expect("body"))
            }
            KIND_CLIENT_DISABLED
            | KIND_CLIENT_ENABLED
            | KIND_CLIENT_DELETED
            | KIND_GROUP_DELETED
            | KIND_SECRET_DELETED
            | KIND_SECRET_RESTORED
            | KIND_SECRET_DESTROYED => msgpack::empty_body(),
            other => panic!("no specification encoder for kind {other}"),
        };
        assert_eq!(body, event.body, "{}: body", vector.file);
    }
}

#[test]
fn vectors_use_subjects_from_aggregates() {
    for vector in vectors() {
        let aggregate = &vector.event.aggregate;
        let token = hex::encode(Sha256::digest(aggregate.id.as_bytes()));
        let expected = format!("watchword.ev.{}.{token}", aggregate.kind.as_str());
        assert_eq!(aggregate.subject(), expected, "{}", vector.file);
    }
    assert_eq!(AggregateType::parse("signing_key"), Some(AggregateType::SigningKey));
    assert_eq!(AggregateType::parse("client"), Some(AggregateType::Client));
    assert_eq!(AggregateType::parse("group"), Some(AggregateType::Group));
}

/// Returns the bytes of the annotated dump in `FORMAT.md` that follows `marker`.
///
/// Each dump line is `OFFSET  BYTES | annotation`. The offsets are checked too, so
/// a line added or dropped by hand is caught.
fn format_md_dump(marker: &str) -> Vec<u8> {
    let spec = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("FORMAT.md")).expect("FORMAT.md");
    let after_marker = spec.split_once(marker).unwrap_or_else(|| panic!("FORMAT.md has no {marker}")).1;
    let block = after_marker.split("```").nth(1).expect("a fenced block after the marker");

    let mut bytes = Vec::new();
    for line in block.lines().skip(1).filter(|line| line.contains('|')) {
        let (data, _annotation) = line.split_once('|').expect("a | separator");
        let mut tokens = data.split_whitespace();
        let offset = usize::from_str_radix(tokens.next().expect("an offset"), 16).expect("a hex offset");
        assert_eq!(offset, bytes.len(), "FORMAT.md dump line {line:?} has a wrong offset");
        bytes.extend(tokens.map(|token| u8::from_str_radix(token, 16).expect("a hex byte")));
    }
    bytes
}

#[test]
fn format_md_dump_matches_vector() {
    let document = read_json(&vectors_dir().join("02-secret-version-added-first.json"));
    let dump = format_md_dump("<!-- golden-dump: 02-secret-version-added-first.json -->");
    assert_eq!(hex::encode(dump), document["payload_hex"].as_str().expect("payload_hex"));
}

#[test]
fn format_md_body_dumps_match_vectors() {
    for file in [
        "04-client-created.json",
        "05-group-created.json",
        "06-group-member-added.json",
        "07-group-grant-added.json",
        "08-client-disabled.json",
        "15-client-enrolment-token-issued.json",
        "16-client-certificate-issued-enrolment.json",
        "17-client-certificate-issued-renewal.json",
        "18-secret-version-added-v2-metadata.json",
        "20-secret-metadata-set.json",
        "22-secret-version-expired.json",
    ] {
        let document = read_json(&vectors_dir().join(file));
        let dump = format_md_dump(&format!("<!-- golden-body: {file} -->"));
        assert_eq!(hex::encode(dump), document["event"]["body_hex"].as_str().expect("body_hex"), "{file}");
    }
}
