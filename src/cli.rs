//! The `watchword` command line: the server, secrets and development certificates.
//!
//! Exit statuses scripts can rely on:
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | any other failure |
//! | 2 | invalid command line |
//! | 3 | secret not found (or not readable by this client), or its current version destroyed or expired |
//! | 4 | conflict: a precondition (`--if-revision`, `--if-absent`) did not hold, the command does not apply to the secret's state, or the file name is taken |
//! | 5 | server unreachable or unavailable |
//! | 6 | denied: the server forbids the request, or requires a client certificate that this configuration does not send |
//! | 69 | `serve`: a dependency (HSM, NATS, read model) is unavailable at start-up |
//! | 78 | `serve`: invalid configuration |

mod secret;
mod transfer;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;

mod events;

use crate::client::{ApiClient, ClientError, ClientSummary, CommandResponse, CreateRequest, GroupSummary};
use crate::config::{self, CONFIG_ENV, ClientConfig, ServerConfig};
use reqwest::Method;

#[derive(Debug, Parser)]
#[command(name = "watchword", version, about = "Watchword: event-sourced secrets control plane")]
pub struct Cli {
    /// Configuration file: the server's for `serve`, the client's otherwise.
    #[arg(long, global = true, env = CONFIG_ENV)]
    config: Option<PathBuf>,
    /// Output format of results.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// File that receives the bound address once the server accepts requests.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Write, read, list and manage the lifecycle of secrets.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Register, disable, enable and delete clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Create and delete groups and manage their members.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Let a group read a secret, or stop it.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Give operators roles: admin, auditor, owner:<group>, automation:<group>.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Follow change notices of secrets.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Show the server's region and projection progress.
    Status,
    /// Certificates for development.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Keys in the HSM named by the server's configuration.
    #[command(subcommand)]
    Hsm(HsmCommand),
}

#[derive(Debug, Subcommand)]
enum HsmCommand {
    /// Print the root public key (hex), the trust anchor auditors verify events with.
    RootKey,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Register a client by the identity its certificate carries (URI SAN or CN).
    Create(CreateArgs),
    /// List clients.
    List,
    /// Show one client.
    Show { name: String },
    /// Stop a client from reading anything until it is enabled again.
    Disable { name: String },
    /// Let a disabled client read again.
    Enable { name: String },
    /// Delete a client and its memberships.
    Delete { name: String },
    /// Issue a one-time enrolment token for a client and print it (only the token
    /// on standard output, unless --output json).
    EnrolmentToken {
        name: String,
        /// Lifetime in seconds (1 to 604800).
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create a group.
    Create(CreateArgs),
    /// List groups.
    List,
    /// Show a group with its members and grants.
    Show { name: String },
    /// Delete a group and its memberships; remove its grants first.
    Delete { name: String },
    /// Print, or with --create create, the group of a deployment system's
    /// application: /<org>/<assembly>/<env>, optionally under a domain.
    App {
        org: String,
        assembly: String,
        env: String,
        /// Domain the application lives under.
        #[arg(long)]
        domain: Option<String>,
        /// Create the group too.
        #[arg(long)]
        create: bool,
    },
    /// Add a client to a group.
    AddMember { group: String, client: String },
    /// Remove a client from a group.
    RemoveMember { group: String, client: String },
}

#[derive(Debug, Subcommand)]
enum GrantCommand {
    /// Let the members of GROUP read SECRET.
    Add { group: String, secret: String },
    /// Stop the members of GROUP from reading SECRET.
    Remove { group: String, secret: String },
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Replace the roles of IDENTITY (no role removes them all).
    SetRoles { identity: String, roles: Vec<String> },
    /// List operators and their roles.
    List,
    /// Issue an operator token for IDENTITY and print it (only the token on
    /// standard output, unless --output json).
    Token {
        identity: String,
        /// Lifetime in seconds (1 to 2592000).
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Revoke an operator token by its id.
    RevokeToken { identity: String, token_id: String },
}

#[derive(Debug, Args)]
struct CreateArgs {
    name: String,
    /// Group whose owners manage it (default: administrators only).
    #[arg(long)]
    owner_group: Option<String>,
    /// Free text for people.
    #[arg(long, default_value = "")]
    description: String,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create the certificate of the HSM's CA key (hsm.ca_key_label in the server configuration).
    Init {
        /// File to write the CA certificate to; an existing file is kept.
        #[arg(long)]
        out: PathBuf,
        /// Subject common name of the CA.
        #[arg(long, default_value = "Watchword client CA")]
        common_name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Create a development CA and server and client certificates (software keys).
    Dev {
        /// Directory of the certificates; existing files are kept.
        #[arg(long)]
        out: PathBuf,
        /// DNS name or IP address of the server certificate; repeatable.
        #[arg(long = "server-name", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        server_names: Vec<String>,
        /// Client identity to issue a certificate for; repeatable.
        #[arg(long = "client")]
        clients: Vec<String>,
    },
}

/// A failure with the exit status it maps to.
#[derive(Debug)]
struct Failure {
    status: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        let status = match &error {
            ClientError::InvalidName(_) => 2,
            ClientError::Api { status: 400, .. } => 2,
            ClientError::Api { code, .. } if ["not_found", "destroyed", "expired"].contains(&code.as_str()) => 3,
            ClientError::Api { code, .. } if ["conflict", "file_name_taken"].contains(&code.as_str()) => 4,
            ClientError::Api { status: 413, .. } => 2,
            ClientError::Api { code, .. } if code == "forbidden" => 6,
            ClientError::CertificateRequired { .. } => 6,
            ClientError::Api { status: 503, .. } | ClientError::Unreachable { .. } => 5,
            _ => 1,
        };
        Failure { status, message: error.to_string() }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure { status: 1, message: format!("{error:#}") }
    }
}

/// Parses the command line, runs the command and returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve { .. });
    crate::logging::init(if serving { "info" } else { "warn" });

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.status)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { ready_file } => {
            let path = config_path(&cli.config)?;
            let config: ServerConfig = config::load(&path).map_err(server_config_failure)?;
            crate::server::run(config, ready_file.as_deref())
                .await
                .map_err(|e| Failure { status: e.exit_code(), message: e.to_string() })
        }
        Command::Secret(command) => secret::run(&client(&cli.config)?, cli.output, command, &cli.config).await,
        Command::Client(command) => run_client(&client(&cli.config)?, cli.output, command).await,
        Command::Group(command) => run_group(&client(&cli.config)?, cli.output, command).await,
        Command::Events(command) => events::run(&client(&cli.config)?, cli.output, command).await,
        Command::Operator(OperatorCommand::SetRoles { identity, roles }) => {
            let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
            let response = client(&cli.config)?.set_roles(&identity, &roles).await?;
            print_command(cli.output, &response);
            Ok(())
        }
        Command::Operator(OperatorCommand::Token { identity, ttl_secs }) => {
            let token = client(&cli.config)?.create_operator_token(&identity, Some(ttl_secs)).await?;
            match cli.output {
                Output::Json => print_rows(cli.output, &token, &[], &[]),
                Output::Table => {
                    print_line(&token.token);
                    eprintln!("token {} for {} expires at {}", token.token_id, token.identity, token.expires_at);
                }
            }
            Ok(())
        }
        Command::Operator(OperatorCommand::RevokeToken { identity, token_id }) => {
            let response =
                client(&cli.config)?.command(Method::DELETE, &["operators", &identity, "tokens", &token_id]).await?;
            print_command(cli.output, &response);
            Ok(())
        }
        Command::Operator(OperatorCommand::List) => {
            let list = client(&cli.config)?.list_operators().await?;
            let rows: Vec<Vec<String>> = list
                .items
                .iter()
                .map(|o| vec![o.identity.clone(), o.roles.join(" "), o.active_tokens.to_string()])
                .collect();
            print_rows(cli.output, &list, &["IDENTITY", "ROLES", "TOKENS"], &rows);
            Ok(())
        }
        Command::Grant(command) => {
            let (method, group, secret) = match &command {
                GrantCommand::Add { group, secret } => (Method::PUT, group, secret),
                GrantCommand::Remove { group, secret } => (Method::DELETE, group, secret),
            };
            let response = client(&cli.config)?.command(method, &["groups", group, "grants", secret]).await?;
            print_command(cli.output, &response);
            Ok(())
        }
        Command::Status => {
            let status = client(&cli.config)?.status().await?;
            print_rows(
                cli.output,
                &status,
                &["REGION", "APPLIED", "PROJECTION"],
                &[vec![status.region.clone(), status.applied_sequence.to_string(), status.projection.clone()]],
            );
            Ok(())
        }
        Command::Hsm(HsmCommand::RootKey) => {
            let path = config_path(&cli.config)?;
            let config: ServerConfig = config::load(&path).map_err(server_config_failure)?;
            let hsm =
                crate::hsm::Hsm::open(&config.hsm).map_err(|e| Failure { status: 69, message: format!("HSM: {e}") })?;
            print_line(&hex::encode(hsm.root_public_key()));
            Ok(())
        }
        Command::Ca(CaCommand::Init { out, common_name, days }) => {
            if out.exists() {
                print_line(&format!("kept    {}", out.display()));
                return Ok(());
            }
            let path = config_path(&cli.config)?;
            let config: ServerConfig = config::load(&path).map_err(server_config_failure)?;
            let hsm =
                crate::hsm::Hsm::open(&config.hsm).map_err(|e| Failure { status: 69, message: format!("HSM: {e}") })?;
            let key = crate::ca::HsmCaKey::new(&hsm).map_err(|e| Failure { status: 78, message: e.to_string() })?;
            let pem = crate::ca::self_signed(&key, &common_name, days)
                .map_err(|e| Failure { status: 1, message: e.to_string() })?;
            std::fs::write(&out, pem)
                .map_err(|e| Failure { status: 1, message: format!("cannot write {}: {e}", out.display()) })?;
            print_line(&format!("created {}", out.display()));
            Ok(())
        }
        Command::Ca(CaCommand::Dev { out, server_names, clients }) => {
            let report = crate::pki::write_dev_set(&out, &server_names, &clients)
                .map_err(|e| Failure { status: 1, message: e.to_string() })?;
            for path in &report.created {
                print_line(&format!("created {}", path.display()));
            }
            for path in &report.reused {
                print_line(&format!("kept    {}", path.display()));
            }
            Ok(())
        }
    }
}

async fn run_client(client: &ApiClient, output: Output, command: ClientCommand) -> Result<(), Failure> {
    let response = match command {
        ClientCommand::Create(args) => client.create_client(&create_request(args)).await?,
        ClientCommand::List => {
            let list = client.list_clients().await?;
            let rows: Vec<Vec<String>> = list.items.iter().map(client_row).collect();
            print_rows(output, &list, &CLIENT_HEADER, &rows);
            return Ok(());
        }
        ClientCommand::Show { name } => {
            let found = client.get_client(&name).await?;
            print_rows(output, &found, &CLIENT_HEADER, &[client_row(&found)]);
            return Ok(());
        }
        ClientCommand::Disable { name } => client.command(Method::POST, &["clients", &name, "disable"]).await?,
        ClientCommand::Enable { name } => client.command(Method::POST, &["clients", &name, "enable"]).await?,
        ClientCommand::Delete { name } => client.command(Method::DELETE, &["clients", &name]).await?,
        ClientCommand::EnrolmentToken { name, ttl_secs } => {
            let token = client.create_enrolment_token(&name, Some(ttl_secs)).await?;
            // The table form prints the bare token, so that it can go straight to a file.
            match output {
                Output::Json => print_rows(output, &token, &[], &[]),
                Output::Table => {
                    print_line(&token.token);
                    eprintln!("enrolment token for {} expires at {}", token.client, token.expires_at);
                }
            }
            return Ok(());
        }
    };
    print_command(output, &response);
    Ok(())
}

async fn run_group(client: &ApiClient, output: Output, command: GroupCommand) -> Result<(), Failure> {
    let response = match command {
        GroupCommand::Create(args) => client.create_group(&create_request(args)).await?,
        GroupCommand::List => {
            let list = client.list_groups().await?;
            let rows: Vec<Vec<String>> = list.items.iter().map(group_row).collect();
            print_rows(output, &list, &GROUP_HEADER, &rows);
            return Ok(());
        }
        GroupCommand::Show { name } => {
            let found = client.get_group(&name).await?;
            print_rows(output, &found, &GROUP_HEADER, &[group_row(&found)]);
            if output == Output::Table {
                print_line(&format!("members: {}", found.members.clone().unwrap_or_default().join(", ")));
                print_line(&format!("grants:  {}", found.grants.clone().unwrap_or_default().join(", ")));
            }
            return Ok(());
        }
        GroupCommand::Delete { name } => client.command(Method::DELETE, &["groups", &name]).await?,
        GroupCommand::App { org, assembly, env, domain, create } => {
            let group = watchword_events::names::application_group(domain.as_deref(), &org, &assembly, &env)
                .map_err(|e| Failure { status: 2, message: e.to_string() })?;
            if !create {
                print_line(&group);
                return Ok(());
            }
            let description = format!("application {org}/{assembly}/{env}");
            client.create_group(&CreateRequest { name: group, owner_group: None, description }).await?
        }
        GroupCommand::AddMember { group, client: member } => {
            client.command(Method::PUT, &["groups", &group, "members", &member]).await?
        }
        GroupCommand::RemoveMember { group, client: member } => {
            client.command(Method::DELETE, &["groups", &group, "members", &member]).await?
        }
    };
    print_command(output, &response);
    Ok(())
}

const CLIENT_HEADER: [&str; 4] = ["NAME", "ENABLED", "OWNER", "CREATED"];
const GROUP_HEADER: [&str; 3] = ["NAME", "OWNER", "CREATED"];

fn client_row(client: &ClientSummary) -> Vec<String> {
    let owner = client.owner_group.clone().unwrap_or_else(|| "-".to_owned());
    vec![client.name.clone(), client.enabled.to_string(), owner, client.created_at.clone()]
}

fn group_row(group: &GroupSummary) -> Vec<String> {
    let owner = group.owner_group.clone().unwrap_or_else(|| "-".to_owned());
    vec![group.name.clone(), owner, group.created_at.clone()]
}

fn create_request(args: CreateArgs) -> CreateRequest {
    CreateRequest { name: args.name, owner_group: args.owner_group, description: args.description }
}

fn print_command(output: Output, response: &CommandResponse) {
    print_rows(
        output,
        response,
        &["EVENT", "REVISION", "SEQUENCE"],
        &[vec![response.kind.clone(), response.revision.to_string(), response.sequence.to_string()]],
    );
}

/// Writes content to a new file of mode 0600 beside `path`, then renames it over
/// `path`: an existing file's mode is not kept and a symbolic link at `path` is
/// replaced, never followed.
fn write_private(path: &std::path::Path, content: &[u8]) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| Failure { status: 1, message: format!("cannot write {}: {e}", path.display()) };
    let name = path.file_name().ok_or_else(|| failed(std::io::Error::other("not a file name")))?;
    let temp = path.with_file_name(format!(".{}.{}", name.to_string_lossy(), uuid::Uuid::now_v7().simple()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| file.write_all(content).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(failed)
}

/// Writes to standard output; a closed pipe ends the program quietly, as `head` expects.
fn print_out(text: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Failure { status: 1, message: format!("cannot write to standard output: {e}") }),
    }
}

fn print_rows(output: Output, value: &impl Serialize, header: &[&str], rows: &[Vec<String>]) {
    match output {
        Output::Json => match serde_json::to_string(value) {
            Ok(json) => print_line(&json),
            Err(error) => eprintln!("error: cannot encode the result as JSON: {error}"),
        },
        Output::Table => {
            let mut table = Table::new();
            table.load_preset(NOTHING).set_header(header.to_vec());
            for row in rows {
                table.add_row(row.iter().map(|cell| printable(cell)).collect::<Vec<_>>());
            }
            print_line(table.to_string().trim_end());
        }
    }
}

/// Returns `cell` with control characters escaped (`\u{1b}`, `\n`), so that a name
/// or description cannot move the cursor or recolour the terminal of the person listing it.
fn printable(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len());
    for c in cell.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints a line of results; a write failure other than a closed pipe exits with 1.
fn print_line(line: &str) {
    if let Err(failure) = print_out(format!("{line}\n").as_bytes()) {
        eprintln!("error: {}", failure.message);
        std::process::exit(1);
    }
}

/// Reports an unusable server configuration, with a hint when the file given is a
/// client's (as `WATCHWORD_CONFIG` usually names).
fn server_config_failure(error: config::ConfigError) -> Failure {
    let mut message = error.to_string();
    if message.contains("unknown field `server`") {
        message.push_str("; this looks like a client configuration: serve, hsm and ca init read the server's, so pass --config with the server's file");
    }
    Failure { status: 78, message }
}

fn config_path(config: &Option<PathBuf>) -> Result<PathBuf, Failure> {
    config.clone().ok_or_else(|| Failure {
        status: 2,
        message: format!("no configuration file: pass --config FILE or set {CONFIG_ENV}"),
    })
}

fn client(config: &Option<PathBuf>) -> Result<ApiClient, Failure> {
    let path = config_path(config)?;
    let config: ClientConfig = config::load(&path).map_err(|e| Failure { status: 1, message: e.to_string() })?;
    match (&config.cert, &config.key, &config.token_file) {
        (Some(cert), Some(key), _) => Ok(ApiClient::new(&config.server, &config.ca, cert, key)?),
        (_, _, Some(token_file)) => {
            let token = std::fs::read_to_string(token_file).map_err(|e| Failure {
                status: 1,
                message: format!("cannot read the token file {}: {e}", token_file.display()),
            })?;
            Ok(ApiClient::with_token(&config.server, &config.ca, token.trim())?)
        }
        _ => Err(Failure { status: 1, message: "the client configuration has no credentials".to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("\u{1b}[31mRED\u{1b}[0m"), "\\u{1b}[31mRED\\u{1b}[0m");
        assert_eq!(printable("a\nb\u{1}"), "a\\nb\\u{1}");
        assert_eq!(printable("clé 🔑 a/b"), "clé 🔑 a/b");
    }
}
