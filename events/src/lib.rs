//! Watchword's event format and the pure fold over it.
//!
//! Every secret mutation is an [`Event`], encoded as MessagePack, hashed with
//! SHA-256 over the exact signed bytes and signed with Ed25519; the stored
//! [`Frame`] holds those bytes and the signature. The parts:
//!
//! - [`event`]: the envelope, its encoding, the frame and the event hash;
//! - [`body`]: event kinds, their bodies and the AES-GCM associated data;
//! - [`names`]: secret-name rules, NATS subjects and agents' file names;
//! - [`verify`]: signature checks against the trusted root keys;
//! - [`fold`]: the pure function that applies an event to state;
//! - [`changes`]: the change notices services receive, derived from events;
//! - [`checkpoint`]: root-signed checkpoints and their Merkle tree;
//! - [`readmodel`]: the redb read model that the server and the replay tool share.
//!
//! `FORMAT.md` beside this crate specifies the format byte by byte.
//!
//! ```
//! use watchword_events::{fold::MemoryState, names, verify::RootKeys};
//!
//! let state = MemoryState::default();
//! let roots = RootKeys::new(&[]).unwrap();
//! let subject = names::event_subject(watchword_events::event::AggregateType::Secret, "db/password");
//! assert!(subject.starts_with("watchword.ev.secret."));
//! # let _ = (state, roots);
//! ```
#![forbid(unsafe_code)]

pub mod body;
pub mod changes;
pub mod checkpoint;
pub mod error;
pub mod event;
pub mod fold;
pub mod names;
pub mod readmodel;
pub mod verify;

pub use event::{Actor, Aggregate, AggregateType, Event, EventHash, Frame, ZERO_HASH};
