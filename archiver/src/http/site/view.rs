//! The active bans as the site page pages through them: listed once per snapshot generation
//! (and again when one of them ends), sorted once per column asked for, searched by address
//! prefix or net. 100,000 rows cost one listing, not one per page view.

use super::shape;
use crate::blocklist::{Filter, Listed, Snapshot};
use crate::http::params::BadParameter;
use ipnet::IpNet;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// Top offenders shown.
const TOP: usize = 10;

/// A column to sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sort {
    Ip,
    Jails,
    Hosts,
    FirstSeen,
    LastSeen,
    Expires,
}

impl Sort {
    pub fn parse(word: &str) -> Option<Sort> {
        Some(match word {
            "ip" => Sort::Ip,
            "jails" => Sort::Jails,
            "hosts" => Sort::Hosts,
            "first_seen" => Sort::FirstSeen,
            "last_seen" => Sort::LastSeen,
            "expires" => Sort::Expires,
            _ => return None,
        })
    }
}

/// What the search box asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    All,
    /// Addresses whose text starts as typed (`192.0.2.`, `2001:db8:`; `192.0.2.1` finds
    /// `192.0.2.10` too), and the address it names, however it was written
    /// (`2001:0db8::0001`).
    Prefix(String, Option<IpAddr>),
    /// Addresses in a net (`192.0.2.0/24`).
    Net(IpNet),
}

impl Search {
    pub fn parse(q: &str) -> Result<Search, BadParameter> {
        let q = q.trim();
        if q.is_empty() {
            return Ok(Search::All);
        }
        if q.contains('/') {
            return q
                .parse::<IpNet>()
                .map(|n| Search::Net(n.trunc()))
                .map_err(|_| {
                    BadParameter::value(
                        "q",
                        q,
                        "not a net (use e.g. 192.0.2.0/24 or 2001:db8::/32)",
                    )
                });
        }
        if q.len() > 45
            || !q
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '.' || c == ':')
        {
            return Err(BadParameter::value(
                "q",
                q,
                "type the start of an address (digits, a-f, '.' and ':'), an address or a net",
            ));
        }
        let ip = shared_f2b::event::parse_ip(q).ok();
        Ok(Search::Prefix(q.to_ascii_lowercase(), ip))
    }

    fn matches(&self, ip: IpAddr, text: &str) -> bool {
        match self {
            Search::All => true,
            Search::Prefix(p, exact) => text.starts_with(p.as_str()) || *exact == Some(ip),
            Search::Net(n) => n.contains(&ip.to_canonical()),
        }
    }
}

/// The active bans at one moment of one snapshot generation.
pub struct View {
    generation: u64,
    valid_until: Option<SystemTime>,
    /// In address order.
    rows: Vec<Listed>,
    texts: Vec<String>,
    sorted: Mutex<HashMap<Sort, Arc<Vec<u32>>>>,
    /// By origin, by jail, top offenders: counted once.
    summary: OnceLock<Summary>,
}

/// What the overview counts of the active bans.
pub struct Summary {
    pub by_origin: Value,
    pub by_jail: Value,
    pub top: Value,
}

impl View {
    fn new(snapshot: &Snapshot, now: SystemTime) -> View {
        let (rows, valid_until) = snapshot.list(now, &Filter::default());
        let texts = rows.iter().map(|r| r.ip.to_string()).collect();
        View {
            generation: snapshot.generation(),
            valid_until,
            rows,
            texts,
            sorted: Mutex::new(HashMap::new()),
            summary: OnceLock::new(),
        }
    }

    /// The counts the overview shows, made on first use.
    pub fn summary(&self) -> &Summary {
        self.summary.get_or_init(|| Summary {
            by_origin: self.by_origin(),
            by_jail: self.by_jail(),
            top: self.top(),
        })
    }

    fn fresh(&self, generation: u64, now: SystemTime) -> bool {
        self.generation == generation && self.valid_until.is_none_or(|end| now < end)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Row numbers in `sort` order, ascending (ties in address order).
    fn order(&self, sort: Sort) -> Arc<Vec<u32>> {
        let mut sorted = self.sorted.lock().unwrap_or_else(|e| e.into_inner());
        sorted
            .entry(sort)
            .or_insert_with(|| {
                let mut order: Vec<u32> = (0..self.rows.len() as u32).collect();
                let r = |i: &u32| &self.rows[*i as usize];
                match sort {
                    Sort::Ip => {}
                    Sort::Jails => order.sort_by(|a, b| r(a).jails.cmp(&r(b).jails)),
                    Sort::Hosts => order.sort_by_key(|i| r(i).reporters),
                    Sort::FirstSeen => order.sort_by_key(|i| r(i).first_seen),
                    Sort::LastSeen => order.sort_by_key(|i| r(i).last_seen),
                    // Permanent last.
                    Sort::Expires => order.sort_by_key(|i| (r(i).expires.is_none(), r(i).expires)),
                }
                Arc::new(order)
            })
            .clone()
    }

    /// One page of the rows `search` finds, sorted.
    pub fn page(
        &self,
        search: &Search,
        sort: Sort,
        descending: bool,
        offset: usize,
        limit: usize,
    ) -> Value {
        let order = self.order(sort);
        let found =
            |i: &&u32| search.matches(self.rows[**i as usize].ip, &self.texts[**i as usize]);
        let (matched, rows) = if descending {
            page_of(order.iter().rev().filter(found), offset, limit)
        } else {
            page_of(order.iter().filter(found), offset, limit)
        };
        json!({
            "total": self.rows.len(),
            "matched": matched,
            "offset": offset,
            "limit": limit,
            "rows": rows.into_iter().map(|i| shape::row(&self.rows[*i as usize])).collect::<Vec<_>>(),
        })
    }

    /// The row of `ip`, when it is banned.
    pub fn find(&self, ip: IpAddr) -> Option<Value> {
        self.rows
            .binary_search_by_key(&ip, |r| r.ip)
            .ok()
            .map(|i| shape::row(&self.rows[i]))
    }

    /// Active bans per host (and per operator, per intake source), most first.
    fn by_origin(&self) -> Value {
        // (name, operator, source)
        let mut counts: HashMap<(&str, bool, bool), u64> = HashMap::new();
        for r in &self.rows {
            for origin in &r.origins {
                *counts.entry((origin, false, false)).or_default() += 1;
            }
            if let Some(operator) = &r.operator {
                *counts.entry((operator, true, false)).or_default() += 1;
            }
            if let Some(source) = &r.source {
                *counts.entry((source, false, true)).or_default() += 1;
            }
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        json!(
            counts
                .into_iter()
                .map(|((name, operator, source), n)| {
                    let mut row = json!({"name": name, "operator": operator, "active": n});
                    if source {
                        row["source"] = json!(true);
                    }
                    row
                })
                .collect::<Vec<_>>()
        )
    }

    /// Active bans per jail, most first.
    fn by_jail(&self) -> Value {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for jail in self.rows.iter().flat_map(|r| &r.jails) {
            *counts.entry(jail).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        json!(
            counts
                .into_iter()
                .map(|(name, n)| json!({"name": name, "active": n}))
                .collect::<Vec<_>>()
        )
    }

    /// The top offenders: banned by the most hosts, then in the most jails, then the longest.
    fn top(&self) -> Value {
        let mut top: Vec<&Listed> = Vec::with_capacity(TOP + 1);
        let rank = |r: &Listed| {
            (
                std::cmp::Reverse(r.reporters),
                std::cmp::Reverse(r.jails.len()),
                r.first_seen,
            )
        };
        for r in &self.rows {
            let at = top.partition_point(|t| rank(t) <= rank(r));
            if at < TOP {
                top.insert(at, r);
                top.truncate(TOP);
            }
        }
        json!(top.into_iter().map(shape::row).collect::<Vec<_>>())
    }
}

/// How many `found` holds, and its items `offset..offset + limit`.
fn page_of<'a>(
    found: impl Iterator<Item = &'a u32>,
    offset: usize,
    limit: usize,
) -> (usize, Vec<&'a u32>) {
    let mut matched = 0;
    let mut rows = Vec::with_capacity(limit);
    for i in found {
        if matched >= offset && rows.len() < limit {
            rows.push(i);
        }
        matched += 1;
    }
    (matched, rows)
}

/// The view of the current generation, made when first asked for.
#[derive(Default)]
pub struct Views {
    current: Mutex<Option<Arc<View>>>,
}

impl Views {
    /// The view of `snapshot` at `now` (taken while the caller holds the snapshot).
    pub fn current(&self, snapshot: &Snapshot, now: SystemTime) -> Arc<View> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(view) = current.as_ref()
            && view.fresh(snapshot.generation(), now)
        {
            return view.clone();
        }
        let view = Arc::new(tokio::task::block_in_place(|| View::new(snapshot, now)));
        *current = Some(view.clone());
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches() {
        assert_eq!(Search::parse(" ").unwrap(), Search::All);
        assert_eq!(
            Search::parse("192.0.2.").unwrap(),
            Search::Prefix("192.0.2.".into(), None)
        );
        assert_eq!(
            Search::parse("2001:DB8:").unwrap(),
            Search::Prefix("2001:db8:".into(), None)
        );
        let one = Search::parse("192.0.2.1").unwrap();
        assert!(one.matches("192.0.2.1".parse().unwrap(), "192.0.2.1"));
        assert!(one.matches("192.0.2.10".parse().unwrap(), "192.0.2.10"));
        let long = Search::parse("2001:0DB8:0::0001").unwrap();
        assert!(long.matches("2001:db8::1".parse().unwrap(), "2001:db8::1"));
        assert!(!long.matches("2001:db8::2".parse().unwrap(), "2001:db8::2"));
        let net = Search::parse("192.0.2.7/24").unwrap();
        assert_eq!(net, Search::Net("192.0.2.0/24".parse().unwrap()));
        assert!(net.matches("192.0.2.200".parse().unwrap(), "192.0.2.200"));
        assert!(!net.matches("192.0.3.1".parse().unwrap(), "192.0.3.1"));
        for bad in [
            "<script>",
            "1.2.3.4/99",
            "x' OR 1=1",
            "a".repeat(50).as_str(),
        ] {
            assert!(Search::parse(bad).is_err(), "{bad}");
        }
    }

    fn row(ip: &str, reporters: usize, first: u64) -> Listed {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(first);
        Listed {
            jails: vec!["sshd".into()],
            origins: (0..reporters).map(|i| format!("h{i}")).collect(),
            first_seen: Some(at),
            last_seen: Some(at),
            ..Listed::counted(ip.parse().unwrap(), reporters)
        }
    }

    fn view(rows: Vec<Listed>) -> View {
        View {
            generation: 1,
            valid_until: None,
            texts: rows.iter().map(|r| r.ip.to_string()).collect(),
            rows,
            sorted: Mutex::new(HashMap::new()),
            summary: OnceLock::new(),
        }
    }

    #[test]
    fn pages_sorts_and_ranks() {
        let v = view(vec![
            row("192.0.2.1", 1, 30),
            row("192.0.2.2", 3, 20),
            row("192.0.2.3", 2, 10),
            row("198.51.100.1", 3, 5),
        ]);
        let ips = |page: &Value| -> Vec<String> {
            page["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["ip"].as_str().unwrap().to_owned())
                .collect()
        };
        let p = v.page(&Search::All, Sort::Hosts, true, 0, 2);
        assert_eq!(p["matched"], 4);
        assert_eq!(ips(&p), ["198.51.100.1", "192.0.2.2"]);
        let p = v.page(
            &Search::Prefix("192.0.2.".into(), None),
            Sort::FirstSeen,
            false,
            1,
            5,
        );
        assert_eq!(p["matched"], 3);
        assert_eq!(ips(&p), ["192.0.2.2", "192.0.2.1"]);
        let top = v.top();
        assert_eq!(
            ips(&json!({"rows": top})),
            ["198.51.100.1", "192.0.2.2", "192.0.2.3", "192.0.2.1"]
        );
        assert_eq!(
            v.by_origin()[0],
            json!({"name": "h0", "operator": false, "active": 4})
        );
        assert!(v.find("192.0.2.3".parse().unwrap()).is_some());
        assert!(v.find("192.0.2.9".parse().unwrap()).is_none());
    }
}
