//! Packets: mallory's last failed SSH login on alice -> mallory's packets dropped on bob, on
//! real hosts in network namespaces (sshd, Fail2Ban with `nftables-allports`, the subscriber),
//! beside the same measure on alice herself (Fail2Ban's own floor: reading sshd's log, banning,
//! adding the nftables element). Between runs alice lifts the ban and it is lifted everywhere.

use crate::report::{Report, percentiles};
use shared_f2b_tests::netns::{self, Listener, Netns};
use shared_f2b_tests::world::{MAXRETRY, World, failed_login};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The port probed on each host (any port: the ban drops them all).
const PROBE_PORT: u16 = 7;
/// Longest wait for a run's ban or unban.
const LIMIT: Duration = Duration::from_secs(30);

/// From the end of mallory's last failed login until her connections to `alice` and `bob` are
/// refused; probing every millisecond from her namespace.
fn until_dropped(mallory: &Netns, alice: SocketAddr, bob: SocketAddr) -> (Duration, Duration) {
    let started = Instant::now();
    netns::in_netns(&mallory.name, move || {
        let (mut on_alice, mut on_bob) = (None, None);
        let probe = |addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50));
        while on_alice.is_none() || on_bob.is_none() {
            assert!(started.elapsed() < LIMIT, "mallory never blocked");
            if on_alice.is_none() && probe(alice).is_err() {
                on_alice = Some(started.elapsed());
            }
            if on_bob.is_none() && probe(bob).is_err() {
                on_bob = Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (on_alice.unwrap(), on_bob.unwrap())
    })
}

fn measure(report: &mut Report, apply: &str, runs: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut world = World::new(dir.path());
    world.add_host("alice", 2, "ban");
    world.add_host("bob", 3, apply);
    let mallory = world.add_client("mallory", 66);
    let (alice, bob) = (world.host("alice"), world.host("bob"));
    let probes = [
        Listener::start(&alice.ns, PROBE_PORT),
        Listener::start(&bob.ns, PROBE_PORT),
    ];
    let (mut floor, mut shared) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for probe in &probes {
            let deadline = Instant::now() + LIMIT;
            while !netns::can_connect(&mallory, probe.addr, Duration::from_millis(200)) {
                assert!(
                    Instant::now() < deadline,
                    "the unban never reached {}",
                    probe.addr
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for _ in 0..MAXRETRY {
            failed_login(&mallory, alice.ssh_addr());
        }
        let (on_alice, on_bob) = until_dropped(&mallory, probes[0].addr, probes[1].addr);
        floor.push(on_alice);
        shared.push(on_bob);
        alice
            .f2b
            .client(&["set", "sshd", "unbanip", &mallory.addr.to_string()])
            .expect("unbanip");
    }
    let (f50, f99) = percentiles(&mut floor);
    let (s50, s99) = percentiles(&mut shared);
    println!(
        "packets ({apply}): {runs} runs; dropped on alice p50 {f50:.1} ms p99 {f99:.1} ms, \
         on bob p50 {s50:.1} ms p99 {s99:.1} ms"
    );
    for (q, value, reference) in [("p50", s50, f50), ("p99", s99, f99)] {
        report
            .add(
                &format!("last failed login -> dropped on bob, {apply} {q}"),
                value,
                "ms",
                "(measure)",
            )
            .reference = Some((format!("dropped on alice {q}"), reference));
    }
}

/// Both modes, `runs` bans each.
pub fn run(report: &mut Report, runs: usize) {
    if !netns::available() {
        println!("packets: skipped (needs root and network namespaces)");
        return;
    }
    measure(report, "ban", runs);
    measure(report, "attempt", runs);
}
