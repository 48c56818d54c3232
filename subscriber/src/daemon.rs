//! The subscriber daemon: subscribe to the live subject, catch up through the archiver, then hand
//! each batch of live events to the [`Worker`] until told to stop, catching up again whenever
//! live delivery may have missed something.

use crate::admission::{Admission, Sites};
use crate::apply::Applier;
use crate::apply::fail2ban::Fail2Ban;
use crate::intake::catchup::{self, Asker, Fetched};
use crate::intake::follow::{self, Incoming};
use crate::intake::schedule::{Schedule, Step};
use crate::metrics::Metrics;
use crate::state::State;
use crate::watch::{self, watch};
use crate::worker::{Flow, NotRecorded, Worker};
use futures::{FutureExt, StreamExt};
use shared_f2b::config::ApplyMode;
use shared_f2b::config::Config;
use shared_f2b::control::ControlKind;
use shared_f2b::health::{self, Health};
use shared_f2b::nats;
use shared_f2b::publish::Sender;
use shared_f2b::signing::OperatorKeys;
use shared_f2b::spool::Spool;
use shared_f2b::tasks::{TaskEnded, Tasks};
use shared_f2b_serve::{notify_ready, notify_stopping, spawn_server};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most messages handled as one batch.
const MAX_BATCH: usize = 2048;
/// How often the bans-held gauges are recomputed (it walks every holding).
const HELD_EVERY: Duration = Duration::from_secs(5);
/// How often the archiver is asked whether the stream moved past what arrived live (the last
/// event before a quiet spell may have been lost with nothing after it to show the gap).
const CHECK_EVERY: Duration = Duration::from_secs(30);

/// Why the subscriber stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot use state_dir {}: {error}", dir.display())]
    StateDir { dir: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Connect(#[from] nats::ConnectError),
    #[error("cannot subscribe to the live subject: {0}")]
    Subscribe(async_nats::SubscribeError),
    #[error(transparent)]
    NotRecorded(#[from] NotRecorded),
    #[error("cannot record the operators' orders in state_dir: {0}")]
    Orders(std::io::Error),
    #[error("the live subscription ended")]
    LiveEnded,
    #[error("{0}")]
    Trust(#[from] shared_f2b::config::Invalid),
    #[error(transparent)]
    PartStopped(#[from] TaskEnded),
}

/// Runs until `shutdown` is cancelled; the batch in flight is finished first. However it
/// ends, the epilogue runs: systemd hears STOPPING, the applier closes, the tasks are joined.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let sub = &config.subscriber;
    let operators = config.trust.operator_keys()?;
    // Read now, so that a bad key stops the start with its message.
    config.trust.intel_signers()?;
    let state_dir = |error| DaemonError::StateDir {
        dir: sub.state_dir.clone(),
        error,
    };
    let mut state = State::open(&sub.state_dir, sub.max_bantime).map_err(state_dir)?;
    state.load_keyring(&operators).map_err(state_dir)?;
    let sites = Sites::new(&config)?;
    for (site, site_operators) in sites.operators() {
        state
            .load_site_keyring(site, site_operators)
            .map_err(state_dir)?;
    }
    tracing::info!(
        operator_keys = operators.len(),
        host_keys = state.keyring.len(),
        require_signatures = sub.require_signatures,
        site = ?config.site_id,
        federated_sites = state.site_keyrings.len(),
        "trust"
    );
    tracing::info!(host = ?config.host_id, holdings = state.holdings.len(),
        cursor = ?state.cursor(&config.nats.stream), "subscriber starting");

    // `/healthz` answers from the start: 503 (`starting`, and what is away) until following.
    let (metrics, registry) = Metrics::new();
    let health = Health::default();
    let mut tasks = Tasks::default();
    spawn_server(&mut tasks, sub.metrics_listen, registry, &health, &shutdown);
    if sub.apply != ApplyMode::Log {
        let socket = sub.fail2ban_socket.clone();
        tasks.spawn(
            "fail2ban probe",
            health::keep_probing(
                "fail2ban",
                health.check("fail2ban"),
                move || {
                    let socket = socket.clone();
                    async move { Fail2Ban::ping(&socket).await }
                },
                shutdown.clone(),
            ),
        );
    }
    let result = follow(
        &config,
        state,
        (operators, sites),
        &metrics,
        &health,
        &mut tasks,
        &shutdown,
    )
    .await;
    // Also when `follow` failed before its own epilogue ran (a second time is harmless).
    notify_stopping();
    health.started(false);
    shutdown.cancel();
    tasks.join().await;
    if let Err(DaemonError::PartStopped(ended)) = &result {
        tracing::error!(error = %ended, "subscriber stopping: a part of it stopped");
    }
    result
}

/// Connects, subscribes and follows until shutdown or a failure; closes the applier either way.
async fn follow(
    config: &Config,
    state: State,
    (operators, sites): (OperatorKeys, Sites),
    metrics: &Metrics,
    health: &Health,
    tasks: &mut Tasks,
    shutdown: &CancellationToken,
) -> Result<(), DaemonError> {
    let sub = &config.subscriber;
    let prefix = config.nats.subject_prefix.clone();
    let conn = nats::connect(
        &config.nats,
        &config.host_id,
        Duration::from_secs(5),
        nats::Lifetime::Daemon,
    )
    .await?;
    health.watch("nats", conn.up.clone());
    let nats_servers = nats::server_addresses(&config.nats.servers).await;
    tasks.spawn(
        "spool",
        watch(
            Spool::new(&config.publisher.spool_dir).confirming(config.publisher.confirm),
            Sender::new(&conn, &config.nats, Duration::from_secs(5)),
            watch::Asking {
                client: conn.client.clone(),
                prefix: prefix.clone(),
                resend_after: shared_f2b::confirm::resend_after(&config.publisher),
            },
            conn.up.clone(),
            metrics.clone(),
            shutdown.clone(),
        ),
    );
    // Subscribed before catching up, so nothing published meanwhile is missed.
    let live = follow::live(&conn.client, &prefix)
        .await
        .map_err(DaemonError::Subscribe)?;
    let mut live = live.ready_chunks(MAX_BATCH);
    let (mut running, mut pages) = Running::new(
        config,
        state,
        Admission::new(config, nats_servers, operators).with_sites(sites),
        conn.client.clone(),
        health,
        metrics,
        shutdown,
    );
    if let Err(e) = running.worker.applier.restore_bantimes().await {
        tracing::warn!(error = %e, "cannot put a jail's bantime back yet; retrying with the next batch");
    }
    // The first connect stored a permit; only later reconnects mean something may be missed.
    let _ = conn.connected.notified().now_or_never();
    tracing::info!(apply = ?sub.apply, jails = ?sub.jails,
        cursor = ?running.state.cursor(&config.nats.stream), "following");
    // systemd hears READY once live events flow; `/healthz` says `starting` until the first
    // catch-up ended (a large backfill must not run into the unit's start timeout).
    notify_ready();
    let result = running
        .dispatch(&mut live, &conn, &mut pages, tasks, shutdown)
        .await;
    running.close(shutdown).await;
    result
}

/// The following daemon's parts, between events.
struct Running<'a> {
    state: State,
    worker: Worker<'a>,
    schedule: Schedule,
    asker: Asker,
    pages_tx: mpsc::Sender<Fetched>,
    /// The running fetch, while [`Schedule::fetching`].
    fetch: Option<tokio::task::JoinHandle<()>>,
    prefix: String,
    health: &'a Health,
    metrics: &'a Metrics,
}

impl<'a> Running<'a> {
    /// The parts, before anything is fetched or applied, and where the fetches' pages arrive.
    fn new(
        config: &'a Config,
        state: State,
        admission: Admission,
        client: async_nats::Client,
        health: &'a Health,
        metrics: &'a Metrics,
        shutdown: &CancellationToken,
    ) -> (Running<'a>, mpsc::Receiver<Fetched>) {
        let sub = &config.subscriber;
        // Pages from a catch-up in the background; two in hand at most.
        let (pages_tx, pages) = mpsc::channel(2);
        let running = Running {
            schedule: Schedule::new(
                config.nats.stream.clone(),
                state.cursor(&config.nats.stream),
            ),
            state,
            worker: Worker {
                config,
                admission,
                applier: Applier::new(
                    sub.apply,
                    Fail2Ban::new(&sub.fail2ban_socket),
                    sub.log_file.clone(),
                    &sub.state_dir,
                ),
                metrics: metrics.clone(),
                held_changed: true,
                shutdown: shutdown.clone(),
            },
            asker: Asker {
                client,
                prefix: config.nats.subject_prefix.clone(),
                jails: sub.jails.clone(),
                exclude_origin: (!sub.include_own).then(|| config.host_id.clone()),
                history: sub
                    .escalation
                    .as_ref()
                    .filter(|e| e.repeat_factor > 1.0)
                    .map(|e| e.memory),
                intel: sub.intel == shared_f2b::config::IntelMode::Ban,
            },
            pages_tx,
            fetch: None,
            prefix: config.nats.subject_prefix.clone(),
            health,
            metrics,
        };
        (running, pages)
    }
}

impl Running<'_> {
    /// Hands each live batch, catch-up page and tick to its handler until shutdown, a part's
    /// end or a failure.
    async fn dispatch(
        &mut self,
        live: &mut (impl futures::Stream<Item = Vec<async_nats::Message>> + Unpin),
        conn: &nats::Connection,
        pages: &mut mpsc::Receiver<Fetched>,
        tasks: &mut Tasks,
        shutdown: &CancellationToken,
    ) -> Result<(), DaemonError> {
        let mut held_tick = tokio::time::interval(HELD_EVERY);
        let mut check_tick = tokio::time::interval_at(Instant::now() + CHECK_EVERY, CHECK_EVERY);
        loop {
            self.start_fetch(pages);
            let retry_at = self.schedule.retry_at();
            let flow = tokio::select! {
                _ = shutdown.cancelled() => Ok(Flow::Stop),
                // Tasks end when told to stop; before that, an end is a failure.
                ended = tasks.ended() => match shutdown.is_cancelled() {
                    true => Ok(Flow::Stop),
                    false => Err(ended.into()),
                },
                // Reconnected or messages dropped: live delivery may have missed events.
                _ = conn.connected.notified() => self.want(),
                _ = conn.lagged.notified() => self.want(),
                _ = check_tick.tick() => self.want(),
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)),
                    if retry_at.is_some() => Ok(Flow::Continue),
                _ = held_tick.tick() => self.upkeep(),
                fetched = pages.recv() => {
                    self.on_fetched(fetched.expect("the daemon holds a sender")).await
                }
                msgs = live.next() => match msgs {
                    Some(msgs) => self.on_live(msgs).await,
                    None => Err(DaemonError::LiveEnded),
                },
            };
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => break Ok(()),
                Err(e) => break Err(e),
            }
        }
    }

    /// Starts the catch-up that is due, if one is; a fetch that ended without its last word
    /// (it panicked) counts as failed.
    fn start_fetch(&mut self, pages: &mpsc::Receiver<Fetched>) {
        if self.fetch.as_ref().is_some_and(|f| f.is_finished()) && pages.is_empty() {
            self.fetch = None;
            self.health.started(true);
            self.schedule.on_lost();
        }
        if let Some((plan, history)) = self.schedule.start() {
            self.fetch = Some(self.asker.spawn(plan, history, self.pages_tx.clone()));
        }
    }

    fn want(&mut self) -> Result<Flow, DaemonError> {
        self.schedule.want();
        Ok(Flow::Continue)
    }

    /// The bans-held gauges, and the operators' orders that ended forgotten.
    fn upkeep(&mut self) -> Result<Flow, DaemonError> {
        self.worker.publish_held(&self.state);
        self.state
            .prune_standing(SystemTime::now())
            .map_err(DaemonError::Orders)?;
        Ok(Flow::Continue)
    }

    async fn on_live(&mut self, msgs: Vec<async_nats::Message>) -> Result<Flow, DaemonError> {
        let incoming = msgs
            .into_iter()
            .map(|m| Incoming::live(m, &self.prefix))
            .collect();
        let (batch, cursor) = self.schedule.on_live(incoming, self.metrics);
        self.apply(batch, cursor).await
    }

    async fn on_fetched(&mut self, fetched: Fetched) -> Result<Flow, DaemonError> {
        let step = self.schedule.on_fetched(fetched);
        if !self.schedule.fetching() {
            self.fetch = None;
            self.health.started(true);
        }
        match step {
            Step::Apply { batch, cursor } => self.apply(batch, cursor).await,
            Step::Remember(bans) => {
                for (ip, time, end) in bans {
                    self.worker.admission.remember(ip, time, end);
                }
                Ok(Flow::Continue)
            }
            Step::Controls { controls, high } => {
                // Key records go to the keyring (every one, ended keys too), the rest are the
                // orders in force.
                let (keys, orders): (Vec<_>, Vec<_>) = controls
                    .into_iter()
                    .partition(|c| c.control.kind == ControlKind::Key);
                let new = self.state.standing.reconcile(orders, high);
                self.state.standing_changed();
                let items: Vec<Incoming> = keys
                    .iter()
                    .chain(new.iter())
                    .filter_map(|c| catchup::control_item(&self.prefix, c))
                    .collect();
                if !items.is_empty() {
                    tracing::info!(orders = items.len(), "operators' orders caught up");
                }
                self.apply(items, None).await
            }
            Step::Nothing => Ok(Flow::Continue),
        }
    }

    async fn apply(
        &mut self,
        batch: Vec<Incoming>,
        cursor: Option<u64>,
    ) -> Result<Flow, DaemonError> {
        self.metrics
            .consumer_pending
            .set(self.schedule.missing() as i64);
        Ok(self.worker.handle(batch, cursor, &mut self.state).await?)
    }

    /// Stops: the fetch aborted, systemd told, the other parts told to stop, the applier
    /// closed.
    async fn close(mut self, shutdown: &CancellationToken) {
        if let Some(fetch) = self.fetch {
            fetch.abort();
        }
        notify_stopping();
        self.health.started(false);
        shutdown.cancel();
        self.worker.applier.close().await;
        let (by_origin, by_jail) = self.state.holdings.counts();
        tracing::info!(
            received = self.metrics.received.get(),
            applied = self.metrics.applied.get(),
            ?by_origin,
            ?by_jail,
            "subscriber stopped"
        );
    }
}
