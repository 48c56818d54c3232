//! A site of real hosts, each in its own network namespace with its own address (see
//! [`crate::netns`]): the `site` runs nats-server with the shipped `deploy/nats-server.conf` and
//! an archiver; each host runs OpenSSH's sshd, a fail2ban-server whose `sshd` jail uses
//! Fail2Ban's stock `sshd` filter, the shipped `shared-f2b` action and the `nftables-allports`
//! banaction, a `shared` jail with the same banaction for remote bans, and
//! `shared-f2b-subscriber`. Attackers are bare namespaces.
//!
//! sshd logs to stderr (`-e`); the kit writes each line to the host's `auth.log` as syslog
//! would (`<RFC 3339 time> <host> sshd[<pid>]: <message>`), which is what the stock filter reads.

use crate::db::TestDb;
use crate::fail2ban::Fail2Ban;
use crate::host::Daemon;
use crate::nats::NatsServer;
use crate::netns::{Netns, Network, can_connect};
use crate::{HostConfig, bin, repo_root};
use std::io::{BufRead, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Fail2Ban's `maxretry` for the `sshd` jail: failed logins before a ban.
pub const MAXRETRY: usize = 3;

/// The site: its network, NATS, archive and hosts. Dropped in order: hosts, archiver, NATS,
/// then the namespaces.
pub struct World {
    /// Set by [`World::with_keys`]: hosts are enrolled with `shared-f2b-admin host add`.
    pub enrolment: Option<Enrolment>,
    pub hosts: Vec<RealHost>,
    pub archiver: Daemon,
    /// The archiver's config (for `shared-f2b-archiver history` and friends, run in
    /// `net.site`).
    pub archiver_config: HostConfig,
    pub nats: NatsServer,
    pub db: TestDb,
    pub dir: PathBuf,
    pub net: Network,
}

impl World {
    /// The site with nats-server (the shipped `deploy/nats-server.conf`) and an archiver
    /// (SQLite) in the `site` namespace.
    pub fn new(dir: &Path) -> World {
        World::with_nats_config(dir, &crate::site::shipped_config())
    }

    /// As [`World::new`] with another nats-server config (e.g. the shipped one with one more
    /// host user); its `store_dir: /var/lib/nats-server` is pointed into `dir`.
    pub fn with_nats_config(dir: &Path, config: &str) -> World {
        let net = Network::new();
        let nats = NatsServer::start_in_netns(dir, config, &net.site);
        let db = TestDb::sqlite(dir);
        let arch = HostConfig::write(
            &dir.join("archiver"),
            "archiver",
            &nats.url(),
            "f2b",
            "F2B_EVENTS",
            &format!("[archiver]\ndatabase_url = {:?}\n", db.url),
        );
        arch.add_nats_keys(&login("archiver"));
        let archiver = Daemon::spawn_in(
            Some(&net.site.name),
            "shared-f2b-archiver",
            &arch.path,
            &dir.join("archiver.log"),
        );
        let mut world = World {
            enrolment: None,
            hosts: Vec::new(),
            archiver,
            archiver_config: arch,
            nats,
            db,
            dir: dir.to_owned(),
            net,
        };
        world.archiver.wait_healthy("shared-f2b-archiver");
        world
    }

    /// The site as shipped, hosts and all: nats-server on `deploy/nats-server.conf` with the
    /// (empty) `deploy/hosts.conf` beside it, an operator key, and the operator's config for
    /// `shared-f2b-admin host`; [`World::add_host`] then enrols each host with its own key.
    pub fn with_keys(dir: &Path) -> World {
        std::fs::copy(
            repo_root().join("deploy/hosts.conf"),
            dir.join("hosts.conf"),
        )
        .unwrap();
        let conf = std::fs::read_to_string(repo_root().join("deploy/nats-server.conf")).unwrap();
        let mut world = World::with_nats_config(dir, &conf);
        let (seed, operator) = crate::site::operator_key(dir);
        let admin = HostConfig::write(
            &dir.join("admin"),
            "admin",
            &world.nats.url(),
            "f2b",
            "F2B_EVENTS",
            &format!(
                "[trust]\noperator_seed_file = {:?}\n\n[admin]\nhosts_file = {:?}\n\
                 reload_command = [{:?}, \"--signal\", \"reload={}\"]\n",
                seed.display().to_string(),
                dir.join("hosts.conf").display().to_string(),
                crate::nats_server_bin(),
                world.nats.pid().expect("nats-server runs")
            ),
        );
        admin.add_nats_keys(&login("admin"));
        world.enrolment = Some(Enrolment {
            admin: admin.path,
            out: dir.join("enrol"),
            operator,
        });
        world
    }

    /// Adds a host running sshd, Fail2Ban and the subscriber (`apply` mode): enrolled with a
    /// key of its own ([`World::with_keys`]), else as NATS user `name` with its password
    /// (alice, bob and charlie exist in [`crate::site::shipped_config`]).
    pub fn add_host(&mut self, name: &str, last: u8, apply: &str) -> usize {
        let ns = self.net.add_host(name, last);
        let login = match &self.enrolment {
            Some(enrolment) => Login::Written(enrolment.add(&self.net.site, name)),
            None => Login::Password,
        };
        let host = RealHost::start(&self.dir, ns, name, &self.nats.url(), apply, login);
        self.hosts.push(host);
        self.hosts.len() - 1
    }

    /// A bare namespace (an attacker, or a bystander) on the site's network.
    pub fn add_client(&mut self, name: &str, last: u8) -> Netns {
        self.net.add_host(name, last)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &RealHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }
}

/// What `shared-f2b-admin host` needs, for a world whose hosts have keys.
pub struct Enrolment {
    /// The operator's config.
    pub admin: PathBuf,
    /// Where `host add` writes each host's seed and config.
    pub out: PathBuf,
    /// The operator's public key.
    pub operator: String,
}

impl Enrolment {
    /// `host add name`, run on the site (where nats-server and its hosts file are); returns
    /// the host's written config and what the command said.
    pub fn add(&self, site: &Netns, name: &str) -> (PathBuf, String) {
        let out = Network::command(site, bin("shared-f2b-admin"))
            .arg("--config")
            .arg(&self.admin)
            .args(["host", "add", name, "--out"])
            .arg(&self.out)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "host add {name}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (self.out.join(format!("{name}.toml")), said)
    }
}

/// How a host logs in.
enum Login {
    /// The shipped config's password user of its name.
    Password,
    /// The config `host add` wrote (and what it said).
    Written((PathBuf, String)),
}

/// `[nats]` keys to log in as `user` of the shipped config (password and inbox prefix).
pub fn login(user: &str) -> String {
    format!("user = {user:?}\npassword = \"change-me-{user}\"\ninbox_prefix = \"_INBOX_{user}\"")
}

/// sshd in a namespace, its log relayed into `auth.log` as syslog would write it.
pub struct Sshd {
    child: Child,
}

impl Sshd {
    fn start(dir: &Path, ns: &Netns, hostname: &str) -> Sshd {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let key = dir.join("ssh_host_ed25519_key");
        if !key.exists() {
            let ok = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key)
                .status()
                .expect("ssh-keygen runs (Debian package openssh-client)")
                .success();
            assert!(ok, "ssh-keygen");
        }
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port 22\nListenAddress {addr}\nHostKey {key}\nPidFile {pid}\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n\
                 LogLevel INFO\nMaxStartups 100\n",
                addr = ns.addr,
                key = key.display(),
                pid = dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let mut child = Network::command(ns, "/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sshd runs (Debian package openssh-server)");
        let pid = child.id();
        let stderr = child.stderr.take().unwrap();
        let log = dir.join("auth.log");
        let hostname = hostname.to_owned();
        std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
                // One write per line, so Fail2Ban never reads half of one.
                let _ = out.write_all(format!("{now} {hostname} sshd[{pid}]: {line}\n").as_bytes());
            }
        });
        let sshd = Sshd { child };
        let addr = SocketAddr::new(IpAddr::V4(ns.addr), 22);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !can_connect(ns, addr, Duration::from_millis(200)) {
            assert!(Instant::now() < deadline, "sshd did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        sshd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One host of the site.
pub struct RealHost {
    pub name: String,
    /// What `host add` said when it enrolled this host (keyed worlds).
    pub enrolled: Option<String>,
    pub ns: Netns,
    pub dir: PathBuf,
    pub config: HostConfig,
    pub subscriber: Option<Daemon>,
    pub f2b: Fail2Ban,
    pub sshd: Sshd,
}

impl RealHost {
    fn start(
        parent: &Path,
        ns: Netns,
        name: &str,
        nats_url: &str,
        apply: &str,
        login: Login,
    ) -> RealHost {
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for log in ["auth.log", "shared.log"] {
            std::fs::write(dir.join(log), "").unwrap();
        }
        let subscriber = format!(
            "[subscriber]\nfail2ban_socket = {:?}\nstate_dir = {:?}\nlog_file = {:?}\napply = {apply:?}\n",
            dir.join("f2b.sock").display().to_string(),
            dir.join("state").display().to_string(),
            dir.join("shared.log").display().to_string(),
        );
        let (config, enrolled) = match login {
            Login::Password => {
                let config =
                    HostConfig::write(&dir, name, nats_url, "f2b", "F2B_EVENTS", &subscriber);
                config.add_nats_keys(&self::login(name));
                (config, None)
            }
            Login::Written((written, said)) => {
                // The written config ends in its [subscriber] table: this host's keys go on.
                let spool_dir = dir.join(format!("spool-{name}"));
                let path = dir.join(format!("{name}.toml"));
                let text = format!(
                    "{}{}\n[publisher]\nspool_dir = {:?}\ntimeout = \"2s\"\n",
                    std::fs::read_to_string(&written).unwrap(),
                    subscriber.trim_start_matches("[subscriber]\n"),
                    spool_dir.display().to_string()
                );
                std::fs::write(&path, text).unwrap();
                (HostConfig { path, spool_dir }, Some(said))
            }
        };
        let sshd = Sshd::start(&dir, &ns, name);
        let jails = format!(
            "[DEFAULT]\nbackend = auto\nbanaction = nftables-allports\nbanaction_allports = nftables-allports\n\
             bantime = 3600\nfindtime = 10m\n\n\
             [sshd]\nenabled = true\nfilter = sshd\nlogpath = {auth}\nmaxretry = {MAXRETRY}\n\
             action = %(action_)s\n         shared-f2b[publisher=\"{publisher}\", config=\"{config}\", port=\"%(port)s\", protocol=\"%(protocol)s\"]\n\n\
             [shared]\nenabled = true\nfilter = shared-f2b\nlogpath = {shared}\nmaxretry = 1\n\
             action = %(action_)s\n",
            auth = dir.join("auth.log").display(),
            shared = dir.join("shared.log").display(),
            publisher = bin("shared-f2b-publish").display(),
            config = config.path.display(),
        );
        let f2b = Fail2Ban::start_in_netns(&dir, &jails, &ns.name);
        let subscriber = Daemon::spawn_in(
            Some(&ns.name),
            "shared-f2b-subscriber",
            &config.path,
            &dir.join("subscriber.log"),
        );
        let mut host = RealHost {
            name: name.to_owned(),
            enrolled,
            ns,
            dir,
            config,
            subscriber: Some(subscriber),
            f2b,
            sshd,
        };
        host.subscriber
            .as_mut()
            .unwrap()
            .wait_healthy("shared-f2b-subscriber");
        host
    }

    /// sshd's address.
    pub fn ssh_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ns.addr), 22)
    }

    /// Runs `shared-f2b-publish` as this host, in its namespace.
    pub fn publish(&self, args: &[&str]) -> std::process::Output {
        Network::command(&self.ns, bin("shared-f2b-publish"))
            .arg("--config")
            .arg(&self.config.path)
            .args(args)
            .output()
            .unwrap()
    }

    /// How many times Fail2Ban's `jail` banned `ip` (its log's `[jail] Ban <ip>` lines).
    pub fn bans_logged(&self, jail: &str, ip: &str) -> usize {
        let wanted = format!("[{jail}] Ban {ip}");
        self.f2b
            .log()
            .lines()
            .filter(|l| l.trim_end().ends_with(&wanted))
            .count()
    }
}

/// One failed SSH login from `from` to `to`: a user that does not exist, batch mode, no
/// authentication method offered. Returns when the client gave up.
pub fn failed_login(from: &Netns, to: SocketAddr) {
    let out = Network::command(from, "ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=3",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
            "-o",
            "GSSAPIAuthentication=no",
            "-o",
            "LogLevel=ERROR",
            "-p",
            &to.port().to_string(),
            &format!("nosuchuser@{}", to.ip()),
            "true",
        ])
        .output()
        .expect("ssh runs (Debian package openssh-client)");
    assert!(!out.status.success(), "the login must fail");
}
