//! Configuration files of the server, the CLI and the agent.
//!
//! Each is one TOML file. Relative paths inside a file resolve against the file's
//! own directory, so a configuration directory can be moved as a whole. Every
//! field that has a default is marked below with its value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::access::AccessConfig;
use crate::hsm::HsmConfig;

/// Environment variable naming the CLI's configuration file.
pub const CONFIG_ENV: &str = "WATCHWORD_CONFIG";

/// A configuration file that cannot be used, with the setting and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid configuration file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The server's configuration (`watchword serve --config FILE`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Region this node serves; names the read-model file `<data_dir>/<region>.redb`.
    pub region: String,
    /// Address of the HTTPS API. Default `127.0.0.1:8443`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the public endpoint, which accepts connections without a client
    /// certificate and serves only enrolment and the routes that take operator
    /// tokens. Default: none, so neither is available.
    #[serde(default)]
    pub public_listen: Option<SocketAddr>,
    /// Directory of the read model.
    pub data_dir: PathBuf,
    pub tls: ServerTlsConfig,
    #[serde(default)]
    pub nats: NatsConfig,
    #[serde(default)]
    pub hsm: HsmConfig,
    #[serde(default)]
    pub projector: ProjectorConfig,
    #[serde(default)]
    pub access: AccessConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub expiry: ExpiryConfig,
    /// Certificate authority for enrolled clients; absent: enrolment is off.
    #[serde(default)]
    pub ca: Option<CaConfig>,
    #[serde(default)]
    pub changes: crate::changes::ChangesConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

/// The `[ca]` section: client enrolment under the HSM's CA key (`hsm.ca_key_label`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// The CA certificate that `watchword ca init` wrote. Add it to `tls.client_ca`
    /// too, so that enrolled clients are accepted.
    pub cert: PathBuf,
    /// Lifetime of issued client certificates, in hours. Default 24.
    #[serde(default = "default_leaf_hours")]
    pub leaf_hours: u64,
    /// Lifetime of issued client certificates in seconds, for lifetimes shorter than
    /// an hour; overrides `leaf_hours` when set. 60 to 7776000 (90 days).
    #[serde(default)]
    pub leaf_secs: Option<u64>,
}

impl CaConfig {
    /// Returns the lifetime of issued client certificates.
    pub fn leaf_lifetime(&self) -> std::time::Duration {
        let secs = self.leaf_secs.unwrap_or(self.leaf_hours.saturating_mul(3600));
        std::time::Duration::from_secs(secs)
    }
}

fn default_leaf_hours() -> u64 {
    24
}

/// Certificate, key and client CA of the HTTPS API, all PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that issues client certificates; a client without one is rejected during the handshake.
    pub client_ca: PathBuf,
}

/// Location and settings of the event stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Default `nats://127.0.0.1:4222`.
    pub url: String,
    /// Name of the event stream. Default `WATCHWORD_EVENTS`.
    pub stream: String,
    /// Name of the stream of wrapped data keys. Default `WATCHWORD_DATA_KEYS`.
    pub data_key_stream: String,
    /// Replicas of the stream and bucket when the server creates them: 1, or 3 in production. Default 1.
    pub replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id`, in seconds. Default 120.
    pub duplicate_window_secs: u64,
}

/// Tuning of the projection from the stream into the read model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectorConfig {
    /// Maximum events per redb write transaction. Default 1000.
    pub batch_size: usize,
    /// redb page cache, in MiB. Default 64.
    pub cache_mib: usize,
    /// Stream sequences the projector passes over. Only for messages that
    /// `watchword-replay verify` shows are not valid events (a forged or garbage
    /// message stops the projection); an operator sets this to repair. Default none.
    pub skip_sequences: Vec<u64>,
}

/// Limits on what a write may store. Each has a hard ceiling that `validate` enforces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest secret content, in bytes. Default and ceiling 786432 (768 KiB), because
    /// the content travels inside one event and NATS rejects messages above its
    /// `max_payload` (1 MiB by default).
    pub max_content_bytes: usize,
    /// How many of the newest versions of a secret stay readable by operators and
    /// usable for rollback; older ones are listed but not served. Default 100, 1 to 10000.
    pub max_readable_versions: usize,
    /// Largest encoded metadata (description, labels, delivery), in bytes. Default
    /// and ceiling 16384.
    pub max_metadata_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_content_bytes: crate::writer::MAX_CONTENT_BYTES,
            max_readable_versions: 100,
            max_metadata_bytes: MAX_METADATA_BYTES,
        }
    }
}

/// Ceiling of `limits.max_metadata_bytes`.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Settings of the task that records expiries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryConfig {
    /// Seconds between checks for versions whose expiry time passed. Default 1.
    /// Computes stop receiving a version at its expiry time whatever this is; it only
    /// sets how soon the expiry event is recorded.
    pub check_interval_secs: u64,
}

impl Default for ExpiryConfig {
    fn default() -> ExpiryConfig {
        ExpiryConfig { check_interval_secs: 1 }
    }
}

/// The `[checkpoint]` section: how often the server commits the stream to a
/// root-signed checkpoint. With several nodes, each runs the task and exactly one
/// checkpoint per range is stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Write checkpoints at all. Default true.
    pub enabled: bool,
    /// Maximum time, in milliseconds, between the first event not yet covered and
    /// the checkpoint that covers it. Default 1000.
    pub interval_ms: u64,
    /// Maximum events one checkpoint covers; a checkpoint is written as soon as this
    /// many events are not yet covered. Default 10000.
    pub max_events: u64,
}

/// The CLI's configuration: which server, and the operator's certificate or token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Base URL of the server, such as `https://127.0.0.1:8443`; with `token_file`,
    /// the server's public endpoint.
    pub server: String,
    /// CA certificate that issued the server's certificate.
    pub ca: PathBuf,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// File holding an operator token, used instead of `cert` and `key`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// The agent's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub server: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Directory the agent writes secrets into; it owns every file in it.
    pub secrets_dir: PathBuf,
    /// Mode of a file whose secret sets none, as an octal string. Default `"0400"`.
    #[serde(default = "default_mode")]
    pub default_mode: String,
    /// Maximum wait of one watch request, in seconds. Default 30.
    #[serde(default = "default_watch_secs")]
    pub watch_timeout_secs: u64,
    /// Keep the file of a secret whose current version expired, instead of removing
    /// it. Destroyed, deleted and revoked secrets are removed either way. Default false.
    #[serde(default)]
    pub keep_expired: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "WATCHWORD_EVENTS".to_owned(),
            data_key_stream: "WATCHWORD_DATA_KEYS".to_owned(),
            replicas: 1,
            duplicate_window_secs: 120,
        }
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { enabled: true, interval_ms: 1000, max_events: 10_000 }
    }
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig { batch_size: 1000, cache_mib: 64, skip_sequences: Vec::new() }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_mode() -> String {
    "0400".to_owned()
}

fn default_watch_secs() -> u64 {
    30
}

/// Reads a TOML file and resolves relative paths against its directory.
pub fn load<T: DeserializeOwned + ResolvePaths>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    let mut config: T =
        toml::from_str(&text).map_err(|e| ConfigError::Invalid { path: path.to_owned(), message: e.to_string() })?;
    let base = path.parent().unwrap_or(Path::new("."));
    config.resolve_paths(base);
    config.validate().map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })?;
    Ok(config)
}

/// Configurations whose relative paths resolve against their file's directory.
pub trait ResolvePaths {
    fn resolve_paths(&mut self, base: &Path);

    /// Checks values that parse but cannot work, and names the setting.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

fn resolve(base: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

impl ResolvePaths for ServerConfig {
    fn resolve_paths(&mut self, base: &Path) {
        resolve(base, &mut self.data_dir);
        resolve(base, &mut self.tls.cert);
        resolve(base, &mut self.tls.key);
        resolve(base, &mut self.tls.client_ca);
        if let Some(pin_file) = &mut self.hsm.pin_file {
            resolve(base, pin_file);
        }
        if let Some(ca) = &mut self.ca {
            resolve(base, &mut ca.cert);
        }
    }

    fn validate(&self) -> Result<(), String> {
        let region_ok =
            !self.region.is_empty() && self.region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !region_ok {
            return Err(format!("region {:?} must be non-empty and use only A-Z a-z 0-9 - _", self.region));
        }
        if !(1..=100_000).contains(&self.projector.batch_size) {
            return Err(format!("projector.batch_size {} must be between 1 and 100000", self.projector.batch_size));
        }
        if !(1..=65_536).contains(&self.projector.cache_mib) {
            return Err(format!("projector.cache_mib {} must be between 1 and 65536", self.projector.cache_mib));
        }
        if let Some(ca) = &self.ca {
            if self.public_listen.is_none() {
                return Err("[ca] needs public_listen, the address where computes enrol".to_owned());
            }
            if self.hsm.ca_key_label.is_none() {
                return Err("[ca] needs hsm.ca_key_label, the label of the CA key pair in the HSM".to_owned());
            }
            if !(1..=24 * 90).contains(&ca.leaf_hours) {
                return Err(format!("ca.leaf_hours {} must be between 1 and 2160 (90 days)", ca.leaf_hours));
            }
            if let Some(secs) = ca.leaf_secs
                && !(60..=90 * 86_400).contains(&secs)
            {
                return Err(format!("ca.leaf_secs {secs} must be between 60 and 7776000 (90 days)"));
            }
        }
        let limits = &self.limits;
        if !(1..=crate::writer::MAX_CONTENT_BYTES).contains(&limits.max_content_bytes) {
            return Err(format!(
                "limits.max_content_bytes {} must be between 1 and {}",
                limits.max_content_bytes,
                crate::writer::MAX_CONTENT_BYTES
            ));
        }
        if !(1..=10_000).contains(&limits.max_readable_versions) {
            return Err(format!(
                "limits.max_readable_versions {} must be between 1 and 10000",
                limits.max_readable_versions
            ));
        }
        if !(1024..=MAX_METADATA_BYTES).contains(&limits.max_metadata_bytes) {
            return Err(format!(
                "limits.max_metadata_bytes {} must be between 1024 and {MAX_METADATA_BYTES}",
                limits.max_metadata_bytes
            ));
        }
        if !(1..=3600).contains(&self.expiry.check_interval_secs) {
            return Err(format!(
                "expiry.check_interval_secs {} must be between 1 and 3600",
                self.expiry.check_interval_secs
            ));
        }
        self.changes.validate()?;
        if !(10..=3_600_000).contains(&self.checkpoint.interval_ms) {
            return Err(format!(
                "checkpoint.interval_ms {} must be between 10 and 3600000",
                self.checkpoint.interval_ms
            ));
        }
        if !(1..=1_000_000).contains(&self.checkpoint.max_events) {
            return Err(format!("checkpoint.max_events {} must be between 1 and 1000000", self.checkpoint.max_events));
        }
        if ![1, 3, 5].contains(&self.nats.replicas) {
            return Err(format!("nats.replicas {} must be 1, 3 or 5", self.nats.replicas));
        }
        Ok(())
    }
}

impl ResolvePaths for ClientConfig {
    fn resolve_paths(&mut self, base: &Path) {
        resolve(base, &mut self.ca);
        for path in [&mut self.cert, &mut self.key, &mut self.token_file].into_iter().flatten() {
            resolve(base, path);
        }
    }

    fn validate(&self) -> Result<(), String> {
        match (&self.cert, &self.key, &self.token_file) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => Ok(()),
            _ => Err("set either cert and key (client certificate) or token_file (operator token)".to_owned()),
        }
    }
}

impl ResolvePaths for AgentConfig {
    fn resolve_paths(&mut self, base: &Path) {
        resolve(base, &mut self.ca);
        resolve(base, &mut self.cert);
        resolve(base, &mut self.key);
        resolve(base, &mut self.secrets_dir);
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=60).contains(&self.watch_timeout_secs) {
            return Err(format!("watch_timeout_secs {} must be between 1 and 60", self.watch_timeout_secs));
        }
        parse_mode(&self.default_mode).map(|_| ())
    }
}

/// Parses an octal file mode such as `0400`; only permission bits are accepted.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let mode =
        u32::from_str_radix(text, 8).map_err(|_| format!("file mode {text:?} is not an octal number such as 0400"))?;
    if mode > 0o777 {
        return Err(format!("file mode {text:?} has bits beyond 0777; setuid, setgid and sticky bits are not allowed"));
    }
    Ok(mode)
}
