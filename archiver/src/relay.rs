//! The federation relay: brings the events of each federated site into this site's stream.
//!
//! A remote site's live events reach this site's account through the hub, labelled by the hub
//! with the site they came from (`site.a.f2b.live.ban.sshd.alice`). For each site in
//! `[federation] sites` the relay follows that subject, takes the site's key records (checked
//! against the site's operator keys from this site's config) into a keyring of its own, checks
//! every event's signature against it, and publishes what passes into this site's stream on
//! `f2b.remote.<site>.…` (the event id as `Nats-Msg-Id`), from where the archive, the page and
//! this site's hosts get it as they get local events.
//!
//! Nothing is lost while the link is down: the relay keeps how far it has read the site's
//! stream (its sequence, in `f2b_site_cursors`), and asks the site's archiver for the rest
//! (`site.a.f2b.replay`, pages of `since`) when a live sequence jumps, when it starts, and
//! every `[federation] resync`. Nothing is applied twice: a sequence at or below the cursor is
//! skipped, the stream drops a repeated id within its duplicate window, and the archive and
//! every host drop it by id after that.
//!
//! What a site relays is only its own: a remote stream's own relayed events (`f2b.remote.…`,
//! which it got from a third site) are left out, so each site speaks only for itself, and
//! another site's operators' orders come in only with `accept_orders`.

use crate::db::Db;
use crate::store;
use async_nats::HeaderMap;
use async_nats::header::{NATS_SEQUENCE, NATS_STREAM, NATS_SUBJECT};
use futures::StreamExt;
use shared_f2b::control::{Control, ControlKind};
use shared_f2b::event::Event;
use shared_f2b::federation::{FederationConfig, remote_prefix, split_remote};
use shared_f2b::inbound::{Received, decode_any};
use shared_f2b::keyring::{Keyring, Taken};
use shared_f2b::replay::{ReplayKind, ReplayPage, ReplayRequest};
use shared_f2b::signing::OperatorKeys;
use shared_f2b::subject::{control_subject, event_subject, stored_subject};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How long one replay page may take to come back across the hub.
const PAGE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the stream may take to acknowledge a relayed event.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Events per page asked for: small pages cross the hub quickly (a page of the catch-up
/// protocol's largest size, signed events, nears NATS' 1 MB message limit).
const RELAY_PAGE: usize = 1000;
/// Most pages one catch-up reads (the next resync goes on).
const MAX_PAGES: usize = 2000;
/// Most host keys taken from one site.
const MAX_KEYS: usize = 100_000;
/// How often the cursor is written while live events flow.
const CURSOR_EVERY: Duration = Duration::from_secs(1);

/// Why a step of the relay did not get through (it is retried; nothing moves past it).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("site {site}'s archiver did not answer: {error}")]
    Request {
        site: String,
        error: async_nats::RequestError,
    },
    #[error("site {site}'s archiver sent an unreadable page: {error}")]
    Page {
        site: String,
        error: serde_json::Error,
    },
    #[error("site {site}'s archiver could not answer: {error}")]
    Remote { site: String, error: String },
    #[error("cannot store site {site}'s event in this site's stream: {error}")]
    Publish { site: String, error: String },
    #[error("cannot record how far site {site} was read: {error}")]
    Cursor { site: String, error: sqlx::Error },
}

/// One remote site's relay.
pub struct Relay {
    site: String,
    operators: OperatorKeys,
    accept_orders: bool,
    keyring: Keyring,
    /// The key records are in (from the site's `controls` snapshot): until then no event is
    /// taken, so none is refused for a key the relay has not heard of yet.
    keyed: bool,
    cursor: u64,
    written: u64,
    prefix: String,
    stream: String,
    label: String,
    replay_subject: String,
    db: Db,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    counts: Counts,
}

/// What one relay has done, for its log lines.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    relayed: u64,
    refused: u64,
}

impl Relay {
    /// A relay for `site` of `federation`, storing into the stream named in `[nats]`.
    pub fn new(
        site: &str,
        operators: OperatorKeys,
        accept_orders: bool,
        federation: &FederationConfig,
        nats: &shared_f2b::config::NatsConfig,
        db: Db,
        client: async_nats::Client,
    ) -> Relay {
        let prefix = nats.subject_prefix.clone();
        Relay {
            site: site.to_owned(),
            operators,
            accept_orders,
            keyring: Keyring::default(),
            keyed: false,
            cursor: 0,
            written: 0,
            label: federation.label(site),
            replay_subject: federation.replay_subject(site, &prefix),
            stream: nats.stream.clone(),
            prefix,
            db,
            js: shared_f2b::nats::jetstream(client.clone(), PUBLISH_TIMEOUT),
            client,
            counts: Counts::default(),
        }
    }

    /// Follows the site until `shutdown`.
    pub async fn run(
        mut self,
        live_subject: String,
        resync: Duration,
        shutdown: CancellationToken,
    ) {
        let mut live = loop {
            match self.client.subscribe(live_subject.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(site = %self.site, error = %e, "cannot follow the site yet; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        };
        self.cursor = loop {
            match store::site_cursor(&self.db, &self.site).await {
                Ok(seq) => break seq,
                Err(e) => {
                    tracing::warn!(site = %self.site, error = %e, "cannot read the relay's cursor yet; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        };
        self.written = self.cursor;
        tracing::info!(site = %self.site, after = self.cursor, subject = %live_subject, "relaying the site's events");
        let mut resync_tick = tokio::time::interval(resync);
        let mut cursor_tick = tokio::time::interval(CURSOR_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = live.next() => match msg {
                    Some(msg) => self.on_live(msg).await,
                    None => break,
                },
                _ = resync_tick.tick() => self.catch_up_logged().await,
                _ = cursor_tick.tick() => self.save_cursor_logged().await,
            }
        }
        self.save_cursor_logged().await;
    }

    /// A live message of the site: the next one is relayed, a jump first fetches what is
    /// between, an old one (a duplicate) is dropped.
    async fn on_live(&mut self, msg: async_nats::Message) {
        let Some(live) = msg.subject.as_str().strip_prefix(&self.label) else {
            return;
        };
        let Some(stored) = stored_subject(&self.prefix, live) else {
            return;
        };
        let headers = msg.headers.as_ref();
        let seq = header(headers, NATS_SEQUENCE).and_then(|s| s.parse::<u64>().ok());
        let from_stream = header(headers, NATS_STREAM) == Some(self.stream.as_str())
            && header(headers, NATS_SUBJECT) == Some(stored.as_str());
        let (Some(seq), true) = (seq, from_stream) else {
            tracing::warn!(site = %self.site, subject = %msg.subject, "not from the site's stream; dropped");
            return;
        };
        if !self.keyed || seq > self.cursor.saturating_add(1) {
            // What came before it first (the replay reaches at least this one).
            self.catch_up_logged().await;
            return;
        }
        if seq <= self.cursor {
            return;
        }
        let taken = match self
            .take(&stored, &msg.payload, Some(SystemTime::now()))
            .await
        {
            Ok(Relayed::Sent(ack)) => self.confirm(vec![ack]).await.map(|()| true),
            Ok(Relayed::Skipped) => Ok(true),
            // Its sequence is not signed: what the site's archiver says about it decides (a
            // hub must not move the cursor past a real event with a message of its own).
            Ok(Relayed::Refused) => Ok(false),
            Err(e) => Err(e),
        };
        match taken {
            Ok(true) => self.cursor = seq,
            Ok(false) => self.catch_up_logged().await,
            Err(e) => {
                tracing::warn!(site = %self.site, seq, error = %e, "relay held up; retried at the next resync")
            }
        }
    }

    async fn catch_up_logged(&mut self) {
        if let Err(e) = self.catch_up().await {
            tracing::warn!(site = %self.site, after = self.cursor, error = %e, "cannot catch up with the site yet; retrying");
        }
    }

    async fn save_cursor_logged(&mut self) {
        if self.written == self.cursor {
            return;
        }
        match store::set_site_cursor(&self.db, &self.site, self.cursor).await {
            Ok(()) => self.written = self.cursor,
            Err(error) => {
                let e = RelayError::Cursor {
                    site: self.site.clone(),
                    error,
                };
                tracing::warn!(error = %e, "retrying");
            }
        }
    }

    /// Fetches everything after the cursor from the site's archiver, relaying it in stream
    /// order; first the site's key records (again whenever there is something to read: a range
    /// the site's archive serves from its database carries no key records).
    async fn catch_up(&mut self) -> Result<(), RelayError> {
        let mut until = None;
        let before = self.counts;
        let mut reset = false;
        for pages in 0.. {
            if pages >= MAX_PAGES {
                tracing::warn!(site = %self.site, cursor = self.cursor, "catch-up stopped after {MAX_PAGES} pages; going on at the next resync");
                break;
            }
            let page = self.page(ReplayKind::Since, self.cursor, until).await?;
            if let Some(cut) = page.restart_at
                && until.is_none()
                && cut < self.cursor
            {
                tracing::warn!(site = %self.site, cursor = self.cursor, from = cut,
                    "the site's stream went back and was sealed; reading it from where it went \
                     back to (ids dedupe)");
                self.cursor = cut;
                continue;
            }
            if page.high_seq < self.cursor {
                if reset {
                    return Err(self.remote_error("its stream's last sequence went back twice"));
                }
                tracing::warn!(site = %self.site, cursor = self.cursor, high = page.high_seq,
                    "the site's stream was re-created; reading it from the start (ids dedupe)");
                self.cursor = 0;
                reset = true;
                continue;
            }
            if until.is_none() && (page.high_seq > self.cursor || !self.keyed) {
                self.load_keys().await?;
            }
            let high = *until.get_or_insert(page.high_seq);
            // A page that goes nowhere, or past the end it promised, is not taken.
            if page.next > high || (page.next <= self.cursor && !page.done) {
                return Err(self.remote_error("a page outside its range"));
            }
            let mut items: Vec<(u64, Item)> = page
                .events
                .into_iter()
                .map(|r| (r.seq, Item::Event(Box::new(r.event), r.stored)))
                .chain(
                    page.controls
                        .into_iter()
                        .filter(|c| c.site.is_none())
                        .map(|c| (c.seq, Item::Control(Box::new(c.control)))),
                )
                .collect();
            items.sort_by_key(|(seq, _)| *seq);
            // Sent one after the other, their acks awaited together: the cursor moves past the
            // page only once this site's stream holds all of it.
            let start = self.cursor;
            // The page's signatures checked at once (ed25519 batch verification); an event
            // whose key record is in this page is checked on its own after the record.
            let refs: Vec<Option<&Event>> = items
                .iter()
                .map(|(_, item)| match item {
                    Item::Event(event, _) if event.site.is_none() => Some(event.as_ref()),
                    _ => None,
                })
                .collect();
            let verified = self.keyring.verify_all(&refs);
            let mut acks = Vec::with_capacity(items.len());
            for ((seq, item), verified) in items.into_iter().zip(verified) {
                if seq <= self.cursor || seq > high {
                    continue;
                }
                let relayed = match item {
                    // A third site's event the site relayed: that site speaks for itself.
                    Item::Event(event, _) if event.site.is_some() => Ok(Relayed::Skipped),
                    Item::Event(event, stored) => self.event(&event, stored, verified).await,
                    Item::Control(control) => self.control(&control).await,
                };
                match relayed {
                    Ok(Relayed::Sent(ack)) => acks.push(ack),
                    Ok(_) => {}
                    Err(e) => {
                        self.cursor = start;
                        return Err(e);
                    }
                }
                self.cursor = seq;
            }
            if let Err(e) = self.confirm(acks).await {
                self.cursor = start;
                return Err(e);
            }
            self.cursor = self.cursor.max(page.next);
            self.save_cursor_logged().await;
            if page.done {
                break;
            }
        }
        let (relayed, refused) = (
            self.counts.relayed - before.relayed,
            self.counts.refused - before.refused,
        );
        if relayed + refused > 0 {
            tracing::info!(site = %self.site, relayed, refused, cursor = self.cursor, "caught up with the site");
        }
        Ok(())
    }

    /// The site's key records, from its `controls` snapshot.
    async fn load_keys(&mut self) -> Result<(), RelayError> {
        let mut after = 0;
        let mut until = None;
        loop {
            let page = self.page(ReplayKind::Controls, after, until).await?;
            until = Some(page.high_seq);
            let mut acks = Vec::new();
            for c in page.controls.iter().filter(|c| c.site.is_none()) {
                if c.control.kind == ControlKind::Key
                    && let Relayed::Sent(ack) = self.control(&c.control).await?
                {
                    acks.push(ack);
                }
            }
            self.confirm(acks).await?;
            if (page.next <= after && !page.done) || self.keyring.len() > MAX_KEYS {
                return Err(
                    self.remote_error("a key record page that goes nowhere, or too many keys")
                );
            }
            after = page.next;
            if page.done {
                break;
            }
        }
        self.keyed = true;
        tracing::info!(site = %self.site, host_keys = self.keyring.len(), "the site's host keys are in");
        Ok(())
    }

    async fn page(
        &self,
        kind: ReplayKind,
        after: u64,
        until_seq: Option<u64>,
    ) -> Result<ReplayPage, RelayError> {
        let request = ReplayRequest {
            kind,
            jails: vec!["*".into()],
            exclude_origin: None,
            after,
            until_seq,
            limit: RELAY_PAGE,
            since_ms: None,
            local: true,
            // Another site's intake is that site's own.
            intel: false,
            ids: Vec::new(),
        };
        let body = serde_json::to_vec(&request).expect("a request serialises");
        let reply = tokio::time::timeout(
            PAGE_TIMEOUT,
            self.client
                .request(self.replay_subject.clone(), body.into()),
        )
        .await
        .map_err(|_| RelayError::Request {
            site: self.site.clone(),
            error: async_nats::RequestErrorKind::TimedOut.into(),
        })?
        .map_err(|error| RelayError::Request {
            site: self.site.clone(),
            error,
        })?;
        let page: ReplayPage =
            serde_json::from_slice(&reply.payload).map_err(|error| RelayError::Page {
                site: self.site.clone(),
                error,
            })?;
        match page.error {
            Some(error) => Err(RelayError::Remote {
                site: self.site.clone(),
                error,
            }),
            None => Ok(page),
        }
    }

    /// One live message's payload, stored by the site on `subject`.
    async fn take(
        &mut self,
        subject: &str,
        payload: &[u8],
        stored: Option<SystemTime>,
    ) -> Result<Relayed, RelayError> {
        if split_remote(&self.prefix, subject).is_some() {
            return Ok(Relayed::Skipped);
        }
        match decode_any(&self.prefix, subject, payload) {
            Ok(Received::Event(event)) => self.event(&event, stored, false).await,
            Ok(Received::Control(control)) => self.control(&control).await,
            Err(r) => {
                self.refused(r.reason, subject);
                Ok(Relayed::Refused)
            }
        }
    }

    /// Relays an event whose signature a key of the site's keyring made (`verified`: the batch
    /// check found the signature good).
    async fn event(
        &mut self,
        event: &Event,
        stored: Option<SystemTime>,
        verified: bool,
    ) -> Result<Relayed, RelayError> {
        if let Err(e) = self.keyring.check_verified(event, stored, verified) {
            self.refused(e.reason(), &event.origin);
            return Ok(Relayed::Refused);
        }
        let prefix = remote_prefix(&self.prefix, &self.site);
        let Ok(subject) = event_subject(&prefix, event.action, &event.jail, &event.origin) else {
            return Ok(Relayed::Refused);
        };
        self.send(subject, &event.id.to_string(), event.encode())
            .await
            .map(Relayed::Sent)
    }

    /// Relays a key record the site's operators signed (and takes it into the keyring), or an
    /// order when this site accepts theirs.
    async fn control(&mut self, control: &Control) -> Result<Relayed, RelayError> {
        // Another site's intake is for that site's hosts: never relayed here.
        if matches!(control.kind, ControlKind::Intel | ControlKind::Unlist) {
            return Ok(Relayed::Skipped);
        }
        let taken = if control.kind == ControlKind::Key {
            match self.keyring.take(control, &self.operators) {
                // Relayed once (the snapshot brings it again at every catch-up).
                Ok(Taken::Known) => return Ok(Relayed::Skipped),
                Ok(Taken::New) => Ok(()),
                Err(e) => Err(e),
            }
        } else if self.accept_orders {
            self.operators.check(control)
        } else {
            return Ok(Relayed::Skipped);
        };
        if let Err(e) = taken {
            self.refused(e.reason(), &control.operator);
            return Ok(Relayed::Refused);
        }
        let prefix = remote_prefix(&self.prefix, &self.site);
        let Ok(subject) = control_subject(&prefix, control.kind, &control.operator) else {
            return Ok(Relayed::Refused);
        };
        self.send(subject, &control.id.to_string(), control.encode())
            .await
            .map(Relayed::Sent)
    }

    /// Sends into this site's stream; the ack is awaited by [`Relay::confirm`].
    async fn send(&self, subject: String, id: &str, payload: Vec<u8>) -> Result<Ack, RelayError> {
        let mut headers = HeaderMap::new();
        // The site's name in it: another site sending the same id first does not make this
        // site's stream drop the real one.
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}:{id}", self.site).as_str(),
        );
        self.js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| self.publish_failed(e.to_string()))
    }

    /// Waits until this site's stream has stored everything sent.
    async fn confirm(&mut self, acks: Vec<Ack>) -> Result<(), RelayError> {
        for ack in acks {
            let ack = ack.await.map_err(|e| self.publish_failed(e.to_string()))?;
            if !ack.duplicate {
                self.counts.relayed += 1;
            }
        }
        Ok(())
    }

    fn remote_error(&self, what: &str) -> RelayError {
        RelayError::Remote {
            site: self.site.clone(),
            error: what.to_owned(),
        }
    }

    fn publish_failed(&self, error: String) -> RelayError {
        RelayError::Publish {
            site: self.site.clone(),
            error,
        }
    }

    fn refused(&mut self, reason: &str, who: &str) {
        self.counts.refused += 1;
        tracing::warn!(site = %self.site, reason, who, "refused an event or record of the site; not relayed");
    }
}

/// What became of one event or record of the site.
enum Relayed {
    /// Sent into this site's stream; the ack comes.
    Sent(Ack),
    /// Nothing to relay (a third site's event, an order not taken here, a known key record).
    Skipped,
    /// It did not check out (logged and counted).
    Refused,
}

/// A publish into this site's stream, until its ack comes.
type Ack = async_nats::jetstream::context::PublishAckFuture;

/// A replayed item, in stream order.
enum Item {
    Event(Box<Event>, Option<SystemTime>),
    Control(Box<Control>),
}

/// The server's value of a header (the last one: a publisher's own come first).
fn header(
    headers: Option<&HeaderMap>,
    name: impl async_nats::header::IntoHeaderName,
) -> Option<&str> {
    headers?.get_last(name).map(|v| v.as_str())
}

/// Spawns a relay for every site in `[federation] sites`.
pub fn spawn(
    tasks: &mut shared_f2b::tasks::Tasks,
    config: &shared_f2b::Config,
    db: &Db,
    client: &async_nats::Client,
    shutdown: &CancellationToken,
) -> Result<(), shared_f2b::config::Invalid> {
    let federation = &config.federation;
    for site in &federation.sites {
        let relay = Relay::new(
            &site.id,
            site.operators()?,
            site.accept_orders,
            federation,
            &config.nats,
            db.clone(),
            client.clone(),
        );
        let live = federation.live_subject(&site.id, &config.nats.subject_prefix);
        tasks.spawn(
            "federation relay",
            relay.run(live, federation.resync, shutdown.clone()),
        );
    }
    Ok(())
}
