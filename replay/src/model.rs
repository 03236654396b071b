//! Rebuilding a redb read model from the history, and comparing two read models.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use watchword_events::readmodel::{ReadModel, StoredMessage};
use watchword_events::verify::RootKeys;

use crate::ReplayError;
use crate::output::Table;
use crate::source::{Flow, Message, Source};
use crate::verify::{SkipList, check_skippable};

/// Messages per redb write transaction while rebuilding, as the server's default.
const REBUILD_BATCH: usize = 1000;

/// redb page cache of a rebuilt or compared read model.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Writes a fresh read model at `out` from the history, through the same
/// [`ReadModel::apply_batch`] as the server's projector, and returns its last
/// applied sequence. Missing sequences fail as in `verify`; checkpoints are
/// applied by the fold but only `verify` recomputes their Merkle roots. The
/// messages that `skips` covers are left out, as the server's projector leaves
/// out those of `projector.skip_sequences`, once checked not to be events.
pub async fn rebuild(source: &Source, roots: &RootKeys, skips: &SkipList, out: &Path) -> Result<u64, ReplayError> {
    if out.exists() {
        return Err(ReplayError::Usage(format!(
            "{} exists; choose a new file for the rebuilt read model",
            out.display()
        )));
    }
    let model = ReadModel::open(out, CACHE_BYTES).map_err(|e| model_error(out, e))?;
    let mut batch: Vec<Message> = Vec::with_capacity(REBUILD_BATCH);
    let mut last = 0;
    let mut failure: Option<ReplayError> = None;
    source
        .read(|message| {
            if message.sequence != last + 1 {
                return Err(ReplayError::SequenceGap { expected: last + 1, found: message.sequence });
            }
            last = message.sequence;
            if skips.covers(&message) {
                check_skippable(message.sequence, &message.payload)?;
                return Ok(Flow::Continue);
            }
            batch.push(message);
            if batch.len() == REBUILD_BATCH {
                if let Err(error) = apply(&model, roots, &batch) {
                    failure = Some(error);
                    return Ok(Flow::Stop);
                }
                batch.clear();
            }
            Ok(Flow::Continue)
        })
        .await?;
    if let Some(error) = failure {
        return Err(error);
    }
    apply(&model, roots, &batch)?;
    skips.check_reached(last)?;
    model.last_applied().map_err(|e| model_error(out, e))
}

fn apply(model: &ReadModel, roots: &RootKeys, batch: &[Message]) -> Result<(), ReplayError> {
    let messages: Vec<StoredMessage<'_>> = batch
        .iter()
        .map(|m| StoredMessage { subject: &m.subject, payload: &m.payload, sequence: m.sequence })
        .collect();
    model.apply_batch(roots, &messages)?;
    Ok(())
}

/// Columns of [`diff`]'s table.
pub const DIFF_COLUMNS: [&str; 5] = ["table", "key", "field", "first", "second"];

/// Compares two read models and returns one row per difference: a record only in
/// one of them, or a field whose values differ. Values are shortened to 80
/// characters; ciphertexts differ as byte arrays, never as plaintext.
pub fn diff(first: &Path, second: &Path) -> Result<Table, ReplayError> {
    let (a, a_last) = open_snapshot(first)?;
    let (b, b_last) = open_snapshot(second)?;
    let mut table = Table::new(&DIFF_COLUMNS);
    if a_last != b_last {
        table.push(row("meta", "last_applied_sequence", "", &json_text(&a_last), &json_text(&b_last)));
    }
    compare_maps(&mut table, "aggregate_heads", &a.heads, &b.heads, |k| format!("{} {}", k.kind.as_str(), k.id));
    compare_maps(&mut table, "secrets", &a.secrets, &b.secrets, String::clone);
    compare_maps(&mut table, "secret_versions", &a.versions, &b.versions, |(name, v)| format!("{name} v{v}"));
    compare_maps(&mut table, "signing_keys", &a.signing_keys, &b.signing_keys, String::clone);
    compare_maps(&mut table, "clients", &a.clients, &b.clients, String::clone);
    compare_maps(&mut table, "groups", &a.groups, &b.groups, String::clone);
    compare_maps(&mut table, "operators", &a.operators, &b.operators, String::clone);
    compare_sets(&mut table, "memberships", &a.memberships, &b.memberships);
    compare_sets(&mut table, "grants", &a.grants, &b.grants);
    Ok(table)
}

fn open_snapshot(path: &Path) -> Result<(watchword_events::fold::MemoryState, u64), ReplayError> {
    if !path.exists() {
        return Err(ReplayError::Usage(format!("read model {} not found", path.display())));
    }
    let model = ReadModel::open(path, CACHE_BYTES).map_err(|e| model_error(path, e))?;
    let snapshot = model.snapshot().map_err(|e| model_error(path, e))?;
    let last = model.last_applied().map_err(|e| model_error(path, e))?;
    Ok((snapshot, last))
}

fn compare_maps<K: Ord, V: Serialize + PartialEq>(
    table: &mut Table,
    name: &str,
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
    key_text: impl Fn(&K) -> String,
) {
    let keys: BTreeSet<&K> = a.keys().chain(b.keys()).collect();
    for key in keys {
        match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) if x != y => {
                let (x, y) = (flatten(x), flatten(y));
                let fields: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for field in fields {
                    let (left, right) = (x.get(field), y.get(field));
                    if left != right {
                        let text = |v: Option<&Value>| v.map_or("(absent)".to_owned(), json_text);
                        table.push(row(name, &key_text(key), field, &text(left), &text(right)));
                    }
                }
            }
            (Some(_), None) => table.push(row(name, &key_text(key), "", "present", "absent")),
            (None, Some(_)) => table.push(row(name, &key_text(key), "", "absent", "present")),
            _ => {}
        }
    }
}

fn compare_sets<T: Ord + Debug>(table: &mut Table, name: &str, a: &BTreeSet<T>, b: &BTreeSet<T>) {
    for only in a.difference(b) {
        table.push(row(name, &format!("{only:?}"), "", "present", "absent"));
    }
    for only in b.difference(a) {
        table.push(row(name, &format!("{only:?}"), "", "absent", "present"));
    }
}

/// Returns every leaf of a record's JSON form by its dotted path.
fn flatten(value: &impl Serialize) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(fields) => {
                for (field, inner) in fields {
                    let path = if prefix.is_empty() { field } else { format!("{prefix}.{field}") };
                    walk(&path, inner, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other);
            }
        }
    }
    let mut out = BTreeMap::new();
    // Every read-model record serializes to JSON: maps have string keys.
    walk("", serde_json::to_value(value).unwrap_or(Value::Null), &mut out);
    out
}

fn json_text(value: &impl Serialize) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    if text.chars().count() > 80 { format!("{}…", text.chars().take(79).collect::<String>()) } else { text }
}

fn row(table: &str, key: &str, field: &str, first: &str, second: &str) -> Vec<String> {
    [table, key, field, first, second].iter().map(|s| (*s).to_owned()).collect()
}

fn model_error(path: &Path, error: impl std::fmt::Display) -> ReplayError {
    ReplayError::Source { source_name: format!("read model {}", path.display()), message: error.to_string() }
}
