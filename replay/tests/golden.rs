//! An archive written by the first release with checkpoints stays verifiable and
//! queryable by every later release.
//!
//! `tests/golden/history-v1.wwa` is never rewritten once released. The constants
//! below were printed when it was written (`WATCHWORD_BLESS=1`), and a later
//! release must accept the file with them unchanged.

mod common;

use std::path::{Path, PathBuf};

use common::history::{Stream, root_key};
use common::{replay, write_archive};
use watchword_events::body::KIND_CLIENT_DISABLED;

/// The root public key that signed the archive's certification and checkpoints,
/// the root key of `events/tests/vectors/keys.json`.
const ROOT_KEY_HEX: &str = "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";

/// The archive's last checkpoint, as `verify` prints it for `--pin-checkpoint`.
const PIN: &str = "13:831ed2acfeb51f14a7fe59b3c08f25f496f7b825afb8dc5f899011dda9946111";

fn golden_archive() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/history-v1.wwa")
}

/// Builds the history of the golden archive: secrets, a group, a client, grants,
/// a disabled client and three checkpoints, the last one last.
fn golden_history() -> Stream {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db/password");
    stream.create_group("payments");
    stream.create_client("web-1");
    stream.add_member("payments", "web-1");
    stream.add_grant("payments", "db/password");
    stream.checkpoint();
    stream.add_version("db/password");
    stream.add_version("api key");
    stream.checkpoint();
    stream.add_grant("payments", "api key");
    stream.client_event("web-1", KIND_CLIENT_DISABLED);
    stream.checkpoint();
    stream
}

/// Writes the archive once per test run when `WATCHWORD_BLESS=1`, and prints its pin.
fn bless_if_requested() {
    static BLESS: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("WATCHWORD_BLESS").is_none_or(|value| value != "1") {
        return;
    }
    BLESS.call_once(write_golden);
}

fn write_golden() {
    let stream = golden_history();
    let last = stream.messages.last().expect("a message");
    write_archive(&golden_archive(), &stream.messages);
    println!("root key {}", hex::encode(root_key().verifying_key().to_bytes()));
    println!("pin {}:{}", last.sequence, hex::encode(last.hash));
}

#[test]
fn golden_archive_verifies_with_pin() {
    bless_if_requested();
    let archive = golden_archive();
    let output = replay(&[
        "verify",
        "--archive",
        archive.to_str().unwrap(),
        "--root-key",
        ROOT_KEY_HEX,
        "--pin-checkpoint",
        PIN,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("verified 13 events up to stream sequence 13"), "{stdout}");
    assert!(stdout.contains("3 checkpoints"), "{stdout}");
    assert!(!stdout.contains("not yet covered"), "{stdout}");
}

#[test]
fn golden_archive_answers_state_query() {
    bless_if_requested();
    let archive = golden_archive();
    let output =
        replay(&["state", "--archive", archive.to_str().unwrap(), "--root-key", ROOT_KEY_HEX, "--output", "csv"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.split("\r\n").collect();
    assert!(lines.iter().any(|l| l.starts_with("secret,db/password,2,2,8,")), "{stdout}");
    assert!(lines.iter().any(|l| l.starts_with("secret,api key,1,1,9,")), "{stdout}");
    assert!(lines.iter().any(|l| l.starts_with("client,web-1,,,12,") && l.contains("disabled")), "{stdout}");
    assert!(lines.contains(&"grant,payments,,,,,,may read secret api key"), "{stdout}");
    assert!(lines.contains(&"membership,payments,,,,,,client web-1 is a member"), "{stdout}");
}
