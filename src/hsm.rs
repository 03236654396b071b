//! Access to the hardware security module (HSM) through PKCS#11.
//!
//! Two keys live in the HSM token, and their secret parts never leave it:
//!
//! - the key-encryption key (KEK), an AES-256 secret key that wraps the 32-byte
//!   data keys under which secret values are encrypted
//!   ([`Hsm::encrypt_data_key`], [`Hsm::decrypt_data_key`]);
//! - the root signing key, an Ed25519 key pair ([`Hsm::sign_with_root`],
//!   [`Hsm::root_public_key`]).
//!
//! [`Hsm::open`] loads the PKCS#11 module, finds the token by its label and logs
//! in as the user. It then finds the keys, or generates them on a development
//! token when [`HsmConfig::create_missing_keys`] is set, checks that both keys
//! work, and opens a pool of sessions. PKCS#11 calls block and a session must not be used
//! by two threads at once, so every operation borrows one session from the pool
//! and runs on tokio's blocking thread pool.
//!
//! ```no_run
//! # async fn example() -> Result<(), watchword::hsm::HsmError> {
//! use watchword::hsm::{Hsm, HsmConfig};
//!
//! let config = HsmConfig {
//!     pin_file: Some("/etc/watchword/hsm-pin".into()),
//!     ..HsmConfig::default()
//! };
//! // `open` blocks: call it at start-up or inside `spawn_blocking`.
//! let hsm = Hsm::open(&config)?;
//!
//! let wrapped = hsm.encrypt_data_key(&[7; 32], b"secret:db-password").await?;
//! let data_key = hsm.decrypt_data_key(&wrapped, b"secret:db-password").await?;
//! assert_eq!(*data_key, [7; 32]);
//! # Ok(())
//! # }
//! ```
//!
//! For development and tests, `ops/softhsm-init` creates a SoftHSM2 token.

mod error;
mod keys;
mod pool;
mod token;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use cryptoki::context::Function;
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use rand::RngCore;
use tracing::info;
use zeroize::Zeroizing;

pub use error::{HsmError, KeyRole};
use pool::SessionPool;

/// Environment variable that contains the user PIN when [`HsmConfig::pin_file`] is not set.
pub const PIN_ENV: &str = "WATCHWORD_HSM_PIN";

/// Length of a plaintext data key in bytes.
pub const DATA_KEY_LEN: usize = 32;

/// Length of the AES-GCM initialization vector at the start of a wrapped data key.
pub const GCM_IV_LEN: usize = 12;

/// Length of the AES-GCM authentication tag at the end of a wrapped data key.
pub const GCM_TAG_LEN: usize = 16;

/// Length of a wrapped data key: IV, ciphertext, then tag.
pub const WRAPPED_DATA_KEY_LEN: usize = GCM_IV_LEN + DATA_KEY_LEN + GCM_TAG_LEN;

/// PKCS#11 3.0 return value for an AEAD tag that does not verify.
const CKR_AEAD_DECRYPT_FAILED: u64 = 0x42;

/// Associated data of the data key that [`Hsm::open`] wraps and unwraps to prove
/// that the KEK can encrypt and decrypt with AES-GCM.
const KEK_CHECK_AAD: &[u8] = b"watchword key-encryption key check";

/// Settings of the HSM connection, read from the server's configuration file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (shared library) to load. Default:
    /// `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Label of the token that contains the keys. Slots are found by token label
    /// because their numbers can change: SoftHSM assigns random ones.
    /// Default: `watchword`.
    pub token_label: String,
    /// File that contains the user PIN, with surrounding whitespace ignored.
    /// When unset, the PIN comes from the [`PIN_ENV`] environment variable.
    pub pin_file: Option<PathBuf>,
    /// CKA_LABEL of the AES-256 key-encryption key. Default: `watchword-kek`.
    pub kek_label: String,
    /// CKA_LABEL shared by the private and the public half of the Ed25519
    /// root key. Default: `watchword-root`.
    pub root_key_label: String,
    /// CKA_LABEL of the Ed25519 key pair of the certificate authority that issues
    /// client certificates at enrolment, or none to run without one. Default: none.
    pub ca_key_label: Option<String>,
    /// Whether [`Hsm::open`] generates a missing key instead of failing. Set it
    /// for development tokens only: in production a missing key means that the
    /// server points at the wrong token or label. Default: `false`.
    pub create_missing_keys: bool,
    /// Number of PKCS#11 sessions in the pool, which is the maximum number of
    /// HSM operations that run at the same time. Default: 4.
    pub sessions: usize,
}

/// Handle to the HSM token: a logged-in pool of sessions and the handles of the
/// KEK and the root key. Clones share the pool.
#[derive(Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SessionPool,
    kek: ObjectHandle,
    kek_id: String,
    root_private_key: ObjectHandle,
    root_public_key: [u8; 32],
    /// Private key and raw public key of the certificate authority, when configured.
    ca: Option<(ObjectHandle, [u8; 32])>,
    token_label: String,
}

impl Default for HsmConfig {
    fn default() -> Self {
        HsmConfig {
            module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            token_label: "watchword".to_owned(),
            pin_file: None,
            kek_label: "watchword-kek".to_owned(),
            root_key_label: "watchword-root".to_owned(),
            ca_key_label: None,
            create_missing_keys: false,
            sessions: 4,
        }
    }
}

impl HsmConfig {
    /// Checks the settings that `Hsm::open` cannot use as they are.
    fn validate(&self) -> Result<(), HsmError> {
        let invalid = |setting, reason| Err(HsmError::InvalidConfig { setting, reason });
        if self.sessions == 0 {
            return invalid("sessions", "it is 0; set it to 1 or more");
        }
        // PKCS#11 token labels are 32 bytes, so a longer one never matches.
        if self.token_label.is_empty() || self.token_label.len() > 32 {
            return invalid("token_label", "it must be 1 to 32 bytes long");
        }
        if self.kek_label.is_empty() {
            return invalid("kek_label", "it is empty");
        }
        if self.root_key_label.is_empty() {
            return invalid("root_key_label", "it is empty");
        }
        Ok(())
    }
}

impl Hsm {
    /// Loads the PKCS#11 module, finds the token, logs in, finds (or, when
    /// allowed, generates) the keys, checks them and opens the session pool.
    ///
    /// This call blocks. The module stays initialized for the life of the
    /// process, so opening a second `Hsm` in the same process reuses it.
    pub fn open(config: &HsmConfig) -> Result<Hsm, HsmError> {
        config.validate()?;
        let pin = token::read_pin(config)?;

        let pkcs11 = token::load_module(&config.module)?;
        let slot = token::find_token(&pkcs11, config)?;
        let session = token::open_session(&pkcs11, slot, config)?;
        token::login(&session, &pin, config)?;
        drop(pin);

        let kek = keys::find_or_generate_kek(&session, config)?;
        keys::check_kek(&session, kek, config)?;
        let root = keys::SigningPair::root(config);
        let (root_private_key, root_public_key) = keys::find_or_generate_signing_pair(&session, config, root)?;
        keys::check_signing_pair(&session, root_private_key, &root_public_key, config, root)?;
        let ca = match &config.ca_key_label {
            Some(label) => {
                let pair = keys::SigningPair { label, private: KeyRole::CaPrivateKey, public: KeyRole::CaPublicKey };
                let (private_key, public_key) = keys::find_or_generate_signing_pair(&session, config, pair)?;
                keys::check_signing_pair(&session, private_key, &public_key, config, pair)?;
                Some((private_key, public_key))
            }
            None => None,
        };

        let pool = SessionPool::open(&pkcs11, slot, session, config)?;
        let hsm = Hsm {
            inner: Arc::new(Inner {
                pool,
                kek,
                kek_id: keys::kek_id(&config.kek_label),
                root_private_key,
                root_public_key,
                ca,
                token_label: config.token_label.clone(),
            }),
        };
        info!(
            hsm.module = %config.module.display(),
            hsm.token = %config.token_label,
            hsm.sessions = config.sessions,
            kek.id = %hsm.kek_id(),
            root.public_key = %hex::encode(root_public_key),
            "HSM ready"
        );
        Ok(hsm)
    }

    /// Encrypts a 32-byte data key under the KEK with AES-GCM, with a fresh random
    /// 12-byte IV on every call and `aad` as the associated data.
    ///
    /// Returns `iv || ciphertext || tag` ([`WRAPPED_DATA_KEY_LEN`] bytes). The same
    /// `aad` must be given to [`Hsm::decrypt_data_key`].
    ///
    /// NOTE: with random 96-bit IVs, one KEK should wrap at most 2^32 data keys,
    /// the bound that NIST SP 800-38D sets for random IVs. Rotate the KEK
    /// before that.
    pub async fn encrypt_data_key(&self, data_key: &[u8; DATA_KEY_LEN], aad: &[u8]) -> Result<Vec<u8>, HsmError> {
        let data_key = Zeroizing::new(*data_key);
        let aad = aad.to_vec();
        let wrapped = self.run(move |session, inner| encrypt(session, inner.kek, &data_key, &aad)).await?;
        Ok(wrapped.to_vec())
    }

    /// Decrypts a data key wrapped by [`Hsm::encrypt_data_key`] with the same `aad`.
    ///
    /// A wrong `aad`, an altered blob or a blob wrapped by another KEK returns
    /// [`HsmError::DataKeyRejected`], and a blob of the wrong length returns
    /// [`HsmError::WrappedKeyLength`]. The returned key is zeroized on drop.
    pub async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, HsmError> {
        let wrapped: [u8; WRAPPED_DATA_KEY_LEN] =
            wrapped.try_into().map_err(|_| HsmError::WrappedKeyLength { len: wrapped.len() })?;
        let aad = aad.to_vec();
        self.run(move |session, inner| decrypt(session, inner.kek, &wrapped, &aad)).await
    }

    /// Returns the raw Ed25519 public key of the certificate authority, if configured.
    pub fn ca_public_key(&self) -> Option<[u8; 32]> {
        self.inner.ca.map(|(_, public_key)| public_key)
    }

    /// Signs `message` with the CA private key (Ed25519), blocking the calling thread;
    /// call it from a blocking context such as `spawn_blocking`.
    pub fn sign_with_ca_blocking(&self, message: &[u8]) -> Result<[u8; 64], HsmError> {
        let (private_key, _) = self
            .inner
            .ca
            .ok_or(HsmError::InvalidConfig { setting: "ca_key_label", reason: "no CA key is configured" })?;
        let session = self.inner.pool.take_blocking();
        sign(&session, private_key, message)
    }

    /// Signs `message` with the root private key (Ed25519, CKM_EDDSA).
    pub async fn sign_with_root(&self, message: &[u8]) -> Result<[u8; 64], HsmError> {
        let message = message.to_vec();
        self.run(move |session, inner| sign(session, inner.root_private_key, &message)).await
    }

    /// Returns the raw 32-byte Ed25519 public key of the root key.
    pub fn root_public_key(&self) -> [u8; 32] {
        self.inner.root_public_key
    }

    /// Returns the identifier of the KEK that events record next to a wrapped
    /// data key: the PKCS#11 URI (RFC 7512) `pkcs11:object=<kek_label>;type=secret-key`,
    /// with the label percent-encoded.
    ///
    /// The identifier names the key by its label only, so it stays the same
    /// when the key moves to another token with the same label. Rotating the
    /// KEK therefore means generating it under a new label.
    pub fn kek_id(&self) -> &str {
        &self.inner.kek_id
    }

    /// Runs `operation` with a pooled session on tokio's blocking thread pool.
    async fn run<T, F>(&self, operation: F) -> Result<T, HsmError>
    where
        F: FnOnce(&Session, &Inner) -> Result<T, HsmError> + Send + 'static,
        T: Send + 'static,
    {
        // Waiting for a permit before spawning keeps queued operations off the
        // blocking threads.
        let permit = self.inner.pool.reserve().await;
        let inner = Arc::clone(&self.inner);

        tokio::task::spawn_blocking(move || {
            let session = inner.pool.take(permit);
            operation(&session, &inner)
        })
        .await
        .map_err(HsmError::Task)?
    }
}

impl fmt::Debug for Hsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hsm")
            .field("token_label", &self.inner.token_label)
            .field("kek_id", &self.inner.kek_id)
            .field("root_public_key", &hex::encode(self.inner.root_public_key))
            .finish_non_exhaustive()
    }
}

fn encrypt(
    session: &Session,
    kek: ObjectHandle,
    data_key: &[u8; DATA_KEY_LEN],
    aad: &[u8],
) -> Result<[u8; WRAPPED_DATA_KEY_LEN], HsmError> {
    // A repeated IV under one key breaks both the secrecy and the integrity of
    // GCM, so every call draws a fresh random IV.
    let mut iv = [0; GCM_IV_LEN];
    rand::thread_rng().fill_bytes(&mut iv);
    let mut wrapped = [0; WRAPPED_DATA_KEY_LEN];
    wrapped[..GCM_IV_LEN].copy_from_slice(&iv);

    let mechanism = gcm_mechanism(&mut iv, aad).map_err(HsmError::Encrypt)?;
    let ciphertext = session.encrypt(&mechanism, kek, data_key).map_err(HsmError::Encrypt)?;
    if ciphertext.len() != DATA_KEY_LEN + GCM_TAG_LEN {
        return Err(HsmError::UnexpectedOutputLength {
            operation: "AES-GCM encryption",
            len: ciphertext.len(),
            expected: DATA_KEY_LEN + GCM_TAG_LEN,
        });
    }

    wrapped[GCM_IV_LEN..].copy_from_slice(&ciphertext);
    Ok(wrapped)
}

fn decrypt(
    session: &Session,
    kek: ObjectHandle,
    wrapped: &[u8; WRAPPED_DATA_KEY_LEN],
    aad: &[u8],
) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, HsmError> {
    let plaintext = match decrypt_unchecked(session, kek, wrapped, aad) {
        Ok(plaintext) => plaintext,
        Err(error) => return Err(classify_decrypt_error(session, kek, error)),
    };
    if plaintext.len() != DATA_KEY_LEN {
        return Err(HsmError::UnexpectedOutputLength {
            operation: "AES-GCM decryption",
            len: plaintext.len(),
            expected: DATA_KEY_LEN,
        });
    }

    let mut data_key = Zeroizing::new([0; DATA_KEY_LEN]);
    data_key.copy_from_slice(&plaintext);
    Ok(data_key)
}

/// Decrypts `iv || ciphertext || tag` and returns the plaintext of any length.
fn decrypt_unchecked(
    session: &Session,
    kek: ObjectHandle,
    wrapped: &[u8; WRAPPED_DATA_KEY_LEN],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Pkcs11Error> {
    let (iv, ciphertext) = wrapped.split_first_chunk::<GCM_IV_LEN>().expect("the array is longer than the IV");
    let mut iv = *iv;

    let mechanism = gcm_mechanism(&mut iv, aad)?;
    let plaintext = session.decrypt(&mechanism, kek, ciphertext)?;
    Ok(Zeroizing::new(plaintext))
}

/// Tells a wrapped key whose GCM tag does not verify apart from a failing HSM.
///
/// Tokens report a tag that does not verify as CKR_ENCRYPTED_DATA_INVALID or
/// as CKR_AEAD_DECRYPT_FAILED, a PKCS#11 3.0 code for which cryptoki 0.12 has
/// no variant. SoftHSM 2.6.1 reports CKR_GENERAL_ERROR from C_Decrypt, the
/// same code as for an internal failure. After that code, a round trip of a
/// test key on the same session decides: when it succeeds, the HSM works and
/// the tag was at fault.
fn classify_decrypt_error(session: &Session, kek: ObjectHandle, error: Pkcs11Error) -> HsmError {
    match error {
        Pkcs11Error::Pkcs11(
            RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::UnknownErrorCode(CKR_AEAD_DECRYPT_FAILED),
            _,
        ) => HsmError::DataKeyRejected,
        Pkcs11Error::Pkcs11(RvError::GeneralError, Function::Decrypt) if kek_round_trips(session, kek) => {
            HsmError::DataKeyRejected
        }
        error => HsmError::Decrypt(error),
    }
}

/// Returns whether the KEK wraps and unwraps a test data key on `session`.
fn kek_round_trips(session: &Session, kek: ObjectHandle) -> bool {
    let data_key = [0x5a; DATA_KEY_LEN];
    let Ok(wrapped) = encrypt(session, kek, &data_key, KEK_CHECK_AAD) else {
        return false;
    };
    // `decrypt_unchecked` rather than `decrypt`, which calls this function
    // when it fails.
    match decrypt_unchecked(session, kek, &wrapped, KEK_CHECK_AAD) {
        Ok(unwrapped) => *unwrapped == data_key,
        Err(_) => false,
    }
}

fn gcm_mechanism<'a>(iv: &'a mut [u8; GCM_IV_LEN], aad: &'a [u8]) -> Result<Mechanism<'a>, Pkcs11Error> {
    let tag_bits = Ulong::try_from(GCM_TAG_LEN * 8)?;
    Ok(Mechanism::AesGcm(GcmParams::new(iv, aad, tag_bits)?))
}

fn sign(session: &Session, key: ObjectHandle, message: &[u8]) -> Result<[u8; 64], HsmError> {
    let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Ed25519));
    let signature = session.sign(&mechanism, key, message).map_err(HsmError::Sign)?;

    signature.as_slice().try_into().map_err(|_| HsmError::UnexpectedOutputLength {
        operation: "Ed25519 signing",
        len: signature.len(),
        expected: 64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_apply_to_missing_fields() {
        let config: HsmConfig = toml::from_str("token_label = \"prod\"").unwrap();
        assert_eq!(config.token_label, "prod");
        assert_eq!(config.kek_label, "watchword-kek");
        assert_eq!(config.sessions, 4);
        assert!(!config.create_missing_keys);
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let result = toml::from_str::<HsmConfig>("pin = \"1234\"");
        assert!(result.is_err());
    }
}
