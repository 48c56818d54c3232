//! The subscriber daemon: subscribe to the live subject, catch up through the archiver, then hand
//! each batch of live events to the [`Worker`] until told to stop, catching up again whenever
//! live delivery may have missed something.

use crate::admission::Admission;
use crate::apply::Applier;
use crate::catchup::{self, Fetched, Plan};
use crate::fail2ban::Fail2Ban;
use crate::follow::{self, Incoming, Seen, Tracker};
use crate::metrics::Metrics;
use crate::state::State;
use crate::watch::watch;
use crate::worker::{Flow, Worker};
use anyhow::Context;
use futures::{FutureExt, StreamExt};
use shared_f2b::config::ApplyMode;
use shared_f2b::config::Config;
use shared_f2b::health::{self, Health};
use shared_f2b::metrics::{notify_ready, notify_stopping, spawn_server};
use shared_f2b::nats;
use shared_f2b::publish::Sender;
use shared_f2b::spool::Spool;
use shared_f2b::tasks::Tasks;
use std::time::Duration;
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
/// Longest wait between catch-up attempts while the archiver does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// When the next catch-up is due, and how the last attempts went.
struct Due {
    /// A catch-up is wanted.
    wanted: bool,
    /// Not before this (backoff after failures).
    not_before: Instant,
    failures: u32,
}

impl Due {
    fn want(&mut self) {
        self.wanted = true;
    }

    fn now(&self) -> bool {
        self.wanted && Instant::now() >= self.not_before
    }

    /// A catch-up starts: it covers what was wanted so far.
    fn start(&mut self) {
        self.wanted = false;
    }

    /// It failed: wanted again, after a backoff.
    fn failed(&mut self) -> Duration {
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

/// Runs until `shutdown` is cancelled; the batch in flight is finished first.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let sub = &config.subscriber;
    let stream = config.nats.stream.clone();
    let prefix = config.nats.subject_prefix.clone();
    let mut state = State::open(&sub.state_dir, sub.max_bantime)
        .with_context(|| format!("cannot use state_dir {}", sub.state_dir.display()))?;
    tracing::info!(host = ?config.host_id, holdings = state.holdings.len(),
        cursor = ?state.cursor(&stream), "subscriber starting");

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
                    async move { Fail2Ban::ping(&socket).await.map_err(|e| e.to_string()) }
                },
                shutdown.clone(),
            ),
        );
    }
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
            Spool::new(&config.publisher.spool_dir),
            Sender::new(&conn, &config.nats, Duration::from_secs(5)),
            conn.up.clone(),
            metrics.clone(),
            shutdown.clone(),
        ),
    );

    // Subscribed before catching up, so nothing published meanwhile is missed.
    let live = follow::live(&conn.client, &prefix)
        .await
        .context("cannot subscribe to the live subject")?;
    let mut live = live.ready_chunks(MAX_BATCH);
    let mut worker = Worker {
        config: &config,
        admission: Admission::new(&config, nats_servers),
        applier: Applier::new(
            sub.apply,
            Fail2Ban::new(&sub.fail2ban_socket),
            sub.log_file.clone(),
            &sub.state_dir,
        ),
        metrics: metrics.clone(),
        held_changed: true,
        shutdown: shutdown.clone(),
    };
    if let Err(e) = worker.applier.restore_bantimes().await {
        tracing::warn!(error = %e, "cannot put a jail's bantime back yet; retrying with the next batch");
    }
    let mut backfilled = state.cursor(&stream).is_some();
    // Escalation's memory of earlier bans is read once per start, with the first catch-up.
    let mut history_due = true;
    let mut tracker = Tracker::at(state.cursor(&stream).unwrap_or(0));
    let mut due = Due {
        wanted: true,
        not_before: Instant::now(),
        failures: 0,
    };
    let asker = catchup::Asker {
        client: conn.client.clone(),
        prefix: prefix.clone(),
        jails: sub.jails.clone(),
        exclude_origin: (!sub.include_own).then(|| config.host_id.clone()),
        history: sub
            .escalation
            .as_ref()
            .filter(|e| e.repeat_factor > 1.0)
            .map(|e| e.memory),
    };
    // Pages from a catch-up in the background; two in hand at most.
    let (pages_tx, mut pages) = mpsc::channel(2);
    let mut fetching: Option<tokio::task::JoinHandle<()>> = None;
    // The first connect stored a permit; only later reconnects mean something may be missed.
    let _ = conn.connected.notified().now_or_never();
    let mut held_tick = tokio::time::interval(HELD_EVERY);
    let mut check_tick = tokio::time::interval_at(Instant::now() + CHECK_EVERY, CHECK_EVERY);
    let mut failed = None;
    tracing::info!(apply = ?sub.apply, jails = ?sub.jails, cursor = ?state.cursor(&stream),
        "following");
    // systemd hears READY once live events flow; `/healthz` says `starting` until the first
    // catch-up ended (a large backfill must not run into the unit's start timeout).
    notify_ready();
    loop {
        // A catch-up task that ended without its last word (it panicked) counts as failed.
        if fetching.as_ref().is_some_and(|f| f.is_finished()) && pages.is_empty() {
            fetching = None;
            health.started(true);
            let retry = due.failed();
            tracing::error!(?retry, "the catch-up task ended without a result; retrying");
        }
        if due.now() && fetching.is_none() {
            let plan = if backfilled {
                Plan::Since(tracker.done)
            } else {
                Plan::Backfill
            };
            due.start();
            fetching = Some(asker.spawn(plan, history_due, pages_tx.clone()));
        }
        let retry_at = due.not_before;
        let msgs = tokio::select! {
            _ = shutdown.cancelled() => break,
            ended = tasks.ended() => {
                // Tasks end when told to stop; before that, an end is a failure.
                if !shutdown.is_cancelled() {
                    tracing::error!(error = %ended, "subscriber stopping: a part of it stopped");
                    failed = Some(ended);
                }
                break;
            }
            // Reconnected or messages dropped: live delivery may have missed events.
            _ = conn.connected.notified() => { due.want(); continue }
            _ = conn.lagged.notified() => { due.want(); continue }
            _ = check_tick.tick() => { due.want(); continue }
            _ = tokio::time::sleep_until(retry_at), if due.wanted && fetching.is_none() => continue,
            _ = held_tick.tick() => {
                worker.publish_held(&state);
                state
                    .prune_standing(std::time::SystemTime::now())
                    .context("cannot record the operators' orders in state_dir")?;
                continue;
            }
            fetched = pages.recv() => {
                let fetched = fetched.expect("the daemon holds a sender");
                let (batch, cursor) = match fetched {
                    Fetched::Page { events, through } => {
                        if let Some(seq) = through {
                            tracker.caught_up(seq);
                        }
                        (events, through.map(|_| tracker.done))
                    }
                    Fetched::History(bans) => {
                        for (ip, time, end) in bans {
                            worker.admission.remember(ip, time, end);
                        }
                        continue;
                    }
                    Fetched::Controls { controls, high } => {
                        let new = state.standing.reconcile(controls, high);
                        state.standing_changed();
                        let items: Vec<Incoming> = new
                            .iter()
                            .filter_map(|c| catchup::control_item(&prefix, c))
                            .collect();
                        if !items.is_empty() {
                            tracing::info!(orders = items.len(), "operators' orders caught up");
                        }
                        (items, None)
                    }
                    Fetched::Done { plan, high, events } => {
                        history_due = false;
                        fetching = None;
                        health.started(true);
                        tracker.caught_up(high);
                        if !due.wanted {
                            // No jump, reconnect or drop since the fetch began: what came live
                            // after its end came in order.
                            tracker.caught_up(tracker.seen);
                        }
                        if due.succeeded() {
                            tracing::info!("the archiver answers again");
                        }
                        match plan {
                            // Then what came after the archive's end, from the stream.
                            Plan::Backfill => {
                                backfilled = true;
                                due.want();
                                tracing::info!(applied = events, up_to_seq = high,
                                    "backfill of active bans done");
                            }
                            Plan::Since(_) if events > 0 => {
                                tracing::info!(events, up_to_seq = high, "caught up");
                            }
                            Plan::Since(_) => {}
                        }
                        (Vec::new(), Some(tracker.done))
                    }
                    Fetched::Reset { last } => {
                        fetching = None;
                        health.started(true);
                        tracing::warn!(cursor = tracker.done, stream_last = last, stream = %stream,
                            "the stream was re-created; following it from its start");
                        tracker = Tracker::at(0);
                        due.succeeded();
                        due.want();
                        (Vec::new(), Some(0))
                    }
                    Fetched::Failed(e) => {
                        fetching = None;
                        health.started(true);
                        let retry = due.failed();
                        if due.failures == 1 {
                            tracing::warn!(error = %e, "cannot catch up now; applying live \
                                events and retrying with backoff (logged again once it works)");
                        } else {
                            tracing::debug!(error = %e, ?retry, "catch-up retry failed");
                        }
                        continue;
                    }
                };
                metrics.consumer_pending.set(tracker.missing() as i64);
                if worker.handle(batch, cursor, &mut state).await? == Flow::Stop {
                    break;
                }
                continue;
            }
            msgs = live.next() => msgs,
        };
        let Some(msgs) = msgs else {
            anyhow::bail!("the live subscription ended");
        };
        let mut batch = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let msg = Incoming::live(msg, &prefix);
            if let (Some(seq), Some(name)) = (msg.seq, msg.stream.as_deref())
                && name == stream
            {
                match tracker.on_live(seq) {
                    Seen::InOrder => {}
                    Seen::Gap => due.want(),
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
        metrics.consumer_pending.set(tracker.missing() as i64);
        let cursor = backfilled.then_some(tracker.done);
        if worker.handle(batch, cursor, &mut state).await? == Flow::Stop {
            break;
        }
    }
    if let Some(fetch) = fetching {
        fetch.abort();
    }
    notify_stopping();
    health.started(false);
    shutdown.cancel();
    worker.applier.close().await;
    tasks.join().await;
    let (by_origin, by_jail) = state.holdings.counts();
    tracing::info!(
        received = metrics.received.get(),
        applied = metrics.applied.get(),
        ?by_origin,
        ?by_jail,
        "subscriber stopped"
    );
    match failed {
        Some(ended) => Err(ended.into()),
        None => Ok(()),
    }
}
