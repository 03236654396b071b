//! Tests of `watchword::hsm` against real SoftHSM2 tokens, one per test.

mod common;

use std::path::PathBuf;

use common::softhsm::{TOKEN_LABEL, TestToken, run_softhsm_init, softhsm_test};
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::Session;
use ed25519_dalek::{Signature, VerifyingKey};
use watchword::hsm::{GCM_IV_LEN, Hsm, HsmConfig, HsmError, KeyRole, PIN_ENV, WRAPPED_DATA_KEY_LEN};

const DATA_KEY: [u8; 32] = [0x42; 32];
const AAD: &[u8] = b"secret:db-password";

softhsm_test! {
    async fn data_key_round_trips(token) {
        let hsm = Hsm::open(&token.config()).unwrap();

        let wrapped = hsm.encrypt_data_key(&DATA_KEY, AAD).await.unwrap();
        assert_eq!(wrapped.len(), WRAPPED_DATA_KEY_LEN);
        assert!(!contains(&wrapped, &DATA_KEY), "the data key appears in clear in the blob");

        let unwrapped = hsm.decrypt_data_key(&wrapped, AAD).await.unwrap();
        assert_eq!(*unwrapped, DATA_KEY);
    }
}

softhsm_test! {
    async fn wrong_aad_is_rejected(token) {
        // One session, so the successful decryption below runs on the session
        // whose decryption failed.
        let config = HsmConfig { sessions: 1, ..token.config() };
        let hsm = Hsm::open(&config).unwrap();
        let wrapped = hsm.encrypt_data_key(&DATA_KEY, AAD).await.unwrap();

        let result = hsm.decrypt_data_key(&wrapped, b"secret:other").await;
        assert!(matches!(result, Err(HsmError::DataKeyRejected)), "{result:?}");
        let result = hsm.decrypt_data_key(&wrapped, b"").await;
        assert!(matches!(result, Err(HsmError::DataKeyRejected)), "{result:?}");

        let unwrapped = hsm.decrypt_data_key(&wrapped, AAD).await.unwrap();
        assert_eq!(*unwrapped, DATA_KEY);
    }
}

softhsm_test! {
    async fn tampered_blob_is_rejected(token) {
        let hsm = Hsm::open(&token.config()).unwrap();
        let wrapped = hsm.encrypt_data_key(&DATA_KEY, AAD).await.unwrap();

        // One flipped bit at a time: in the IV, at both ends of the
        // ciphertext, and in the tag.
        for index in [0, GCM_IV_LEN, GCM_IV_LEN + 31, WRAPPED_DATA_KEY_LEN - 1] {
            let mut tampered = wrapped.clone();
            tampered[index] ^= 0x01;
            let result = hsm.decrypt_data_key(&tampered, AAD).await;
            assert!(
                matches!(result, Err(HsmError::DataKeyRejected)),
                "byte {index}: {result:?}"
            );
        }
    }
}

softhsm_test! {
    async fn blob_of_other_kek_is_rejected(token) {
        let first = HsmConfig { kek_label: "kek-1".to_owned(), ..token.config() };
        let second = HsmConfig { kek_label: "kek-2".to_owned(), ..token.config() };
        let wrapped = Hsm::open(&first).unwrap().encrypt_data_key(&DATA_KEY, AAD).await.unwrap();

        let hsm = Hsm::open(&second).unwrap();
        let result = hsm.decrypt_data_key(&wrapped, AAD).await;
        assert!(matches!(result, Err(HsmError::DataKeyRejected)), "{result:?}");
    }
}

softhsm_test! {
    async fn wrong_length_blob_is_rejected(token) {
        let hsm = Hsm::open(&token.config()).unwrap();
        let wrapped = hsm.encrypt_data_key(&DATA_KEY, AAD).await.unwrap();

        let too_long = [wrapped.as_slice(), &[0]].concat();
        let cases: [&[u8]; 3] = [&[], &wrapped[..WRAPPED_DATA_KEY_LEN - 1], &too_long];
        for blob in cases {
            let result = hsm.decrypt_data_key(blob, AAD).await;
            assert!(
                matches!(result, Err(HsmError::WrappedKeyLength { len }) if len == blob.len()),
                "{} bytes: {result:?}",
                blob.len()
            );
        }
    }
}

softhsm_test! {
    async fn encryptions_of_same_key_differ(token) {
        let hsm = Hsm::open(&token.config()).unwrap();

        let first = hsm.encrypt_data_key(&DATA_KEY, AAD).await.unwrap();
        let second = hsm.encrypt_data_key(&DATA_KEY, AAD).await.unwrap();
        assert_ne!(first[..GCM_IV_LEN], second[..GCM_IV_LEN], "IV reused");
        assert_ne!(first[GCM_IV_LEN..], second[GCM_IV_LEN..], "same ciphertext");
    }
}

softhsm_test! {
    async fn concurrent_operations_share_pool(token) {
        let hsm = Hsm::open(&token.config()).unwrap();

        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..32u8 {
            let hsm = hsm.clone();
            tasks.spawn(async move {
                let data_key = [task; 32];
                let aad = [task];
                let wrapped = hsm.encrypt_data_key(&data_key, &aad).await.unwrap();
                let unwrapped = hsm.decrypt_data_key(&wrapped, &aad).await.unwrap();
                assert_eq!(*unwrapped, data_key);
                hsm.sign_with_root(&aad).await.unwrap();
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
    }
}

softhsm_test! {
    async fn root_signature_verifies(token) {
        let hsm = Hsm::open(&token.config()).unwrap();
        let message = b"event 1: secret created";

        let signature = Signature::from_bytes(&hsm.sign_with_root(message).await.unwrap());
        let public_key = VerifyingKey::from_bytes(&hsm.root_public_key()).unwrap();
        public_key.verify_strict(message, &signature).unwrap();
        assert!(public_key.verify_strict(b"event 2: secret created", &signature).is_err());
    }
}

softhsm_test! {
    async fn keys_persist_across_open(token) {
        let first = Hsm::open(&token.config()).unwrap();
        let wrapped = first.encrypt_data_key(&DATA_KEY, AAD).await.unwrap();

        // Opened while the first is still logged in, then used after the
        // first one has closed its sessions.
        let config = HsmConfig { create_missing_keys: false, ..token.config() };
        let second = Hsm::open(&config).unwrap();
        assert_eq!(second.root_public_key(), first.root_public_key());
        assert_eq!(second.kek_id(), first.kek_id());
        drop(first);
        let unwrapped = second.decrypt_data_key(&wrapped, AAD).await.unwrap();
        assert_eq!(*unwrapped, DATA_KEY);
        let public_key = second.root_public_key();
        drop(second);

        // Opened after every session has closed, which logs the token out.
        let third = Hsm::open(&config).unwrap();
        assert_eq!(third.root_public_key(), public_key);
        let unwrapped = third.decrypt_data_key(&wrapped, AAD).await.unwrap();
        assert_eq!(*unwrapped, DATA_KEY);
    }
}

softhsm_test! {
    async fn generated_keys_cannot_leave_token(token) {
        let config = token.config();
        let hsm = Hsm::open(&config).unwrap();
        let session = logged_in_session(&hsm, &config);

        let keys = [
            (ObjectClass::SECRET_KEY, config.kek_label.as_str()),
            (ObjectClass::PRIVATE_KEY, config.root_key_label.as_str()),
        ];
        for (class, label) in keys {
            let template = [
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ];
            let handles = session.find_objects(&template).unwrap();
            assert_eq!(handles.len(), 1, "{label}");

            let types = [
                AttributeType::Token,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Value,
            ];
            let attributes = session.get_attributes(handles[0], &types).unwrap();
            // `get_attributes` leaves out CKA_VALUE when the token refuses to
            // reveal it, so the expected list has no value.
            let expected = [
                Attribute::Token(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
            ];
            assert_eq!(attributes, expected, "{label}");
        }
    }
}

softhsm_test! {
    async fn kek_id_names_label(token) {
        let config = HsmConfig { kek_label: "kek 2".to_owned(), ..token.config() };
        let hsm = Hsm::open(&config).unwrap();
        assert_eq!(hsm.kek_id(), "pkcs11:object=kek%202;type=secret-key");
    }
}

softhsm_test! {
    async fn missing_kek_is_rejected(token) {
        let config = HsmConfig { create_missing_keys: false, ..token.config() };

        let error = Hsm::open(&config).unwrap_err();
        assert!(
            matches!(error, HsmError::KeyMissing { role: KeyRole::Kek, .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("\"watchword-kek\""), "{message}");
        assert!(message.contains(&format!("\"{TOKEN_LABEL}\"")), "{message}");
        assert!(message.contains("create_missing_keys"), "{message}");
    }
}

softhsm_test! {
    async fn missing_root_key_is_rejected(token) {
        Hsm::open(&token.config()).unwrap();
        let config = HsmConfig {
            create_missing_keys: false,
            root_key_label: "other-root".to_owned(),
            ..token.config()
        };

        let error = Hsm::open(&config).unwrap_err();
        assert!(
            matches!(error, HsmError::KeyMissing { role: KeyRole::RootPrivateKey, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("\"other-root\""), "{error}");
    }
}

softhsm_test! {
    async fn kek_label_of_key_pair_is_missing(token) {
        // The root key pair exists under "watchword-root", but no secret key does.
        Hsm::open(&token.config()).unwrap();
        let config = HsmConfig {
            create_missing_keys: false,
            kek_label: "watchword-root".to_owned(),
            ..token.config()
        };

        let error = Hsm::open(&config).unwrap_err();
        assert!(
            matches!(error, HsmError::KeyMissing { role: KeyRole::Kek, .. }),
            "{error:?}"
        );
    }
}

softhsm_test! {
    async fn duplicate_kek_label_is_rejected(token) {
        let config = token.config();
        let hsm = Hsm::open(&config).unwrap();
        let session = logged_in_session(&hsm, &config);
        let template = [
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Label(config.kek_label.as_bytes().to_vec()),
        ];
        session.generate_key(&Mechanism::AesKeyGen, &template).unwrap();

        let error = Hsm::open(&config).unwrap_err();
        assert!(
            matches!(error, HsmError::DuplicateKey { role: KeyRole::Kek, count: 2, .. }),
            "{error:?}"
        );
    }
}

softhsm_test! {
    async fn half_key_pair_is_rejected(token) {
        let config = token.config();
        let hsm = Hsm::open(&config).unwrap();
        let session = logged_in_session(&hsm, &config);
        let template = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(config.root_key_label.as_bytes().to_vec()),
        ];
        let public_key = session.find_objects(&template).unwrap()[0];
        session.destroy_object(public_key).unwrap();

        // Even a configuration that may generate keys must not generate a
        // second private key next to the one left.
        let error = Hsm::open(&config).unwrap_err();
        assert!(
            matches!(error, HsmError::KeyPairIncomplete { missing: KeyRole::RootPublicKey, .. }),
            "{error:?}"
        );
    }
}

softhsm_test! {
    async fn wrong_pin_is_login_error(token) {
        let pin_file = token.dir.join("wrong-pin");
        std::fs::write(&pin_file, "not-the-pin\n").unwrap();
        let config = HsmConfig { pin_file: Some(pin_file), ..token.config() };

        let error = Hsm::open(&config).unwrap_err();
        assert!(matches!(error, HsmError::Login { .. }), "{error:?}");
        assert!(!format!("{error:?}").contains("not-the-pin"), "PIN in error: {error:?}");
    }
}

softhsm_test! {
    async fn pin_read_from_environment(token) {
        let config = HsmConfig { pin_file: None, ..token.config() };
        let hsm = Hsm::open(&config).unwrap();
        hsm.sign_with_root(b"message").await.unwrap();
    }
}

softhsm_test! {
    async fn unknown_token_lists_labels(token) {
        let config = HsmConfig { token_label: "no-such-token".to_owned(), ..token.config() };

        let error = Hsm::open(&config).unwrap_err();
        let HsmError::TokenNotFound { label, seen, .. } = &error else {
            panic!("expected TokenNotFound, got {error:?}");
        };
        assert_eq!(label, "no-such-token");
        assert_eq!(seen, &[TOKEN_LABEL.to_owned()]);
    }
}

#[test]
fn unreadable_pin_file_names_path() {
    let path = PathBuf::from("/nonexistent/watchword/user-pin");
    let config = HsmConfig { pin_file: Some(path.clone()), ..HsmConfig::default() };

    let error = Hsm::open(&config).unwrap_err();
    assert!(matches!(&error, HsmError::PinFileUnreadable { path: reported, .. } if *reported == path), "{error:?}");
    assert!(error.to_string().contains("/nonexistent/watchword/user-pin"), "{error}");
}

#[test]
fn empty_pin_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user-pin");
    std::fs::write(&path, " \n").unwrap();
    let config = HsmConfig { pin_file: Some(path), ..HsmConfig::default() };

    let error = Hsm::open(&config).unwrap_err();
    assert!(matches!(error, HsmError::PinInvalid { .. }), "{error:?}");
}

#[test]
fn missing_pin_is_rejected() {
    if std::env::var_os(PIN_ENV).is_some() {
        eprintln!("skipped: {PIN_ENV} is set in this environment");
        return;
    }

    let error = Hsm::open(&HsmConfig::default()).unwrap_err();
    assert!(matches!(error, HsmError::PinMissing), "{error:?}");
}

#[test]
fn invalid_settings_are_rejected() {
    type Change = fn(&mut HsmConfig);
    let cases: [(&str, Change); 5] = [
        ("sessions", |config| config.sessions = 0),
        ("token_label", |config| config.token_label.clear()),
        ("token_label", |config| config.token_label = "t".repeat(33)),
        ("kek_label", |config| config.kek_label.clear()),
        ("root_key_label", |config| config.root_key_label.clear()),
    ];

    for (expected, change) in cases {
        let mut config = HsmConfig::default();
        change(&mut config);
        let error = Hsm::open(&config).unwrap_err();
        assert!(
            matches!(error, HsmError::InvalidConfig { setting, .. } if setting == expected),
            "{expected}: {error:?}"
        );
    }
}

#[test]
fn softhsm_init_is_idempotent() {
    let token = TestToken::create();
    let before = token_files(&token);

    let conf = run_softhsm_init(&token.dir, TOKEN_LABEL, &token.pin_file);
    assert_eq!(conf, token.conf);
    assert_eq!(token_files(&token), before);
}

#[test]
fn hsm_is_send_sync_clone() {
    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
    assert_shareable::<Hsm>();
}

/// Opens a read-write session on the token, bypassing `Hsm`. The caller's open
/// `Hsm` keeps the module initialized and the token logged in, so the session
/// can find and change private objects.
fn logged_in_session(_open_hsm: &Hsm, config: &HsmConfig) -> Session {
    let pkcs11 = Pkcs11::new(&config.module).unwrap();
    let slot = pkcs11.get_slots_with_initialized_token().unwrap()[0];
    pkcs11.open_rw_session(slot).unwrap()
}

/// Returns the path and contents of every file of a token, sorted by path.
fn token_files(token: &TestToken) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![token.dir.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let contents = std::fs::read(&path).unwrap();
                files.push((path, contents));
            }
        }
    }
    files.sort();
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}
