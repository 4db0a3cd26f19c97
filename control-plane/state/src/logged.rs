//! [`LoggedProposal`]: a proposal as a Raft entry carries it — its JSON
//! text, encoded once, by the node that proposes it.
//!
//! An entry is written to the log of every node, read back from the
//! leader's log once per follower to be replicated, sent to each follower,
//! and read back again on every node to be applied. With the proposal held
//! as a typed value, each of those steps encoded or decoded all of it again:
//! for an ingest entry, a hundred records' JSON escaped inside JSON, about a
//! dozen times per entry across a 3-node cluster. Held as text, the entry is
//! copied verbatim into the log and onto the wire, only scanned (not
//! rebuilt) when read back, and decoded in full once per node, at apply
//! ([`LoggedProposal::decode`]).
//!
//! The text is exactly the JSON of a [`Proposal`], so the log format is
//! unchanged: entries written as typed proposals read back as logged ones
//! and the other way round.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::actor::ActorRef;
use crate::command::Proposal;

/// The JSON of one [`Proposal`], as it travels in the Raft log. Cloning
/// shares the text (the log store keeps recent entries in memory).
#[derive(Clone)]
pub struct LoggedProposal(Arc<Box<RawValue>>);

impl LoggedProposal {
    /// Encodes `proposal`.
    pub fn encode(proposal: &Proposal) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(proposal).map(Self::new)
    }

    /// Takes JSON text that a peer sent as a proposal. Only its syntax is
    /// checked here; [`LoggedProposal::decode`] checks the rest.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// One entry carrying `proposals` as a
    /// [`Command::Batch`](crate::Command::Batch): the same JSON that
    /// encoding the typed batch gives, built from the proposals' text
    /// without encoding them again.
    pub fn batch(
        request_id: &str,
        actor: &ActorRef,
        at_ms: u64,
        proposals: &[LoggedProposal],
    ) -> Result<Self, serde_json::Error> {
        #[derive(Serialize)]
        struct Batch<'a> {
            request_id: &'a str,
            actor: &'a ActorRef,
            at_ms: u64,
            command: BatchCommand<'a>,
        }
        #[derive(Serialize)]
        enum BatchCommand<'a> {
            #[serde(rename = "BATCH")]
            Batch { proposals: &'a [LoggedProposal] },
        }
        serde_json::value::to_raw_value(&Batch {
            request_id,
            actor,
            at_ms,
            command: BatchCommand::Batch { proposals },
        })
        .map(Self::new)
    }

    fn new(json: Box<RawValue>) -> Self {
        Self(Arc::new(json))
    }

    /// The proposals this entry carries if it is a batch, each still as
    /// text; `None` for any other proposal. Only the outer structure is
    /// read; text that is not a proposal at all is an error.
    pub fn batch_proposals(&self) -> Result<Option<Vec<LoggedProposal>>, serde_json::Error> {
        #[derive(Deserialize)]
        struct Outer<'a> {
            #[serde(borrow)]
            command: &'a RawValue,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Batch {
            #[serde(rename = "BATCH")]
            batch: Proposals,
        }
        #[derive(Deserialize)]
        struct Proposals {
            proposals: Vec<LoggedProposal>,
        }
        let outer: Outer<'_> = serde_json::from_str(self.0.get())?;
        // Only a batch's command is an object whose one key is `BATCH`;
        // every other command fails this parse at its first key.
        Ok(serde_json::from_str::<Batch>(outer.command.get()).ok().map(|batch| batch.batch.proposals))
    }

    /// Decodes the proposal in full.
    pub fn decode(&self) -> Result<Proposal, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// Length of the JSON text in bytes: what the entry adds to the log.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Whether the text is empty (never, for an encoded proposal).
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }
}

impl fmt::Debug for LoggedProposal {
    /// The length only: entries can be hundreds of kilobytes and carry
    /// records whose text must not reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoggedProposal({} bytes)", self.len())
    }
}

impl PartialEq for LoggedProposal {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for LoggedProposal {}

impl Serialize for LoggedProposal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self.0).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for LoggedProposal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self::new)
    }
}

#[cfg(test)]
mod tests;
