//! Verification on three threads: reading, signatures, and the fold.
//!
//! Checking an Ed25519 signature costs about as much as decoding and folding an
//! event, so `verify` checks signatures on a thread of their own while another
//! thread folds the events already checked, in stream order. The signature
//! thread learns signing keys from certification events it verified, as the fold
//! does. A certification that the fold then rejects stops the fold there, before
//! any event signed by that key. Errors are reported in stream order, so the
//! first failing sequence and check are the same as on one thread.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use watchword_events::body::{KIND_SIGNING_KEY_CERTIFIED, SigningKeyCertified, decode_body};
use watchword_events::error::{VerifyError, ViewError};
use watchword_events::event::Aggregate;
use watchword_events::fold::{
    AggregateHead, ClientState, GroupState, OperatorState, SecretState, SecretVersion, SigningKeyState, StateView,
};
use watchword_events::verify::{RecordedEvent, RootKeys, key_id, verify_message};

use crate::ReplayError;
use crate::source::{Flow, Message, Source};
use crate::verify::{Pin, Report, SkipList, Verifier};

/// Messages handed between threads at once: enough to make channel costs small.
const BATCH: usize = 256;

/// Batches in flight between two threads, which bounds memory.
const IN_FLIGHT: usize = 8;

/// A message as the signature thread hands it to the fold.
// Nearly every message is an event, so boxing that variant would allocate once
// per message to save space on rare skipped ones.
#[allow(clippy::large_enum_variant)]
enum Checked {
    /// Decoded and signature-checked, or the reason it is not a valid event.
    Event(u64, Result<RecordedEvent, VerifyError>),
    /// Covered by the skip list: its payload, which the fold checks is no frame.
    Skipped(u64, Vec<u8>),
}

/// Signing keys certified so far, kept by the signature thread.
#[derive(Debug)]
pub struct SignatureStage {
    roots: RootKeys,
    keys: BTreeMap<String, SigningKeyState>,
}

impl SignatureStage {
    pub fn new(roots: RootKeys) -> SignatureStage {
        SignatureStage { roots, keys: BTreeMap::new() }
    }

    /// Decodes a message and checks its subject and signature, as the fold's
    /// `verify_message` does, and learns the key of a verified certification.
    pub fn check(&mut self, message: &Message) -> Result<RecordedEvent, VerifyError> {
        let recorded = verify_message(&*self, &self.roots, &message.subject, &message.payload, message.sequence)?;
        if recorded.event.kind == KIND_SIGNING_KEY_CERTIFIED {
            if let Ok(body) = decode_body::<SigningKeyCertified>(&recorded.event.body) {
                let state = SigningKeyState {
                    public_key: body.public_key,
                    certified_by: recorded.event.key_id.clone(),
                    certified_at_micros: recorded.event.recorded_at_micros,
                    sequence: recorded.sequence,
                };
                self.keys.insert(key_id(&body.public_key), state);
            }
        }
        Ok(recorded)
    }
}

/// A view that holds only signing keys: all that signature checks read.
impl StateView for SignatureStage {
    fn aggregate_head(&self, _: &Aggregate) -> Result<Option<AggregateHead>, ViewError> {
        Ok(None)
    }

    fn secret(&self, _: &str) -> Result<Option<SecretState>, ViewError> {
        Ok(None)
    }

    fn signing_key(&self, key_id: &str) -> Result<Option<SigningKeyState>, ViewError> {
        Ok(self.keys.get(key_id).cloned())
    }

    fn client(&self, _: &str) -> Result<Option<ClientState>, ViewError> {
        Ok(None)
    }

    fn group(&self, _: &str) -> Result<Option<GroupState>, ViewError> {
        Ok(None)
    }

    fn client_groups(&self, _: &str) -> Result<Vec<String>, ViewError> {
        Ok(Vec::new())
    }

    fn group_members(&self, _: &str) -> Result<Vec<String>, ViewError> {
        Ok(Vec::new())
    }

    fn group_grants(&self, _: &str) -> Result<Vec<String>, ViewError> {
        Ok(Vec::new())
    }

    fn has_grant(&self, _: &str, _: &str) -> Result<bool, ViewError> {
        Ok(false)
    }

    fn operator(&self, _: &str) -> Result<Option<OperatorState>, ViewError> {
        Ok(None)
    }

    fn secret_versions(&self, _: &str) -> Result<Vec<SecretVersion>, ViewError> {
        Ok(Vec::new())
    }

    fn secret_version(&self, _: &str, _: u64) -> Result<Option<SecretVersion>, ViewError> {
        Ok(None)
    }

    fn secret_groups(&self, _: &str) -> Result<Vec<String>, ViewError> {
        Ok(Vec::new())
    }

    fn file_name_owner(&self, _: &str) -> Result<Option<String>, ViewError> {
        Ok(None)
    }
}

/// Reads a whole history from `source` and verifies it, checking signatures on a
/// thread of their own. The outcome is the same as [`crate::verify::verify_sequential`].
pub async fn verify(
    source: &Source,
    roots: &RootKeys,
    pin: Option<Pin>,
    skips: &SkipList,
) -> Result<Report, ReplayError> {
    let (to_signatures, signature_input) = sync_channel::<Vec<Message>>(IN_FLIGHT);
    let (to_fold, fold_input) = sync_channel::<Vec<Checked>>(IN_FLIGHT);
    let stage = SignatureStage::new(roots.clone());
    let stage_skips = skips.clone();
    let signatures = std::thread::spawn(move || check_signatures(stage, &stage_skips, signature_input, to_fold));
    let fold_roots = roots.clone();
    let fold_skips = skips.clone();
    let folder = std::thread::spawn(move || fold_checked(&fold_roots, pin, fold_skips, fold_input));

    let mut batch = Vec::with_capacity(BATCH);
    let read = source
        .read(|message| {
            batch.push(message);
            if batch.len() == BATCH && to_signatures.send(std::mem::take(&mut batch)).is_err() {
                // The fold stopped at a failure, which it reports.
                return Ok(Flow::Stop);
            }
            Ok(Flow::Continue)
        })
        .await;
    if !batch.is_empty() {
        let _ = to_signatures.send(batch);
    }
    drop(to_signatures);

    let folded = folder.join().map_err(|_| ReplayError::Internal("the fold thread panicked".to_owned()))?;
    signatures.join().map_err(|_| ReplayError::Internal("the signature thread panicked".to_owned()))?;
    match (read, folded) {
        (_, Err(error)) | (Err(error), Ok(_)) => Err(error),
        (Ok(()), Ok(report)) => Ok(report),
    }
}

fn check_signatures(
    mut stage: SignatureStage,
    skips: &SkipList,
    input: Receiver<Vec<Message>>,
    output: SyncSender<Vec<Checked>>,
) {
    for batch in input {
        let checked = batch
            .into_iter()
            .map(|message| {
                if skips.covers(&message) {
                    Checked::Skipped(message.sequence, message.payload)
                } else {
                    Checked::Event(message.sequence, stage.check(&message))
                }
            })
            .collect();
        if output.send(checked).is_err() {
            return;
        }
    }
}

fn fold_checked(
    roots: &RootKeys,
    pin: Option<Pin>,
    skips: SkipList,
    input: Receiver<Vec<Checked>>,
) -> Result<Report, ReplayError> {
    let mut verifier = Verifier::new(roots, pin).with_skips(skips);
    for batch in input {
        for checked in batch {
            match checked {
                Checked::Event(sequence, checked) => verifier.push_checked(sequence, checked).map(drop)?,
                Checked::Skipped(sequence, payload) => verifier.push_skipped(sequence, &payload)?,
            }
        }
    }
    verifier.finish()
}
