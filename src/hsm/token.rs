//! Loading the PKCS#11 module, finding the token and logging in.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use tracing::warn;
use zeroize::Zeroizing;

use super::{HsmConfig, HsmError, PIN_ENV};

/// PIN files larger than this are rejected, because a PIN is at most a few
/// hundred bytes and a larger file is almost certainly the wrong file.
const MAX_PIN_FILE_LEN: u64 = 4096;

/// Reads the user PIN from the PIN file, or else from [`PIN_ENV`].
pub(super) fn read_pin(config: &HsmConfig) -> Result<AuthPin, HsmError> {
    let (pin, origin) = match &config.pin_file {
        Some(path) => (read_pin_file(path)?, format!("PIN file {}", path.display())),
        None => (read_pin_env()?, format!("environment variable {PIN_ENV}")),
    };

    let pin = pin.trim();
    if pin.is_empty() {
        return Err(HsmError::PinInvalid { origin, reason: "it is empty" });
    }
    Ok(AuthPin::from(pin))
}

fn read_pin_file(path: &Path) -> Result<Zeroizing<String>, HsmError> {
    let unreadable = |source| HsmError::PinFileUnreadable { path: path.to_owned(), source };
    let file = File::open(path).map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;

    if metadata.len() > MAX_PIN_FILE_LEN {
        return Err(HsmError::PinInvalid {
            origin: format!("PIN file {}", path.display()),
            reason: "the file is larger than 4096 bytes",
        });
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        warn!(
            pin.file = %path.display(),
            "the HSM PIN file can be read by other users; restrict it with chmod 600"
        );
    }

    // Reserving the whole length up front keeps `read_to_string` from
    // reallocating, which would leave copies of the PIN in freed memory.
    let mut pin = Zeroizing::new(String::with_capacity(MAX_PIN_FILE_LEN as usize + 1));
    file.take(MAX_PIN_FILE_LEN).read_to_string(&mut pin).map_err(unreadable)?;
    Ok(pin)
}

fn read_pin_env() -> Result<Zeroizing<String>, HsmError> {
    match std::env::var(PIN_ENV) {
        Ok(pin) => Ok(Zeroizing::new(pin)),
        Err(std::env::VarError::NotPresent) => Err(HsmError::PinMissing),
        Err(std::env::VarError::NotUnicode(_)) => Err(HsmError::PinInvalid {
            origin: format!("environment variable {PIN_ENV}"),
            reason: "it is not valid UTF-8",
        }),
    }
}

pub(super) fn load_module(path: &Path) -> Result<Pkcs11, HsmError> {
    let pkcs11 = Pkcs11::new(path).map_err(|source| HsmError::ModuleLoad { path: path.to_owned(), source })?;

    // An earlier `Hsm::open` in this process, or another library, may have
    // initialized the module already, and it is usable either way. Nothing calls
    // C_Finalize, because that would end the other users' sessions too.
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(pkcs11),
        Err(source) => Err(HsmError::ModuleInitialize { path: path.to_owned(), source }),
    }
}

/// Finds the slot whose initialized token has the configured label.
pub(super) fn find_token(pkcs11: &Pkcs11, config: &HsmConfig) -> Result<Slot, HsmError> {
    let list_error = |source| HsmError::TokenList { path: config.module.clone(), source };
    let slots = pkcs11.get_slots_with_initialized_token().map_err(list_error)?;

    let mut seen = Vec::with_capacity(slots.len());
    let mut matching = Vec::new();
    for slot in slots {
        let info = pkcs11.get_token_info(slot).map_err(list_error)?;
        let label = info.label().trim_end().to_owned();
        if label == config.token_label {
            matching.push(slot);
        }
        seen.push(label);
    }

    match matching.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(HsmError::TokenNotFound { label: config.token_label.clone(), module: config.module.clone(), seen }),
        _ => Err(HsmError::DuplicateToken {
            label: config.token_label.clone(),
            module: config.module.clone(),
            count: matching.len(),
        }),
    }
}

/// Opens the session that finds the keys. It is read-write only when it may
/// have to generate keys, because token objects can only be created in a
/// read-write session.
pub(super) fn open_session(pkcs11: &Pkcs11, slot: Slot, config: &HsmConfig) -> Result<Session, HsmError> {
    let session = if config.create_missing_keys { pkcs11.open_rw_session(slot) } else { pkcs11.open_ro_session(slot) };
    session.map_err(|source| HsmError::OpenSession { token: config.token_label.clone(), source })
}

pub(super) fn login(session: &Session, pin: &AuthPin, config: &HsmConfig) -> Result<(), HsmError> {
    // The login state belongs to the application, not to one session. So when
    // another `Hsm` in this process is already logged in, the token reports
    // CKR_USER_ALREADY_LOGGED_IN and this session is logged in as well.
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(source) => Err(HsmError::Login { token: config.token_label.clone(), source }),
    }
}
