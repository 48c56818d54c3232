//! Intake: the threat-intelligence sources of `[[archiver.intake]]` (MISP's REST API, a MISP
//! static feed, plain lists), each fetched every so long and turned into intel orders on
//! `<prefix>.control.intel.<source>` / `.unlist.<source>` (which only the archiver's user and
//! operators may publish), archived like every order and applied by the subscribers that take
//! intel (`[subscriber] intel = "ban"`).
//!
//! One round ([`Intake::round`]): fetch and parse ([`fetch`], [`parse`]); leave out what must
//! never be banned ([`Intake::keep`]: wider than `max_prefix`, the feed allowlist, the NATS
//! servers, special addresses, an operator's pardon or allow in force) and what is over
//! `max_entries`; then compare with what the source's orders ban now ([`state`]): a new entry,
//! or one with less than half its bantime left, is ordered; one the source no longer lists is
//! unlisted. A fetch that fails or lists nothing changes nothing.

pub mod fetch;
pub mod parse;
pub mod state;

use crate::blocklist::never_listed;
use crate::db::Db;
use crate::query;
use async_nats::HeaderMap;
use ipnet::IpNet;
use parse::Entry;
use shared_f2b::control::{Control, ControlKind, Listing, is_global_net, overlap};
use shared_f2b::intake::{IntakeConfig, IntakeKind};
use shared_f2b::signing::Signer;
use shared_f2b::subject::control_subject;
use shared_f2b::tasks::Tasks;
use state::{Fetch, Held};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// Orders published before their acks are awaited and what they changed is recorded.
const WINDOW: usize = 1000;

/// What can go wrong in a round.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("fetching {url}: {detail}")]
    Fetch { url: String, detail: String },
    #[error("{url}: not what a {kind} source gives: {detail}", kind = "MISP")]
    Parse { url: String, detail: String },
    #[error("{0} lists nothing: nothing changed")]
    Empty(String),
    #[error("the archive: {0}")]
    Db(#[from] sqlx::Error),
    #[error("publishing: {0}")]
    Publish(String),
    #[error("the fetch stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Entries the source lists that are taken.
    pub listed: usize,
    /// Intel orders published (new entries and renewals).
    pub ordered: usize,
    /// Unlist orders published.
    pub unlisted: usize,
    /// Entries left out (too wide, never banned, over `max_entries`) and lines not understood.
    pub left_out: usize,
    /// How long the fetch (and parse) and the publishing (acks and records) took, in ms.
    pub fetch_ms: u64,
    pub publish_ms: u64,
}

/// One source and what its orders ban now.
pub struct Intake {
    source: IntakeConfig,
    db: Db,
    js: async_nats::jetstream::Context,
    prefix: String,
    signer: Option<Arc<Signer>>,
    /// Nets never ordered: the feed allowlist and the NATS servers.
    never: Vec<IpNet>,
    held: HashMap<IpNet, Held>,
    /// `misp-feed`: each event's timestamp and entries as last read.
    events: HashMap<uuid::Uuid, (u64, Vec<Entry>)>,
    agent: ureq::Agent,
}

/// Spawns one task per `[[archiver.intake]]` source; their orders are signed with `[trust]
/// intake_seed_file` (a key that counts on intel orders only, never an operator's).
pub async fn spawn(
    tasks: &mut Tasks,
    config: &shared_f2b::Config,
    db: &Db,
    client: &async_nats::Client,
    shutdown: &CancellationToken,
) -> Result<(), shared_f2b::signing::KeyError> {
    let signer = match &config.trust.intake_seed_file {
        Some(path) => Some(Arc::new(Signer::from_file(path)?)),
        None => None,
    };
    let never = crate::blocklist::never_nets(config).await;
    for source in &config.archiver.intake {
        let intake = Intake::new(
            source.clone(),
            db.clone(),
            async_nats::jetstream::new(client.clone()),
            config.nats.subject_prefix.clone(),
            signer.clone(),
            never.clone(),
        );
        tasks.spawn("intake", intake.run(shutdown.clone()));
    }
    Ok(())
}

impl Intake {
    pub fn new(
        source: IntakeConfig,
        db: Db,
        js: async_nats::jetstream::Context,
        prefix: String,
        signer: Option<Arc<Signer>>,
        never: Vec<IpNet>,
    ) -> Intake {
        Intake {
            source,
            db,
            js,
            prefix,
            signer,
            never,
            held: HashMap::new(),
            events: HashMap::new(),
            agent: fetch::agent(),
        }
    }

    /// Rounds every `every` until shutdown; a failed round is logged, recorded and tried
    /// again at the next.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let name = self.source.name.clone();
        loop {
            match self.round().await {
                Ok(r) => tracing::info!(source = %name, listed = r.listed, ordered = r.ordered,
                    unlisted = r.unlisted, left_out = r.left_out, fetch_ms = r.fetch_ms,
                    publish_ms = r.publish_ms, "intake source fetched"),
                Err(e) => tracing::warn!(source = %name, error = %e,
                    "intake source not taken in; nothing changed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.source.every) => {}
            }
        }
    }

    /// One fetch, compared with what is banned now, and the orders that follow; recorded in
    /// `f2b_intake_sources` either way.
    pub async fn round(&mut self) -> Result<Round, IntakeError> {
        let at = SystemTime::now();
        let result = self.take_in(at).await;
        let error = result.as_ref().err().map(|e| e.to_string());
        let fetch = Fetch {
            at,
            outcome: error.as_deref().map_or(Ok(()), Err),
            entries: result.as_ref().map_or(0, |r| r.listed),
        };
        state::fetched(&self.db, &self.source.name, fetch).await?;
        result
    }

    async fn take_in(&mut self, now: SystemTime) -> Result<Round, IntakeError> {
        if self.held.is_empty() {
            self.held = state::load(&self.db, &self.source.name).await?;
        }
        let started = std::time::Instant::now();
        let (entries, unparsed) = self.fetch(now).await?;
        let fetch_ms = started.elapsed().as_millis() as u64;
        if entries.is_empty() {
            return Err(IntakeError::Empty(self.source.url.clone()));
        }
        let shields = query::shields_in_force(&self.db, now).await?;
        let mut round = Round {
            left_out: unparsed,
            fetch_ms,
            ..Round::default()
        };
        let mut wanted: BTreeMap<IpNet, Listing> = BTreeMap::new();
        for entry in entries {
            if !self.keep(entry.net, &shields) || wanted.contains_key(&entry.net) {
                round.left_out += usize::from(!wanted.contains_key(&entry.net));
                continue;
            }
            if wanted.len() >= self.source.max_entries {
                round.left_out += 1;
                continue;
            }
            wanted.insert(entry.net, entry.listing);
        }
        if wanted.is_empty() {
            return Err(IntakeError::Empty(self.source.url.clone()));
        }
        round.listed = wanted.len();
        let orders = self.orders(&wanted, now);
        round.ordered = orders
            .iter()
            .filter(|c| c.kind == ControlKind::Intel)
            .count();
        round.unlisted = orders.len() - round.ordered;
        let started = std::time::Instant::now();
        self.publish(orders).await?;
        round.publish_ms = started.elapsed().as_millis() as u64;
        Ok(round)
    }

    /// Reads the source (in a blocking task: ureq and files).
    async fn fetch(&mut self, now: SystemTime) -> Result<(Vec<Entry>, usize), IntakeError> {
        let source = self.source.clone();
        let agent = self.agent.clone();
        let mut events = std::mem::take(&mut self.events);
        let (result, events) = tokio::task::spawn_blocking(move || {
            let result = read(&agent, &source, &mut events, now);
            (result, events)
        })
        .await?;
        self.events = events;
        result
    }

    /// Whether `net` may be ordered banned at all.
    fn keep(&self, net: IpNet, shields: &[IpNet]) -> bool {
        let widest = match net {
            IpNet::V4(_) => self.source.max_prefix,
            IpNet::V6(_) => self.source.max_prefix_v6,
        };
        net.prefix_len() >= widest
            && is_global_net(&net)
            && !never_listed(net.network(), &[])
            && !never_listed(net.broadcast(), &[])
            && !self.never.iter().chain(shields).any(|n| overlap(n, &net))
    }

    /// The orders that bring what is banned in line with `wanted`.
    fn orders(&self, wanted: &BTreeMap<IpNet, Listing>, now: SystemTime) -> Vec<Control> {
        let name = &self.source.name;
        let renew_by = crate::store::ms(now + self.source.bantime / 2);
        let until = now + self.source.bantime;
        let reason = format!("listed by {} source {name}", self.source.kind.as_str());
        let mut orders = Vec::new();
        for (net, listing) in wanted {
            let current = self
                .held
                .get(net)
                .is_some_and(|h| h.until_ms > renew_by && h.listing == *listing);
            if !current && let Ok(c) = Control::intel(name, *net, until, &reason, listing.clone()) {
                orders.push(c);
            }
        }
        let reason = format!("no longer listed by source {name}");
        let mut gone: Vec<&IpNet> = self
            .held
            .keys()
            .filter(|n| !wanted.contains_key(n))
            .collect();
        gone.sort();
        orders.extend(
            gone.into_iter()
                .filter_map(|net| Control::unlist(name, *net, &reason).ok()),
        );
        orders
    }

    /// Publishes `orders` in windows; after each window's acks, records what it changed.
    async fn publish(&mut self, mut orders: Vec<Control>) -> Result<(), IntakeError> {
        let failed = |e: String| IntakeError::Publish(e);
        for window in orders.chunks_mut(WINDOW) {
            let mut acks = Vec::with_capacity(window.len());
            for control in window.iter_mut() {
                if let Some(signer) = &self.signer {
                    signer.sign_control(control);
                }
                let subject = control_subject(&self.prefix, control.kind, &control.operator)
                    .map_err(|e| failed(e.to_string()))?;
                let mut headers = HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    control.id.to_string().as_str(),
                );
                let ack = self
                    .js
                    .publish_with_headers(subject, headers, control.encode().into())
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(|e| failed(e.to_string()))?;
            }
            state::record(&self.db, &self.source.name, window).await?;
            for c in window.iter() {
                let Some(net) = c.net else { continue };
                match c.kind {
                    ControlKind::Intel => {
                        self.held.insert(
                            net,
                            Held {
                                order: c.id,
                                until_ms: c.until.map(crate::store::ms).unwrap_or_default(),
                                listing: c.listing.clone().unwrap_or_default(),
                            },
                        );
                    }
                    _ => {
                        self.held.remove(&net);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The entries `source` lists now and the lines not understood (`events`: a feed's events as
/// last read, only changed ones read again).
fn read(
    agent: &ureq::Agent,
    source: &IntakeConfig,
    events: &mut HashMap<uuid::Uuid, (u64, Vec<Entry>)>,
    now: SystemTime,
) -> Result<(Vec<Entry>, usize), IntakeError> {
    match source.kind {
        IntakeKind::List => Ok(parse::list(&fetch::text(agent, &source.url)?)),
        IntakeKind::Misp => {
            let answer = fetch::rest_search(agent, source)?;
            let entries =
                parse::misp_attributes(&answer, source, now).ok_or_else(|| IntakeError::Parse {
                    url: source.url.clone(),
                    detail: "no response.Attribute in the answer".into(),
                })?;
            Ok((entries, 0))
        }
        IntakeKind::MispFeed => {
            let url = fetch::beside(&source.url, "manifest.json");
            let manifest = fetch::json(agent, &url)?;
            let Some(manifest) = manifest.as_object() else {
                return Err(IntakeError::Parse {
                    url,
                    detail: "the manifest is not an object of events".into(),
                });
            };
            let mut read = HashMap::with_capacity(manifest.len());
            let mut bad = 0;
            for (key, meta) in manifest {
                // The key names a file: a uuid, never a path.
                let Ok(uuid) = key.parse::<uuid::Uuid>() else {
                    bad += 1;
                    continue;
                };
                let stamp = meta
                    .get("timestamp")
                    .and_then(|t| t.as_u64().or_else(|| t.as_str()?.parse().ok()))
                    .unwrap_or_default();
                if let Some((seen, entries)) = events.remove(&uuid)
                    && seen == stamp
                    && stamp != 0
                {
                    read.insert(uuid, (seen, entries));
                    continue;
                }
                let event =
                    fetch::json(agent, &fetch::beside(&source.url, &format!("{uuid}.json")))?;
                read.insert(uuid, (stamp, parse::misp_event(&event, source, now)));
            }
            *events = read;
            let mut entries: Vec<(uuid::Uuid, Entry)> = events
                .iter()
                .flat_map(|(uuid, (_, e))| e.iter().map(|e| (*uuid, e.clone())))
                .collect();
            // The same order every time (a net two events list keeps one listing).
            entries.sort_by_key(|e| e.0);
            Ok((entries.into_iter().map(|(_, e)| e).collect(), bad))
        }
    }
}
