//! Connecting to NATS with the configured auth and TLS, and the stream the events live in.

use crate::config::NatsConfig;
use async_nats::jetstream::{self, stream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// Why the connection could not be made.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("cannot read NATS credentials {path}: {source}")]
    Credentials {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to NATS at {servers}: {source}")]
    Connect {
        servers: String,
        source: async_nats::ConnectError,
    },
}

/// Messages a daemon's subscription holds while the daemon is busy (a subscriber applying a
/// large batch) before the client drops what comes next (async-nats keeps 65,536). A list of
/// 100,000 intel orders arrives faster than Fail2Ban applies it; dropped messages mean a
/// catch-up through the archiver, which loads the same server. The memory is taken only while
/// messages wait (about 0.5 KiB each).
const DAEMON_BACKLOG: usize = 1 << 19;

/// How long-lived the connection is meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// A one-shot command: fail fast, never retry the first connect.
    OneShot,
    /// A daemon: retry the first connect and reconnect forever.
    Daemon,
}

/// The last error the server sent on this connection (e.g. a permissions violation), which
/// async-nats reports only through its event callback.
#[derive(Debug, Clone, Default)]
pub struct ServerErrors(Arc<Mutex<Option<String>>>);

impl ServerErrors {
    fn record(&self, message: String) {
        *self.0.lock().expect("not poisoned") = Some(message);
    }

    /// Takes the last recorded server error, if any.
    pub fn take(&self) -> Option<String> {
        self.0.lock().expect("not poisoned").take()
    }
}

/// An open connection plus what the server said on it.
pub struct Connection {
    pub client: async_nats::Client,
    pub server_errors: ServerErrors,
    /// Signalled (one stored permit) each time the connection is (re)established, so daemons
    /// can re-create what a restarted server forgot.
    pub connected: Arc<tokio::sync::Notify>,
    /// Whether the connection is up right now.
    pub up: Arc<std::sync::atomic::AtomicBool>,
    /// Signalled when the client dropped messages for a slow subscription.
    pub lagged: Arc<tokio::sync::Notify>,
}

/// Connects to the configured servers, as `host_id`, with auth and TLS from the config.
pub async fn connect(
    nats: &NatsConfig,
    host_id: &str,
    timeout: Duration,
    lifetime: Lifetime,
) -> Result<Connection, ConnectError> {
    let server_errors = ServerErrors::default();
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("shared-f2b {host_id}"))
        .connection_timeout(timeout)
        .custom_inbox_prefix(&nats.inbox_prefix)
        .request_timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&nats.user, &nats.password) {
        opts = opts.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &nats.token {
        opts = opts.token(token.expose().to_owned());
    }
    if let Some(path) = &nats.nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(|source| ConnectError::Credentials {
            path: path.clone(),
            source,
        })?;
        opts = opts.nkey(seed.trim().to_owned());
    }
    if let Some(path) = &nats.creds_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|source| ConnectError::Credentials {
                path: path.clone(),
                source,
            })?;
    }
    if let Some(ca) = &nats.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&nats.tls_cert_file, &nats.tls_key_file) {
        opts = opts
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    let recorder = server_errors.clone();
    let connected = Arc::new(tokio::sync::Notify::new());
    let on_connect = connected.clone();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = up.clone();
    let lagged = Arc::new(tokio::sync::Notify::new());
    let on_lag = lagged.clone();
    opts = opts.event_callback(move |event| {
        let recorder = recorder.clone();
        let on_connect = on_connect.clone();
        let flag = flag.clone();
        let on_lag = on_lag.clone();
        async move {
            use std::sync::atomic::Ordering::Relaxed;
            match event {
                async_nats::Event::ServerError(err) => {
                    tracing::warn!(error = %err, "NATS server error");
                    recorder.record(err.to_string());
                }
                async_nats::Event::Disconnected => {
                    flag.store(false, Relaxed);
                    tracing::warn!("disconnected from NATS");
                }
                async_nats::Event::Connected => {
                    flag.store(true, Relaxed);
                    tracing::info!("connected to NATS");
                    on_connect.notify_one();
                }
                async_nats::Event::SlowConsumer(sid) => {
                    tracing::warn!(sid, "messages dropped for a slow subscription; catching up");
                    on_lag.notify_one();
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        }
    });
    if lifetime == Lifetime::Daemon {
        opts = opts
            .retry_on_initial_connect()
            .max_reconnects(None)
            .subscription_capacity(DAEMON_BACKLOG);
    }
    let client = opts
        .connect(nats.servers.as_slice())
        .await
        .map_err(|source| ConnectError::Connect {
            servers: nats.servers.join(","),
            source,
        })?;
    Ok(Connection {
        client,
        server_errors,
        connected,
        up,
        lagged,
    })
}

/// A JetStream context whose API requests and publish acks wait at most `timeout`.
pub fn jetstream(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .timeout(timeout)
        .build(client)
}

/// The stream as this product creates it: every ban, unban and control event under the prefix, on disk,
/// bounded in age, bytes and message size, each stored event re-published on the live subject.
pub fn stream_config(nats: &NatsConfig) -> stream::Config {
    let (source, destination) = crate::subject::republish(&nats.subject_prefix);
    stream::Config {
        name: nats.stream.clone(),
        subjects: crate::subject::stream_subjects(&nats.subject_prefix),
        storage: stream::StorageType::File,
        max_age: nats.stream_max_age,
        max_bytes: nats.stream_max_bytes,
        max_message_size: crate::event::MAX_PAYLOAD as i32,
        num_replicas: nats.stream_replicas,
        // The duplicate window may not exceed the max age.
        duplicate_window: nats.stream_max_age.min(Duration::from_secs(120)),
        republish: Some(stream::Republish {
            source,
            destination,
            headers_only: false,
        }),
        ..Default::default()
    }
}

/// Whether a stream's config lacks what [`stream_config`] sets (an older version of this
/// product made it): the archiver then updates it.
pub fn stream_outdated(have: &stream::Config, want: &stream::Config) -> bool {
    have.subjects != want.subjects
        || have.max_age != want.max_age
        || have.max_bytes != want.max_bytes
        || have.max_message_size != want.max_message_size
        || have.duplicate_window != want.duplicate_window
        || have.republish != want.republish
}

/// Gets the stream, creating it when missing and bringing its config up to date when it lacks
/// what [`stream_config`] sets (both only when these credentials may); retries every 2 s while
/// NATS or the stream is not there. `None` when `shutdown` came first.
pub async fn stream_when_ready(
    js: &jetstream::Context,
    nats: &NatsConfig,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<jetstream::stream::Stream> {
    let want = stream_config(nats);
    loop {
        match js.get_or_create_stream(want.clone()).await {
            Ok(mut stream) => {
                if let Ok(info) = stream.info().await
                    && stream_outdated(&info.config, &want)
                {
                    let have = info.config.clone();
                    update_stream(js, &nats.stream, &have, &want).await;
                }
                return Some(stream);
            }
            Err(e) => tracing::warn!(stream = %nats.stream, error = %e,
                "stream not available yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Brings an existing stream up to [`stream_config`]. nats-server 2.9 refuses to add RePublish
/// to an existing stream: the limits are updated then, and the log says how to get live
/// re-publishing (re-create the stream; the archive keeps its events).
async fn update_stream(
    js: &jetstream::Context,
    name: &str,
    have: &stream::Config,
    want: &stream::Config,
) {
    let error = match js.update_stream(want.clone()).await {
        Ok(_) => {
            tracing::info!(stream = %name, "stream config updated (limits, live re-publishing)");
            return;
        }
        Err(e) => e,
    };
    let limits_only = stream::Config {
        republish: have.republish.clone(),
        ..want.clone()
    };
    if have.republish != want.republish && js.update_stream(limits_only).await.is_ok() {
        tracing::error!(stream = %name, error = %error,
            "stream limits updated, but this server cannot add live re-publishing to an existing \
             stream: hosts receive nothing live until it is re-created (stop the archivers, \
             delete the stream as the NATS admin, start an archiver: it creates it; the archive \
             keeps every event)");
        return;
    }
    tracing::warn!(stream = %name, error = %error,
        "the stream lacks this version's limits or live re-publishing and cannot be updated \
         with these credentials; ask the NATS admin");
}

/// The archiver's link to the stream: the connection (reconnecting forever) and the stream once
/// it exists. `Ok(None)` when `shutdown` came first.
pub async fn connect_daemon(
    nats: &NatsConfig,
    host_id: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<(Connection, jetstream::stream::Stream)>, ConnectError> {
    let conn = connect(nats, host_id, Duration::from_secs(5), Lifetime::Daemon).await?;
    let js = jetstream(conn.client.clone(), Duration::from_secs(10));
    Ok(stream_when_ready(&js, nats, shutdown)
        .await
        .map(|stream| (conn, stream)))
}

/// The addresses the configured server URLs resolve to (`nats://host:port`, `tls://…`,
/// `user:pass@host`, `[v6]:port`); names that do not resolve are left out.
pub async fn server_addresses(servers: &[String]) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    for url in servers {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or_default();
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:4222")
        } else {
            authority.to_owned()
        };
        match tokio::net::lookup_host(with_port.as_str()).await {
            Ok(addrs) => out.extend(addrs.map(|a| a.ip().to_canonical())),
            Err(e) => tracing::warn!(server = %url, error = %e, "cannot resolve a NATS server"),
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn server_urls_resolve_to_their_addresses() {
        let servers = [
            "nats://127.0.0.1:4222",
            "tls://user:pw@192.0.2.1",
            "[2001:db8::1]:4222",
            "nats://localhost",
        ]
        .map(String::from);
        let addrs = super::server_addresses(&servers).await;
        for want in ["127.0.0.1", "192.0.2.1", "2001:db8::1"] {
            assert!(
                addrs.contains(&want.parse().unwrap()),
                "{want} in {addrs:?}"
            );
        }
    }
}
