//! Faults in any order: a site on the shipped config (its NATS store on the power-cut
//! simulator, each host's link through a cuttable proxy), three hosts publishing bans and
//! unbans with the one-shot publisher all along, and a randomized schedule of faults: kill -9
//! of a subscriber or the archiver, a partition of a host, a NATS restart, a power cut of the
//! NATS host (where the server syncs each write: see below). At the end the invariants: every event whose publisher exited 0 is in the archive
//! once; at every other host, what its origin banned last is banned and what it lifted is not;
//! no host applied a ban twice. The seed is printed (`SHARED_F2B_CHAOS_SEED` replays one;
//! `SHARED_F2B_CHAOS_FAULTS` sets how many faults, 20 by default; `scripts/soak --chaos` runs a
//! long schedule).

use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::{Daemon, Host};
use shared_f2b_tests::powercut::PowerCut;
use shared_f2b_tests::proxy::Proxy;
use shared_f2b_tests::site;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift64*), so a seed replays the same schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// One event a host's publisher was asked to send, and whether it exited 0 (then `id`).
#[derive(Debug, Clone)]
struct Published {
    origin: String,
    ip: String,
    ban: bool,
    id: Option<uuid::Uuid>,
}

/// The faults the schedule picks from.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillSubscriber(usize),
    KillArchiver,
    Partition(usize),
    NatsRestart,
    PowerCut,
}

const HOSTS: [&str; 3] = ["alice", "bob", "charlie"];

fn id_of(stderr: &str) -> Option<uuid::Uuid> {
    let at = stderr.find(" id=")? + 4;
    stderr.get(at..at + 36)?.parse().ok()
}

/// Each host's publisher, until `stop`: mostly new bans, sometimes an unban of one of its own.
fn flow(host: &Host, index: usize, seed: u64, stop: &AtomicBool, out: &Mutex<Vec<Published>>) {
    let mut rng = Rng(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut banned: Vec<String> = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let unban = !banned.is_empty() && rng.below(4) == 0;
        let ip = if unban {
            banned.swap_remove(rng.below(banned.len() as u64) as usize)
        } else {
            n += 1;
            format!("198.18.{}.{}", index * 40 + n / 250, n % 250 + 1)
        };
        let action = if unban { "unban" } else { "ban" };
        let run = host
            .config
            .publish(&[action, "--jail", "sshd", "--ip", &ip]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        let id = run.status.success().then(|| id_of(&stderr)).flatten();
        assert!(
            !run.status.success() || id.is_some(),
            "{action} {ip} exited 0 without an id: {stderr}"
        );
        if !unban && id.is_some() {
            banned.push(ip.clone());
        }
        out.lock().unwrap().push(Published {
            origin: host.name.clone(),
            ip,
            ban: !unban,
            id,
        });
        std::thread::sleep(rng.millis(20, 120));
    }
}

/// What is wrong now; empty when every invariant holds.
async fn violations(db: &TestDb, hosts: &[Host], published: &[Published]) -> Vec<String> {
    let mut out = Vec::new();
    let pool = db.pool().await;
    let rows = sqlx::query("SELECT event_id FROM f2b_events")
        .fetch_all(&pool)
        .await
        .expect("the archive answers");
    pool.close().await;
    let mut archived: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for row in &rows {
        *archived.entry(row.get("event_id")).or_default() += 1;
    }
    let accepted: Vec<&Published> = published.iter().filter(|p| p.id.is_some()).collect();
    for p in &accepted {
        let id = p.id.expect("accepted");
        match archived.get(id.as_bytes().as_slice()) {
            None => out.push(format!("not archived: {} {} {}", p.origin, p.ip, id)),
            Some(n) if *n > 1 => out.push(format!("archived {n} times: {id}")),
            Some(_) => {}
        }
    }
    // What each origin did last to each address it named (events accepted, in publish order
    // per origin: one thread per host).
    let mut last: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for p in &accepted {
        last.insert((&p.origin, &p.ip), p.ban);
    }
    for host in hosts {
        let held: BTreeSet<String> = host.shared_banned().into_iter().collect();
        for ((origin, ip), ban) in &last {
            if *origin == host.name {
                if held.contains(*ip) {
                    out.push(format!("{} got its own ban of {ip} back", host.name));
                }
                continue;
            }
            match (ban, held.contains(*ip)) {
                (true, false) => {
                    out.push(format!("{}: {origin}'s ban of {ip} not applied", host.name))
                }
                (false, true) => out.push(format!(
                    "{}: {ip} still banned after {origin} lifted it",
                    host.name
                )),
                _ => {}
            }
        }
        let log = host.f2b.log();
        let mut bans: BTreeMap<&str, usize> = BTreeMap::new();
        for line in log.lines().filter(|l| l.contains("[shared] Ban ")) {
            if let Some(ip) = line.rsplit(' ').next() {
                *bans.entry(ip).or_default() += 1;
            }
        }
        for (ip, n) in bans.into_iter().filter(|(_, n)| *n > 1) {
            out.push(format!("{}: {ip} banned {n} times", host.name));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_any_order_lose_nothing_and_apply_nothing_twice() {
    let seed: u64 = std::env::var("SHARED_F2B_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let faults: usize = std::env::var("SHARED_F2B_CHAOS_FAULTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!("chaos: seed {seed} (SHARED_F2B_CHAOS_SEED={seed} replays it), {faults} faults");
    let mut rng = Rng(seed | 1);

    let dir = tempfile::tempdir().unwrap();
    let mut power = PowerCut::mount(dir.path());
    let store = power.mount.join("store");
    // Power cuts on every server: where it syncs each write before its ack (2.10 and newer,
    // with the shipped config's `sync_interval: always` line on, as scripts/install turns it
    // on) the stream keeps what it acknowledged; on 2.9 a cut rewinds the stream's tail and its
    // numbering, which the archiver seals (archiver/src/rewind.rs) and the publishers' records
    // make up for.
    let sync_always = shared_f2b_tests::nats::has_sync_interval();
    eprintln!(
        "chaos: power cuts {}",
        if sync_always {
            "with sync_interval: always"
        } else {
            "on nats-server 2.9 (the stream's tail is lost)"
        }
    );
    let mut nats = site::nats_on_store(dir.path(), &store, sync_always);
    let port: u16 = nats
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the server's port");
    let db = TestDb::mariadb();
    let (arch, archiver) = site::archiver_with(dir.path(), &nats.url(), &db, "");
    let mut archiver = Some(archiver);
    let proxies: Vec<Proxy> = HOSTS.iter().map(|_| Proxy::start(port)).collect();
    let mut hosts: Vec<Host> = HOSTS
        .iter()
        .zip(&proxies)
        .map(|(name, proxy)| {
            let url = format!("nats://127.0.0.1:{}", proxy.port);
            site::host(dir.path(), name, &url, "ban", "", true)
        })
        .collect();
    power.sync();
    // The daemons apart from the hosts, which the publishing threads read meanwhile.
    let mut subscribers: Vec<Option<Daemon>> =
        hosts.iter_mut().map(|h| h.subscriber.take()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    std::thread::scope(|s| {
        for (i, host) in hosts.iter().enumerate() {
            let (stop, published) = (stop.clone(), published.clone());
            s.spawn(move || flow(host, i, seed, &stop, &published));
        }
        let mut restarts = 0;
        for n in 0..faults {
            std::thread::sleep(rng.millis(300, 1200));
            let fault = match rng.below(5) {
                0 => Fault::KillSubscriber(rng.below(3) as usize),
                1 => Fault::KillArchiver,
                2 => Fault::Partition(rng.below(3) as usize),
                3 => Fault::NatsRestart,
                _ => Fault::PowerCut,
            };
            eprintln!("chaos: fault {n} at {:?}: {fault:?}", started.elapsed());
            let down = rng.millis(200, 2000);
            match fault {
                Fault::KillSubscriber(i) => {
                    subscribers[i].take().expect("running").kill9();
                    std::thread::sleep(down);
                    subscribers[i] = Some(Daemon::subscriber(&hosts[i].config.path, &hosts[i].dir));
                }
                Fault::KillArchiver => {
                    if let Some(a) = archiver.take() {
                        a.kill9();
                    }
                    std::thread::sleep(down);
                    restarts += 1;
                    archiver = Some(Daemon::archiver(
                        &arch.path,
                        &dir.path().join(format!("archiver-{restarts}.log")),
                    ));
                }
                Fault::Partition(i) => {
                    proxies[i].cut();
                    std::thread::sleep(down);
                    proxies[i].heal();
                }
                Fault::NatsRestart => {
                    nats.stop();
                    std::thread::sleep(down);
                    nats.start();
                }
                Fault::PowerCut => {
                    nats.stop();
                    let lost = power.cut();
                    eprintln!("chaos: the cut lost unsynced writes in {lost} files");
                    std::thread::sleep(down);
                    nats.start();
                }
            }
        }
        // The flow goes on a moment after the last fault, then stops.
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
    });
    let published = published.lock().unwrap().clone();
    let accepted = published.iter().filter(|p| p.id.is_some()).count();
    eprintln!(
        "chaos: {} publishes ({accepted} accepted) during {} faults in {:?}",
        published.len(),
        faults,
        started.elapsed()
    );

    // Everything heals; the invariants must hold within a while (what the stream lost is sent
    // again within 20 s, a stream that went back is noticed within 30 s).
    let healed = Instant::now();
    let mut wrong = Vec::new();
    while healed.elapsed() < Duration::from_secs(150) {
        wrong = violations(&db, &hosts, &published).await;
        if wrong.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "chaos: the archivers sealed the stream {} times",
        seals(dir.path())
    );
    eprintln!(
        "chaos: consistent again {:?} after the flow stopped; bans held: {:?}",
        healed.elapsed(),
        hosts
            .iter()
            .map(|h| h.shared_banned().len())
            .collect::<Vec<_>>()
    );
    if !wrong.is_empty() {
        for (host, d) in hosts.iter().zip(&subscribers) {
            if let Some(d) = d {
                eprintln!(
                    "--- {} subscriber ---\n{}",
                    host.name,
                    tail(&d.log_text(), 30)
                );
            }
        }
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for w in &wrong {
            let kind: String = w
                .split(|c: char| c.is_ascii_digit())
                .next()
                .unwrap_or_default()
                .to_owned();
            *kinds.entry(kind).or_default() += 1;
        }
        let kept = dir.keep();
        panic!(
            "chaos seed {seed}: {} violations ({kinds:#?}), first: {:#?}; logs kept in {}",
            wrong.len(),
            &wrong[..wrong.len().min(20)],
            kept.display()
        );
    }
    drop(archiver);
}

/// How often the archivers' logs in `dir` say they sealed the stream.
fn seals(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("archiver"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|log| log.matches("the stream went back").count())
        .sum()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
