//! A whole test host: a Fail2Ban sandbox with a `login` jail that publishes through the shipped
//! action and a `shared` jail that receives remote bans, its config, and its subscriber.

use crate::fail2ban::Fail2Ban;
use crate::{HostConfig, bin, free_port};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How one host is set up.
pub struct HostSpec<'a> {
    pub name: &'a str,
    pub nats_url: &'a str,
    pub prefix: &'a str,
    pub stream: &'a str,
    /// `apply` mode of the subscriber.
    pub apply: &'a str,
    /// Extra `[subscriber]` keys.
    pub subscriber_extra: &'a str,
    /// Extra keys for the `shared` jail (e.g. `maxretry = 2`, `ignoreip = …`).
    pub shared_jail_extra: &'a str,
}

/// `key = value` lines: the defaults, with any key that `extra` sets taken from `extra`.
fn jail_keys(defaults: &[(&str, &str)], extra: &str) -> String {
    let set_by_extra = |key: &str| {
        extra
            .lines()
            .any(|l| l.split('=').next().is_some_and(|k| k.trim() == key))
    };
    let mut out: String = defaults
        .iter()
        .filter(|(k, _)| !set_by_extra(k))
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    out.push_str(extra);
    out.push('\n');
    out
}

/// A running host.
pub struct Host {
    pub name: String,
    pub dir: PathBuf,
    pub config: HostConfig,
    pub f2b: Fail2Ban,
    pub subscriber: Option<Daemon>,
}

impl Host {
    /// Sets up the host in `parent/<name>` and starts Fail2Ban (not the subscriber).
    pub fn new(parent: &Path, spec: &HostSpec) -> Host {
        let dir = parent.join(spec.name);
        std::fs::create_dir_all(&dir).unwrap();
        let subscriber = format!(
            "[subscriber]\nfail2ban_socket = {:?}\nstate_dir = {:?}\nlog_file = {:?}\napply = {:?}\n{}",
            dir.join("f2b.sock").display().to_string(),
            dir.join("state").display().to_string(),
            dir.join("shared.log").display().to_string(),
            spec.apply,
            spec.subscriber_extra
        );
        let config = HostConfig::write(
            &dir,
            spec.name,
            spec.nats_url,
            spec.prefix,
            spec.stream,
            &subscriber,
        );
        for log in ["auth.log", "shared.log"] {
            std::fs::write(dir.join(log), "").unwrap();
        }
        let jails = format!(
            "[DEFAULT]\nbackend = polling\n\n\
             [login]\nenabled = true\nfilter = login\nlogpath = {auth}\nmaxretry = 3\nfindtime = 10m\nbantime = 3600\n\
             action = noop\n         shared-f2b[publisher=\"{publisher}\", config=\"{config}\"]\n\n\
             [shared]\nenabled = true\nfilter = shared-f2b\nlogpath = {shared}\n{shared_keys}",
            auth = dir.join("auth.log").display(),
            shared = dir.join("shared.log").display(),
            publisher = bin("shared-f2b-publish").display(),
            config = config.path.display(),
            shared_keys = jail_keys(
                &[
                    ("maxretry", "1"),
                    ("findtime", "10m"),
                    ("bantime", "3600"),
                    ("action", "noop")
                ],
                spec.shared_jail_extra
            ),
        );
        let f2b = Fail2Ban::start(&dir, &jails);
        Host {
            name: spec.name.to_owned(),
            dir,
            config,
            f2b,
            subscriber: None,
        }
    }

    /// Starts the subscriber and waits until it follows the stream.
    pub fn start_subscriber(&mut self) {
        self.subscriber = Some(Daemon::subscriber(&self.config.path, &self.dir));
    }

    /// Starts the subscriber and waits only until it has subscribed (its `following` log line),
    /// not until its first catch-up ended: for tests about what happens while it catches up.
    pub fn start_subscriber_catching_up(&mut self) {
        let daemon = Daemon::spawn(
            "shared-f2b-subscriber",
            &self.config.path,
            &self.dir.join("subscriber.log"),
        );
        crate::wait_until(
            Duration::from_secs(20),
            "the subscriber to subscribe",
            || daemon.log_text().contains("following"),
        );
        self.subscriber = Some(daemon);
    }

    /// Writes `n` failed logins for `ip` to the `login` jail's log.
    pub fn fail_logins(&self, ip: &str, n: usize) {
        let lines: Vec<String> = (0..n).map(|_| format!("Failed login from {ip}")).collect();
        self.f2b.append_log("auth.log", &lines);
    }

    /// Addresses banned in the `shared` jail.
    pub fn shared_banned(&self) -> Vec<String> {
        self.f2b.banned("shared")
    }

    /// Runs `shared-f2b-publish` as this host.
    pub fn publish(&self, args: &[&str]) -> std::process::Output {
        self.config.publish(args)
    }

    /// Bans each of `ips` in jail `sshd` with the one-shot publisher, eight at a time; panics
    /// on a run that does not exit 0.
    pub fn publish_bans(&self, ips: &[String]) {
        std::thread::scope(|s| {
            for part in ips.chunks(ips.len().div_ceil(8).max(1)) {
                s.spawn(move || {
                    for ip in part {
                        let out = self.publish(&["ban", "--jail", "sshd", "--ip", ip]);
                        assert!(
                            out.status.success(),
                            "{}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                });
            }
        });
    }
}

/// A running daemon of the product, killed on drop; its log is `<name>.log` in its dir.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
    /// Where it serves `/metrics` and `/healthz`.
    pub health: SocketAddr,
    /// The network namespace it runs in.
    pub netns: Option<String>,
}

/// The `metrics_listen` of `[section]` in the config at `path`; one on a free loopback port is
/// added when there is none (the file is rewritten by the TOML parser).
fn ensure_metrics_listen(path: &Path, section: &str) -> SocketAddr {
    let text = std::fs::read_to_string(path).unwrap();
    let mut doc: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let table = doc
        .entry(section)
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("[{section}] is a table"));
    if let Some(addr) = table.get("metrics_listen").and_then(|v| v.as_str()) {
        return addr.parse().expect("metrics_listen is an address");
    }
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    table.insert("metrics_listen".into(), addr.to_string().into());
    std::fs::write(path, toml::to_string(&doc).unwrap()).unwrap();
    addr
}

/// A plain HTTP/1.0 GET: (status code, body), `None` when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((code, body))
}

impl Daemon {
    /// Starts `shared-f2b-subscriber` and waits until `/healthz` says it follows the stream
    /// (subscribed, first catch-up tried, NATS and Fail2Ban answering).
    pub fn subscriber(config: &Path, dir: &Path) -> Daemon {
        Daemon::start("shared-f2b-subscriber", config, &dir.join("subscriber.log"))
    }

    /// Starts `shared-f2b-archiver` and waits until `/healthz` says it runs.
    pub fn archiver(config: &Path, log: &Path) -> Daemon {
        Daemon::start("shared-f2b-archiver", config, log)
    }

    /// Starts binary `name` with `--config` and waits until its `/healthz` answers 200.
    pub fn start(name: &str, config: &Path, log: &Path) -> Daemon {
        let mut daemon = Daemon::spawn(name, config, log);
        daemon.wait_healthy(name);
        daemon
    }

    /// Starts binary `name` with `--config` without waiting. A `metrics_listen` on a free port is
    /// added to its section of the config when the config has none (see [`Daemon::health`]).
    pub fn spawn(name: &str, config: &Path, log: &Path) -> Daemon {
        Daemon::spawn_in(None, name, config, log)
    }

    /// As [`Daemon::spawn`], in network namespace `netns` when given.
    pub fn spawn_in(netns: Option<&str>, name: &str, config: &Path, log: &Path) -> Daemon {
        let section = name.trim_start_matches("shared-f2b-");
        let health = ensure_metrics_listen(config, section);
        let log = log.to_path_buf();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = crate::netns::command_in(netns, bin(name))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Daemon {
            child,
            log,
            health,
            netns: netns.map(str::to_owned),
        }
    }

    /// Waits until `/healthz` answers 200; panics with the log if it does not within 30 s or
    /// the daemon exits.
    pub fn wait_healthy(&mut self, name: &str) {
        for _ in 0..3000 {
            if let Some((200, _)) = self.health() {
                return;
            }
            if !self.running() {
                panic!("{name} exited:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "{name} is not healthy ({:?}):\n{}",
            self.health(),
            self.log_text()
        );
    }

    /// Its `/healthz` answer (status code, body), `None` when nothing answers.
    pub fn health(&self) -> Option<(u16, String)> {
        let addr = self.health;
        match &self.netns {
            Some(ns) => crate::netns::in_netns(ns, move || http_get(addr, "/healthz")),
            None => http_get(addr, "/healthz"),
        }
    }

    /// A series of its `/metrics`, named with its labels as exposed
    /// (`shared_f2b_events_skipped_total{reason="pardoned"}`); 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let addr = self.health;
        let text = match &self.netns {
            Some(ns) => crate::netns::in_netns(ns, move || http_get(addr, "/metrics")),
            None => http_get(addr, "/metrics"),
        }
        .map(|(_, body)| body)
        .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL (`kill -9`), as a crash would.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap().code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failing test shows what the daemon said.
        if std::thread::panicking() {
            eprintln!(
                "--- {} (tail) ---\n{}",
                self.log.display(),
                tail(&self.log_text(), 60)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Host {
    fn drop(&mut self) {
        // A failing test shows what the host's Fail2Ban said (the subscriber shows its own).
        if std::thread::panicking() {
            eprintln!(
                "--- {} fail2ban log (tail) ---\n{}",
                self.name,
                tail(&self.f2b.log(), 30)
            );
        }
    }
}
