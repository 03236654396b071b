//! `watchword-agent`: delivers the secrets a compute may read as files.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "watchword-agent", version, about = "Delivers the secrets this compute may read as files")]
struct Args {
    /// The agent's configuration file.
    #[arg(long, env = "WATCHWORD_AGENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Obtain a client certificate with a one-time enrolment token, then exit.
    Enrol {
        /// The server's enrolment endpoint, such as https://watchword.example:8444.
        #[arg(long)]
        server: String,
        /// CA certificate that issued the server's certificate.
        #[arg(long)]
        ca: PathBuf,
        /// The client name the operator registered.
        #[arg(long)]
        client: String,
        /// File holding the enrolment token (the token is never taken from the command line).
        #[arg(long, env = "WATCHWORD_ENROLMENT_TOKEN_FILE")]
        token_file: PathBuf,
        /// Output file of the certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Output file of the private key (PEM, mode 0600).
        #[arg(long)]
        key: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    watchword::logging::init("info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        Some(Command::Enrol { server, ca, client, token_file, cert, key }) => {
            let token = match std::fs::read_to_string(&token_file) {
                Ok(token) => zeroize::Zeroizing::new(token.trim().to_owned()),
                Err(error) => {
                    eprintln!("error: cannot read the token file {}: {error}", token_file.display());
                    return ExitCode::from(2);
                }
            };
            let enrolled = watchword::agent::enrolment::enrol(&server, &ca, &client, &token, &cert, &key);
            match runtime.block_on(enrolled) {
                Ok(not_after) => {
                    println!("enrolled as {client}; certificate {} valid until {not_after}", cert.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        None => run(&runtime, args.config),
    }
}

fn run(runtime: &tokio::runtime::Runtime, config: Option<PathBuf>) -> ExitCode {
    let Some(path) = config else {
        eprintln!("error: no configuration file: pass --config FILE or set WATCHWORD_AGENT_CONFIG");
        return ExitCode::from(2);
    };
    let config = match watchword::config::load::<watchword::config::AgentConfig>(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(78);
        }
    };
    match runtime.block_on(watchword::agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
