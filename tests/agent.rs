//! The agent delivers what it may read as files, atomically and inside its directory.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::stack::{Stack, eventually};
use watchword::client::PutOptions;

async fn file_content(path: &Path, expected: &[u8]) {
    eventually(&format!("{} to hold the expected content", path.display()), async || {
        (std::fs::read(path).ok()? == expected).then_some(())
    })
    .await;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn agent_writes_and_updates_file_with_mode_0400() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("app/db", b"first".to_vec(), &PutOptions::default()).await.unwrap();
    let secrets = stack.start_agent("agent-1");

    let file = secrets.join("app%2Fdb");
    file_content(&file, b"first").await;
    assert_eq!(mode(&file), 0o400);

    operator.put_secret("app/db", b"second".to_vec(), &PutOptions::default()).await.unwrap();
    file_content(&file, b"second").await;
    assert_eq!(mode(&file), 0o400);
}

#[tokio::test]
async fn agent_applies_mode_from_secret() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let options = PutOptions { mode: Some("0440".to_owned()), ..Default::default() };
    operator.put_secret("app/shared", b"x".to_vec(), &options).await.unwrap();
    let secrets = stack.start_agent("agent-1");

    let file = secrets.join("app%2Fshared");
    file_content(&file, b"x").await;
    assert_eq!(mode(&file), 0o440);
}

#[tokio::test]
async fn agent_receives_only_granted_secrets() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("infra/root", b"no".to_vec(), &PutOptions::default()).await.unwrap();
    operator.put_secret("app/yes", b"yes".to_vec(), &PutOptions::default()).await.unwrap();
    let secrets = stack.start_agent("agent-1");

    file_content(&secrets.join("app%2Fyes"), b"yes").await;
    let names: Vec<_> = std::fs::read_dir(&secrets).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.iter().filter(|n| !n.to_string_lossy().starts_with('.')).count(), 1, "{names:?}");
}

#[tokio::test]
async fn hostile_names_stay_inside_directory() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let hostile = ["app/../../escape", "app/%2e%2e", "app/.", "app/ ", "app/~txt"];
    for name in hostile {
        operator.put_secret(name, name.as_bytes().to_vec(), &PutOptions::default()).await.unwrap();
    }
    let secrets = stack.start_agent("agent-1");

    for name in hostile {
        let file = secrets.join(watchword_events::names::file_name(name).unwrap());
        file_content(&file, name.as_bytes()).await;
        assert_eq!(file.parent().unwrap(), secrets.as_path());
    }
    let agent_dir = secrets.parent().unwrap();
    assert!(!agent_dir.join("escape").exists());
    assert!(!stack.dir.path().join("escape").exists());
}

#[tokio::test]
async fn agent_keeps_files_while_server_down() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("app/db", b"first".to_vec(), &PutOptions::default()).await.unwrap();
    let secrets = stack.start_agent("agent-1");
    let file = secrets.join("app%2Fdb");
    file_content(&file, b"first").await;

    stack.kill_server();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(std::fs::read(&file).unwrap(), b"first", "the file survives the outage");

    stack.start_server();
    stack.client("operator").put_secret("app/db", b"second".to_vec(), &PutOptions::default()).await.unwrap();
    file_content(&file, b"second").await;
}

#[tokio::test]
async fn longest_file_name_delivered() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let name = format!("app/{}", "x".repeat(249));
    assert_eq!(watchword_events::names::file_name(&name).unwrap().len(), 255);
    operator.put_secret(&name, b"long".to_vec(), &PutOptions::default()).await.unwrap();
    let secrets = stack.start_agent("agent-1");

    file_content(&secrets.join(watchword_events::names::file_name(&name).unwrap()), b"long").await;
}

// Two worker threads, so that the client's connection tasks keep answering the
// server's GOAWAY while this thread waits for the server process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stops_promptly_during_long_poll() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let written = operator.put_secret("app/x", b"x".to_vec(), &PutOptions::default()).await.unwrap();
    let agent = stack.client("agent-1");
    let poll = tokio::spawn(async move { agent.watch(written.sequence, std::time::Duration::from_secs(60)).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let took = stack.terminate_server();
    // The long-poll would last 60 s and the shutdown grace is 20 s. Ending the poll
    // at shutdown lets the server exit well before either.
    assert!(took < std::time::Duration::from_secs(10), "the server took {took:?} to stop:\n{}", stack.server_log());
    assert!(poll.await.unwrap().is_ok(), "the long-poll got an answer");
}
