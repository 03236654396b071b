//! The verifier that every command reads a history through.
//!
//! For each message, in stream order, [`Verifier::push`] checks that its sequence
//! follows the previous one, verifies its signature and applies it through the
//! shared fold (which checks the per-aggregate chain), and keeps its event hash.
//! When the message is a checkpoint, it also checks that the checkpoint's range
//! starts right after the previous checkpoint's range, that the Merkle root of the
//! hashes kept for that range matches, and that it links to the previous
//! checkpoint. Events after the last checkpoint's range are reported as not yet
//! covered.
//!
//! A message that the auditor lists in a [`SkipList`] (or that an archive records
//! as skipped) must not be an event. It is neither decoded nor folded, but it
//! takes its sequence, and SHA-256 of its bytes stands for it in the checkpoint
//! that covers it, as the server's checkpoint task writes it.

use std::collections::{BTreeSet, VecDeque};

use watchword_events::body::decode_body;
use watchword_events::checkpoint::{Checkpoint, KIND_CHECKPOINT, leaf_input, merkle_root};
use watchword_events::error::{ApplyError, VerifyError};
use watchword_events::fold::{MemoryState, StateStore, apply_message, fold};
use watchword_events::verify::{RecordedEvent, RootKeys};
use watchword_events::{Event, EventHash, Frame, ZERO_HASH};

use crate::source::{Flow, Message, Source};
use crate::{CheckpointFailure, PinFailure, ReplayError};

pub use crate::pipeline::{SignatureStage, verify};

/// A checkpoint that an earlier audit recorded: its stream sequence and event hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    pub sequence: u64,
    pub hash: EventHash,
}

impl std::str::FromStr for Pin {
    type Err = String;

    /// Parses `SEQ:HASH`, the hash as 64 hex digits.
    fn from_str(text: &str) -> Result<Pin, String> {
        let (sequence, hash) =
            text.split_once(':').ok_or_else(|| format!("pin {text:?} must be SEQUENCE:HASH, such as 120:3fa4…"))?;
        let sequence = sequence.parse().map_err(|_| format!("pin {text:?}: {sequence:?} is not a stream sequence"))?;
        let hash = hex::decode(hash)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| format!("pin {text:?}: the hash must be 64 hex digits"))?;
        Ok(Pin { sequence, hash })
    }
}

/// Stream sequences that the auditor accepts as messages that are not events
/// (`--skip-sequence`), as the server's `projector.skip_sequences` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipList(BTreeSet<u64>);

impl SkipList {
    pub fn new(sequences: impl IntoIterator<Item = u64>) -> SkipList {
        SkipList(sequences.into_iter().collect())
    }

    /// Returns whether `message` is to be skipped: listed here, or recorded as
    /// skipped in the archive it comes from.
    pub fn covers(&self, message: &Message) -> bool {
        message.skipped || self.covers_sequence(message.sequence)
    }

    /// Returns whether `sequence` is listed.
    pub fn covers_sequence(&self, sequence: u64) -> bool {
        self.0.contains(&sequence)
    }

    /// Fails if a listed sequence lies after `last`, the end of a whole history,
    /// which therefore never reached it.
    pub fn check_reached(&self, last: u64) -> Result<(), ReplayError> {
        match self.0.range(last.saturating_add(1)..).next() {
            Some(sequence) => Err(ReplayError::Usage(format!(
                "--skip-sequence {sequence} is past the end of the history (its last sequence is {last})"
            ))),
            None => Ok(()),
        }
    }
}

/// Fails if a message to skip is a valid frame or the bare signed bytes of an
/// event: only a message that is not an event may be skipped.
///
/// Bare signed bytes have the same leaf input as the frame they came from, so
/// accepting them would let a checkpoint vouch for a stream whose event was
/// replaced by them.
pub fn check_skippable(sequence: u64, payload: &[u8]) -> Result<(), ReplayError> {
    if Frame::decode(payload).is_ok() || Event::from_signed_bytes(payload).is_ok() {
        return Err(ReplayError::SkippedEvent { sequence });
    }
    Ok(())
}

/// A checkpoint that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub sequence: u64,
    pub hash: EventHash,
    pub body: Checkpoint,
}

/// Summary of a successful verification: events checked and the state they build.
#[derive(Debug, Default)]
pub struct Report {
    pub events: u64,
    pub last_sequence: u64,
    pub checkpoints: u64,
    pub last_checkpoint: Option<VerifiedCheckpoint>,
    /// Sequences of the messages skipped as not being events, in order.
    pub skipped: Vec<u64>,
    pub state: MemoryState,
}

impl Report {
    /// Returns the number of messages that no verified checkpoint covers, not
    /// counting the last checkpoint itself, which its root signature vouches for.
    pub fn uncovered(&self) -> u64 {
        match &self.last_checkpoint {
            Some(checkpoint) => self.last_sequence - checkpoint.body.last_sequence - 1,
            None => self.last_sequence,
        }
    }
}

/// Verifies messages given in stream order, starting at sequence 1.
#[derive(Debug)]
pub struct Verifier<'a> {
    roots: &'a RootKeys,
    pin: Option<Pin>,
    skips: SkipList,
    report: Report,
    /// Leaf inputs of the sequences after the last checkpoint's range, in order.
    uncovered: VecDeque<EventHash>,
}

impl<'a> Verifier<'a> {
    pub fn new(roots: &'a RootKeys, pin: Option<Pin>) -> Verifier<'a> {
        Verifier { roots, pin, skips: SkipList::default(), report: Report::default(), uncovered: VecDeque::new() }
    }

    /// Accepts the messages at the sequences of `skips` as not being events.
    pub fn with_skips(mut self, skips: SkipList) -> Verifier<'a> {
        self.skips = skips;
        self
    }

    /// Returns the state built so far.
    pub fn state(&self) -> &MemoryState {
        &self.report.state
    }

    /// Verifies and applies the next message, or skips it if the skip list
    /// covers it (returning `None`); its sequence must follow the last one.
    pub fn push_message(&mut self, message: &Message) -> Result<Option<RecordedEvent>, ReplayError> {
        if self.skips.covers(message) {
            self.push_skipped(message.sequence, &message.payload)?;
            return Ok(None);
        }
        self.push(&message.subject, &message.payload, message.sequence).map(Some)
    }

    /// Verifies and applies the next message as an event; its sequence must follow
    /// the last one. It ignores the skip list: see [`Verifier::push_message`].
    pub fn push(&mut self, subject: &str, payload: &[u8], sequence: u64) -> Result<RecordedEvent, ReplayError> {
        self.check_sequence(sequence)?;
        let recorded = apply_message(&mut self.report.state, self.roots, subject, payload, sequence)?;
        self.after_apply(recorded)
    }

    /// Takes the next message as one skipped by the auditor's decision: it must not
    /// be an event (see [`check_skippable`]), and SHA-256 of its bytes is its leaf input.
    pub fn push_skipped(&mut self, sequence: u64, payload: &[u8]) -> Result<(), ReplayError> {
        self.check_sequence(sequence)?;
        check_skippable(sequence, payload)?;
        if self.pin.is_some_and(|pin| pin.sequence == sequence) {
            return Err(ReplayError::Pin { sequence, failure: PinFailure::NotCheckpoint });
        }
        self.uncovered.push_back(leaf_input(payload));
        self.report.skipped.push(sequence);
        self.report.last_sequence = sequence;
        Ok(())
    }

    /// Applies the next message, whose decoding and signature another thread
    /// checked with [`SignatureStage`]. Its sequence must follow the last one.
    pub fn push_checked(
        &mut self,
        sequence: u64,
        checked: Result<RecordedEvent, VerifyError>,
    ) -> Result<RecordedEvent, ReplayError> {
        self.check_sequence(sequence)?;
        let recorded = checked.map_err(|source| ApplyError::Verify { sequence, source })?;
        let changes = fold(&self.report.state, &recorded).map_err(|source| ApplyError::Fold { sequence, source })?;
        for change in changes {
            self.report.state.write(change).map_err(ApplyError::from)?;
        }
        self.after_apply(recorded)
    }

    fn check_sequence(&self, sequence: u64) -> Result<(), ReplayError> {
        let expected = self.report.last_sequence + 1;
        if sequence != expected {
            return Err(ReplayError::SequenceGap { expected, found: sequence });
        }
        Ok(())
    }

    fn after_apply(&mut self, recorded: RecordedEvent) -> Result<RecordedEvent, ReplayError> {
        let sequence = recorded.sequence;
        if recorded.event.kind == KIND_CHECKPOINT {
            self.check_checkpoint(&recorded)?;
        }
        self.check_pin(&recorded)?;
        self.uncovered.push_back(recorded.hash);
        self.report.events += 1;
        self.report.last_sequence = sequence;
        Ok(recorded)
    }

    /// Ends the verification of a whole history: a pinned checkpoint must have been
    /// seen, and every listed skip reached.
    pub fn finish(self) -> Result<Report, ReplayError> {
        self.skips.check_reached(self.report.last_sequence)?;
        self.finish_at_point()
    }

    /// Ends a verification that stopped at a chosen point, before the end of the
    /// history, where listed skips after the point are not reached.
    pub fn finish_at_point(self) -> Result<Report, ReplayError> {
        if let Some(pin) = self.pin {
            if pin.sequence > self.report.last_sequence {
                return Err(ReplayError::Pin {
                    sequence: pin.sequence,
                    failure: PinFailure::Missing { last: self.report.last_sequence },
                });
            }
        }
        Ok(self.report)
    }

    fn check_checkpoint(&mut self, recorded: &RecordedEvent) -> Result<(), ReplayError> {
        let sequence = recorded.sequence;
        let fail = |failure| ReplayError::Checkpoint { sequence, failure };
        let body: Checkpoint = decode_body(&recorded.event.body).map_err(|e| fail(CheckpointFailure::Body(e)))?;

        let previous = self.report.last_checkpoint.as_ref();
        let expected_first = previous.map_or(1, |c| c.body.last_sequence + 1);
        if body.first_sequence != expected_first {
            return Err(fail(CheckpointFailure::RangeStart { expected: expected_first, found: body.first_sequence }));
        }
        if body.last_sequence < body.first_sequence || body.last_sequence >= sequence {
            return Err(fail(CheckpointFailure::RangeEnd { last: body.last_sequence }));
        }
        if body.previous_checkpoint != previous.map_or(ZERO_HASH, |c| c.hash) {
            return Err(fail(CheckpointFailure::PreviousLink { previous: previous.map_or(0, |c| c.sequence) }));
        }

        // The leaf inputs kept start at `expected_first`; the range ends before this message.
        let count = (body.last_sequence - body.first_sequence + 1) as usize;
        let range: Vec<EventHash> = self.uncovered.drain(..count).collect();
        if merkle_root(&range) != body.merkle_root {
            return Err(fail(CheckpointFailure::MerkleRoot { first: body.first_sequence, last: body.last_sequence }));
        }
        self.report.checkpoints += 1;
        self.report.last_checkpoint = Some(VerifiedCheckpoint { sequence, hash: recorded.hash, body });
        Ok(())
    }

    fn check_pin(&self, recorded: &RecordedEvent) -> Result<(), ReplayError> {
        let Some(pin) = self.pin.filter(|pin| pin.sequence == recorded.sequence) else {
            return Ok(());
        };
        let fail = |failure| ReplayError::Pin { sequence: pin.sequence, failure };
        if recorded.event.kind != KIND_CHECKPOINT {
            return Err(fail(PinFailure::NotCheckpoint));
        }
        if recorded.hash != pin.hash {
            return Err(fail(PinFailure::HashMismatch {
                expected: hex::encode(pin.hash),
                found: hex::encode(recorded.hash),
            }));
        }
        Ok(())
    }
}

/// Reads a whole history from `source` and verifies it on the calling thread.
pub async fn verify_sequential(
    source: &Source,
    roots: &RootKeys,
    pin: Option<Pin>,
    skips: &SkipList,
) -> Result<Report, ReplayError> {
    let mut verifier = Verifier::new(roots, pin).with_skips(skips.clone());
    source
        .read(|message| {
            verifier.push_message(&message)?;
            Ok(Flow::Continue)
        })
        .await?;
    verifier.finish()
}
