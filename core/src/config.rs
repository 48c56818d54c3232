//! The one TOML config file the three binaries share.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default), and secrets are
//! wrapped in [`Secret`] so that `Debug` output and logs never show them.

use crate::event::{validate_host, validate_jail};
use crate::subject::validate_prefix;
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Where the config is read from when neither `--config` nor the environment names a file.
pub const DEFAULT_PATH: &str = "/etc/shared-f2b/config.toml";
/// The environment variable naming the config file.
pub const ENV_VAR: &str = "SHARED_F2B_CONFIG";

/// Why the config could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: {what}")]
    Invalid { path: PathBuf, what: Invalid },
}

/// What is wrong with a config's values, naming the key and what it takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(what: String) -> Invalid {
        Invalid(what)
    }
}

impl From<&str> for Invalid {
    fn from(what: &str) -> Invalid {
        Invalid(what.to_owned())
    }
}

/// A string that is never shown in `Debug` output.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for handing to the NATS client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This host's name, the origin of the events it publishes.
    #[serde(default = "hostname")]
    pub host_id: String,
    /// This site's name among federated sites (`host@site`); unset: a site alone.
    #[serde(default)]
    pub site_id: Option<String>,
    #[serde(default)]
    pub nats: NatsConfig,
    #[serde(default)]
    pub publisher: PublisherConfig,
    #[serde(default)]
    pub subscriber: SubscriberConfig,
    #[serde(default)]
    pub archiver: ArchiverConfig,
    #[serde(default)]
    pub trust: TrustConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub federation: crate::federation::FederationConfig,
}

/// `[trust]`: which keys sign here and which operator keys this host believes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// The operators' public keys (nkeys `U…`) whose key records and orders this host takes.
    pub operator_keys: Vec<String>,
    /// More of them, one per line (`#` comments), read at start.
    pub operator_keys_file: Option<PathBuf>,
    /// The key this host signs its events with; default `[nats] nkey_seed_file` (the key that
    /// logs it in).
    pub seed_file: Option<PathBuf>,
    /// An operator's own key, which signs `shared-f2b-admin`'s orders and key records.
    pub operator_seed_file: Option<PathBuf>,
    /// Public keys (nkeys `U…`) whose signatures count on the intake sources' intel and
    /// unlist orders only (the archiver's `intake_seed_file`), never on other orders or key
    /// records.
    pub intel_keys: Vec<String>,
    /// The archiver's key for the intel orders of `[[archiver.intake]]` (its public key goes in
    /// the hosts' `intel_keys`); unset: they go unsigned.
    pub intake_seed_file: Option<PathBuf>,
}

impl TrustConfig {
    /// The trusted operator keys: `operator_keys` and the lines of `operator_keys_file`.
    pub fn operator_keys(&self) -> Result<crate::signing::OperatorKeys, Invalid> {
        operator_keys(
            &self.operator_keys,
            self.operator_keys_file.as_deref(),
            "trust",
        )
    }

    /// The keys whose signatures count on intel orders: the operators' and `intel_keys`.
    pub fn intel_signers(&self) -> Result<crate::signing::OperatorKeys, Invalid> {
        let keys = [self.operator_keys.clone(), self.intel_keys.clone()].concat();
        operator_keys(&keys, self.operator_keys_file.as_deref(), "trust")
    }

    /// The seed this host signs with, if it signs.
    pub fn signing_seed<'a>(&'a self, nats: &'a NatsConfig) -> Option<&'a Path> {
        self.seed_file.as_deref().or(nats.nkey_seed_file.as_deref())
    }
}

/// Operator keys given as `keys` and the lines of `file` (`#` comments); errors name `what`.
pub fn operator_keys(
    keys: &[String],
    file: Option<&Path>,
    what: &str,
) -> Result<crate::signing::OperatorKeys, Invalid> {
    let mut texts = keys.to_vec();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Invalid::from(format!(
                "{what}: cannot read operator_keys_file {}: {e}",
                path.display()
            ))
        })?;
        texts.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    let keys = texts
        .iter()
        .map(|t| crate::signing::PublicKey::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Invalid::from(format!("{what} operator_keys: {e}")))?;
    Ok(crate::signing::OperatorKeys::new(keys))
}

/// `[admin]`: what `shared-f2b-admin host` edits on the NATS server's machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The hosts file the site's nats-server config includes (written whole by `host add`,
    /// `remove`, `rotate`, `prune`); its registry is beside it (`<hosts_file>.json`).
    pub hosts_file: PathBuf,
    /// What makes nats-server read its config again (no shell; the first word is the program).
    pub reload_command: Vec<String>,
    /// The NATS URL written into new hosts' configs; default this config's first server.
    pub host_nats_url: Option<String>,
    /// Users kept by hand (the password users of before keys): its text goes inside the hosts
    /// file's users list as it is.
    pub legacy_hosts_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            hosts_file: "/etc/nats-server/hosts.conf".into(),
            reload_command: vec!["nats-server".into(), "--signal".into(), "reload".into()],
            host_nats_url: None,
            legacy_hosts_file: None,
        }
    }
}

/// `[nats]`: how to reach the broker and where the events live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub servers: Vec<String>,
    pub subject_prefix: String,
    pub stream: String,
    #[serde(with = "humantime_serde")]
    pub stream_max_age: Duration,
    pub stream_replicas: usize,
    /// Most bytes the stream keeps; the oldest events go first (the archive keeps them).
    pub stream_max_bytes: i64,
    /// Prefix of this client's reply subjects (`_INBOX_<host>` lets permissions keep hosts'
    /// replies apart).
    pub inbox_prefix: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub nkey_seed_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            subject_prefix: "f2b".into(),
            stream: "F2B_EVENTS".into(),
            stream_max_age: Duration::from_secs(7 * 24 * 3600),
            stream_replicas: 1,
            stream_max_bytes: 1 << 30,
            inbox_prefix: "_INBOX".into(),
            user: None,
            password: None,
            token: None,
            nkey_seed_file: None,
            creds_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// `[publisher]`: the one-shot command run by the Fail2Ban action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublisherConfig {
    pub spool_dir: PathBuf,
    /// How long to wait for the server (connect, then the JetStream ack) before spooling.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long one action run may spend sending older spooled events before its own.
    #[serde(with = "humantime_serde")]
    pub spool_send_limit: Duration,
    /// Keep each published event in `<spool_dir>/sent/` until the archive holds it, so that
    /// the subscriber daemon sends again what a power cut of the NATS host lost
    /// ([`crate::confirm`]). Off on a host without the daemon (a sensor).
    pub confirm: bool,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            spool_dir: "/var/lib/shared-f2b/spool".into(),
            timeout: Duration::from_secs(2),
            spool_send_limit: Duration::from_secs(1),
            confirm: true,
        }
    }
}

/// How the subscriber hands a remote ban to the local Fail2Ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyMode {
    /// `set <jail> attempt`: the local jail's ignoreip/maxretry/findtime decide.
    Attempt,
    /// `set <jail> banip`: banned at once.
    Ban,
    /// A line in `log_file` for a jail with the shipped filter.
    Log,
}

/// `[subscriber]`: the per-host daemon that applies remote bans.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriberConfig {
    pub fail2ban_socket: PathBuf,
    pub jails: Vec<String>,
    pub apply: ApplyMode,
    pub target_jail: String,
    pub jail_map: BTreeMap<String, String>,
    pub log_file: PathBuf,
    pub allowlist: Vec<IpNet>,
    pub include_own: bool,
    pub state_dir: PathBuf,
    /// Live bans accepted per origin per minute; beyond that they are dropped and counted.
    pub max_bans_per_minute: u32,
    /// Longest a remote ban is held, whatever its bantime (permanent included).
    #[serde(with = "humantime_serde")]
    pub max_bantime: Duration,
    /// When not empty, only these origins are applied.
    pub trusted_origins: Vec<String>,
    /// `ban`/`log` modes: apply a ban only once this many distinct origins reported it.
    pub min_reporters: usize,
    /// The window in which those reports must fall.
    #[serde(with = "humantime_serde")]
    pub min_reporters_window: Duration,
    /// Where to serve `/metrics` and `/healthz` (off when unset).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// An IPv6 ban applies to the address's /N (e.g. 64: one attacker, one /64); unset: the
    /// address alone. `ban` and `attempt` modes.
    pub ipv6_prefix: Option<u8>,
    /// Ban a whole prefix once this many addresses in it were banned within
    /// `aggregate_window` (0: off). `ban` and `attempt` modes.
    pub aggregate_count: usize,
    #[serde(with = "humantime_serde")]
    pub aggregate_window: Duration,
    /// ... reported by at least this many distinct origins (so one host alone cannot get a
    /// whole prefix banned).
    pub aggregate_origins: usize,
    /// The IPv4 prefix aggregated (16-31).
    pub aggregate_ipv4_prefix: u8,
    /// The IPv6 prefix aggregated (32-127).
    pub aggregate_ipv6_prefix: u8,
    /// Longer bans for addresses many hosts report, or that come back (off when absent).
    pub escalation: Option<EscalationConfig>,
    /// Refuse unsigned events (and events whose signature does not check out) instead of
    /// applying them with a warning once per origin.
    pub require_signatures: bool,
    /// The federated sites whose bans are applied here (`["*"]`: every site in
    /// `[federation] sites`; `[]`: none).
    pub trusted_sites: Vec<String>,
    /// Apply a remote site's ban only once this many distinct remote sites reported the address
    /// within `min_sites_window`.
    pub min_sites: usize,
    #[serde(with = "humantime_serde")]
    pub min_sites_window: Duration,
    /// What to do with the archiver's intel orders (`[[archiver.intake]]`: MISP, blocklists):
    /// `off` (default) or `ban` (into `target_jail`).
    pub intel: IntelMode,
    /// The intake sources whose orders are applied (`["*"]`: every one).
    pub intel_sources: Vec<String>,
    /// The longest an intel order is held here, whatever it says.
    #[serde(with = "humantime_serde")]
    pub intel_max_bantime: Duration,
    /// A shorter cap for some sources: `{ spamhaus-drop = "7d" }`.
    pub intel_source_max_bantime: BTreeMap<String, HumanDuration>,
}

/// `[subscriber] intel`: whether intel orders are applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntelMode {
    #[default]
    Off,
    Ban,
}

/// A duration written as humantime text (`"7d"`), where a map holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct HumanDuration(#[serde(with = "humantime_serde")] pub Duration);

/// `[subscriber.escalation]`: fleet-wide bantime escalation (`ban` mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationConfig {
    /// When at least this many distinct origins banned an address within `window`, its ban
    /// gets `bantime` (0: rule off).
    pub reporters: usize,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    #[serde(with = "humantime_serde")]
    pub bantime: Duration,
    /// An address banned again after its last ban ended gets its bantime multiplied by this,
    /// once per earlier ban (1: rule off), like Fail2Ban's `bantime.increment`, fleet-wide.
    pub repeat_factor: f64,
    /// The longest bantime escalation gives (never above `max_bantime`).
    #[serde(with = "humantime_serde")]
    pub max_bantime: Duration,
    /// How far back earlier bans count (a new host reads them from the archive).
    #[serde(with = "humantime_serde")]
    pub memory: Duration,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        EscalationConfig {
            reporters: 0,
            window: Duration::from_secs(3600),
            bantime: Duration::from_secs(7 * 24 * 3600),
            repeat_factor: 1.0,
            max_bantime: Duration::from_secs(30 * 24 * 3600),
            memory: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig {
            fail2ban_socket: "/var/run/fail2ban/fail2ban.sock".into(),
            jails: vec!["*".into()],
            apply: ApplyMode::Attempt,
            target_jail: "shared".into(),
            jail_map: BTreeMap::new(),
            log_file: "/var/log/shared-f2b.log".into(),
            allowlist: default_allowlist(),
            include_own: false,
            state_dir: "/var/lib/shared-f2b".into(),
            max_bans_per_minute: 20_000,
            max_bantime: Duration::from_secs(30 * 24 * 3600),
            trusted_origins: Vec::new(),
            min_reporters: 1,
            min_reporters_window: Duration::from_secs(600),
            metrics_listen: None,
            ipv6_prefix: None,
            aggregate_count: 0,
            aggregate_window: Duration::from_secs(600),
            aggregate_origins: 2,
            aggregate_ipv4_prefix: 24,
            aggregate_ipv6_prefix: 48,
            escalation: None,
            require_signatures: false,
            trusted_sites: vec!["*".into()],
            min_sites: 1,
            min_sites_window: Duration::from_secs(3600),
            intel: IntelMode::Off,
            intel_sources: vec!["*".into()],
            intel_max_bantime: Duration::from_secs(7 * 24 * 3600),
            intel_source_max_bantime: BTreeMap::new(),
        }
    }
}

impl SubscriberConfig {
    fn check_prefixes(&self) -> Result<(), Invalid> {
        let wants_prefix = self.ipv6_prefix.is_some() || self.aggregate_count > 0;
        if wants_prefix && self.apply == ApplyMode::Log {
            return Err(Invalid::from(
                "subscriber.ipv6_prefix and aggregate_count need apply = \"ban\" or \
                        \"attempt\" (a log line names one address)",
            ));
        }
        if self.ipv6_prefix.is_some_and(|n| !(16..=128).contains(&n)) {
            return Err(Invalid::from(
                "subscriber.ipv6_prefix must be between 16 and 128",
            ));
        }
        if !(16..=31).contains(&self.aggregate_ipv4_prefix) {
            return Err(Invalid::from(
                "subscriber.aggregate_ipv4_prefix must be between 16 and 31",
            ));
        }
        if !(32..=127).contains(&self.aggregate_ipv6_prefix) {
            return Err(Invalid::from(
                "subscriber.aggregate_ipv6_prefix must be between 32 and 127",
            ));
        }
        if self.aggregate_count == 1
            || (self.aggregate_count > 1 && self.aggregate_window.is_zero())
        {
            return Err(Invalid::from(
                "subscriber.aggregate_count must be 0 (off) or 2 or more, with an \
                 aggregate_window above 0s",
            ));
        }
        Ok(())
    }

    /// The longest `source`'s intel orders are held here; `None`: not applied at all.
    pub fn intel_cap(&self, source: &str) -> Option<Duration> {
        let taken = self.intel == IntelMode::Ban
            && self.intel_sources.iter().any(|s| s == "*" || s == source);
        taken.then(|| {
            self.intel_source_max_bantime
                .get(source)
                .map_or(self.intel_max_bantime, |d| d.0.min(self.intel_max_bantime))
        })
    }

    /// The local jail a remote jail's bans go into.
    pub fn local_jail(&self, remote_jail: &str) -> &str {
        self.jail_map
            .get(remote_jail)
            .map(String::as_str)
            .unwrap_or(&self.target_jail)
    }

    /// Whether `jail` receives remote bans (and so must never publish).
    pub fn is_target_jail(&self, jail: &str) -> bool {
        self.target_jail == jail || self.jail_map.values().any(|j| j == jail)
    }
}

/// `[archiver]`: the database writer and replay service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiverConfig {
    pub database_url: Secret,
    pub archiver_consumer: String,
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Apply the schema migrations at start-up (needs CREATE/ALTER/INDEX); set false when the
    /// run-time user holds only SELECT, INSERT, UPDATE, DELETE and an admin runs `migrate`.
    pub auto_migrate: bool,
    /// Where to serve `/metrics` and `/healthz` (off when unset).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where to serve the feeds (`/v1/blocklist`, `/v1/history`); off when unset.
    pub http_listen: Option<std::net::SocketAddr>,
    /// Nets the feeds never list (the site's own networks, its upstream, partners): a firewall
    /// loading a feed must never drop them, whatever a host reported. Loopback, link-local,
    /// multicast and the NATS servers are left out anyway.
    pub feed_allowlist: Vec<IpNet>,
    /// The longest a host's ban stays in the feeds, a permanent one included (as a
    /// subscriber's `max_bantime`); an operator's ban is listed as ordered.
    #[serde(with = "humantime_serde")]
    pub feed_max_bantime: Duration,
    /// Bearer tokens the feeds accept; none: the feeds are open to whoever reaches them.
    pub http_tokens: Vec<Secret>,
    /// The address others reach `http_listen` at (e.g. behind a proxy); Zeek's `meta.url`
    /// links each address's history there.
    pub public_url: Option<String>,
    /// `[archiver.misp]`: who the MISP feed says it comes from, and how it may be shared.
    pub misp: Option<MispConfig>,
    /// `[archiver.legacy_api]`: the original Shared Fail2Ban's HTTP API on `http_listen`, for
    /// hosts that still run the original while a site moves; its `hosts` are the old hosts
    /// for the bridge too.
    pub legacy_api: Option<LegacyApiConfig>,
    /// `[archiver.legacy]`: the bridge that keeps the original's table and the stream in step.
    pub legacy: Option<LegacyConfig>,
    /// `[[archiver.intake]]`: threat-intelligence sources turned into intel orders.
    pub intake: Vec<crate::intake::IntakeConfig>,
}

/// `[archiver.legacy]`: the original's database, kept in step with the stream both ways.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyConfig {
    /// `mysql://user:password@host/f2b` (SELECT and INSERT on table `f2b`).
    pub database_url: Secret,
    /// How often the table is read for new rows and written with new hosts' bans.
    #[serde(default = "default_legacy_poll", with = "humantime_serde")]
    pub poll: Duration,
    /// The zone the old hosts write `created` in (an IANA name); unset: this machine's.
    #[serde(default)]
    pub timezone: Option<String>,
}

fn default_legacy_poll() -> Duration {
    Duration::from_secs(5)
}

/// `[archiver.legacy_api]`: which old hosts may use the original's API, and who may read it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyApiConfig {
    /// Nets answered `GET /api/v1/time` and `/count` besides the hosts' own addresses.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// The old hosts, each `[[archiver.legacy_api.hosts]]`.
    #[serde(default)]
    pub hosts: Vec<LegacyApiHost>,
}

/// One old host: its own config as `shared-f2b-admin host add` wrote it (its `host_id`, the
/// NATS login the archiver publishes its bans with, the key that signs them); its token (the
/// only thing that says which host a PUT is from; none: it does not use the API); its
/// addresses (which host a GET is from); and the `hostname` its rows carry in the old table
/// (default: its host id).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyApiHost {
    pub config: PathBuf,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub addresses: Vec<std::net::IpAddr>,
    #[serde(default)]
    pub hostname: Option<String>,
}

/// `[archiver.misp]`: the MISP feed's organisation, distribution and TLP tag.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MispConfig {
    /// The organisation creating the events (`Orgc.name`).
    pub org_name: String,
    /// Its uuid (`Orgc.uuid`), as the receiving MISP knows it.
    pub org_uuid: uuid::Uuid,
    /// MISP distribution: 0 your organisation only, 1 this community, 2 connected communities,
    /// 3 all communities.
    #[serde(default)]
    pub distribution: u8,
    /// The TLP tag on every event (`tlp:clear`, `tlp:green`, `tlp:amber`, `tlp:amber+strict`,
    /// `tlp:red`; `tlp:white` is `tlp:clear`'s older name).
    #[serde(default = "default_tlp")]
    pub tlp: String,
    /// The events' title, followed by the day: "<info> 2026-11-25".
    #[serde(default = "default_misp_info")]
    pub info: String,
}

/// The TLP tags a MISP feed may carry.
pub const TLP_TAGS: [&str; 6] = [
    "tlp:clear",
    "tlp:white",
    "tlp:green",
    "tlp:amber",
    "tlp:amber+strict",
    "tlp:red",
];

fn default_tlp() -> String {
    "tlp:amber".into()
}

fn default_misp_info() -> String {
    "Shared Fail2Ban bans".into()
}

impl MispConfig {
    fn check(&self) -> Result<(), Invalid> {
        if self.org_name.trim().is_empty() || self.org_name.chars().any(char::is_control) {
            return Err(Invalid::from(
                "archiver.misp.org_name: give the organisation's name",
            ));
        }
        if self.distribution > 3 {
            return Err(Invalid::from(format!(
                "archiver.misp.distribution {}: use 0 (your organisation), 1 (this community), \
                 2 (connected communities) or 3 (all communities)",
                self.distribution
            )));
        }
        if !TLP_TAGS.contains(&self.tlp.as_str()) {
            return Err(Invalid::from(format!(
                "archiver.misp.tlp {:?}: use one of {}",
                self.tlp,
                TLP_TAGS.join(", ")
            )));
        }
        if self.info.trim().is_empty() || self.info.chars().any(char::is_control) {
            return Err(Invalid::from("archiver.misp.info: give the events' title"));
        }
        Ok(())
    }
}

impl ArchiverConfig {
    fn check(&self) -> Result<(), Invalid> {
        if self.feed_max_bantime.is_zero() {
            return Err(Invalid::from(
                "archiver.feed_max_bantime must be longer than 0s",
            ));
        }
        for token in &self.http_tokens {
            let t = token.expose();
            if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Invalid::from(
                    "archiver.http_tokens: each token needs 16 or more printable \
                            characters without spaces (e.g. `openssl rand -hex 32`)",
                ));
            }
        }
        if let Some(url) = &self.public_url {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && !url.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(Invalid::from(format!(
                    "archiver.public_url {url:?}: give an http:// or https:// URL"
                )));
            }
        }
        if let Some(misp) = &self.misp {
            misp.check()?;
        }
        let api_hosts = self.legacy_api.as_ref().map_or(&[][..], |a| &a.hosts[..]);
        if api_hosts.iter().any(|h| h.token_file.is_some()) && self.http_listen.is_none() {
            return Err(Invalid::from(
                "archiver.legacy_api is served on archiver.http_listen: set it too",
            ));
        }
        if let Some(legacy) = &self.legacy {
            if api_hosts.is_empty() {
                return Err(Invalid::from(
                    "archiver.legacy: the bridge publishes the old hosts' bans as those hosts: \
                     list them in [[archiver.legacy_api.hosts]] (config, hostname)",
                ));
            }
            if legacy.poll.is_zero() {
                return Err(Invalid::from("archiver.legacy.poll must be longer than 0s"));
            }
        }
        let mut names = Vec::new();
        for source in &self.intake {
            source.check(&names)?;
            names.push(source.name.as_str());
        }
        Ok(())
    }
}

impl Default for ArchiverConfig {
    fn default() -> Self {
        ArchiverConfig {
            database_url: Secret("sqlite:///var/lib/shared-f2b/archive.db".into()),
            archiver_consumer: "archiver".into(),
            retention: None,
            auto_migrate: true,
            metrics_listen: None,
            http_listen: None,
            feed_allowlist: Vec::new(),
            feed_max_bantime: Duration::from_secs(30 * 24 * 3600),
            http_tokens: Vec::new(),
            public_url: None,
            misp: None,
            legacy_api: None,
            legacy: None,
            intake: Vec::new(),
        }
    }
}

/// Loopback and link-local: never banned by a subscriber unless its config says otherwise.
fn default_allowlist() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10"]
        .iter()
        .map(|n| n.parse().expect("valid default"))
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// The config path to use: the flag, else the environment, else the default.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(ENV_VAR).map(PathBuf::from))
        .unwrap_or_else(|| DEFAULT_PATH.into())
}

impl Config {
    /// Reads, parses and checks the config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ConfigError::Invalid { what, .. } => ConfigError::Invalid {
                path: path.to_owned(),
                what,
            },
            other => other,
        })
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.check().map_err(|what| ConfigError::Invalid {
            path: PathBuf::new(),
            what,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), Invalid> {
        if self.host_id.is_empty() {
            return Err(Invalid::from(
                "host_id is not set and the hostname could not be read",
            ));
        }
        validate_host(&self.host_id).map_err(|e| Invalid::from(format!("host_id: {e}")))?;
        let nats = &self.nats;
        validate_prefix(&nats.subject_prefix)
            .map_err(|e| Invalid::from(format!("nats.subject_prefix: {e}")))?;
        if nats.servers.is_empty() {
            return Err(Invalid::from("nats.servers: list at least one server URL"));
        }
        let stream_ok = !nats.stream.is_empty()
            && nats
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !stream_ok {
            return Err(Invalid::from(format!(
                "nats.stream {:?}: use letters, digits, '_' and '-'",
                nats.stream
            )));
        }
        validate_prefix(&nats.inbox_prefix)
            .map_err(|e| Invalid::from(format!("nats.inbox_prefix: {e}")))?;
        if nats.stream_max_bytes < 1 << 20 {
            return Err(Invalid::from(
                "nats.stream_max_bytes must be at least 1048576 (1 MiB)",
            ));
        }
        if nats.stream_max_age.is_zero() {
            return Err(Invalid::from("nats.stream_max_age must be longer than 0s"));
        }
        if nats.user.is_some() != nats.password.is_some() {
            return Err(Invalid::from(
                "nats.user and nats.password go together: set both or neither",
            ));
        }
        if nats.tls_cert_file.is_some() != nats.tls_key_file.is_some() {
            return Err(Invalid::from(
                "nats.tls_cert_file and nats.tls_key_file go together: set both or neither",
            ));
        }
        let methods = [
            nats.user.is_some(),
            nats.token.is_some(),
            nats.nkey_seed_file.is_some(),
            nats.creds_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(Invalid::from(
                "nats: choose one of user+password, token, nkey_seed_file or creds_file",
            ));
        }
        if self.publisher.timeout.is_zero() {
            return Err(Invalid::from("publisher.timeout must be longer than 0s"));
        }
        let sub = &self.subscriber;
        for jail in &sub.jails {
            if jail != "*" {
                validate_jail(jail).map_err(|e| Invalid::from(format!("subscriber.jails: {e}")))?;
            }
        }
        validate_jail(&sub.target_jail)
            .map_err(|e| Invalid::from(format!("subscriber.target_jail: {e}")))?;
        if sub.max_bans_per_minute == 0 || sub.max_bantime.is_zero() || sub.min_reporters == 0 {
            return Err(Invalid::from(
                "subscriber.max_bans_per_minute, max_bantime and min_reporters must be above 0",
            ));
        }
        for origin in &sub.trusted_origins {
            // `alice`, or `alice@a` for a host of a federated site.
            let (host, site) = match origin.split_once('@') {
                Some((host, site)) => (host, Some(site)),
                None => (origin.as_str(), None),
            };
            validate_host(host)
                .map_err(|e| Invalid::from(format!("subscriber.trusted_origins: {e}")))?;
            if let Some(site) = site {
                crate::federation::validate_site(site)
                    .map_err(|e| Invalid::from(format!("subscriber.trusted_origins: {e}")))?;
            }
        }
        if let Some(site) = &self.site_id {
            crate::federation::validate_site(site)
                .map_err(|e| Invalid::from(format!("site_id: {e}")))?;
        }
        self.federation.check(self.site_id.as_deref())?;
        for site in &sub.trusted_sites {
            if site != "*" && self.federation.site(site).is_none() {
                return Err(Invalid::from(format!(
                    "subscriber.trusted_sites: {site:?} is not in [federation] sites"
                )));
            }
        }
        if sub.min_sites == 0 || sub.min_sites_window.is_zero() {
            return Err(Invalid::from(
                "subscriber.min_sites and min_sites_window must be above 0",
            ));
        }
        for (remote, local) in &sub.jail_map {
            validate_jail(remote)
                .map_err(|e| Invalid::from(format!("subscriber.jail_map: {e}")))?;
            validate_jail(local).map_err(|e| Invalid::from(format!("subscriber.jail_map: {e}")))?;
        }
        sub.check_prefixes()?;
        self.archiver.check()?;
        for key in &self.trust.operator_keys {
            crate::signing::PublicKey::parse(key)
                .map_err(|e| Invalid::from(format!("trust.operator_keys: {e}")))?;
        }
        if sub.require_signatures
            && self.trust.operator_keys.is_empty()
            && self.trust.operator_keys_file.is_none()
        {
            return Err(Invalid::from(
                "subscriber.require_signatures needs trust.operator_keys (or operator_keys_file): \
                 the operator keys that vouch for the hosts' keys",
            ));
        }
        if self.admin.reload_command.is_empty() {
            return Err(Invalid::from(
                "admin.reload_command: give the program and its arguments",
            ));
        }
        if let Some(esc) = &sub.escalation {
            if sub.apply != ApplyMode::Ban {
                return Err(Invalid::from(
                    "subscriber.escalation needs apply = \"ban\" (in the other modes \
                            the local jail decides the bantime)",
                ));
            }
            if !esc.repeat_factor.is_finite() || esc.repeat_factor < 1.0 {
                return Err(Invalid::from(
                    "subscriber.escalation.repeat_factor must be 1 or more",
                ));
            }
            if esc.window.is_zero() || esc.bantime.is_zero() || esc.max_bantime.is_zero() {
                return Err(Invalid::from(
                    "subscriber.escalation: window, bantime and max_bantime must be above 0s",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_escalation_keys_are_checked() {
        let c = Config::parse(
            "host_id = \"a\"\n[subscriber]\napply = \"ban\"\nipv6_prefix = 64\naggregate_count = 4\n\
             [subscriber.escalation]\nreporters = 3\nwindow = \"1h\"\nbantime = \"1d\"\n\
             repeat_factor = 2.0",
        )
        .unwrap();
        assert_eq!(c.subscriber.ipv6_prefix, Some(64));
        let esc = c.subscriber.escalation.unwrap();
        assert_eq!((esc.reporters, esc.repeat_factor), (3, 2.0));
        for bad in [
            "[subscriber]\nipv6_prefix = 8",
            "[subscriber]\napply = \"log\"\nipv6_prefix = 64",
            "[subscriber]\naggregate_count = 1",
            "[subscriber]\naggregate_ipv4_prefix = 8\naggregate_count = 3",
            "[subscriber]\n[subscriber.escalation]\nreporters = 2",
            "[subscriber]\napply = \"ban\"\n[subscriber.escalation]\nrepeat_factor = 0.5",
            "[subscriber]\napply = \"ban\"\n[subscriber.escalation]\nreporter = 2",
        ] {
            assert!(
                Config::parse(&format!("host_id = \"a\"\n{bad}")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn feed_keys_are_checked() {
        let c = Config::parse(
            "host_id = \"a\"\n[archiver]\nhttp_listen = \"127.0.0.1:9723\"\n\
             http_tokens = [\"0123456789abcdef0123\"]\npublic_url = \"https://f2b.example.org\"\n\
             [archiver.misp]\norg_name = \"Example\"\n\
             org_uuid = \"5f0c3c1e-1b2a-4c3d-9e8f-0123456789ab\"\ndistribution = 1",
        )
        .unwrap();
        assert_eq!(c.archiver.http_tokens.len(), 1);
        let misp = c.archiver.misp.unwrap();
        assert_eq!((misp.distribution, misp.tlp.as_str()), (1, "tlp:amber"));
        assert!(
            Config::parse("host_id = \"a\"")
                .unwrap()
                .archiver
                .http_listen
                .is_none()
        );
        for bad in [
            "http_tokens = [\"short\"]",
            "http_tokens = [\"0123456789abcdef 0123\"]",
            "public_url = \"ftp://x\"",
            "[archiver.misp]\norg_name = \"E\"\norg_uuid = \"nope\"",
            "[archiver.misp]\norg_name = \"E\"\norg_uuid = \"5f0c3c1e-1b2a-4c3d-9e8f-0123456789ab\"\ndistribution = 4",
            "[archiver.misp]\norg_name = \"E\"\norg_uuid = \"5f0c3c1e-1b2a-4c3d-9e8f-0123456789ab\"\ntlp = \"tlp:blue\"",
            "[archiver.misp]\norg_uuid = \"5f0c3c1e-1b2a-4c3d-9e8f-0123456789ab\"",
        ] {
            assert!(
                Config::parse(&format!("host_id = \"a\"\n[archiver]\n{bad}")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::parse("host_id = \"alice\"").unwrap();
        assert_eq!(c.nats.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(c.nats.subject_prefix, "f2b");
        assert_eq!(c.nats.stream, "F2B_EVENTS");
        assert_eq!(c.nats.stream_max_age, Duration::from_secs(604_800));
        assert_eq!(c.publisher.timeout, Duration::from_secs(2));
        assert_eq!(c.subscriber.apply, ApplyMode::Attempt);
        assert_eq!(c.subscriber.target_jail, "shared");
        assert!(!c.subscriber.include_own);
    }

    #[test]
    fn the_shipped_example_parses_to_the_defaults() {
        let text = include_str!("../../config.example.toml");
        let example = Config::parse(&format!("host_id = \"a\"\n{text}")).unwrap();
        let defaults = Config::parse("host_id = \"a\"").unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn the_compose_archiver_config_is_valid() {
        let c = Config::parse(include_str!("../../deploy/compose/archiver.toml")).unwrap();
        assert_eq!(c.nats.servers, ["nats://nats:4222"]);
        assert!(
            c.archiver.metrics_listen.is_some(),
            "the compose healthcheck needs it"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        for (text, key) in [
            ("host_id = \"a\"\nhots = 1", "hots"),
            ("[nats]\nserver = []", "server"),
            ("[publisher]\nspool = \"/x\"", "spool"),
            ("[subscriber]\napply_mode = \"ban\"", "apply_mode"),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn secrets_are_masked() {
        let c = Config::parse(
            "host_id = \"a\"\n[nats]\nuser = \"u\"\npassword = \"hunter2\"\n[archiver]\ndatabase_url = \"mysql://u:pw@db/x\"",
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("pw@db"),
            "{shown}"
        );
        assert_eq!(c.nats.password.unwrap().expose(), "hunter2");
    }

    #[test]
    fn invalid_values_are_explained() {
        for (text, needle) in [
            ("host_id = \"a b\"", "host_id"),
            ("[nats]\nsubject_prefix = \"f2b.>\"", "subject_prefix"),
            ("[nats]\nstream = \"a.b\"", "nats.stream"),
            ("[nats]\nuser = \"u\"", "password"),
            ("[nats]\ntoken = \"t\"\ncreds_file = \"/c\"", "choose one"),
            ("[publisher]\ntimeout = \"soon\"", "timeout"),
            ("[subscriber]\napply = \"nuke\"", "apply"),
            ("[subscriber]\ntarget_jail = \"a.b\"", "target_jail"),
            ("[subscriber]\nallowlist = [\"10.0.0.0/33\"]", "allowlist"),
        ] {
            let full = if text.starts_with("host_id") {
                text.to_owned()
            } else {
                format!("host_id = \"h\"\n{text}")
            };
            let err = Config::parse(&full).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn target_jails_are_known() {
        let c = Config::parse(
            "host_id = \"a\"\n[subscriber]\ntarget_jail = \"shared\"\n[subscriber.jail_map]\nsshd = \"shared-ssh\"",
        )
        .unwrap();
        assert!(c.subscriber.is_target_jail("shared"));
        assert!(c.subscriber.is_target_jail("shared-ssh"));
        assert!(!c.subscriber.is_target_jail("sshd"));
        assert_eq!(c.subscriber.local_jail("sshd"), "shared-ssh");
        assert_eq!(c.subscriber.local_jail("nginx"), "shared");
    }
}
