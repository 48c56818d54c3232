//! Real hosts, real packets: every host in its own network namespace with its own address,
//! OpenSSH, Fail2Ban with nftables and the subscriber (see `shared_f2b_tests::world`). The
//! promise is about packets: after mallory fails to log in to alice, mallory cannot reach bob.
//! Partitions are made in the network (packets dropped), not by stopping a process.

use shared_f2b_tests::netns::{self, Netns, can_connect};
use shared_f2b_tests::wait_until;
use shared_f2b_tests::world::{MAXRETRY, RealHost, World, failed_login};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const PROBE: Duration = Duration::from_millis(300);

fn shipped_nats_config() -> String {
    shared_f2b_tests::site::shipped_config()
}

fn world(dir: &std::path::Path, apply: &str) -> World {
    world_with(dir, apply, &shipped_nats_config())
}

/// alice, bob and charlie in `apply` mode, nats-server running `config`.
fn world_with(dir: &std::path::Path, apply: &str, config: &str) -> World {
    assert!(
        netns::available(),
        "these tests make network namespaces: run them as root on Linux with iproute2"
    );
    let mut world = World::with_nats_config(dir, config);
    for (name, last) in [("alice", 2), ("bob", 3), ("charlie", 4)] {
        world.add_host(name, last, apply);
    }
    world
}

fn reaches(from: &Netns, host: &RealHost) -> bool {
    can_connect(from, host.ssh_addr(), PROBE)
}

/// The story in `apply` mode: mallory fails to log in to alice until alice's Fail2Ban bans her;
/// then her connections to bob's and charlie's sshd fail while dave's still succeed; alice's
/// early unban lets her in again everywhere.
fn mallory_is_banned_everywhere_by_packets(apply: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut world = world(dir.path(), apply);
    let mallory = world.add_client("mallory", 66);
    let dave = world.add_client("dave", 5);
    let (alice, bob, charlie) = (
        world.host("alice"),
        world.host("bob"),
        world.host("charlie"),
    );
    for host in [alice, bob, charlie] {
        assert!(
            reaches(&mallory, host),
            "before: mallory reaches {}",
            host.name
        );
        assert!(reaches(&dave, host), "before: dave reaches {}", host.name);
    }

    for _ in 0..MAXRETRY {
        failed_login(&mallory, alice.ssh_addr());
    }
    let banned_at = Instant::now();
    for host in [alice, bob, charlie] {
        wait_until(
            WAIT,
            &format!("mallory's packets dropped by {}", host.name),
            || !reaches(&mallory, host),
        );
    }
    eprintln!(
        "{apply}: mallory blocked on alice, bob and charlie after {:?}",
        banned_at.elapsed()
    );
    for host in [alice, bob, charlie] {
        assert!(reaches(&dave, host), "dave still reaches {}", host.name);
    }
    assert_eq!(alice.f2b.banned("sshd"), [mallory.addr.to_string()]);
    for host in [bob, charlie] {
        assert_eq!(host.f2b.banned("shared"), [mallory.addr.to_string()]);
    }
    // The jail's port and protocol travelled with the ban, as Fail2Ban gave them to the action.
    wait_until(WAIT, "the ban's port and protocol in the archive", || {
        let history = shared_f2b_tests::legacy::history(
            &world.archiver_config.path,
            &mallory.addr.to_string(),
        );
        history
            .lines()
            .any(|l| l.contains(" ban ") && l.ends_with(" ssh/tcp"))
    });

    // Alice lifts her ban early: mallory may reach every host again.
    alice
        .f2b
        .client(&["set", "sshd", "unbanip", &mallory.addr.to_string()])
        .expect("fail2ban-client unbanip");
    for host in [alice, bob, charlie] {
        wait_until(
            WAIT,
            &format!("mallory reaching {} again", host.name),
            || reaches(&mallory, host),
        );
    }
}

#[test]
fn mallory_fails_to_log_in_to_alice_and_cannot_reach_bob_or_charlie_ban_mode() {
    mallory_is_banned_everywhere_by_packets("ban");
}

#[test]
fn mallory_fails_to_log_in_to_alice_and_cannot_reach_bob_or_charlie_attempt_mode() {
    mallory_is_banned_everywhere_by_packets("attempt");
}

/// Alice cut off from the site (her packets to it dropped): her action spools the ban within
/// `publisher.timeout` (2 s here) plus a little and exits 0; after the heal the ban reaches
/// bob and charlie once, and the archive once.
#[test]
fn a_host_cut_off_from_the_site_spools_then_delivers_once_after_the_heal() {
    let dir = tempfile::tempdir().unwrap();
    let world = world(dir.path(), "ban");
    let (alice, bob, charlie) = (
        world.host("alice"),
        world.host("bob"),
        world.host("charlie"),
    );
    let ip = "198.51.100.7";

    world.net.cut(&alice.ns);
    let started = Instant::now();
    let out = alice.publish(&["ban", "--jail", "sshd", "--ip", ip]);
    let took = started.elapsed();
    eprintln!(
        "publish with alice cut off: exit {:?} after {took:?}",
        out.status.code()
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(alice.config.spooled(), 1);
    assert!(
        took < Duration::from_millis(3500),
        "the action spooled after {took:?}, more than publisher.timeout (2 s) and a little"
    );

    world.net.heal(&alice.ns);
    for host in [bob, charlie] {
        wait_until(
            Duration::from_secs(60),
            &format!("the ban on {}", host.name),
            || host.f2b.banned("shared").iter().any(|b| b == ip),
        );
    }
    // A sentinel published after it: once it is applied, a second delivery of the first, which
    // the stream would hold before it, had its chance to show.
    let sentinel = "198.51.100.99";
    let out = alice.publish(&["ban", "--jail", "sshd", "--ip", sentinel]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for host in [bob, charlie] {
        wait_until(
            Duration::from_secs(60),
            &format!("the sentinel ban on {}", host.name),
            || host.f2b.banned("shared").iter().any(|b| b == sentinel),
        );
    }
    for host in [bob, charlie] {
        assert_eq!(
            host.bans_logged("shared", ip),
            1,
            "{} banned it once",
            host.name
        );
    }
    assert_eq!(alice.config.spooled(), 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The ban and the sentinel, each once.
        shared_f2b_tests::wait_for(WAIT, "the archive to hold the ban", || async {
            (world.db.rows().await == 2).then_some(())
        })
        .await;
    });
}

/// Bob cut off while alice's bans flow: after the heal he has every one of them — those the
/// server had queued for him and those sent after it dropped him, through a catch-up — each
/// applied once by his Fail2Ban.
#[test]
fn a_host_cut_off_while_bans_flow_misses_nothing_and_applies_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    // The server pings every second and drops a client after two unanswered pings, so bob's
    // connection is gone when the heal comes: what he missed must come through a catch-up.
    let config = shipped_nats_config() + "\nping_interval: \"1s\"\nping_max: 2\n";
    let world = world_with(dir.path(), "ban", &config);
    let (alice, bob, charlie) = (
        world.host("alice"),
        world.host("bob"),
        world.host("charlie"),
    );
    let ips: Vec<String> = (1..=10).map(|i| format!("198.51.100.{i}")).collect();

    let publish = |ip: &str| {
        let out = alice.publish(&["ban", "--jail", "sshd", "--ip", ip]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Five bans while the server still holds bob's connection (they wait in TCP's queue), then,
    // once the server dropped him as stale (two pings unanswered), five it cannot send him.
    world.net.cut(&bob.ns);
    for ip in &ips[..5] {
        publish(ip);
    }
    // Kept: what it waits for is the server's own ping timer (1 s, two missed) dropping bob,
    // which nothing outside the server shows.
    std::thread::sleep(Duration::from_secs(4));
    for ip in &ips[5..] {
        publish(ip);
    }
    wait_until(WAIT, "charlie to have them all", || {
        charlie.f2b.banned("shared").len() == ips.len()
    });
    assert!(bob.f2b.banned("shared").is_empty(), "bob was cut off");
    world.net.heal(&bob.ns);
    wait_until(Duration::from_secs(90), "bob to have them all", || {
        bob.f2b.banned("shared").len() == ips.len()
    });
    // A sentinel after them: once bob applied it, a second delivery of any (from the catch-up
    // or live) had its chance to show.
    publish("198.51.100.99");
    wait_until(WAIT, "bob to apply the sentinel", || {
        bob.f2b
            .banned("shared")
            .iter()
            .any(|b| b == "198.51.100.99")
    });
    for ip in &ips {
        assert_eq!(bob.bans_logged("shared", ip), 1, "bob banned {ip} once");
    }
    let log = bob.subscriber.as_ref().unwrap().log_text();
    assert!(
        log.contains("catching up through the archiver"),
        "bob caught up through the archiver:\n{log}"
    );
}
