//! Development PKI: a software certificate authority and the server and client
//! certificates that the dev stack and the tests use for mutual TLS.
//!
//! Every key here is generated in software and written to disk in PEM, so nothing in
//! this module is fit for production. The production CA will keep its signing key in
//! the HSM.
//!
//! - [`DevCa`] generates or loads a CA (`ca.crt`, `ca.key`) and issues server and
//!   client certificates from it.
//! - [`write_dev_set`] fills a directory with a CA, a server certificate and one
//!   certificate per client. A later run keeps every file that already exists and
//!   creates only the missing ones.
//!
//! Keys are ECDSA P-256. A client certificate names its identity twice: in the
//! subject CN and in the URI SAN `spiffe://watchword.dev/<identity>`. The server reads
//! the URI SAN first (see [`crate::tls::identity_from_cert`]), so it identifies the
//! dev client `agent-1` as `spiffe://watchword.dev/agent-1`. Identities are limited to
//! characters that are valid both in a SPIFFE path segment and in a file name, which
//! is why every client certificate can carry the URI SAN.
//!
//! ```no_run
//! use std::path::Path;
//!
//! let report = watchword::pki::write_dev_set(
//!     Path::new("dev/tls"),
//!     &["localhost".to_string(), "127.0.0.1".to_string()],
//!     &["operator".to_string(), "agent-1".to_string()],
//! )?;
//! for path in &report.created {
//!     println!("created {}", path.display());
//! }
//! # Ok::<(), watchword::pki::PkiError>(())
//! ```

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use zeroize::Zeroizing;

/// SPIFFE trust domain of the URI SANs in development client certificates.
pub const TRUST_DOMAIN: &str = "watchword.dev";

/// Subject CN of the CA that [`DevCa::load_or_generate`] and [`write_dev_set`] create.
pub const DEV_CA_COMMON_NAME: &str = "Watchword development CA";

const CA_CERT_FILE: &str = "ca.crt";
const CA_KEY_FILE: &str = "ca.key";
const SERVER_STEM: &str = "server";

/// Client names that would collide with the CA and server files of a dev set.
const RESERVED_CLIENT_NAMES: [&str; 2] = ["ca", SERVER_STEM];

const MAX_IDENTITY_LEN: usize = 64;
const CA_VALIDITY: time::Duration = time::Duration::days(3650);
const LEAF_VALIDITY: time::Duration = time::Duration::days(365);

/// Backdating of `notBefore`, so that a peer whose clock runs a little behind still
/// accepts a certificate issued a moment ago.
const CLOCK_SKEW: time::Duration = time::Duration::hours(1);

const KEY_FILE_MODE: u32 = 0o600;
const CERT_FILE_MODE: u32 = 0o644;

/// Errors from generating, loading and writing development certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A client identity that cannot be used as a SPIFFE path segment or a file name.
    #[error("invalid client name {value:?}: {reason}")]
    InvalidClientName { value: String, reason: &'static str },

    /// A server name that is neither a valid DNS name nor an IP address.
    #[error("invalid server name {value:?}: expected a DNS name or an IP address")]
    InvalidServerName { value: String },

    /// A server certificate was requested without any name to put in it.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoServerNames,

    /// rcgen failed to generate a key or to sign a certificate.
    #[error("failed to generate a key or certificate: {0}")]
    Generate(#[source] rcgen::Error),

    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("failed to write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },

    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },

    #[error("{path}: invalid certificate: {reason}")]
    InvalidCertificate { path: PathBuf, reason: String },

    #[error("{path}: invalid private key: {reason}")]
    InvalidKey { path: PathBuf, reason: String },

    /// The private key does not belong to the certificate next to it.
    #[error("private key {key} does not match the certificate {cert}: {source}")]
    KeyMismatch { cert: PathBuf, key: PathBuf, source: rustls::Error },

    /// One CA file exists without the other. Making a new CA here would invalidate
    /// every certificate issued from the old one, so the caller must decide.
    #[error(
        "{present} exists but {missing} does not; restore {missing}, or delete {present} \
         and every certificate issued from it to start a new CA"
    )]
    IncompleteCa { present: PathBuf, missing: PathBuf },

    /// A leaf certificate exists without its key, or the key without its certificate.
    #[error(
        "{present} exists but {missing} does not; restore {missing}, or delete {present} \
         to issue a new pair"
    )]
    IncompletePair { present: PathBuf, missing: PathBuf },

    /// An existing leaf certificate does not verify under the CA: it was issued by
    /// another CA, has expired, or lacks a requested name or the expected key usage.
    #[error(
        "{cert} is not valid under the CA in {ca} for this use: {source}; \
         delete {cert} and its key to issue a new pair"
    )]
    LeafRejected { cert: PathBuf, ca: PathBuf, source: rustls::Error },
}

/// A development certificate authority with a software key.
pub struct DevCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its private key, both PEM-encoded.
pub struct IssuedCert {
    pub cert_pem: String,
    /// PKCS#8 private key, zeroized on drop. The copies inside rcgen's `KeyPair` and
    /// its PEM encoder are not zeroized.
    pub key_pem: Zeroizing<String>,
}

/// Files that [`write_dev_set`] created and files that it found and kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevSetReport {
    pub created: Vec<PathBuf>,
    pub reused: Vec<PathBuf>,
}

/// Purpose that a reused leaf certificate is verified for.
enum LeafUse<'a> {
    Server(&'a [ServerName<'static>]),
    Client,
}

impl DevCa {
    /// Generates a CA with a fresh key, valid for 3650 days, that may sign leaf
    /// certificates only (path length 0).
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Generate)?;

        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, CA_VALIDITY);

        let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
        Ok(Self { cert_pem: cert.pem(), cert_der: cert.der().clone(), issuer: Issuer::new(params, key) })
    }

    /// Loads the CA from `ca.crt` and `ca.key` in `dir`, and checks that the key
    /// belongs to the certificate.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);

        let cert_pem = String::from_utf8(read_file(&cert_path)?.to_vec()).map_err(|_| {
            PkiError::InvalidCertificate { path: cert_path.clone(), reason: "not UTF-8 text".to_string() }
        })?;
        let cert_der = parse_cert(&cert_path, cert_pem.as_bytes())?;
        let key_der = parse_key(&key_path, &read_file(&key_path)?)?;
        check_key_pair(&cert_path, &cert_der, &key_path, key_der.clone_key())?;

        let key = KeyPair::try_from(&key_der)
            .map_err(|err| PkiError::InvalidKey { path: key_path.clone(), reason: err.to_string() })?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|err| PkiError::InvalidCertificate { path: cert_path.clone(), reason: err.to_string() })?;

        Ok(Self { cert_pem, cert_der, issuer })
    }

    /// Loads the CA from `dir`, or generates one named [`DEV_CA_COMMON_NAME`] and
    /// writes `ca.crt` and `ca.key` there (creating `dir`) if neither file exists.
    ///
    /// Fails with [`PkiError::IncompleteCa`] if only one of the two files exists: it
    /// never replaces part of a CA.
    pub fn load_or_generate(dir: &Path) -> Result<Self, PkiError> {
        let (ca, _created) = Self::load_or_create(dir)?;
        Ok(ca)
    }

    /// PEM-encoded CA certificate, the trust anchor for servers and clients.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a server certificate for the given names, with the serverAuth extended
    /// key usage and a validity of 365 days. The subject CN is the first DNS name, or
    /// the first IP address if there is no DNS name.
    pub fn issue_server(&self, dns_names: &[String], ips: &[IpAddr]) -> Result<IssuedCert, PkiError> {
        let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
        for name in dns_names {
            sans.push(dns_san(name)?);
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));

        let common_name = match (dns_names.first(), ips.first()) {
            (Some(name), _) => name.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => return Err(PkiError::NoServerNames),
        };

        let mut params = leaf_params(&common_name, ExtendedKeyUsagePurpose::ServerAuth);
        params.subject_alt_names = sans;
        self.sign_leaf(params)
    }

    /// Issues a client certificate for `identity`, with the clientAuth extended key
    /// usage and a validity of 365 days. The identity goes into the subject CN and
    /// into the URI SAN `spiffe://watchword.dev/<identity>`.
    ///
    /// The identity must be 1 to 64 ASCII letters, digits, `.`, `-` or `_`, starting
    /// with a letter or digit; anything else fails with
    /// [`PkiError::InvalidClientName`].
    pub fn issue_client(&self, identity: &str) -> Result<IssuedCert, PkiError> {
        validate_identity(identity)?;

        let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/{identity}");
        // `validate_identity` admits ASCII only, so the URI is a valid IA5String.
        let uri = spiffe_id.try_into().map_err(PkiError::Generate)?;

        let mut params = leaf_params(identity, ExtendedKeyUsagePurpose::ClientAuth);
        params.subject_alt_names = vec![SanType::URI(uri)];
        self.sign_leaf(params)
    }

    fn sign_leaf(&self, params: CertificateParams) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(PkiError::Generate)?;

        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: Zeroizing::new(key.serialize_pem()) })
    }

    /// Loads the CA from `dir` or creates it there; the flag is true if it was created.
    fn load_or_create(dir: &Path) -> Result<(Self, bool), PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);

        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => Ok((Self::load(dir)?, false)),
            (true, false) => Err(PkiError::IncompleteCa { present: cert_path, missing: key_path }),
            (false, true) => Err(PkiError::IncompleteCa { present: key_path, missing: cert_path }),
            (false, false) => {
                let ca = Self::generate(DEV_CA_COMMON_NAME)?;
                create_dir(dir)?;

                // The key is written first: if the process stops in between, the next
                // run reports an incomplete CA instead of trusting a CA without a key.
                let key_pem = Zeroizing::new(ca.issuer.key().serialize_pem());
                write_new_file(&key_path, key_pem.as_bytes(), KEY_FILE_MODE)?;
                write_new_file(&cert_path, ca.cert_pem.as_bytes(), CERT_FILE_MODE)?;
                Ok((ca, true))
            }
        }
    }

    /// Checks that an existing leaf certificate chains to this CA and is valid now
    /// for `leaf_use`.
    fn verify_leaf(
        &self,
        cert_path: &Path,
        cert: &CertificateDer<'_>,
        leaf_use: LeafUse<'_>,
        ca_path: &Path,
    ) -> Result<(), PkiError> {
        let rejected =
            |source| PkiError::LeafRejected { cert: cert_path.to_path_buf(), ca: ca_path.to_path_buf(), source };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der.clone()).map_err(rejected)?;
        let roots = Arc::new(roots);
        let now = UnixTime::now();

        match leaf_use {
            LeafUse::Server(names) => {
                let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|err| rejected(rustls::Error::General(err.to_string())))?;
                for name in names {
                    verifier.verify_server_cert(cert, &[], name, &[], now).map_err(rejected)?;
                }
            }
            LeafUse::Client => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|err| rejected(rustls::Error::General(err.to_string())))?;
                verifier.verify_client_cert(cert, &[], now).map_err(rejected)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The issuer contains the signing key, which must never reach a log.
        f.debug_struct("DevCa").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// Writes a development certificate set into `dir`, creating `dir` if needed.
///
/// The set is `ca.crt` and `ca.key`, then `server.crt` and `server.key` for
/// `server_names`, each of which is a DNS name or an IP address. Each name in
/// `clients` gets `<client>.crt` and `<client>.key`. Client names follow the rules
/// of [`DevCa::issue_client`], and `ca` and `server` are reserved. On Unix, keys are
/// written with mode 0600 and certificates with mode 0644, minus the process umask.
///
/// A later run keeps every file that exists and creates only the missing ones. It
/// never replaces the CA, because a new CA would invalidate every certificate issued
/// from the old one. A kept server or client certificate must still verify under the
/// CA, for every requested server name, and match its key; otherwise the run fails
/// with an error that names the file to delete. All names are checked before any
/// file is written.
pub fn write_dev_set(dir: &Path, server_names: &[String], clients: &[String]) -> Result<DevSetReport, PkiError> {
    let names = parse_server_names(server_names)?;
    for client in clients {
        validate_client_file_name(client)?;
    }

    let mut report = DevSetReport::default();
    let (ca, ca_created) = DevCa::load_or_create(dir)?;
    let ca_files = [dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE)];
    if ca_created {
        report.created.extend(ca_files);
    } else {
        report.reused.extend(ca_files);
    }

    ensure_leaf(
        &ca,
        dir,
        SERVER_STEM,
        LeafUse::Server(&names.all),
        || ca.issue_server(&names.dns_names, &names.ips),
        &mut report,
    )?;
    for client in clients {
        ensure_leaf(&ca, dir, client, LeafUse::Client, || ca.issue_client(client), &mut report)?;
    }
    Ok(report)
}

/// Keeps the pair `<stem>.crt`/`<stem>.key` in `dir` if both exist and verify under
/// `ca`, or issues and writes a new pair if neither exists.
fn ensure_leaf(
    ca: &DevCa,
    dir: &Path,
    stem: &str,
    leaf_use: LeafUse<'_>,
    issue: impl FnOnce() -> Result<IssuedCert, PkiError>,
    report: &mut DevSetReport,
) -> Result<(), PkiError> {
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));

    match (exists(&cert_path)?, exists(&key_path)?) {
        (true, true) => {
            let cert = parse_cert(&cert_path, &read_file(&cert_path)?)?;
            let key = parse_key(&key_path, &read_file(&key_path)?)?;
            check_key_pair(&cert_path, &cert, &key_path, key)?;
            ca.verify_leaf(&cert_path, &cert, leaf_use, &dir.join(CA_CERT_FILE))?;
            report.reused.extend([cert_path, key_path]);
        }
        (true, false) => {
            return Err(PkiError::IncompletePair { present: cert_path, missing: key_path });
        }
        (false, true) => {
            return Err(PkiError::IncompletePair { present: key_path, missing: cert_path });
        }
        (false, false) => {
            let issued = issue()?;
            write_new_file(&key_path, issued.key_pem.as_bytes(), KEY_FILE_MODE)?;
            write_new_file(&cert_path, issued.cert_pem.as_bytes(), CERT_FILE_MODE)?;
            report.created.extend([cert_path, key_path]);
        }
    }
    Ok(())
}

/// Server names split into DNS names and IP addresses for the certificate, plus
/// all of them as [`ServerName`]s to verify a reused certificate against.
struct ParsedServerNames {
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
    all: Vec<ServerName<'static>>,
}

fn parse_server_names(names: &[String]) -> Result<ParsedServerNames, PkiError> {
    if names.is_empty() {
        return Err(PkiError::NoServerNames);
    }

    let mut parsed = ParsedServerNames { dns_names: Vec::new(), ips: Vec::new(), all: Vec::with_capacity(names.len()) };
    for name in names {
        let server_name =
            ServerName::try_from(name.clone()).map_err(|_| PkiError::InvalidServerName { value: name.clone() })?;
        match &server_name {
            ServerName::IpAddress(ip) => parsed.ips.push(IpAddr::from(*ip)),
            _ => parsed.dns_names.push(name.clone()),
        }
        parsed.all.push(server_name);
    }
    Ok(parsed)
}

fn validate_identity(identity: &str) -> Result<(), PkiError> {
    let invalid = |reason| PkiError::InvalidClientName { value: identity.to_string(), reason };

    let Some(first) = identity.chars().next() else {
        return Err(invalid("must not be empty"));
    };
    if identity.len() > MAX_IDENTITY_LEN {
        return Err(invalid("must be at most 64 characters long"));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(invalid("must start with an ASCII letter or digit"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if !identity.chars().all(allowed) {
        return Err(invalid("may contain only ASCII letters, digits, '.', '-' and '_'"));
    }
    Ok(())
}

fn validate_client_file_name(name: &str) -> Result<(), PkiError> {
    validate_identity(name)?;
    if RESERVED_CLIENT_NAMES.contains(&name) {
        return Err(PkiError::InvalidClientName {
            value: name.to_string(),
            reason: "is reserved for the CA and server files of the set",
        });
    }
    Ok(())
}

fn dns_san(name: &str) -> Result<SanType, PkiError> {
    let invalid = || PkiError::InvalidServerName { value: name.to_string() };

    // rcgen checks only that the name is ASCII; webpki would reject the certificate
    // later for a malformed DNS name, so reject it here where the name is known.
    rustls::pki_types::DnsName::try_from(name).map_err(|_| invalid())?;
    let ia5 = name.try_into().map_err(|_| invalid())?;
    Ok(SanType::DnsName(ia5))
}

fn leaf_params(common_name: &str, usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_dn(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_VALIDITY);
    params
}

fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, validity: time::Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
}

fn parse_cert(path: &Path, pem_bytes: &[u8]) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem_bytes).map_err(|err| match err {
        pem::Error::NoItemsFound => PkiError::NoCertificate { path: path.to_path_buf() },
        other => PkiError::InvalidCertificate { path: path.to_path_buf(), reason: other.to_string() },
    })
}

fn parse_key(path: &Path, pem_bytes: &[u8]) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem_bytes).map_err(|err| PkiError::InvalidKey {
        path: path.to_path_buf(),
        reason: match err {
            pem::Error::NoItemsFound => "no PEM private key found".to_string(),
            other => other.to_string(),
        },
    })
}

fn check_key_pair(
    cert_path: &Path,
    cert: &CertificateDer<'static>,
    key_path: &Path,
    key: PrivateKeyDer<'static>,
) -> Result<(), PkiError> {
    let provider: CryptoProvider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(vec![cert.clone()], key, &provider).map_err(|source| PkiError::KeyMismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Reads a whole file into a buffer that is zeroized on drop, because it may contain
/// a private key.
fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    fs::read(path).map(Zeroizing::new).map_err(|source| PkiError::Read { path: path.to_path_buf(), source })
}

fn exists(path: &Path) -> Result<bool, PkiError> {
    path.try_exists().map_err(|source| PkiError::Read { path: path.to_path_buf(), source })
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Write { path: dir.to_path_buf(), source })
}

/// Writes `contents` to a file that must not exist yet, so that two runs racing on
/// one directory cannot overwrite each other's keys.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;

    let write = || -> io::Result<()> {
        let mut file = options.open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    write().map_err(|source| PkiError::Write { path: path.to_path_buf(), source })
}
