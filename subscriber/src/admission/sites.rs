//! Events and records relayed from federated sites (`<prefix>.remote.<site>.…`), by this site's
//! policy for each: its host keys are only those its own operators vouched for (checked against
//! the operator keys `[federation] sites` names, never this site's), its bans are applied only
//! when it is in `trusted_sites`, at most `max_bans_per_minute` of them a minute and never
//! longer than its `max_bantime`, and, with `min_sites` above 1, only once that many sites
//! reported the address. Its operators' orders count only with `accept_orders`. Everything
//! after that is as for a local event, under the origin `host@site`, so this site's allowlist,
//! pardons and allows win, and a remote unban lifts only what that remote host placed.

use super::{Admission, Decision, Reason, drop};
use crate::intake::follow::{Incoming, Source};
use crate::state::State;
use shared_f2b::config::Config;
use shared_f2b::control::ControlKind;
use shared_f2b::event::{Action, PERMANENT};
use shared_f2b::inbound::{decode_control, decode_received};
use shared_f2b::keyring::Taken;
use shared_f2b::signing::OperatorKeys;
use shared_f2b::subject::is_control;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// What this site holds of one federated site.
struct Site {
    operators: OperatorKeys,
    trusted: bool,
    accept_orders: bool,
    max_bantime: Option<Duration>,
    rate: u32,
    /// When its recent live events came (the last minute).
    recent: VecDeque<SystemTime>,
}

/// The per-site policy and its running state.
#[derive(Default)]
pub struct Sites {
    sites: BTreeMap<String, Site>,
    min_sites: usize,
    window: Duration,
    /// Which sites reported each address lately (for `min_sites`).
    reports: HashMap<IpAddr, Vec<(String, SystemTime)>>,
}

impl Sites {
    /// The policy of `config`; a site whose operator keys cannot be read is an error.
    pub fn new(config: &Config) -> Result<Sites, shared_f2b::config::Invalid> {
        let sub = &config.subscriber;
        let all = sub.trusted_sites.iter().any(|s| s == "*");
        let trusted: HashSet<&str> = sub.trusted_sites.iter().map(String::as_str).collect();
        let mut sites = BTreeMap::new();
        for site in &config.federation.sites {
            sites.insert(
                site.id.clone(),
                Site {
                    operators: site.operators()?,
                    trusted: all || trusted.contains(site.id.as_str()),
                    accept_orders: site.accept_orders,
                    max_bantime: site.max_bantime,
                    rate: site.max_bans_per_minute,
                    recent: VecDeque::new(),
                },
            );
        }
        Ok(Sites {
            sites,
            min_sites: sub.min_sites,
            window: sub.min_sites_window,
            reports: HashMap::new(),
        })
    }

    /// The federated sites and their operator keys (to load their keyrings).
    pub fn operators(&self) -> impl Iterator<Item = (&str, &OperatorKeys)> {
        self.sites.iter().map(|(id, s)| (id.as_str(), &s.operators))
    }

    /// Whether a live event of `site` is within its rate (counts it).
    fn within_rate(&mut self, site: &str, now: SystemTime) -> bool {
        let Some(s) = self.sites.get_mut(site) else {
            return false;
        };
        let minute_ago = now - Duration::from_secs(60);
        while s.recent.front().is_some_and(|t| *t <= minute_ago) {
            s.recent.pop_front();
        }
        if s.recent.len() >= s.rate as usize {
            return false;
        }
        s.recent.push_back(now);
        true
    }

    /// Records that `site` reported `ip`; whether `min_sites` sites have now.
    fn quorum(&mut self, ip: IpAddr, site: &str, now: SystemTime) -> bool {
        if self.min_sites <= 1 {
            return true;
        }
        let since = now - self.window;
        if self.reports.len() > 100_000 {
            self.reports
                .retain(|_, r| r.iter().any(|(_, t)| *t > since));
        }
        let reports = self.reports.entry(ip).or_default();
        reports.retain(|(_, t)| *t > since);
        match reports.iter_mut().find(|(s, _)| s == site) {
            Some(report) => report.1 = now,
            None => reports.push((site.to_owned(), now)),
        }
        reports.len() >= self.min_sites
    }
}

impl Admission {
    /// A message relayed from federated `site`; `inner` is the prefix its tokens are under.
    pub(super) fn remote(
        &mut self,
        msg: &Incoming,
        site: &str,
        inner: &str,
        state: &mut State,
        now: SystemTime,
    ) -> Decision {
        let Some(policy) = self.sites.sites.get(site) else {
            return drop(
                Reason::UnknownSite,
                format!("site {site:?} is not in [federation] sites"),
            );
        };
        if is_control(inner, &msg.subject) {
            return self.remote_control(msg, site, state, now);
        }
        if !policy.trusted {
            return drop(Reason::UntrustedSite, format!("site {site:?}"));
        }
        let cap = policy.max_bantime;
        let mut event = match decode_received(&self.prefix, &msg.subject, &msg.payload) {
            Ok(event) => event,
            Err(r) if r.reason == "spoofed_origin" || r.reason == "spoofed_site" => {
                return drop(Reason::SpoofedOrigin, r.detail);
            }
            Err(r) => return drop(Reason::Invalid(r.reason), r.detail),
        };
        let live = msg.source == Source::Live;
        let stored = if live { Some(now) } else { msg.stored };
        // Always required: no site's lenient mode reaches another site.
        if let Err(e) = state.site_keyring(site).check(&event, stored) {
            return drop(
                Reason::Signature(e),
                format!("event {} from {}: {e}", event.id, event.who()),
            );
        }
        if live && !self.sites.within_rate(site, now) {
            return drop(
                Reason::RateLimited,
                format!("site {site:?} is over its max_bans_per_minute"),
            );
        }
        if let (Action::Ban, Some(cap)) = (event.action, cap) {
            let cap = cap.as_secs() as i64;
            if event.bantime == PERMANENT || event.bantime > cap {
                event.bantime = cap;
            }
        }
        event.origin = event.who();
        if let Some(skip) = self.followed_and_trusted(&event) {
            return skip;
        }
        self.admit(event, live, state, now)
    }

    /// Whether a remote ban has its `min_sites` (records the report).
    pub(super) fn site_quorum(&mut self, ip: IpAddr, site: &str, now: SystemTime) -> bool {
        self.sites.quorum(ip, site, now)
    }

    /// A key record of `site` (into its keyring, if its operators signed it) or an order of its
    /// operators (only with `accept_orders`, and then only signed by them).
    fn remote_control(
        &mut self,
        msg: &Incoming,
        site: &str,
        state: &mut State,
        now: SystemTime,
    ) -> Decision {
        let control = match decode_control(&self.prefix, &msg.subject, &msg.payload) {
            Ok(control) => control,
            Err(r) if r.reason == "spoofed_origin" => return drop(Reason::SpoofedOrigin, r.detail),
            Err(r) => return drop(Reason::Invalid(r.reason), r.detail),
        };
        let policy = &self.sites.sites[site];
        if control.kind == ControlKind::Key {
            let operators = policy.operators.clone();
            return match state.site_keyring(site).take(&control, &operators) {
                Ok(Taken::New) => {
                    state.site_keyring_changed(site);
                    Decision::Keyed {
                        control: Box::new(control),
                    }
                }
                Ok(Taken::Known) => drop(
                    Reason::Replayed,
                    format!("key record {} of site {site} is known already", control.id),
                ),
                Err(e) => drop(
                    Reason::Signature(e),
                    format!("key record {} of site {site}: {e}", control.id),
                ),
            };
        }
        if !policy.accept_orders {
            return drop(
                Reason::RemoteOrder,
                format!("site {site:?}'s orders are not accepted here"),
            );
        }
        if let Err(e) = policy.operators.check(&control) {
            return drop(
                Reason::Signature(e),
                format!("order {} of site {site}: {e}", control.id),
            );
        }
        self.enact(msg, control, state, now)
    }
}
