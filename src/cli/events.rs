//! `watchword events watch`: prints change notices as they arrive.

use std::time::Duration;

use clap::{Args, Subcommand};
use watchword_events::changes::NoticeKind;

use super::{Failure, Output, print_line, printable};
use crate::client::{ApiClient, ClientError, EventFilter, Notice};

/// Delay before reconnecting a feed that closed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub(super) enum EventsCommand {
    /// Print change notices (metadata only) as they arrive, until interrupted.
    /// Reconnects after a lost connection without missing or repeating a notice.
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub(super) struct WatchArgs {
    /// Only notices addressed to this group.
    #[arg(long)]
    group: Option<String>,
    /// Only notices about secrets whose name starts with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Only this kind of notice (created, updated, access_granted, ...); repeatable.
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// Start after this notice sequence (default: the server's current sequence).
    #[arg(long)]
    after: Option<u64>,
}

pub(super) async fn run(client: &ApiClient, output: Output, command: EventsCommand) -> Result<(), Failure> {
    let EventsCommand::Watch(args) = command;
    for kind in &args.kinds {
        if NoticeKind::parse(kind).is_none() {
            let known: Vec<&str> = NoticeKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(Failure {
                status: 2,
                message: format!("unknown kind {kind:?}; use one of {}", known.join(", ")),
            });
        }
    }
    let filter = EventFilter { group: args.group, prefix: args.prefix, kinds: args.kinds };
    // Starting from a known sequence makes every reconnection resumable.
    let mut after = match args.after {
        Some(after) => after,
        None => client.status().await?.applied_sequence,
    };

    let mut feed = client.events(&filter, Some(after)).await?;
    if output == Output::Table {
        print_line(&format!(
            "{:>10}  {:<16}  {:<7}  {:<30}  {:<16}  {:<27}  BY",
            "SEQUENCE", "KIND", "VERSION", "SECRET", "GROUPS", "TIME"
        ));
    }
    loop {
        let closed = match feed.next().await {
            Ok(Some(notice)) => {
                print_notice(output, &notice);
                after = notice.sequence;
                continue;
            }
            Ok(None) => "the server ended it".to_owned(),
            Err(error) => error.to_string(),
        };
        eprintln!("note: the event feed closed ({closed}); resuming after sequence {after}");
        feed = reconnect(client, &filter, after).await?;
    }
}

/// Opens the feed again, retrying while the server is unreachable or unavailable.
async fn reconnect(client: &ApiClient, filter: &EventFilter, after: u64) -> Result<crate::client::EventFeed, Failure> {
    loop {
        tokio::time::sleep(RECONNECT_DELAY).await;
        match client.events(filter, Some(after)).await {
            Ok(feed) => return Ok(feed),
            Err(error @ (ClientError::Unreachable { .. } | ClientError::Api { status: 503, .. })) => {
                eprintln!("note: cannot reopen the event feed yet: {error}");
            }
            Err(error) => return Err(error.into()),
        }
    }
}

fn print_notice(output: Output, notice: &Notice) {
    match output {
        Output::Json => match serde_json::to_string(notice) {
            Ok(json) => print_line(&json),
            Err(error) => eprintln!("error: cannot encode a notice as JSON: {error}"),
        },
        Output::Table => {
            let version = notice.version.map_or_else(|| "-".to_owned(), |v| v.to_string());
            let groups = if notice.groups.is_empty() { "-".to_owned() } else { notice.groups.join(",") };
            print_line(&format!(
                "{:>10}  {:<16}  {:<7}  {:<30}  {:<16}  {:<27}  {}",
                notice.sequence,
                notice.kind.as_str(),
                version,
                printable(&notice.secret),
                printable(&groups),
                notice.time,
                printable(&notice.actor)
            ));
        }
    }
}
