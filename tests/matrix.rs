//! The authorization matrix: every role against every management and secret route.

mod common;

use common::stack::Stack;
use reqwest::Method;
use watchword::client::{ApiClient, ClientError, Conditions, CreateRequest, PutOptions};

const ROLES: [&str; 5] = ["operator", "auditor", "owner", "automation", "nobody"];

fn id(name: &str) -> String {
    format!("spiffe://watchword.dev/{name}")
}

fn create(name: &str, owner: &str) -> CreateRequest {
    CreateRequest { name: name.to_owned(), owner_group: Some(owner.to_owned()), description: String::new() }
}

/// Outcome of one call: allowed, denied (403) or hidden (404).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Outcome {
    Allowed,
    Denied,
    Hidden,
}

fn outcome<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Allowed,
        Err(ClientError::Api { status: 403, .. }) => Outcome::Denied,
        Err(ClientError::Api { status: 404, .. }) => Outcome::Hidden,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// Runs every operation as `role`, on entities named after the role so that the
/// rows do not interfere; returns the outcomes in a fixed order.
async fn row(operator: &ApiClient, caller: &ApiClient, role: &str) -> Vec<(&'static str, Outcome)> {
    // Fixtures made by the administrator, owned by group "team" or "other".
    let (client_t, group_t) = (format!("c-{role}"), format!("g-{role}"));
    operator.create_client(&create(&client_t, "team")).await.unwrap();
    operator.create_group(&create(&group_t, "team")).await.unwrap();
    operator.create_client(&create(&format!("m-{role}"), "team")).await.unwrap();
    // A group to delete: a group that holds grants cannot be deleted.
    let deletable = format!("d-{role}");
    operator.create_group(&create(&deletable, "team")).await.unwrap();

    vec![
        ("put secret", outcome(caller.put_secret(&format!("s-{role}"), b"x".to_vec(), &PutOptions::default()).await)),
        ("get secret", outcome(caller.get_secret("shared", None).await)),
        ("list clients", outcome(caller.list_clients().await)),
        ("list groups", outcome(caller.list_groups().await)),
        ("list operators", outcome(caller.list_operators().await)),
        ("create client in scope", outcome(caller.create_client(&create(&format!("n-{role}"), "team")).await)),
        ("create client out of scope", outcome(caller.create_client(&create(&format!("o-{role}"), "other")).await)),
        ("disable client in scope", outcome(caller.command(Method::POST, &["clients", &client_t, "disable"]).await)),
        ("create group in scope", outcome(caller.create_group(&create(&format!("h-{role}"), "team")).await)),
        (
            "add member in scope",
            outcome(caller.command(Method::PUT, &["groups", &group_t, "members", &format!("m-{role}")]).await),
        ),
        ("add grant", outcome(caller.command(Method::PUT, &["groups", &group_t, "grants", "shared"]).await)),
        ("set roles", outcome(caller.set_roles(&id("nobody"), &[]).await)),
        ("delete group in scope", outcome(caller.command(Method::DELETE, &["groups", &deletable]).await)),
    ]
}

#[tokio::test]
async fn every_role_against_every_route() {
    use Outcome::{Allowed as A, Denied as D, Hidden as H};
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("shared", b"content".to_vec(), &PutOptions::default()).await.unwrap();
    operator.set_roles(&id("auditor"), &["auditor"]).await.unwrap();
    operator.set_roles(&id("owner"), &["owner:team"]).await.unwrap();
    operator.set_roles(&id("automation"), &["automation:team"]).await.unwrap();

    // Columns: operator (admin), auditor, owner:team, automation:team, and the
    // `nobody` certificate, which has no role.
    let expected: [(&str, [Outcome; 5]); 13] = [
        ("put secret", [A, D, D, D, D]),
        ("get secret", [A, H, H, H, H]),
        ("list clients", [A, A, A, A, D]),
        ("list groups", [A, A, A, A, D]),
        ("list operators", [A, A, A, A, D]),
        ("create client in scope", [A, D, A, A, D]),
        ("create client out of scope", [A, D, D, D, D]),
        ("disable client in scope", [A, D, A, A, D]),
        ("create group in scope", [A, D, A, A, D]),
        ("add member in scope", [A, D, A, A, D]),
        ("add grant", [A, D, D, D, D]),
        ("set roles", [A, D, D, D, D]),
        ("delete group in scope", [A, D, A, D, D]),
    ];

    for (column, role) in ROLES.iter().enumerate() {
        let outcomes = row(&operator, &stack.client(role), role).await;
        for ((operation, got), (expected_operation, cells)) in outcomes.iter().zip(expected.iter()) {
            assert_eq!(operation, expected_operation);
            assert_eq!(*got, cells[column], "{role}: {operation}");
        }
    }
}

#[tokio::test]
async fn auditor_lists_all_metadata_without_content() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let written = operator.put_secret("audited", b"content".to_vec(), &PutOptions::default()).await.unwrap();
    operator.set_roles(&id("auditor"), &["auditor"]).await.unwrap();

    let auditor = stack.client("auditor");
    let list = auditor.list_secrets(Some(written.sequence)).await.unwrap();
    assert_eq!(list.secrets.len(), 1);
    assert!(matches!(auditor.get_secret("audited", None).await, Err(ClientError::Api { status: 404, .. })));
}

#[tokio::test]
async fn removed_role_takes_effect() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.set_roles(&id("owner"), &["owner:team"]).await.unwrap();
    let owner = stack.client("owner");
    owner.create_group(&create("first", "team")).await.unwrap();

    operator.set_roles(&id("owner"), &[]).await.unwrap();
    let denied = owner.create_group(&create("second", "team")).await;
    assert!(matches!(denied, Err(ClientError::Api { status: 403, .. })), "{denied:?}");
}

#[tokio::test]
async fn invalid_role_rejected() {
    let stack = Stack::start().await;
    let error = stack.client("operator").set_roles(&id("owner"), &["root"]).await.unwrap_err();
    assert!(matches!(&error, ClientError::Api { status: 400, .. }), "{error}");
    assert!(error.to_string().contains("invalid role \"root\""), "{error}");
}

/// Runs every secret operation as `role` on secrets named after it: `t-<role>`,
/// owned by group "team", and `o-<role>`, owned by group "other".
async fn secret_row(operator: &ApiClient, caller: &ApiClient, role: &str) -> Vec<(&'static str, Outcome)> {
    let (team, other) = (format!("t-{role}"), format!("o-{role}"));
    let owned_by = |group: &str| PutOptions { owner_group: Some(group.to_owned()), ..Default::default() };
    for content in [b"one".as_slice(), b"two"] {
        operator.put_secret(&team, content.to_vec(), &owned_by("team")).await.unwrap();
    }
    operator.put_secret(&other, b"x".to_vec(), &owned_by("other")).await.unwrap();
    operator.create_group(&create(&format!("r-{role}"), "team")).await.unwrap();
    let none = Conditions::default();
    let rollback = serde_json::json!({ "version": 1 });
    let metadata = watchword::secrets::metadata::MetadataJson {
        owner_group: Some("team".to_owned()),
        description: "changed".to_owned(),
        ..Default::default()
    };

    vec![
        (
            "create owned by team",
            outcome(caller.put_secret(&format!("n-{role}"), b"x".to_vec(), &owned_by("team")).await),
        ),
        (
            "create owned by other",
            outcome(caller.put_secret(&format!("p-{role}"), b"x".to_vec(), &owned_by("other")).await),
        ),
        ("update team secret", outcome(caller.put_secret(&team, b"three".to_vec(), &PutOptions::default()).await)),
        ("update other secret", outcome(caller.put_secret(&other, b"y".to_vec(), &PutOptions::default()).await)),
        ("show team secret", outcome(caller.get_metadata(&team).await)),
        ("list team versions", outcome(caller.list_versions(&team).await)),
        ("read current content", outcome(caller.get_secret(&team, None).await)),
        ("read earlier version", outcome(caller.get_version(&team, 1).await)),
        ("set metadata", outcome(caller.put_metadata(&team, &metadata, &none).await)),
        (
            "grant team secret",
            outcome(caller.command(Method::PUT, &["groups", &format!("r-{role}"), "grants", &team]).await),
        ),
        (
            "grant other secret",
            outcome(caller.command(Method::PUT, &["groups", &format!("r-{role}"), "grants", &other]).await),
        ),
        ("roll back", outcome(caller.secret_command(Method::POST, &team, "rollback", Some(&rollback), &none).await)),
        (
            "destroy version",
            outcome(caller.secret_command(Method::POST, &team, "versions/1/destroy", None, &none).await),
        ),
        ("delete", outcome(caller.secret_command(Method::DELETE, &team, "", None, &none).await)),
        ("restore", outcome(caller.secret_command(Method::POST, &team, "restore", None, &none).await)),
        ("destroy other secret", outcome(caller.secret_command(Method::POST, &other, "destroy", None, &none).await)),
    ]
}

#[tokio::test]
async fn secret_owners_manage_only_their_secrets() {
    use Outcome::{Allowed as A, Denied as D, Hidden as H};
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.set_roles(&id("auditor"), &["auditor"]).await.unwrap();
    operator.set_roles(&id("owner"), &["owner:team"]).await.unwrap();
    operator.set_roles(&id("automation"), &["automation:team"]).await.unwrap();

    // Columns as in every_role_against_every_route. Changes are refused with 403;
    // reading content that the caller may not read looks like a missing secret.
    let expected: [(&str, [Outcome; 5]); 16] = [
        ("create owned by team", [A, D, A, A, D]),
        ("create owned by other", [A, D, D, D, D]),
        ("update team secret", [A, D, A, A, D]),
        ("update other secret", [A, D, D, D, D]),
        ("show team secret", [A, A, A, A, H]),
        ("list team versions", [A, A, A, A, H]),
        ("read current content", [A, H, A, H, H]),
        ("read earlier version", [A, H, A, H, H]),
        ("set metadata", [A, D, A, A, D]),
        ("grant team secret", [A, D, A, A, D]),
        ("grant other secret", [A, D, D, D, D]),
        ("roll back", [A, D, A, A, D]),
        ("destroy version", [A, D, A, D, D]),
        ("delete", [A, D, A, A, D]),
        ("restore", [A, D, A, A, D]),
        ("destroy other secret", [A, D, D, D, D]),
    ];

    for (column, role) in ROLES.iter().enumerate() {
        let outcomes = secret_row(&operator, &stack.client(role), role).await;
        for ((operation, got), (expected_operation, cells)) in outcomes.iter().zip(expected.iter()) {
            assert_eq!(operation, expected_operation);
            assert_eq!(*got, cells[column], "{role}: {operation}");
        }
    }
}
