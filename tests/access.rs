//! Clients, groups, memberships and grants decide who reads what, on every path.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::stack::{Stack, eventually};
use reqwest::Method;
use watchword::client::{ApiClient, ClientError, CreateRequest, PutOptions};

const READER: &str = "spiffe://watchword.dev/reader";

fn create(name: &str) -> CreateRequest {
    CreateRequest { name: name.to_owned(), owner_group: None, description: String::new() }
}

/// Creates group `app`, grants it `app-db` and `app-tls`, and makes `reader` a member.
async fn grant_reader(operator: &ApiClient) -> u64 {
    for secret in ["app-db", "app-tls", "other"] {
        operator.put_secret(secret, secret.as_bytes().to_vec(), &PutOptions::default()).await.unwrap();
    }
    operator.create_group(&create("app")).await.unwrap();
    operator.create_client(&create(READER)).await.unwrap();
    for secret in ["app-db", "app-tls"] {
        operator.command(Method::PUT, &["groups", "app", "grants", secret]).await.unwrap();
    }
    operator.command(Method::PUT, &["groups", "app", "members", READER]).await.unwrap().sequence
}

fn not_found(result: Result<watchword::client::SecretContent, ClientError>) -> bool {
    matches!(result, Err(ClientError::Api { status: 404, .. }))
}

fn files(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

async fn agent_files(dir: &Path, expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    eventually(&format!("agent files {expected:?}"), async || (files(dir) == expected).then_some(())).await;
}

#[tokio::test]
async fn member_reads_only_granted_secrets() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let reader = stack.client("reader");
    assert!(not_found(reader.get_secret("app-db", None).await), "no access before the grant");

    let sequence = grant_reader(&operator).await;
    assert_eq!(reader.get_secret("app-db", Some(sequence)).await.unwrap().content.as_slice(), b"app-db");
    assert!(not_found(reader.get_secret("other", Some(sequence)).await));
    let names: BTreeSet<String> =
        reader.list_secrets(Some(sequence)).await.unwrap().secrets.into_iter().map(|s| s.name).collect();
    assert_eq!(names, BTreeSet::from(["app-db".to_owned(), "app-tls".to_owned()]));
}

#[tokio::test]
async fn revocation_applies_on_read_list_and_agent() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let reader = stack.client("reader");
    grant_reader(&operator).await;
    let secrets = stack.start_agent("reader");
    agent_files(&secrets, &["app-db", "app-tls"]).await;

    let disabled = operator.command(Method::POST, &["clients", READER, "disable"]).await.unwrap();
    assert!(not_found(reader.get_secret("app-db", Some(disabled.sequence)).await), "read path");
    assert!(reader.list_secrets(Some(disabled.sequence)).await.unwrap().secrets.is_empty(), "list path");
    agent_files(&secrets, &[]).await;

    let enabled = operator.command(Method::POST, &["clients", READER, "enable"]).await.unwrap();
    assert!(reader.get_secret("app-db", Some(enabled.sequence)).await.is_ok());
    agent_files(&secrets, &["app-db", "app-tls"]).await;

    let removed = operator.command(Method::DELETE, &["groups", "app", "grants", "app-tls"]).await.unwrap();
    assert!(not_found(reader.get_secret("app-tls", Some(removed.sequence)).await));
    agent_files(&secrets, &["app-db"]).await;

    let left = operator.command(Method::DELETE, &["groups", "app", "members", READER]).await.unwrap();
    assert!(not_found(reader.get_secret("app-db", Some(left.sequence)).await));
    agent_files(&secrets, &[]).await;
}

#[tokio::test]
async fn recreated_client_starts_without_memberships() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    grant_reader(&operator).await;

    operator.command(Method::DELETE, &["clients", READER]).await.unwrap();
    let created = operator.create_client(&create(READER)).await.unwrap();
    assert!(not_found(stack.client("reader").get_secret("app-db", Some(created.sequence)).await));
    let group = operator.get_group("app").await.unwrap();
    assert_eq!(group.members, Some(vec![]));
}

#[tokio::test]
async fn deleted_group_gives_no_access() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    grant_reader(&operator).await;

    // A group with grants is not deleted, so that each revocation has its own notice.
    let refused = operator.command(Method::DELETE, &["groups", "app"]).await.unwrap_err();
    assert!(matches!(&refused, ClientError::Api { status: 409, .. }), "{refused}");
    assert!(refused.to_string().contains("still has grants on 2 secrets (app-db, app-tls)"), "{refused}");

    for secret in ["app-db", "app-tls"] {
        operator.command(Method::DELETE, &["groups", "app", "grants", secret]).await.unwrap();
    }
    let deleted = operator.command(Method::DELETE, &["groups", "app"]).await.unwrap();
    assert!(not_found(stack.client("reader").get_secret("app-db", Some(deleted.sequence)).await));

    // Re-creating the group starts it without the old members.
    operator.create_group(&create("app")).await.unwrap();
    let granted = operator.command(Method::PUT, &["groups", "app", "grants", "app-db"]).await.unwrap();
    assert!(not_found(stack.client("reader").get_secret("app-db", Some(granted.sequence)).await));
}

#[tokio::test]
async fn concurrent_group_creations_one_succeeds() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let attempts = (0..50).map(|_| {
        let operator = operator.clone();
        tokio::spawn(async move { operator.create_group(&create("contested")).await })
    });
    let results: Vec<_> = futures::future::join_all(attempts).await.into_iter().map(Result::unwrap).collect();

    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for result in results.into_iter().filter(Result::is_err) {
        assert!(matches!(result, Err(ClientError::Api { status: 409, .. })), "{result:?}");
    }
}

#[tokio::test]
async fn concurrent_client_creations_one_succeeds() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let attempts = (0..50).map(|_| {
        let operator = operator.clone();
        tokio::spawn(async move { operator.create_client(&create(READER)).await })
    });
    let results: Vec<_> = futures::future::join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
}

#[tokio::test]
async fn non_operator_cannot_manage() {
    let stack = Stack::start().await;
    let reader = stack.client("reader");
    let calls = [
        reader.create_group(&create("g")).await.map(|_| ()),
        reader.create_client(&create("c")).await.map(|_| ()),
        reader.command(Method::PUT, &["groups", "g", "members", READER]).await.map(|_| ()),
        reader.command(Method::PUT, &["groups", "g", "grants", "s"]).await.map(|_| ()),
        reader.list_clients().await.map(|_| ()),
        reader.list_groups().await.map(|_| ()),
    ];
    for (index, call) in calls.into_iter().enumerate() {
        assert!(matches!(call, Err(ClientError::Api { status: 403, .. })), "call {index}: {call:?}");
    }
}

#[tokio::test]
async fn commands_on_missing_or_wrong_state_fail_clearly() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.create_client(&create(READER)).await.unwrap();
    let missing = operator.command(Method::PUT, &["groups", "none", "members", READER]).await.unwrap_err();
    assert!(matches!(&missing, ClientError::Api { status: 404, .. }), "{missing}");
    assert!(missing.to_string().contains("group \"none\" not found"), "{missing}");

    operator.create_group(&create("app")).await.unwrap();
    let absent = operator.command(Method::PUT, &["groups", "app", "members", "nobody"]).await.unwrap_err();
    assert!(absent.to_string().contains("client \"nobody\" not found"), "{absent}");

    let twice = operator.command(Method::POST, &["clients", READER, "enable"]).await.unwrap_err();
    assert!(matches!(&twice, ClientError::Api { status: 409, .. }), "{twice}");
    assert!(twice.to_string().contains("already enabled"), "{twice}");
}
