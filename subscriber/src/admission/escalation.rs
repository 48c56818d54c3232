//! Fleet-wide bantime escalation (`[subscriber.escalation]`, `ban` mode): an address that at
//! least `reporters` distinct origins banned within `window` gets `bantime`; an address banned
//! again after its last ban ended gets its bantime multiplied by `repeat_factor` once per earlier
//! ban within `memory` (like Fail2Ban's `bantime.increment`, but counting what every host
//! reported; a new host learns the earlier bans from the archive). Both capped at the rule's
//! `max_bantime` and the subscriber's. Keyed by the banned net, so an IPv6 attacker rotating
//! through its /64 (with `ipv6_prefix`) is one offender.

use ipnet::IpNet;
use shared_f2b::config::EscalationConfig;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Most offenders remembered.
const MAX_OFFENDERS: usize = 1_000_000;

/// Which rule lengthened a ban (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Reporters,
    Repeat,
}

impl Rule {
    pub fn label(self) -> &'static str {
        match self {
            Rule::Reporters => "reporters",
            Rule::Repeat => "repeat",
        }
    }
}

/// A lengthened ban.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalated {
    pub rule: Rule,
    /// The bantime the ticket gets, in seconds.
    pub bantime: u64,
    /// Earlier bans of the address (the repeat rule), or distinct reporters (the other).
    pub count: usize,
}

/// One offender's record.
#[derive(Debug, Default)]
struct Record {
    /// Distinct origins' recent reports.
    reports: Vec<(String, SystemTime)>,
    /// Ends of earlier bans (one per ban, not per report), newest last.
    ended: Vec<SystemTime>,
    /// When the ban in force now ends (it counts as an earlier ban once it has ended).
    current_end: Option<SystemTime>,
}

/// The rules and the offenders' records.
pub struct Escalation {
    rules: EscalationConfig,
    cap: Duration,
    offenders: HashMap<IpNet, Record>,
    checks: u64,
}

impl Escalation {
    /// The rules, capped at the subscriber's `max_bantime`.
    pub fn new(rules: EscalationConfig, max_bantime: Duration) -> Escalation {
        let cap = rules.max_bantime.min(max_bantime);
        Escalation {
            rules,
            cap,
            offenders: HashMap::new(),
            checks: 0,
        }
    }

    /// A ban learnt from the archive's history (a new host): it counts as an earlier ban once it
    /// has ended.
    pub fn remember(&mut self, target: IpNet, time: SystemTime, end: SystemTime) {
        if !self.room_for(target, time) {
            return;
        }
        let record = self.offenders.entry(target).or_default();
        Self::roll(record, time);
        match record.current_end {
            Some(e) if time <= e => record.current_end = Some(e.max(end)),
            _ => record.current_end = Some(end),
        }
    }

    /// Moves a ban that ended before `now` into the earlier ones.
    fn roll(record: &mut Record, now: SystemTime) {
        if let Some(end) = record.current_end
            && end <= now
        {
            record.ended.push(end);
            record.current_end = None;
        }
    }

    /// Takes a ban of `target` by `origin` at `time` with `bantime` seconds into account;
    /// returns the longer bantime when a rule applies.
    pub fn assess(
        &mut self,
        target: IpNet,
        origin: &str,
        time: SystemTime,
        bantime: u64,
    ) -> Option<Escalated> {
        self.checks += 1;
        if self.checks.is_multiple_of(4096) {
            self.forget(time);
        }
        if !self.room_for(target, time) {
            return None;
        }
        let rules = &self.rules;
        let record = self.offenders.entry(target).or_default();
        Self::roll(record, time);
        let memory = rules.memory;
        record.ended.retain(|e| *e + memory > time);
        let window = rules.window;
        record
            .reports
            .retain(|(o, t)| *t + window > time && o != origin);
        record.reports.push((origin.to_owned(), time));

        let mut best: Option<Escalated> = None;
        if rules.reporters > 0 && record.reports.len() >= rules.reporters {
            best = Some(Escalated {
                rule: Rule::Reporters,
                bantime: rules.bantime.as_secs(),
                count: record.reports.len(),
            });
        }
        let earlier = record.ended.len();
        if rules.repeat_factor > 1.0 && earlier > 0 {
            let base = best.as_ref().map_or(bantime, |b| b.bantime.max(bantime)) as f64;
            let longer = base * rules.repeat_factor.powi(earlier.min(64) as i32);
            best = Some(Escalated {
                rule: Rule::Repeat,
                bantime: longer.min(u64::MAX as f64 / 2.0) as u64,
                count: earlier,
            });
        }
        let cap = self.cap.as_secs();
        let escalated = best
            .map(|b| Escalated {
                bantime: b.bantime.min(cap),
                ..b
            })
            .filter(|b| b.bantime > bantime);
        let applied = escalated.as_ref().map_or(bantime, |b| b.bantime);
        let end = time + Duration::from_secs(applied);
        record.current_end = Some(record.current_end.map_or(end, |e| e.max(end)));
        escalated
    }

    /// Forgets what is known of the offenders in `net` (an operator pardoned or allowed it: its
    /// earlier bans were mistakes, not offences).
    pub fn pardon(&mut self, net: IpNet) {
        self.offenders
            .retain(|target, _| !shared_f2b::control::overlap(target, &net));
    }

    /// Whether `target` has a record or one can be added: at most [`MAX_OFFENDERS`] are kept
    /// (a flood of bans must not grow the subscriber without bound); when full, what has
    /// nothing recent is forgotten first, and new offenders are not escalated until there is
    /// room.
    fn room_for(&mut self, target: IpNet, now: SystemTime) -> bool {
        if self.offenders.len() < MAX_OFFENDERS || self.offenders.contains_key(&target) {
            return true;
        }
        self.forget(now);
        self.offenders.len() < MAX_OFFENDERS
    }

    /// Forgets offenders with nothing recent.
    fn forget(&mut self, now: SystemTime) {
        let (memory, window) = (self.rules.memory, self.rules.window);
        self.offenders.retain(|_, r| {
            r.ended.retain(|e| *e + memory > now);
            r.reports.retain(|(_, t)| *t + window > now);
            !r.ended.is_empty() || !r.reports.is_empty() || r.current_end.is_some_and(|e| e > now)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(reporters: usize, factor: f64) -> Escalation {
        Escalation::new(
            EscalationConfig {
                reporters,
                window: Duration::from_secs(3600),
                bantime: Duration::from_secs(86_400),
                repeat_factor: factor,
                max_bantime: Duration::from_secs(7 * 86_400),
                memory: Duration::from_secs(30 * 86_400),
            },
            Duration::from_secs(30 * 86_400),
        )
    }

    fn net(text: &str) -> IpNet {
        text.parse()
            .unwrap_or_else(|_| IpNet::from(text.parse::<std::net::IpAddr>().unwrap()))
    }

    #[test]
    fn many_reporters_within_the_window_lengthen_the_ban() {
        let mut e = rules(3, 1.0);
        let t = SystemTime::now();
        let ip = net("192.0.2.1");
        assert_eq!(e.assess(ip, "alice", t, 600), None);
        assert_eq!(
            e.assess(ip, "alice", t, 600),
            None,
            "one origin counts once"
        );
        assert_eq!(e.assess(ip, "bob", t, 600), None);
        let got = e.assess(ip, "charlie", t, 600).unwrap();
        assert_eq!(
            (got.rule, got.bantime, got.count),
            (Rule::Reporters, 86_400, 3)
        );
        let late = t + Duration::from_secs(3601);
        assert_eq!(e.assess(net("192.0.2.2"), "dave", late, 600), None);
    }

    #[test]
    fn a_returning_address_gets_its_bantime_multiplied_up_to_the_cap() {
        let mut e = rules(0, 2.0);
        let t = SystemTime::now();
        let ip = net("2001:db8:1:2::/64");
        assert_eq!(e.assess(ip, "alice", t, 600), None, "first ban");
        let during = t + Duration::from_secs(300);
        assert_eq!(
            e.assess(ip, "bob", during, 600),
            None,
            "same ban, not a repeat"
        );
        let again = t + Duration::from_secs(1200);
        let got = e.assess(ip, "bob", again, 600).unwrap();
        assert_eq!((got.rule, got.bantime, got.count), (Rule::Repeat, 1200, 1));
        let third = again + Duration::from_secs(1201);
        assert_eq!(e.assess(ip, "alice", third, 600).unwrap().bantime, 2400);
        let mut long = rules(0, 10_000.0);
        long.remember(ip, t, t + Duration::from_secs(1));
        let capped = long
            .assess(ip, "a", t + Duration::from_secs(2), 600)
            .unwrap();
        assert_eq!(capped.bantime, 7 * 86_400, "the rule's cap");
    }
}
