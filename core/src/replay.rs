//! The catch-up protocol between subscribers and the archiver, over NATS request/reply on
//! `<prefix>.replay` (outside the stream's subjects; a service the site account exports to the
//! hosts), so hosts need neither JetStream nor database access.
//!
//! A client asks for pages: the first request has no `until_seq`; the archiver answers with the
//! sequence the replay ends at (`high_seq`) and the client sends it back on every later page, so
//! a replay ends even while new events keep arriving; each page says where the next one starts
//! (`next`). `since` pages come from the stream while it still holds them and from the database
//! before that, and end at the stream's last sequence: live events after it arrive on the live
//! subject, so the two meet with no gap. `active` (a new host's backfill) ends at what the
//! archive has committed; a `since` from there follows it.

use crate::control::Control;
use crate::event::Event;
use serde::{Deserialize, Serialize};

/// Most events in one page (keeps a reply well under NATS' 1 MB default payload limit).
pub const MAX_PAGE: usize = 2000;

/// Most events and orders in one page that may hold intel orders (each up to
/// [`crate::control::MAX_INTEL_PAYLOAD`] bytes): still under 1 MB.
pub const MAX_INTEL_PAGE: usize = 500;

/// The request subject.
pub fn replay_subject(prefix: &str) -> String {
    format!("{prefix}.replay")
}

/// What to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayKind {
    /// Every event with a stream sequence above `after`, in stream order, up to the stream's
    /// last sequence. A `high_seq` below `after` means the stream was re-created.
    Since,
    /// The bans still active now (not expired, not lifted by their origin), for a new host.
    Active,
    /// The operators' control events in force now (pardons and allows not ended or revoked,
    /// operator bans not expired), in `controls`, up to what the archive has committed.
    Controls,
    /// Every ban (ended ones too) from `since_ms` on, in archive order: a new host's memory of
    /// earlier bans for escalation's repeat rule.
    History,
    /// Which of `ids` (a host's own published events) the archive holds: the end-to-end
    /// acknowledgement. Answered with a [`HeldAnswer`], not a page.
    Held,
}

/// Most ids one `held` request may ask about.
pub const MAX_HELD_ASK: usize = 1000;

/// The answer to a `held` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeldAnswer {
    /// The asked ids the archive holds (committed to the database).
    pub held: Vec<uuid::Uuid>,
    /// The stream's last sequence when the question came (read first).
    pub last: u64,
    /// The archiver consumer's ack floor then (read second): everything up to it is in the
    /// database. An event stored by the stream at or below a `last` that a later answer's
    /// `floor` reached, and not held, was lost by the stream. A floor above `last` means the
    /// consumer and the stream disagree (the stream went back): nothing can be concluded.
    pub floor: u64,
    /// Set when the archiver could not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One page request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayRequest {
    pub kind: ReplayKind,
    /// Jails to include (`["*"]` for all).
    pub jails: Vec<String>,
    /// Leave out this origin's events (the asking host's own).
    #[serde(default)]
    pub exclude_origin: Option<String>,
    /// Page cursor: for `since` a stream sequence, for `active` the position after the last page.
    pub after: u64,
    /// The `high_seq` of the first page; absent on the first request.
    #[serde(default)]
    pub until_seq: Option<u64>,
    /// Events per page (capped at [`MAX_PAGE`]).
    pub limit: usize,
    /// `history`: bans from this time on (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// Only the answering site's own events and records, not what it relayed from federated
    /// sites (a federated site's relay asks so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    /// Include the intake sources' intel and unlist orders (a host with `intel = "ban"` asks
    /// so; hosts of releases before intake never do, and cannot read them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intel: bool,
    /// `held`: the event ids asked about (at most [`MAX_HELD_ASK`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<uuid::Uuid>,
}

/// One replayed event and where it sits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replayed {
    /// Its stream sequence.
    pub seq: u64,
    /// The page cursor just after it.
    pub cursor: u64,
    pub event: Event,
    /// When the stream stored it (what a key's end is checked against for events that arrive
    /// late); absent from archivers before host keys.
    #[serde(
        default,
        with = "crate::control::opt_rfc3339",
        skip_serializing_if = "Option::is_none"
    )]
    pub stored: Option<std::time::SystemTime>,
}

/// One control event and its stream sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayedControl {
    pub seq: u64,
    pub control: Control,
    /// The federated site it was relayed from; absent: the answering site's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// One page of the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayPage {
    pub events: Vec<Replayed>,
    /// `controls` pages: the control events in force; `since` pages: those stored in the range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<ReplayedControl>,
    /// Highest stream sequence covered by this replay.
    pub high_seq: u64,
    /// How many events the whole replay holds (for progress), counted on the first page.
    pub total: u64,
    /// Whether this is the last page.
    pub done: bool,
    /// Where the next page starts (`after` of the next request): for `since` the last stream
    /// sequence this page covered, even when the events there were left out.
    #[serde(default)]
    pub next: u64,
    /// Set when the archiver could not answer (database down…).
    #[serde(default)]
    pub error: Option<String>,
    /// `since`: the stream was sealed after it went back (a power cut), and the cursor lies
    /// between the cut and where the numbering went on; ask again from here (an empty page,
    /// `done` for clients that do not know this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at: Option<u64>,
}
