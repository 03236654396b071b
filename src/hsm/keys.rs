//! Finding, generating and checking the KEK and the Ed25519 key pairs (root and CA).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use ed25519_dalek::{Signature, VerifyingKey};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::RngCore;
use tracing::{info, warn};

use super::error::{key_generation_error, key_lookup_error, key_missing, key_pair_incomplete};
use super::{DATA_KEY_LEN, HsmConfig, HsmError, KEK_CHECK_AAD, KeyRole, decrypt, encrypt, sign};

/// Characters left as they are in the `object` attribute of a PKCS#11 URI: the
/// RFC 3986 unreserved set. Everything else is percent-encoded.
const PKCS11_URI_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// CKA_EC_PARAMS for Ed25519: the DER encoding of the object identifier
/// 1.3.101.112 (id-Ed25519, RFC 8410). SoftHSM 2.6.1 also accepts the DER
/// PrintableString "edwards25519", but the OID is the form that X.509 and
/// PKCS#8 use for the same curve.
const ED25519_OID_DER: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Message signed and verified by `Hsm::open` to prove that the root private
/// and public keys belong together.
const ROOT_KEY_CHECK_MESSAGE: &[u8] = b"watchword root key pair check";

pub(super) fn find_or_generate_kek(session: &Session, config: &HsmConfig) -> Result<ObjectHandle, HsmError> {
    let label = &config.kek_label;
    let kek = match find_key(session, config, KeyRole::Kek, label)? {
        Some(kek) => kek,
        None if config.create_missing_keys => generate_kek(session, config)?,
        None => return Err(key_missing(config, KeyRole::Kek, label)),
    };

    check_key_attributes(session, config, KeyRole::Kek, label, kek)?;
    Ok(kek)
}

fn generate_kek(session: &Session, config: &HsmConfig) -> Result<ObjectHandle, HsmError> {
    let label = &config.kek_label;
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(Ulong::from(32)),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(new_key_id()),
    ];
    let kek = session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|source| key_generation_error(config, KeyRole::Kek, label, source))?;

    info!(hsm.token = %config.token_label, key.label = %label, "generated the key-encryption key");
    Ok(kek)
}

/// Wraps and unwraps a data key to prove that the KEK works with AES-GCM, so
/// that a key without CKA_ENCRYPT or a token without CKM_AES_GCM fails here
/// rather than on the first request.
pub(super) fn check_kek(session: &Session, kek: ObjectHandle, config: &HsmConfig) -> Result<(), HsmError> {
    let data_key = [0x5a; DATA_KEY_LEN];
    let wrapped = encrypt(session, kek, &data_key, KEK_CHECK_AAD)?;
    let unwrapped = decrypt(session, kek, &wrapped, KEK_CHECK_AAD)?;

    if *unwrapped != data_key {
        return Err(HsmError::KekCheckFailed { label: config.kek_label.clone(), token: config.token_label.clone() });
    }
    Ok(())
}

/// An Ed25519 key pair in the token: its label and the roles of its halves.
#[derive(Debug, Clone, Copy)]
pub(super) struct SigningPair<'a> {
    pub(super) label: &'a str,
    pub(super) private: KeyRole,
    pub(super) public: KeyRole,
}

impl SigningPair<'_> {
    pub(super) fn root(config: &HsmConfig) -> SigningPair<'_> {
        SigningPair { label: &config.root_key_label, private: KeyRole::RootPrivateKey, public: KeyRole::RootPublicKey }
    }
}

/// Finds an Ed25519 key pair, or generates it when both halves are missing and
/// generation is allowed, and returns the private key and the raw public key.
pub(super) fn find_or_generate_signing_pair(
    session: &Session,
    config: &HsmConfig,
    pair: SigningPair<'_>,
) -> Result<(ObjectHandle, [u8; 32]), HsmError> {
    let label = pair.label;
    let private_key = find_key(session, config, pair.private, label)?;
    let public_key = find_key(session, config, pair.public, label)?;

    let (private_key, public_key) = match (private_key, public_key) {
        (Some(private_key), Some(public_key)) => (private_key, public_key),
        (None, None) if config.create_missing_keys => generate_signing_pair(session, config, pair)?,
        (None, None) => return Err(key_missing(config, pair.private, label)),
        (None, Some(_)) => return Err(key_pair_incomplete(config, pair.private, label)),
        (Some(_), None) => return Err(key_pair_incomplete(config, pair.public, label)),
    };

    check_key_attributes(session, config, pair.private, label, private_key)?;
    check_key_attributes(session, config, pair.public, label, public_key)?;
    let public_key = read_public_key(session, config, pair, public_key)?;
    Ok((private_key, public_key))
}

fn generate_signing_pair(
    session: &Session,
    config: &HsmConfig,
    pair: SigningPair<'_>,
) -> Result<(ObjectHandle, ObjectHandle), HsmError> {
    let label = pair.label;
    // Both halves get the same CKA_ID, the convention by which PKCS#11 tools
    // pair a private key with its public key.
    let id = new_key_id();
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(ED25519_OID_DER.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];

    let (public_key, private_key) = session
        .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public_template, &private_template)
        .map_err(|source| key_generation_error(config, pair.private, label, source))?;

    info!(hsm.token = %config.token_label, key.label = %label, "generated an Ed25519 key pair");
    Ok((private_key, public_key))
}

/// Signs a fixed message with the private key and verifies it under the public
/// key, because a pair whose halves do not match would sign what no one can verify.
pub(super) fn check_signing_pair(
    session: &Session,
    private_key: ObjectHandle,
    public_key: &[u8; 32],
    config: &HsmConfig,
    pair: SigningPair<'_>,
) -> Result<(), HsmError> {
    let verifying_key = VerifyingKey::from_bytes(public_key).map_err(|_| HsmError::PublicKeyInvalid {
        label: pair.label.to_owned(),
        reason: "its 32 bytes do not encode a point of the curve".to_owned(),
    })?;
    let signature = sign(session, private_key, ROOT_KEY_CHECK_MESSAGE)?;

    verifying_key
        .verify_strict(ROOT_KEY_CHECK_MESSAGE, &Signature::from_bytes(&signature))
        .map_err(|_| HsmError::RootKeyMismatch { label: pair.label.to_owned(), token: config.token_label.clone() })
}

/// Finds the one key with `label` in the object class of `role`.
fn find_key(
    session: &Session,
    config: &HsmConfig,
    role: KeyRole,
    label: &str,
) -> Result<Option<ObjectHandle>, HsmError> {
    let class = match role {
        KeyRole::Kek => ObjectClass::SECRET_KEY,
        KeyRole::RootPrivateKey | KeyRole::CaPrivateKey => ObjectClass::PRIVATE_KEY,
        KeyRole::RootPublicKey | KeyRole::CaPublicKey => ObjectClass::PUBLIC_KEY,
    };
    let template = [Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())];
    let handles = session.find_objects(&template).map_err(|source| key_lookup_error(config, role, label, source))?;

    match handles.as_slice() {
        [] => Ok(None),
        [handle] => Ok(Some(*handle)),
        _ => Err(HsmError::DuplicateKey {
            role,
            label: label.to_owned(),
            token: config.token_label.clone(),
            count: handles.len(),
        }),
    }
}

/// Checks the key type of a key, and warns when a secret or private key could
/// leave the token.
fn check_key_attributes(
    session: &Session,
    config: &HsmConfig,
    role: KeyRole,
    label: &str,
    key: ObjectHandle,
) -> Result<(), HsmError> {
    let (expected_type, expected_name) = match role {
        KeyRole::Kek => (KeyType::AES, "AES"),
        KeyRole::RootPrivateKey | KeyRole::RootPublicKey | KeyRole::CaPrivateKey | KeyRole::CaPublicKey => {
            (KeyType::EC_EDWARDS, "Ed25519")
        }
    };
    let types = [AttributeType::KeyType, AttributeType::Sensitive, AttributeType::Extractable];
    // Public keys have neither CKA_SENSITIVE nor CKA_EXTRACTABLE, and
    // `get_attributes` leaves out attributes that an object does not have.
    let attributes =
        session.get_attributes(key, &types).map_err(|source| key_lookup_error(config, role, label, source))?;

    let mut key_type = None;
    let mut can_leave_token = false;
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(value) => key_type = Some(value),
            Attribute::Sensitive(false) | Attribute::Extractable(true) => can_leave_token = true,
            _ => {}
        }
    }

    if key_type != Some(expected_type) {
        return Err(HsmError::WrongKeyType {
            role,
            label: label.to_owned(),
            token: config.token_label.clone(),
            expected: expected_name,
        });
    }
    if can_leave_token {
        warn!(
            hsm.token = %config.token_label,
            key.label = %label,
            key.role = %role,
            "the key is extractable or not sensitive, so its value can leave the HSM; \
             replace it with a key generated with CKA_SENSITIVE true and CKA_EXTRACTABLE false"
        );
    }
    Ok(())
}

fn read_public_key(
    session: &Session,
    config: &HsmConfig,
    pair: SigningPair<'_>,
    public_key: ObjectHandle,
) -> Result<[u8; 32], HsmError> {
    let label = pair.label;
    let attributes = session
        .get_attributes(public_key, &[AttributeType::EcPoint])
        .map_err(|source| key_lookup_error(config, pair.public, label, source))?;
    let ec_point = attributes
        .into_iter()
        .find_map(|attribute| match attribute {
            Attribute::EcPoint(value) => Some(value),
            _ => None,
        })
        .unwrap_or_default();

    decode_ed25519_point(&ec_point).ok_or_else(|| HsmError::PublicKeyInvalid {
        label: label.to_owned(),
        reason: format!("CKA_EC_POINT is {} bytes; expected 32, or 34 as a DER OCTET STRING", ec_point.len()),
    })
}

/// Extracts the raw Ed25519 point from a CKA_EC_POINT value. SoftHSM 2.6.1
/// wraps the point in a DER OCTET STRING. The bare 32 bytes are accepted too,
/// for modules that leave the wrapper out.
fn decode_ed25519_point(ec_point: &[u8]) -> Option<[u8; 32]> {
    let raw = match ec_point {
        [0x04, 0x20, raw @ ..] if raw.len() == 32 => raw,
        raw => raw,
    };
    raw.try_into().ok()
}

pub(super) fn kek_id(label: &str) -> String {
    let label = utf8_percent_encode(label, PKCS11_URI_UNRESERVED);
    format!("pkcs11:object={label};type=secret-key")
}

/// Returns a random 16-byte CKA_ID for a generated key.
fn new_key_id() -> Vec<u8> {
    let mut id = vec![0; 16];
    rand::thread_rng().fill_bytes(&mut id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_point_from_der_octet_string() {
        let mut der = vec![0x04, 0x20];
        der.extend_from_slice(&[9; 32]);
        assert_eq!(decode_ed25519_point(&der), Some([9; 32]));
    }

    #[test]
    fn ed25519_point_from_raw_bytes() {
        assert_eq!(decode_ed25519_point(&[9; 32]), Some([9; 32]));
    }

    #[test]
    fn ed25519_point_of_wrong_length_is_rejected() {
        assert_eq!(decode_ed25519_point(&[]), None);
        assert_eq!(decode_ed25519_point(&[0x04, 0x20, 1, 2, 3]), None);
        assert_eq!(decode_ed25519_point(&[9; 57]), None);
    }

    #[test]
    fn kek_id_percent_encodes_label() {
        assert_eq!(kek_id("watchword-kek"), "pkcs11:object=watchword-kek;type=secret-key");
        assert_eq!(kek_id("kek;2 a"), "pkcs11:object=kek%3B2%20a;type=secret-key");
    }
}
