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
//! | `clients` | client name | [`ClientState`] |
//! | `groups` | group name | [`GroupState`] |
//! | `memberships` | `(client, group)` | `()` |
//! | `members_by_group` | `(group, client)` | `()` |
//! | `grants` | `(secret, group)` | `()` |
//! | `grants_by_group` | `(group, secret)` | `()` |
//! | `operators` | operator identity | [`OperatorState`] |
//! | `secret_versions` | `(secret name, version)` | [`SecretVersion`] |
//! | `file_names` | file name | name of the secret that claims it |
//! | `expiries` | `(expiry time in µs, secret name)` | `()`, for current versions not yet expired |
//! | `change_outbox` | stream sequence of the event | [`ChangeNotice`] |
//!
//! `meta` also holds `"schema_version"`. A file written with another schema is
//! emptied when opened and projected again from the stream, which is the truth.
//!
//! The last applied stream sequence is written in the same write transaction as the
//! changes of the events up to it, so after a crash the projection resumes exactly
//! after the last committed event.
//!
//! `change_outbox` holds the change notice of each applied event until the server
//! has published it: written in the same transaction as the event's changes, it
//! carries the state at that event (the groups holding grants then), which a later
//! read of the read model could no longer give.

use std::path::Path;

use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::changes::{ChangeNotice, Derived, derive_notice};
use crate::error::{ApplyError, ViewError};
use crate::event::Aggregate;
use crate::fold::{
    AggregateHead, Change, ClientState, GroupState, OperatorState, SecretState, SecretVersion, SigningKeyState,
    StateStore, StateView, apply_message,
};
use crate::verify::{RecordedEvent, RootKeys};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const HEADS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("aggregate_heads");
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
const SIGNING_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("signing_keys");
const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("clients");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
const MEMBERSHIPS: TableDefinition<(&str, &str), ()> = TableDefinition::new("memberships");
const MEMBERS_BY_GROUP: TableDefinition<(&str, &str), ()> = TableDefinition::new("members_by_group");
const GRANTS: TableDefinition<(&str, &str), ()> = TableDefinition::new("grants");
const GRANTS_BY_GROUP: TableDefinition<(&str, &str), ()> = TableDefinition::new("grants_by_group");
const OPERATORS: TableDefinition<&str, &[u8]> = TableDefinition::new("operators");
const SECRET_VERSIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("secret_versions");
const FILE_NAMES: TableDefinition<&str, &str> = TableDefinition::new("file_names");
const EXPIRIES: TableDefinition<(i64, &str), ()> = TableDefinition::new("expiries");
const CHANGE_OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("change_outbox");

const LAST_APPLIED: &str = "last_applied_sequence";
const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Version of the layout of the tables and values above; change it with the layout.
pub const SCHEMA_VERSION: u64 = 2;

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
    /// Stream sequence and kind of each applied event that no notice mapping covers.
    pub unmapped: Vec<(u64, String)>,
}

/// A region's read model in one redb file.
#[derive(Debug)]
pub struct ReadModel {
    db: Database,
    reset_from: Option<u64>,
}

impl ReadModel {
    /// Opens or creates the read model at `path` with a page cache of `cache_bytes`.
    ///
    /// A file written with another [`SCHEMA_VERSION`] is emptied, so the projection
    /// starts again from the first event.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<ReadModel, redb::Error> {
        let db = Database::builder().set_cache_size(cache_bytes).create(path)?;
        let txn = db.begin_write()?;
        let mut reset_from = None;
        let found = {
            let meta = txn.open_table(META)?;
            let found = meta.get(SCHEMA_VERSION_KEY)?.map(|v| v.value());
            let empty = meta.get(LAST_APPLIED)?.is_none();
            (found, empty)
        };
        match found {
            (Some(SCHEMA_VERSION), _) | (None, true) => {}
            (found, _) => {
                reset_from = Some(found.unwrap_or(1));
                for table in txn.list_tables()?.collect::<Vec<_>>() {
                    txn.delete_table(table)?;
                }
            }
        }
        let mut state = RedbState::open(&txn)?;
        state.meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
        drop(state);
        txn.commit()?;
        Ok(ReadModel { db, reset_from })
    }

    /// Returns the schema version of a file that [`ReadModel::open`] emptied, if it did.
    pub fn reset_from_schema(&self) -> Option<u64> {
        self.reset_from
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
                match derive_notice(&state, &recorded)? {
                    Derived::Notice(notice) => {
                        state.outbox.insert(message.sequence, encode_value(&notice).as_slice()).map_err(view_error)?;
                    }
                    Derived::NoNotice => {}
                    Derived::Unmapped { kind } => outcome.unmapped.push((message.sequence, kind)),
                }
                outcome.applied.push(recorded);
                last = message.sequence;
            }
            state.meta.insert(LAST_APPLIED, last).map_err(view_error)?;
            outcome.last_applied_sequence = last;
        }
        txn.commit().map_err(view_error)?;
        Ok(outcome)
    }

    /// Returns up to `limit` unpublished change notices of events after stream
    /// sequence `after`, in stream order.
    pub fn pending_notices(&self, after: u64, limit: usize) -> Result<Vec<ChangeNotice>, ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let table = txn.open_table(CHANGE_OUTBOX).map_err(view_error)?;
        let mut notices = Vec::new();
        for entry in table.range(after.saturating_add(1)..).map_err(view_error)?.take(limit) {
            let (_, value) = entry.map_err(view_error)?;
            notices.push(decode_value(value.value())?);
        }
        Ok(notices)
    }

    /// Removes the change notices of events up to stream sequence `through`, once
    /// they are published.
    pub fn prune_notices(&self, through: u64) -> Result<(), ViewError> {
        let txn = self.db.begin_write().map_err(view_error)?;
        {
            let mut table = txn.open_table(CHANGE_OUTBOX).map_err(view_error)?;
            table.retain_in(..=through, |_, _| false).map_err(view_error)?;
        }
        txn.commit().map_err(view_error)
    }

    /// Returns the last stream sequence applied.
    pub fn last_applied(&self) -> Result<u64, ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let table = txn.open_table(META).map_err(view_error)?;
        Ok(table.get(LAST_APPLIED).map_err(view_error)?.map_or(0, |v| v.value()))
    }

    /// Returns a secret with the stream sequence the read model reflects.
    pub fn secret(&self, name: &str) -> Result<(Option<SecretState>, u64), ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let secrets = txn.open_table(SECRETS).map_err(view_error)?;
        let meta = txn.open_table(META).map_err(view_error)?;
        let state = get_decoded(&secrets, name)?;
        let sequence = meta.get(LAST_APPLIED).map_err(view_error)?.map_or(0, |v| v.value());
        Ok((state, sequence))
    }

    /// Returns every secret, ordered by name, with the stream sequence the read model reflects.
    pub fn secrets(&self) -> Result<(Vec<SecretState>, u64), ViewError> {
        self.all(SECRETS)
    }

    /// Returns every client, ordered by name, with the stream sequence the read model reflects.
    pub fn clients(&self) -> Result<(Vec<ClientState>, u64), ViewError> {
        self.all(CLIENTS)
    }

    /// Returns every operator, ordered by identity, with the stream sequence the read model reflects.
    pub fn operators(&self) -> Result<(Vec<OperatorState>, u64), ViewError> {
        self.all(OPERATORS)
    }

    /// Returns every group, ordered by name, with the stream sequence the read model reflects.
    pub fn groups(&self) -> Result<(Vec<GroupState>, u64), ViewError> {
        self.all(GROUPS)
    }

    fn all<T: DeserializeOwned>(&self, definition: TableDefinition<&str, &[u8]>) -> Result<(Vec<T>, u64), ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let table = txn.open_table(definition).map_err(view_error)?;
        let meta = txn.open_table(META).map_err(view_error)?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(view_error)? {
            let (_, value) = entry.map_err(view_error)?;
            all.push(decode_value(value.value())?);
        }
        let sequence = meta.get(LAST_APPLIED).map_err(view_error)?.map_or(0, |v| v.value());
        Ok((all, sequence))
    }

    /// Returns the secrets whose current version expires before `before_micros` and
    /// has no expiry event yet, soonest first, with the sequence the read model reflects.
    pub fn expiring(&self, before_micros: i64) -> Result<(Vec<(i64, String)>, u64), ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let table = txn.open_table(EXPIRIES).map_err(view_error)?;
        let meta = txn.open_table(META).map_err(view_error)?;
        let mut expiring = Vec::new();
        for entry in table.range((i64::MIN, "")..(before_micros, "")).map_err(view_error)? {
            let (key, _) = entry.map_err(view_error)?;
            let (at_micros, name) = key.value();
            expiring.push((at_micros, name.to_owned()));
        }
        let sequence = meta.get(LAST_APPLIED).map_err(view_error)?.map_or(0, |v| v.value());
        Ok((expiring, sequence))
    }

    /// Returns every version of a secret, oldest first, without their ciphertexts,
    /// with the sequence the read model reflects. Listing versions then costs the
    /// same whatever the size of their content.
    pub fn version_summaries(&self, name: &str) -> Result<(Vec<SecretVersion>, u64), ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let table = txn.open_table(SECRET_VERSIONS).map_err(view_error)?;
        let meta = txn.open_table(META).map_err(view_error)?;
        let mut versions = Vec::new();
        for entry in table.range((name, 0)..=(name, u64::MAX)).map_err(view_error)? {
            let (_, value) = entry.map_err(view_error)?;
            let summary: VersionWithoutContent = decode_value(value.value())?;
            versions.push(summary.into_version());
        }
        let sequence = meta.get(LAST_APPLIED).map_err(view_error)?.map_or(0, |v| v.value());
        Ok((versions, sequence))
    }

    /// Returns whether `client` may read `secret` (see [`crate::fold::may_read`]).
    pub fn may_read(&self, client: &str, secret: &str) -> Result<bool, ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let state = RedbReadState::open(&txn).map_err(view_error)?;
        crate::fold::may_read(&state, client, secret)
    }

    /// Runs `read` against one consistent read transaction and returns its result
    /// with the sequence that transaction reflects.
    pub fn read<T>(&self, read: impl FnOnce(&dyn StateView) -> Result<T, ViewError>) -> Result<(T, u64), ViewError> {
        let txn = self.db.begin_read().map_err(view_error)?;
        let state = RedbReadState::open(&txn).map_err(view_error)?;
        let meta = txn.open_table(META).map_err(view_error)?;
        let sequence = meta.get(LAST_APPLIED).map_err(view_error)?.map_or(0, |v| v.value());
        Ok((read(&state)?, sequence))
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

        let clients = txn.open_table(CLIENTS).map_err(view_error)?;
        for entry in clients.iter().map_err(view_error)? {
            let (key, value) = entry.map_err(view_error)?;
            memory.clients.insert(key.value().to_owned(), decode_value(value.value())?);
        }

        let groups = txn.open_table(GROUPS).map_err(view_error)?;
        for entry in groups.iter().map_err(view_error)? {
            let (key, value) = entry.map_err(view_error)?;
            memory.groups.insert(key.value().to_owned(), decode_value(value.value())?);
        }

        memory.memberships = all_pairs(&txn.open_table(MEMBERSHIPS).map_err(view_error)?)?;
        memory.grants = all_pairs(&txn.open_table(GRANTS).map_err(view_error)?)?;

        let versions = txn.open_table(SECRET_VERSIONS).map_err(view_error)?;
        for entry in versions.iter().map_err(view_error)? {
            let (key, value) = entry.map_err(view_error)?;
            let (name, version) = key.value();
            memory.versions.insert((name.to_owned(), version), decode_value(value.value())?);
        }

        let operators = txn.open_table(OPERATORS).map_err(view_error)?;
        for entry in operators.iter().map_err(view_error)? {
            let (key, value) = entry.map_err(view_error)?;
            memory.operators.insert(key.value().to_owned(), decode_value(value.value())?);
        }

        let expiries = txn.open_table(EXPIRIES).map_err(view_error)?;
        for entry in expiries.iter().map_err(view_error)? {
            let (key, _) = entry.map_err(view_error)?;
            let (at_micros, name) = key.value();
            memory.expiries.insert((at_micros, name.to_owned()));
        }

        let file_names = txn.open_table(FILE_NAMES).map_err(view_error)?;
        for entry in file_names.iter().map_err(view_error)? {
            let (key, value) = entry.map_err(view_error)?;
            memory.file_names.insert(key.value().to_owned(), value.value().to_owned());
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
    clients: Table<'txn, &'static str, &'static [u8]>,
    groups: Table<'txn, &'static str, &'static [u8]>,
    memberships: Table<'txn, (&'static str, &'static str), ()>,
    members_by_group: Table<'txn, (&'static str, &'static str), ()>,
    grants: Table<'txn, (&'static str, &'static str), ()>,
    grants_by_group: Table<'txn, (&'static str, &'static str), ()>,
    operators: Table<'txn, &'static str, &'static [u8]>,
    secret_versions: Table<'txn, (&'static str, u64), &'static [u8]>,
    file_names: Table<'txn, &'static str, &'static str>,
    expiries: Table<'txn, (i64, &'static str), ()>,
    outbox: Table<'txn, u64, &'static [u8]>,
}

/// The state as of one redb read transaction.
struct RedbReadState {
    heads: ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    secrets: ReadOnlyTable<&'static str, &'static [u8]>,
    signing_keys: ReadOnlyTable<&'static str, &'static [u8]>,
    clients: ReadOnlyTable<&'static str, &'static [u8]>,
    groups: ReadOnlyTable<&'static str, &'static [u8]>,
    memberships: ReadOnlyTable<(&'static str, &'static str), ()>,
    members_by_group: ReadOnlyTable<(&'static str, &'static str), ()>,
    grants: ReadOnlyTable<(&'static str, &'static str), ()>,
    grants_by_group: ReadOnlyTable<(&'static str, &'static str), ()>,
    operators: ReadOnlyTable<&'static str, &'static [u8]>,
    secret_versions: ReadOnlyTable<(&'static str, u64), &'static [u8]>,
    file_names: ReadOnlyTable<&'static str, &'static str>,
}

impl<'txn> RedbState<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<RedbState<'txn>, redb::TableError> {
        Ok(RedbState {
            meta: txn.open_table(META)?,
            heads: txn.open_table(HEADS)?,
            secrets: txn.open_table(SECRETS)?,
            signing_keys: txn.open_table(SIGNING_KEYS)?,
            clients: txn.open_table(CLIENTS)?,
            groups: txn.open_table(GROUPS)?,
            memberships: txn.open_table(MEMBERSHIPS)?,
            members_by_group: txn.open_table(MEMBERS_BY_GROUP)?,
            grants: txn.open_table(GRANTS)?,
            grants_by_group: txn.open_table(GRANTS_BY_GROUP)?,
            operators: txn.open_table(OPERATORS)?,
            secret_versions: txn.open_table(SECRET_VERSIONS)?,
            file_names: txn.open_table(FILE_NAMES)?,
            expiries: txn.open_table(EXPIRIES)?,
            outbox: txn.open_table(CHANGE_OUTBOX)?,
        })
    }

    fn last_applied(&self) -> Result<u64, ViewError> {
        Ok(self.meta.get(LAST_APPLIED).map_err(view_error)?.map_or(0, |v| v.value()))
    }

    fn set_pair(
        forward: &mut Table<'txn, (&'static str, &'static str), ()>,
        backward: &mut Table<'txn, (&'static str, &'static str), ()>,
        (first, second): (&str, &str),
        present: bool,
    ) -> Result<(), ViewError> {
        if present {
            forward.insert((first, second), ()).map_err(view_error)?;
            backward.insert((second, first), ()).map_err(view_error)?;
        } else {
            forward.remove((first, second)).map_err(view_error)?;
            backward.remove((second, first)).map_err(view_error)?;
        }
        Ok(())
    }
}

impl RedbReadState {
    fn open(txn: &ReadTransaction) -> Result<RedbReadState, redb::TableError> {
        Ok(RedbReadState {
            heads: txn.open_table(HEADS)?,
            secrets: txn.open_table(SECRETS)?,
            signing_keys: txn.open_table(SIGNING_KEYS)?,
            clients: txn.open_table(CLIENTS)?,
            groups: txn.open_table(GROUPS)?,
            memberships: txn.open_table(MEMBERSHIPS)?,
            members_by_group: txn.open_table(MEMBERS_BY_GROUP)?,
            grants: txn.open_table(GRANTS)?,
            grants_by_group: txn.open_table(GRANTS_BY_GROUP)?,
            operators: txn.open_table(OPERATORS)?,
            secret_versions: txn.open_table(SECRET_VERSIONS)?,
            file_names: txn.open_table(FILE_NAMES)?,
        })
    }
}

/// Implements [`StateView`] on a struct whose tables have the names above, so the
/// write and the read transaction answer through the same code.
macro_rules! impl_state_view {
    ($type:ty) => {
        impl StateView for $type {
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

            fn client(&self, name: &str) -> Result<Option<ClientState>, ViewError> {
                get_decoded(&self.clients, name)
            }

            fn group(&self, name: &str) -> Result<Option<GroupState>, ViewError> {
                get_decoded(&self.groups, name)
            }

            fn client_groups(&self, client: &str) -> Result<Vec<String>, ViewError> {
                second_of_pairs(&self.memberships, client)
            }

            fn group_members(&self, group: &str) -> Result<Vec<String>, ViewError> {
                second_of_pairs(&self.members_by_group, group)
            }

            fn group_grants(&self, group: &str) -> Result<Vec<String>, ViewError> {
                second_of_pairs(&self.grants_by_group, group)
            }

            fn has_grant(&self, secret: &str, group: &str) -> Result<bool, ViewError> {
                Ok(self.grants.get((secret, group)).map_err(view_error)?.is_some())
            }

            fn secret_groups(&self, secret: &str) -> Result<Vec<String>, ViewError> {
                second_of_pairs(&self.grants, secret)
            }

            fn operator(&self, identity: &str) -> Result<Option<OperatorState>, ViewError> {
                get_decoded(&self.operators, identity)
            }

            fn secret_versions(&self, name: &str) -> Result<Vec<SecretVersion>, ViewError> {
                let mut versions = Vec::new();
                for entry in self.secret_versions.range((name, 0)..=(name, u64::MAX)).map_err(view_error)? {
                    let (_, value) = entry.map_err(view_error)?;
                    versions.push(decode_value(value.value())?);
                }
                Ok(versions)
            }

            fn secret_version(&self, name: &str, version: u64) -> Result<Option<SecretVersion>, ViewError> {
                match self.secret_versions.get((name, version)).map_err(view_error)? {
                    Some(value) => Ok(Some(decode_value(value.value())?)),
                    None => Ok(None),
                }
            }

            fn file_name_owner(&self, file_name: &str) -> Result<Option<String>, ViewError> {
                Ok(self.file_names.get(file_name).map_err(view_error)?.map(|v| v.value().to_owned()))
            }
        }
    };
}

impl_state_view!(RedbState<'_>);
impl_state_view!(RedbReadState);

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
            Change::Version { name, version } => {
                let key = (name.as_str(), version.version);
                self.secret_versions.insert(key, encode_value(&version).as_slice()).map_err(view_error)?;
            }
            Change::FileName { file_name, secret: Some(secret) } => {
                self.file_names.insert(file_name.as_str(), secret.as_str()).map_err(view_error)?;
            }
            Change::FileName { file_name, secret: None } => {
                self.file_names.remove(file_name.as_str()).map_err(view_error)?;
            }
            Change::Expiry { at_micros, name, present: true } => {
                self.expiries.insert((at_micros, name.as_str()), ()).map_err(view_error)?;
            }
            Change::Expiry { at_micros, name, present: false } => {
                self.expiries.remove((at_micros, name.as_str())).map_err(view_error)?;
            }
            Change::SigningKey { key_id, state } => {
                self.signing_keys.insert(key_id.as_str(), encode_value(&state).as_slice()).map_err(view_error)?;
            }
            Change::Client(state) => {
                self.clients.insert(state.name.as_str(), encode_value(&state).as_slice()).map_err(view_error)?;
            }
            Change::ClientRemoved { name } => {
                self.clients.remove(name.as_str()).map_err(view_error)?;
            }
            Change::Group(state) => {
                self.groups.insert(state.name.as_str(), encode_value(&state).as_slice()).map_err(view_error)?;
            }
            Change::GroupRemoved { name } => {
                self.groups.remove(name.as_str()).map_err(view_error)?;
            }
            Change::Membership { client, group, present } => {
                Self::set_pair(&mut self.memberships, &mut self.members_by_group, (&client, &group), present)?;
            }
            Change::Grant { secret, group, present } => {
                Self::set_pair(&mut self.grants, &mut self.grants_by_group, (&secret, &group), present)?;
            }
            Change::Operator(state) => {
                self.operators.insert(state.identity.as_str(), encode_value(&state).as_slice()).map_err(view_error)?;
            }
        }
        Ok(())
    }
}

fn all_pairs(
    table: &impl ReadableTable<(&'static str, &'static str), ()>,
) -> Result<std::collections::BTreeSet<(String, String)>, ViewError> {
    let mut pairs = std::collections::BTreeSet::new();
    for entry in table.iter().map_err(view_error)? {
        let (key, _) = entry.map_err(view_error)?;
        let (first, second) = key.value();
        pairs.insert((first.to_owned(), second.to_owned()));
    }
    Ok(pairs)
}

/// Returns the second elements of the pairs whose first element is `first`.
fn second_of_pairs(
    table: &impl ReadableTable<(&'static str, &'static str), ()>,
    first: &str,
) -> Result<Vec<String>, ViewError> {
    let mut seconds = Vec::new();
    for entry in table.range((first, "")..).map_err(view_error)? {
        let (key, _) = entry.map_err(view_error)?;
        let (key_first, key_second) = key.value();
        if key_first != first {
            break;
        }
        seconds.push(key_second.to_owned());
    }
    Ok(seconds)
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

/// The fields of [`SecretVersion`] in their stored order, with the ciphertext
/// skipped unread. A test checks that it decodes every field but the content.
#[derive(serde::Deserialize)]
struct VersionWithoutContent {
    version: u64,
    revision: u64,
    incarnation: u64,
    _content: serde::de::IgnoredAny,
    data_key: crate::body::DataKeyRef,
    size: u64,
    digest: Option<[u8; 32]>,
    expires_at_micros: Option<i64>,
    expired: bool,
    destroyed: bool,
    rolled_back_from: Option<u64>,
    created_at_micros: i64,
    created_by: String,
}

impl VersionWithoutContent {
    fn into_version(self) -> SecretVersion {
        SecretVersion {
            version: self.version,
            revision: self.revision,
            incarnation: self.incarnation,
            content: crate::body::SealedContent { nonce: [0; 12], ciphertext: Vec::new() },
            data_key: self.data_key,
            size: self.size,
            digest: self.digest,
            expires_at_micros: self.expires_at_micros,
            expired: self.expired,
            destroyed: self.destroyed,
            rolled_back_from: self.rolled_back_from,
            created_at_micros: self.created_at_micros,
            created_by: self.created_by,
        }
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
