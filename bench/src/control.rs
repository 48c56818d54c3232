//! Operators' orders: a pardon published by the operator -> the address lifted in every host's
//! Fail2Ban (`ban` mode, the shipped site config, three hosts), beside the raw `unban` on one
//! host's socket; and what the orders cost the publisher (a ban published with the run's orders
//! in force beside none).

use crate::report::{Report, percentiles};
use shared_f2b::control::{Control, parse_net};
use shared_f2b::subject::control_subject;
use shared_f2b_subscriber::apply::fail2ban::Fail2Ban as Socket;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::Host;
use shared_f2b_tests::site;
use shared_f2b_tests::{HostConfig, bin};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

fn ip(i: usize) -> String {
    Ipv4Addr::new(10, 210, (i >> 8) as u8, i as u8).to_string()
}

async fn banned(socket: &mut Socket, ip: &str) -> bool {
    socket
        .command(&["get", "shared", "banned", ip])
        .await
        .is_ok_and(|r| r.as_int() == Some(1))
}

/// Polls every host until `ip` is lifted on it; when each was, since `t0`.
async fn until_lifted(sockets: &mut [Socket], ip: &str, t0: Instant) -> Vec<Duration> {
    let mut when = vec![None; sockets.len()];
    while when.iter().any(Option::is_none) {
        assert!(t0.elapsed() < LIMIT, "{ip} never lifted everywhere");
        for (i, socket) in sockets.iter_mut().enumerate() {
            if when[i].is_none() && !banned(socket, ip).await {
                when[i] = Some(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    when.into_iter().map(Option::unwrap).collect()
}

fn publish(config: &HostConfig, ip: &str) -> Duration {
    let t0 = Instant::now();
    let out = Command::new(bin("shared-f2b-publish"))
        .arg("--config")
        .arg(&config.path)
        .args(["ban", "--jail", "sshd", "--ip", ip])
        .output()
        .expect("publish runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed()
}

pub async fn run(report: &mut Report, runs: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = site::nats(dir.path());
    let url = nats.url();
    let db = TestDb::sqlite(dir.path());
    let _archiver = site::archiver(dir.path(), &url, &db);
    let hosts: Vec<Host> = ["alice", "bob", "charlie"]
        .iter()
        .map(|n| site::host(dir.path(), n, &url, "ban", "", true))
        .collect();
    let mut sockets: Vec<Socket> = hosts.iter().map(|h| Socket::new(&h.f2b.socket)).collect();
    let admin = site::client(&url, "admin").await;
    let js = async_nats::jetstream::new(admin);
    let subject = control_subject(
        site::PREFIX,
        shared_f2b::control::ControlKind::Pardon,
        "admin",
    )
    .expect("subject");

    // The floor: one host's own `unban` until its socket says lifted.
    let mut floor = Vec::new();
    for i in 0..runs {
        let ip = ip(i);
        sockets[0]
            .command(&["set", "shared", "banip", &ip])
            .await
            .expect("banip");
        let t0 = Instant::now();
        sockets[0].command(&["unban", &ip]).await.expect("unban");
        floor.push(until_lifted(&mut sockets[..1], &ip, t0).await[0]);
    }

    let (mut every, mut each) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let ip = ip(runs + i);
        for socket in sockets.iter_mut() {
            socket
                .command(&["set", "shared", "banip", &ip])
                .await
                .expect("banip");
        }
        let order = Control::pardon(
            "admin",
            parse_net(&ip).expect("net"),
            Some(Duration::from_secs(3600)),
            "bench",
        )
        .expect("order");
        let t0 = Instant::now();
        js.publish(subject.clone(), order.encode().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        let lifted = until_lifted(&mut sockets, &ip, t0).await;
        every.push(*lifted.iter().max().expect("hosts"));
        each.extend(lifted);
    }
    let (f50, f99) = percentiles(&mut floor);
    let (e50, e99) = percentiles(&mut every);
    let (h50, _) = percentiles(&mut each);
    report
        .add(
            &format!("pardon -> lifted on all 3 hosts p50 ({runs} pardons, ban mode)"),
            e50,
            "ms",
            "<= 20 ms",
        )
        .reference = Some(("raw unban -> lifted p50".into(), f50));
    report
        .add(
            &format!("pardon -> lifted on all 3 hosts p99 ({runs} pardons)"),
            e99,
            "ms",
            "",
        )
        .reference = Some(("raw unban -> lifted p99".into(), f99));
    report.add("  per host p50", h50, "ms", "");

    // The publisher with the orders in force (alice's subscriber wrote them to controls.json)
    // beside a publisher whose state_dir holds none.
    let alice = &hosts[0];
    let standing =
        shared_f2b::standing::Standing::load(&shared_f2b::standing::path(&alice.dir.join("state")))
            .expect("alice's orders");
    let none = site::config(
        dir.path(),
        "alice",
        "alice",
        &url,
        &format!(
            "[subscriber]\nstate_dir = {:?}\n",
            dir.path().join("no-orders").display().to_string()
        ),
    );
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..50 {
        with.push(publish(
            &alice.config,
            &Ipv4Addr::new(10, 211, 0, i).to_string(),
        ));
        without.push(publish(&none, &Ipv4Addr::new(10, 211, 1, i).to_string()));
    }
    let (w50, _) = percentiles(&mut with);
    let (n50, _) = percentiles(&mut without);
    report
        .add(
            &format!(
                "publish a ban with {} orders in force p50",
                standing.controls.len()
            ),
            w50,
            "ms",
            "",
        )
        .reference = Some(("with no orders p50".into(), n50));
}
