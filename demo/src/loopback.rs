//! The loopback demo, for machines without network namespaces: a private nats-server, three real
//! fail2ban-server sandboxes (alice, bob, charlie) each with a subscriber, all on loopback;
//! failed logins written to alice's log get an address banned there, and bob and charlie ban it
//! milliseconds later, while alice does not get her own ban back. Everything runs in a temporary
//! directory and is removed.

use shared_f2b_subscriber::apply::fail2ban::Fail2Ban as Socket;
use shared_f2b_tests::host::{Host, HostSpec};
use shared_f2b_tests::nats::{NatsServer, read_stream};
use std::time::{Duration, Instant};

const ATTACKER: &str = "203.0.113.77";
const STREAM: &str = "F2B_EVENTS";

fn need(tool: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::on_path(tool),
        "{tool} is not installed (Debian: apt-get install nats-server fail2ban)"
    );
    Ok(())
}

/// Whether `ip` is banned in `jail`, asked over the socket (no process per question).
async fn banned(socket: &mut Socket, jail: &str, ip: &str) -> bool {
    socket
        .command(&["get", jail, "banned", ip])
        .await
        .is_ok_and(|r| r.as_int() == Some(1))
}

/// Runs the story.
pub async fn run() -> anyhow::Result<()> {
    need("nats-server")?;
    need("fail2ban-server")?;
    let dir = tempfile::tempdir()?;
    let nats = NatsServer::start_in(dir.path());
    println!("Shared Fail2Ban demo (loopback)");
    println!(
        "  NATS JetStream: {} (private, in {})",
        nats.url(),
        dir.path().display()
    );
    let url = nats.url();
    let mut hosts = Vec::new();
    for name in ["alice", "bob", "charlie"] {
        let mut host = Host::new(
            dir.path(),
            &HostSpec {
                name,
                nats_url: &url,
                prefix: "f2b",
                stream: STREAM,
                apply: "ban",
                subscriber_extra: "",
                shared_jail_extra: "",
            },
        );
        host.start_subscriber();
        println!(
            "  {name:<8} fail2ban-server (jail login: maxretry 3, action shared-f2b; jail shared: remote bans) + shared-f2b-subscriber"
        );
        hosts.push(host);
    }
    let mut sockets: Vec<Socket> = hosts.iter().map(|h| Socket::new(&h.f2b.socket)).collect();

    println!("\nalice's sshd-like log gets three failed logins from {ATTACKER}:");
    let start = Instant::now();
    hosts[0].fail_logins(ATTACKER, 3);
    let ms = |t: Instant| t.duration_since(start).as_secs_f64() * 1000.0;

    // Who has banned it so far: alice in her own jail; bob and charlie in their shared jail.
    let watch = [("alice", "login"), ("bob", "shared"), ("charlie", "shared")];
    let mut seen: [Option<Instant>; 3] = [None; 3];
    let deadline = start + Duration::from_secs(20);
    while seen.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, (name, jail)) in watch.iter().enumerate() {
            if seen[i].is_none() && banned(&mut sockets[i], jail, ATTACKER).await {
                let now = Instant::now();
                seen[i] = Some(now);
                match seen[0] {
                    Some(alice) if i > 0 => println!(
                        "  +{:8.1} ms  {name:<8} banned {ATTACKER} in jail {jail}: {:.1} ms after alice",
                        ms(now),
                        now.duration_since(alice).as_secs_f64() * 1000.0
                    ),
                    _ => println!(
                        "  +{:8.1} ms  {name:<8} banned {ATTACKER} in jail {jail} (Fail2Ban read the log, the action published)",
                        ms(now)
                    ),
                }
            }
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    anyhow::ensure!(
        seen.iter().all(Option::is_some),
        "not every host banned it within 20 s"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let echo = banned(&mut sockets[0], "shared", ATTACKER).await;
    println!(
        "  alice's shared jail: {} — alice does not get her own ban back",
        if echo { "BANNED (unexpected)" } else { "empty" }
    );

    let events = read_stream(&url, STREAM).await;
    println!("\nthe stream {STREAM} holds {} event(s):", events.len());
    for (subject, event) in &events {
        println!("  {subject}  {}", String::from_utf8_lossy(&event.encode()));
    }

    println!("\nalice's admin lifts the ban early (fail2ban-client set login unbanip {ATTACKER}):");
    let lifted = Instant::now();
    hosts[0].f2b.client(&["set", "login", "unbanip", ATTACKER]);
    for (i, name) in [(1, "bob"), (2, "charlie")] {
        while banned(&mut sockets[i], "shared", ATTACKER).await {
            anyhow::ensure!(
                lifted.elapsed() < Duration::from_secs(20),
                "{name} kept the ban"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        println!(
            "  {name:<8} lifted it {:.1} ms later",
            lifted.elapsed().as_secs_f64() * 1000.0
        );
    }
    println!("\ncleaning up");
    drop(sockets);
    drop(hosts);
    drop(nats);
    Ok(())
}
