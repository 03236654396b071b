//! `watchword-replay`: verify Watchword's event history without trusting the servers.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use watchword_events::verify::RootKeys;
use watchword_replay::export::{ExportRequest, export};
use watchword_replay::output::{Format, Table, parse_time};
use watchword_replay::query::{self, HISTORY_COLUMNS, Point};
use watchword_replay::source::Source;
use watchword_replay::{Check, Pin, ReplayError, Report, SkipList, model, verify};

/// Exit status when the history does not verify, or two read models differ.
const EXIT_FAILED: u8 = 1;
/// Exit status for an invalid command line.
const EXIT_USAGE: u8 = 2;
/// Exit status when the stream, archive or read model cannot be read (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Debug, Parser)]
#[command(name = "watchword-replay", version, about = "Verify and query Watchword's event history offline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Source of the history: a live stream (default) or an archive.
#[derive(Debug, Args)]
struct SourceArgs {
    /// NATS server holding the stream.
    #[arg(long, default_value = "nats://127.0.0.1:4222", conflicts_with = "archive")]
    nats: String,
    /// Name of the event stream.
    #[arg(long, default_value = "WATCHWORD_EVENTS")]
    stream: String,
    /// Archive written by `watchword-replay export`, read instead of NATS.
    #[arg(long)]
    archive: Option<PathBuf>,
    #[command(flatten)]
    skips: SkipArgs,
}

/// Messages accepted as not being events.
#[derive(Debug, Args)]
struct SkipArgs {
    /// Stream sequence of a message that is not an event, as listed in the
    /// server's projector.skip_sequences: it is not decoded or applied, and
    /// checkpoints cover it by the SHA-256 of its bytes; repeatable. A listed
    /// sequence that holds a valid event fails verification.
    #[arg(long = "skip-sequence", value_name = "SEQUENCE")]
    sequences: Vec<u64>,
}

impl SkipArgs {
    fn list(&self) -> SkipList {
        SkipList::new(self.sequences.iter().copied())
    }
}

/// Trusted HSM root public keys.
#[derive(Debug, Args)]
struct RootArgs {
    /// Trusted HSM root public key (64 hex digits, from `watchword hsm root-key`);
    /// repeatable. Queries and rebuild on an archive default to the keys it records.
    #[arg(long = "root-key")]
    root_keys: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify every signature, hash chain, checkpoint and stream sequence.
    ///
    /// Exit status 0 when everything verifies, 1 at the first failure (named with
    /// its stream sequence and check), 2 for an invalid command line, 69 when the
    /// stream or archive cannot be read.
    Verify {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        roots: RootArgs,
        /// Checkpoint that an earlier audit printed, as SEQUENCE:HASH. Verification
        /// fails if the history no longer contains it (truncation) or it differs.
        #[arg(long = "pin-checkpoint")]
        pin: Option<Pin>,
        /// Check signatures on the thread that folds, as queries do, rather than on
        /// a thread of their own; for comparing speed.
        #[arg(long)]
        sequential: bool,
    },
    /// Copy a live stream into an archive that ends with a fresh checkpoint.
    Export {
        /// NATS server holding the stream.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Name of the event stream.
        #[arg(long, default_value = "WATCHWORD_EVENTS")]
        stream: String,
        /// Archive file to write; it appears only once complete.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        roots: RootArgs,
        /// Seconds to wait for a checkpoint that covers the stream's last event.
        #[arg(long, default_value_t = 10)]
        wait_secs: u64,
        /// Export up to the last event even when no checkpoint covers it in time.
        #[arg(long)]
        allow_uncovered: bool,
        /// The archive records these messages as skipped, so verifying it needs
        /// no --skip-sequence.
        #[command(flatten)]
        skips: SkipArgs,
    },
    /// Show every secret, version, client, group, membership and grant at a point.
    State {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        roots: RootArgs,
        /// Time, RFC 3339 (such as 2026-12-04T22:00:00Z); default: the end.
        #[arg(long, conflicts_with = "seq")]
        at: Option<String>,
        /// Stream sequence; default: the end.
        #[arg(long)]
        seq: Option<u64>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// List every change of a secret and of the grants on it, with actor and time.
    History {
        /// Name of the secret.
        secret: String,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        roots: RootArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show which clients could read a secret at a time, and through which grant.
    Access {
        /// Name of the secret.
        #[arg(long)]
        secret: String,
        /// Time, RFC 3339; default: the end.
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        roots: RootArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Build a fresh redb read model from the history.
    Rebuild {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        roots: RootArgs,
        /// New read-model file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Compare two read models and name every difference (exit status 1 if any).
    Diff {
        first: PathBuf,
        second: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(code) => code,
        Err(error) => report_error(&error),
    }
}

async fn run(command: Command) -> Result<ExitCode, ReplayError> {
    match command {
        Command::Verify { source, roots, pin, sequential } => {
            let skips = source.skips.list();
            let source = source.into_source();
            let roots = parse_roots(&roots.root_keys, None)?;
            let report = if sequential {
                verify::verify_sequential(&source, &roots, pin, &skips).await?
            } else {
                verify::verify(&source, &roots, pin, &skips).await?
            };
            print_verified(&report);
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { nats, stream, out, roots, wait_secs, allow_uncovered, skips } => {
            let root_keys = parse_raw_keys(&roots.root_keys)?;
            let skips = skips.list();
            let request = ExportRequest {
                url: &nats,
                stream: &stream,
                out: &out,
                root_keys: &root_keys,
                wait: Duration::from_secs(wait_secs),
                allow_uncovered,
                skips: &skips,
            };
            let manifest = export(&request).await?;
            println!(
                "exported {} messages (sequences {}..={}) to {}",
                manifest.messages,
                manifest.first_sequence,
                manifest.last_sequence,
                out.display()
            );
            if manifest.last_checkpoint_sequence > 0 {
                println!(
                    "ends with checkpoint {}:{}",
                    manifest.last_checkpoint_sequence,
                    hex::encode(manifest.last_checkpoint_hash)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::State { source, roots, at, seq, output } => {
            let point = match (at, seq) {
                (Some(at), _) => Point::Time(parse_time(&at).map_err(ReplayError::Usage)?),
                (None, Some(seq)) => Point::Sequence(seq),
                (None, None) => Point::End,
            };
            let (source, roots, skips) = source_and_roots(source, &roots)?;
            let report = query::replay_to(&source, &roots, point, &skips, |_, _| {}).await?;
            eprintln!("state at stream sequence {}", report.last_sequence);
            print!("{}", query::state_table(&report.state).render(output));
            Ok(ExitCode::SUCCESS)
        }
        Command::History { secret, source, roots, output } => {
            let (source, roots, skips) = source_and_roots(source, &roots)?;
            let mut table = Table::new(&HISTORY_COLUMNS);
            query::replay_to(&source, &roots, Point::End, &skips, |recorded, _| {
                if let Some(row) = query::history_row(recorded, &secret) {
                    table.push(row);
                }
            })
            .await?;
            print!("{}", table.render(output));
            Ok(ExitCode::SUCCESS)
        }
        Command::Access { secret, at, source, roots, output } => {
            let point = match at {
                Some(at) => Point::Time(parse_time(&at).map_err(ReplayError::Usage)?),
                None => Point::End,
            };
            let (source, roots, skips) = source_and_roots(source, &roots)?;
            let report = query::replay_to(&source, &roots, point, &skips, |_, _| {}).await?;
            eprintln!("access at stream sequence {}", report.last_sequence);
            print!("{}", query::access_table(&report.state, &secret)?.render(output));
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild { source, roots, out } => {
            let (source, roots, skips) = source_and_roots(source, &roots)?;
            let last = model::rebuild(&source, &roots, &skips, &out).await?;
            println!("rebuilt {} up to stream sequence {last}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff { first, second, output } => {
            let table = model::diff(&first, &second)?;
            if table.rows.is_empty() {
                eprintln!("the read models are identical");
                return Ok(ExitCode::SUCCESS);
            }
            print!("{}", table.render(output));
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

impl SourceArgs {
    fn into_source(self) -> Source {
        match self.archive {
            Some(path) => Source::Archive(path),
            None => Source::Nats { url: self.nats, stream: self.stream },
        }
    }
}

/// Returns the source, the root keys to trust (those given, or an archive's own)
/// and the messages to skip.
fn source_and_roots(source: SourceArgs, roots: &RootArgs) -> Result<(Source, RootKeys, SkipList), ReplayError> {
    let skips = source.skips.list();
    let source = source.into_source();
    let recorded = if roots.root_keys.is_empty() { source.recorded_root_keys()? } else { None };
    let roots = parse_roots(&roots.root_keys, recorded)?;
    Ok((source, roots, skips))
}

fn print_verified(report: &Report) {
    println!(
        "verified {} events up to stream sequence {}: {} secrets, {} signing keys, {} checkpoints",
        report.events,
        report.last_sequence,
        report.state.secrets.len(),
        report.state.signing_keys.len(),
        report.checkpoints
    );
    match &report.last_checkpoint {
        Some(checkpoint) => println!(
            "newest checkpoint: stream sequence {}, hash {} (covers {}..={}); pin it with --pin-checkpoint {}:{}",
            checkpoint.sequence,
            hex::encode(checkpoint.hash),
            checkpoint.body.first_sequence,
            checkpoint.body.last_sequence,
            checkpoint.sequence,
            hex::encode(checkpoint.hash)
        ),
        None => println!("no checkpoint: nothing pins this history yet"),
    }
    if !report.skipped.is_empty() {
        let sequences: Vec<String> = report.skipped.iter().map(u64::to_string).collect();
        println!(
            "skipped {} messages that are not events (--skip-sequence): stream sequences {}",
            report.skipped.len(),
            sequences.join(", ")
        );
    }
    let uncovered = report.uncovered();
    if uncovered > 0 {
        println!("not yet covered by a checkpoint: {uncovered} events, up to stream sequence {}", report.last_sequence);
    }
}

fn report_error(error: &ReplayError) -> ExitCode {
    let check = error.check();
    match check {
        Check::Usage => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_USAGE)
        }
        Check::Source => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        _ => {
            match error.sequence() {
                Some(sequence) => {
                    eprintln!("verification failed at stream sequence {sequence} (check: {}): {error}", check.as_str())
                }
                None => eprintln!("verification failed (check: {}): {error}", check.as_str()),
            }
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn parse_raw_keys(keys: &[String]) -> Result<Vec<[u8; 32]>, ReplayError> {
    let mut raw = Vec::new();
    for key in keys {
        let bytes =
            hex::decode(key.trim()).map_err(|_| ReplayError::Usage(format!("root key {key:?} is not hexadecimal")))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ReplayError::Usage(format!("root key {key:?} must be 32 bytes (64 hex digits)")))?;
        raw.push(bytes);
    }
    Ok(raw)
}

/// Parses the given root keys; with none given, trusts `recorded` (an archive's own).
fn parse_roots(keys: &[String], recorded: Option<Vec<[u8; 32]>>) -> Result<RootKeys, ReplayError> {
    let raw = match (keys.is_empty(), recorded) {
        (false, _) => parse_raw_keys(keys)?,
        (true, Some(recorded)) if !recorded.is_empty() => recorded,
        _ => return Err(ReplayError::Usage("give the trusted HSM root public key with --root-key".to_owned())),
    };
    RootKeys::new(&raw).map_err(|e| ReplayError::Usage(format!("root key is not a valid Ed25519 public key: {e}")))
}
