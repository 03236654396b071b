//! The agent's certificate: enrolment with a one-time token, and renewal before
//! expiry. The private key is generated here and never leaves the compute.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::client::{ApiClient, ClientError, EnrolRequest};

/// A failure to obtain or store a certificate.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("generating the key or CSR failed: {0}")]
    Key(#[from] rcgen::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot read the certificate {path}: {message}")]
    Read { path: String, message: String },
}

/// Generates a key pair and a CSR; returns the CSR and the private key, both PEM.
pub fn new_key_and_csr() -> Result<(String, zeroize::Zeroizing<String>), EnrolError> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
    Ok((csr.pem()?, zeroize::Zeroizing::new(key.serialize_pem())))
}

/// Enrols at `server` with `token` and writes the certificate, the key and the CA.
pub async fn enrol(
    server: &str,
    ca: &Path,
    client: &str,
    token: &str,
    cert_out: &Path,
    key_out: &Path,
) -> Result<String, EnrolError> {
    let (csr_pem, key_pem) = new_key_and_csr()?;
    let request = EnrolRequest { client: client.to_owned(), token: token.to_owned(), csr_pem };
    let response = ApiClient::enrol(server, ca, &request).await?;
    store(cert_out, key_out, &response.certificate_pem, &key_pem)?;
    Ok(response.not_after)
}

/// Renews the certificate at `cert` when less than a third of its lifetime is left;
/// returns whether it did.
pub async fn renew_if_due(client: &ApiClient, cert: &Path, key: &Path) -> Result<bool, EnrolError> {
    if !renewal_due(cert)? {
        return Ok(false);
    }
    let (csr_pem, key_pem) = new_key_and_csr()?;
    let response = client.renew(csr_pem).await?;
    store(cert, key, &response.certificate_pem, &key_pem)?;
    tracing::info!(certificate.serial = %response.serial, not_after = %response.not_after, "client certificate renewed");
    Ok(true)
}

fn renewal_due(cert: &Path) -> Result<bool, EnrolError> {
    let read_error = |message: String| EnrolError::Read { path: cert.display().to_string(), message };
    let der = CertificateDer::from_pem_file(cert).map_err(|e| read_error(e.to_string()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| read_error(e.to_string()))?;
    let not_before = parsed.validity().not_before.timestamp();
    let not_after = parsed.validity().not_after.timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(now >= not_after - (not_after - not_before) / 3)
}

/// Writes the key first, then the certificate, each atomically, so a crash leaves
/// either the old pair or the new key with the old certificate, which the next
/// renewal replaces.
fn store(cert_out: &Path, key_out: &Path, cert_pem: &str, key_pem: &str) -> Result<(), EnrolError> {
    write_atomically(key_out, key_pem.as_bytes(), 0o600)?;
    write_atomically(cert_out, cert_pem.as_bytes(), 0o644)
}

fn write_atomically(path: &Path, content: &[u8], mode: u32) -> Result<(), EnrolError> {
    let error = |source| EnrolError::Write { path: path.display().to_string(), source };
    let temp = path.with_extension(format!("tmp-{}", uuid::Uuid::now_v7().simple()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp).map_err(error)?;
    file.write_all(content).and_then(|()| file.sync_all()).map_err(error)?;
    std::fs::rename(&temp, path).map_err(error)
}
