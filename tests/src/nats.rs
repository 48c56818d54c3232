//! Private nats-server instances and reading what landed on a stream.

use shared_f2b::Event;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

/// A nats-server with JetStream on a free loopback port, killed on drop. Its store survives
/// [`NatsServer::stop`] / [`NatsServer::start`], as a real restart would.
pub struct NatsServer {
    pub port: u16,
    /// The address it listens on (loopback unless in a namespace).
    pub host: std::net::Ipv4Addr,
    /// The network namespace it runs in.
    netns: Option<String>,
    store: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server whose store lives under `dir`.
    pub fn start_in(dir: &Path) -> NatsServer {
        let store = dir.join(format!("nats-store-{}", crate::unique("s")));
        NatsServer::start_with(
            store.clone(),
            vec!["-js".into(), "-sd".into(), store.display().to_string()],
        )
    }

    /// Starts a server with a config file's text, its `store_dir` pointed into `dir`.
    pub fn start_with_config(dir: &Path, config: &str) -> NatsServer {
        let store = dir.join(format!("nats-store-{}", crate::unique("s")));
        let text = config.replace(
            "store_dir: /var/lib/nats-server",
            &format!("store_dir: {:?}", store.display().to_string()),
        );
        assert!(text != config, "the config names no store_dir to replace");
        let path = dir.join(format!("{}.conf", crate::unique("nats")));
        std::fs::write(&path, text).unwrap();
        NatsServer::start_with(store, vec!["-c".into(), path.display().to_string()])
    }

    /// A server with a config file's text that has no JetStream store (a hub).
    pub fn start_without_store(dir: &Path, config: &str) -> NatsServer {
        let store = dir.join(format!("nats-store-{}", crate::unique("s")));
        let path = dir.join(format!("{}.conf", crate::unique("nats")));
        std::fs::write(&path, config).unwrap();
        NatsServer::start_with(store, vec!["-c".into(), path.display().to_string()])
    }

    /// As [`NatsServer::start_with_config`], in a host of a [`crate::netns`] network, listening
    /// on its address, port 4222.
    pub fn start_in_netns(dir: &Path, config: &str, ns: &crate::netns::Netns) -> NatsServer {
        let store = dir.join(format!("nats-store-{}", crate::unique("s")));
        let text = config.replace(
            "store_dir: /var/lib/nats-server",
            &format!("store_dir: {:?}", store.display().to_string()),
        );
        let path = dir.join(format!("{}.conf", crate::unique("nats")));
        std::fs::write(&path, text).unwrap();
        let mut server = NatsServer {
            port: 4222,
            host: ns.addr,
            netns: Some(ns.name.clone()),
            store,
            args: vec!["-c".into(), path.display().to_string()],
            child: None,
        };
        server.start();
        server
    }

    fn start_with(store: PathBuf, args: Vec<String>) -> NatsServer {
        let mut server = NatsServer {
            port: crate::free_port(),
            host: std::net::Ipv4Addr::LOCALHOST,
            netns: None,
            store,
            args,
            child: None,
        };
        server.start();
        server
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }

    /// (Re)starts the server on its port and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = crate::netns::command_in(self.netns.as_deref(), crate::nats_server_bin())
            .args(&self.args)
            .args([
                "-a",
                &self.host.to_string(),
                "-p",
                &self.port.to_string(),
                "-l",
            ])
            .arg(self.store.with_extension("log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (Debian package nats-server)");
        self.child = Some(child);
        let addr = std::net::SocketAddr::from((self.host, self.port));
        let listening = || match &self.netns {
            Some(ns) => {
                crate::netns::in_netns(ns, move || std::net::TcpStream::connect(addr).is_ok())
            }
            None => std::net::TcpStream::connect(addr).is_ok(),
        };
        for _ in 0..200 {
            if listening() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("nats-server did not listen on {}", self.port);
    }

    /// Kills the server (as an outage would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.store.with_extension("log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- nats-server :{} (tail) ---\n{}",
                self.port,
                lines[lines.len().saturating_sub(15)..].join("\n")
            );
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Deletes a stream on the shared server when the test ends, pass or fail.
pub struct StreamGuard {
    pub url: String,
    pub stream: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let (url, stream) = (self.url.clone(), self.stream.clone());
        // Drop may run inside a runtime: delete from a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(client) = async_nats::connect(url).await {
                    let _ = async_nats::jetstream::new(client)
                        .delete_stream(&stream)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Every ban and unban in `stream`, in order, as (subject, decoded event).
pub async fn read_stream(url: &str, stream: &str) -> Vec<(String, Event)> {
    let Ok(client) = async_nats::connect(url).await else {
        return Vec::new();
    };
    read_client_stream(client, stream).await
}

async fn read_client_stream(client: async_nats::Client, stream: &str) -> Vec<(String, Event)> {
    let js = async_nats::jetstream::new(client);
    let Ok(mut s) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let Ok(info) = s.info().await else {
        return Vec::new();
    };
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::new();
    if info.state.messages == 0 {
        return out;
    }
    for seq in first..=last {
        if let Ok(msg) = s.get_raw_message(seq).await {
            // Operators' control events are not ban events.
            if msg.subject.contains(".control.") {
                continue;
            }
            let event = Event::decode(&msg.payload).expect("stream holds valid events");
            out.push((msg.subject.to_string(), event));
        }
    }
    out
}

/// Publishes events as their origins would (through the product's own sender, with acks).
pub struct EventSender {
    sender: shared_f2b::publish::Sender,
    _conn: shared_f2b::nats::Connection,
}

impl EventSender {
    /// Connects to `url` for a test's prefix and stream.
    pub async fn connect(url: &str, prefix: &str, stream: &str) -> EventSender {
        let nats = shared_f2b::config::NatsConfig {
            servers: vec![url.to_owned()],
            subject_prefix: prefix.to_owned(),
            stream: stream.to_owned(),
            stream_max_age: Duration::from_secs(3600),
            ..Default::default()
        };
        let conn = shared_f2b::nats::connect(
            &nats,
            "test",
            Duration::from_secs(5),
            shared_f2b::nats::Lifetime::Daemon,
        )
        .await
        .expect("connect");
        let sender = shared_f2b::publish::Sender::new(&conn, &nats, Duration::from_secs(5));
        EventSender {
            sender,
            _conn: conn,
        }
    }

    /// Creates the stream as the product does (no-op when it exists).
    pub async fn create_stream(&self) {
        self.sender.create_stream().await.expect("stream created");
    }

    /// Publishes one event and waits for its ack.
    pub async fn send(&self, event: &Event) {
        self.sender.send(event).await.expect("published");
    }
}

/// A ban event from `origin` in jail `jail`, made now, for an hour.
pub fn ban_event(origin: &str, jail: &str, ip: &str) -> Event {
    Event::new(
        shared_f2b::Action::Ban,
        origin,
        jail,
        shared_f2b::event::parse_ip(ip).unwrap(),
        std::time::SystemTime::now(),
        3600,
        3,
    )
    .unwrap()
}

/// An unban event from `origin` for a ban made now.
pub fn unban_event(origin: &str, jail: &str, ip: &str) -> Event {
    Event {
        action: shared_f2b::Action::Unban,
        ..ban_event(origin, jail, ip)
    }
}

/// [`read_stream`] for a server that wants a user and password.
pub async fn read_stream_as(
    url: &str,
    user: &str,
    password: &str,
    stream: &str,
) -> Vec<(String, Event)> {
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(url)
        .await
        .expect("connect");
    read_client_stream(client, stream).await
}

/// The state of `stream` (sequences, counts) as a user with a password reads it.
pub async fn stream_state_as(
    url: &str,
    user: &str,
    password: &str,
    stream: &str,
) -> async_nats::jetstream::stream::State {
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(url)
        .await
        .expect("connect");
    async_nats::jetstream::new(client)
        .get_stream(stream)
        .await
        .expect("the stream")
        .info()
        .await
        .expect("its info")
        .state
        .clone()
}

/// [`read_stream`] over an already authenticated client.
pub async fn read_stream_as_client(
    client: async_nats::Client,
    stream: &str,
) -> Vec<(String, Event)> {
    read_client_stream(client, stream).await
}

/// Publishes events as fast as the server acks them (acks awaited in windows of 1,000).
pub async fn burst(url: &str, prefix: &str, events: &[Event]) {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    for window in events.chunks(1000) {
        let mut acks = Vec::with_capacity(window.len());
        for e in window {
            let subject =
                shared_f2b::subject::event_subject(prefix, e.action, &e.jail, &e.origin).unwrap();
            let msg = async_nats::jetstream::message::PublishMessage::build()
                .payload(e.encode().into())
                .message_id(e.id.to_string());
            acks.push(js.send_publish(subject, msg).await.expect("publish"));
        }
        for ack in acks {
            ack.await.expect("ack");
        }
    }
}

/// Waits until the archiver's durable consumer `consumer` of `stream` (on the unauthenticated
/// server at `url`) has acked every message the stream holds and awaits no ack: the archive has
/// committed everything and nothing can be redelivered. What a test waits for before it counts
/// rows, instead of giving a late duplicate "a chance" with a sleep.
pub async fn wait_archived_all(url: &str, stream: &str, consumer: &str) {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let what = format!("the {consumer} consumer of {stream} to have acked everything");
    crate::wait_for(Duration::from_secs(30), &what, || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream(stream).await.ok()?;
            let last = stream.info().await.ok()?.state.last_sequence;
            let info = stream.consumer_info(consumer).await.ok()?;
            (info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence >= last)
                .then_some(())
        }
    })
    .await;
}

/// Whether the nats-server the kit runs ([`crate::nats_server_bin`]) knows
/// `jetstream { sync_interval }` (2.10 or newer; `nats-server: v2.15.1`).
pub fn has_sync_interval() -> bool {
    let Ok(out) = std::process::Command::new(crate::nats_server_bin())
        .arg("--version")
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().rsplit(" v").next().unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 10)
}
