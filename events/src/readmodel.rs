//! The redb read model: one file per region, written only by the fold.
//!
//! Schema (every value is the MessagePack encoding of the named type):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `"last_applied_sequence"` | `u64` |
//! | `aggregate_heads` | `(aggregate type, aggregate id)` | [`AggregateHead`] |
//! | `secrets` | secret name | [`SecretState`] |
//! | `signing_keys` | key id | [`SigningKeyState`] |
//!
//! The last applied stream sequence is written in the same write transaction as the
//! changes of the events up to it, so after a crash the projection resumes exactly
//! after the last committed event.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApplyError, ViewError};
use crate::event::Aggregate;
use crate::fold::{AggregateHead, Change, SecretState, SigningKeyState, StateStore, StateView, apply_message};
use crate::verify::{RecordedEvent, RootKeys};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const HEADS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("aggregate_heads");
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
const SIGNING_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("signing_keys");

const LAST_APPLIED: &str = "last_applied_sequence";

/// One stored stream message to project.
#[derive(Debug, Clone, Copy)]
pub struct StoredMessage<'a> {
    pub subject: &'a str,
    pub payload: &'a [u8],
    pub sequence: u64,
}

/// The outcome of projecting one batch.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub applied: Vec<RecordedEvent>,
    /// Messages at or below the last applied sequence, already in the read model.
    pub already_applied: usize,
    pub last_applied_sequence: u64,
}

/// A region's read model in one redb file.
#[derive(Debug)]
pub struct ReadModel {
    db: Database,
}

impl ReadModel {
    /// Opens or creates the read model at `path` with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<ReadModel, redb::Error> {
        let db = Database::builder().set_cache_size(cache_bytes).create(path)?;
        let txn = db.begin_write()?;
        RedbState::open(&txn)?;
        txn.commit()?;
        Ok(ReadModel { db })
    }

    /// Verifies and applies a batch of messages in one write transaction.
    ///
    /// Either the whole batch and its last sequence are committed, or nothing is.
    pub fn apply_batch(&self, roots: &RootKeys, messages: &[StoredMessage<'_>]) -> Result<BatchOutcome, ApplyError> {
        let txn = self.db.begin_write().map_err(view_error)?;
        let mut outcome = BatchOutcome::default();
        {
            let mut state = RedbState::open(&txn).map_err(view_error)?;
            let mut last = state.last_applied()?;
            for message in messages {
                if message.sequence <= last {
                    outcome.already_applied += 1;
                    continue;
                }
                let recorded = apply_message(&mut state, roots, message.subject, message.payload, message.sequence)?;
                outcome.applied.push(recorded);
                last = message.sequence;
            }
            state.meta.insert(LAST_APPLIED, last).map_err(view_error)?;
            outcome.last_applied_sequence = last;
        }
        txn.commit().map_err(view_error)?;
        Ok(outcome)
    }

    /// Returns the last stream sequence applied.
    pub fn last_applied(&self) -> Result<u64, ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let table = txn.open_table(META).map_err(view_error)?;
        Ok(table.get(LAST_APPLIED).map_err(view_error)?.map_or(0, |v| v.value()))
    }

    /// Returns a secret with the sequence the answer reflects.
    pub fn secret(&self, name: &str) -> Result<(Option<SecretState>, u64), ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let secrets = txn.open_table(SECRETS).map_err(view_error)?;
        let meta = txn.open_table(META).map_err(view_error)?;
        let state = get_decoded(&secrets, name)?;
        let sequence = meta.get(LAST_APPLIED).map_err(view_error)?.map_or(0, |v| v.value());
        Ok((state, sequence))
    }

    /// Returns every secret, ordered by name, with the sequence the answer reflects.
    pub fn secrets(&self) -> Result<(Vec<SecretState>, u64), ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let secrets = txn.open_table(SECRETS).map_err(view_error)?;
        let meta = txn.open_table(META).map_err(view_error)?;
        let mut all = Vec::new();
        for entry in secrets.iter().map_err(view_error)? {
            let (_, value) = entry.map_err(view_error)?;
            all.push(decode_value(value.value())?);
        }
        let sequence = meta.get(LAST_APPLIED).map_err(view_error)?.map_or(0, |v| v.value());
        Ok((all, sequence))
    }

    /// Copies the whole state into memory, to compare it with another projection.
    pub fn snapshot(&self) -> Result<crate::fold::MemoryState, ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let mut memory = crate::fold::MemoryState::default();

        let heads = txn.open_table(HEADS).map_err(view_error)?;
        for entry in heads.iter().map_err(view_error)? {
            let (key, value) = entry.map_err(view_error)?;
            let (kind, id) = key.value();
            let kind = crate::event::AggregateType::parse(kind)
                .ok_or_else(|| ViewError(format!("unknown aggregate type {kind:?} in the read model").into()))?;
            memory.heads.insert(Aggregate { kind, id: id.to_owned() }, decode_value(value.value())?);
        }

        let secrets = txn.open_table(SECRETS).map_err(view_error)?;
        for entry in secrets.iter().map_err(view_error)? {
            let (key, value) = entry.map_err(view_error)?;
            memory.secrets.insert(key.value().to_owned(), decode_value(value.value())?);
        }

        let keys = txn.open_table(SIGNING_KEYS).map_err(view_error)?;
        for entry in keys.iter().map_err(view_error)? {
            let (key, value) = entry.map_err(view_error)?;
            memory.signing_keys.insert(key.value().to_owned(), decode_value(value.value())?);
        }
        Ok(memory)
    }
}

/// The state inside one redb write transaction.
struct RedbState<'txn> {
    meta: Table<'txn, &'static str, u64>,
    heads: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    secrets: Table<'txn, &'static str, &'static [u8]>,
    signing_keys: Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn> RedbState<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<RedbState<'txn>, redb::TableError> {
        Ok(RedbState {
            meta: txn.open_table(META)?,
            heads: txn.open_table(HEADS)?,
            secrets: txn.open_table(SECRETS)?,
            signing_keys: txn.open_table(SIGNING_KEYS)?,
        })
    }

    fn last_applied(&self) -> Result<u64, ViewError> {
        Ok(self.meta.get(LAST_APPLIED).map_err(view_error)?.map_or(0, |v| v.value()))
    }
}

impl StateView for RedbState<'_> {
    fn aggregate_head(&self, aggregate: &Aggregate) -> Result<Option<AggregateHead>, ViewError> {
        let key = (aggregate.kind.as_str(), aggregate.id.as_str());
        match self.heads.get(key).map_err(view_error)? {
            Some(value) => Ok(Some(decode_value(value.value())?)),
            None => Ok(None),
        }
    }

    fn secret(&self, name: &str) -> Result<Option<SecretState>, ViewError> {
        get_decoded(&self.secrets, name)
    }

    fn signing_key(&self, key_id: &str) -> Result<Option<SigningKeyState>, ViewError> {
        get_decoded(&self.signing_keys, key_id)
    }
}

impl StateStore for RedbState<'_> {
    fn write(&mut self, change: Change) -> Result<(), ViewError> {
        match change {
            Change::Head { aggregate, head } => {
                let key = (aggregate.kind.as_str(), aggregate.id.as_str());
                self.heads.insert(key, encode_value(&head).as_slice()).map_err(view_error)?;
            }
            Change::Secret(state) => {
                self.secrets.insert(state.name.as_str(), encode_value(&state).as_slice()).map_err(view_error)?;
            }
            Change::SigningKey { key_id, state } => {
                self.signing_keys.insert(key_id.as_str(), encode_value(&state).as_slice()).map_err(view_error)?;
            }
        }
        Ok(())
    }
}

fn get_decoded<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, ViewError> {
    match table.get(key).map_err(view_error)? {
        Some(value) => Ok(Some(decode_value(value.value())?)),
        None => Ok(None),
    }
}

fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    crate::event::encode(value)
}

fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ViewError> {
    rmp_serde::from_slice(bytes).map_err(|e| ViewError(format!("corrupt read-model record: {e}").into()))
}

fn view_error(error: impl Into<redb::Error>) -> ViewError {
    ViewError(Box::new(error.into()))
}
