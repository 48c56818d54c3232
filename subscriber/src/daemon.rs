//! The subscriber daemon: follow the stream, filter, apply in batches, remember, repeat.

use crate::apply::{Applier, ApplyError, Op};
use crate::catchup::{self, CatchupError, Plan};
use crate::fail2ban::Fail2Ban;
use crate::filter::{Filter, Verdict};
use crate::follow::{Item, cursor_key, filter_subject, follow};
use crate::limits::{Admit, Limits};
use crate::metrics::Metrics;
use crate::state::State;
use anyhow::Context;
use futures::{FutureExt, StreamExt};
use shared_f2b::config::Config;
use shared_f2b::event::Action;
use shared_f2b::metrics::{Readiness, notify_ready, notify_stopping};
use shared_f2b::nats;
use shared_f2b::publish::Sender;
use shared_f2b::spool::Spool;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Most messages handled as one batch.
const MAX_BATCH: usize = 2048;
/// How many recent event ids are remembered to drop re-published duplicates.
const RECENT_IDS: usize = 65_536;
/// How often the publisher's spool is checked.
const SPOOL_EVERY: Duration = Duration::from_secs(5);
/// How often the bans-held gauges are recomputed (it walks every holding).
const HELD_EVERY: Duration = Duration::from_secs(5);

/// Recently seen event ids (a bounded set).
#[derive(Default)]
struct RecentIds {
    set: HashSet<uuid::Uuid>,
    order: VecDeque<uuid::Uuid>,
}

impl RecentIds {
    /// False when `id` was seen already.
    fn insert(&mut self, id: uuid::Uuid) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// Runs until `shutdown` is cancelled; the batch in flight is finished first.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let sub = &config.subscriber;
    let mut state = State::open(&sub.state_dir)
        .with_context(|| format!("cannot use state_dir {}", sub.state_dir.display()))?;
    tracing::info!(host = %config.host_id, holdings = state.holdings.len(),
        resumed = state.existed, "subscriber starting");

    let Some((conn, stream)) =
        nats::connect_daemon(&config.nats, &config.host_id, &shutdown).await?
    else {
        return Ok(());
    };

    let (metrics, registry) = Metrics::new();
    let ready = Readiness::default();
    let http = shared_f2b::metrics::spawn_server(sub.metrics_listen, registry, &ready, &shutdown);
    let spool_task = tokio::spawn(watch(
        Spool::new(&config.publisher.spool_dir),
        Sender::new(&conn, &config.nats, Duration::from_secs(5)),
        conn.up.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let filters: Vec<String> = if sub.jails.iter().any(|j| j == "*") {
        vec![filter_subject(&config.nats.subject_prefix, "*")]
    } else {
        sub.jails
            .iter()
            .map(|j| filter_subject(&config.nats.subject_prefix, j))
            .collect()
    };
    tracing::info!(?filters, apply = ?sub.apply, "following");
    let mut worker = Worker {
        config: &config,
        filter: Filter {
            prefix: config.nats.subject_prefix.clone(),
            host_id: config.host_id.clone(),
            include_own: sub.include_own,
            allowlist: sub.allowlist.clone(),
        },
        applier: Applier::new(
            sub.apply,
            Fail2Ban::new(&sub.fail2ban_socket),
            sub.log_file.clone(),
        ),
        metrics: metrics.clone(),
        held_changed: true,
        limits: Limits::new(sub),
        recent: RecentIds::default(),
        shutdown: shutdown.clone(),
    };
    let keys: Vec<String> = filters
        .iter()
        .map(|f| cursor_key(&config.nats.stream, f))
        .collect();
    if !catch_up(&mut worker, &mut state, &conn.client, &stream, &keys).await? {
        return Ok(());
    }
    // The first connect stored a permit; only later reconnects should rebuild the consumers.
    let _ = conn.connected.notified().now_or_never();
    let name = &config.nats.stream;
    let Some(mut events) = open_events(&stream, name, &filters, &state, &shutdown).await else {
        return Ok(());
    };
    ready.set(true);
    notify_ready();
    let mut held_tick = tokio::time::interval(HELD_EVERY);
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => break,
            // A restarted server has forgotten our ephemeral consumers: resume from the state.
            _ = conn.connected.notified() => None,
            _ = held_tick.tick() => {
                worker.publish_held(&state);
                continue;
            }
            batch = events.next() => batch,
        };
        let flow = match batch {
            Some(batch) => worker.handle(batch, &mut state).await?,
            None => Flow::Reopen,
        };
        match flow {
            Flow::Continue => {}
            Flow::Stop => break,
            Flow::Reopen => match open_events(&stream, name, &filters, &state, &shutdown).await {
                Some(reopened) => events = reopened,
                None => break,
            },
        }
    }
    notify_stopping();
    ready.set(false);
    worker.applier.close().await;
    let _ = spool_task.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    let (by_origin, by_jail) = state.holdings.counts();
    tracing::info!(
        received = metrics.received.get(),
        applied = metrics.applied.get(),
        ?by_origin,
        ?by_jail,
        "subscriber stopped"
    );
    Ok(())
}

/// Replays from the archive what the stream cannot give (see [`catchup`]); false on shutdown.
async fn catch_up(
    worker: &mut Worker<'_>,
    state: &mut State,
    client: &async_nats::Client,
    stream: &async_nats::jetstream::stream::Stream,
    keys: &[String],
) -> anyhow::Result<bool> {
    let config = worker.config;
    let prefix = &config.nats.subject_prefix;
    let first_seq = stream
        .clone()
        .info()
        .await
        .map(|i| i.state.first_sequence)
        .unwrap_or(0);
    let plan = catchup::plan(state, keys, first_seq);
    let exclude = (!config.subscriber.include_own).then(|| config.host_id.clone());
    let Some(mut req) = catchup::first_request(plan, &config.subscriber.jails, exclude) else {
        return Ok(true);
    };
    let what = if plan == Plan::Backfill {
        "backfill of active bans"
    } else {
        "replay from the archive"
    };
    let (mut done, mut total) = (0u64, 0u64);
    loop {
        let page = match catchup::fetch_page(client, prefix, &req).await {
            Ok(page) => page,
            Err(CatchupError::NoArchiver(subject)) => {
                tracing::warn!(%subject, "{what}: no archiver answers; catching up from the stream only");
                return Ok(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; catching up from the stream only");
                return Ok(true);
            }
        };
        if req.until_seq.is_none() {
            total = page.total;
            req.until_seq = Some(page.high_seq);
            tracing::info!(total, up_to_seq = page.high_seq, ?plan, "{what} starting");
        }
        let n = page.events.len() as u64;
        if let Some(last) = page.events.last() {
            req.after = last.cursor;
        }
        if matches!(
            worker.handle(catchup::items(prefix, &page), state).await?,
            Flow::Stop
        ) {
            return Ok(false);
        }
        done += n;
        tracing::info!("{what}: {done} of {total}");
        if page.done || n == 0 {
            break;
        }
    }
    let high = req.until_seq.unwrap_or(0);
    for key in keys {
        if state.cursor(key).is_none_or(|c| c < high) {
            state.advance(key, high);
        }
    }
    state
        .commit()
        .context("cannot record the catch-up in state_dir")?;
    tracing::info!(applied = done, live_from_seq = high + 1, "{what} done");
    Ok(true)
}

type Events = futures::stream::ReadyChunks<futures::stream::BoxStream<'static, Item>>;

/// Opens the consumers at the state's cursors, retrying until it works; `None` on shutdown.
async fn open_events(
    stream: &async_nats::jetstream::stream::Stream,
    name: &str,
    filters: &[String],
    state: &State,
    shutdown: &CancellationToken,
) -> Option<Events> {
    loop {
        match follow(stream, name, filters, |k| state.cursor(k)).await {
            Ok(events) => return Some(events.ready_chunks(MAX_BATCH)),
            Err(e) => tracing::warn!(error = %e, "cannot follow the stream yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// What the loop does after a batch.
enum Flow {
    Continue,
    /// The consumers reported an error: re-create them from the state.
    Reopen,
    /// Shutdown interrupted the batch.
    Stop,
}

struct Worker<'a> {
    config: &'a Config,
    filter: Filter,
    applier: Applier,
    metrics: Metrics,
    /// The holdings changed since the gauges were last computed.
    held_changed: bool,
    limits: Limits,
    recent: RecentIds,
    shutdown: CancellationToken,
}

impl Worker<'_> {
    /// Applies one batch and records it. A batch interrupted by shutdown is not recorded, so it
    /// is applied again after the restart.
    pub async fn handle(&mut self, batch: Vec<Item>, state: &mut State) -> anyhow::Result<Flow> {
        let started = Instant::now();
        let now = SystemTime::now();
        let sub = &self.config.subscriber;
        let (mut bans, mut unbans) = (Vec::new(), Vec::new());
        let mut cursors = BTreeMap::new();
        let mut rejected = 0;
        let mut flow = Flow::Continue;
        for item in batch {
            let msg = match item {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::warn!(error = %e, "stream error; resuming from the state");
                    flow = Flow::Reopen;
                    continue;
                }
            };
            let seq = msg.seq;
            let live = msg.cursor_key.is_some();
            if live {
                self.metrics.consumer_pending.set(msg.pending as i64);
            }
            if let Some(key) = msg.cursor_key {
                if state.cursor(&key).is_some_and(|c| seq <= c) {
                    continue;
                }
                cursors.insert(key, seq);
            }
            self.metrics.received.inc();
            match self.filter.check(&msg.subject, &msg.payload, now) {
                Verdict::Apply(event) => {
                    if !self.recent.insert(event.id) {
                        self.metrics.skip("duplicate");
                        continue;
                    }
                    let local = sub.local_jail(&event.jail).to_owned();
                    tracing::debug!(id = %event.id, origin = %event.origin, ip = %event.ip,
                        action = event.action.as_str(), jail = %local, "event");
                    if !self.limits.trusts(&event.origin) {
                        rejected += 1;
                        self.metrics.reject("untrusted_origin");
                        tracing::warn!(origin = %event.origin, ip = %event.ip, reason = "untrusted_origin",
                            "event rejected: origin not in trusted_origins");
                        continue;
                    }
                    match event.action {
                        Action::Ban => match self.limits.admit(&event, live, now) {
                            Admit::Apply(until) => {
                                state.ban(&local, event.ip, &event.origin, until);
                                bans.push((local, event));
                            }
                            Admit::Waiting => {
                                tracing::debug!(ip = %event.ip, origin = %event.origin,
                                    "waiting for more reporters");
                                self.metrics.skip("awaiting_reporters");
                            }
                            Admit::Refuse(reason) => {
                                rejected += 1;
                                self.metrics.reject(reason);
                                tracing::warn!(origin = %event.origin, ip = %event.ip, reason,
                                    "event rejected by a limit");
                            }
                        },
                        Action::Unban => {
                            if state.unban(&local, event.ip, &event.origin) {
                                unbans.push((local, event.ip));
                            } else {
                                tracing::info!(ip = %event.ip, origin = %event.origin,
                                    "unban not applied: another origin still holds the ban");
                            }
                        }
                    }
                }
                Verdict::Skip(reason) => self.metrics.skip(reason),
                Verdict::Reject { reason, detail } => {
                    rejected += 1;
                    self.metrics.reject(reason);
                    tracing::warn!(subject = %msg.subject, seq, reason, %detail, "event rejected");
                }
            }
        }
        let ops = self.applier.plan(&bans, &unbans);
        let mut applied = 0;
        for op in &ops {
            match self.execute(op).await {
                Some(n) => applied += n,
                None => return Ok(Flow::Stop),
            }
        }
        for (key, seq) in cursors {
            state.advance(&key, seq);
        }
        state
            .commit()
            .context("cannot record applied events in state_dir")?;
        if !bans.is_empty() {
            let done = SystemTime::now();
            self.metrics.last_applied_seconds.set(
                done.duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
            for (_, e) in &bans {
                let latency = done.duration_since(e.time).unwrap_or_default();
                self.metrics
                    .event_latency_seconds
                    .observe(latency.as_secs_f64());
            }
        }
        // Last, so that a scrape that sees the batch applied sees its latencies too.
        self.metrics.applied.inc_by(applied as u64);
        if !bans.is_empty() || !unbans.is_empty() {
            self.held_changed = true;
        }
        if !bans.is_empty() || !unbans.is_empty() || rejected > 0 {
            tracing::info!(
                bans = bans.len(),
                unbans = unbans.len(),
                rejected,
                applied,
                held = state.holdings.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "batch applied"
            );
        }
        Ok(flow)
    }

    /// Recomputes the bans-held gauges when the holdings changed (it walks every holding).
    fn publish_held(&mut self, state: &State) {
        if self.held_changed {
            let (by_origin, by_jail) = state.holdings.counts();
            self.metrics.set_held(&by_origin, &by_jail);
            self.held_changed = false;
        }
    }

    /// Runs an op, retrying with backoff while Fail2Ban is away; `None` if shutdown came first.
    async fn execute(&mut self, op: &Op) -> Option<usize> {
        let mut delay = Duration::from_millis(100);
        let mut warned = false;
        loop {
            let t0 = Instant::now();
            let result = self.applier.execute(op).await;
            self.metrics
                .apply_seconds
                .observe(t0.elapsed().as_secs_f64());
            match result {
                Ok(n) => {
                    if warned {
                        tracing::info!("Fail2Ban is back; applying resumed");
                    }
                    return Some(n);
                }
                Err(ApplyError::Refused(e)) => {
                    tracing::error!(error = %e, ?op, "Fail2Ban refused; check the target jail");
                    return Some(0);
                }
                Err(ApplyError::Retry(e)) => {
                    if !warned {
                        tracing::warn!(error = %e, "cannot apply now; retrying until it works");
                        warned = true;
                    }
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// Sends the publisher's spool whenever it holds something and NATS answers.
/// Every second: the connection and spool gauges; every [`SPOOL_EVERY`], the publisher's spool
/// is sent when it holds events and NATS answers.
async fn watch(
    spool: Spool,
    sender: Sender,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        ticks += 1;
        let connected = up.load(std::sync::atomic::Ordering::Relaxed);
        metrics.nats_connected.set(i64::from(connected));
        let depth = spool.pending().map(|p| p.len()).unwrap_or(0);
        metrics.spool_depth.set(depth as i64);
        if depth == 0 || !connected || !ticks.is_multiple_of(SPOOL_EVERY.as_secs()) {
            continue;
        }
        match spool
            .drain(&sender, Instant::now() + Duration::from_secs(30))
            .await
        {
            Ok(r) if r.sent > 0 || r.set_aside > 0 => tracing::info!(
                sent = r.sent,
                remaining = r.remaining,
                set_aside = r.set_aside,
                "sent the publisher's spool"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(spool = %spool.dir().display(), error = %e,
                "cannot read the spool"),
        }
    }
}
