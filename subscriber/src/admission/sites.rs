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

/// Most addresses `min_sites` keeps reports of.
const MAX_REPORTED: usize = 100_000;

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
        if self.reports.len() > MAX_REPORTED {
            self.reports
                .retain(|_, r| r.iter().any(|(_, t)| *t > since));
            if self.reports.len() > MAX_REPORTED {
                // Flooded: start counting again rather than grow.
                self.reports.clear();
            }
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
            let taken = state.site_keyring(site).take(&control, &policy.operators);
            if matches!(taken, Ok(Taken::New)) {
                state.site_keyring_changed(site);
            }
            return super::orders::keyed(taken, control, &format!(" of site {site}"));
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
        // A revoke names an order by id alone: it could end this site's own. Another site's
        // intake is that site's to apply (its own sources are for its own hosts).
        if matches!(
            control.kind,
            ControlKind::Revoke | ControlKind::Intel | ControlKind::Unlist
        ) {
            return drop(
                Reason::RemoteOrder,
                format!(
                    "site {site:?}'s {} orders are not taken here",
                    control.kind.as_str()
                ),
            );
        }
        let mut control = control;
        control.operator = shared_f2b::federation::origin_at(&control.operator, site);
        self.enact(msg, control, state, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Admission;
    use shared_f2b::control::Control;
    use shared_f2b::event::{Event, parse_ip};
    use shared_f2b::signing::Signer;
    use shared_f2b::subject::{control_subject, event_subject};

    struct Case {
        admission: Admission,
        state: State,
        operator: Signer,
        host: Signer,
        _dir: tempfile::TempDir,
    }

    fn case(extra: &str, site_extra: &str) -> Case {
        let operator = Signer::generate();
        let config = Config::parse(&format!(
            "host_id = \"carol\"\nsite_id = \"c\"\n[subscriber]\napply = \"ban\"\n{extra}\n\
             [[federation.sites]]\nid = \"a\"\noperator_keys = [{:?}]\n{site_extra}\n\
             [[federation.sites]]\nid = \"b\"\noperator_keys = [{:?}]\n",
            operator.public_key(),
            Signer::generate().public_key(),
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let admission = Admission::new(&config, vec![], config.trust.operator_keys().unwrap())
            .with_sites(Sites::new(&config).unwrap());
        let mut c = Case {
            admission,
            state: State::open(dir.path(), Duration::from_secs(86400)).unwrap(),
            operator,
            host: Signer::generate(),
            _dir: dir,
        };
        let mut record = Control::key_record(
            "ops",
            "alice",
            c.host.public_key(),
            SystemTime::now() - Duration::from_secs(60),
            None,
            "enrolled",
        )
        .unwrap();
        c.operator.sign_control(&mut record);
        assert_eq!(c.control("a", &record), "keyed");
        c
    }

    fn incoming(subject: String, payload: Vec<u8>) -> Incoming {
        Incoming {
            source: Source::Live,
            stored: None,
            seq: Some(1),
            stream: Some("F2B_EVENTS".into()),
            subject,
            payload: payload.into(),
        }
    }

    impl Case {
        fn decide(&mut self, msg: &Incoming) -> &'static str {
            match self
                .admission
                .decide(msg, &mut self.state, SystemTime::now())
            {
                Decision::Ban { .. } => "ban",
                Decision::Unban { .. } => "unban",
                Decision::Drop { reason, .. } => reason.label(),
                Decision::Lift { .. } => "lift",
                Decision::Ended { .. } => "ended",
                Decision::Keyed { .. } => "keyed",
            }
        }

        fn control(&mut self, site: &str, c: &Control) -> &'static str {
            let prefix = shared_f2b::federation::remote_prefix("f2b", site);
            let subject = control_subject(&prefix, c.kind, &c.operator).unwrap();
            self.decide(&incoming(subject, c.encode()))
        }

        fn event(&mut self, site: &str, e: &Event) -> &'static str {
            let prefix = shared_f2b::federation::remote_prefix("f2b", site);
            let subject = event_subject(&prefix, e.action, &e.jail, &e.origin).unwrap();
            self.decide(&incoming(subject, e.encode()))
        }

        fn signed(&self, action: Action, ip: &str, bantime: i64) -> Event {
            let mut e = Event::new(
                action,
                "alice",
                "sshd",
                parse_ip(ip).unwrap(),
                SystemTime::now(),
                bantime,
                1,
            )
            .unwrap();
            self.host.sign_event(&mut e);
            e
        }
    }

    #[test]
    fn a_sites_signed_ban_is_applied_as_host_at_site() {
        let mut c = case("", "");
        let e = c.signed(Action::Ban, "198.51.100.7", 600);
        match c.admission.decide(
            &incoming(
                event_subject("f2b.remote.a", e.action, &e.jail, &e.origin).unwrap(),
                e.encode(),
            ),
            &mut c.state,
            SystemTime::now(),
        ) {
            Decision::Ban { event, .. } => assert_eq!(event.origin, "alice@a"),
            other => panic!("{other:?}"),
        }
        // The same from another site (its keyring does not hold alice's key), unsigned, from a
        // site not federated, or with a payload naming another site: refused.
        let e = c.signed(Action::Ban, "198.51.100.8", 600);
        assert_eq!(c.event("b", &e), "unknown_key");
        let mut unsigned = e.clone();
        unsigned.sig = None;
        assert_eq!(c.event("a", &unsigned), "unsigned");
        assert_eq!(c.event("x", &e), "unknown_site");
        let mut claims = e.clone();
        claims.site = Some("b".into());
        assert_eq!(c.event("a", &claims), "spoofed_origin");
    }

    #[test]
    fn policy_trusted_sites_bantime_cap_min_sites_and_orders() {
        let mut c = case("trusted_sites = [\"b\"]", "");
        let e = c.signed(Action::Ban, "198.51.100.9", 600);
        assert_eq!(c.event("a", &e), "untrusted_site");

        let mut c = case("", "max_bantime = \"1h\"");
        let e = c.signed(Action::Ban, "198.51.100.10", -1);
        match c.admission.decide(
            &incoming(
                event_subject("f2b.remote.a", e.action, &e.jail, &e.origin).unwrap(),
                e.encode(),
            ),
            &mut c.state,
            SystemTime::now(),
        ) {
            Decision::Ban { event, .. } => assert_eq!(event.bantime, 3600),
            other => panic!("{other:?}"),
        }

        let mut c = case("min_sites = 2", "");
        let e = c.signed(Action::Ban, "198.51.100.11", 600);
        assert_eq!(c.event("a", &e), "awaiting_sites");

        // a's operators' orders: not taken, even signed by them.
        let mut c = case("", "");
        let mut pardon = Control::pardon(
            "ops",
            shared_f2b::control::parse_net("198.51.100.0/24").unwrap(),
            None,
            "a's pardon",
        )
        .unwrap();
        c.operator.sign_control(&mut pardon);
        assert_eq!(c.control("a", &pardon), "remote_order");
        // ... unless the site's policy accepts them.
        let mut c = case("", "accept_orders = true");
        c.operator.sign_control(&mut pardon);
        assert_eq!(c.control("a", &pardon), "lift");
    }

    #[test]
    fn a_remote_unban_lifts_only_what_that_host_placed() {
        let mut c = case("", "");
        let ban = c.signed(Action::Ban, "198.51.100.12", 600);
        assert_eq!(c.event("a", &ban), "ban");
        let mut other = Event::new(
            Action::Unban,
            "alice",
            "sshd",
            parse_ip("198.51.100.13").unwrap(),
            SystemTime::now(),
            600,
            1,
        )
        .unwrap();
        c.host.sign_event(&mut other);
        assert_eq!(c.event("a", &other), "not_held");
        let unban = c.signed(Action::Unban, "198.51.100.12", 600);
        assert_eq!(c.event("a", &unban), "unban");
    }
}
