//! The `watchword` command line against a real server: outputs and exit statuses.

mod common;

use common::stack::Stack;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn put_get_list_round_trip() {
    let stack = Stack::start().await;
    let put = stack.cli("operator", &["secret", "put", "db/pass word", "--stdin"], b"line\n");
    assert!(put.status.success(), "{}", text(&put.stderr));

    let get = stack.cli("operator", &["secret", "get", "db/pass word"], b"");
    assert_eq!(get.stdout, b"line\n", "content with its trailing newline");

    let list = stack.cli("operator", &["--output", "json", "secret", "list"], b"");
    let json: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(json["secrets"][0]["name"], "db/pass word");
}

#[tokio::test]
async fn exit_statuses_match_documentation() {
    let stack = Stack::start().await;
    let missing = stack.cli("operator", &["secret", "get", "nope"], b"");
    assert_eq!(missing.status.code(), Some(3), "not found: {}", text(&missing.stderr));

    stack.cli("operator", &["secret", "put", "once", "--stdin"], b"x");
    let conflict = stack.cli("operator", &["secret", "put", "once", "--stdin", "--if-absent"], b"y");
    assert_eq!(conflict.status.code(), Some(4), "conflict: {}", text(&conflict.stderr));

    let denied = stack.cli("agent-1", &["secret", "put", "app/x", "--stdin"], b"y");
    assert_eq!(denied.status.code(), Some(6), "denied: {}", text(&denied.stderr));

    let usage = stack.cli("operator", &["secret", "put", "x"], b"");
    assert_eq!(usage.status.code(), Some(2), "usage: {}", text(&usage.stderr));
}

#[tokio::test]
async fn invalid_name_rejected_with_message() {
    let stack = Stack::start().await;
    let output = stack.cli("operator", &["secret", "put", "..", "--stdin"], b"x");
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("invalid name"), "{}", text(&output.stderr));
}

#[tokio::test]
async fn application_group_created_from_parts() {
    let stack = Stack::start().await;
    let created = stack.cli("operator", &["group", "app", "acme", "shop", "prod", "--create"], b"");
    assert!(created.status.success(), "{}", text(&created.stderr));
    let show = stack.cli("operator", &["--output", "json", "group", "show", "/acme/shop/prod"], b"");
    let json: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(json["name"], "/acme/shop/prod");

    let ambiguous = stack.cli("operator", &["group", "app", "acme/x", "shop", "prod"], b"");
    assert_eq!(ambiguous.status.code(), Some(2));
    assert!(text(&ambiguous.stderr).contains("invalid application org \"acme/x\""), "{}", text(&ambiguous.stderr));
}

#[tokio::test]
async fn get_out_replaces_file_with_private_one() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::start().await;
    stack.cli("operator", &["secret", "put", "k", "--stdin"], b"secret");
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("existing");
    std::fs::write(&existing, b"old").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"not to be touched").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    for path in [&existing, &link] {
        let output = stack.cli("operator", &["secret", "get", "k", "--out", path.to_str().unwrap()], b"");
        assert!(output.status.success(), "{}", text(&output.stderr));
        let metadata = std::fs::symlink_metadata(path).unwrap();
        assert!(metadata.is_file(), "{} is a regular file now", path.display());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "{}", path.display());
        assert_eq!(std::fs::read(path).unwrap(), b"secret");
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"not to be touched", "the link was not followed");
}

#[tokio::test]
async fn write_failure_on_stdout_reported() {
    let stack = Stack::start().await;
    stack.cli("operator", &["secret", "put", "k", "--stdin"], b"no newline");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let certs = stack.certs();
    let config = stack.dir.path().join("cli-operator.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_watchword"))
        .args(["secret", "get", "k"])
        .env("WATCHWORD_CONFIG", &config)
        .stdout(full)
        .output()
        .unwrap();
    let _ = certs;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("cannot write to standard output"));
}
