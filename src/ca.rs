//! The certificate authority for enrolled clients, with its Ed25519 key in the HSM.
//!
//! `watchword ca init` has the HSM key sign a self-signed CA certificate; the
//! server then issues short-lived client certificates from enrolment CSRs. Only
//! the CSR's public key is used: the subject comes from the registered client, so
//! a CSR cannot ask for another identity.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
    SigningKey,
};
use time::{Duration, OffsetDateTime};

use crate::hsm::Hsm;

/// A failure to create or use the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("no CA key: set hsm.ca_key_label in the server configuration and run `watchword ca init`")]
    NoKey,
    #[error("cannot read the CA certificate {path}: {message}")]
    Certificate { path: String, message: String },
    #[error("the CA certificate {path} was not issued for the HSM key {label:?}; run `watchword ca init` again")]
    KeyMismatch { path: String, label: String },
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    #[error("signing the certificate failed: {0}")]
    Sign(rcgen::Error),
}

/// The CA's signing key: Ed25519 in the HSM.
#[derive(Debug, Clone)]
pub struct HsmCaKey {
    hsm: Hsm,
    public_key: [u8; 32],
}

impl HsmCaKey {
    pub fn new(hsm: &Hsm) -> Result<HsmCaKey, CaError> {
        let public_key = hsm.ca_public_key().ok_or(CaError::NoKey)?;
        Ok(HsmCaKey { hsm: hsm.clone(), public_key })
    }
}

impl PublicKeyData for HsmCaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl SigningKey for HsmCaKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self.hsm.sign_with_ca_blocking(message) {
            Ok(signature) => Ok(signature.to_vec()),
            Err(error) => {
                tracing::warn!(%error, "the HSM failed to sign with the CA key");
                Err(rcgen::Error::RemoteKeyError)
            }
        }
    }
}

/// Creates the self-signed CA certificate of the HSM key, valid for `days`.
/// Blocks on the HSM; call it from a blocking context.
pub fn self_signed(key: &HsmCaKey, common_name: &str, days: i64) -> Result<String, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(days);
    params.serial_number = Some(random_serial());
    Ok(params.self_signed(key).map_err(CaError::Sign)?.pem())
}

/// A certificate issued to a client.
#[derive(Debug, Clone)]
pub struct IssuedClientCert {
    pub cert_pem: String,
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// Issues client certificates under the HSM CA.
#[derive(Debug)]
pub struct ClientCa {
    issuer: Issuer<'static, HsmCaKey>,
    ca_pem: String,
    lifetime: Duration,
}

impl ClientCa {
    /// Loads the CA certificate and checks that the HSM key is its key.
    pub fn load(key: HsmCaKey, cert_path: &Path, lifetime: Duration, label: &str) -> Result<ClientCa, CaError> {
        let path = cert_path.display().to_string();
        let ca_pem = std::fs::read_to_string(cert_path)
            .map_err(|e| CaError::Certificate { path: path.clone(), message: e.to_string() })?;
        let public_key = key.public_key;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)
            .map_err(|e| CaError::Certificate { path: path.clone(), message: e.to_string() })?;
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| CaError::Certificate { path: path.clone(), message: e.to_string() })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::Certificate { path: path.clone(), message: e.to_string() })?;
        if parsed.public_key().subject_public_key.data.as_ref() != public_key {
            return Err(CaError::KeyMismatch { path, label: label.to_owned() });
        }
        Ok(ClientCa { issuer, ca_pem, lifetime })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a client certificate for `identity` with the public key of `csr_pem`.
    /// The identity becomes a URI SAN when it is a URI (such as `spiffe://...`) and
    /// the subject CN in every case. Blocks on the HSM.
    pub fn issue(&self, identity: &str, csr_pem: &str) -> Result<IssuedClientCert, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| CaError::InvalidCsr(e.to_string()))?;

        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = name(identity);
        if identity.contains("://") {
            let uri = identity.to_owned().try_into().map_err(|e: rcgen::Error| CaError::InvalidCsr(e.to_string()))?;
            params.subject_alt_names = vec![SanType::URI(uri)];
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Backdating tolerates clients whose clocks run behind, but by at most a
        // quarter of the lifetime, so that agents, which renew when a third of the
        // validity period is left, do not renew a short-lived certificate at once.
        params.not_before = now - Duration::minutes(5).min(self.lifetime / 4);
        params.not_after = now + self.lifetime;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;

        let cert = params.signed_by(&csr.public_key, &self.issuer).map_err(CaError::Sign)?;
        Ok(IssuedClientCert { cert_pem: cert.pem(), serial: hex::encode(serial.as_ref()), not_after: params.not_after })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn random_serial() -> SerialNumber {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // A positive INTEGER: the top bit clear.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}
