//! The blocklist: the addresses banned now, as the feeds (`/v1/blocklist`) and `export` give
//! them to firewalls, Zeek and other sites.
//!
//! An address is on it while a host's ban of it is active (not expired, not unbanned by that
//! host, not pardoned or allowed by an operator since) or an operator's ban of it is in force,
//! and no pardon or allow in force covers it — what the subscribers apply.
//!
//! [`Snapshot`] holds that state in memory up to one stream sequence of the archive (its
//! high-water mark): loaded once, then brought forward with only the events and orders
//! archived since, so that a request costs a look at the mark while nothing new arrived. Time
//! alone only takes entries off (bans expire, orders end), which [`Snapshot::list`] applies as
//! it lists.

use crate::db::Db;
use crate::query::{self, Stored, StoredControl};
use crate::store::ms;
use ipnet::IpNet;
use shared_f2b::control::{Control, ControlKind, overlap};
use shared_f2b::event::{Action, validate_jail};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub mod format;

/// The source of [`Snapshot`] generations.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// Rows read per query while loading.
const PAGE: usize = 10_000;
/// After this long a snapshot is loaded afresh (rows changed behind its mark: retention).
const MAX_AGE: Duration = Duration::from_secs(600);
/// More new rows than this since the mark: load afresh rather than apply them one by one.
const MAX_DELTA: u64 = 50_000;

/// A list filter's value that is not one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadFilter {
    #[error("family {0:?}: use 4 or 6")]
    Family(String),
    #[error("jail: {0}")]
    Jail(shared_f2b::event::EventError),
    #[error("min_reporters {0}: use 1 to 1000")]
    MinReporters(usize),
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// `4` or `6`.
    pub fn parse(text: &str) -> Result<Family, BadFilter> {
        match text {
            "4" => Ok(Family::V4),
            "6" => Ok(Family::V6),
            _ => Err(BadFilter::Family(text.to_owned())),
        }
    }

    fn holds(self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

/// Which active bans a list wants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Only bans from this jail (an operator's ban has none).
    pub jail: Option<String>,
    /// Only addresses at least this many hosts banned; an operator's ban always counts.
    pub min_reporters: usize,
    pub family: Option<Family>,
    /// Whether the addresses intake sources list (`[[archiver.intake]]`) are on it.
    pub intel: bool,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            jail: None,
            min_reporters: 1,
            family: None,
            intel: true,
        }
    }
}

impl Filter {
    /// Checks the values a request or the command line gave.
    pub fn check(&self) -> Result<(), BadFilter> {
        if let Some(jail) = &self.jail {
            validate_jail(jail).map_err(BadFilter::Jail)?;
        }
        if !(1..=1000).contains(&self.min_reporters) {
            return Err(BadFilter::MinReporters(self.min_reporters));
        }
        Ok(())
    }
}

/// One address on the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub ip: IpAddr,
    /// How many hosts ban it now (for `export --all`: how many ban events named it).
    pub reporters: usize,
    /// Their jails, sorted.
    pub jails: Vec<String>,
    /// The operator who banned it, when one did.
    pub operator: Option<String>,
    /// The intake source that lists it, when one does (and no host or operator bans it).
    pub source: Option<String>,
    /// When its last ban ends; `None`: permanent.
    pub expires: Option<SystemTime>,
    /// The hosts banning it now, in the order they did (empty for `export --all`).
    pub origins: Vec<String>,
    /// When the first and the last of the bans active now were made (an operator's ban: when
    /// it was ordered); `None` for `export --all`.
    pub first_seen: Option<SystemTime>,
    pub last_seen: Option<SystemTime>,
}

impl Listed {
    /// An address with only a count (`export --all`).
    pub fn counted(ip: IpAddr, count: usize) -> Listed {
        Listed {
            ip,
            reporters: count,
            jails: Vec::new(),
            operator: None,
            source: None,
            expires: None,
            origins: Vec::new(),
            first_seen: None,
            last_seen: None,
        }
    }
}

/// The highest stream sequence the archive holds (events and control events share the
/// stream's sequence): what `export` loads up to. The daemon uses the archiver consumer's ack
/// floor instead, below which every row is committed ([`crate::consumer::committed`]).
pub async fn archived_seq(db: &Db) -> Result<u64, sqlx::Error> {
    Ok(query::max_seq(db)
        .await?
        .max(query::max_control_seq(db).await?))
}

/// What a feed never lists: `[archiver] feed_allowlist` and the site's NATS servers (a host
/// must not get a firewall to cut the hosts off from them), besides what [`never_listed`]
/// always leaves out.
pub async fn never_nets(config: &shared_f2b::Config) -> Vec<IpNet> {
    let mut nets = config.archiver.feed_allowlist.clone();
    nets.extend(
        shared_f2b::nats::server_addresses(&config.nats.servers)
            .await
            .into_iter()
            .map(shared_f2b::control::host_net),
    );
    nets
}

/// A host's bans of an address in one jail, as held: by whom, in which jail, and each ban in
/// force (when it was made and when it ends, ms; `None` permanent).
#[derive(Debug, Clone)]
struct Held {
    origin: String,
    jail: String,
    bans: Vec<Ban>,
}

/// One ban of a [`Held`].
#[derive(Debug, Clone, Copy)]
struct Ban {
    made_ms: i64,
    expires_ms: Option<i64>,
}

/// The most bans kept per [`Held`] (a host banning an address over and over): beyond, the one
/// ending first is forgotten.
const BANS_HELD: usize = 8;

impl Held {
    /// When the last of its bans ends.
    fn expires_ms(&self) -> Option<i64> {
        self.bans
            .iter()
            .map(|b| b.expires_ms)
            .reduce(later)
            .flatten()
    }

    /// Takes a new ban, forgetting those that had ended before it was made.
    fn add(&mut self, ban: Ban) {
        self.bans.retain(|b| in_force_at(b.expires_ms, ban.made_ms));
        self.bans.push(ban);
        if self.bans.len() > BANS_HELD {
            let soonest = (0..self.bans.len())
                .min_by_key(|i| (self.bans[*i].expires_ms.is_none(), self.bans[*i].expires_ms))
                .expect("not empty");
            self.bans.remove(soonest);
        }
    }
}

/// An operator's order in force (pardon, allow or ban).
#[derive(Debug, Clone)]
struct Order {
    control: Control,
    until_ms: Option<i64>,
}

/// The archive's bans and orders up to one stream sequence (its mark).
#[derive(Debug)]
pub struct Snapshot {
    mark: u64,
    loaded: Instant,
    /// New with every load and every change (unique in the process), so that what was
    /// rendered from it can tell it is stale.
    generation: u64,
    bans: BTreeMap<IpAddr, Vec<Held>>,
    orders: Vec<Order>,
    /// Nets never listed ([`never_nets`]).
    never: Vec<IpNet>,
    /// The longest a host's ban is listed (`[archiver] feed_max_bantime`).
    max_bantime: Duration,
}

fn opt_ms(t: Option<SystemTime>) -> Option<i64> {
    t.map(ms)
}

/// Whether a ban ending at `end` (ms; `None` never) is still in force at `at`.
fn in_force_at(end: Option<i64>, at: i64) -> bool {
    end.is_none_or(|end| end > at)
}

/// A ban's end: the later of two (`None`, permanent, outlasts any).
fn later(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.zip(b).map(|(a, b)| a.max(b))
}

impl Snapshot {
    /// Loads the active bans and the orders in force archived up to stream sequence `upto`;
    /// nothing in `never` is ever listed, no host's ban longer than `max_bantime`.
    pub async fn load(
        db: &Db,
        never: &[IpNet],
        max_bantime: Duration,
        upto: u64,
    ) -> Result<Snapshot, sqlx::Error> {
        let now = SystemTime::now();
        let all = ["*".to_owned()];
        let mut snapshot = Snapshot {
            mark: upto,
            loaded: Instant::now(),
            generation: next_generation(),
            bans: BTreeMap::new(),
            orders: Vec::new(),
            never: never.to_vec(),
            max_bantime,
        };
        let mut after = 0;
        loop {
            let page = query::active_page(db, now, &all, None, after, upto, PAGE).await?;
            after = page.last().map_or(after, |s| s.row_id);
            let done = page.len() < PAGE;
            page.iter().for_each(|s| snapshot.hold(s));
            if done {
                break;
            }
        }
        let mut after = 0;
        loop {
            let page = query::controls_page(db, now, after, upto, PAGE, true).await?;
            after = page.last().map_or(after, |s| s.row_id);
            let done = page.len() < PAGE;
            // As they stand now: the bans they lifted are already left out above (and those
            // that came after them, which they shield, are kept for when they end).
            page.into_iter()
                .for_each(|s| snapshot.push_order(s.control));
            if done {
                break;
            }
        }
        Ok(snapshot)
    }

    /// Brings it to stream sequence `upto` with the rows archived since its mark; `false`
    /// when it is better loaded afresh (too old, too far behind).
    pub async fn refresh(&mut self, db: &Db, upto: u64) -> Result<bool, sqlx::Error> {
        if upto <= self.mark {
            // Nothing new (or read before another request moved it on).
            return Ok(self.loaded.elapsed() < MAX_AGE);
        }
        if upto - self.mark > MAX_DELTA || self.loaded.elapsed() >= MAX_AGE {
            return Ok(false);
        }
        let limit = MAX_DELTA as usize;
        let events = query::events_between(db, self.mark, upto, limit).await?;
        let controls = query::controls_after(db, self.mark, upto, limit).await?;
        self.apply(events, controls);
        self.mark = upto;
        Ok(true)
    }

    /// Applies events and control events in stream order (they share the stream's sequence).
    fn apply(&mut self, events: Vec<Stored>, controls: Vec<StoredControl>) {
        let mut events = events.into_iter().peekable();
        let mut controls = controls.into_iter().peekable();
        loop {
            let event_first = match (events.peek(), controls.peek()) {
                (Some(e), Some(c)) => e.seq < c.seq,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if event_first {
                let s = events.next().expect("peeked");
                match s.event.action {
                    Action::Ban => self.hold(&s),
                    Action::Unban => self.release(&s),
                }
            } else {
                let c = controls.next().expect("peeked");
                self.order(c.control);
            }
        }
        self.generation = next_generation();
    }

    fn hold(&mut self, s: &Stored) {
        let e = &s.event;
        // As ingest takes it now: a time stamped far ahead of its arrival counts from then;
        // and, like a subscriber, no host's ban lasts longer than `max_bantime` (a permanent
        // one included).
        let mut clamped = e.clone();
        clamped.clamp_time(s.received);
        let cap = ms(clamped.time) + self.max_bantime.as_millis() as i64;
        let expires_ms = Some(opt_ms(clamped.expires()).map_or(cap, |end| end.min(cap)));
        let ban = Ban {
            made_ms: ms(clamped.time),
            expires_ms,
        };
        let held = self.bans.entry(e.ip).or_default();
        match held
            .iter_mut()
            .find(|h| h.origin == e.who() && h.jail == e.jail)
        {
            Some(h) => h.add(ban),
            None => held.push(Held {
                origin: e.who(),
                jail: e.jail.clone(),
                bans: vec![ban],
            }),
        }
    }

    /// A host's unban ends its ban of the address in that jail.
    fn release(&mut self, s: &Stored) {
        let e = &s.event;
        if let Some(held) = self.bans.get_mut(&e.ip) {
            held.retain(|h| !(h.origin == e.who() && h.jail == e.jail));
            if held.is_empty() {
                self.bans.remove(&e.ip);
            }
        }
    }

    /// Takes an order: a pardon or allow ends the bans it covers (they stay lifted after it
    /// ends, as on the hosts); a revoke ends the order it names.
    fn order(&mut self, control: Control) {
        match control.kind {
            ControlKind::Revoke => {
                self.orders
                    .retain(|o| Some(o.control.id) != control.revokes);
            }
            ControlKind::Pardon | ControlKind::Allow => {
                if let Some(net) = control.net {
                    self.bans.retain(|ip, _| !net.contains(&ip.to_canonical()));
                    // An operator's ban it covers ends too (and stays ended after it).
                    self.orders.retain(|o| {
                        o.control
                            .ban_ip()
                            .is_none_or(|ip| !net.contains(&ip.to_canonical()))
                    });
                    // So does an intake source's listing it shares addresses with.
                    self.orders.retain(|o| {
                        o.control.kind != ControlKind::Intel
                            || o.control.net.is_none_or(|n| !overlap(&n, &net))
                    });
                }
                self.push_order(control);
            }
            ControlKind::Ban => self.push_order(control),
            // A source's new listing of a net replaces its earlier one; an unlist ends it.
            ControlKind::Intel | ControlKind::Unlist => {
                self.orders.retain(|o| {
                    o.control.kind != ControlKind::Intel
                        || o.control.operator != control.operator
                        || o.control.net != control.net
                });
                if control.kind == ControlKind::Intel {
                    self.push_order(control);
                }
            }
            // A key record bans nothing.
            ControlKind::Key => {}
        }
    }

    fn push_order(&mut self, control: Control) {
        if self.orders.iter().any(|o| o.control.id == control.id) {
            return;
        }
        let until_ms = opt_ms(control.until);
        self.orders.push(Order { control, until_ms });
    }

    /// Whether it holds the archive up to `upto` and is young enough: [`Snapshot::refresh`]
    /// would not read the database.
    pub fn holds(&self, upto: u64) -> bool {
        upto <= self.mark && self.loaded.elapsed() < MAX_AGE
    }

    /// Changes with every change applied.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The operators' orders in force at `now` that cover `ip` (pardons, allows, bans).
    pub fn orders_covering(&self, ip: IpAddr, now: SystemTime) -> Vec<&Control> {
        let now_ms = ms(now);
        let ip = ip.to_canonical();
        self.orders
            .iter()
            .filter(|o| o.until_ms.is_none_or(|end| end > now_ms))
            .filter(|o| o.control.net.is_some_and(|n| n.contains(&ip)))
            .map(|o| &o.control)
            .collect()
    }

    /// The nets the pardons and allows in force shield, and the operators' bans (and with
    /// `intel`, the intake sources' listings of single addresses) in force by address;
    /// `soonest` is told when each order ends.
    fn orders_in_force(
        &self,
        now_ms: i64,
        intel: bool,
        soonest: &mut impl FnMut(Option<i64>),
    ) -> (Vec<IpNet>, HashMap<IpAddr, OperatorBan<'_>>) {
        let mut shields = Vec::new();
        let mut operator_bans: HashMap<IpAddr, OperatorBan> = HashMap::new();
        for o in &self.orders {
            soonest(o.until_ms);
            if !in_force_at(o.until_ms, now_ms) {
                continue;
            }
            let listed = (intel && o.control.kind == ControlKind::Intel)
                .then_some(o.control.net)
                .flatten()
                .filter(|n| n.prefix_len() == n.max_prefix_len())
                .map(|n| n.addr());
            if o.control.shields() {
                shields.extend(o.control.net);
            } else if let Some(ip) = o.control.ban_ip().or(listed) {
                let made = ms(o.control.time);
                let source = o.control.kind == ControlKind::Intel;
                let entry = operator_bans.entry(ip).or_insert(OperatorBan {
                    operator: &o.control.operator,
                    source,
                    until_ms: o.until_ms,
                    first_ms: made,
                    last_ms: made,
                });
                // An operator's ban names the operator rather than a source.
                if entry.source && !source {
                    entry.operator = &o.control.operator;
                    entry.source = false;
                }
                entry.until_ms = later(entry.until_ms, o.until_ms);
                entry.first_ms = entry.first_ms.min(made);
                entry.last_ms = entry.last_ms.max(made);
            }
        }
        (shields, operator_bans)
    }

    /// The addresses on the list at `now`, in address order, and the next moment the list can
    /// change by time alone (a ban or an order ending).
    pub fn list(&self, now: SystemTime, filter: &Filter) -> (Vec<Listed>, Option<SystemTime>) {
        let now_ms = ms(now);
        let mut next: Option<i64> = None;
        let mut soonest = |end: Option<i64>| {
            if let Some(end) = end.filter(|end| *end > now_ms) {
                next = Some(next.map_or(end, |n| n.min(end)));
            }
        };
        let live = |end: Option<i64>| in_force_at(end, now_ms);
        let (shields, mut operator_bans) = self.orders_in_force(now_ms, filter.intel, &mut soonest);
        let wanted = |ip: IpAddr| {
            filter.family.is_none_or(|f| f.holds(ip))
                && !never_listed(ip, &self.never)
                && !shields.iter().any(|n| n.contains(&ip.to_canonical()))
        };
        let mut out = Vec::new();
        for (ip, held) in &self.bans {
            let mut origins: Vec<String> = Vec::new();
            let mut jails: Vec<String> = Vec::new();
            let mut expires: Option<Option<i64>> = None;
            let mut seen: Option<(i64, i64)> = None;
            for h in held {
                let end = h.expires_ms();
                soonest(end);
                if !live(end) || filter.jail.as_ref().is_some_and(|j| *j != h.jail) {
                    continue;
                }
                if !origins.contains(&h.origin) {
                    origins.push(h.origin.clone());
                }
                if !jails.contains(&h.jail) {
                    jails.push(h.jail.clone());
                }
                expires = Some(expires.map_or(end, |e| later(e, end)));
                // First and last seen: of the bans in force now.
                for b in h.bans.iter().filter(|b| live(b.expires_ms)) {
                    seen = Some(seen.map_or((b.made_ms, b.made_ms), |(f, l)| {
                        (f.min(b.made_ms), l.max(b.made_ms))
                    }));
                }
            }
            // An operator's ban has no jail: a jail filter leaves it out.
            let operator = operator_bans.remove(ip).filter(|_| filter.jail.is_none());
            if !wanted(*ip) {
                continue;
            }
            let Some(mut expires) = expires.or(operator.as_ref().map(|o| o.until_ms)) else {
                continue;
            };
            if operator.is_none() && origins.len() < filter.min_reporters {
                continue;
            }
            if let Some(o) = &operator {
                expires = later(expires, o.until_ms);
                seen = Some(seen.map_or((o.first_ms, o.last_ms), |(f, l)| {
                    (f.min(o.first_ms), l.max(o.last_ms))
                }));
            }
            jails.sort();
            let seen = seen.expect("a host's or an operator's ban");
            out.push(listed(*ip, origins, jails, operator, expires, seen));
        }
        // Operators' bans of addresses no host bans.
        if filter.jail.is_none() {
            let before = out.len();
            for (ip, o) in operator_bans {
                if wanted(ip) {
                    let (until, seen) = (o.until_ms, (o.first_ms, o.last_ms));
                    out.push(listed(ip, Vec::new(), Vec::new(), Some(o), until, seen));
                }
            }
            if out.len() > before {
                out.sort_by_key(|l| l.ip);
            }
        }
        let next = next.map(query::time);
        (out, next)
    }
}

/// Whether a feed must leave `ip` out: it is in `never` ([`never_nets`]), or no source a
/// firewall should drop at all — loopback, link-local, unspecified, broadcast, multicast (a
/// host reporting one is mistaken or hostile; a firewall loading it would break, not protect).
pub fn never_listed(ip: IpAddr, never: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    let special = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unicast_link_local()
                || v6.is_unspecified()
                || v6.is_multicast()
        }
    };
    special || never.iter().any(|n| n.contains(&ip))
}

/// An operator's ban in force, as [`Snapshot::list`] gathers them (several orders may ban one
/// address: the longest counts).
struct OperatorBan<'a> {
    operator: &'a str,
    /// `operator` is an intake source (only intel orders ban the address).
    source: bool,
    until_ms: Option<i64>,
    first_ms: i64,
    last_ms: i64,
}

fn listed(
    ip: IpAddr,
    origins: Vec<String>,
    jails: Vec<String>,
    operator: Option<OperatorBan>,
    expires: Option<i64>,
    (first_ms, last_ms): (i64, i64),
) -> Listed {
    let source = operator
        .as_ref()
        .filter(|o| o.source)
        .map(|o| o.operator.to_owned());
    Listed {
        ip,
        reporters: origins.len(),
        jails,
        operator: operator
            .filter(|o| !o.source)
            .map(|o| o.operator.to_owned()),
        source,
        expires: expires.map(query::time),
        origins,
        first_seen: Some(query::time(first_ms)),
        last_seen: Some(query::time(last_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_f2b::event::Event;

    fn at(secs: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn stored(
        seq: u64,
        origin: &str,
        jail: &str,
        ip: &str,
        action: Action,
        bantime: i64,
    ) -> Stored {
        let event =
            Event::new(action, origin, jail, ip.parse().unwrap(), at(0), bantime, 3).unwrap();
        Stored {
            row_id: seq,
            seq,
            received: at(0),
            event,
        }
    }

    fn ban(seq: u64, origin: &str, jail: &str, ip: &str, bantime: i64) -> Stored {
        stored(seq, origin, jail, ip, Action::Ban, bantime)
    }

    fn control(seq: u64, c: Control) -> StoredControl {
        StoredControl {
            row_id: seq,
            seq,
            control: c,
            site: None,
        }
    }

    fn empty() -> Snapshot {
        Snapshot {
            mark: 0,
            loaded: Instant::now(),
            generation: 0,
            bans: BTreeMap::new(),
            orders: Vec::new(),
            never: vec!["10.0.0.0/8".parse().unwrap()],
            max_bantime: Duration::from_secs(30 * 86_400),
        }
    }

    fn ips(list: &[Listed]) -> Vec<String> {
        list.iter().map(|l| l.ip.to_string()).collect()
    }

    /// A ban made at `secs` (the tests' epoch) for `bantime` seconds.
    fn ban_at(seq: u64, origin: &str, ip: &str, secs: u64, bantime: i64) -> Stored {
        let mut s = ban(seq, origin, "sshd", ip, bantime);
        s.event.time = at(secs);
        s.received = at(secs);
        s
    }

    #[test]
    fn first_and_last_seen_are_of_the_bans_in_force_now() {
        let mut s = empty();
        s.apply(
            vec![
                // An old ban that ended, then a run of two overlapping ones.
                ban_at(1, "alice", "192.0.2.1", 0, 100),
                ban_at(2, "alice", "192.0.2.1", 1000, 600),
                ban_at(3, "alice", "192.0.2.1", 1500, 600),
                // Back-dated and long over: it does not date the run back.
                ban_at(4, "alice", "192.0.2.1", 10, 100),
                ban_at(5, "bob", "192.0.2.1", 1200, 600),
            ],
            vec![],
        );
        let (list, _) = s.list(at(1550), &Filter::default());
        assert_eq!(list[0].first_seen, Some(at(1000)));
        assert_eq!(list[0].last_seen, Some(at(1500)));
        assert_eq!(list[0].origins, ["alice", "bob"]);
        // Alice's first ban of the run ended: bob's is the first in force.
        let (list, _) = s.list(at(1600), &Filter::default());
        assert_eq!(list[0].first_seen, Some(at(1200)));
        assert_eq!(list[0].last_seen, Some(at(1500)));
        // Only alice's second is left.
        let (list, _) = s.list(at(1900), &Filter::default());
        assert_eq!(list[0].first_seen, Some(at(1500)));
        assert_eq!(list[0].origins, ["alice"]);
    }

    #[test]
    fn counts_hosts_and_jails_and_lets_bans_expire() {
        let mut s = empty();
        s.apply(
            vec![
                ban(1, "alice", "sshd", "192.0.2.1", 100),
                ban(2, "bob", "sshd", "192.0.2.1", 300),
                ban(3, "bob", "nginx", "192.0.2.1", 200),
                ban(4, "alice", "sshd", "2001:db8::1", -1),
            ],
            vec![],
        );
        // Never the allowlist's nets, nor addresses no firewall can drop.
        s.apply(
            vec![
                ban(5, "alice", "sshd", "127.0.0.1", 100),
                ban(9, "alice", "sshd", "10.1.2.3", 100),
                ban(10, "alice", "sshd", "169.254.169.254", 100),
                ban(11, "alice", "sshd", "fe80::1", 100),
                ban(6, "alice", "sshd", "0.0.0.0", 100),
                ban(7, "alice", "sshd", "255.255.255.255", 100),
                ban(8, "alice", "sshd", "ff02::1", 100),
            ],
            vec![],
        );
        let (list, next) = s.list(at(10), &Filter::default());
        assert_eq!(ips(&list), ["192.0.2.1", "2001:db8::1"]);
        assert_eq!(list[0].reporters, 2);
        assert_eq!(list[0].jails, ["nginx", "sshd"]);
        assert_eq!(list[0].expires, Some(at(300)));
        // A host's permanent ban is listed for max_bantime from when it was made.
        assert_eq!(list[1].expires, Some(at(30 * 86_400)));
        assert_eq!(next, Some(at(100)));
        let two = Filter {
            min_reporters: 2,
            ..Filter::default()
        };
        assert_eq!(ips(&s.list(at(10), &two).0), ["192.0.2.1"]);
        // After alice's ban ended, one host is left.
        assert!(s.list(at(150), &two).0.is_empty());
        let v6 = Filter {
            family: Some(Family::V6),
            ..Filter::default()
        };
        assert_eq!(ips(&s.list(at(10), &v6).0), ["2001:db8::1"]);
        let nginx = Filter {
            jail: Some("nginx".into()),
            ..Filter::default()
        };
        let (list, _) = s.list(at(10), &nginx);
        assert_eq!((list.len(), list[0].expires), (1, Some(at(200))));
    }

    #[test]
    fn a_pardon_ends_an_operator_ban_for_good_and_future_times_count_from_arrival() {
        let mut s = empty();
        let op = Control::ban("op", "198.51.100.9".parse().unwrap(), -1, "scanner").unwrap();
        let pardon =
            Control::pardon("op", "198.51.100.9/32".parse().unwrap(), None, "ours").unwrap();
        let pardon_id = pardon.id;
        s.apply(vec![], vec![control(1, op), control(2, pardon)]);
        s.apply(
            vec![],
            vec![control(
                3,
                Control::revoke("op", pardon_id, "done").unwrap(),
            )],
        );
        assert!(s.list(at(10), &Filter::default()).0.is_empty());
        // Stamped ten years ahead, received at at(0): a 600 s ban ends at at(600).
        let mut late = ban(4, "alice", "sshd", "192.0.2.9", 600);
        late.event.time = at(10 * 365 * 86_400);
        s.apply(vec![late], vec![]);
        let (list, _) = s.list(at(10), &Filter::default());
        assert_eq!(list[0].expires, Some(at(600)));
    }

    #[test]
    fn unbans_pardons_and_operator_bans_apply_in_stream_order() {
        let mut s = empty();
        let mut pardon =
            Control::pardon("op", "192.0.2.0/24".parse().unwrap(), None, "mistake").unwrap();
        pardon.until = Some(at(50));
        let mut operator_ban =
            Control::ban("op", "198.51.100.9".parse().unwrap(), 3600, "scanner").unwrap();
        operator_ban.until = Some(at(3600));
        s.apply(
            vec![
                ban(1, "alice", "sshd", "192.0.2.1", 1000),
                ban(2, "alice", "sshd", "203.0.113.5", 1000),
                stored(3, "alice", "sshd", "203.0.113.5", Action::Unban, 0),
                // After the pardon: shielded while it is in force.
                ban(5, "bob", "sshd", "192.0.2.7", 1000),
            ],
            vec![control(4, pardon), control(6, operator_ban)],
        );
        let (list, next) = s.list(at(10), &Filter::default());
        assert_eq!(ips(&list), ["198.51.100.9"]);
        assert_eq!(list[0].operator.as_deref(), Some("op"));
        assert_eq!(next, Some(at(50)));
        // A jail filter leaves an operator's ban out, also where a host bans the address too.
        s.apply(vec![ban(7, "bob", "sshd", "198.51.100.9", 10)], vec![]);
        let sshd = Filter {
            jail: Some("sshd".into()),
            ..Filter::default()
        };
        let (list, _) = s.list(at(5), &sshd);
        assert_eq!(
            (ips(&list), list[0].operator.clone()),
            (vec!["198.51.100.9".to_owned()], None)
        );
        assert_eq!(list[0].expires, Some(at(10)));
        let (list, _) = s.list(at(5), &Filter::default());
        assert_eq!(list[0].expires, Some(at(3600)));
        // The pardon ended: the ban it lifted stays lifted, the later one is listed.
        assert_eq!(
            ips(&s.list(at(60), &Filter::default()).0),
            ["192.0.2.7", "198.51.100.9"]
        );
        // Revoking the pardon early has the same effect.
        let mut t = empty();
        t.apply(
            vec![ban(5, "bob", "sshd", "192.0.2.7", 1000)],
            vec![control(
                4,
                Control::pardon("op", "192.0.2.0/24".parse().unwrap(), None, "m").unwrap(),
            )],
        );
        assert!(t.list(at(10), &Filter::default()).0.is_empty());
        let id = t.orders[0].control.id;
        t.apply(
            vec![],
            vec![control(6, Control::revoke("op", id, "done").unwrap())],
        );
        assert_eq!(ips(&t.list(at(10), &Filter::default()).0), ["192.0.2.7"]);
    }
}
