//! Errors of the HSM module.

use std::fmt;
use std::io;
use std::path::PathBuf;

use cryptoki::error::Error as Pkcs11Error;

use super::{HsmConfig, PIN_ENV, WRAPPED_DATA_KEY_LEN};

/// Role of a key in the token, named in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRole {
    /// The AES-256 key-encryption key.
    Kek,
    /// The private half of the Ed25519 root signing key.
    RootPrivateKey,
    /// The public half of the Ed25519 root signing key.
    RootPublicKey,
    /// The private half of the Ed25519 key of the certificate authority.
    CaPrivateKey,
    /// The public half of the Ed25519 key of the certificate authority.
    CaPublicKey,
}

/// Errors of [`Hsm`](super::Hsm). Those of [`Hsm::open`](super::Hsm::open)
/// name the setting or the token object involved, and none contains a PIN or
/// key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    #[error("invalid HSM setting {setting}: {reason}")]
    InvalidConfig { setting: &'static str, reason: &'static str },

    #[error("no HSM user PIN: set pin_file or the {PIN_ENV} environment variable")]
    PinMissing,

    #[error("failed to read the HSM PIN file {path}")]
    PinFileUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("invalid HSM PIN in {origin}: {reason}")]
    PinInvalid { origin: String, reason: &'static str },

    #[error("failed to load the PKCS#11 module {path}")]
    ModuleLoad {
        path: PathBuf,
        #[source]
        source: Pkcs11Error,
    },

    #[error("failed to initialize the PKCS#11 module {path}")]
    ModuleInitialize {
        path: PathBuf,
        #[source]
        source: Pkcs11Error,
    },

    #[error("failed to list the tokens of the PKCS#11 module {path}")]
    TokenList {
        path: PathBuf,
        #[source]
        source: Pkcs11Error,
    },

    #[error(
        "no initialized token labelled {label:?} in {module} (token labels found: {seen:?}); \
         correct token_label, or create the token (ops/softhsm-init for SoftHSM, \
         which reads its token directory from the file named by SOFTHSM2_CONF)"
    )]
    TokenNotFound { label: String, module: PathBuf, seen: Vec<String> },

    #[error("{count} tokens are labelled {label:?} in {module}; give each token a distinct label")]
    DuplicateToken { label: String, module: PathBuf, count: usize },

    #[error("failed to open a session on token {token:?}")]
    OpenSession {
        token: String,
        #[source]
        source: Pkcs11Error,
    },

    #[error("login to token {token:?} failed; check the user PIN")]
    Login {
        token: String,
        #[source]
        source: Pkcs11Error,
    },

    #[error(
        "no {role} labelled {label:?} on token {token:?}; provision the key, \
         or set create_missing_keys = true to generate it (development tokens only)"
    )]
    KeyMissing { role: KeyRole, label: String, token: String },

    #[error(
        "the root key pair {label:?} on token {token:?} has no {missing}; \
         provision the missing half, or delete the other half to start over"
    )]
    KeyPairIncomplete { missing: KeyRole, label: String, token: String },

    #[error(
        "{count} objects are labelled {label:?} as the {role} on token {token:?}; \
         delete or relabel all but one"
    )]
    DuplicateKey { role: KeyRole, label: String, token: String, count: usize },

    #[error("the {role} {label:?} on token {token:?} is not an {expected} key")]
    WrongKeyType { role: KeyRole, label: String, token: String, expected: &'static str },

    #[error("failed to find or read the {role} {label:?} on token {token:?}")]
    KeyLookup {
        role: KeyRole,
        label: String,
        token: String,
        #[source]
        source: Pkcs11Error,
    },

    #[error("failed to generate the {role} {label:?} on token {token:?}")]
    KeyGeneration {
        role: KeyRole,
        label: String,
        token: String,
        #[source]
        source: Pkcs11Error,
    },

    #[error("the root public key {label:?} is not a valid Ed25519 public key: {reason}")]
    PublicKeyInvalid { label: String, reason: String },

    #[error(
        "the root key pair {label:?} on token {token:?} does not match: a signature \
         by the private key does not verify under the public key"
    )]
    RootKeyMismatch { label: String, token: String },

    #[error("the KEK {label:?} on token {token:?} decrypted its own test data key to a different value")]
    KekCheckFailed { label: String, token: String },

    #[error("encrypting a data key under the KEK failed")]
    Encrypt(#[source] Pkcs11Error),

    #[error("decrypting a data key under the KEK failed")]
    Decrypt(#[source] Pkcs11Error),

    #[error("wrapped data key is {len} bytes; expected {WRAPPED_DATA_KEY_LEN}")]
    WrappedKeyLength { len: usize },

    #[error(
        "wrapped data key rejected: its GCM tag does not verify, so the blob was altered, \
         the associated data differs, or another KEK wrapped it"
    )]
    DataKeyRejected,

    #[error("signing with the root key failed")]
    Sign(#[source] Pkcs11Error),

    #[error("the HSM returned {len} bytes from {operation}; expected {expected}")]
    UnexpectedOutputLength { operation: &'static str, len: usize, expected: usize },

    #[error("the blocking task that runs an HSM operation did not complete")]
    Task(#[source] tokio::task::JoinError),
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyRole::Kek => "key-encryption key",
            KeyRole::RootPrivateKey => "root private key",
            KeyRole::RootPublicKey => "root public key",
            KeyRole::CaPrivateKey => "CA private key",
            KeyRole::CaPublicKey => "CA public key",
        })
    }
}

pub(super) fn key_missing(config: &HsmConfig, role: KeyRole, label: &str) -> HsmError {
    HsmError::KeyMissing { role, label: label.to_owned(), token: config.token_label.clone() }
}

pub(super) fn key_pair_incomplete(config: &HsmConfig, missing: KeyRole, label: &str) -> HsmError {
    HsmError::KeyPairIncomplete { missing, label: label.to_owned(), token: config.token_label.clone() }
}

pub(super) fn key_lookup_error(config: &HsmConfig, role: KeyRole, label: &str, source: Pkcs11Error) -> HsmError {
    HsmError::KeyLookup { role, label: label.to_owned(), token: config.token_label.clone(), source }
}

pub(super) fn key_generation_error(config: &HsmConfig, role: KeyRole, label: &str, source: Pkcs11Error) -> HsmError {
    HsmError::KeyGeneration { role, label: label.to_owned(), token: config.token_label.clone(), source }
}
