//! SoftHSM2 tokens for integration tests.
//!
//! SoftHSM reads the file named by `SOFTHSM2_CONF` once per process, at
//! C_Initialize, and a test cannot set an environment variable without
//! `unsafe`. So a test that opens the HSM in-process runs its body in a child
//! process of the test binary, started with `SOFTHSM2_CONF` pointing at a token
//! that the parent created for that test alone. [`softhsm_test!`] writes both
//! halves:
//!
//! ```ignore
//! softhsm_test! {
//!     async fn opens_token(token) {
//!         let hsm = Hsm::open(&token.config()).unwrap();
//!     }
//! }
//! ```
//!
//! expands to a test `opens_token`, which creates the token and runs the
//! ignored test `opens_token::child` in a child process, where `token` is the
//! [`TestToken`] of the parent.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;
use watchword::hsm::{HsmConfig, PIN_ENV};

/// Label of the token that [`TestToken::create`] initializes.
pub const TOKEN_LABEL: &str = "watchword-test";

/// Environment variable through which the parent test passes the token
/// directory to its child process.
const CHILD_TOKEN_DIR_ENV: &str = "WATCHWORD_TEST_SOFTHSM_DIR";

/// SoftHSM2 token in a directory of its own, initialized with a random user PIN.
#[derive(Debug)]
pub struct TestToken {
    /// Directory that contains `softhsm2.conf`, `tokens/` and `user-pin`.
    pub dir: PathBuf,
    /// SoftHSM configuration file, the value for `SOFTHSM2_CONF`.
    pub conf: PathBuf,
    /// File that contains the user PIN.
    pub pin_file: PathBuf,
    /// Temporary directory that owns `dir` in the parent process. It is `None`
    /// in the child, which must leave the directory to the parent.
    _temp_dir: Option<TempDir>,
}

impl TestToken {
    /// Creates a token labelled [`TOKEN_LABEL`] in a new temporary directory
    /// with `ops/softhsm-init`.
    pub fn create() -> TestToken {
        let temp_dir = tempfile::tempdir().expect("create a temporary directory");
        let dir = temp_dir.path().to_owned();
        let pin_file = dir.join("user-pin");

        let conf = run_softhsm_init(&dir, TOKEN_LABEL, &pin_file);
        assert_eq!(conf, dir.join("softhsm2.conf"));
        TestToken { dir, conf, pin_file, _temp_dir: Some(temp_dir) }
    }

    /// Returns the parent's token in a child process started by [`run_child`],
    /// or `None` in any other process.
    pub fn from_child_env() -> Option<TestToken> {
        let dir = PathBuf::from(std::env::var_os(CHILD_TOKEN_DIR_ENV)?);
        Some(TestToken { conf: dir.join("softhsm2.conf"), pin_file: dir.join("user-pin"), dir, _temp_dir: None })
    }

    /// Returns an HSM configuration for this token that may generate missing
    /// keys and uses two sessions.
    pub fn config(&self) -> HsmConfig {
        HsmConfig {
            token_label: TOKEN_LABEL.to_owned(),
            pin_file: Some(self.pin_file.clone()),
            create_missing_keys: true,
            sessions: 2,
            ..HsmConfig::default()
        }
    }

    /// Returns the user PIN.
    pub fn pin(&self) -> String {
        let pin = std::fs::read_to_string(&self.pin_file).expect("read the user PIN file");
        pin.trim().to_owned()
    }
}

/// Runs `ops/softhsm-init` and returns the path it prints after `SOFTHSM2_CONF=`.
pub fn run_softhsm_init(dir: &Path, label: &str, pin_file: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/softhsm-init");
    let output = Command::new(&script)
        .arg("--dir")
        .arg(dir)
        .arg("--label")
        .arg(label)
        .arg("--pin-file")
        .arg(pin_file)
        .output()
        .unwrap_or_else(|error| panic!("run {}: {error}", script.display()));
    assert!(
        output.status.success(),
        "{} failed with {}: {}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output of softhsm-init");
    let conf = stdout
        .trim_end()
        .strip_prefix("SOFTHSM2_CONF=")
        .unwrap_or_else(|| panic!("unexpected output of softhsm-init: {stdout:?}"));
    PathBuf::from(conf)
}

/// Runs the test named `test_name` of this test binary in a child process with
/// `SOFTHSM2_CONF` set for `token`, and panics with its output if it fails.
///
/// The child also gets the user PIN in [`PIN_ENV`], which only a configuration
/// without `pin_file` reads.
pub fn run_child(test_name: &str, token: &TestToken) {
    let test_binary = std::env::current_exe().expect("path of the test binary");
    let output = Command::new(test_binary)
        .args([test_name, "--exact", "--ignored", "--nocapture"])
        .env("SOFTHSM2_CONF", &token.conf)
        .env(CHILD_TOKEN_DIR_ENV, &token.dir)
        .env(PIN_ENV, token.pin())
        .output()
        .expect("start the child test process");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // An exact filter that matches no test also exits with success, so the
    // count of passed tests is checked as well.
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "child test {test_name} failed with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

/// Defines a test whose async body runs in a child process against a fresh
/// SoftHSM token, as the module documentation shows. Invoke it at the root of a
/// test crate, because the child is found by the path `name::child`.
macro_rules! softhsm_test {
    ($(#[$attribute:meta])* async fn $name:ident($token:ident) $body:block) => {
        $(#[$attribute])*
        #[test]
        fn $name() {
            let token = $crate::common::softhsm::TestToken::create();
            $crate::common::softhsm::run_child(concat!(stringify!($name), "::child"), &token);
        }

        mod $name {
            use super::*;

            #[tokio::test]
            #[ignore = "runs only as the child process of the test of the same name"]
            async fn child() {
                let Some($token) = $crate::common::softhsm::TestToken::from_child_env() else {
                    eprintln!("skipped: this test runs only as a child of its parent test");
                    return;
                };
                $body
            }
        }
    };
}

pub(crate) use softhsm_test;
