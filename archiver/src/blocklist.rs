//! The blocklist: the addresses banned now, as the feeds (`/v1/blocklist`) and `export` give
//! them to firewalls, Zeek and other sites.
//!
//! An address is on it while a host's ban of it is active (not expired, not unbanned by that
//! host, not pardoned or allowed by an operator since) or an operator's ban of it is in force,
//! and no pardon or allow in force covers it — what the subscribers apply.
//!
//! [`Snapshot`] holds that state in memory at one high-water mark of the archive ([`Mark`]):
//! loaded once, then brought forward with only the events and orders archived since, so that
//! a request costs two index lookups while nothing new arrived. Time alone only takes entries
//! off (bans expire, orders end), which [`Snapshot::list`] applies as it lists.

use crate::db::Db;
use crate::query::{self, Stored, StoredControl};
use crate::store::ms;
use ipnet::IpNet;
use shared_f2b::control::{Control, ControlKind};
use shared_f2b::event::{Action, validate_jail};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The source of [`Snapshot`] generations.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// Rows read per query while loading.
const PAGE: usize = 10_000;
/// After this long a snapshot is loaded afresh (rows changed behind the stream's order:
/// retention, a second archiver committing late).
pub const MAX_AGE: Duration = Duration::from_secs(600);
/// More new rows than this since the mark: load afresh rather than apply them one by one.
const MAX_DELTA: u64 = 50_000;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// `4` or `6`.
    pub fn parse(text: &str) -> Result<Family, String> {
        match text {
            "4" => Ok(Family::V4),
            "6" => Ok(Family::V6),
            _ => Err(format!("family {text:?}: use 4 or 6")),
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
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            jail: None,
            min_reporters: 1,
            family: None,
        }
    }
}

impl Filter {
    /// Checks the values a request or the command line gave.
    pub fn check(&self) -> Result<(), String> {
        if let Some(jail) = &self.jail {
            validate_jail(jail).map_err(|e| format!("jail: {e}"))?;
        }
        if !(1..=1000).contains(&self.min_reporters) {
            return Err(format!(
                "min_reporters {}: use 1 to 1000",
                self.min_reporters
            ));
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
    /// When its last ban ends; `None`: permanent.
    pub expires: Option<SystemTime>,
}

/// Where the archive stands: the highest stream sequence of its events and of its control
/// events. Rows only ever arrive with higher ones, so an unchanged mark means nothing new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub events: u64,
    pub controls: u64,
}

impl Mark {
    /// Reads it (two index lookups).
    pub async fn read(db: &Db) -> Result<Mark, sqlx::Error> {
        Ok(Mark {
            events: query::max_seq(db).await?,
            controls: query::max_control_seq(db).await?,
        })
    }
}

/// A host's ban as held: by whom, in which jail, until when (ms; `None` permanent).
#[derive(Debug, Clone)]
struct Held {
    origin: String,
    jail: String,
    expires_ms: Option<i64>,
}

/// An operator's order in force (pardon, allow or ban).
#[derive(Debug, Clone)]
struct Order {
    control: Control,
    until_ms: Option<i64>,
}

/// The archive's bans and orders at one [`Mark`].
#[derive(Debug)]
pub struct Snapshot {
    mark: Mark,
    loaded: Instant,
    /// New with every load and every change (unique in the process), so that what was
    /// rendered from it can tell it is stale.
    generation: u64,
    bans: BTreeMap<IpAddr, Vec<Held>>,
    orders: Vec<Order>,
    /// Nets never listed (`[archiver] feed_allowlist`).
    never: Vec<IpNet>,
}

fn opt_ms(t: Option<SystemTime>) -> Option<i64> {
    t.map(ms)
}

/// A ban's end: the later of two (`None`, permanent, outlasts any).
fn later(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.zip(b).map(|(a, b)| a.max(b))
}

impl Snapshot {
    /// Loads the active bans and the orders in force from the archive; nothing in `never` is
    /// ever listed.
    pub async fn load(db: &Db, never: &[IpNet]) -> Result<Snapshot, sqlx::Error> {
        // The mark first: rows archived while loading are applied again later (harmless).
        let mark = Mark::read(db).await?;
        let now = SystemTime::now();
        let all = ["*".to_owned()];
        let mut snapshot = Snapshot {
            mark,
            loaded: Instant::now(),
            generation: next_generation(),
            bans: BTreeMap::new(),
            orders: Vec::new(),
            never: never.to_vec(),
        };
        let mut after = 0;
        loop {
            let page = query::active_page(db, now, &all, None, after, mark.events, PAGE).await?;
            after = page.last().map_or(after, |s| s.row_id);
            let done = page.len() < PAGE;
            page.iter().for_each(|s| snapshot.hold(s));
            if done {
                break;
            }
        }
        let mut after = 0;
        loop {
            let page = query::controls_page(db, now, after, mark.controls, PAGE).await?;
            after = page.last().map_or(after, |s| s.row_id);
            let done = page.len() < PAGE;
            page.into_iter().for_each(|s| snapshot.order(s.control));
            if done {
                break;
            }
        }
        Ok(snapshot)
    }

    /// Brings it to where the archive stands now; `false` when it is better loaded afresh
    /// (too old, too far behind).
    pub async fn refresh(&mut self, db: &Db, mark: Mark) -> Result<bool, sqlx::Error> {
        if mark == self.mark {
            return Ok(self.loaded.elapsed() < MAX_AGE);
        }
        if mark.events < self.mark.events || mark.controls < self.mark.controls {
            return Ok(false); // rows went away (a restored or emptied database)
        }
        let behind = (mark.events - self.mark.events) + (mark.controls - self.mark.controls);
        if self.loaded.elapsed() >= MAX_AGE || behind > MAX_DELTA {
            return Ok(false);
        }
        let all = ["*".to_owned()];
        let events = query::since_page(
            db,
            &all,
            None,
            self.mark.events,
            mark.events,
            MAX_DELTA as usize,
        )
        .await?;
        let controls =
            query::controls_after(db, self.mark.controls, mark.controls, MAX_DELTA as usize)
                .await?;
        self.apply(events, controls);
        self.mark = mark;
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
        let expires_ms = opt_ms(e.expires());
        let held = self.bans.entry(e.ip).or_default();
        match held
            .iter_mut()
            .find(|h| h.origin == e.origin && h.jail == e.jail)
        {
            Some(h) => h.expires_ms = later(h.expires_ms, expires_ms),
            None => held.push(Held {
                origin: e.origin.clone(),
                jail: e.jail.clone(),
                expires_ms,
            }),
        }
    }

    /// A host's unban ends its ban of the address in that jail.
    fn release(&mut self, s: &Stored) {
        let e = &s.event;
        if let Some(held) = self.bans.get_mut(&e.ip) {
            held.retain(|h| !(h.origin == e.origin && h.jail == e.jail));
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
                }
                self.push_order(control);
            }
            ControlKind::Ban => self.push_order(control),
        }
    }

    fn push_order(&mut self, control: Control) {
        if self.orders.iter().any(|o| o.control.id == control.id) {
            return;
        }
        let until_ms = opt_ms(control.until);
        self.orders.push(Order { control, until_ms });
    }

    /// The mark it stands at.
    pub fn mark(&self) -> Mark {
        self.mark
    }

    /// Changes with every change applied.
    pub fn generation(&self) -> u64 {
        self.generation
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
        let live = |end: Option<i64>| end.is_none_or(|end| end > now_ms);
        let mut shields = Vec::new();
        let mut operator_bans: HashMap<IpAddr, (&str, Option<i64>)> = HashMap::new();
        for o in &self.orders {
            soonest(o.until_ms);
            if !live(o.until_ms) {
                continue;
            }
            if o.control.shields() {
                shields.extend(o.control.net);
            } else if let Some(ip) = o.control.ban_ip() {
                let entry = operator_bans
                    .entry(ip)
                    .or_insert((&o.control.operator, o.until_ms));
                entry.1 = later(entry.1, o.until_ms);
            }
        }
        let wanted = |ip: IpAddr| {
            filter.family.is_none_or(|f| f.holds(ip))
                && !never_listed(ip, &self.never)
                && !shields.iter().any(|n| n.contains(&ip.to_canonical()))
        };
        let mut out = Vec::new();
        for (ip, held) in &self.bans {
            let mut origins: Vec<&str> = Vec::new();
            let mut jails: Vec<String> = Vec::new();
            let mut expires: Option<Option<i64>> = None;
            for h in held {
                soonest(h.expires_ms);
                if !live(h.expires_ms) || filter.jail.as_ref().is_some_and(|j| *j != h.jail) {
                    continue;
                }
                if !origins.contains(&h.origin.as_str()) {
                    origins.push(&h.origin);
                }
                if !jails.contains(&h.jail) {
                    jails.push(h.jail.clone());
                }
                expires = Some(expires.map_or(h.expires_ms, |e| later(e, h.expires_ms)));
            }
            // An operator's ban has no jail: a jail filter leaves it out.
            let operator = operator_bans.remove(ip).filter(|_| filter.jail.is_none());
            if !wanted(*ip) {
                continue;
            }
            let Some(mut expires) = expires.or(operator.map(|o| o.1)) else {
                continue;
            };
            if operator.is_none() && origins.len() < filter.min_reporters {
                continue;
            }
            if let Some((_, until)) = operator {
                expires = later(expires, until);
            }
            jails.sort();
            out.push(listed(*ip, origins.len(), jails, operator, expires));
        }
        // Operators' bans of addresses no host bans.
        if filter.jail.is_none() {
            let before = out.len();
            for (ip, (operator, until)) in operator_bans {
                if wanted(ip) {
                    out.push(listed(ip, 0, Vec::new(), Some((operator, until)), until));
                }
            }
            if out.len() > before {
                out.sort_by_key(|l| l.ip);
            }
        }
        let next = next.map(|n| UNIX_EPOCH + Duration::from_millis(n as u64));
        (out, next)
    }
}

/// Whether a feed must leave `ip` out: it is in `never` (`[archiver] feed_allowlist`), or no
/// source to drop at all (the unspecified, broadcast or a multicast address: a host reporting
/// one is mistaken or hostile, and a firewall loading it would break, not protect).
pub fn never_listed(ip: IpAddr, never: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    let special = match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    special || never.iter().any(|n| n.contains(&ip))
}

fn listed(
    ip: IpAddr,
    reporters: usize,
    jails: Vec<String>,
    operator: Option<(&str, Option<i64>)>,
    expires: Option<i64>,
) -> Listed {
    Listed {
        ip,
        reporters,
        jails,
        operator: operator.map(|(name, _)| name.to_owned()),
        expires: expires.map(|e| UNIX_EPOCH + Duration::from_millis(e.max(0) as u64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_f2b::event::Event;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
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
        }
    }

    fn empty() -> Snapshot {
        Snapshot {
            mark: Mark::default(),
            loaded: Instant::now(),
            generation: 0,
            bans: BTreeMap::new(),
            orders: Vec::new(),
            never: vec!["127.0.0.0/8".parse().unwrap()],
        }
    }

    fn ips(list: &[Listed]) -> Vec<String> {
        list.iter().map(|l| l.ip.to_string()).collect()
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
        assert_eq!(list[1].expires, None);
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
