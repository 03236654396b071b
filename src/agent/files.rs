//! The agent's target directory: atomic writes and removal of secret files.
//!
//! The agent owns every file in the directory whose name does not start with `.`.
//! Secret file names never start with `.` (see `watchword_events::names::file_name`),
//! so the agent's own state and temporary files cannot collide with them.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Prefix of temporary files; a crash can leave them behind, and start-up removes them.
const TEMP_PREFIX: &str = ".tmp-";

/// File that marks a directory as the agent's own. The agent removes files it did
/// not write, so it refuses a non-empty directory without this mark rather than
/// delete what someone else keeps there.
const MARKER: &str = ".watchword-agent";

/// A directory of secret files.
#[derive(Debug)]
pub struct SecretDir {
    path: PathBuf,
}

impl SecretDir {
    /// Opens the directory, creating it with mode 0700 if missing, and removes
    /// temporary files left by an interrupted write.
    ///
    /// An existing directory must be empty or already marked as the agent's; any
    /// other directory is rejected, so a mistyped `secrets_dir` cannot make the agent
    /// delete files it does not own.
    pub fn open(path: &Path) -> io::Result<SecretDir> {
        if !path.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
        }
        let marker = path.join(MARKER);
        if !marker.exists() {
            if fs::read_dir(path)?.next().is_some() {
                return Err(io::Error::other(format!(
                    "secrets_dir {} is not empty and was not created by watchword-agent; \
                     point secrets_dir at an empty directory used only by the agent",
                    path.display()
                )));
            }
            fs::write(
                &marker,
                b"This directory is managed by watchword-agent, which removes files it did not write.\n",
            )?;
        }
        let dir = SecretDir { path: path.to_owned() };
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `content` to `file_name` atomically with `mode` and `ownership`: a
    /// reader sees the old file or the new one, never a part, and a crash leaves one
    /// of them.
    ///
    /// Steps: create a temporary file readable by the owner only, write, fsync, set
    /// the owner and group, set the final mode, rename over the target, fsync the
    /// directory. The file gets its owner before its mode, so it is never readable
    /// by a group it is not meant for.
    pub fn write(&self, file_name: &str, content: &[u8], mode: u32, ownership: Ownership) -> io::Result<()> {
        debug_assert!(!file_name.starts_with('.') && !file_name.contains('/'));
        // The temporary name does not contain the file name, which may already be
        // as long as a file name can be.
        let temp = self.path.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::now_v7().simple()));
        let result =
            write_temp(&temp, content, mode, ownership).and_then(|()| fs::rename(&temp, self.path.join(file_name)));
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result?;
        File::open(&self.path)?.sync_all()
    }

    /// Removes every secret file not named in `keep`; returns the removed names.
    pub fn remove_others(&self, keep: &BTreeSet<String>) -> io::Result<Vec<String>> {
        let mut removed = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || keep.contains(&name) || !entry.file_type()?.is_file() {
                continue;
            }
            fs::remove_file(entry.path())?;
            removed.push(name);
        }
        if !removed.is_empty() {
            File::open(&self.path)?.sync_all()?;
        }
        Ok(removed)
    }
}

/// Owner and group ids of a file; `None` keeps the agent's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ownership {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Ownership {
    /// Resolves a user and a group, each a name or a numeric id.
    pub fn resolve(owner: Option<&str>, group: Option<&str>) -> io::Result<Ownership> {
        let uid = owner.map(resolve_user).transpose()?;
        let gid = group.map(resolve_group).transpose()?;
        Ok(Ownership { uid, gid })
    }
}

fn resolve_user(name: &str) -> io::Result<u32> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    match nix::unistd::User::from_name(name).map_err(io::Error::from)? {
        Some(user) => Ok(user.uid.as_raw()),
        None => Err(io::Error::new(io::ErrorKind::NotFound, format!("file owner {name:?} is not a user on this host"))),
    }
}

fn resolve_group(name: &str) -> io::Result<u32> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    match nix::unistd::Group::from_name(name).map_err(io::Error::from)? {
        Some(group) => Ok(group.gid.as_raw()),
        None => {
            Err(io::Error::new(io::ErrorKind::NotFound, format!("file group {name:?} is not a group on this host")))
        }
    }
}

fn write_temp(temp: &Path, content: &[u8], mode: u32, ownership: Ownership) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(temp)?;
    file.write_all(content)?;
    file.sync_all()?;
    if ownership != Ownership::default() {
        std::os::unix::fs::fchown(&file, ownership.uid, ownership.gid)?;
    }
    file.set_permissions(Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_file_with_mode() {
        let temp = tempfile::tempdir().unwrap();
        let dir = SecretDir::open(temp.path()).unwrap();
        dir.write("a", b"one", 0o400, Ownership::default()).unwrap();
        dir.write("a", b"two", 0o440, Ownership::default()).unwrap();
        let path = temp.path().join("a");
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o440);
    }

    #[test]
    fn write_sets_numeric_owner_and_group() {
        use std::os::unix::fs::MetadataExt;
        let temp = tempfile::tempdir().unwrap();
        let dir = SecretDir::open(temp.path()).unwrap();
        let own = fs::metadata(temp.path()).unwrap();
        // Setting a file to the ids it already has needs no privilege.
        let ownership = Ownership::resolve(Some(&own.uid().to_string()), Some(&own.gid().to_string())).unwrap();
        dir.write("a", b"x", 0o440, ownership).unwrap();
        let written = fs::metadata(temp.path().join("a")).unwrap();
        assert_eq!((written.uid(), written.gid()), (own.uid(), own.gid()));
    }

    #[test]
    fn unknown_owner_is_an_error() {
        let error = Ownership::resolve(Some("no-such-user-watchword"), None).unwrap_err();
        assert!(error.to_string().contains("no-such-user-watchword"), "{error}");
    }

    #[test]
    fn remove_others_keeps_dot_files_and_kept_names() {
        let temp = tempfile::tempdir().unwrap();
        let dir = SecretDir::open(temp.path()).unwrap();
        dir.write("keep", b"x", 0o400, Ownership::default()).unwrap();
        dir.write("drop", b"x", 0o400, Ownership::default()).unwrap();
        fs::write(temp.path().join(".state"), b"{}").unwrap();
        let removed = dir.remove_others(&BTreeSet::from(["keep".to_owned()])).unwrap();
        assert_eq!(removed, vec!["drop".to_owned()]);
        assert!(temp.path().join("keep").exists());
        assert!(temp.path().join(".state").exists());
    }

    #[test]
    fn open_removes_leftover_temp_files() {
        let temp = tempfile::tempdir().unwrap();
        SecretDir::open(temp.path()).unwrap();
        fs::write(temp.path().join(".tmp-a-123"), b"partial").unwrap();
        SecretDir::open(temp.path()).unwrap();
        assert!(!temp.path().join(".tmp-a-123").exists());
    }

    #[test]
    fn open_rejects_foreign_non_empty_directory() {
        let temp = tempfile::tempdir().unwrap();
        fs::write(temp.path().join("passwd"), b"keep me").unwrap();
        let error = SecretDir::open(temp.path()).unwrap_err();
        assert!(error.to_string().contains("is not empty"), "{error}");
        assert_eq!(fs::read(temp.path().join("passwd")).unwrap(), b"keep me");
    }

    #[test]
    fn open_accepts_own_directory_again() {
        let temp = tempfile::tempdir().unwrap();
        let dir = SecretDir::open(temp.path()).unwrap();
        dir.write("a", b"x", 0o400, Ownership::default()).unwrap();
        SecretDir::open(temp.path()).unwrap();
        assert!(temp.path().join("a").exists());
    }
}
