//! Operator tokens: signed, expiring, revocable, and accepted only on the public endpoint.

mod common;

use common::stack::Stack;
use watchword::client::{ApiClient, ClientError, CreateRequest, PutOptions};

const OWNER: &str = "spiffe://watchword.dev/owner";

fn create(name: &str) -> CreateRequest {
    CreateRequest { name: name.to_owned(), owner_group: Some("team".to_owned()), description: String::new() }
}

fn with_token(stack: &Stack, public: &str, token: &str) -> ApiClient {
    ApiClient::with_token(public, &stack.certs().join("ca.crt"), token).unwrap()
}

fn status(result: Result<impl std::fmt::Debug, ClientError>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(ClientError::Api { status, .. }) => status,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
async fn token_acts_with_operator_roles() {
    let mut stack = Stack::start().await;
    let public = stack.enable_enrolment();
    let operator = stack.client("operator");
    operator.set_roles(OWNER, &["owner:team"]).await.unwrap();
    let issued = operator.create_operator_token(OWNER, Some(600)).await.unwrap();

    let owner = with_token(&stack, &public, &issued.token);
    owner.create_group(&create("by-token")).await.unwrap();
    assert_eq!(operator.get_group("by-token").await.unwrap().created_by, OWNER);
    assert_eq!(status(owner.list_clients().await), 200);
    assert_eq!(status(owner.put_secret("x", b"x".to_vec(), &PutOptions::default()).await), 403, "roles still apply");
}

#[tokio::test]
async fn token_routes_exclude_content_and_minting() {
    let mut stack = Stack::start().await;
    let public = stack.enable_enrolment();
    let operator = stack.client("operator");
    operator.put_secret("db", b"x".to_vec(), &PutOptions::default()).await.unwrap();
    let issued = operator.create_operator_token(OWNER, Some(600)).await.unwrap();
    operator.set_roles(OWNER, &["admin"]).await.unwrap();

    let admin = with_token(&stack, &public, &issued.token);
    assert_ne!(status(admin.get_secret("db", None).await), 200, "no content through a token");
    assert_ne!(status(admin.create_operator_token(OWNER, None).await), 200, "no minting through a token");
    assert_ne!(status(admin.set_roles(OWNER, &["admin"]).await), 200, "no role changes through a token");
    assert_eq!(status(admin.list_secrets(None).await), 200);
}

#[tokio::test]
async fn revoked_expired_and_forged_tokens_rejected() {
    let mut stack = Stack::start().await;
    let public = stack.enable_enrolment();
    let operator = stack.client("operator");
    operator.set_roles(OWNER, &["owner:team"]).await.unwrap();

    let revoked = operator.create_operator_token(OWNER, Some(600)).await.unwrap();
    assert_eq!(status(with_token(&stack, &public, &revoked.token).list_groups().await), 200);
    let path = ["operators", OWNER, "tokens", revoked.token_id.as_str()];
    operator.command(reqwest::Method::DELETE, &path).await.unwrap();
    assert_eq!(status(with_token(&stack, &public, &revoked.token).list_groups().await), 401);

    let expiring = operator.create_operator_token(OWNER, Some(1)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(status(with_token(&stack, &public, &expiring.token).list_groups().await), 401);

    let valid = operator.create_operator_token(OWNER, Some(600)).await.unwrap().token;
    let mut forged = valid.clone().into_bytes();
    let middle = forged.len() / 2;
    forged[middle] = if forged[middle] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(status(with_token(&stack, &public, &forged).list_groups().await), 401);
    assert_eq!(status(with_token(&stack, &public, "ww1.garbage").list_groups().await), 401);
}

#[tokio::test]
async fn public_endpoint_requires_a_token() {
    let mut stack = Stack::start().await;
    let public = stack.enable_enrolment();
    let http = watchword::tls::anonymous_http_client(&stack.certs().join("ca.crt")).unwrap();
    let response = http.get(format!("{public}/v1/groups")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");
}

#[tokio::test]
async fn revoking_unknown_or_revoked_token_fails() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let token = operator.create_operator_token(OWNER, Some(600)).await.unwrap();
    let revoke = |id: &str| {
        let path = ["operators", OWNER, "tokens", id].map(str::to_owned);
        let operator = operator.clone();
        async move {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            operator.command(reqwest::Method::DELETE, &path).await
        }
    };

    assert_eq!(status(revoke("not-a-uuid").await), 400);
    assert_eq!(status(revoke(&uuid::Uuid::now_v7().to_string()).await), 404, "a typo must not report success");
    assert_eq!(status(revoke(&token.token_id).await), 200);
    assert_eq!(status(revoke(&token.token_id).await), 409, "revoking twice records nothing new");
}
