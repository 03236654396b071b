//! The in-process event signing key and its certification by the HSM root key.
//!
//! SoftHSM signs only a few thousand Ed25519 signatures per second per session, so
//! events are signed in process. Each server start generates a fresh key that lives
//! only in memory and publishes a `signing_key.certified` event signed by the HSM
//! root key, so a verifier needs only the root public key.

use ed25519_dalek::SigningKey;
use uuid::Uuid;
use watchword_events::body::{KIND_SIGNING_KEY_CERTIFIED, SigningKeyCertified, encode_body};
use watchword_events::verify::{key_id, sign};
use watchword_events::{Actor, Aggregate, Event, EventHash, Frame, ZERO_HASH};

use crate::hsm::{Hsm, HsmError};
use crate::stream::{EventStore, StreamError};

/// Principal recorded on events the server makes on its own behalf.
pub const SERVER_PRINCIPAL: &str = "watchword-server";

/// A failure to certify the signing key at start-up.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("HSM root key failed to sign the certification: {0}")]
    Hsm(#[from] HsmError),
    #[error("publishing the certification failed: {0}")]
    Stream(#[from] StreamError),
}

/// The key that signs this server's events.
#[derive(Debug)]
pub struct EventSigner {
    key: SigningKey,
    key_id: String,
}

impl EventSigner {
    /// Generates a key, has the HSM root key certify it, and publishes the certification.
    pub async fn certify(hsm: &Hsm, store: &EventStore, correlation_id: &str) -> Result<EventSigner, CertifyError> {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let public_key = key.verifying_key().to_bytes();
        let signer = EventSigner { key_id: key_id(&public_key), key };

        let body = SigningKeyCertified { algorithm: "ed25519".to_owned(), public_key };
        let aggregate = Aggregate::signing_key(&signer.key_id);
        let event = root_event(hsm, KIND_SIGNING_KEY_CERTIFIED, aggregate, 1, ZERO_HASH, correlation_id, &body);
        let frame = sign_with_root(hsm, &event).await?;

        let subject = event.aggregate.subject();
        store.publish(&subject, frame.encode(), &format!("certify:{}", signer.key_id), 0).await?;
        Ok(signer)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs an event whose `key_id` is this key's id.
    pub fn sign(&self, event: &Event) -> Frame {
        debug_assert_eq!(event.key_id, self.key_id);
        sign(event, &self.key)
    }
}

/// Returns an event that the server makes on its own behalf, for the HSM root key to sign.
pub fn root_event(
    hsm: &Hsm,
    kind: &str,
    aggregate: Aggregate,
    aggregate_version: u64,
    previous_hash: EventHash,
    correlation_id: &str,
    body: &impl serde::Serialize,
) -> Event {
    Event {
        id: Uuid::now_v7(),
        kind: kind.to_owned(),
        aggregate,
        aggregate_version,
        previous_hash,
        recorded_at_micros: now_micros(),
        actor: Actor { principal: SERVER_PRINCIPAL.to_owned(), authentication: "hsm".to_owned() },
        correlation_id: correlation_id.to_owned(),
        key_id: key_id(&hsm.root_public_key()),
        body: encode_body(body),
    }
}

/// Signs `event` with the HSM root key and returns the stored frame.
pub async fn sign_with_root(hsm: &Hsm, event: &Event) -> Result<Frame, HsmError> {
    let signed = event.to_signed_bytes();
    let signature = hsm.sign_with_root(&signed).await?;
    Ok(Frame { signed, signature })
}

/// Returns the current time in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}
