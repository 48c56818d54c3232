//! The old hosts the API answers (`[[archiver.legacy_api.hosts]]`): each one's token, its
//! addresses, and its own NATS login and key, with which the archiver publishes its bans.

use crate::text::digest;
use ipnet::IpNet;
use shared_f2b::config::{LegacyApiConfig, LegacyApiHost};
use shared_f2b::nats::{self, Lifetime};
use shared_f2b::publish::Sender;
use shared_f2b::signing::Signer;
use shared_f2b::{Config, Event};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Shortest token taken (the original's were 32 hex digits and more).
const MIN_TOKEN_LEN: usize = 16;
/// How long a PUT waits for the stream's ack.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the old hosts could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("archiver.legacy_api: cannot read the config of an old host: {0}")]
    Config(#[from] shared_f2b::config::ConfigError),
    #[error("archiver.legacy_api: cannot read the token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "archiver.legacy_api: the token in {0} is too short or holds spaces (16 or more \
         printable characters, e.g. `openssl rand -hex 32`)"
    )]
    WeakToken(PathBuf),
    #[error("archiver.legacy_api: {0} is listed twice (host, token or address)")]
    Twice(String),
    #[error("archiver.legacy_api: cannot sign as {host}: {source}")]
    Key {
        host: String,
        source: shared_f2b::signing::KeyError,
    },
    #[error("archiver.legacy_api: cannot connect to NATS as {host}: {source}")]
    Connect {
        host: String,
        source: shared_f2b::nats::ConnectError,
    },
}

/// Why a PUT's event was not stored.
#[derive(Debug, thiserror::Error)]
#[error("the stream did not take the ban: {0}")]
pub struct NotStored(pub shared_f2b::publish::SendError);

/// One old host.
pub struct Client {
    pub host_id: String,
    /// The `hostname` its rows carry in the old table (lower case).
    pub hostname: String,
    /// `None`: it does not use the API.
    token: Option<[u8; 16]>,
    addresses: Vec<IpAddr>,
    sender: Sender,
    signer: Option<Signer>,
}

impl Client {
    /// Signs `event` with the host's key (if it has one) and waits until the stream holds it.
    pub async fn publish(&self, mut event: Event) -> Result<Event, NotStored> {
        if let Some(signer) = &self.signer {
            signer.sign_event(&mut event);
        }
        self.sender.send(&event).await.map_err(NotStored)?;
        Ok(event)
    }
}

impl Client {
    /// Whether a PUT with this host's token may come from `addr`: any address when the host
    /// lists none, else only its own.
    pub fn puts_from(&self, addr: IpAddr) -> bool {
        self.addresses.is_empty() || self.addresses.contains(&canonical(addr))
    }
}

/// Every old host, and the nets that may read.
pub struct Clients {
    clients: Vec<Client>,
    allow: Vec<IpNet>,
}

impl Clients {
    /// Reads each host's config and token, and connects as each host (reconnecting forever).
    pub async fn connect(api: &LegacyApiConfig) -> Result<Clients, ClientsError> {
        let mut clients: Vec<Client> = Vec::new();
        for host in &api.hosts {
            let client = Self::client(host).await?;
            let twice = clients.iter().find_map(|c| {
                if c.host_id == client.host_id {
                    Some(c.host_id.clone())
                } else if c.hostname == client.hostname {
                    Some(format!("hostname {}", c.hostname))
                } else if c.token.is_some() && c.token == client.token {
                    Some(format!("the token of {}", c.host_id))
                } else {
                    c.addresses
                        .iter()
                        .find(|a| client.addresses.contains(a))
                        .map(|a| format!("address {a}"))
                }
            });
            if let Some(what) = twice {
                return Err(ClientsError::Twice(what));
            }
            clients.push(client);
        }
        Ok(Clients {
            clients,
            allow: api.allow.clone(),
        })
    }

    async fn client(host: &LegacyApiHost) -> Result<Client, ClientsError> {
        let config = Config::load(&host.config)?;
        let token = match &host.token_file {
            Some(path) => Some(digest(read_token(path)?.as_bytes())),
            None => None,
        };
        let signer = match config.trust.signing_seed(&config.nats) {
            Some(seed) => Some(Signer::from_file(seed).map_err(|source| ClientsError::Key {
                host: config.host_id.clone(),
                source,
            })?),
            None => None,
        };
        let conn = nats::connect(
            &config.nats,
            &config.host_id,
            PUBLISH_TIMEOUT,
            Lifetime::Daemon,
        )
        .await
        .map_err(|source| ClientsError::Connect {
            host: config.host_id.clone(),
            source,
        })?;
        Ok(Client {
            sender: Sender::new(&conn, &config.nats, PUBLISH_TIMEOUT),
            hostname: host
                .hostname
                .as_deref()
                .unwrap_or(&config.host_id)
                .trim()
                .to_ascii_lowercase(),
            host_id: config.host_id,
            token,
            addresses: host.addresses.iter().copied().map(canonical).collect(),
            signer,
        })
    }

    /// The host whose token `given` is: every token compared, digest to digest, so neither
    /// the time nor the length tells which one matched or how close a guess came.
    pub fn by_token(&self, given: &str) -> Option<&Client> {
        let given = digest(given.trim().as_bytes());
        self.clients.iter().fold(None, |found, c| {
            let Some(token) = &c.token else { return found };
            let same = token
                .iter()
                .zip(&given)
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0;
            if same { Some(c) } else { found }
        })
    }

    /// The old host `host_id`.
    pub fn by_host_id(&self, host_id: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.host_id == host_id)
    }

    /// The old host whose rows carry `hostname` (compared case-insensitively).
    pub fn by_hostname(&self, hostname: &str) -> Option<&Client> {
        let hostname = hostname.trim().to_ascii_lowercase();
        self.clients.iter().find(|c| c.hostname == hostname)
    }

    /// The host at `addr`, if one is listed there.
    pub fn by_address(&self, addr: IpAddr) -> Option<&Client> {
        let addr = canonical(addr);
        self.clients.iter().find(|c| c.addresses.contains(&addr))
    }

    /// Whether `addr` may read: a host's address, or in an `allow` net.
    pub fn may_read(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.by_address(addr).is_some() || self.allow.iter().any(|n| n.contains(&addr))
    }
}

/// The token in `path`, checked.
fn read_token(path: &std::path::Path) -> Result<String, ClientsError> {
    let token = std::fs::read_to_string(path).map_err(|source| ClientsError::Token {
        path: path.to_owned(),
        source,
    })?;
    let token = token.trim();
    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ClientsError::WeakToken(path.to_owned()));
    }
    Ok(token.to_owned())
}

/// IPv4-mapped IPv6 (a dual-stack listener's view of an IPv4 client) as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}
