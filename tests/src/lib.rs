//! Test kit: real nats-server and fail2ban-server instances in temporary directories, the
//! product's binaries, and waiting for what a user would see.
//!
//! Every test gets its own subject prefix and stream name ([`unique`]) so runs can share the
//! machine's NATS server; tests that stop the broker start a private one ([`NatsServer`]).

pub mod browser;
pub mod db;
pub mod fail2ban;
pub mod federation;
pub mod host;
pub mod http;
pub mod jwt;
pub mod legacy;
pub mod nats;
pub mod netns;
pub mod powercut;
pub mod proxy;
pub mod served;
pub mod site;
pub mod tls;
pub mod world;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The NATS server shared by tests that do not need to stop it: the machine's (Debian's 2.9.10
/// on 4222), or the one `$SHARED_F2B_TEST_NATS` names (CI's second pass, on the newest server).
pub fn shared_nats() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("SHARED_F2B_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
    })
}

/// The nats-server binary private servers run: `$SHARED_F2B_NATS_SERVER`, else `nats-server`
/// on the PATH (Debian's).
pub fn nats_server_bin() -> String {
    std::env::var("SHARED_F2B_NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

/// A name no other test (or earlier run) uses: `<stem>_<pid>_<n>_<millis>`.
pub fn unique(stem: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000_000;
    format!(
        "{stem}_{}_{}_{millis}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Path of one of the workspace's binaries, built into the same `target/<profile>` as the
/// running test (`target/<profile>/deps/<test>`) or benchmark (`target/<profile>/<bench>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own executable path");
    let dir = exe.parent().expect("target layout");
    let candidates = [
        dir.join(name),
        dir.parent().expect("target layout").join(name),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing next to {}: build with `cargo test --workspace` or \
                 `cargo build --release --workspace`",
                exe.display()
            )
        })
}

/// The repository root (for the shipped Fail2Ban files).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// A free TCP port on loopback, never one this process handed out before: the kernel may give
/// a port that was just released to the next `bind(0)`, and two daemons of one test (say an
/// archiver's metrics and its feeds) must not be told the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if GIVEN.lock().expect("the port list").insert(port) {
            return port;
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `check` (blocking) until it holds, or panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `s` as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => out.push_str(&format!("\\u{:04X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// A config file for one host of a test, written into `dir`.
pub struct HostConfig {
    pub path: PathBuf,
    pub spool_dir: PathBuf,
}

impl HostConfig {
    /// Writes a config for `host` talking to `nats_url` with the test's prefix and stream;
    /// `extra` is appended verbatim (more sections or keys).
    pub fn write(
        dir: &Path,
        host: &str,
        nats_url: &str,
        prefix: &str,
        stream: &str,
        extra: &str,
    ) -> HostConfig {
        HostConfig::write_with_max_age(dir, host, nats_url, prefix, stream, "1h", extra)
    }

    /// A config for an archiver of a test's prefix and stream, storing into `database_url`.
    pub fn archiver(
        dir: &Path,
        nats_url: &str,
        prefix: &str,
        stream: &str,
        database_url: &str,
    ) -> HostConfig {
        let archiver = format!("[archiver]\ndatabase_url = {database_url:?}\n");
        HostConfig::write(dir, "archiver", nats_url, prefix, stream, &archiver)
    }

    /// As [`HostConfig::write`], with the stream's `stream_max_age`.
    pub fn write_with_max_age(
        dir: &Path,
        host: &str,
        nats_url: &str,
        prefix: &str,
        stream: &str,
        max_age: &str,
        extra: &str,
    ) -> HostConfig {
        std::fs::create_dir_all(dir).expect("config dir");
        let spool_dir = dir.join(format!("spool-{host}"));
        let path = dir.join(format!("{host}.toml"));
        let text = format!(
            "host_id = {host:?}\n\n[nats]\nservers = [{nats_url:?}]\nsubject_prefix = {prefix:?}\n\
             stream = {stream:?}\nstream_max_age = {max_age:?}\n\n[publisher]\nspool_dir = {:?}\n\
             timeout = \"2s\"\n{extra}\n",
            spool_dir.display().to_string()
        );
        std::fs::write(&path, text).expect("write config");
        HostConfig { path, spool_dir }
    }

    /// Adds keys to the `[nats]` section (credentials, TLS files…).
    pub fn add_nats_keys(&self, keys: &str) {
        let text = std::fs::read_to_string(&self.path).unwrap().replacen(
            "[nats]\n",
            &format!("[nats]\n{keys}\n"),
            1,
        );
        std::fs::write(&self.path, text).unwrap();
    }

    /// Gives the host another `host_id` (any printable name: hostile ones too).
    pub fn rename(&self, host_id: &str) {
        let text = std::fs::read_to_string(&self.path).unwrap();
        let (_, rest) = text.split_once('\n').expect("host_id first");
        std::fs::write(
            &self.path,
            format!("host_id = {}\n{rest}", toml_str(host_id)),
        )
        .unwrap();
    }

    /// Runs `shared-f2b-publish` with this config.
    pub fn publish(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(bin("shared-f2b-publish"))
            .arg("--config")
            .arg(&self.path)
            .args(args)
            .output()
            .expect("shared-f2b-publish runs")
    }

    /// Files waiting in this host's spool.
    pub fn spooled(&self) -> usize {
        std::fs::read_dir(&self.spool_dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }
}
