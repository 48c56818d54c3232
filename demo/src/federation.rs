//! `--federation`: three sites on this machine, as `deploy/federation/` ships them (a hub, sites
//! a, b and c, each its own nats-server, archiver and operator key; hosts with a real Fail2Ban
//! that sign their events). A ban at site a is applied at hosts of b and c; c's link to the hub
//! is cut while a and b keep banning, and c's own hosts keep sharing; on heal, c has everything
//! once.

use shared_f2b_tests::federation::Federation;
use shared_f2b_tests::host::Host;
use shared_f2b_tests::nats::read_stream_as;
use std::time::{Duration, Instant};

const ATTACKER: &str = "203.0.113.66";

fn holds(host: &Host, ip: &str) -> bool {
    host.f2b.banned("shared").iter().any(|b| b == ip)
}

/// Waits until every host in `hosts` holds `ip`, printing when each did.
async fn arrive(hosts: &[&Host], ip: &str, start: Instant) -> anyhow::Result<()> {
    let mut waiting: Vec<&Host> = hosts.to_vec();
    while !waiting.is_empty() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "{ip} did not reach {:?} within 30 s",
            waiting.iter().map(|h| &h.name).collect::<Vec<_>>()
        );
        waiting.retain(|h| {
            let held = holds(h, ip);
            if held {
                println!(
                    "  +{:7.1} ms  {:<8} banned {ip}",
                    start.elapsed().as_secs_f64() * 1000.0,
                    h.name
                );
            }
            !held
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn ban(host: &Host, ip: &str) -> anyhow::Result<()> {
    let out = host.config.publish(&["ban", "--jail", "sshd", "--ip", ip]);
    anyhow::ensure!(
        out.status.success(),
        "{} could not publish: {}",
        host.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Runs the story.
pub async fn run() -> anyhow::Result<()> {
    for tool in ["nats-server", "fail2ban-server"] {
        anyhow::ensure!(crate::on_path(tool), "{tool} is not installed");
    }
    let dir = tempfile::tempdir()?;
    println!("Shared Fail2Ban demo: three sites and a hub (deploy/federation/), on loopback");
    let fed = Federation::start(dir.path());
    println!(
        "  hub        {} (no JetStream; one account per site)",
        fed.hub.url()
    );
    for s in &fed.sites {
        println!(
            "  site {}     {} (JetStream domain {}), archiver relaying the other two sites",
            s.id,
            s.url(),
            s.id
        );
    }
    let alice = fed.host("a", "alice", "").await;
    let bob = fed.host("b", "bob", "").await;
    let charlie = fed.host("c", "charlie", "").await;
    let carol = fed.host("c", "carol", "").await;
    println!(
        "  hosts      alice@a, bob@b, charlie@c, carol@c: Fail2Ban + shared-f2b-subscriber, keys vouched by their site's operator"
    );

    println!(
        "\nalice's log gets three failed logins from {ATTACKER}; her Fail2Ban bans and publishes:"
    );
    let start = Instant::now();
    alice.fail_logins(ATTACKER, 3);
    arrive(&[&bob, &charlie, &carol], ATTACKER, start).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "  alice's shared jail: {} (a does not get its own ban back)",
        if holds(&alice, ATTACKER) {
            "BANNED (unexpected)"
        } else {
            "empty"
        }
    );

    println!("\nc's link to the hub is cut; alice and bob ban 10 addresses meanwhile:");
    fed.site("c").link.cut();
    let missed: Vec<String> = (1..=10).map(|n| format!("198.51.100.{n}")).collect();
    for (n, ip) in missed.iter().enumerate() {
        ban(if n % 2 == 0 { &alice } else { &bob }, ip)?;
    }
    println!(
        "  bob holds {} of them",
        missed.iter().filter(|ip| holds(&bob, ip)).count()
    );
    println!("inside c, charlie bans 192.0.2.99 and carol gets it:");
    let inside = Instant::now();
    ban(&charlie, "192.0.2.99")?;
    arrive(&[&carol], "192.0.2.99", inside).await?;
    println!(
        "  carol holds {} of a's and b's 10",
        missed.iter().filter(|ip| holds(&carol, ip)).count()
    );

    println!("\nthe link heals:");
    let healed = Instant::now();
    fed.site("c").link.heal();
    for ip in &missed {
        arrive(&[&charlie, &carol], ip, healed).await?;
    }
    let c = fed.site("c");
    let stored = read_stream_as(&c.url(), "admin", "change-me-admin", "F2B_EVENTS").await;
    let copies = missed
        .iter()
        .map(|ip| {
            stored
                .iter()
                .filter(|(s, e)| s.starts_with("f2b.remote.") && &e.ip.to_string() == ip)
                .count()
        })
        .collect::<Vec<_>>();
    println!(
        "  c's stream holds each of the 10 {} (copies: {copies:?})",
        if copies.iter().all(|n| *n == 1) {
            "exactly once"
        } else {
            "NOT once"
        }
    );
    println!("\ncleaning up");
    Ok(())
}
