//! Envelope encryption of secret content with AES-256-GCM under per-version data keys.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use rand::RngCore;
use watchword_events::body::SealedContent;
use zeroize::Zeroizing;

/// Content that failed to decrypt: a wrong key, a wrong binding or tampering.
#[derive(Debug, thiserror::Error)]
#[error("content failed authentication: wrong data key, wrong secret binding, or tampered ciphertext")]
pub struct OpenError;

/// Returns a fresh random 256-bit data key.
pub fn new_data_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut());
    key
}

/// Encrypts content under a data key with a fresh random nonce.
pub fn seal(data_key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> SealedContent {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(data_key));
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    // Encryption fails only for inputs beyond GCM's 64 GiB limit, far above any
    // content size the API accepts.
    let ciphertext = cipher.encrypt(&nonce, Payload { msg: plaintext, aad }).expect("content within GCM limits");
    SealedContent { nonce: nonce.into(), ciphertext }
}

/// Decrypts content sealed by [`seal`] with the same data key and associated data.
pub fn open(data_key: &[u8; 32], sealed: &SealedContent, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(data_key));
    let nonce = Nonce::from_slice(&sealed.nonce);
    let plaintext = cipher.decrypt(nonce, Payload { msg: &sealed.ciphertext, aad }).map_err(|_| OpenError)?;
    Ok(Zeroizing::new(plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_returns_plaintext() {
        let key = new_data_key();
        let sealed = seal(&key, b"hunter2", b"aad");
        assert_eq!(open(&key, &sealed, b"aad").unwrap().as_slice(), b"hunter2");
    }

    #[test]
    fn other_binding_fails() {
        let key = new_data_key();
        let sealed = seal(&key, b"hunter2", b"secret a v1");
        assert!(open(&key, &sealed, b"secret b v1").is_err());
    }

    #[test]
    fn nonces_differ_per_seal() {
        let key = new_data_key();
        assert_ne!(seal(&key, b"x", b"").nonce, seal(&key, b"x", b"").nonce);
    }
}
