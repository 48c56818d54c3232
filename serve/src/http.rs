//! The daemons' HTTP listener (`metrics_listen`, the archiver's `http_listen`): HTTP/1.1 with a
//! header-read timeout and a guard against idle connections, so that clients that open
//! connections and send nothing cannot use up the process's file descriptors and lock out
//! everyone else.
//!
//! At most [`MAX_CONNECTIONS`] connections are open at once. Idleness is measured by bytes
//! moved as well as by requests: hyper counts a request done once it has *queued* the response,
//! while a slow client may still be downloading a large blocklist for minutes, and each read or
//! write on the socket that moves bytes counts as progress. A new connection at the cap closes,
//! of the connections with no request in flight, the one whose last progress is oldest (an
//! attacker's silent connections give way to a real client's, and to a download under way; a
//! slow header does not count as a request); when every connection has a request in flight, the
//! new one is closed at once. A connection with no request in flight and no progress for
//! [`IDLE_TIMEOUT`] is closed (a half-sent header makes progress once, then none), and one that
//! does not finish its request header within [`HEADER_READ_TIMEOUT`] is closed by hyper.

use axum::body::Body as AxumBody;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections open at once, per listener; well below systemd's default of 1024 descriptors.
pub const MAX_CONNECTIONS: usize = 256;

/// Time a client has to send a whole request header, from the connection's start or the end of
/// its previous request.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection with no request in flight that has sent or received nothing for this long is
/// closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// On shutdown, how long requests in flight may take to finish before their connections close.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The pause after a failed accept (e.g. out of file descriptors), so as not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// At most one warning of a kind per this interval; the others are counted.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown`, then lets requests in flight finish for up to
/// [`SHUTDOWN_GRACE`]. Ends only on shutdown: failed accepts are logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(
        listener,
        app,
        shutdown,
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
        },
    )
    .await
}

/// The guard's parameters (small in tests).
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    shutdown_grace: Duration,
}

/// One open connection as the accept loop sees it.
struct Conn {
    activity: Mutex<Activity>,
    /// Cancelled to make room for a new connection at the cap.
    evict: CancellationToken,
    /// The server's: cancelled when it shuts down.
    shutdown: CancellationToken,
}

struct Activity {
    /// Requests whose handler is running or whose response body hyper has not taken in full.
    /// Not the bytes on the wire: hyper takes a body's last frame into its write buffer and lets
    /// the request go before the client has received it.
    in_flight: usize,
    /// The last progress: a read or write that moved bytes, the end of a request, or the opening.
    last_progress: Instant,
    /// Whether the last write found the socket full: hyper holds bytes the client has not taken.
    write_stalled: bool,
}

impl Conn {
    fn new(shutdown: &CancellationToken) -> Conn {
        Conn {
            activity: Mutex::new(Activity {
                in_flight: 0,
                last_progress: Instant::now(),
                write_stalled: false,
            }),
            evict: CancellationToken::new(),
            shutdown: shutdown.clone(),
        }
    }

    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        // The lock guards plain values: a panic cannot leave them inconsistent.
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Some(last progress)` when no request is in flight: the connection may be closed.
    fn quiet_since(&self) -> Option<Instant> {
        let a = self.activity();
        (a.in_flight == 0).then_some(a.last_progress)
    }

    /// Whether closing now would cut off a request or a response hyper has not sent in full.
    fn owes_response(&self) -> bool {
        let a = self.activity();
        a.in_flight > 0 || a.write_stalled
    }

    /// Records a read on the socket; `moved`: it brought bytes.
    fn note_read(&self, moved: bool) {
        if moved {
            self.activity().last_progress = Instant::now();
        }
    }

    /// Records a write on the socket: progress if it took bytes, a stall if it was full.
    fn note_write(&self, polled: &Poll<std::io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => {
                let mut a = self.activity();
                a.last_progress = Instant::now();
                a.write_stalled = false;
            }
            Poll::Pending => self.activity().write_stalled = true,
            Poll::Ready(_) => {}
        }
    }
}

/// The connection's socket, reporting to its [`Conn`] each read or write that moves bytes.
struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.conn.note_read(buf.filled().len() > before);
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.conn.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.conn.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Held from the start of a request until hyper has taken its response body's last frame (or
/// dropped the body): until the response is queued, not until it is sent.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(conn: Arc<Conn>) -> InFlight {
        conn.activity().in_flight += 1;
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut a = self.0.activity();
        a.in_flight -= 1;
        // A handler that took longer than the idle timeout does not leave its connection idle.
        a.last_progress = Instant::now();
    }
}

/// A response body that keeps its request counted as in flight until hyper is done with it.
struct Tracked {
    body: AxumBody,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The open connections by id (in the order they opened).
type Registry = Arc<Mutex<BTreeMap<u64, Arc<Conn>>>>;

fn lock(registry: &Registry) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a connection out of the registry when its task ends, however it ends.
struct Registered {
    registry: Registry,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.registry).remove(&self.id);
    }
}

/// A warning that is logged at most once per [`WARN_EVERY`], with the count of those left out.
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new() -> Throttle {
        Throttle {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(left out since the last one)` when this one is to be logged.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + WARN_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let registry: Registry = Arc::default();
    let tracker = TaskTracker::new();
    let mut next_id: u64 = 0;
    let (mut accept_warn, mut evict_warn, mut full_warn) =
        (Throttle::new(), Throttle::new(), Throttle::new());
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // The client gave up before we took it: nothing to wait for.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors (EMFILE) or the like: what is open has to close first.
                if let Some(suppressed) = accept_warn.allow() {
                    tracing::warn!(error = %e, suppressed,
                        "cannot accept a connection; retrying in 50 ms");
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let conn = Arc::new(Conn::new(&shutdown));
        {
            let mut open = lock(&registry);
            if open.len() >= limits.max_connections {
                // Of equally quiet connections, the oldest (first in the map) goes.
                let quietest = open
                    .iter()
                    .filter_map(|(&id, c)| Some((c.quiet_since()?, id)))
                    .min()
                    .map(|(_, id)| id);
                match quietest.and_then(|id| open.remove(&id)) {
                    Some(evicted) => {
                        evicted.evict.cancel();
                        tracing::debug!(%peer, "connection limit reached: closed the longest idle");
                        if let Some(suppressed) = evict_warn.allow() {
                            tracing::warn!(
                                limit = limits.max_connections,
                                suppressed,
                                "connection limit reached: closing the longest idle connections \
                                 to make room"
                            );
                        }
                    }
                    None => {
                        drop(stream);
                        if let Some(suppressed) = full_warn.allow() {
                            tracing::warn!(%peer, limit = limits.max_connections, suppressed,
                                "connection limit reached with a request in flight on every \
                                 connection: refusing new connections");
                        }
                        continue;
                    }
                }
            }
            open.insert(next_id, conn.clone());
        }
        let registered = Registered {
            registry: registry.clone(),
            id: next_id,
        };
        next_id += 1;
        tracker.spawn(connection(
            stream,
            peer,
            app.clone(),
            conn,
            builder.clone(),
            limits,
            registered,
        ));
    }
    // Stop accepting; every connection watches `shutdown`, so each is closing.
    drop(listener);
    tracker.close();
    // Each connection bounds itself by the grace; this is a backstop.
    if tokio::time::timeout(
        limits.shutdown_grace + Duration::from_secs(1),
        tracker.wait(),
    )
    .await
    .is_err()
    {
        tracing::warn!("HTTP connections still open after shutdown; leaving them to close");
    }
    Ok(())
}

/// Accept errors that concern only the connection being accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Serves one connection until it ends, idles out, or is told to close.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    conn: Arc<Conn>,
    builder: Arc<http1::Builder>,
    limits: Limits,
    _registered: Registered,
) {
    let app = TowerToHyperService::new(app);
    let tracked = conn.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        // Who asks, for the handlers that answer by address (`ConnectInfo`).
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let in_flight = InFlight::start(tracked.clone());
        let response = app.call(req);
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    let io = TokioIo::new(Watched {
        stream,
        conn: conn.clone(),
    });
    let http = builder.serve_connection(io, service);
    let mut http = std::pin::pin!(http);
    let evicted = loop {
        // Re-armed from the last progress; while a request is in flight, after a whole timeout.
        let wake = conn.quiet_since().unwrap_or_else(Instant::now) + limits.idle_timeout;
        tokio::select! {
            ended = http.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended");
                }
                return;
            }
            () = conn.evict.cancelled() => break true,
            () = conn.shutdown.cancelled() => break false,
            () = tokio::time::sleep_until(wake) => {
                if conn.quiet_since().is_some_and(|t| t + limits.idle_timeout <= Instant::now()) {
                    tracing::debug!(%peer, "closing an idle HTTP connection");
                    return;
                }
            }
        }
    };
    // Evicted (for having no request in flight) or shutting down: a request in flight finishes,
    // and on shutdown so does a response being downloaded; anything else just closes.
    let finish = if evicted {
        conn.quiet_since().is_none()
    } else {
        conn.owes_response()
    };
    if !finish {
        return;
    }
    http.as_mut().graceful_shutdown();
    if tokio::time::timeout(limits.shutdown_grace, http)
        .await
        .is_err()
    {
        tracing::debug!(%peer, "closing an HTTP connection with a request still in flight");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;

    /// The size of `/big`'s body: many times what the test's socket buffers hold.
    const BIG: usize = 4 << 20;

    /// A slow client's pace: `/big` takes about 3 s.
    const SLOW: f64 = 1.4e6;

    /// A server with `/fast`, `/slow` (answers once `release` is notified; counts arrivals) and
    /// `/big` (a [`BIG`] body, in one frame: hyper queues it at once).
    struct Server {
        addr: SocketAddr,
        release: Arc<Notify>,
        slow_started: Arc<AtomicUsize>,
        shutdown: CancellationToken,
        done: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start(limits: Limits) -> Server {
        let release = Arc::new(Notify::new());
        let slow_started = Arc::new(AtomicUsize::new(0));
        let (r, s) = (release.clone(), slow_started.clone());
        let big = Bytes::from(vec![b'x'; BIG]);
        let app = axum::Router::new()
            .route("/fast", get(|| async { "fast" }))
            .route("/big", get(move || std::future::ready(big.clone())))
            .route(
                "/slow",
                get(move || {
                    let (r, s) = (r.clone(), s.clone());
                    async move {
                        s.fetch_add(1, Ordering::SeqCst);
                        r.notified().await;
                        "slow"
                    }
                }),
            );
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // Inherited by the accepted sockets: a response read slowly stalls the server's writes
        // instead of vanishing into megabytes of autotuned loopback buffers.
        socket.set_send_buffer_size(64 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1024).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let done = tokio::spawn(serve_with(listener, app, shutdown.clone(), limits));
        Server {
            addr,
            release,
            slow_started,
            shutdown,
            done,
        }
    }

    fn limits(max_connections: usize, idle_timeout: Duration) -> Limits {
        Limits {
            max_connections,
            // Long, so that only the guard closes connections here.
            header_read_timeout: Duration::from_secs(60),
            idle_timeout,
            shutdown_grace: Duration::from_secs(2),
        }
    }

    async fn send(conn: &mut TcpStream, path: &str) {
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// Reads one response (the connection stays open): its body, or `None` if the server closed.
    async fn response(conn: &mut TcpStream) -> Option<String> {
        let read = async {
            let mut raw = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = conn.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))?
                        .parse()
                        .ok()?;
                    if body.len() >= length {
                        return Some(body.to_owned());
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("an answer or a close within 5 s")
    }

    /// Whether the server closed `conn` within `within` (reads nothing but the end).
    async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(within, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => panic!("unexpected bytes: {:?}", &buf[..n]),
            Err(_) => false,
        }
    }

    /// A connection with a small receive buffer that has asked for `/big`.
    async fn big_request(addr: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        let mut conn = socket.connect(addr).await.unwrap();
        send(&mut conn, "/big").await;
        conn
    }

    /// Reads a `/big` response at `pace` bytes per second (`INFINITY`: as fast as it comes):
    /// how much of the body arrived before it was complete or the server closed.
    async fn download(conn: &mut TcpStream, pace: f64) -> usize {
        let read = async {
            let start = Instant::now();
            let (mut head, mut length, mut body) = (Vec::new(), None::<usize>, 0);
            let mut buf = vec![0u8; 64 * 1024];
            while length.is_none_or(|length| body < length) {
                let allowed = (start.elapsed().as_secs_f64() * pace) as usize;
                let taken = head.len() + body;
                if taken >= allowed {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let want = (allowed - taken).min(buf.len());
                let n = match conn.read(&mut buf[..want]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if length.is_some() {
                    body += n;
                    continue;
                }
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    let text = String::from_utf8_lossy(&head[..end]).into_owned();
                    let value = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .expect("a content-length");
                    length = Some(value.parse().unwrap());
                    body = head.len() - (end + 4);
                    head.truncate(end + 4);
                }
            }
            body
        };
        tokio::time::timeout(Duration::from_secs(8), read)
            .await
            .expect("the body or a close within 8 s")
    }

    /// A connection the server has accepted and served once, now idle (keep-alive).
    async fn idle_connection(addr: SocketAddr) -> TcpStream {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        send(&mut conn, "/fast").await;
        assert_eq!(response(&mut conn).await.as_deref(), Some("fast"));
        conn
    }

    /// A connection whose `/slow` request the handler has started on.
    async fn busy_connection(server: &Server) -> TcpStream {
        let before = server.slow_started.load(Ordering::SeqCst);
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        send(&mut conn, "/slow").await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while server.slow_started.load(Ordering::SeqCst) == before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the slow request started");
        conn
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_makes_room_and_busy_ones_stay() {
        let server = start(limits(3, Duration::from_secs(60))).await;
        let mut busy = busy_connection(&server).await;
        let mut idle_old = idle_connection(server.addr).await;
        let mut idle_new = idle_connection(server.addr).await;
        // A fourth client at the cap of three: the oldest idle one goes, not the busy one.
        let mut fresh = TcpStream::connect(server.addr).await.unwrap();
        send(&mut fresh, "/fast").await;
        assert_eq!(response(&mut fresh).await.as_deref(), Some("fast"));
        assert!(closed_within(&mut idle_old, Duration::from_secs(2)).await);
        assert!(!closed_within(&mut idle_new, Duration::from_millis(200)).await);
        // The connection with a request in flight was kept and still gets its answer.
        server.release.notify_one();
        assert_eq!(response(&mut busy).await.as_deref(), Some("slow"));
        // The surviving idle connection still serves.
        send(&mut idle_new, "/fast").await;
        assert_eq!(response(&mut idle_new).await.as_deref(), Some("fast"));
        server.shutdown.cancel();
        server.done.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn connections_that_send_nothing_give_way_to_a_client_with_a_request() {
        let server = start(limits(4, Duration::from_secs(60))).await;
        let mut silent = Vec::new();
        for _ in 0..20 {
            let mut c = TcpStream::connect(server.addr).await.unwrap();
            c.write_all(b"GET /fa").await.unwrap();
            silent.push(c);
        }
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        send(&mut client, "/fast").await;
        assert_eq!(response(&mut client).await.as_deref(), Some("fast"));
        // Of the 20 silent ones, at most the cap (less the client) is still open.
        let mut open = 0;
        for c in &mut silent {
            if !closed_within(c, Duration::from_millis(50)).await {
                open += 1;
            }
        }
        assert!(open <= 3, "{open} silent connections still open");
        server.shutdown.cancel();
        server.done.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_a_new_one_is_closed_at_once() {
        let server = start(limits(1, Duration::from_secs(60))).await;
        let mut busy = busy_connection(&server).await;
        let mut refused = TcpStream::connect(server.addr).await.unwrap();
        send(&mut refused, "/fast").await;
        assert!(closed_within(&mut refused, Duration::from_secs(2)).await);
        server.release.notify_one();
        assert_eq!(response(&mut busy).await.as_deref(), Some("slow"));
        server.shutdown.cancel();
        server.done.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_idle_connection_closes_after_the_idle_timeout() {
        // Long next to the negative check below, which a loaded machine may stretch.
        let idle_timeout = Duration::from_secs(3);
        let server = start(limits(8, idle_timeout)).await;
        // After a request (keep-alive), without any, and with half a request line (slowloris).
        let mut served = idle_connection(server.addr).await;
        let since = Instant::now();
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        let mut partial = TcpStream::connect(server.addr).await.unwrap();
        partial.write_all(b"GET /fa").await.unwrap();
        assert!(!closed_within(&mut served, Duration::from_millis(500)).await);
        assert!(closed_within(&mut served, Duration::from_secs(5)).await);
        assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
        assert!(closed_within(&mut partial, Duration::from_secs(5)).await);
        assert!(since.elapsed() >= idle_timeout);
        server.shutdown.cancel();
        server.done.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_request_in_flight_longer_than_the_idle_timeout_is_not_cut_off() {
        let idle_timeout = Duration::from_secs(1);
        let server = start(limits(8, idle_timeout)).await;
        let mut busy = busy_connection(&server).await;
        tokio::time::sleep(idle_timeout * 2).await;
        server.release.notify_one();
        assert_eq!(response(&mut busy).await.as_deref(), Some("slow"));
        server.shutdown.cancel();
        server.done.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_slow_download_outlasts_the_idle_timeout() {
        let idle_timeout = Duration::from_secs(1);
        let server = start(limits(8, idle_timeout)).await;
        let mut conn = big_request(server.addr).await;
        let since = Instant::now();
        // hyper has queued the whole body long before the client has read it.
        assert_eq!(download(&mut conn, SLOW).await, BIG);
        assert!(since.elapsed() > idle_timeout * 2);
        server.shutdown.cancel();
        server.done.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn at_the_cap_a_silent_connection_gives_way_before_a_download_under_way() {
        let server = start(limits(2, Duration::from_secs(60))).await;
        // The download is the older connection: only its progress can save it.
        let mut slow = big_request(server.addr).await;
        let downloading = tokio::spawn(async move { download(&mut slow, SLOW).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut fresh = TcpStream::connect(server.addr).await.unwrap();
        send(&mut fresh, "/fast").await;
        assert_eq!(response(&mut fresh).await.as_deref(), Some("fast"));
        assert!(closed_within(&mut silent, Duration::from_secs(2)).await);
        assert_eq!(downloading.await.unwrap(), BIG);
        server.shutdown.cancel();
        server.done.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_lets_a_download_under_way_finish() {
        let server = start(limits(8, Duration::from_secs(60))).await;
        let mut conn = big_request(server.addr).await;
        // Let the server queue the body and fill the socket before shutting down.
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.shutdown.cancel();
        assert_eq!(download(&mut conn, f64::INFINITY).await, BIG);
        tokio::time::timeout(Duration::from_secs(3), server.done)
            .await
            .expect("serve returns within the grace")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_lets_a_request_in_flight_finish() {
        let server = start(limits(8, Duration::from_secs(60))).await;
        let mut idle = idle_connection(server.addr).await;
        let mut busy = busy_connection(&server).await;
        server.shutdown.cancel();
        assert!(closed_within(&mut idle, Duration::from_secs(1)).await);
        server.release.notify_one();
        assert_eq!(response(&mut busy).await.as_deref(), Some("slow"));
        tokio::time::timeout(Duration::from_secs(3), server.done)
            .await
            .expect("serve returns within the grace")
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(server.addr).await.is_err());
    }

    #[tokio::test]
    async fn shutdown_does_not_wait_past_the_grace_for_a_stuck_request() {
        let server = start(limits(8, Duration::from_secs(60))).await;
        let mut busy = busy_connection(&server).await;
        let since = Instant::now();
        server.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server.done)
            .await
            .expect("serve returns within the grace")
            .unwrap()
            .unwrap();
        assert!(since.elapsed() < Duration::from_secs(4));
        assert!(closed_within(&mut busy, Duration::from_secs(1)).await);
    }
}
