//! Checkpoints: root-signed commitments to every event of a range of stream sequences.
//!
//! A checkpoint is an event on the one `checkpoint` aggregate, signed by an HSM
//! root key. Its body commits to the hash of the previous checkpoint and to the
//! Merkle root of the hashes of every event in a contiguous range of stream
//! sequences. The range starts after the previous checkpoint's range and ends
//! before the checkpoint itself. The checkpoint's own sequence therefore falls in the next
//! range, so the checkpoints cover every sequence of the stream. A verifier that
//! recomputes each root from the events it read detects a deleted, reordered,
//! inserted or altered event anywhere in a covered range, and a pinned checkpoint
//! detects truncation after it.
//!
//! The Merkle tree follows RFC 6962, section 2.1 (leaf `SHA-256(0x00 || hash)`,
//! node `SHA-256(0x01 || left || right)`, the left subtree holding the largest
//! power of two of leaves smaller than the count). `FORMAT.md` specifies it byte
//! by byte. A stream message that is not a valid frame, such as one an operator
//! skipped, still takes its place in the tree: its leaf input is SHA-256 of the
//! stored bytes (see [`leaf_input`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::body::decode_body;
use crate::error::FoldError;
use crate::event::{Aggregate, AggregateType, EventHash, Frame};
use crate::fold::{Change, StateView};
use crate::verify::RecordedEvent;

/// A root key commits to a range of stream sequences and to the previous checkpoint.
pub const KIND_CHECKPOINT: &str = "checkpoint.created";

/// Aggregate id of the one chain of checkpoints on a stream.
pub const CHECKPOINT_CHAIN: &str = "stream";

/// Body of [`KIND_CHECKPOINT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// First stream sequence of the range: the previous checkpoint's `last_sequence`
    /// plus one, or 1 for the first checkpoint.
    pub first_sequence: u64,
    /// Last stream sequence of the range, below the checkpoint's own sequence.
    pub last_sequence: u64,
    /// Merkle root over the leaf inputs ([`leaf_input`]) of every sequence in the
    /// range, in order.
    #[serde(with = "serde_bytes")]
    pub merkle_root: [u8; 32],
    /// Event hash of the previous checkpoint, or all zeros for the first one. It
    /// equals the envelope's previous hash, because checkpoints form one chain.
    #[serde(with = "serde_bytes")]
    pub previous_checkpoint: EventHash,
}

impl Aggregate {
    /// Returns the aggregate of the stream's checkpoints.
    pub fn checkpoint() -> Aggregate {
        Aggregate { kind: AggregateType::Checkpoint, id: CHECKPOINT_CHAIN.to_owned() }
    }
}

/// Returns the leaf input of a stored stream message in a checkpoint's Merkle
/// tree: its event hash when [`Frame::decode`] accepts it, otherwise SHA-256 of
/// the stored bytes as they are.
///
/// A message of the second kind is not an event and no fold applies it, but the
/// checkpoint over it still commits to its exact bytes.
pub fn leaf_input(payload: &[u8]) -> EventHash {
    match Frame::decode(payload) {
        Ok(frame) => frame.hash(),
        Err(_) => Sha256::digest(payload).into(),
    }
}

/// Returns the RFC 6962 leaf hash of an event hash: `SHA-256(0x00 || hash)`.
pub fn leaf_hash(event_hash: &EventHash) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(event_hash);
    hasher.finalize().into()
}

/// Returns the RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// Returns the Merkle root over `event_hashes` in order. The empty tree's root is
/// `SHA-256("")`, as in RFC 6962.
pub fn merkle_root(event_hashes: &[EventHash]) -> [u8; 32] {
    let mut builder = MerkleBuilder::default();
    for hash in event_hashes {
        builder.push(hash);
    }
    builder.root()
}

/// Builds a Merkle root incrementally, in memory logarithmic in the leaf count.
///
/// Completed subtrees of 2^k leaves are kept on a stack, largest first. Closing the
/// tree folds them from the smallest up, which gives the RFC 6962 split.
#[derive(Debug, Clone, Default)]
pub struct MerkleBuilder {
    /// Completed subtrees as (height, hash), strictly decreasing height.
    stack: Vec<(u32, [u8; 32])>,
    leaves: u64,
}

impl MerkleBuilder {
    /// Adds the next event hash.
    pub fn push(&mut self, event_hash: &EventHash) {
        let mut node = (0, leaf_hash(event_hash));
        while let Some(&(height, left)) = self.stack.last() {
            if height != node.0 {
                break;
            }
            self.stack.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.stack.push(node);
        self.leaves += 1;
    }

    /// Returns the number of event hashes added.
    pub fn len(&self) -> u64 {
        self.leaves
    }

    pub fn is_empty(&self) -> bool {
        self.leaves == 0
    }

    /// Returns the root of the tree over every hash added so far.
    pub fn root(&self) -> [u8; 32] {
        let mut subtrees = self.stack.iter().rev();
        let Some(&(_, mut root)) = subtrees.next() else {
            return Sha256::digest([]).into();
        };
        for (_, left) in subtrees {
            root = node_hash(left, &root);
        }
        root
    }
}

/// Applies a checkpoint event, checking what needs no events of the range.
///
/// The range must not be empty and must end before the checkpoint. The first
/// checkpoint starts at 1, and a later one at or before the previous checkpoint's
/// own sequence. The body's previous checkpoint must be the envelope's previous
/// hash. The replay tool recomputes the Merkle root and checks the range exactly.
pub(crate) fn fold_checkpoint(view: &impl StateView, recorded: &RecordedEvent) -> Result<Vec<Change>, FoldError> {
    let event = &recorded.event;
    let inconsistent = |reason: String| FoldError::Inconsistent {
        kind: event.kind.clone(),
        aggregate: event.aggregate.clone(),
        reason,
    };
    if event.aggregate != Aggregate::checkpoint() {
        return Err(FoldError::WrongAggregate { kind: event.kind.clone(), aggregate: event.aggregate.clone() });
    }
    let body: Checkpoint =
        decode_body(&event.body).map_err(|source| FoldError::Body { kind: event.kind.clone(), source })?;

    if body.previous_checkpoint != event.previous_hash {
        return Err(inconsistent("the previous checkpoint is not the envelope's previous hash".to_owned()));
    }
    if body.first_sequence > body.last_sequence || body.last_sequence >= recorded.sequence {
        return Err(inconsistent(format!(
            "range {}..={} is empty or does not end before the checkpoint's sequence {}",
            body.first_sequence, body.last_sequence, recorded.sequence
        )));
    }
    let previous_sequence = view.aggregate_head(&event.aggregate)?.map(|head| head.last_sequence);
    match previous_sequence {
        None if body.first_sequence != 1 => {
            Err(inconsistent(format!("the first checkpoint starts at sequence {}, not 1", body.first_sequence)))
        }
        Some(previous) if body.first_sequence > previous => Err(inconsistent(format!(
            "range starts at {}, after the previous checkpoint at sequence {previous}",
            body.first_sequence
        ))),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computes the RFC 6962 root by its recursive definition.
    fn recursive_root(hashes: &[EventHash]) -> [u8; 32] {
        match hashes.len() {
            0 => Sha256::digest([]).into(),
            1 => leaf_hash(&hashes[0]),
            n => {
                // The largest power of two smaller than n.
                let mut split = 1;
                while split * 2 < n {
                    split *= 2;
                }
                node_hash(&recursive_root(&hashes[..split]), &recursive_root(&hashes[split..]))
            }
        }
    }

    #[test]
    fn builder_matches_recursive_definition() {
        let hashes: Vec<EventHash> = (0..70u8).map(|i| Sha256::digest([i]).into()).collect();
        for count in 0..hashes.len() {
            assert_eq!(merkle_root(&hashes[..count]), recursive_root(&hashes[..count]), "{count} leaves");
        }
    }

    #[test]
    fn leaf_input_of_non_frame_is_payload_hash() {
        let payload = b"not an event";
        let expected: EventHash = Sha256::digest(payload).into();
        assert_eq!(leaf_input(payload), expected);
    }

    #[test]
    fn root_depends_on_order() {
        let a: EventHash = [1; 32];
        let b: EventHash = [2; 32];
        assert_ne!(merkle_root(&[a, b]), merkle_root(&[b, a]));
    }
}
