//! Signature verification of stored events.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::body::KIND_SIGNING_KEY_CERTIFIED;
use crate::checkpoint::KIND_CHECKPOINT;
use crate::error::VerifyError;
use crate::event::{Event, EventHash, Frame};
use crate::fold::StateView;

/// Returns the id of an Ed25519 public key: `ed25519:` and the first 16 bytes of
/// its SHA-256, in lowercase hex.
pub fn key_id(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    format!("ed25519:{}", hex::encode(&digest[..16]))
}

/// Kinds that only an HSM root key may sign, and that no other key may sign.
pub const ROOT_SIGNED_KINDS: [&str; 2] = [KIND_SIGNING_KEY_CERTIFIED, KIND_CHECKPOINT];

/// The root public keys a verifier trusts; all other keys must be certified by one.
#[derive(Debug, Clone, Default)]
pub struct RootKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

impl RootKeys {
    /// Trusts the given raw Ed25519 public keys.
    pub fn new(public_keys: &[[u8; 32]]) -> Result<RootKeys, ed25519_dalek::SignatureError> {
        let mut keys = BTreeMap::new();
        for public_key in public_keys {
            keys.insert(key_id(public_key), VerifyingKey::from_bytes(public_key)?);
        }
        Ok(RootKeys { keys })
    }

    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }
}

/// An event that passed verification, with its hash and stream sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub event: Event,
    pub hash: EventHash,
    pub sequence: u64,
}

/// Decodes and verifies one stored message.
///
/// Checks, in order: the frame and envelope decode canonically; the subject is the
/// one derived from the aggregate; a certification or a checkpoint is signed by a
/// trusted root key; any other event is signed by a signing key that the state
/// shows as certified.
/// Signatures are checked with `verify_strict`, which rejects small-order keys and
/// non-canonical signatures.
pub fn verify_message(
    view: &impl StateView,
    roots: &RootKeys,
    subject: &str,
    payload: &[u8],
    sequence: u64,
) -> Result<RecordedEvent, VerifyError> {
    let frame = Frame::decode(payload)?;
    let event = Event::from_signed_bytes(&frame.signed)?;

    let expected = event.aggregate.subject();
    if subject != expected {
        return Err(VerifyError::SubjectMismatch { expected, actual: subject.to_owned() });
    }

    let key = signer_key(view, roots, &event)?;
    let signature = Signature::from_bytes(&frame.signature);
    key.verify_strict(&frame.signed, &signature)
        .map_err(|_| VerifyError::BadSignature { key_id: event.key_id.clone() })?;

    Ok(RecordedEvent { hash: frame.hash(), event, sequence })
}

fn signer_key(view: &impl StateView, roots: &RootKeys, event: &Event) -> Result<VerifyingKey, VerifyError> {
    if ROOT_SIGNED_KINDS.contains(&event.kind.as_str()) {
        return roots
            .keys
            .get(&event.key_id)
            .copied()
            .ok_or_else(|| VerifyError::RootKeyRequired { kind: event.kind.clone(), key_id: event.key_id.clone() });
    }
    let unknown = || VerifyError::UnknownKey { key_id: event.key_id.clone() };
    let state = view.signing_key(&event.key_id)?.ok_or_else(unknown)?;
    VerifyingKey::from_bytes(&state.public_key).map_err(|_| unknown())
}

/// Signs an event with an in-process Ed25519 key and returns the stored frame.
pub fn sign(event: &Event, key: &ed25519_dalek::SigningKey) -> Frame {
    use ed25519_dalek::Signer;
    let signed = event.to_signed_bytes();
    let signature = key.sign(&signed).to_bytes();
    Frame { signed, signature }
}
