//! What the site page charts and the hosts it shows as reporting: ban events per jail per hour
//! (48 hours) and per day (90 days), and per host what it reported in the last day.
//!
//! Loaded with three grouped queries up to the archive's mark (the stream sequence below which
//! everything is committed, as the blocklist snapshot uses) and then counted forward from the
//! events archived since, once per new mark whatever the number of pages open; loaded afresh
//! every 10 minutes (retention) or when far behind.

use crate::db::Db;
use crate::query::{self, Stored};
use crate::store::ms;
use serde_json::{Value, json};
use shared_f2b::event::Action;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

/// After this long the counts are loaded afresh (rows deleted by retention).
const MAX_AGE: Duration = Duration::from_secs(600);
/// More new rows than this since the mark: load afresh rather than count them one by one.
const MAX_DELTA: u64 = 50_000;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Buckets the chart shows.
const HOURS: i64 = 48;
const DAYS: i64 = 90;
/// A host counts as reporting recently when it sent something in the last day.
const RECENT_MS: i64 = DAY_MS;

/// Ban events per jail in buckets of one size, keyed by the bucket's start (ms).
#[derive(Debug, Default)]
struct Series {
    step_ms: i64,
    buckets: BTreeMap<i64, HashMap<String, u64>>,
}

impl Series {
    fn new(step_ms: i64) -> Series {
        Series {
            step_ms,
            buckets: BTreeMap::new(),
        }
    }

    fn add(&mut self, jail: &str, at_ms: i64, n: u64) {
        let bucket = at_ms - at_ms.rem_euclid(self.step_ms);
        *self
            .buckets
            .entry(bucket)
            .or_default()
            .entry(jail.to_owned())
            .or_default() += n;
    }

    /// Drops buckets that ended before `from_ms`.
    fn forget_before(&mut self, from_ms: i64) {
        self.buckets = self
            .buckets
            .split_off(&(from_ms - from_ms.rem_euclid(self.step_ms)));
    }

    /// The last `count` buckets up to the one holding `now_ms`, per jail, as the page takes them.
    fn json(&self, now_ms: i64, count: i64) -> Value {
        let last = now_ms - now_ms.rem_euclid(self.step_ms);
        let start = last - (count - 1) * self.step_ms;
        let mut jails: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for (bucket, per_jail) in self.buckets.range(start..=last) {
            let i = ((bucket - start) / self.step_ms) as usize;
            for (jail, n) in per_jail {
                jails.entry(jail).or_insert_with(|| vec![0; count as usize])[i] += n;
            }
        }
        json!({"start": start, "step": self.step_ms, "count": count, "jails": jails})
    }
}

/// What one host reported in the last day.
#[derive(Debug, Default)]
struct Reporting {
    last_ms: i64,
    /// Ban events per hour (start, ms).
    bans: BTreeMap<i64, u64>,
}

/// The chart's counts and the hosts reporting, up to a mark.
#[derive(Debug)]
pub struct Activity {
    mark: u64,
    loaded: Instant,
    hourly: Series,
    daily: Series,
    hosts: HashMap<String, Reporting>,
}

impl Activity {
    /// Loads what the archive holds up to stream sequence `upto`.
    pub async fn load(db: &Db, upto: u64) -> Result<Activity, sqlx::Error> {
        let now = SystemTime::now();
        let mut activity = Activity {
            mark: upto,
            loaded: Instant::now(),
            hourly: Series::new(HOUR_MS),
            daily: Series::new(DAY_MS),
            hosts: HashMap::new(),
        };
        let ago = |ms: i64| now - Duration::from_millis(ms as u64);
        for (jail, bucket, n) in
            query::bans_per_bucket(db, ago(HOURS * HOUR_MS), HOUR_MS, upto).await?
        {
            activity.hourly.add(&jail, bucket, n);
        }
        for (jail, bucket, n) in
            query::bans_per_bucket(db, ago(DAYS * DAY_MS), DAY_MS, upto).await?
        {
            activity.daily.add(&jail, bucket, n);
        }
        for h in query::host_hours(db, ago(RECENT_MS + HOUR_MS), upto).await? {
            let host = activity.hosts.entry(h.origin).or_default();
            host.last_ms = host.last_ms.max(h.last_received_ms);
            *host.bans.entry(h.hour_ms).or_default() += h.bans;
        }
        Ok(activity)
    }

    /// Counts the events archived up to stream sequence `upto` since its mark; `false` when
    /// it is better loaded afresh (too old, too far behind).
    pub async fn bring_forward(&mut self, db: &Db, upto: u64) -> Result<bool, sqlx::Error> {
        if upto <= self.mark {
            return Ok(self.loaded.elapsed() < MAX_AGE);
        }
        if upto - self.mark > MAX_DELTA || self.loaded.elapsed() >= MAX_AGE {
            return Ok(false);
        }
        for s in query::events_between(db, self.mark, upto, MAX_DELTA as usize).await? {
            self.count(&s);
        }
        self.mark = upto;
        Ok(true)
    }

    /// Counts an event archived after the load.
    fn count(&mut self, s: &Stored) {
        let e = &s.event;
        let made = ms(e.time);
        let host = self.hosts.entry(e.who()).or_default();
        host.last_ms = host.last_ms.max(ms(s.received));
        if e.action == Action::Ban {
            *host
                .bans
                .entry(made - made.rem_euclid(HOUR_MS))
                .or_default() += 1;
            self.hourly.add(&e.jail, made, 1);
            self.daily.add(&e.jail, made, 1);
        }
    }

    /// Forgets what is older than the page shows.
    pub fn forget_old(&mut self, now: SystemTime) {
        let now_ms = ms(now);
        self.hourly.forget_before(now_ms - HOURS * HOUR_MS);
        self.daily.forget_before(now_ms - DAYS * DAY_MS);
        let since = now_ms - RECENT_MS;
        self.hosts.retain(|_, h| h.last_ms >= since);
        for h in self.hosts.values_mut() {
            h.bans = h.bans.split_off(&(since - since.rem_euclid(HOUR_MS)));
        }
    }

    /// The chart: `{"hourly": {...}, "daily": {...}}`.
    pub fn timeline(&self, now: SystemTime) -> Value {
        let now_ms = ms(now);
        json!({
            "hourly": self.hourly.json(now_ms, HOURS),
            "daily": self.daily.json(now_ms, DAYS),
        })
    }

    /// The hosts that sent something in the last day, most recent first, with their ban events
    /// in that day (counted by the hour).
    pub fn hosts(&self, now: SystemTime) -> Value {
        let since = ms(now) - RECENT_MS;
        let hour = since - since.rem_euclid(HOUR_MS);
        let mut hosts: Vec<(&String, &Reporting)> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.last_ms >= since)
            .collect();
        hosts.sort_by(|a, b| b.1.last_ms.cmp(&a.1.last_ms).then(a.0.cmp(b.0)));
        json!(
            hosts
                .into_iter()
                .map(|(name, h)| json!({
                    "name": name,
                    "last_seen": h.last_ms,
                    "bans_24h": h.bans.range(hour..).map(|(_, n)| n).sum::<u64>(),
                }))
                .collect::<Vec<_>>()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_f2b::event::Event;
    use std::time::UNIX_EPOCH;

    fn stored(origin: &str, jail: &str, action: Action, at: SystemTime) -> Stored {
        let event = Event::new(
            action,
            origin,
            jail,
            "192.0.2.1".parse().unwrap(),
            at,
            600,
            3,
        )
        .unwrap();
        Stored {
            row_id: 1,
            seq: 1,
            received: at,
            event,
        }
    }

    #[test]
    fn counts_bans_per_jail_and_bucket_and_hosts_per_day() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut a = Activity {
            mark: 0,
            loaded: Instant::now(),
            hourly: Series::new(HOUR_MS),
            daily: Series::new(DAY_MS),
            hosts: HashMap::new(),
        };
        let hours_ago = |h: u64| now - Duration::from_secs(h * 3600);
        a.count(&stored("alice", "sshd", Action::Ban, now));
        a.count(&stored("alice", "sshd", Action::Ban, hours_ago(1)));
        a.count(&stored("bob", "nginx", Action::Ban, hours_ago(1)));
        a.count(&stored("bob", "nginx", Action::Unban, hours_ago(0)));
        a.count(&stored("old", "sshd", Action::Ban, hours_ago(30)));
        a.count(&stored("older", "sshd", Action::Ban, hours_ago(24 * 100)));
        a.forget_old(now);
        let t = a.timeline(now);
        let hourly = &t["hourly"];
        assert_eq!(hourly["count"], 48);
        let sshd = hourly["jails"]["sshd"].as_array().unwrap();
        assert_eq!(sshd.len(), 48);
        assert_eq!(sshd[47], 1);
        assert_eq!(sshd[46], 1);
        assert_eq!(sshd[47 - 30], 1);
        assert_eq!(hourly["jails"]["nginx"][46], 1);
        let daily = &t["daily"]["jails"]["sshd"];
        assert_eq!(
            daily
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .sum::<u64>(),
            3
        );
        let hosts = a.hosts(now);
        let names: Vec<&str> = hosts
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(hosts[0]["bans_24h"], 2);
        assert_eq!(hosts[1]["bans_24h"], 1);
    }
}
