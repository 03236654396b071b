//! Golden vectors 18 to 27: the secret lifecycle, continuing the golden stream after
//! vector 17, and the state that each of them must leave on both projections.

use sha2::{Digest, Sha256};
use watchword_events::body::{
    Created, DataKeyRef, Delivery, Empty, Grant, KIND_GROUP_CREATED, KIND_GROUP_GRANT_ADDED, KIND_GROUP_MEMBER_ADDED,
    KIND_SECRET_DELETED, KIND_SECRET_DESTROYED, KIND_SECRET_METADATA_SET, KIND_SECRET_RESTORED,
    KIND_SECRET_VERSION_ADDED_V2, KIND_SECRET_VERSION_DESTROYED, KIND_SECRET_VERSION_EXPIRED, Membership, MetadataSet,
    SealedContent, SecretMetadata, SecretVersionAddedV2, VersionRef, encode_body,
};
use watchword_events::event::Event;
use watchword_events::fold::{MemoryState, SecretStatus, SecretVersion, StateView, apply_message, may_read};
use watchword_events::names::file_name;
use watchword_events::readmodel::{ReadModel, StoredMessage};
use watchword_events::verify::sign;
use watchword_events::{Actor, Aggregate};

use crate::common::msgpack;

use super::{
    CLIENT_NAME, DAY_MICROS, SECRET_NAME, Vector, access_event, hex_field, recorded_at, signer, stored_roots,
    stored_vectors,
};

/// A second secret, created by vector 18 with every metadata field set. Its
/// metadata names its file, so the name derived from the secret name stays free.
pub(super) const CHECKOUT_SECRET: &str = "payments/checkout api key";

/// The file names that the metadata of vectors 18 and 20 set.
const CHECKOUT_FILE_NAME: &str = "checkout-api-key.env";
const DATABASE_FILE_NAME: &str = "db-password";

/// Wrapped data keys of the versions that vectors 18, 19, 21 and 27 add: filler
/// bytes of the server's wrapped-key length, like those of vectors 02 and 03.
const WRAPPED_KEY_18: [u8; 60] = [0x5c; 60];
const WRAPPED_KEY_19: [u8; 60] = [0x5d; 60];
const WRAPPED_KEY_21: [u8; 60] = [0x5e; 60];
const WRAPPED_KEY_27: [u8; 60] = [0x5f; 60];

/// The server's principal on the events it records by itself, such as expiries.
const SERVER_PRINCIPAL: &str = "watchword-server";

/// Returns a version body whose nonce, ciphertext and digest are filler bytes that
/// start at `fill`. The ciphertext is `size` bytes followed by a 16-byte tag, and
/// the data key is stored under the event id, as in vectors 02 and 03.
fn version_body(version: u64, event_id: &str, fill: u8, size: u8, wrapped_key: &[u8]) -> SecretVersionAddedV2 {
    SecretVersionAddedV2 {
        version,
        content: SealedContent {
            nonce: std::array::from_fn(|i| fill.wrapping_add(i as u8)),
            ciphertext: (0..size + 16).map(|i| fill.wrapping_add(0x40).wrapping_add(i)).collect(),
        },
        data_key: DataKeyRef {
            kek_id: "kek-2026".to_owned(),
            store_key: format!("dk/{event_id}"),
            wrapped_sha256: Sha256::digest(wrapped_key).into(),
        },
        size: size.into(),
        digest: std::array::from_fn(|i| fill.wrapping_add(0x80).wrapping_add(i as u8)),
        expires_at_micros: None,
        rolled_back_from: None,
        metadata: None,
    }
}

/// Returns the metadata of vector 18. The labels are listed with their keys out of
/// order: the map sorts them, and the body stores them sorted.
fn checkout_metadata() -> SecretMetadata {
    SecretMetadata {
        owner_group: Some("payments admins".to_owned()),
        description: "Card processor API key of the checkout service".to_owned(),
        labels: [("team", "payments"), ("env", "production")]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
        delivery: Delivery {
            file_name: Some(CHECKOUT_FILE_NAME.to_owned()),
            owner: Some("www-data".to_owned()),
            group: Some("payments".to_owned()),
            mode: Some(0o440),
        },
    }
}

/// Returns the metadata that vector 20 sets on the golden secret.
fn database_metadata() -> SecretMetadata {
    SecretMetadata {
        owner_group: Some("payments admins".to_owned()),
        description: "Primary database password".to_owned(),
        labels: [("tier".to_owned(), "database".to_owned())].into(),
        delivery: Delivery {
            file_name: Some(DATABASE_FILE_NAME.to_owned()),
            owner: None,
            group: Some("1001".to_owned()),
            mode: Some(0o400),
        },
    }
}

/// Returns the expiry time of vector 18's version: the recorded time of vector 22,
/// which records that expiry.
fn checkout_expiry() -> i64 {
    recorded_at(22)
}

/// Returns the expiry time of the rollback of vector 21: 90 days after its event.
fn rollback_expiry() -> i64 {
    recorded_at(21) + 90 * DAY_MICROS
}

/// Builds vectors 18 to 27. `golden_last` is vector 03, the last event of the golden
/// secret before them.
pub(super) fn lifecycle_vectors(golden_last: &Event) -> Vec<Vector> {
    let golden = || Aggregate::secret(SECRET_NAME);
    let checkout = || Aggregate::secret(CHECKOUT_SECRET);
    let empty = encode_body(&Empty {});

    let id = "019b76da-ea68-7000-8000-000000000012";
    let checkout_created = access_event(
        18,
        id,
        checkout(),
        None,
        KIND_SECRET_VERSION_ADDED_V2,
        encode_body(&SecretVersionAddedV2 {
            expires_at_micros: Some(checkout_expiry()),
            metadata: Some(checkout_metadata()),
            ..version_body(1, id, 0x18, 24, &WRAPPED_KEY_18)
        }),
    );
    let id = "019b76da-ee50-7000-8000-000000000013";
    let golden_third = access_event(
        19,
        id,
        golden(),
        Some(golden_last),
        KIND_SECRET_VERSION_ADDED_V2,
        encode_body(&version_body(3, id, 0x19, 9, &WRAPPED_KEY_19)),
    );
    let metadata_set = access_event(
        20,
        "019b76da-f238-7000-8000-000000000014",
        golden(),
        Some(&golden_third),
        KIND_SECRET_METADATA_SET,
        encode_body(&MetadataSet { metadata: database_metadata() }),
    );
    // A rollback seals the content of version 2 again, under a new data key, so its
    // size is that of version 2 (vector 03).
    let id = "019b76da-f620-7000-8000-000000000015";
    let rollback = access_event(
        21,
        id,
        golden(),
        Some(&metadata_set),
        KIND_SECRET_VERSION_ADDED_V2,
        encode_body(&SecretVersionAddedV2 {
            expires_at_micros: Some(rollback_expiry()),
            rolled_back_from: Some(2),
            ..version_body(4, id, 0x21, 7, &WRAPPED_KEY_21)
        }),
    );
    // The server records an expiry under its own principal when the time passes.
    let expired = Event {
        actor: Actor { principal: SERVER_PRINCIPAL.to_owned(), authentication: "internal".to_owned() },
        ..access_event(
            22,
            "019b76da-fa08-7000-8000-000000000016",
            checkout(),
            Some(&checkout_created),
            KIND_SECRET_VERSION_EXPIRED,
            encode_body(&VersionRef { version: 1 }),
        )
    };
    let version_destroyed = access_event(
        23,
        "019b76da-fdf0-7000-8000-000000000017",
        golden(),
        Some(&rollback),
        KIND_SECRET_VERSION_DESTROYED,
        encode_body(&VersionRef { version: 1 }),
    );
    let deleted = access_event(
        24,
        "019b76db-01d8-7000-8000-000000000018",
        golden(),
        Some(&version_destroyed),
        KIND_SECRET_DELETED,
        empty.clone(),
    );
    let restored = access_event(
        25,
        "019b76db-05c0-7000-8000-000000000019",
        golden(),
        Some(&deleted),
        KIND_SECRET_RESTORED,
        empty.clone(),
    );
    let destroyed = access_event(
        26,
        "019b76db-09a8-7000-8000-00000000001a",
        golden(),
        Some(&restored),
        KIND_SECRET_DESTROYED,
        empty,
    );
    let id = "019b76db-0d90-7000-8000-00000000001b";
    let reincarnated = access_event(
        27,
        id,
        golden(),
        Some(&destroyed),
        KIND_SECRET_VERSION_ADDED_V2,
        encode_body(&version_body(5, id, 0x27, 5, &WRAPPED_KEY_27)),
    );

    let vector = |file, description, sequence, event, wrapped_data_key| Vector {
        file,
        description,
        sequence,
        event,
        key: signer(),
        wrapped_data_key,
        enrolment_token: None,
    };
    vec![
        vector(
            "18-secret-version-added-v2-metadata.json",
            "A new secret's first version in the version-2 kind, with an expiry and every metadata field set: \
             owner group, description, two labels stored in key order, file name, owner, group and mode.",
            18,
            checkout_created,
            Some(&WRAPPED_KEY_18[..]),
        ),
        vector(
            "19-secret-version-added-v2-upgrade.json",
            "Content version 3 of the golden secret, whose versions 1 and 2 were written in the version-1 kind; \
             nil metadata keeps the metadata they left, in which vector 03 set no mode.",
            19,
            golden_third,
            Some(&WRAPPED_KEY_19[..]),
        ),
        vector(
            "20-secret-metadata-set.json",
            "The golden secret's metadata is replaced; its file name moves from the derived one to db-password.",
            20,
            metadata_set,
            None,
        ),
        vector(
            "21-secret-version-added-v2-rollback.json",
            "Content version 4 repeats the content of version 2 under a new data key, and expires in 90 days.",
            21,
            rollback,
            Some(&WRAPPED_KEY_21[..]),
        ),
        vector(
            "22-secret-version-expired.json",
            "The server records the expiry of the second secret's version 1 at its expiry time.",
            22,
            expired,
            None,
        ),
        vector(
            "23-secret-version-destroyed.json",
            "Version 1 of the golden secret is destroyed; version 4 stays current.",
            23,
            version_destroyed,
            None,
        ),
        vector(
            "24-secret-deleted.json",
            "The golden secret is deleted: no client may read it, and it keeps its versions and file name.",
            24,
            deleted,
            None,
        ),
        vector("25-secret-restored.json", "The golden secret is restored as it was.", 25, restored, None),
        vector(
            "26-secret-destroyed.json",
            "Every version of the golden secret is destroyed, and its file name and expiry are released.",
            26,
            destroyed,
            None,
        ),
        vector(
            "27-secret-version-added-v2-incarnation.json",
            "Content version 5 writes the destroyed name again: incarnation 2, with fresh metadata.",
            27,
            reincarnated,
            Some(&WRAPPED_KEY_27[..]),
        ),
    ]
}

/// What the fold must leave of one secret after a vector.
#[derive(Debug, Clone)]
struct Expected {
    status: SecretStatus,
    incarnation: u64,
    /// The current content version; the name has every version from 1 to this one.
    current: u64,
    metadata: SecretMetadata,
    /// Incarnation of each version, from version 1 on.
    version_incarnations: Vec<u64>,
    /// Versions written in the version-1 kind, which record no digest.
    without_digest: Vec<u64>,
    destroyed: Vec<u64>,
    expired: Vec<u64>,
    /// The file name that the secret claims, or `None` once it is destroyed.
    file_name: Option<String>,
    /// Whether the golden client may read the secret once a group grants it to the
    /// client (see [`grant_messages`]).
    readable: bool,
    /// Whether computes may receive the current version at the vector's recorded time.
    servable: bool,
}

/// The state after one stored vector.
struct After {
    file: &'static str,
    golden: Expected,
    checkout: Option<Expected>,
    /// The expiry index: (expiry time, secret) of current versions neither expired nor destroyed.
    expiries: Vec<(i64, String)>,
}

/// Returns the state after vector 17 and after each lifecycle vector, step by step.
fn expected_states() -> Vec<After> {
    let derived = file_name(SECRET_NAME).expect("the golden secret name is valid");
    let mut golden = Expected {
        status: SecretStatus::Active,
        incarnation: 1,
        current: 2,
        metadata: SecretMetadata::default(),
        version_incarnations: vec![1, 1],
        without_digest: vec![1, 2],
        destroyed: Vec::new(),
        expired: Vec::new(),
        file_name: Some(derived.clone()),
        readable: true,
        servable: true,
    };
    let mut checkout: Option<Expected> = None;
    let mut expiries = Vec::new();
    let mut states = Vec::new();
    let mut record = |file, golden: &Expected, checkout: &Option<Expected>, expiries: &Vec<(i64, String)>| {
        states.push(After { file, golden: golden.clone(), checkout: checkout.clone(), expiries: expiries.clone() });
    };
    record("17-client-certificate-issued-renewal.json", &golden, &checkout, &expiries);

    checkout = Some(Expected {
        status: SecretStatus::Active,
        incarnation: 1,
        current: 1,
        metadata: checkout_metadata(),
        version_incarnations: vec![1],
        without_digest: Vec::new(),
        destroyed: Vec::new(),
        expired: Vec::new(),
        file_name: Some(CHECKOUT_FILE_NAME.to_owned()),
        readable: true,
        servable: true,
    });
    expiries.push((checkout_expiry(), CHECKOUT_SECRET.to_owned()));
    record("18-secret-version-added-v2-metadata.json", &golden, &checkout, &expiries);

    golden.current = 3;
    golden.version_incarnations.push(1);
    record("19-secret-version-added-v2-upgrade.json", &golden, &checkout, &expiries);

    golden.metadata = database_metadata();
    golden.file_name = Some(DATABASE_FILE_NAME.to_owned());
    record("20-secret-metadata-set.json", &golden, &checkout, &expiries);

    golden.current = 4;
    golden.version_incarnations.push(1);
    expiries.push((rollback_expiry(), SECRET_NAME.to_owned()));
    record("21-secret-version-added-v2-rollback.json", &golden, &checkout, &expiries);

    // An expired version is not servable, but the read rule checks the status only.
    let expired = checkout.as_mut().expect("created by vector 18");
    expired.expired = vec![1];
    expired.servable = false;
    expiries.retain(|(_, name)| name != CHECKOUT_SECRET);
    record("22-secret-version-expired.json", &golden, &checkout, &expiries);

    golden.destroyed = vec![1];
    record("23-secret-version-destroyed.json", &golden, &checkout, &expiries);

    golden.status = SecretStatus::Deleted;
    golden.readable = false;
    golden.servable = false;
    record("24-secret-deleted.json", &golden, &checkout, &expiries);

    golden.status = SecretStatus::Active;
    golden.readable = true;
    golden.servable = true;
    record("25-secret-restored.json", &golden, &checkout, &expiries);

    golden.status = SecretStatus::Destroyed;
    golden.destroyed = vec![1, 2, 3, 4];
    golden.file_name = None;
    golden.readable = false;
    golden.servable = false;
    expiries.clear();
    record("26-secret-destroyed.json", &golden, &checkout, &expiries);

    golden = Expected {
        status: SecretStatus::Active,
        incarnation: 2,
        current: 5,
        metadata: SecretMetadata::default(),
        file_name: Some(derived),
        readable: true,
        servable: true,
        ..golden
    };
    golden.version_incarnations.push(2);
    record("27-secret-version-added-v2-incarnation.json", &golden, &checkout, &expiries);
    states
}

/// Returns the messages that let the golden client read both lifecycle secrets,
/// at the stream sequences after `last_sequence`: a new group, the client as its
/// member, and a grant on each secret. They are not golden vectors, and their event
/// ids are arbitrary.
fn grant_messages(last_sequence: u64) -> Vec<(String, Vec<u8>, u64)> {
    let group = || Aggregate::group("lifecycle readers");
    let bodies = [
        (KIND_GROUP_CREATED, encode_body(&Created { owner_group: None, description: String::new() })),
        (KIND_GROUP_MEMBER_ADDED, encode_body(&Membership { client: CLIENT_NAME.to_owned() })),
        (KIND_GROUP_GRANT_ADDED, encode_body(&Grant { secret: SECRET_NAME.to_owned() })),
        (KIND_GROUP_GRANT_ADDED, encode_body(&Grant { secret: CHECKOUT_SECRET.to_owned() })),
    ];

    let mut previous: Option<Event> = None;
    let mut messages = Vec::new();
    for (offset, (kind, body)) in (1..).zip(bodies) {
        let sequence = last_sequence + offset;
        let id = format!("00000000-0000-7000-8000-{sequence:012x}");
        let event = access_event(sequence, &id, group(), previous.as_ref(), kind, body);
        messages.push((event.aggregate.subject(), sign(&event, &signer()).encode(), sequence));
        previous = Some(event);
    }
    messages
}

/// Checks one secret against `expected` (`None`: the secret does not exist yet).
fn check_secret(view: &dyn StateView, name: &str, expected: Option<&Expected>, at_micros: i64, context: &str) {
    let state = view.secret(name).expect("the view reads");
    let readable = may_read(view, CLIENT_NAME, name).expect("the view reads");
    let Some(expected) = expected else {
        assert!(state.is_none(), "{context}: {name} does not exist yet");
        assert!(!readable, "{context}: {name} is not readable before it exists");
        return;
    };
    let state = state.unwrap_or_else(|| panic!("{context}: {name} exists"));
    assert_eq!(state.status, expected.status, "{context}: {name} status");
    assert_eq!(state.incarnation, expected.incarnation, "{context}: {name} incarnation");
    assert_eq!(state.current.version, expected.current, "{context}: {name} current version");
    assert_eq!(state.metadata, expected.metadata, "{context}: {name} metadata");
    assert_eq!(readable, expected.readable, "{context}: may the golden client read {name} through a grant");
    assert_eq!(state.servable(at_micros), expected.servable, "{context}: {name} servable");

    let versions = view.secret_versions(name).expect("the view reads");
    let numbers_where = |keep: fn(&SecretVersion) -> bool| -> Vec<u64> {
        versions.iter().filter(|version| keep(version)).map(|version| version.version).collect()
    };
    assert_eq!(numbers_where(|_| true), (1..=expected.current).collect::<Vec<_>>(), "{context}: {name} versions");
    assert_eq!(numbers_where(|v| v.destroyed), expected.destroyed, "{context}: {name} destroyed versions");
    assert_eq!(numbers_where(|v| v.expired), expected.expired, "{context}: {name} expired versions");
    assert_eq!(numbers_where(|v| v.digest.is_none()), expected.without_digest, "{context}: {name} digests");
    let incarnations: Vec<u64> = versions.iter().map(|version| version.incarnation).collect();
    assert_eq!(incarnations, expected.version_incarnations, "{context}: {name} version incarnations");
    for version in &versions {
        assert_eq!(
            version.content.ciphertext.is_empty(),
            version.destroyed,
            "{context}: {name} version {} keeps its ciphertext until it is destroyed",
            version.version
        );
    }
    let last = &versions[versions.len() - 1];
    assert!(state.current.content.ciphertext.is_empty(), "{context}: {name} record holds no ciphertext");
    assert_eq!(state.current.version, last.version, "{context}: {name} current version");
    let record = view.secret_version(name, last.version).expect("the view reads");
    assert_eq!(record.as_ref(), Some(last), "{context}: {name} current version record");
    let current_metadata = SecretVersion { content: last.content.clone(), ..state.current.clone() };
    assert_eq!(&current_metadata, last, "{context}: {name} current version matches its record but for the ciphertext");

    let derived = file_name(name).expect("a valid secret name");
    let candidates = [derived.as_str(), CHECKOUT_FILE_NAME, DATABASE_FILE_NAME];
    for candidate in candidates {
        let owner = view.file_name_owner(candidate).expect("the view reads");
        let claims = expected.file_name.as_deref() == Some(candidate);
        assert_eq!(owner.as_deref() == Some(name), claims, "{context}: does {name} claim the file name {candidate}");
    }
}

fn check_state(view: &dyn StateView, expiries: &[(i64, String)], after: &After, at_micros: i64, context: &str) {
    check_secret(view, SECRET_NAME, Some(&after.golden), at_micros, context);
    check_secret(view, CHECKOUT_SECRET, after.checkout.as_ref(), at_micros, context);
    assert_eq!(expiries, after.expiries, "{context}: expiry index");
}

#[test]
fn lifecycle_vectors_leave_expected_state() {
    let roots = stored_roots();
    let documents = stored_vectors();
    let stored: Vec<(String, Vec<u8>, u64)> = documents
        .iter()
        .map(|(_, document)| {
            let subject = document["subject"].as_str().expect("subject").to_owned();
            (subject, hex_field(document, "payload_hex"), document["sequence"].as_u64().expect("sequence"))
        })
        .collect();

    for after in expected_states() {
        let end = documents.iter().position(|(name, _)| name == after.file).expect("a stored vector") + 1;
        let last_sequence = stored[end - 1].2;
        let at_micros = recorded_at(last_sequence);
        let mut messages = stored[..end].to_vec();
        messages.extend(grant_messages(last_sequence));

        let mut memory = MemoryState::default();
        for (subject, payload, sequence) in &messages {
            apply_message(&mut memory, &roots, subject, payload, *sequence)
                .unwrap_or_else(|error| panic!("after {}: sequence {sequence}: {error}", after.file));
        }
        let memory_expiries: Vec<(i64, String)> = memory.expiries.iter().cloned().collect();
        check_state(&memory, &memory_expiries, &after, at_micros, &format!("memory, after {}", after.file));

        let dir = tempfile::tempdir().expect("temporary directory");
        let model = ReadModel::open(&dir.path().join("read-model.redb"), 1 << 20).expect("open read model");
        let batch: Vec<StoredMessage<'_>> = messages
            .iter()
            .map(|(subject, payload, sequence)| StoredMessage { subject, payload, sequence: *sequence })
            .collect();
        model.apply_batch(&roots, &batch).expect("the stream applies to redb");
        let (redb_expiries, _) = model.expiring(i64::MAX).expect("the expiry index reads");
        let context = format!("redb, after {}", after.file);
        model
            .read(|view| {
                check_state(view, &redb_expiries, &after, at_micros, &context);
                Ok(())
            })
            .expect("the read model reads");
    }
}

#[test]
fn lifecycle_vectors_follow_their_rules() {
    let documents = stored_vectors();
    let document = |file: &str| &documents.iter().find(|(name, _)| name == file).expect("stored vector").1;

    let rollback = document("21-secret-version-added-v2-rollback.json");
    let source = document("03-secret-version-added-second.json");
    assert_eq!(rollback["body"]["rolled_back_from"], 2);
    assert_eq!(rollback["body"]["size"], source["body"]["size"], "a rollback repeats the source's content");
    assert_ne!(rollback["body"]["data_key"], source["body"]["data_key"], "a rollback seals under a new data key");

    let created = document("18-secret-version-added-v2-metadata.json");
    let expired = document("22-secret-version-expired.json");
    assert_eq!(
        created["body"]["expires_at_micros"], expired["event"]["recorded_at_micros"],
        "the server records the expiry at the expiry time"
    );
    let body = hex::decode(created["event"]["body_hex"].as_str().expect("body_hex")).expect("hex");
    let sorted_labels = msgpack::str_map(&[("env", "production"), ("team", "payments")]);
    assert!(body.windows(sorted_labels.len()).any(|window| window == sorted_labels), "labels are stored in key order");

    let incarnation = document("27-secret-version-added-v2-incarnation.json");
    assert_eq!(incarnation["body"]["version"], 5, "content versions continue across incarnations");
    assert_eq!(incarnation["body"]["metadata"], serde_json::Value::Null, "the new incarnation sets no metadata");
}
