//! Federation figures on `deploy/federation/` (a hub and sites, each its own nats-server and
//! archiver relaying the other sites' events; SQLite archives): a signed ban published by a
//! host of site a (a JetStream publish as the host's user, as `shared-f2b-publish` does) and
//! received by a host of site c through the hub, beside the same host-to-host figure inside
//! site a (same run); site c cut off while events happen at a, and how long after the heal it
//! has them all; and many sites on this machine, one ban to every host of every site, with the
//! servers' memory. Hosts are NATS clients in this process (receiving is where a subscriber
//! starts to apply).

use crate::report::{Report, percentiles};
use futures::StreamExt;
use shared_f2b::event::{Action, Event};
use shared_f2b::signing::Signer;
use shared_f2b_tests::federation::Federation;
use shared_f2b_tests::site;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

const WAIT: Duration = Duration::from_secs(60);

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + n))
}

/// A host of a site that signs with a key its operator vouched for.
struct Signing {
    js: async_nats::jetstream::Context,
    signer: Signer,
}

impl Signing {
    async fn new(fed: &Federation, site: &str, host: &str) -> Signing {
        let signer = Signer::generate();
        fed.vouch(site, host, signer.public_key()).await;
        let client = site::client(&fed.site(site).url(), host).await;
        Signing {
            js: async_nats::jetstream::new(client),
            signer,
        }
    }

    fn event(&self, host: &str, n: u32) -> Event {
        let mut e =
            Event::new(Action::Ban, host, "sshd", ip(n), SystemTime::now(), 600, 1).unwrap();
        self.signer.sign_event(&mut e);
        e
    }

    async fn send(&self, e: &Event) -> async_nats::jetstream::context::PublishAckFuture {
        let subject =
            shared_f2b::subject::event_subject("f2b", e.action, &e.jail, &e.origin).unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            e.id.to_string().as_str(),
        );
        self.js
            .publish_with_headers(subject, headers, e.encode().into())
            .await
            .unwrap()
    }
}

/// A host's live subscription: which event ids it has received.
async fn follow(url: &str, host: &str) -> async_nats::Subscriber {
    let client = site::client(url, host).await;
    client.subscribe("f2b.live.>").await.unwrap()
}

/// Waits until `sub` delivers the event `id`.
async fn wait_id(sub: &mut async_nats::Subscriber, id: &str) {
    tokio::time::timeout(WAIT, async {
        while let Some(msg) = sub.next().await {
            if std::str::from_utf8(&msg.payload).is_ok_and(|p| p.contains(id)) {
                return;
            }
        }
    })
    .await
    .expect("the event arrived");
}

/// Runs the federation figures.
pub async fn run(report: &mut Report, runs: usize, missed: u32, many: usize) {
    three_sites(report, runs, missed).await;
    if many > 0 {
        many_sites(report, many, runs.min(20)).await;
    }
}

async fn three_sites(report: &mut Report, runs: usize, missed: u32) {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path());
    let alice = Signing::new(&fed, "a", "alice").await;
    let mut anna = follow(&fed.site("a").url(), "anna").await;
    let mut charlie = follow(&fed.site("c").url(), "charlie").await;
    // Warm: c's relay has alice's key.
    let warm = alice.event("alice", 1);
    alice.send(&warm).await.await.unwrap();
    wait_id(&mut charlie, &warm.id.to_string()).await;
    wait_id(&mut anna, &warm.id.to_string()).await;

    let (mut inside, mut across) = (Vec::new(), Vec::new());
    for n in 0..runs as u32 {
        let e = alice.event("alice", 100 + n);
        let id = e.id.to_string();
        let t0 = Instant::now();
        alice.send(&e).await.await.unwrap();
        wait_id(&mut anna, &id).await;
        inside.push(t0.elapsed());
        wait_id(&mut charlie, &id).await;
        across.push(t0.elapsed());
    }
    let (in50, in99) = percentiles(&mut inside);
    let (x50, x99) = percentiles(&mut across);
    report
        .add(
            "federation: host at a -> host at c through the hub p50",
            x50,
            "ms",
            "<= 20 ms",
        )
        .reference = Some(("host -> host inside site a p50, ms".into(), in50));
    report
        .add(
            "federation: host at a -> host at c through the hub p99",
            x99,
            "ms",
            "<= 100 ms",
        )
        .reference = Some(("host -> host inside site a p99, ms".into(), in99));

    // c cut off while `missed` events happen at a.
    drop(anna);
    fed.site("c").link.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ids = HashSet::new();
    let mut acks = Vec::new();
    for n in 0..missed {
        let e = alice.event("alice", 100_000 + n);
        ids.insert(e.id.to_string());
        acks.push(alice.send(&e).await);
        // Within the client's acks in flight (5,000).
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let healed = Instant::now();
    fed.site("c").link.heal();
    tokio::time::timeout(WAIT, async {
        while let Some(msg) = charlie.next().await {
            if let Ok(e) = Event::decode(&msg.payload) {
                ids.remove(&e.id.to_string());
                if ids.is_empty() {
                    return;
                }
            }
        }
    })
    .await
    .expect("c converged");
    report.add(
        &format!("federation: c cut off while {missed} events at a, converged after heal"),
        healed.elapsed().as_secs_f64(),
        "s",
        "<= 10 s",
    );
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn many_sites(report: &mut Report, n: usize, runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::generated(dir.path(), n);
    let alice = Signing::new(&fed, "s1", "alice").await;
    let mut hosts = Vec::new();
    for s in &fed.sites {
        for host in ["alice", "anna"] {
            if s.id != "s1" || host != "alice" {
                hosts.push(follow(&s.url(), host).await);
            }
        }
    }
    // Warm: every relay has alice's key.
    let warm = alice.event("alice", 1);
    alice.send(&warm).await.await.unwrap();
    for h in &mut hosts {
        wait_id(h, &warm.id.to_string()).await;
    }
    let mut all = Vec::new();
    for r in 0..runs as u32 {
        let e = alice.event("alice", 200 + r);
        let id = e.id.to_string();
        let t0 = Instant::now();
        alice.send(&e).await.await.unwrap();
        for h in &mut hosts {
            wait_id(h, &id).await;
        }
        all.push(t0.elapsed());
    }
    let (p50, p99) = percentiles(&mut all);
    let mut rss: Vec<f64> = fed
        .sites
        .iter()
        .filter_map(|s| s.nats.pid())
        .map(rss_mib)
        .collect();
    rss.sort_by(f64::total_cmp);
    let hub = fed.hub.pid().map_or(0.0, rss_mib);
    let hosts = hosts.len() + 1;
    report.add(
        &format!("federation: {n} sites, one ban -> all {hosts} hosts p50"),
        p50,
        "ms",
        "",
    );
    report.add(
        &format!("federation: {n} sites, one ban -> all {hosts} hosts p99"),
        p99,
        "ms",
        "",
    );
    report
        .add(
            &format!("federation: {n} sites, site nats-server RSS (largest)"),
            rss.last().copied().unwrap_or(0.0),
            "MiB",
            "",
        )
        .reference = Some(("all site servers together, MiB".into(), rss.iter().sum()));
    report.add("federation: hub nats-server RSS", hub, "MiB", "");
}
