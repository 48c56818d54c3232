//! When to catch up, and what a catch-up's answers mean: the sequence tracking of live events
//! ([`Tracker`]), the backoff while the archiver does not answer, the first backfill of a new
//! host and the catch-ups after it. No I/O: the daemon starts the fetches
//! ([`super::catchup::Asker`]) and applies what [`Schedule::on_fetched`] hands back.

use super::catchup::{Fetched, Plan};
use super::follow::{Incoming, Seen, Tracker};
use crate::metrics::Metrics;
use shared_f2b::replay::ReplayedControl;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Longest wait between catch-up attempts while the archiver does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the daemon is to do with a catch-up's answer.
#[derive(Debug)]
pub enum Step {
    /// Apply `batch` (possibly empty), then record `cursor` when given.
    Apply {
        batch: Vec<Incoming>,
        cursor: Option<u64>,
    },
    /// Earlier bans for escalation's memory: address, time, end.
    Remember(Vec<(IpAddr, SystemTime, Option<SystemTime>)>),
    /// The operators' orders in force up to `high`: reconciled with the state's, the new ones
    /// applied.
    Controls {
        controls: Vec<ReplayedControl>,
        high: u64,
    },
    /// Nothing to do.
    Nothing,
}

/// The catch-up state of one subscriber.
#[derive(Debug)]
pub struct Schedule {
    stream: String,
    tracker: Tracker,
    /// A catch-up is wanted.
    wanted: bool,
    /// Not before this (backoff after failures).
    not_before: Instant,
    failures: u32,
    /// A fetch is running.
    fetching: bool,
    /// The bans in force were backfilled once (the state had a cursor, or a backfill ended).
    backfilled: bool,
    /// Escalation's memory of earlier bans is read once per start, with the first catch-up.
    history_due: bool,
}

impl Schedule {
    /// For `stream`, resuming at the state's `cursor` (`None`: a new host, which backfills
    /// first). A catch-up is due at once.
    pub fn new(stream: String, cursor: Option<u64>) -> Schedule {
        Schedule {
            stream,
            tracker: Tracker::at(cursor.unwrap_or(0)),
            wanted: true,
            not_before: Instant::now(),
            failures: 0,
            fetching: false,
            backfilled: cursor.is_some(),
            history_due: true,
        }
    }

    /// Live delivery may have missed events (a reconnect, dropped messages, the periodic
    /// check): catch up.
    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// The fetch to start now, if one is due and none runs: its plan, and whether it reads the
    /// earlier bans for escalation first. It covers what was wanted so far.
    pub fn start(&mut self) -> Option<(Plan, bool)> {
        if self.fetching || !self.wanted || Instant::now() < self.not_before {
            return None;
        }
        self.wanted = false;
        self.fetching = true;
        let plan = match self.backfilled {
            true => Plan::Since(self.tracker.done),
            false => Plan::Backfill,
        };
        Some((plan, self.history_due))
    }

    /// When a wanted catch-up held back by backoff may start (for the daemon's timer).
    pub fn retry_at(&self) -> Option<Instant> {
        (self.wanted && !self.fetching).then_some(self.not_before)
    }

    /// Whether a fetch runs.
    pub fn fetching(&self) -> bool {
        self.fetching
    }

    /// Events this host knows it has not handled yet.
    pub fn missing(&self) -> u64 {
        self.tracker.missing()
    }

    /// A batch of live messages: those of the stream are sequence-tracked (a gap wants a
    /// catch-up; an old sequence was handled already and is left out). Gives the batch and the
    /// cursor to record with it (none before the first backfill ended).
    pub fn on_live(
        &mut self,
        msgs: Vec<Incoming>,
        metrics: &Metrics,
    ) -> (Vec<Incoming>, Option<u64>) {
        let mut batch = Vec::with_capacity(msgs.len());
        for msg in msgs {
            if let (Some(seq), Some(name)) = (msg.seq, msg.stream.as_deref())
                && name == self.stream
            {
                match self.tracker.on_live(seq) {
                    Seen::InOrder => {}
                    Seen::Gap => self.want(),
                    Seen::Old => {
                        // Handled already (by a catch-up), unless the stream was re-created:
                        // the periodic check finds that out.
                        metrics.skip("old_sequence");
                        continue;
                    }
                }
            }
            batch.push(msg);
        }
        (batch, self.backfilled.then_some(self.tracker.done))
    }

    /// What a fetch reported, in order.
    pub fn on_fetched(&mut self, fetched: Fetched) -> Step {
        match fetched {
            Fetched::Page { events, through } => {
                if let Some(seq) = through {
                    self.tracker.caught_up(seq);
                }
                Step::Apply {
                    batch: events,
                    cursor: through.map(|_| self.tracker.done),
                }
            }
            Fetched::History(bans) => Step::Remember(bans),
            Fetched::Controls { controls, high } => Step::Controls { controls, high },
            Fetched::Done { plan, high, events } => self.done(plan, high, events),
            Fetched::Reset { last } => {
                self.fetching = false;
                tracing::warn!(cursor = self.tracker.done, stream_last = last,
                    stream = %self.stream, "the stream was re-created; following it from its start");
                self.tracker = Tracker::at(0);
                self.succeeded();
                self.want();
                Step::Apply {
                    batch: Vec::new(),
                    cursor: Some(0),
                }
            }
            Fetched::Failed(e) => {
                let retry = self.failed();
                if self.failures == 1 {
                    tracing::warn!(error = %e, "cannot catch up now; applying live \
                        events and retrying with backoff (logged again once it works)");
                } else {
                    tracing::debug!(error = %e, ?retry, "catch-up retry failed");
                }
                Step::Nothing
            }
        }
    }

    /// The fetch ended without its last word (its task panicked): failed.
    pub fn on_lost(&mut self) {
        let retry = self.failed();
        tracing::error!(?retry, "the catch-up task ended without a result; retrying");
    }

    /// Everything up to `high` came.
    fn done(&mut self, plan: Plan, high: u64, events: u64) -> Step {
        self.history_due = false;
        self.fetching = false;
        self.tracker.caught_up(high);
        if !self.wanted {
            // No jump, reconnect or drop since the fetch began: what came live after its end
            // came in order.
            self.tracker.caught_up(self.tracker.seen);
        }
        if self.succeeded() {
            tracing::info!("the archiver answers again");
        }
        match plan {
            // Then what came after the archive's end, from the stream.
            Plan::Backfill => {
                self.backfilled = true;
                self.want();
                tracing::info!(
                    applied = events,
                    up_to_seq = high,
                    "backfill of active bans done"
                );
            }
            Plan::Since(_) if events > 0 => {
                tracing::info!(events, up_to_seq = high, "caught up");
            }
            Plan::Since(_) => {}
        }
        Step::Apply {
            batch: Vec::new(),
            cursor: Some(self.tracker.done),
        }
    }

    /// The fetch failed: wanted again, after a backoff; gives the backoff.
    fn failed(&mut self) -> Duration {
        self.fetching = false;
        self.failures += 1;
        self.wanted = true;
        let delay = Duration::from_secs(1 << self.failures.min(6)).min(MAX_BACKOFF);
        self.not_before = Instant::now() + delay;
        delay
    }

    /// It worked; true when earlier attempts had failed.
    fn succeeded(&mut self) -> bool {
        let recovered = self.failures > 0;
        self.failures = 0;
        self.not_before = Instant::now();
        recovered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::catchup::CatchupError;
    use crate::intake::follow::Source;

    const STREAM: &str = "F2B_TEST";

    fn live(seq: u64) -> Incoming {
        Incoming {
            source: Source::Live,
            stored: None,
            seq: Some(seq),
            stream: Some(STREAM.into()),
            subject: "f2b.ban.sshd.alice".into(),
            payload: Default::default(),
        }
    }

    fn seqs(batch: &[Incoming]) -> Vec<u64> {
        batch.iter().filter_map(|m| m.seq).collect()
    }

    fn done(plan: Plan, high: u64) -> Fetched {
        Fetched::Done {
            plan,
            high,
            events: 0,
        }
    }

    fn failed() -> Fetched {
        Fetched::Failed(CatchupError::NoArchiver("f2b.replay".into()))
    }

    fn cursor(step: Step) -> Option<u64> {
        match step {
            Step::Apply { cursor, .. } => cursor,
            other => panic!("not an apply: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_host_backfills_then_catches_up_from_the_archive_s_end() {
        let metrics = Metrics::new().0;
        let mut s = Schedule::new(STREAM.into(), None);
        assert_eq!(s.start(), Some((Plan::Backfill, true)));
        assert_eq!(s.start(), None, "one fetch at a time");
        // Live events meanwhile are applied, but no cursor is recorded before the backfill.
        let (batch, at) = s.on_live(vec![live(11), live(12)], &metrics);
        assert_eq!((seqs(&batch), at), (vec![11, 12], None));
        assert_eq!(cursor(s.on_fetched(done(Plan::Backfill, 10))), Some(10));
        assert!(!s.fetching());
        // Then what the stream holds after the archive's end, without escalation's history.
        assert_eq!(s.start(), Some((Plan::Since(10), false)));
        assert_eq!(cursor(s.on_fetched(done(Plan::Since(10), 12))), Some(12));
        assert_eq!(s.start(), None, "nothing wanted");
        let (batch, at) = s.on_live(vec![live(13)], &metrics);
        assert_eq!((seqs(&batch), at), (vec![13], Some(13)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_wants_a_catch_up_and_old_sequences_are_left_out() {
        let metrics = Metrics::new().0;
        let mut s = Schedule::new(STREAM.into(), Some(5));
        assert_eq!(s.start(), Some((Plan::Since(5), true)));
        assert_eq!(cursor(s.on_fetched(done(Plan::Since(5), 5))), Some(5));
        let (batch, at) = s.on_live(vec![live(5), live(6), live(8)], &metrics);
        assert_eq!(seqs(&batch), vec![6, 8], "5 was handled");
        assert_eq!(at, Some(6), "the cursor stops before the gap");
        assert_eq!(s.missing(), 2);
        assert_eq!(s.start(), Some((Plan::Since(6), false)));
        // A page through 7, then the end: everything up to 8 is handled.
        let page = Fetched::Page {
            events: vec![live(7)],
            through: Some(7),
        };
        match s.on_fetched(page) {
            Step::Apply { batch, cursor } => assert_eq!((seqs(&batch), cursor), (vec![7], Some(7))),
            other => panic!("{other:?}"),
        }
        assert_eq!(cursor(s.on_fetched(done(Plan::Since(6), 7))), Some(8));
        assert_eq!(s.missing(), 0);
        // A message of another stream is not tracked.
        let other = Incoming {
            stream: Some("OTHER".into()),
            ..live(100)
        };
        assert_eq!(s.on_live(vec![other], &metrics).1, Some(8));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_doubling_up_to_a_minute_and_recover() {
        let mut s = Schedule::new(STREAM.into(), Some(0));
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(s.start().is_some());
            assert!(matches!(s.on_fetched(failed()), Step::Nothing));
            let at = s.retry_at().expect("wanted again");
            waits.push((at - Instant::now()).as_secs());
            assert_eq!(s.start(), None, "not before the backoff");
            tokio::time::advance(at - Instant::now()).await;
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert!(s.start().is_some());
        assert_eq!(cursor(s.on_fetched(done(Plan::Since(0), 3))), Some(3));
        // Recovered: the next one is not held back.
        s.want();
        assert!(s.start().is_some());
        s.on_lost();
        assert_eq!(s.retry_at(), Some(Instant::now() + Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_re_created_stream_is_followed_from_its_start() {
        let metrics = Metrics::new().0;
        let mut s = Schedule::new(STREAM.into(), Some(500));
        assert!(s.start().is_some());
        assert_eq!(cursor(s.on_fetched(Fetched::Reset { last: 3 })), Some(0));
        assert_eq!(s.start(), Some((Plan::Since(0), true)));
        let (batch, _) = s.on_live(vec![live(1)], &metrics);
        assert_eq!(seqs(&batch), vec![1], "sequences start again");
    }
}
