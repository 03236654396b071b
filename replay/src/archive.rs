//! The archive format: a self-contained copy of an event stream for offline audits.
//!
//! An archive is the 8 bytes `WWARCHIV` followed by records. Each record is a
//! 4-byte big-endian length N (1 to [`MAX_RECORD_BYTES`]) and N bytes holding one
//! MessagePack array whose first element is the record tag:
//!
//! | tag | record | elements after the tag |
//! | --- | --- | --- |
//! | 0 | header, first | archive format version (1), stream name, creation time in µs since the Unix epoch, array of root public keys (bin 32 each) |
//! | 1 | message, in stream order | stream sequence, subject, stored payload (bin, the frame as stored in the stream) |
//! | 2 | manifest, last | message count, first sequence, last sequence, sequence of the last checkpoint (0: none), its event hash (bin 32, zeros: none), SHA-256 of every byte before this record's length prefix (bin 32) |
//! | 3 | skipped message, in stream order among the messages | as a message; a message that is not an event, which the exporting auditor skipped (`--skip-sequence`) |
//!
//! Nothing follows the manifest. Checkpoints are ordinary messages. An archive
//! without skipped messages has the same bytes as one of the first release, so
//! the format version stays 1. Ciphertexts stay
//! as stored, and wrapped data keys live in another stream, so an archive never
//! contains a key or plaintext that could open a secret. The manifest's digest only
//! catches accidental damage: the signatures and checkpoints inside are what
//! `verify` trusts, and the root keys in the header are informational.
//! `events/FORMAT.md` has the same table with an example.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ReplayError;

/// First bytes of every archive.
pub const MAGIC: &[u8; 8] = b"WWARCHIV";

/// Archive format version this build writes and reads.
pub const ARCHIVE_VERSION: u32 = 1;

/// Largest record accepted: a NATS message is at most 64 MiB.
pub const MAX_RECORD_BYTES: u32 = 64 * 1024 * 1024;

const TAG_HEADER: u8 = 0;
const TAG_MESSAGE: u8 = 1;
const TAG_MANIFEST: u8 = 2;
const TAG_SKIPPED: u8 = 3;

/// The header record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    tag: u8,
    pub version: u32,
    pub stream: String,
    pub created_at_micros: i64,
    pub root_keys: Vec<serde_bytes::ByteArray<32>>,
}

impl Header {
    pub fn new(stream: &str, created_at_micros: i64, root_keys: &[[u8; 32]]) -> Header {
        Header {
            tag: TAG_HEADER,
            version: ARCHIVE_VERSION,
            stream: stream.to_owned(),
            created_at_micros,
            root_keys: root_keys.iter().map(|key| serde_bytes::ByteArray::new(*key)).collect(),
        }
    }

    /// Returns the root public keys recorded at export.
    pub fn root_keys(&self) -> Vec<[u8; 32]> {
        self.root_keys.iter().map(|key| key.into_array()).collect()
    }
}

/// A message record: one stored stream message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedMessage {
    tag: u8,
    pub sequence: u64,
    pub subject: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl ArchivedMessage {
    /// Returns whether the record is a skipped message (tag 3): one that the
    /// exporting auditor accepted as not being an event.
    pub fn skipped(&self) -> bool {
        self.tag == TAG_SKIPPED
    }
}

/// The manifest record that closes an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    tag: u8,
    pub messages: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub last_checkpoint_sequence: u64,
    #[serde(with = "serde_bytes")]
    pub last_checkpoint_hash: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub digest: [u8; 32],
}

/// Writes an archive to a temporary file that [`ArchiveWriter::finish`] renames
/// into place, so a failed export leaves no file that looks complete.
#[derive(Debug)]
pub struct ArchiveWriter {
    path: PathBuf,
    partial: PathBuf,
    file: BufWriter<File>,
    digest: Sha256,
    messages: u64,
    first_sequence: u64,
    last_sequence: u64,
}

impl ArchiveWriter {
    pub fn create(path: &Path, header: &Header) -> Result<ArchiveWriter, ReplayError> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial).map_err(|e| io_error(&partial, e))?;
        let mut writer = ArchiveWriter {
            path: path.to_owned(),
            partial,
            file: BufWriter::new(file),
            digest: Sha256::new(),
            messages: 0,
            first_sequence: 0,
            last_sequence: 0,
        };
        writer.write_bytes(MAGIC)?;
        writer.write_record(header)?;
        Ok(writer)
    }

    /// Appends a message; messages must come in increasing stream order.
    pub fn write_message(&mut self, sequence: u64, subject: &str, payload: &[u8]) -> Result<(), ReplayError> {
        self.write_message_record(TAG_MESSAGE, sequence, subject, payload)
    }

    /// Appends a message that the exporter skipped as not being an event, in the
    /// same stream order as [`ArchiveWriter::write_message`].
    pub fn write_skipped(&mut self, sequence: u64, subject: &str, payload: &[u8]) -> Result<(), ReplayError> {
        self.write_message_record(TAG_SKIPPED, sequence, subject, payload)
    }

    fn write_message_record(
        &mut self,
        tag: u8,
        sequence: u64,
        subject: &str,
        payload: &[u8],
    ) -> Result<(), ReplayError> {
        let record = ArchivedMessage { tag, sequence, subject: subject.to_owned(), payload: payload.to_vec() };
        self.write_record(&record)?;
        if self.messages == 0 {
            self.first_sequence = sequence;
        }
        self.messages += 1;
        self.last_sequence = sequence;
        Ok(())
    }

    /// Writes the manifest, flushes, syncs and renames the file into place.
    pub fn finish(mut self, last_checkpoint: Option<(u64, [u8; 32])>) -> Result<Manifest, ReplayError> {
        let (last_checkpoint_sequence, last_checkpoint_hash) = last_checkpoint.unwrap_or((0, [0; 32]));
        let manifest = Manifest {
            tag: TAG_MANIFEST,
            messages: self.messages,
            first_sequence: self.first_sequence,
            last_sequence: self.last_sequence,
            last_checkpoint_sequence,
            last_checkpoint_hash,
            digest: self.digest.clone().finalize().into(),
        };
        self.write_record(&manifest)?;
        self.file.flush().map_err(|e| io_error(&self.partial, e))?;
        self.file.get_ref().sync_all().map_err(|e| io_error(&self.partial, e))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| io_error(&self.path, e))?;
        Ok(manifest)
    }

    fn write_record<T: Serialize>(&mut self, record: &T) -> Result<(), ReplayError> {
        let bytes = rmp_serde::to_vec(record).map_err(|e| archive_error(&self.path, e.to_string()))?;
        let len = u32::try_from(bytes.len()).ok().filter(|len| *len <= MAX_RECORD_BYTES).ok_or_else(|| {
            archive_error(&self.path, format!("a record of {} bytes is above the maximum", bytes.len()))
        })?;
        self.write_bytes(&len.to_be_bytes())?;
        self.write_bytes(&bytes)
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), ReplayError> {
        self.digest.update(bytes);
        self.file.write_all(bytes).map_err(|e| io_error(&self.partial, e))
    }
}

/// Reads an archive record by record, checking its structure and its manifest.
#[derive(Debug)]
pub struct ArchiveReader {
    path: PathBuf,
    file: BufReader<File>,
    digest: Sha256,
    header: Header,
    manifest: Option<Manifest>,
    messages: u64,
    last_sequence: u64,
    bytes_read: u64,
}

impl ArchiveReader {
    /// Opens an archive and reads its header.
    pub fn open(path: &Path) -> Result<ArchiveReader, ReplayError> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let mut reader = ArchiveReader {
            path: path.to_owned(),
            file: BufReader::new(file),
            digest: Sha256::new(),
            header: Header::new("", 0, &[]),
            manifest: None,
            messages: 0,
            last_sequence: 0,
            bytes_read: 0,
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(archive_error(path, "not a Watchword archive (wrong magic bytes)".to_owned()));
        }
        let bytes = reader.read_record()?.ok_or_else(|| archive_error(path, "no header record".to_owned()))?;
        reader.header = reader.decode(&bytes, TAG_HEADER, "header")?;
        if reader.header.version != ARCHIVE_VERSION {
            return Err(archive_error(
                path,
                format!(
                    "archive format version {} is not supported; this build reads version 1",
                    reader.header.version
                ),
            ));
        }
        Ok(reader)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Returns the manifest once every message has been read.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Returns the number of bytes read so far, for progress reports.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Returns the next message, or `None` after the manifest, which it checks.
    pub fn next_message(&mut self) -> Result<Option<ArchivedMessage>, ReplayError> {
        if self.manifest.is_some() {
            return Ok(None);
        }
        let digest_before: [u8; 32] = self.digest.clone().finalize().into();
        let bytes = self.read_record()?.ok_or_else(|| {
            archive_error(
                &self.path,
                "the archive ends without a manifest (truncated or still being written)".to_owned(),
            )
        })?;
        match bytes.get(1) {
            Some(&tag @ (TAG_MESSAGE | TAG_SKIPPED)) => {
                let message: ArchivedMessage = self.decode(&bytes, tag, "message")?;
                self.messages += 1;
                self.last_sequence = message.sequence;
                Ok(Some(message))
            }
            Some(&TAG_MANIFEST) => {
                let manifest: Manifest = self.decode(&bytes, TAG_MANIFEST, "manifest")?;
                self.check_manifest(&manifest, digest_before)?;
                self.manifest = Some(manifest);
                Ok(None)
            }
            _ => Err(archive_error(&self.path, format!("unknown record after message {}", self.messages))),
        }
    }

    fn check_manifest(&mut self, manifest: &Manifest, digest: [u8; 32]) -> Result<(), ReplayError> {
        if manifest.digest != digest {
            return Err(archive_error(
                &self.path,
                "the manifest's digest does not match the archive's bytes".to_owned(),
            ));
        }
        if manifest.messages != self.messages || manifest.last_sequence != self.last_sequence {
            return Err(archive_error(
                &self.path,
                format!(
                    "the manifest lists {} messages up to sequence {}, the archive holds {} up to {}",
                    manifest.messages, manifest.last_sequence, self.messages, self.last_sequence
                ),
            ));
        }
        let mut rest = [0u8; 1];
        match self.file.read(&mut rest) {
            Ok(0) => Ok(()),
            Ok(_) => Err(archive_error(&self.path, "bytes follow the manifest".to_owned())),
            Err(e) => Err(io_error(&self.path, e)),
        }
    }

    /// Reads one length-prefixed record, or `None` at a clean end of file.
    fn read_record(&mut self) -> Result<Option<Vec<u8>>, ReplayError> {
        let mut len = [0u8; 4];
        match self.file.read(&mut len[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(io_error(&self.path, e)),
        }
        self.file.read_exact(&mut len[1..]).map_err(|e| self.read_error(e))?;
        self.digest.update(len);
        self.bytes_read += 4;
        let len = u32::from_be_bytes(len);
        if len == 0 || len > MAX_RECORD_BYTES {
            return Err(archive_error(&self.path, format!("record length {len} is outside 1..={MAX_RECORD_BYTES}")));
        }
        let mut bytes = vec![0u8; len as usize];
        self.read_exact(&mut bytes)?;
        Ok(Some(bytes))
    }

    fn read_exact(&mut self, buffer: &mut [u8]) -> Result<(), ReplayError> {
        self.file.read_exact(buffer).map_err(|e| self.read_error(e))?;
        self.digest.update(&*buffer);
        self.bytes_read += buffer.len() as u64;
        Ok(())
    }

    /// Reports an end of file inside a record as a truncated archive, not an I/O failure.
    fn read_error(&self, error: std::io::Error) -> ReplayError {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            return archive_error(&self.path, "the archive ends inside a record (truncated)".to_owned());
        }
        io_error(&self.path, error)
    }

    fn decode<'a, T: Deserialize<'a> + Serialize>(
        &self,
        bytes: &'a [u8],
        tag: u8,
        what: &str,
    ) -> Result<T, ReplayError> {
        let invalid = |reason: String| archive_error(&self.path, format!("invalid {what} record: {reason}"));
        let record: T = rmp_serde::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let canonical = rmp_serde::to_vec(&record).map_err(|e| invalid(e.to_string()))?;
        if canonical != bytes || bytes.get(1) != Some(&tag) {
            return Err(invalid("not in canonical encoding".to_owned()));
        }
        Ok(record)
    }
}

fn io_error(path: &Path, error: std::io::Error) -> ReplayError {
    ReplayError::Source { source_name: path.display().to_string(), message: error.to_string() }
}

fn archive_error(path: &Path, message: String) -> ReplayError {
    ReplayError::Archive { path: path.display().to_string(), message }
}
