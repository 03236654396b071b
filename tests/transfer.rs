//! `watchword secret import` and `watchword secret export` against real servers.

mod common;

use std::path::Path;

use common::stack::Stack;
use watchword::client::{ApiClient, PutOptions};
use watchword::writer::MAX_CONTENT_BYTES;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_file(root: &Path, name: &str, content: &[u8]) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Returns the JSON report of an import run with `--output json`.
fn report(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}, stderr {:?}", text(&output.stdout), text(&output.stderr)))
}

/// Returns the `result` the report gives the entry `name`.
fn result_of(report: &serde_json::Value, name: &str) -> String {
    let entries = report["entries"].as_array().unwrap();
    let entry = entries.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("{name} in {report}"));
    entry["result"].as_str().unwrap().to_owned()
}

/// Returns the name, version and revision of each active secret.
async fn listing(client: &ApiClient) -> Vec<(String, u64, u64)> {
    let list = client.list_secrets_with(None, true).await.unwrap();
    list.secrets.iter().filter(|s| s.status == "active").map(|s| (s.name.clone(), s.version, s.revision)).collect()
}

#[tokio::test]
async fn directory_import_writes_every_file() {
    let stack = Stack::start().await;
    let source = tempfile::tempdir().unwrap();
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let at_limit: Vec<u8> = (0..MAX_CONTENT_BYTES).map(|i| (i % 251) as u8).collect();
    write_file(source.path(), "app/db/password", b"hunter2\n");
    write_file(source.path(), "app/tls/key.der", &binary);
    write_file(source.path(), "empty", b"");
    write_file(source.path(), "at-limit", &at_limit);

    let path = source.path().to_str().unwrap();
    let output = stack.cli("operator", &["--output", "json", "secret", "import", path], b"");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = report(&output);
    for name in ["app/db/password", "app/tls/key.der", "empty", "at-limit"] {
        assert_eq!(result_of(&report, name), "written", "{name}");
    }

    let operator = stack.client("operator");
    let expected: [(&str, &[u8]); 4] =
        [("app/db/password", b"hunter2\n"), ("app/tls/key.der", &binary), ("empty", b""), ("at-limit", &at_limit)];
    for (name, content) in expected {
        let read = operator.get_secret(name, None).await.unwrap();
        assert_eq!(read.content.as_slice(), content, "content of {name}");
    }
}

#[tokio::test]
async fn invalid_files_rejected_with_reasons() {
    let stack = Stack::start().await;
    let source = tempfile::tempdir().unwrap();
    write_file(source.path(), "ok", b"fine");
    write_file(source.path(), "over-limit", &vec![7; MAX_CONTENT_BYTES + 1]);
    std::os::unix::fs::symlink(source.path().join("ok"), source.path().join("link")).unwrap();
    let fifo = source.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());

    let path = source.path().to_str().unwrap();
    let output = stack.cli("operator", &["--output", "json", "secret", "import", path], b"");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let report = report(&output);
    assert_eq!(result_of(&report, "ok"), "written", "valid entries are written without --all-or-nothing");
    for (name, reason) in [("over-limit", "above the server's maximum"), ("link", "symbolic link"), ("fifo", "special")]
    {
        let entries = report["entries"].as_array().unwrap();
        let entry = entries.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(entry["result"], "failed", "{name}");
        assert!(entry["message"].as_str().unwrap().contains(reason), "{name}: {entry}");
    }
    let names: Vec<String> = listing(&stack.client("operator")).await.into_iter().map(|s| s.0).collect();
    assert_eq!(names, ["ok"]);
}

#[tokio::test]
async fn owner_group_applies_to_new_secrets() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let kept = PutOptions { description: Some("kept".to_owned()), ..Default::default() };
    operator.put_secret("existing", b"old".to_vec(), &kept).await.unwrap();
    let source = tempfile::tempdir().unwrap();
    write_file(source.path(), "existing", b"new");
    write_file(source.path(), "fresh", b"new");

    let path = source.path().to_str().unwrap();
    let output = stack.cli("operator", &["secret", "import", "--owner-group", "team", path], b"");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let fresh = operator.get_metadata("fresh").await.unwrap().metadata;
    assert_eq!(fresh.owner_group.as_deref(), Some("team"));
    let existing = operator.get_metadata("existing").await.unwrap().metadata;
    assert_eq!(existing.owner_group, None, "an existing secret keeps its metadata");
    assert_eq!(existing.description, "kept");
}

#[tokio::test]
async fn malformed_document_error_quotes_no_value() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    let document = r#"{"format": "watchword.secrets.v1", "secrets": [{"name": "a", "metadata": "hunter2"}]}"#;
    std::fs::write(&path, document).unwrap();

    let output = stack.cli("operator", &["secret", "import", path.to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("line 1, column"), "{}", text(&output.stderr));
    assert!(!text(&output.stderr).contains("hunter2"), "{}", text(&output.stderr));
}

#[tokio::test]
async fn oversized_file_with_all_or_nothing_writes_nothing() {
    let stack = Stack::start().await;
    let source = tempfile::tempdir().unwrap();
    write_file(source.path(), "a", b"first");
    write_file(source.path(), "b", &vec![7; MAX_CONTENT_BYTES + 1]);

    let path = source.path().to_str().unwrap();
    let output = stack.cli("operator", &["--output", "json", "secret", "import", "--all-or-nothing", path], b"");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let report = report(&output);
    assert_eq!(result_of(&report, "a"), "not_written");
    assert_eq!(result_of(&report, "b"), "failed");
    assert!(listing(&stack.client("operator")).await.is_empty(), "nothing was written");
}

#[tokio::test]
async fn dry_run_writes_nothing_and_prints_plan() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("existing", b"old".to_vec(), &PutOptions::default()).await.unwrap();
    let before = listing(&operator).await;
    let sequence_before = operator.status().await.unwrap().applied_sequence;

    let source = tempfile::tempdir().unwrap();
    write_file(source.path(), "existing", b"new");
    write_file(source.path(), "fresh", b"new");
    let path = source.path().to_str().unwrap();
    let output = stack.cli("operator", &["--output", "json", "secret", "import", "--dry-run", path], b"");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = report(&output);
    assert_eq!(report["dry_run"], true);
    let actions: Vec<(String, String, String)> = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
                e["result"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("existing".to_owned(), "update".to_owned(), "planned".to_owned()),
            ("fresh".to_owned(), "create".to_owned(), "planned".to_owned())
        ]
    );

    let table = stack.cli("operator", &["secret", "import", "--dry-run", path], b"");
    assert!(text(&table.stdout).contains("planned"), "{}", text(&table.stdout));
    assert!(text(&table.stderr).contains("nothing was written"), "{}", text(&table.stderr));

    assert_eq!(listing(&operator).await, before, "the list is unchanged");
    assert_eq!(operator.status().await.unwrap().applied_sequence, sequence_before, "no event was recorded");
}

/// Prepares an import for the `owner` client (role `owner:team`) whose last entry
/// the server rejects: a secret the owner cannot list already uses the file name
/// that entry requests, so validation passes. Returns the document's path.
async fn clashing_import(stack: &Stack, dir: &Path) -> std::path::PathBuf {
    let operator = stack.client("operator");
    operator.set_roles("spiffe://watchword.dev/owner", &["owner:team"]).await.unwrap();
    let hidden = PutOptions { file_name: Some("shared.env".to_owned()), ..Default::default() };
    operator.put_secret("other/hidden", b"x".to_vec(), &hidden).await.unwrap();
    let team = PutOptions { owner_group: Some("team".to_owned()), ..Default::default() };
    operator.put_secret("team/existing", b"old".to_vec(), &team).await.unwrap();

    let document = serde_json::json!({
        "format": "watchword.secrets.v1",
        "secrets": [
            {"name": "team/new", "content": "new", "metadata": {"owner_group": "team"}},
            {"name": "team/existing", "content": "changed", "metadata": {"owner_group": "team", "description": "changed"}},
            {"name": "team/clash", "content": "clash", "metadata": {"owner_group": "team", "file_name": "shared.env"}},
        ]
    });
    let path = dir.join("import.json");
    std::fs::write(&path, document.to_string()).unwrap();
    path
}

#[tokio::test]
async fn all_or_nothing_rolls_back_after_server_rejection() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = clashing_import(&stack, dir.path()).await;

    let args = ["--output", "json", "secret", "import", "--all-or-nothing", path.to_str().unwrap()];
    let output = stack.cli("owner", &args, b"");
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    let report = report(&output);
    assert_eq!(result_of(&report, "team/clash"), "failed");
    assert_eq!(result_of(&report, "team/new"), "rolled_back");
    assert_eq!(result_of(&report, "team/existing"), "rolled_back");
    assert_eq!(report["remaining"].as_array().unwrap().len(), 0);

    let operator = stack.client("operator");
    let active: Vec<String> = listing(&operator).await.into_iter().map(|s| s.0).collect();
    assert_eq!(active, ["other/hidden", "team/existing"], "no new secret is visible");
    let existing = operator.get_secret("team/existing", None).await.unwrap();
    assert_eq!(existing.content.as_slice(), b"old", "the content is back");
    let metadata = operator.get_metadata("team/existing").await.unwrap().metadata;
    assert_eq!(metadata.description, "", "the metadata is back");
}

#[tokio::test]
async fn rerun_after_rollback_writes_again() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = clashing_import(&stack, dir.path()).await;
    let args = ["--output", "json", "secret", "import", "--all-or-nothing", path.to_str().unwrap()];
    let failed = stack.cli("owner", &args, b"");
    assert_eq!(failed.status.code(), Some(4), "{}", text(&failed.stderr));

    // Within the duplicate window the first run's keys still return its writes,
    // which the rollback has since undone.
    let moved = stack.cli("operator", &["secret", "set-metadata", "other/hidden", "--file-name", "other.env"], b"");
    assert!(moved.status.success(), "{}", text(&moved.stderr));
    let again = stack.cli("owner", &args, b"");
    assert!(again.status.success(), "{}", text(&again.stderr));
    let report = report(&again);
    for name in ["team/new", "team/existing", "team/clash"] {
        assert_eq!(result_of(&report, name), "written", "{name}");
    }

    let operator = stack.client("operator");
    for (name, content) in [("team/new", b"new".as_slice()), ("team/existing", b"changed"), ("team/clash", b"clash")] {
        let read = operator.get_secret(name, None).await.unwrap();
        assert_eq!(read.content.as_slice(), content, "content of {name}");
    }
}

#[tokio::test]
async fn json_import_sets_metadata() {
    let stack = Stack::start().await;
    let document = serde_json::json!({
        "format": "watchword.secrets.v1",
        "secrets": [{
            "name": "db/password",
            "content": "s3cret",
            "metadata": {
                "description": "primary database",
                "labels": {"team": "payments", "tier": "a"},
                "file_name": "db.env",
                "mode": "0440"
            }
        }]
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.json");
    std::fs::write(&path, document.to_string()).unwrap();
    let output = stack.cli("operator", &["secret", "import", path.to_str().unwrap()], b"");
    assert!(output.status.success(), "{}", text(&output.stderr));

    let show = stack.cli("operator", &["--output", "json", "secret", "show", "db/password"], b"");
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["metadata"]["description"], "primary database");
    assert_eq!(shown["metadata"]["labels"]["team"], "payments");
    assert_eq!(shown["metadata"]["labels"]["tier"], "a");
    assert_eq!(shown["metadata"]["file_name"], "db.env");
    assert_eq!(shown["metadata"]["mode"], "0440");
    let read = stack.client("operator").get_secret("db/password", None).await.unwrap();
    assert_eq!(read.content.as_slice(), b"s3cret");
}

#[tokio::test]
async fn export_metadata_only_has_no_content() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let labelled = PutOptions { description: Some("for export".to_owned()), ..Default::default() };
    operator.put_secret("app/one", b"content-one-xyz".to_vec(), &labelled).await.unwrap();
    operator.put_secret("other", b"content-two-xyz".to_vec(), &PutOptions::default()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.json");
    let output = stack.cli("operator", &["secret", "export", "--out", out.to_str().unwrap(), "--prefix", "app/"], b"");
    assert!(output.status.success(), "{}", text(&output.stderr));

    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(!written.contains("content-one-xyz"), "no content bytes");
    assert!(!written.contains("content_base64"), "no content field");
    let document: serde_json::Value = serde_json::from_str(&written).unwrap();
    assert_eq!(document["format"], "watchword.secrets.v1");
    let secrets = document["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 1, "only the prefix");
    assert_eq!(secrets[0]["name"], "app/one");
    assert_eq!(secrets[0]["version"], 1);
    assert_eq!(secrets[0]["status"], "active");
    assert_eq!(secrets[0]["metadata"]["description"], "for export");
}

#[tokio::test]
async fn export_with_content_fails_on_unreadable() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("audited", b"x".to_vec(), &PutOptions::default()).await.unwrap();
    operator.set_roles("spiffe://watchword.dev/auditor", &["auditor"]).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.json");
    let out = out.to_str().unwrap();
    let failed = stack.cli("auditor", &["secret", "export", "--with-content", "--out", out], b"");
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed.stderr));
    assert!(text(&failed.stderr).contains("audited"), "names the secret: {}", text(&failed.stderr));
    assert!(!Path::new(out).exists(), "no partial file");

    let skipped = stack.cli("auditor", &["secret", "export", "--with-content", "--skip-unreadable", "--out", out], b"");
    assert!(skipped.status.success(), "{}", text(&skipped.stderr));
    assert!(text(&skipped.stderr).contains("exported without content: audited"), "{}", text(&skipped.stderr));
    let document: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    assert!(document["secrets"][0].get("content_base64").is_none());
}

#[tokio::test]
async fn export_then_import_round_trips() {
    let first = Stack::start().await;
    let operator = first.client("operator");
    let binary: Vec<u8> = (0..=255u8).rev().cycle().take(1000).collect();
    let options = PutOptions {
        description: Some("binary key".to_owned()),
        file_name: Some("key.bin".to_owned()),
        mode: Some("0440".to_owned()),
        ..Default::default()
    };
    operator.put_secret("app/key", binary.clone(), &options).await.unwrap();
    operator.put_secret("app/empty", Vec::new(), &PutOptions::default()).await.unwrap();
    operator.put_secret("db/pass word", b"v1".to_vec(), &PutOptions::default()).await.unwrap();
    operator.put_secret("db/pass word", b"v2".to_vec(), &PutOptions::default()).await.unwrap();
    let labels = first.cli("operator", &["secret", "set-metadata", "db/pass word", "--label", "team=db"], b"");
    assert!(labels.status.success(), "{}", text(&labels.stderr));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all.json");
    let out = out.to_str().unwrap();
    let exported = first.cli("operator", &["secret", "export", "--with-content", "--out", out], b"");
    assert!(exported.status.success(), "{}", text(&exported.stderr));

    let second = Stack::start().await;
    let imported = second.cli("operator", &["secret", "import", out], b"");
    assert!(imported.status.success(), "{}\n{}", text(&imported.stdout), text(&imported.stderr));

    let target = second.client("operator");
    let names = |list: Vec<(String, u64, u64)>| list.into_iter().map(|s| s.0).collect::<Vec<_>>();
    assert_eq!(names(listing(&target).await), names(listing(&operator).await));
    for name in ["app/key", "app/empty", "db/pass word"] {
        let original = operator.get_secret(name, None).await.unwrap();
        let copy = target.get_secret(name, None).await.unwrap();
        assert_eq!(copy.content.as_slice(), original.content.as_slice(), "content of {name}");
        let original = operator.get_metadata(name).await.unwrap().metadata;
        let copy = target.get_metadata(name).await.unwrap().metadata;
        assert_eq!(copy, original, "metadata of {name}");
    }
}

#[tokio::test]
async fn rerun_creates_no_new_versions() {
    let stack = Stack::start().await;
    let source = tempfile::tempdir().unwrap();
    write_file(source.path(), "one", b"1");
    write_file(source.path(), "dir/two", b"2");
    let path = source.path().to_str().unwrap();

    let first = stack.cli("operator", &["secret", "import", path], b"");
    assert!(first.status.success(), "{}", text(&first.stderr));
    let operator = stack.client("operator");
    let after_first = listing(&operator).await;

    let again = stack.cli("operator", &["--output", "json", "secret", "import", path], b"");
    assert!(again.status.success(), "{}", text(&again.stderr));
    let replayed = report(&again);
    assert_eq!(result_of(&replayed, "one"), "already_written");
    assert_eq!(result_of(&replayed, "dir/two"), "already_written");
    assert_eq!(listing(&operator).await, after_first, "no new version");

    let unchanged = stack.cli("operator", &["--output", "json", "secret", "import", "--skip-unchanged", path], b"");
    assert!(unchanged.status.success(), "{}", text(&unchanged.stderr));
    assert_eq!(result_of(&report(&unchanged), "one"), "skipped");
    assert_eq!(listing(&operator).await, after_first, "no new version");

    write_file(source.path(), "one", b"changed");
    let changed = stack.cli("operator", &["--output", "json", "secret", "import", path], b"");
    assert!(changed.status.success(), "{}", text(&changed.stderr));
    let changed = report(&changed);
    assert_eq!(result_of(&changed, "one"), "written", "changed content gets a new key");
    assert_eq!(result_of(&changed, "dir/two"), "already_written");
    assert_eq!(operator.list_versions("one").await.unwrap().versions.len(), 2);
    assert_eq!(operator.list_versions("dir/two").await.unwrap().versions.len(), 1);
}
