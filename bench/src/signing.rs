//! Signature figures: a `shared-f2b-publish ban` process with and without signing (runs
//! interleaved, same server), and the subscriber's verification (the keyring's check of one
//! event: key lookup, ed25519 verify, key window) on one core, against plain decoding.

use crate::report::{Report, percentiles};
use shared_f2b::control::Control;
use shared_f2b::event::{Action, Event};
use shared_f2b::keyring::Keyring;
use shared_f2b::signing::{OperatorKeys, PublicKey, Signer};
use shared_f2b_tests::nats::NatsServer;
use shared_f2b_tests::{HostConfig, bin, unique};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Events in the verification figure.
const VERIFIED: usize = 100_000;

fn ban(config: &std::path::Path, i: usize) -> Duration {
    let mut c = Command::new(bin("shared-f2b-publish"));
    c.arg("--config").arg(config).args([
        "ban",
        "--jail",
        "sshd",
        "--ip",
        &format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
    ]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let start = Instant::now();
    let status = c.status().expect("the publisher runs");
    assert!(status.success(), "{c:?}: {status}");
    start.elapsed()
}

/// Runs the signature benchmarks and adds their rows.
pub fn run(report: &mut Report, runs: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = NatsServer::start_in(dir.path());
    let (prefix, stream) = (unique("bs"), unique("BS"));
    let plain = HostConfig::write(
        &dir.path().join("plain"),
        "alice",
        &nats.url(),
        &prefix,
        &stream,
        "",
    );
    let host = Signer::generate();
    let seed = dir.path().join("alice.seed");
    std::fs::write(&seed, host.seed()).unwrap();
    let signed = HostConfig::write(
        &dir.path().join("signed"),
        "alice",
        &nats.url(),
        &prefix,
        &stream,
        &format!("[trust]\nseed_file = {:?}\n", seed.display().to_string()),
    );
    for i in 0..10 {
        ban(&plain.path, i);
        ban(&signed.path, i);
    }
    let (mut without, mut with) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for i in 0..runs {
        without.push(ban(&plain.path, 2 * i));
        with.push(ban(&signed.path, 2 * i + 1));
    }
    let (u50, _) = percentiles(&mut without);
    let (s50, s99) = percentiles(&mut with);
    let unsigned = ("unsigned p50 ms (interleaved)".to_string(), u50);
    report
        .add(
            &format!("publish ban, signed, p50 ({runs} runs)"),
            s50,
            "ms",
            "<= unsigned + 0.3 ms",
        )
        .reference = Some(unsigned.clone());
    report
        .add(
            &format!("publish ban, signed, p99 ({runs} runs)"),
            s99,
            "ms",
            "",
        )
        .reference = Some(unsigned);
    report.add(
        "signing overhead on publish, p50",
        s50 - u50,
        "ms",
        "<= 0.3 ms",
    );

    // Verification: 100k events of 3 hosts, each signed, checked one by one on this thread.
    let operator = Signer::generate();
    let operators = OperatorKeys::new(vec![PublicKey::parse(operator.public_key()).unwrap()]);
    let hosts: Vec<(String, Signer)> = (0..3)
        .map(|i| (format!("host{i}"), Signer::generate()))
        .collect();
    let mut ring = Keyring::default();
    let since = SystemTime::now() - Duration::from_secs(3600);
    for (name, key) in &hosts {
        let mut record =
            Control::key_record("admin", name, key.public_key(), since, None, "bench").unwrap();
        operator.sign_control(&mut record);
        ring.take(&record, &operators).unwrap();
    }
    let payloads: Vec<Vec<u8>> = (0..VERIFIED)
        .map(|i| {
            let (name, key) = &hosts[i % hosts.len()];
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32));
            let mut e =
                Event::new(Action::Ban, name, "sshd", ip, SystemTime::now(), 600, 3).unwrap();
            key.sign_event(&mut e);
            e.encode()
        })
        .collect();
    let now = SystemTime::now();
    let start = Instant::now();
    let mut decoded = Vec::with_capacity(VERIFIED);
    for p in &payloads {
        decoded.push(Event::decode(p).unwrap());
    }
    let decode_rate = VERIFIED as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for e in &decoded {
        ring.check(e, Some(now)).expect("every event verifies");
    }
    let one_by_one = VERIFIED as f64 / start.elapsed().as_secs_f64();
    // As the subscriber does it: a batch (up to 2048 messages) checked at once, then each
    // event's owner and window.
    let start = Instant::now();
    for chunk in decoded.chunks(2048) {
        let refs: Vec<Option<&Event>> = chunk.iter().map(Some).collect();
        let good = ring.verify_all(&refs);
        for (e, good) in chunk.iter().zip(good) {
            ring.check_verified(e, Some(now), good)
                .expect("every event verifies");
        }
    }
    let batched = VERIFIED as f64 / start.elapsed().as_secs_f64();
    report
        .add(
            &format!("verify signed events, one core, batches of 2048 ({VERIFIED})"),
            batched,
            "/s",
            ">= 50,000/s",
        )
        .reference = Some(("one by one /s".to_string(), one_by_one));
    report
        .add(
            &format!("  decoding the same events, one core ({VERIFIED})"),
            decode_rate,
            "/s",
            "",
        )
        .reference = None;
}
