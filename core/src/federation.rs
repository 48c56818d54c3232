//! Sites sharing with sites: the `site_id` of this site, the sites it federates with and their
//! operator keys, and the subjects remote events travel on.
//!
//! The path of a remote event, A to C:
//! - site A's stream re-publishes it on `f2b.live.ban.sshd.alice` as for A's own hosts;
//! - the hub (one account per site, each site's leaf node bound to its own) exports A's
//!   `f2b.live.>` and C's account imports it with the prefix `site.a`, so it reaches C as
//!   `site.a.f2b.live.ban.sshd.alice`: the label is the hub's, A cannot choose another;
//! - C's archiver (the relay) checks it against A's keyring (host keys A's operator keys vouched
//!   for) and publishes it into C's own stream on `f2b.remote.a.ban.sshd.alice`, which only the
//!   archiver may publish on, with the event id as `Nats-Msg-Id`;
//! - C's hosts receive it on `f2b.live.remote.a.ban.sshd.alice`, check the signature themselves
//!   and apply it by C's policy for site A. Missed messages are fetched again from A's archiver
//!   (`site.a.f2b.replay`) by stream sequence, so a cut link loses nothing.

use crate::config::Invalid;
use crate::signing::{OperatorKeys, PublicKey};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Longest site id accepted.
pub const MAX_SITE_LEN: usize = 32;

/// The lowest nats-server a federating site (and the hub) is tested on and documented for.
pub const MIN_SERVER_VERSION: &str = "2.9.10";

/// Checks a site id: 1-32 lowercase letters, digits and '-' (a subject token, a name in
/// `host@site`).
pub fn validate_site(id: &str) -> Result<(), Invalid> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SITE_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Invalid::from(format!(
            "site id {id:?}: use 1-{MAX_SITE_LEN} lowercase letters, digits and '-'"
        )))
    }
}

/// How a remote host is named here: `alice@a`.
pub fn origin_at(host: &str, site: &str) -> String {
    format!("{host}@{site}")
}

/// The prefix under which this site's stream keeps the events relayed from `site`:
/// `<prefix>.remote.<site>` (so `f2b.remote.a.ban.sshd.alice`).
pub fn remote_prefix(prefix: &str, site: &str) -> String {
    format!("{prefix}.remote.{site}")
}

/// Splits a stored subject of a relayed event or order into its site and the prefix its
/// remaining tokens are under (`f2b.remote.a.ban.sshd.alice` -> `("a", "f2b.remote.a")`).
pub fn split_remote<'a>(prefix: &str, subject: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix(".remote.")?;
    let site = rest.split('.').next()?;
    validate_site(site).ok()?;
    let inner = &subject[..prefix.len() + ".remote.".len() + site.len()];
    Some((site, inner))
}

/// `[[federation.sites]]`: one site this site federates with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Its `site_id`.
    pub id: String,
    /// Its operators' public keys (nkeys `U…`): only host keys they vouched for sign its
    /// events here.
    #[serde(default)]
    pub operator_keys: Vec<String>,
    /// More of them, one per line.
    #[serde(default)]
    pub operator_keys_file: Option<PathBuf>,
    /// Whether its operators' orders (pardon, allow, ban, revoke) count here too.
    #[serde(default)]
    pub accept_orders: bool,
    /// Longest ban of its hosts applied here (default `[subscriber] max_bantime`).
    #[serde(default, with = "humantime_serde")]
    pub max_bantime: Option<Duration>,
    /// Its live bans and unbans applied per minute, all its hosts together.
    #[serde(default = "default_site_rate")]
    pub max_bans_per_minute: u32,
}

fn default_site_rate() -> u32 {
    6000
}

impl SiteConfig {
    /// Its operator keys: `operator_keys` and the lines of `operator_keys_file`.
    pub fn operators(&self) -> Result<OperatorKeys, Invalid> {
        crate::config::operator_keys(
            &self.operator_keys,
            self.operator_keys_file.as_deref(),
            &format!("federation.sites {}", self.id),
        )
    }
}

/// `[federation]`: the sites this one exchanges events with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    pub sites: Vec<SiteConfig>,
    /// The first token of the hub's import prefix: a remote site's subjects arrive here as
    /// `<hub_prefix>.<site>.<its subjects>`.
    pub hub_prefix: String,
    /// How often the relay asks each remote site's archiver for what it may have missed.
    #[serde(with = "humantime_serde")]
    pub resync: Duration,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            sites: Vec::new(),
            hub_prefix: "site".into(),
            resync: Duration::from_secs(2),
        }
    }
}

impl FederationConfig {
    /// Checks the sites: valid distinct ids other than `own`, each with operator keys.
    pub fn check(&self, own: Option<&str>) -> Result<(), Invalid> {
        crate::subject::validate_prefix(&self.hub_prefix)
            .map_err(|e| Invalid::from(format!("federation.hub_prefix: {e}")))?;
        if self.resync.is_zero() {
            return Err(Invalid::from("federation.resync must be longer than 0s"));
        }
        if !self.sites.is_empty() && own.is_none() {
            return Err(Invalid::from(
                "federation.sites needs site_id: the name of this site",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for site in &self.sites {
            validate_site(&site.id).map_err(|e| Invalid::from(format!("federation.sites: {e}")))?;
            if Some(site.id.as_str()) == own {
                return Err(Invalid::from(format!(
                    "federation.sites: {:?} is this site's own site_id",
                    site.id
                )));
            }
            if !seen.insert(site.id.as_str()) {
                return Err(Invalid::from(format!(
                    "federation.sites: {:?} is listed twice",
                    site.id
                )));
            }
            if site.operator_keys.is_empty() && site.operator_keys_file.is_none() {
                return Err(Invalid::from(format!(
                    "federation.sites {}: give operator_keys (or operator_keys_file): every \
                     remote event must be signed by a host key they vouched for",
                    site.id
                )));
            }
            for key in &site.operator_keys {
                PublicKey::parse(key)
                    .map_err(|e| Invalid::from(format!("federation.sites {}: {e}", site.id)))?;
            }
            if site.max_bans_per_minute == 0 || site.max_bantime.is_some_and(|d| d.is_zero()) {
                return Err(Invalid::from(format!(
                    "federation.sites {}: max_bans_per_minute and max_bantime must be above 0",
                    site.id
                )));
            }
        }
        Ok(())
    }

    /// The site named `id`, if this site federates with it.
    pub fn site(&self, id: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| s.id == id)
    }

    /// Where `site`'s live events arrive here: `<hub_prefix>.<site>.<prefix>.live.>`.
    pub fn live_subject(&self, site: &str, prefix: &str) -> String {
        format!("{}.{site}.{prefix}.live.>", self.hub_prefix)
    }

    /// The label the hub puts before `site`'s subjects: `<hub_prefix>.<site>.`.
    pub fn label(&self, site: &str) -> String {
        format!("{}.{site}.", self.hub_prefix)
    }

    /// Where `site`'s archiver answers replay requests from here.
    pub fn replay_subject(&self, site: &str, prefix: &str) -> String {
        format!(
            "{}.{site}.{}",
            self.hub_prefix,
            crate::replay::replay_subject(prefix)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ids() {
        for ok in ["a", "durham", "gla-1"] {
            assert!(validate_site(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a.b", "a_b", "a@b", &"x".repeat(33)] {
            assert!(validate_site(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn remote_subjects_split() {
        assert_eq!(
            split_remote("f2b", "f2b.remote.a.ban.sshd.alice"),
            Some(("a", "f2b.remote.a"))
        );
        assert_eq!(
            split_remote("f2b", "f2b.remote.gla-1.control.key.ops"),
            Some(("gla-1", "f2b.remote.gla-1"))
        );
        for other in [
            "f2b.ban.sshd.alice",
            "f2b.remote",
            "f2b.remote.",
            "f2b.remote.A.ban.x.y",
            "g.remote.a.ban.x.y",
        ] {
            assert_eq!(split_remote("f2b", other), None, "{other}");
        }
        assert_eq!(remote_prefix("f2b", "a"), "f2b.remote.a");
    }
}
