//! Event kinds and their bodies, and the associated data that binds ciphertexts to
//! their secret.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::event::{decode_exact, encode};

/// A new version of a secret's content; the first one creates the secret.
pub const KIND_SECRET_VERSION_ADDED: &str = "secret.version_added";

/// A new version of a secret's content, with its keyed digest, optional expiry,
/// rollback origin and metadata; the first one of an incarnation creates the secret.
/// Servers write this kind; [`KIND_SECRET_VERSION_ADDED`] stays readable.
pub const KIND_SECRET_VERSION_ADDED_V2: &str = "secret.version_added.v2";

/// A secret's metadata is replaced as a whole.
pub const KIND_SECRET_METADATA_SET: &str = "secret.metadata_set";

/// A secret is deleted softly: no one reads it, and it can be restored.
pub const KIND_SECRET_DELETED: &str = "secret.deleted";

/// A deleted secret is restored with its versions and metadata.
pub const KIND_SECRET_RESTORED: &str = "secret.restored";

/// Every version of a secret is destroyed: their wrapped data keys are erased.
pub const KIND_SECRET_DESTROYED: &str = "secret.destroyed";

/// One version of a secret is destroyed: its wrapped data key is erased.
pub const KIND_SECRET_VERSION_DESTROYED: &str = "secret.version_destroyed";

/// A version's expiry time passed; computes no longer receive it.
pub const KIND_SECRET_VERSION_EXPIRED: &str = "secret.version_expired";

/// The HSM root key certifies an in-process event signing key.
pub const KIND_SIGNING_KEY_CERTIFIED: &str = "signing_key.certified";

/// Body of [`KIND_SECRET_VERSION_ADDED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersionAdded {
    /// The secret's content version, 1 for the first.
    pub version: u64,
    pub content: SealedContent,
    pub data_key: DataKeyRef,
    /// Plaintext length in bytes.
    pub size: u64,
    /// File mode agents give the file, or `None` for the agent's default (0400).
    pub mode: Option<u32>,
}

/// Body of [`KIND_SECRET_VERSION_ADDED_V2`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersionAddedV2 {
    /// The secret's content version: one more than the last version of any incarnation.
    pub version: u64,
    pub content: SealedContent,
    pub data_key: DataKeyRef,
    /// Plaintext length in bytes.
    pub size: u64,
    /// HMAC-SHA256 of the plaintext under the deployment's digest key: equal contents
    /// have equal digests, and the digest alone does not reveal the content.
    #[serde(with = "serde_bytes")]
    pub digest: [u8; 32],
    /// Microseconds since the Unix epoch after which computes no longer receive this version.
    pub expires_at_micros: Option<i64>,
    /// The earlier version whose content this one repeats, for a rollback.
    pub rolled_back_from: Option<u64>,
    /// New metadata set with this version, or `None` to keep the current metadata.
    pub metadata: Option<SecretMetadata>,
}

/// Metadata an operator records about a secret besides its content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMetadata {
    /// Group whose owners manage the secret, or `None` for administrators only.
    pub owner_group: Option<String>,
    pub description: String,
    /// Labels, sorted by key.
    pub labels: std::collections::BTreeMap<String, String>,
    pub delivery: Delivery,
}

/// Delivery settings with which agents write a secret's file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// File name in the agent's directory, or `None` for the name derived from the
    /// secret name (see [`crate::names::file_name`]).
    pub file_name: Option<String>,
    /// File owner, as a user name or a numeric id, or `None` for the agent's user.
    pub owner: Option<String>,
    /// File group, as a group name or a numeric id, or `None` for the agent's group.
    pub group: Option<String>,
    /// File mode, or `None` for the agent's default (0400).
    pub mode: Option<u32>,
}

/// Body of [`KIND_SECRET_METADATA_SET`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataSet {
    pub metadata: SecretMetadata,
}

/// Body of [`KIND_SECRET_VERSION_DESTROYED`] and [`KIND_SECRET_VERSION_EXPIRED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRef {
    pub version: u64,
}

/// Content encrypted with AES-256-GCM under the version's own data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedContent {
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 12],
    /// Ciphertext followed by the 16-byte tag.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Where the wrapped data key of a version lives, and a commitment to it.
///
/// The wrapped key is kept outside the event log, in a store whose entries can be
/// erased; erasing it makes the version's content unrecoverable while this event,
/// and so the log, still verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataKeyRef {
    /// Identifier of the HSM key-encryption key that wrapped the data key.
    pub kek_id: String,
    /// Key of the wrapped data key in the data-key store.
    pub store_key: String,
    /// SHA-256 of the wrapped data key as stored.
    #[serde(with = "serde_bytes")]
    pub wrapped_sha256: [u8; 32],
}

/// Body of [`KIND_SIGNING_KEY_CERTIFIED`], signed by an HSM root key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyCertified {
    /// Always `ed25519` in this format version.
    pub algorithm: String,
    #[serde(with = "serde_bytes")]
    pub public_key: [u8; 32],
}

/// Encodes a body as the MessagePack array stored in the envelope.
pub fn encode_body<T: Serialize>(body: &T) -> Vec<u8> {
    encode(body)
}

/// Decodes a body, rejecting any encoding other than the canonical one.
pub fn decode_body<'a, T: Serialize + Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let body: T = decode_exact(bytes)?;
    if encode(&body) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(body)
}

/// Returns the AES-GCM associated data of a secret version's content.
///
/// It binds the ciphertext to the secret name and to the aggregate version of the
/// event that added it, which never repeats on a subject, so a ciphertext moved to
/// another secret or another version fails to decrypt.
pub fn content_aad(name: &str, aggregate_version: u64) -> Vec<u8> {
    binding(b"watchword.content.v1", name, aggregate_version)
}

/// Returns the AES-GCM associated data used when the HSM encrypts a version's data key.
pub fn data_key_aad(name: &str, aggregate_version: u64) -> Vec<u8> {
    binding(b"watchword.data-key.v1", name, aggregate_version)
}

fn binding(label: &[u8], name: &str, aggregate_version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(label.len() + 17 + name.len());
    aad.extend_from_slice(label);
    aad.push(0);
    aad.extend_from_slice(&(name.len() as u64).to_be_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad.extend_from_slice(&aggregate_version.to_be_bytes());
    aad
}

/// A client is registered; its id is the identity its certificate carries.
pub const KIND_CLIENT_CREATED: &str = "client.created";

/// A client may no longer read anything until it is enabled again.
pub const KIND_CLIENT_DISABLED: &str = "client.disabled";

/// A disabled client may read again what its groups grant.
pub const KIND_CLIENT_ENABLED: &str = "client.enabled";

/// A client is removed with its memberships; creating it again starts afresh.
pub const KIND_CLIENT_DELETED: &str = "client.deleted";

/// A group is created.
pub const KIND_GROUP_CREATED: &str = "group.created";

/// A group is removed with its memberships and grants.
pub const KIND_GROUP_DELETED: &str = "group.deleted";

/// A client joins a group.
pub const KIND_GROUP_MEMBER_ADDED: &str = "group.member_added";

/// A client leaves a group.
pub const KIND_GROUP_MEMBER_REMOVED: &str = "group.member_removed";

/// A group may read a secret.
pub const KIND_GROUP_GRANT_ADDED: &str = "group.grant_added";

/// A group may no longer read a secret.
pub const KIND_GROUP_GRANT_REMOVED: &str = "group.grant_removed";

/// Body of [`KIND_CLIENT_CREATED`] and [`KIND_GROUP_CREATED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// Group whose owners manage the new entity, or `None` for administrators only.
    pub owner_group: Option<String>,
    pub description: String,
}

/// Body of the kinds that carry nothing: disabled, enabled, deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Body of [`KIND_GROUP_MEMBER_ADDED`] and [`KIND_GROUP_MEMBER_REMOVED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub client: String,
}

/// Body of [`KIND_GROUP_GRANT_ADDED`] and [`KIND_GROUP_GRANT_REMOVED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub secret: String,
}

/// An operator issues a one-time enrolment token for a client; only its hash is recorded.
pub const KIND_CLIENT_ENROLMENT_TOKEN_ISSUED: &str = "client.enrolment_token_issued";

/// The certificate authority issues a certificate to a client, at enrolment or renewal.
pub const KIND_CLIENT_CERTIFICATE_ISSUED: &str = "client.certificate_issued";

/// Body of [`KIND_CLIENT_ENROLMENT_TOKEN_ISSUED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentTokenIssued {
    /// SHA-256 of the token; the token itself is shown once to the operator.
    #[serde(with = "serde_bytes")]
    pub token_sha256: [u8; 32],
    /// Microseconds since the Unix epoch after which the token is rejected.
    pub expires_at_micros: i64,
}

/// Body of [`KIND_CLIENT_CERTIFICATE_ISSUED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateIssued {
    /// Serial number of the certificate, in lowercase hex.
    pub serial: String,
    /// Microseconds since the Unix epoch at which the certificate expires.
    pub not_after_micros: i64,
    /// SHA-256 of the enrolment token that this issuance consumed, or `None` for a renewal.
    #[serde(with = "serde_bytes")]
    pub token_sha256: Option<[u8; 32]>,
}

/// The whole set of an operator's roles is replaced; an empty set removes them all.
pub const KIND_OPERATOR_ROLES_SET: &str = "operator.roles_set";

/// A signed operator token is issued; the token itself is not recorded.
pub const KIND_OPERATOR_TOKEN_ISSUED: &str = "operator.token_issued";

/// An operator token is revoked before it expires.
pub const KIND_OPERATOR_TOKEN_REVOKED: &str = "operator.token_revoked";

/// Body of [`KIND_OPERATOR_ROLES_SET`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolesSet {
    /// Roles such as `admin`, `auditor`, `owner:<group>`, `automation:<group>`, sorted.
    pub roles: Vec<String>,
}

/// Body of [`KIND_OPERATOR_TOKEN_ISSUED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIssued {
    pub token_id: String,
    pub expires_at_micros: i64,
}

/// Body of [`KIND_OPERATOR_TOKEN_REVOKED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoked {
    pub token_id: String,
}
