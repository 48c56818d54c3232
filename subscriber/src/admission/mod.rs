//! Should this event be applied here? One pure, synchronous decision per received message, with
//! a typed [`Reason`] for everything that is not applied (metric labels come from it). No I/O:
//! the worker turns the decisions into Fail2Ban commands.
//!
//! In order: it came from the stream (live messages carry the stream's headers); it decodes and
//! its payload agrees with its subject (the subject's host token is what NATS permissions pin);
//! it is not this host's own, is for a followed jail, from a trusted origin, not expired; it is
//! newer than anything applied for its origin, jail and address (replays and stale unbans stop
//! here, also after a restart); a ban never touches protected addresses, the NATS servers or the
//! allowlist; the origin is within its rate (bans and unbans alike); a ban has its quorum; an
//! unban lifts only what this host holds for that origin alone.

pub mod escalation;
pub mod intel;
pub mod limits;
mod orders;
pub mod prefixes;
pub mod sites;

use crate::intake::follow::{Incoming, Source};
use crate::state::State;
use crate::state::holdings::Unbanned;
use escalation::{Escalated, Escalation};
use ipnet::IpNet;
use limits::{Admit, Limits};
pub use orders::operator_holder;
use prefixes::Prefixes;
use shared_f2b::config::Config;
use shared_f2b::control::{Control, ControlKind, host_net as host, overlap};
use shared_f2b::event::{Action, Event};
use shared_f2b::inbound::{decode_received, origin_prefix};
use shared_f2b::signing::{OperatorKeys, SigError};
use shared_f2b::subject::is_control;
pub use sites::Sites;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Why an event is not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A live message without the stream's headers (or of another stream).
    NotFromStream,
    /// Undecodable, inconsistent or invalid (the label names what: `malformed`, `bad_ip`…).
    Invalid(&'static str),
    /// The payload names another origin than the subject it was published on.
    SpoofedOrigin,
    /// This host's own event.
    Own,
    /// A jail this host does not follow.
    NotFollowed,
    /// Not in `trusted_origins`.
    Untrusted,
    /// The ban is over (or the event is older than anything kept).
    Expired,
    /// Not newer than an event already applied for its origin, jail and address.
    Replayed,
    /// Loopback, multicast, link-local, unspecified: never banned.
    Protected,
    /// One of the configured NATS servers: never banned.
    NatsServer,
    /// In the subscriber's allowlist.
    Allowlisted,
    /// The origin is over `max_bans_per_minute`.
    RateLimited,
    /// Fewer distinct origins than `min_reporters` reported it so far.
    AwaitingReporters,
    /// An unban of a ban this host does not hold for that origin (manual, ended, never applied).
    NotHeld,
    /// An unban while other origins still hold the ban.
    HeldByOthers,
    /// An operator pardoned the address (a pardon in force covers it).
    Pardoned,
    /// An operator allowed the address (an allow entry in force covers it).
    Allowed,
    /// A revoke of no order in force.
    RevokesNothing,
    /// The signature did not check out (`unsigned`, `bad_signature`, `unknown_key`,
    /// `revoked_key`).
    Signature(SigError),
    /// Relayed from a site not in `[federation] sites`.
    UnknownSite,
    /// From a federated site not in `trusted_sites`.
    UntrustedSite,
    /// An order of another site's operators, and that site has no `accept_orders`.
    RemoteOrder,
    /// Fewer distinct sites than `min_sites` reported it so far.
    AwaitingSites,
    /// An intel order while `intel = "off"` or from a source not in `intel_sources`.
    IntelOff,
    /// An intel order naming a net wider than this host bans.
    TooWide,
}

impl Reason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::NotFromStream => "not_from_stream",
            Reason::Invalid(label) => label,
            Reason::SpoofedOrigin => "spoofed_origin",
            Reason::Own => "own",
            Reason::NotFollowed => "not_followed",
            Reason::Untrusted => "untrusted_origin",
            Reason::Expired => "expired",
            Reason::Replayed => "replayed",
            Reason::Protected => "protected_address",
            Reason::NatsServer => "nats_server",
            Reason::Allowlisted => "allowlisted",
            Reason::RateLimited => "rate_limited",
            Reason::AwaitingReporters => "awaiting_reporters",
            Reason::NotHeld => "not_held",
            Reason::HeldByOthers => "held_by_others",
            Reason::Pardoned => "pardoned",
            Reason::Allowed => "allowed",
            Reason::RevokesNothing => "revokes_nothing",
            Reason::Signature(e) => e.reason(),
            Reason::UnknownSite => "unknown_site",
            Reason::UntrustedSite => "untrusted_site",
            Reason::RemoteOrder => "remote_order",
            Reason::AwaitingSites => "awaiting_sites",
            Reason::IntelOff => "intel_off",
            Reason::TooWide => "too_wide",
        }
    }

    /// Whether it is a rejection (logged at warn, counted in `events_rejected`) rather than
    /// an event this host simply does not need (counted in `events_skipped`).
    pub fn is_rejection(self) -> bool {
        matches!(
            self,
            Reason::NotFromStream
                | Reason::Invalid(_)
                | Reason::SpoofedOrigin
                | Reason::Untrusted
                | Reason::Protected
                | Reason::NatsServer
                | Reason::Allowlisted
                | Reason::RateLimited
                | Reason::Signature(_)
                | Reason::UnknownSite
                | Reason::UntrustedSite
                | Reason::TooWide
        )
    }
}

/// What to do with one message.
#[derive(Debug)]
pub enum Decision {
    /// Ban `event.ip` in local `jail` (already recorded as held); with `bantime`, the ticket
    /// gets that bantime instead of the jail's (an operator's ban).
    Ban {
        jail: String,
        event: Event,
        /// What is banned: the address, or its prefix (`ipv6_prefix`).
        target: IpNet,
        bantime: Option<i64>,
        /// The escalation rule that lengthened it, if one did.
        escalated: Option<Escalated>,
        /// A prefix this ban completed (aggregation): banned too, held by [`AGGREGATE_HOLDER`].
        aggregate: Option<IpNet>,
    },
    /// An operator's pardon or allow: lift every address in `net` in every local jail now, and
    /// the held addresses and prefixes that share addresses with it (`held`, already forgotten
    /// from the holdings).
    Lift {
        net: IpNet,
        held: Vec<IpNet>,
        control: Box<Control>,
    },
    /// A revoke ended an order (nothing to undo: what a pardon lifted stays lifted).
    Ended {
        control: Box<Control>,
        ended: Box<Control>,
    },
    /// A key record an operator signed is now in the keyring.
    Keyed { control: Box<Control> },
    /// Lift the local ban of `target` in `jail`.
    Unban {
        jail: String,
        target: IpNet,
        event: Event,
    },
    /// Not applied.
    Drop {
        reason: Reason,
        /// What exactly, for the log.
        detail: String,
    },
}

fn drop(reason: Reason, detail: impl Into<String>) -> Decision {
    Decision::Drop {
        reason,
        detail: detail.into(),
    }
}

/// Who holds an aggregated prefix ban in the holdings (a name no host can have).
pub const AGGREGATE_HOLDER: &str = "prefix aggregate";

/// Addresses no remote event may ever ban, whatever the allowlist says.
pub fn is_protected(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
        }
    }
}

/// The decision rules and their running state (rates, quorums).
pub struct Admission {
    prefix: String,
    stream: String,
    host_id: String,
    include_own: bool,
    /// `None`: every jail.
    jails: Option<HashSet<String>>,
    jail_map: std::collections::BTreeMap<String, String>,
    target_jail: String,
    allowlist: Vec<IpNet>,
    nats_servers: Vec<IpAddr>,
    max_bantime: Duration,
    limits: Limits,
    prefixes: Prefixes,
    escalation: Option<Escalation>,
    /// The operator keys whose key records and orders are taken.
    operators: OperatorKeys,
    require_signatures: bool,
    /// Origins already warned about for unsigned (or unknown-key) events.
    warned: HashSet<String>,
    /// The policy for events of federated sites.
    sites: Sites,
    /// `[subscriber]`'s intel keys.
    intel: shared_f2b::config::SubscriberConfig,
    /// The keys whose signatures count on intel orders: the operators' and `[trust]
    /// intel_keys`.
    intel_signers: OperatorKeys,
}

impl Admission {
    /// The rules of `config`; `nats_servers` are the addresses the configured servers resolve
    /// to, `operators` the operator keys `[trust]` names.
    pub fn new(config: &Config, nats_servers: Vec<IpAddr>, operators: OperatorKeys) -> Admission {
        let sub = &config.subscriber;
        Admission {
            prefix: config.nats.subject_prefix.clone(),
            stream: config.nats.stream.clone(),
            host_id: config.host_id.clone(),
            include_own: sub.include_own,
            jails: (!sub.jails.iter().any(|j| j == "*"))
                .then(|| sub.jails.iter().cloned().collect()),
            jail_map: sub.jail_map.clone(),
            target_jail: sub.target_jail.clone(),
            allowlist: sub.allowlist.clone(),
            nats_servers,
            max_bantime: sub.max_bantime,
            limits: Limits::new(sub),
            prefixes: Prefixes::new(sub),
            escalation: sub
                .escalation
                .clone()
                .map(|rules| Escalation::new(rules, sub.max_bantime)),
            operators,
            require_signatures: sub.require_signatures,
            warned: HashSet::new(),
            sites: Sites::default(),
            intel: sub.clone(),
            // Checked when the config was loaded.
            intel_signers: config.trust.intel_signers().unwrap_or_default(),
        }
    }

    /// The longest `source`'s intel orders are held; `None`: not applied here.
    fn intel_cap(&self, source: &str) -> Option<Duration> {
        self.intel.intel_cap(source)
    }

    /// With `sites` as the policy for federated sites' events (without: every one is refused
    /// as from an unknown site).
    pub fn with_sites(mut self, sites: Sites) -> Admission {
        self.sites = sites;
        self
    }

    /// The federated sites and their operator keys.
    pub fn sites(&self) -> &Sites {
        &self.sites
    }

    /// Whether an event's signature lets it through. Required: only a valid signature by a key
    /// an operator vouched for as the origin's, in force when it was made. Not required (one
    /// release, for sites moving to keys): unsigned events and keys not in the keyring pass
    /// with a warning once per origin, unless the origin has a key; a signature that does not
    /// verify or a revoked key is still refused, since only a forger makes those.
    /// `stored`: when the stream stored it (now for a live event).
    fn signature(
        &mut self,
        event: &Event,
        stored: Option<SystemTime>,
        verified: bool,
        state: &State,
    ) -> Option<Decision> {
        let error = state
            .keyring
            .check_verified(event, stored, verified)
            .err()?;
        // A host an operator gave a key signs: dropping the signature must not turn a refusal
        // into a warning.
        let lenient = matches!(error, SigError::Unsigned | SigError::UnknownKey)
            && !state.keyring.knows_host(&event.origin);
        if self.require_signatures || !lenient {
            return Some(drop(
                Reason::Signature(error),
                format!("event {} from {:?}: {error}", event.id, event.origin),
            ));
        }
        if self.warned.insert(event.origin.clone()) {
            tracing::warn!(origin = ?event.origin, reason = error.reason(),
                "applying events this host cannot verify (require_signatures = false); said once per origin");
        }
        None
    }

    /// Whether an order's signature lets it through (as [`Admission::signature`], against the
    /// operator keys).
    fn order_signature(&mut self, control: &Control) -> Option<Decision> {
        self.signed_by(control, false)
    }

    /// As [`Admission::order_signature`] for an intel or unlist order: an operator's key or
    /// one of `[trust] intel_keys` (which count for nothing else).
    fn intel_signature(&mut self, control: &Control) -> Option<Decision> {
        self.signed_by(control, true)
    }

    fn signed_by(&mut self, control: &Control, intel: bool) -> Option<Decision> {
        let keys = if intel {
            &self.intel_signers
        } else {
            &self.operators
        };
        let error = keys.check(control).err()?;
        let lenient = matches!(error, SigError::Unsigned | SigError::UnknownKey);
        if self.require_signatures || !lenient {
            return Some(drop(
                Reason::Signature(error),
                format!("order {} by {:?}: {error}", control.id, control.operator),
            ));
        }
        if self.warned.insert(format!("operator {}", control.operator)) {
            tracing::warn!(operator = ?control.operator, reason = error.reason(),
                "taking orders this host cannot verify (require_signatures = false); said once per operator");
        }
        None
    }

    /// An earlier ban from the archive's history, for escalation's repeat rule.
    pub fn remember(&mut self, ip: IpAddr, time: SystemTime, end: Option<SystemTime>) {
        if let Some(rules) = self.escalation.as_mut() {
            let end = end
                .unwrap_or(time + self.max_bantime)
                .min(time + self.max_bantime);
            rules.remember(self.prefixes.widen(ip.to_canonical()), time, end);
        }
    }

    /// Checks the signatures of a whole batch at once (ed25519 batch verification): for
    /// [`Admission::decide_verified`], which then checks only the key's owner and window.
    pub fn verify_batch(&self, batch: &[Incoming], state: &State) -> Vec<bool> {
        let events: Vec<Option<Event>> = batch
            .iter()
            .map(|m| {
                // Federated sites' events are checked against their own keyrings, one by one.
                let local = origin_prefix(&self.prefix, &m.subject).1.is_none();
                (local && !is_control(&self.prefix, &m.subject))
                    .then(|| decode_received(&self.prefix, &m.subject, &m.payload).ok())
                    .flatten()
            })
            .collect();
        let refs: Vec<Option<&Event>> = events.iter().map(Option::as_ref).collect();
        state.keyring.verify_all(&refs)
    }

    /// Decides about one message; records what it applies in `state` (in memory: the worker
    /// commits it after Fail2Ban took the batch).
    pub fn decide(&mut self, msg: &Incoming, state: &mut State, now: SystemTime) -> Decision {
        self.decide_verified(msg, state, now, false)
    }

    /// As [`Admission::decide`]; `verified`: [`Admission::verify_batch`] found its signature
    /// good.
    pub fn decide_verified(
        &mut self,
        msg: &Incoming,
        state: &mut State,
        now: SystemTime,
        verified: bool,
    ) -> Decision {
        let live = msg.source == Source::Live;
        if live && (msg.seq.is_none() || msg.stream.as_deref() != Some(self.stream.as_str())) {
            return drop(
                Reason::NotFromStream,
                format!("stream {:?}, sequence {:?}", msg.stream, msg.seq),
            );
        }
        if let (inner, Some(site)) = origin_prefix(&self.prefix, &msg.subject) {
            let (inner, site) = (inner.to_owned(), site.to_owned());
            return self.remote(msg, &site, &inner, state, now);
        }
        if is_control(&self.prefix, &msg.subject) {
            return self.order(msg, state, now);
        }
        let event = match decode_received(&self.prefix, &msg.subject, &msg.payload) {
            Ok(event) => event,
            Err(r) if r.reason == "spoofed_origin" => return drop(Reason::SpoofedOrigin, r.detail),
            Err(r) => return drop(Reason::Invalid(r.reason), r.detail),
        };
        if event.origin == self.host_id && !self.include_own {
            return drop(Reason::Own, "");
        }
        if let Some(skip) = self.followed_and_trusted(&event) {
            return skip;
        }
        // Checked on the time as signed, then clamped.
        let stored = if live { Some(now) } else { msg.stored };
        if let Some(refused) = self.signature(&event, stored, verified, state) {
            return refused;
        }
        self.admit(event, live, state, now)
    }

    /// Whether the event's jail is followed and its origin (`host`, or `host@site`) trusted.
    fn followed_and_trusted(&self, event: &Event) -> Option<Decision> {
        if self
            .jails
            .as_ref()
            .is_some_and(|j| !j.contains(&event.jail))
        {
            return Some(drop(Reason::NotFollowed, ""));
        }
        if !self.limits.trusts(&event.origin) {
            return Some(drop(Reason::Untrusted, "origin not in trusted_origins"));
        }
        None
    }

    /// The rest of the rules for an event whose origin and signature are settled.
    fn admit(
        &mut self,
        mut event: Event,
        live: bool,
        state: &mut State,
        now: SystemTime,
    ) -> Decision {
        event.clamp_time(now);
        // Older than max_bantime: no ban of that age is still held here, and the replay guard
        // has forgotten it.
        let too_old = crate::state::guard::id_time(event.id)
            .unwrap_or(event.time)
            .min(event.time)
            + self.max_bantime
            <= now;
        if too_old || (event.action == Action::Ban && event.expired_at(now)) {
            return drop(Reason::Expired, "");
        }
        if !state
            .guard
            .is_new(&event.origin, &event.jail, event.ip, event.id)
        {
            return drop(
                Reason::Replayed,
                format!("event {} is not newer than one applied", event.id),
            );
        }
        let jail = self
            .jail_map
            .get(&event.jail)
            .unwrap_or(&self.target_jail)
            .clone();
        match event.action {
            Action::Ban => self.ban(jail, event, live, state, now),
            Action::Unban => self.unban(jail, event, live, state, now),
        }
    }

    /// Why `net` must not be banned here, if it must not: it holds a protected address or a
    /// NATS server, or shares addresses with the local allowlist or an operator's pardon or
    /// allow in force.
    fn never_banned(&self, net: IpNet, state: &State, now: SystemTime) -> Option<Decision> {
        if is_protected(net.network()) || is_protected(net.broadcast()) {
            return Some(drop(Reason::Protected, format!("{net} is never banned")));
        }
        if self.nats_servers.iter().any(|s| net.contains(s)) {
            return Some(drop(
                Reason::NatsServer,
                format!("{net} holds a NATS server"),
            ));
        }
        if self.allowlist.iter().any(|a| overlap(a, &net)) {
            return Some(drop(
                Reason::Allowlisted,
                format!("{net} is in the allowlist"),
            ));
        }
        let order = state.standing.shield_net(net, now)?;
        let reason = match order.kind {
            ControlKind::Allow => Reason::Allowed,
            _ => Reason::Pardoned,
        };
        Some(drop(
            reason,
            format!(
                "{net}: {} {} by {:?}: {:?}",
                order.kind.as_str(),
                order.id,
                order.operator,
                order.reason
            ),
        ))
    }

    fn ban(
        &mut self,
        jail: String,
        event: Event,
        live: bool,
        state: &mut State,
        now: SystemTime,
    ) -> Decision {
        let ip = event.ip;
        if let Some(refused) = self.never_banned(host(ip), state, now) {
            return refused;
        }
        if let Some(site) = event.site.clone()
            && !self.site_quorum(ip, &site, now)
        {
            return drop(
                Reason::AwaitingSites,
                format!("{ip}: fewer than min_sites sites"),
            );
        }
        // A prefix that would cover something never banned: the address alone.
        let mut target = self.prefixes.widen(ip);
        if self.never_banned(target, state, now).is_some() {
            target = host(ip);
        }
        match self.limits.admit(&event, live, now) {
            Admit::Apply(mut until) => {
                let mut bantime = None;
                let escalated = self.escalation.as_mut().and_then(|rules| {
                    let held = until.map_or(self.max_bantime, |u| {
                        u.duration_since(event.time).unwrap_or_default()
                    });
                    // Not later than now: a fast clock at the origin cannot fake ended bans.
                    rules.assess(target, &event.origin, event.time.min(now), held.as_secs())
                });
                if let Some(e) = &escalated {
                    bantime = Some(e.bantime as i64);
                    until = Some(now.max(event.time) + Duration::from_secs(e.bantime));
                }
                state.ban(&jail, target, &event.origin, until);
                state.note(&event.origin, &event.jail, ip, event.id);
                let aggregate = self
                    .prefixes
                    .aggregate(target, &event.origin, now)
                    .filter(|net| self.never_banned(*net, state, now).is_none());
                if let Some(net) = aggregate {
                    state.ban(&jail, net, AGGREGATE_HOLDER, until);
                }
                Decision::Ban {
                    jail,
                    event,
                    target,
                    bantime,
                    escalated,
                    aggregate,
                }
            }
            Admit::Waiting => drop(Reason::AwaitingReporters, ""),
            Admit::RateLimited => drop(Reason::RateLimited, "over max_bans_per_minute"),
        }
    }

    fn unban(
        &mut self,
        jail: String,
        event: Event,
        live: bool,
        state: &mut State,
        now: SystemTime,
    ) -> Decision {
        if !self.limits.admit_unban(&event, live, now) {
            return drop(Reason::RateLimited, "over max_bans_per_minute");
        }
        state.note(&event.origin, &event.jail, event.ip, event.id);
        // Held as its prefix (`ipv6_prefix`), or as the address when the prefix was not allowed.
        let wide = self.prefixes.widen(event.ip);
        let mut target = wide;
        let mut outcome = state.unban(&jail, wide, &event.origin);
        if outcome == Unbanned::NotHeld && wide != host(event.ip) {
            target = host(event.ip);
            outcome = state.unban(&jail, event.ip, &event.origin);
        }
        match outcome {
            Unbanned::Lift => Decision::Unban {
                jail,
                target,
                event,
            },
            Unbanned::HeldByOthers => drop(Reason::HeldByOthers, ""),
            Unbanned::NotHeld => drop(Reason::NotHeld, ""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_f2b::event::parse_ip;
    use shared_f2b::subject::event_subject;

    const STREAM: &str = "F2B_EVENTS";

    fn config(extra: &str) -> Config {
        Config::parse(&format!(
            "host_id = \"bob\"\n[subscriber]\napply = \"ban\"\n\
             allowlist = [\"10.0.0.0/8\", \"2001:db8:1::/48\"]\n{extra}"
        ))
        .unwrap()
    }

    fn ev(action: Action, origin: &str, ip: &str, age: Duration) -> Event {
        Event::new(
            action,
            origin,
            "sshd",
            parse_ip(ip).unwrap(),
            SystemTime::now() - age,
            600,
            3,
        )
        .unwrap()
    }

    fn ban(origin: &str, ip: &str) -> Event {
        ev(Action::Ban, origin, ip, Duration::ZERO)
    }

    fn unban(origin: &str, ip: &str) -> Event {
        ev(Action::Unban, origin, ip, Duration::ZERO)
    }

    fn live(subject_host: &str, e: &Event) -> Incoming {
        Incoming {
            source: Source::Live,
            stored: None,
            seq: Some(1),
            stream: Some(STREAM.into()),
            subject: event_subject("f2b", e.action, &e.jail, subject_host).unwrap(),
            payload: e.encode().into(),
        }
    }

    struct Case {
        admission: Admission,
        state: State,
        _dir: tempfile::TempDir,
    }

    impl Case {
        fn new(extra: &str) -> Case {
            let dir = tempfile::tempdir().unwrap();
            let config = config(extra);
            let operators = config.trust.operator_keys().unwrap();
            Case {
                admission: Admission::new(&config, vec!["192.0.2.222".parse().unwrap()], operators),
                state: State::open(dir.path(), Duration::from_secs(30 * 86400)).unwrap(),
                _dir: dir,
            }
        }

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

        fn order(&mut self, operator_token: &str, c: &Control) -> &'static str {
            let msg = Incoming {
                source: Source::Live,
                stored: None,
                seq: Some(1),
                stream: Some(STREAM.into()),
                subject: shared_f2b::subject::control_subject("f2b", c.kind, operator_token)
                    .unwrap(),
                payload: c.encode().into(),
            };
            self.decide(&msg)
        }

        fn event(&mut self, e: &Event) -> &'static str {
            self.decide(&live(&e.origin.clone(), e))
        }
    }

    #[test]
    fn operators_orders_lift_shield_ban_and_end() {
        use shared_f2b::control::parse_net;
        let mut case = Case::new("");
        assert_eq!(case.event(&ban("alice", "192.0.2.50")), "ban");
        assert_eq!(case.event(&ban("charlie", "192.0.2.50")), "ban");
        let pardon = Control::pardon(
            "admin",
            parse_net("192.0.2.0/24").unwrap(),
            Some(Duration::from_secs(60)),
            "partner",
        )
        .unwrap();
        assert_eq!(case.order("mallory", &pardon), "spoofed_origin");
        assert_eq!(case.order("admin", &pardon), "lift");
        assert!(case.state.holdings.is_empty(), "whoever held it");
        assert_eq!(case.order("admin", &pardon), "replayed");
        assert_eq!(case.event(&ban("alice", "192.0.2.51")), "pardoned");
        assert_eq!(case.event(&ban("alice", "192.0.3.51")), "ban");
        let op_ban = Control::ban("admin", "192.0.2.52".parse().unwrap(), 600, "scanner").unwrap();
        assert_eq!(case.order("admin", &op_ban), "pardoned", "the pardon wins");
        let revoke = Control::revoke("admin", pardon.id, "done").unwrap();
        assert_eq!(case.order("admin", &revoke), "ended");
        assert_eq!(case.order("admin", &revoke), "revokes_nothing");
        assert_eq!(
            case.order("admin", &pardon),
            "replayed",
            "a replay cannot revive it"
        );
        assert_eq!(case.event(&ban("alice", "192.0.2.53")), "ban");
        let op_ban = Control::ban("admin", "192.0.2.54".parse().unwrap(), 600, "scanner").unwrap();
        match case
            .admission
            .decide(&live_order(&op_ban), &mut case.state, SystemTime::now())
        {
            Decision::Ban { bantime, event, .. } => {
                assert_eq!(bantime, Some(600));
                assert_eq!(event.origin, "operator admin");
            }
            other => panic!("{other:?}"),
        }
        let unban_by_host = ev(Action::Unban, "alice", "192.0.2.54", Duration::ZERO);
        assert_eq!(
            case.event(&unban_by_host),
            "not_held",
            "a host cannot lift it"
        );
        let allow =
            Control::allow("admin", parse_net("10.9.0.0/16").unwrap(), None, "vpn").unwrap();
        assert_eq!(case.order("admin", &allow), "lift");
        assert_eq!(
            case.event(&ban("alice", "10.9.1.1")),
            "allowlisted",
            "local list first"
        );
        let allow6 =
            Control::allow("admin", parse_net("2001:db8:9::/48").unwrap(), None, "v6").unwrap();
        assert_eq!(case.order("admin", &allow6), "lift");
        assert_eq!(case.event(&ban("alice", "2001:db8:9::1")), "allowed");
    }

    #[test]
    fn prefixes_widen_aggregate_and_stop_short_of_what_is_never_banned() {
        let mut case = Case::new("ipv6_prefix = 64\naggregate_count = 3");
        let now = SystemTime::now();
        let decide = |case: &mut Case, e: &Event| match case.admission.decide(
            &live(&e.origin.clone(), e),
            &mut case.state,
            now,
        ) {
            Decision::Ban {
                target, aggregate, ..
            } => format!("{target} {aggregate:?}"),
            Decision::Unban { target, .. } => format!("unban {target}"),
            Decision::Drop { reason, .. } => reason.label().to_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            decide(&mut case, &ban("alice", "2001:db8:5:6::1")),
            "2001:db8:5:6::/64 None"
        );
        assert_eq!(
            decide(&mut case, &unban("alice", "2001:db8:5:6::1")),
            "unban 2001:db8:5:6::/64"
        );
        // The allowlist holds 2001:db8:1::/48: a /64 in it is never banned, nor its addresses.
        assert_eq!(
            decide(&mut case, &ban("alice", "2001:db8:1:1::9")),
            "allowlisted"
        );
        // The NATS server 192.0.2.222 is in 192.0.2.0/24: that prefix is never aggregated.
        for ip in ["192.0.2.1", "192.0.2.2"] {
            assert_eq!(
                decide(&mut case, &ban("alice", ip)),
                format!("{ip}/32 None")
            );
        }
        assert_eq!(
            decide(&mut case, &ban("alice", "192.0.2.3")),
            "192.0.2.3/32 None"
        );
        for ip in ["198.51.100.1", "198.51.100.2"] {
            assert_eq!(
                decide(&mut case, &ban("alice", ip)),
                format!("{ip}/32 None")
            );
        }
        assert_eq!(
            decide(&mut case, &ban("alice", "198.51.100.3")),
            "198.51.100.3/32 None",
            "one origin alone"
        );
        assert_eq!(
            decide(&mut case, &ban("charlie", "198.51.100.4")),
            "198.51.100.4/32 Some(198.51.100.0/24)"
        );
    }

    fn live_order(c: &Control) -> Incoming {
        Incoming {
            source: Source::Live,
            stored: None,
            seq: Some(1),
            stream: Some(STREAM.into()),
            subject: shared_f2b::subject::control_subject("f2b", c.kind, &c.operator).unwrap(),
            payload: c.encode().into(),
        }
    }

    #[test]
    fn each_rule_as_a_table() {
        let old = Duration::from_secs(601);
        let mut header_less = live("alice", &ban("alice", "192.0.2.3"));
        header_less.seq = None;
        let mut other_stream = live("alice", &ban("alice", "192.0.2.3"));
        other_stream.stream = Some("OTHER".into());
        let mut replayed_source = live("alice", &ban("alice", "192.0.2.4"));
        replayed_source.source = Source::Replay;
        replayed_source.seq = None;
        let mut garbage = live("alice", &ban("alice", "192.0.2.3"));
        garbage.payload = b"{\"stream\":\"F2B_EVENTS\",\"seq\":7}".to_vec().into();
        let table: Vec<(&str, Incoming, &str)> = vec![
            (
                "a ban from another host",
                live("alice", &ban("alice", "192.0.2.1")),
                "ban",
            ),
            ("no stream headers", header_less, "not_from_stream"),
            ("another stream", other_stream, "not_from_stream"),
            ("a replayed page needs no headers", replayed_source, "ban"),
            ("a publish ack on the live subject", garbage, "malformed"),
            (
                "payload names alice, subject mallory",
                live("mallory", &ban("alice", "192.0.2.5")),
                "spoofed_origin",
            ),
            ("own event", live("bob", &ban("bob", "192.0.2.6")), "own"),
            (
                "expired ban",
                live("alice", &ev(Action::Ban, "alice", "192.0.2.7", old)),
                "expired",
            ),
            (
                "loopback",
                live("alice", &ban("alice", "127.0.0.1")),
                "protected_address",
            ),
            (
                "link-local v6",
                live("alice", &ban("alice", "fe80::1")),
                "protected_address",
            ),
            (
                "a NATS server",
                live("alice", &ban("alice", "192.0.2.222")),
                "nats_server",
            ),
            (
                "allowlisted v4",
                live("alice", &ban("alice", "10.1.2.3")),
                "allowlisted",
            ),
            (
                "allowlisted v6",
                live("alice", &ban("alice", "2001:db8:1::5")),
                "allowlisted",
            ),
            (
                "outside the allowlist",
                live("alice", &ban("alice", "2001:db8:2::5")),
                "ban",
            ),
            (
                "an unban nobody here holds",
                live("alice", &unban("alice", "192.0.2.99")),
                "not_held",
            ),
        ];
        let mut case = Case::new("");
        for (what, msg, want) in table {
            assert_eq!(case.decide(&msg), want, "{what}");
        }
    }

    #[test]
    fn replays_and_stale_unbans_change_nothing_even_after_a_restart() {
        let mut case = Case::new("");
        let first = ban("alice", "192.0.2.1");
        let lift = unban("alice", "192.0.2.1");
        assert_eq!(case.event(&first), "ban");
        assert_eq!(case.event(&first), "replayed", "the same ban again");
        assert_eq!(case.event(&lift), "unban");
        assert_eq!(case.event(&first), "replayed", "the lifted ban re-injected");
        let again = ban("alice", "192.0.2.1");
        assert_eq!(case.event(&again), "ban", "a new ban after the unban");
        assert_eq!(
            case.event(&lift),
            "replayed",
            "the old unban must not lift the new ban"
        );
        case.state.commit().unwrap();
        // After a restart the journal still knows.
        let dir = case._dir.path().to_owned();
        let mut state = State::open(&dir, Duration::from_secs(86400)).unwrap();
        let decision = case
            .admission
            .decide(&live("alice", &first), &mut state, SystemTime::now());
        assert!(matches!(
            decision,
            Decision::Drop {
                reason: Reason::Replayed,
                ..
            }
        ));
    }

    #[test]
    fn unbans_lift_only_what_this_origin_alone_holds() {
        let mut case = Case::new("");
        assert_eq!(case.event(&ban("alice", "192.0.2.1")), "ban");
        assert_eq!(case.event(&ban("charlie", "192.0.2.1")), "ban");
        assert_eq!(case.event(&unban("mallory", "192.0.2.1")), "not_held");
        assert_eq!(case.event(&unban("alice", "192.0.2.1")), "held_by_others");
        assert_eq!(case.event(&unban("charlie", "192.0.2.1")), "unban");
        assert_eq!(
            case.event(&unban("alice", "203.0.113.1")),
            "not_held",
            "a manual ban"
        );
    }

    #[test]
    fn rates_jails_and_trust() {
        let mut case = Case::new("max_bans_per_minute = 2\njails = [\"nginx\"]");
        assert_eq!(case.event(&ban("alice", "192.0.2.1")), "not_followed");
        let mut case = Case::new("max_bans_per_minute = 2\ntrusted_origins = [\"alice\"]");
        assert_eq!(case.event(&ban("mallory", "192.0.2.1")), "untrusted_origin");
        assert_eq!(case.event(&ban("alice", "192.0.2.1")), "ban");
        assert_eq!(case.event(&unban("alice", "192.0.2.1")), "unban");
        assert_eq!(
            case.event(&unban("alice", "192.0.2.2")),
            "rate_limited",
            "unbans count"
        );
        assert_eq!(case.event(&ban("alice", "192.0.2.3")), "rate_limited");
        let mut case = Case::new("min_reporters = 2");
        assert_eq!(case.event(&ban("alice", "192.0.2.1")), "awaiting_reporters");
        assert_eq!(case.event(&ban("charlie", "192.0.2.1")), "ban");
    }

    #[test]
    fn a_clock_running_ahead_cannot_stretch_a_ban() {
        let mut case = Case::new("");
        let mut future = ban("alice", "192.0.2.1");
        future.time = SystemTime::now() + Duration::from_secs(3600);
        match case
            .admission
            .decide(&live("alice", &future), &mut case.state, SystemTime::now())
        {
            Decision::Ban { event, .. } => assert!(event.time <= SystemTime::now()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn signatures_decide_when_required_and_only_forgeries_are_refused_otherwise() {
        use shared_f2b::signing::Signer;
        let op = Signer::generate();
        let alice = Signer::generate();
        let trust = format!("[trust]\noperator_keys = [{:?}]\n", op.public_key());
        let mut strict = Case::new(&format!("require_signatures = true\n{trust}"));
        let mut lenient = Case::new(&trust);
        let unsigned = ban("alice", "198.51.100.1");
        assert_eq!(strict.event(&unsigned), "unsigned");
        assert_eq!(lenient.event(&unsigned), "ban");
        let mut early = ban("alice", "198.51.100.2");
        alice.sign_event(&mut early);
        assert_eq!(strict.event(&early), "unknown_key");

        let mut record = Control::key_record(
            "admin",
            "alice",
            alice.public_key(),
            SystemTime::now() - Duration::from_secs(60),
            None,
            "host add",
        )
        .unwrap();
        let mut stranger = record.clone();
        Signer::generate().sign_control(&mut stranger);
        assert_eq!(strict.order("admin", &stranger), "unknown_key");
        assert_eq!(lenient.order("admin", &stranger), "unknown_key");
        op.sign_control(&mut record);
        assert_eq!(strict.order("admin", &record), "keyed");
        assert_eq!(lenient.order("admin", &record), "keyed");
        assert_eq!(strict.order("admin", &record), "replayed");

        let mut signed = ban("alice", "198.51.100.3");
        alice.sign_event(&mut signed);
        assert_eq!(strict.event(&signed), "ban");
        let mut altered = signed.clone();
        altered.ip = parse_ip("198.51.100.4").unwrap();
        assert_eq!(strict.event(&altered), "bad_signature");
        assert_eq!(lenient.event(&altered), "bad_signature");
        assert_eq!(lenient.event(&ban("alice", "198.51.100.6")), "unsigned");
        let mut carol = ban("carol", "198.51.100.5");
        alice.sign_event(&mut carol);
        assert_eq!(strict.event(&carol), "unknown_key");

        let pardon = Control::pardon(
            "admin",
            shared_f2b::control::parse_net("198.51.100.9").unwrap(),
            None,
            "x",
        )
        .unwrap();
        assert_eq!(strict.order("admin", &pardon), "unsigned");
        let mut signed_pardon = pardon.clone();
        op.sign_control(&mut signed_pardon);
        assert_eq!(strict.order("admin", &signed_pardon), "lift");
    }
}
