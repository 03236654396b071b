//! The whole stack for integration tests: a `nats-server` with JetStream, a SoftHSM
//! token, development certificates and a `watchword serve` process, all on
//! loopback and in one temporary directory.
//!
//! The server runs as a child process, so it gets `SOFTHSM2_CONF` through its
//! environment and a test can kill it with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use watchword::client::ApiClient;

use super::softhsm::{TOKEN_LABEL, TestToken};

/// Identity the server gives the `operator` client certificate.
pub const OPERATOR: &str = "spiffe://watchword.dev/operator";

/// Client certificates every stack issues.
pub const CLIENTS: [&str; 8] = ["operator", "agent-1", "agent-2", "reader", "auditor", "owner", "automation", "nobody"];

/// How long a test waits for a process or a condition before failing.
pub const WAIT: Duration = Duration::from_secs(30);

/// A running stack; dropping it kills every process it started.
pub struct Stack {
    pub dir: TempDir,
    pub token: TestToken,
    nats: Child,
    pub nats_url: String,
    server: Option<Child>,
    pub server_url: String,
    agents: Vec<Child>,
}

impl Stack {
    /// Starts nats-server and the server with the default access rules: `operator`
    /// is an operator, `agent-1` reads `app/*`, `agent-2` reads everything.
    pub async fn start() -> Stack {
        Stack::start_with(DEFAULT_ACCESS, "").await
    }

    /// Starts the stack with an `[access]` section and extra `[projector]` settings.
    pub async fn start_with(access: &str, projector: &str) -> Stack {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let token = TestToken::create();
        let (nats, nats_url) = start_nats(dir.path());

        watchword::pki::write_dev_set(
            &dir.path().join("certs"),
            &["localhost".to_owned(), "127.0.0.1".to_owned()],
            &CLIENTS.map(str::to_owned),
        )
        .expect("write development certificates");
        write_server_config(dir.path(), &token, &nats_url, access, projector);

        let mut stack =
            Stack { dir, token, nats, nats_url, server: None, server_url: String::new(), agents: Vec::new() };
        stack.start_server();
        stack
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn server_config(&self) -> PathBuf {
        self.dir.path().join("server.toml")
    }

    /// Starts `watchword serve` and waits until it accepts requests.
    pub fn start_server(&mut self) {
        let ready = self.dir.path().join("server.ready");
        let _ = std::fs::remove_file(&ready);
        let _ = std::fs::remove_file(ready.with_extension("public"));
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_watchword"))
            .args(["serve", "--config"])
            .arg(self.server_config())
            .arg("--ready-file")
            .arg(&ready)
            .env("SOFTHSM2_CONF", &self.token.conf)
            .env("RUST_LOG", "info,watchword=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn watchword serve");
        self.server = Some(child);

        let start = Instant::now();
        let address = loop {
            if let Some(address) = std::fs::read_to_string(&ready).ok().filter(|a| !a.trim().is_empty()) {
                break address.trim().to_owned();
            }
            let exited = self.server.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none(), "the server exited with {exited:?}:\n{}", self.server_log());
            assert!(start.elapsed() < WAIT, "timed out waiting for the server:\n{}", self.server_log());
            std::thread::sleep(Duration::from_millis(20));
        };
        self.server_url = format!("https://{address}");

        // Later restarts bind the same ports, so running agents and clients reconnect.
        let public = std::fs::read_to_string(ready.with_extension("public")).ok();
        let config = std::fs::read_to_string(self.server_config()).unwrap();
        let pinned: Vec<String> = config
            .lines()
            .map(|line| match (line.split_once(" = ").map(|(key, _)| key), &public) {
                (Some("listen"), _) => format!("listen = \"{address}\""),
                (Some("public_listen"), Some(public)) => format!("public_listen = \"{}\"", public.trim()),
                _ => line.to_owned(),
            })
            .collect();
        std::fs::write(self.server_config(), pinned.join("\n") + "\n").unwrap();
    }

    /// Turns enrolment on: creates the HSM CA certificate with `watchword ca init`,
    /// trusts it for client certificates, and restarts the server with a `[ca]`
    /// section. Returns the enrolment endpoint's URL.
    pub fn enable_enrolment(&mut self) -> String {
        self.kill_server();
        let certs = self.certs();
        let output = Command::new(env!("CARGO_BIN_EXE_watchword"))
            .args(["ca", "init", "--out"])
            .arg(certs.join("hsm-ca.crt"))
            .arg("--config")
            .arg(self.server_config())
            .env("SOFTHSM2_CONF", &self.token.conf)
            .output()
            .expect("run watchword ca init");
        assert!(output.status.success(), "ca init failed: {}", String::from_utf8_lossy(&output.stderr));

        let bundle = [
            std::fs::read_to_string(certs.join("ca.crt")).unwrap(),
            std::fs::read_to_string(certs.join("hsm-ca.crt")).unwrap(),
        ]
        .concat();
        std::fs::write(certs.join("client-cas.crt"), bundle).unwrap();
        let config = std::fs::read_to_string(self.server_config()).unwrap();
        let config = config.replace("client_ca = \"certs/ca.crt\"", "client_ca = \"certs/client-cas.crt\"");
        let config = format!("public_listen = \"127.0.0.1:0\"\n{config}\n[ca]\ncert = \"certs/hsm-ca.crt\"\n");
        std::fs::write(self.server_config(), config).unwrap();

        self.start_server();
        let enrol = std::fs::read_to_string(self.dir.path().join("server.public")).expect("the public address");
        format!("https://{}", enrol.trim())
    }

    /// Appends TOML sections such as `[limits]` to the server's configuration and
    /// restarts the server with them.
    pub fn configure(&mut self, sections: &str) {
        self.terminate_server();
        let config = std::fs::read_to_string(self.server_config()).unwrap();
        std::fs::write(self.server_config(), format!("{config}\n{sections}\n")).unwrap();
        self.start_server();
    }

    /// Stops the server with SIGTERM and returns how long it took to exit.
    pub fn terminate_server(&mut self) -> Duration {
        let mut child = self.server.take().expect("a running server");
        let start = Instant::now();
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
        assert!(status.success());
        child.wait().expect("reap the server");
        start.elapsed()
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            child.kill().expect("kill the server");
            child.wait().expect("reap the server");
        }
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Returns a client with the certificate of `identity` (one of [`CLIENTS`]).
    pub fn client(&self, identity: &str) -> ApiClient {
        let certs = self.certs();
        ApiClient::new(
            &self.server_url,
            &certs.join("ca.crt"),
            &certs.join(format!("{identity}.crt")),
            &certs.join(format!("{identity}.key")),
        )
        .expect("build an API client")
    }

    /// Runs the `watchword` CLI as `identity` with `args`; returns its output.
    pub fn cli(&self, identity: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
        let certs = self.certs();
        let config = self.dir.path().join(format!("cli-{identity}.toml"));
        std::fs::write(
            &config,
            format!(
                "server = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                self.server_url,
                certs.join("ca.crt").display(),
                certs.join(format!("{identity}.crt")).display(),
                certs.join(format!("{identity}.key")).display(),
            ),
        )
        .unwrap();
        run_cli(&config, args, stdin)
    }

    /// Runs the `watchword` CLI with a configuration that sends `token` to `server`
    /// (a URL of this stack); returns its output.
    pub fn cli_with_token(&self, server: &str, token: &str, args: &[&str]) -> std::process::Output {
        let (config, token_file) = (self.dir.path().join("cli-token.toml"), self.dir.path().join("cli.token"));
        std::fs::write(&token_file, token).unwrap();
        let ca = self.certs().join("ca.crt");
        let text =
            format!("server = \"{server}\"\nca = \"{}\"\ntoken_file = \"{}\"\n", ca.display(), token_file.display());
        std::fs::write(&config, text).unwrap();
        run_cli(&config, args, b"")
    }

    /// Starts `watchword-agent` as `identity`; returns its secrets directory.
    pub fn start_agent(&mut self, identity: &str) -> PathBuf {
        let certs = self.certs();
        self.start_agent_with(&certs.join(format!("{identity}.crt")), &certs.join(format!("{identity}.key")), identity)
    }

    /// Starts `watchword-agent` with the certificate and key given; `tag` names its
    /// directory. Returns its secrets directory.
    pub fn start_agent_with(&mut self, cert: &Path, key: &Path, tag: &str) -> PathBuf {
        self.spawn_agent(cert, key, tag, "")
    }

    /// Starts `watchword-agent` as `identity` with extra lines in its configuration.
    pub fn start_agent_configured(&mut self, identity: &str, settings: &str) -> PathBuf {
        let certs = self.certs();
        let (cert, key) = (certs.join(format!("{identity}.crt")), certs.join(format!("{identity}.key")));
        self.spawn_agent(&cert, &key, identity, settings)
    }

    fn spawn_agent(&mut self, cert: &Path, key: &Path, tag: &str, settings: &str) -> PathBuf {
        let certs = self.certs();
        let identity = tag;
        let agent_dir = self.dir.path().join(format!("agent-{identity}"));
        std::fs::create_dir_all(&agent_dir).unwrap();
        let config = agent_dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "server = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nsecrets_dir = \"secrets\"\nwatch_timeout_secs = 5\n{settings}\n",
                self.server_url,
                certs.join("ca.crt").display(),
                cert.display(),
                key.display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(agent_dir.join("agent.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_watchword-agent"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,watchword=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn watchword-agent");
        self.agents.push(child);
        agent_dir.join("secrets")
    }

    /// Returns the HSM root public key, read from the token by `watchword hsm root-key`.
    pub fn root_public_key(&self) -> [u8; 32] {
        let output = Command::new(env!("CARGO_BIN_EXE_watchword"))
            .args(["hsm", "root-key", "--config"])
            .arg(self.server_config())
            .env("SOFTHSM2_CONF", &self.token.conf)
            .output()
            .expect("run watchword hsm root-key");
        assert!(output.status.success(), "hsm root-key failed: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).unwrap();
        hex::decode(text.trim()).unwrap().try_into().expect("a 32-byte key")
    }

    /// Directory of nats-server's JetStream files.
    pub fn nats_store(&self) -> PathBuf {
        self.dir.path().join("nats")
    }

    /// Directory of the read model.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in self.agents.iter_mut().chain(self.server.as_mut()).chain(std::iter::once(&mut self.nats)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the `watchword` CLI with the configuration file `config` and `stdin`.
fn run_cli(config: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchword"))
        .args(args)
        .env("WATCHWORD_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the watchword CLI");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

const DEFAULT_ACCESS: &str = r#"
operators = ["spiffe://watchword.dev/operator"]
[access.readers]
"spiffe://watchword.dev/agent-1" = ["app/*"]
"spiffe://watchword.dev/agent-2" = ["*"]
"#;

fn write_server_config(dir: &Path, token: &TestToken, nats_url: &str, access: &str, projector: &str) {
    let config = format!(
        r#"region = "test"
listen = "127.0.0.1:0"
data_dir = "data"

[tls]
cert = "certs/server.crt"
key = "certs/server.key"
client_ca = "certs/ca.crt"

[nats]
url = "{nats_url}"

[hsm]
token_label = "{TOKEN_LABEL}"
pin_file = "{pin}"
create_missing_keys = true
ca_key_label = "watchword-ca"

[projector]
{projector}

[access]
{access}
"#,
        pin = token.pin_file.display(),
    );
    std::fs::write(dir.join("server.toml"), config).expect("write server.toml");
}

/// Starts nats-server with JetStream on a random loopback port.
fn start_nats(dir: &Path) -> (Child, String) {
    start_nats_with(dir, None)
}

/// Starts nats-server with JetStream on a random loopback port, with the
/// configuration file `config` when given. Its listen address is overridden,
/// and it must set its own JetStream `store_dir`.
pub fn start_nats_with(dir: &Path, config: Option<&Path>) -> (Child, String) {
    let store = dir.join("nats");
    let ports = dir.join("nats-ports");
    std::fs::create_dir_all(&ports).unwrap();
    let mut command = Command::new(nats_server());
    command.args(["-a", "127.0.0.1", "-p", "-1", "--http_port", "0"]);
    match config {
        Some(config) => command.arg("-c").arg(config),
        None => command.args(["-js", "-sd"]).arg(&store),
    };
    let child = command
        .arg("--ports_file_dir")
        .arg(&ports)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nats-server (install it with apt-get install nats-server)");
    let ports_file = ports.join(format!("nats-server_{}.ports", child.id()));
    let text = wait_for_file(&ports_file, String::new);
    let json: serde_json::Value = serde_json::from_str(&text).expect("nats-server ports file is JSON");
    let url = json["nats"][0].as_str().expect("nats URL in the ports file").to_owned();
    (child, url)
}

fn nats_server() -> &'static str {
    if Path::new("/usr/sbin/nats-server").exists() { "/usr/sbin/nats-server" } else { "nats-server" }
}

/// Waits for a non-empty file and returns its content; `context` explains a time-out.
fn wait_for_file(path: &Path, context: impl Fn() -> String) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return text.trim().to_owned();
            }
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {}\n{}", path.display(), context());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`].
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
