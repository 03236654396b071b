//! Error responses: every failed request gets the JSON error body with a stable code,
//! including requests that axum rejects before any handler runs, and the CLI maps
//! the failures of token configurations to its documented exit statuses.

mod common;

use common::stack::Stack;
use reqwest::{Method, StatusCode};
use watchword::client::{ApiClient, ClientError, CreateRequest, PutOptions};

const OWNER: &str = "spiffe://watchword.dev/owner";

/// Content that must never appear in an error message.
const MARKER: &str = "hunter2-do-not-echo";

/// A JSON error response.
#[derive(Debug)]
struct ErrorResponse {
    status: StatusCode,
    code: String,
    message: String,
    allow: Option<String>,
}

/// Sends `request` and returns its response, which must have a JSON error body.
async fn error_response(request: reqwest::RequestBuilder) -> ErrorResponse {
    let response = request.send().await.expect("send the request");
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    assert_eq!(content_type.as_deref(), Some("application/json"), "{status}: {text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let field = |name: &str| body[name].as_str().unwrap_or_else(|| panic!("no {name} in {text}")).to_owned();
    ErrorResponse { status, code: field("code"), message: field("message"), allow }
}

/// Returns an HTTP client with the certificate of `identity`, and the server's URL.
fn mtls(stack: &Stack, identity: &str) -> (reqwest::Client, String) {
    let certs = stack.certs();
    let client = watchword::tls::http_client(
        &certs.join("ca.crt"),
        &certs.join(format!("{identity}.crt")),
        &certs.join(format!("{identity}.key")),
    )
    .unwrap();
    (client, stack.server_url.clone())
}

fn json_post(http: &reqwest::Client, url: String, body: &str) -> reqwest::RequestBuilder {
    http.post(url).header("content-type", "application/json").body(body.to_owned())
}

#[tokio::test]
async fn malformed_json_body_rejected_as_json() {
    let stack = Stack::start().await;
    let (http, server) = mtls(&stack, "operator");

    let response = error_response(json_post(&http, format!("{server}/v1/groups"), "{bad json")).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.code, "invalid_request");
    assert!(response.message.starts_with("invalid JSON body: key must be a string at line 1"), "{response:?}");

    let response = error_response(http.post(format!("{server}/v1/groups")).body("{}")).await;
    assert_eq!(response.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(response.code, "unsupported_media_type");
}

#[tokio::test]
async fn unknown_json_field_rejected_as_json() {
    let stack = Stack::start().await;
    let (http, server) = mtls(&stack, "operator");

    let body = format!(r#"{{"name": "web", "{MARKER}": 1}}"#);
    let response = error_response(json_post(&http, format!("{server}/v1/groups"), &body)).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.code, "invalid_request");
    assert!(response.message.contains("unknown field, expected one of `name`"), "{response:?}");
    assert!(!response.message.contains(MARKER), "{response:?}");
}

#[tokio::test]
async fn rejected_body_never_echoed() {
    let stack = Stack::start().await;
    let (http, server) = mtls(&stack, "operator");
    let versions = format!("{server}/v1/secrets/db/versions");
    let bodies = [
        (versions.clone(), format!(r#"{{"content_base64": ["{MARKER}"]}}"#)),
        (versions.clone(), format!(r#"{{"content_base64": "{MARKER}", "expires_at": 1}}"#)),
        (versions.clone(), format!(r#"{{"content_base64": "{MARKER}"#)),
        (versions, format!(r#"{{"content_base64": "x", "metadata": {{"mode": ["{MARKER}"]}}}}"#)),
        (format!("{server}/v1/secrets/db/rollback"), format!(r#"{{"version": "{MARKER}"}}"#)),
        (format!("{server}/v1/groups"), format!(r#"{{"name": true, "description": "{MARKER}", "x": 1}}"#)),
    ];
    for (url, body) in bodies {
        let response = error_response(json_post(&http, url, &body)).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{body}: {response:?}");
        assert_eq!(response.code, "invalid_request", "{body}: {response:?}");
        assert!(!response.message.contains(MARKER), "{body}: {response:?}");
        assert!(!response.message.contains("hunter2"), "{body}: {response:?}");
    }
}

#[tokio::test]
async fn invalid_utf8_in_path_rejected_as_json() {
    let stack = Stack::start().await;
    let (http, server) = mtls(&stack, "operator");

    let response = error_response(http.get(format!("{server}/v1/secrets/%ff"))).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.code, "invalid_request");
    assert!(response.message.starts_with("invalid path: the name segment is not valid UTF-8"), "{response:?}");

    let response = error_response(http.get(format!("{server}/v1/secrets/db/versions/first"))).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.message, "invalid path: the version segment must be a u64");
}

#[tokio::test]
async fn invalid_query_rejected_as_json() {
    let stack = Stack::start().await;
    let (http, server) = mtls(&stack, "operator");

    let response = error_response(http.get(format!("{server}/v1/events?after=abc"))).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.code, "invalid_request");
    assert_eq!(response.message, "invalid query string: after: invalid digit found in string");

    let response = error_response(http.get(format!("{server}/v1/secrets?{MARKER}=1"))).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.message.starts_with("invalid query string: unknown field, expected"), "{response:?}");
}

#[tokio::test]
async fn unencoded_slash_gets_not_found_hint() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("db/password", b"x".to_vec(), &PutOptions::default()).await.unwrap();
    let (http, server) = mtls(&stack, "operator");

    let response = error_response(http.get(format!("{server}/v1/secrets/db/password"))).await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(response.code, "not_found");
    assert!(response.message.contains("percent-encoded"), "{response:?}");
    assert!(response.message.contains("%2F"), "{response:?}");

    let encoded = http.get(format!("{server}/v1/secrets/db%2Fpassword")).send().await.unwrap();
    assert_eq!(encoded.status(), StatusCode::OK, "the encoded name reads the secret");
}

#[tokio::test]
async fn unsupported_method_rejected_as_json() {
    let stack = Stack::start().await;
    let (http, server) = mtls(&stack, "operator");

    let response = error_response(http.delete(format!("{server}/v1/status"))).await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.code, "method_not_allowed");
    assert!(response.message.starts_with("method DELETE is not allowed on /v1/status"), "{response:?}");
    assert_eq!(response.allow.as_deref(), Some("GET,HEAD"));
}

#[tokio::test]
async fn denial_names_the_required_role() {
    let stack = Stack::start().await;
    stack.client("operator").set_roles(OWNER, &["owner:team"]).await.unwrap();
    let owner = stack.client("owner");

    let request =
        CreateRequest { name: "web".to_owned(), owner_group: Some("shop".to_owned()), description: String::new() };
    let Err(ClientError::Api { status, code, message, .. }) = owner.create_group(&request).await else {
        panic!("an owner of another group created a group");
    };
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert!(
        message.ends_with(r#"needs the role admin, owner:shop or automation:shop (the owner group is "shop")"#),
        "{message}"
    );

    let Err(ClientError::Api { message, .. }) = owner.set_roles(OWNER, &["admin"]).await else {
        panic!("an owner set roles");
    };
    assert!(message.ends_with("needs the role admin"), "{message}");
}

#[tokio::test]
async fn token_denied_on_certificate_routes() {
    let mut stack = Stack::start().await;
    let public = stack.enable_enrolment();
    let operator = stack.client("operator");
    operator.put_secret("db", MARKER.as_bytes().to_vec(), &PutOptions::default()).await.unwrap();
    operator.set_roles(OWNER, &["admin"]).await.unwrap();
    let token = operator.create_operator_token(OWNER, Some(600)).await.unwrap().token;
    let http = watchword::tls::anonymous_http_client(&stack.certs().join("ca.crt")).unwrap();
    let owner = url_of(OWNER);

    let denied = [
        (Method::GET, "/v1/secrets/db".to_owned(), ""),
        (Method::POST, format!("/v1/operators/{owner}/tokens"), "{}"),
        (Method::PUT, format!("/v1/operators/{owner}/roles"), r#"{"roles": ["admin"]}"#),
        (Method::GET, "/v1/secrets/db/versions/1".to_owned(), ""),
    ];
    for (method, path, body) in denied {
        let request = http.request(method.clone(), format!("{public}{path}")).bearer_auth(&token);
        let response = error_response(request.header("content-type", "application/json").body(body)).await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{method} {path}: {response:?}");
        assert_eq!(response.code, "forbidden", "{method} {path}");
        assert!(response.message.contains("cannot read secret content, set roles or issue tokens"), "{response:?}");
        assert!(response.message.contains("client certificate"), "{response:?}");
        assert!(!response.message.contains(MARKER), "{response:?}");
    }

    let anonymous = error_response(http.get(format!("{public}/v1/secrets/db"))).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "a token is checked before the route");
    let unknown = error_response(http.get(format!("{public}/v1/nothing")).bearer_auth(&token)).await;
    assert_eq!((unknown.status, unknown.code.as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let wrong_method = error_response(http.delete(format!("{public}/v1/status")).bearer_auth(&token)).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    let enrol = error_response(http.get(format!("{public}/v1/enrol"))).await;
    assert_eq!(enrol.status, StatusCode::METHOD_NOT_ALLOWED);

    let versions = operator.list_versions("db").await.unwrap().versions;
    assert_eq!(versions.len(), 1, "no denied write ran");
}

#[tokio::test]
async fn token_cli_exits_denied_on_certificate_routes() {
    let mut stack = Stack::start().await;
    let public = stack.enable_enrolment();
    let operator = stack.client("operator");
    operator.put_secret("db", b"x".to_vec(), &PutOptions::default()).await.unwrap();
    operator.set_roles(OWNER, &["admin"]).await.unwrap();
    let token = operator.create_operator_token(OWNER, Some(600)).await.unwrap().token;

    let commands: [&[&str]; 3] =
        [&["secret", "get", "db"], &["operator", "token", OWNER], &["operator", "set-roles", OWNER, "admin"]];
    for args in commands {
        let output = stack.cli_with_token(&public, &token, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(6), "{args:?}: {stderr}");
        assert!(stderr.contains("does not accept operator tokens"), "{args:?}: {stderr}");
        assert!(stderr.contains("(forbidden, HTTP 403)"), "{args:?}: {stderr}");
    }

    let listed = stack.cli_with_token(&public, &token, &["secret", "list"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
}

#[tokio::test]
async fn token_on_certificate_port_explained() {
    let mut stack = Stack::start().await;
    let _public = stack.enable_enrolment();
    let operator = stack.client("operator");
    let token = operator.create_operator_token(OWNER, Some(600)).await.unwrap().token;

    let output = stack.cli_with_token(&stack.server_url, &token, &["group", "list"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("requires a client certificate on this port"), "{stderr}");
    assert!(stderr.contains("public_listen"), "{stderr}");

    // The server closes the connection at a moment that varies, and reqwest reports
    // the TLS alert or only a closed connection; both must be recognized.
    let ca = stack.certs().join("ca.crt");
    for attempt in 0..6 {
        let client = ApiClient::with_token(&stack.server_url, &ca, &token).unwrap();
        let result =
            if attempt % 2 == 0 { client.list_groups().await.map(drop) } else { client.status().await.map(drop) };
        assert!(matches!(result, Err(ClientError::CertificateRequired { .. })), "attempt {attempt}: {result:?}");
    }
}

#[tokio::test]
async fn unreachable_token_server_still_unreachable() {
    let stack = Stack::start().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("https://{}", listener.local_addr().unwrap());
    drop(listener);

    let output = stack.cli_with_token(&closed, "ww1.x.y", &["group", "list"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("cannot reach the server"), "{stderr}");
}

/// Percent-encodes an identity as one path segment.
fn url_of(identity: &str) -> String {
    identity.replace(':', "%3A").replace('/', "%2F")
}
