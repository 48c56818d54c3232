//! The demo on a site of real hosts (`shared_f2b_tests::world`): each host in its own network
//! namespace on 10.77.0.0/24 with OpenSSH's sshd, a fail2ban-server whose `sshd` jail bans with
//! nftables and publishes through the shipped action, and `shared-f2b-subscriber`; the site
//! runs nats-server (`deploy/nats-server.conf` as shipped) and the archiver (SQLite), and every
//! host is enrolled with a key of its own (`shared-f2b-admin host add`), which signs its events.
//!
//! mallory fails to log in to alice; from her last failed login the demo times the moment her
//! TCP connections to alice, bob and charlie start failing, while a bystander still connects.
//! Then dave joins late: his subscriber backfills the active bans from the archive and his sshd
//! drops mallory too. Last, the archive tells the ban's story (`history --ip`). Daemons,
//! namespaces and files go when the world is dropped.

use shared_f2b_tests::bin;
use shared_f2b_tests::netns::{self, Netns, Network, in_netns};
use shared_f2b_tests::world::{MAXRETRY, World, failed_login};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long one connection attempt may take.
const PROBE: Duration = Duration::from_millis(200);
/// How often to try again. Every attempt on port 22 costs the host an sshd process and a log
/// line for Fail2Ban: trying every 5 ms slowed the very bans it timed on a 2-core machine.
const POLL: Duration = Duration::from_millis(20);
/// How long anything the demo waits for may take.
const WAIT: Duration = Duration::from_secs(30);

/// Why this machine cannot run the site, if it cannot.
pub fn unavailable() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return Some("it needs root (network namespaces, sshd, nftables)".into());
    }
    let tools = [
        "ip",
        "nats-server",
        "fail2ban-server",
        "ssh",
        "ssh-keygen",
        "nft",
    ];
    if let Some(tool) = tools.iter().find(|t| !crate::on_path(t)) {
        return Some(format!("{tool} is not installed"));
    }
    if !std::path::Path::new("/usr/sbin/sshd").exists() {
        return Some("/usr/sbin/sshd is not installed (openssh-server)".into());
    }
    if !netns::available() {
        return Some(
            "`ip netns add` fails on this machine (a container without CAP_SYS_ADMIN?)".into(),
        );
    }
    None
}

/// Runs the story.
pub fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let t0 = Instant::now();
    println!("Shared Fail2Ban demo: real hosts, each in its own network namespace (10.77.0.0/24)");
    let mut world = World::with_keys(dir.path());
    println!(
        "  site     {}  nats-server (deploy/nats-server.conf), shared-f2b-archiver (SQLite); \
         hosts enrolled with keys of their own (shared-f2b-admin host add)",
        world.net.site.addr
    );
    let mut targets = Vec::new();
    for (name, last) in [("alice", 2), ("bob", 3), ("charlie", 4)] {
        world.add_host(name, last, "ban");
        let host = world.host(name);
        println!(
            "  {name:<8} {}  sshd, fail2ban-server (jail sshd: maxretry {MAXRETRY}, nftables + \
             shared-f2b; jail shared: remote bans), shared-f2b-subscriber",
            host.ns.addr
        );
        targets.push((name, host.ssh_addr()));
    }
    let mallory = world.add_client("mallory", 66);
    let erin = world.add_client("erin", 6);
    println!(
        "  mallory  {}  the attacker;  erin {}  a bystander",
        mallory.addr, erin.addr
    );
    println!(
        "  up in {:.1} s, files in {}",
        t0.elapsed().as_secs_f64(),
        dir.path().display()
    );

    println!("\nmallory reaches sshd on bob and charlie:");
    for (name, addr) in &targets[1..] {
        println!("  mallory → {name:<8} {addr}: {}", outcome(&mallory, *addr));
    }

    let alice = targets[0].1;
    println!(
        "\nmallory fails to log in to alice {MAXRETRY} times (ssh nosuchuser@{}):",
        alice.ip()
    );
    for n in 1..=MAXRETRY {
        let t = Instant::now();
        failed_login(&mallory, alice);
        println!("  login {n}: failed ({})", ms(t.elapsed()));
    }

    let last_login = Instant::now();
    println!("\nher connection attempts, every {POLL:?}, timed from her last failed login:");
    let mut open: Vec<_> = targets.clone();
    while !open.is_empty() {
        anyhow::ensure!(
            last_login.elapsed() < WAIT,
            "mallory still reaches {open:?} after {WAIT:?}"
        );
        open.retain(|(name, addr)| {
            let tried = last_login.elapsed();
            match connect(&mallory, *addr) {
                Ok(()) => true,
                Err(e) => {
                    println!("  +{:>9}  mallory → {name:<8} {addr}: {e}", ms(tried));
                    false
                }
            }
        });
        std::thread::sleep(POLL);
    }
    for (name, addr) in &targets {
        println!("  erin    → {name:<8} {addr}: {}", outcome(&erin, *addr));
    }
    let ip = mallory.addr.to_string();
    println!(
        "  banned: alice's jail sshd {:?}, bob's jail shared {:?}, charlie's jail shared {:?}",
        world.host("alice").f2b.banned("sshd"),
        world.host("bob").f2b.banned("shared"),
        world.host("charlie").f2b.banned("shared"),
    );

    let rt = tokio::runtime::Runtime::new()?;
    wait_until("the archive to hold the ban", || {
        rt.block_on(world.db.rows()) > 0
    })?;
    println!("\ndave (10.77.0.5) joins late, with an empty state:");
    let joining = Instant::now();
    world.add_host("dave", 5, "ban");
    let dave = world.host("dave");
    if let Some(said) = &dave.enrolled {
        println!("  shared-f2b-admin host add dave: {}", said.trim());
    }
    println!(
        "  +{:>9}  dave enrolled; his sshd, fail2ban-server and subscriber are up",
        ms(joining.elapsed())
    );
    wait_until("dave's jail shared to hold mallory", || {
        dave.f2b.banned("shared").contains(&ip)
    })?;
    println!(
        "  +{:>9}  dave's jail shared: {:?} (backfilled from the archive)",
        ms(joining.elapsed()),
        dave.f2b.banned("shared")
    );
    if let Some(line) = std::fs::read_to_string(dave.dir.join("subscriber.log"))?
        .lines()
        .find(|l| l.contains("backfill"))
    {
        println!("  dave's subscriber.log: {}", line.trim());
    }
    wait_until("dave's sshd to drop mallory", || {
        connect(&mallory, dave.ssh_addr()).is_err()
    })?;
    println!(
        "  mallory → dave     {}: {}",
        dave.ssh_addr(),
        outcome(&mallory, dave.ssh_addr())
    );
    println!(
        "  erin    → dave     {}: {}",
        dave.ssh_addr(),
        outcome(&erin, dave.ssh_addr())
    );

    println!("\nshared-f2b-archiver history --ip {ip}:");
    let out = Network::command(&world.net.site, bin("shared-f2b-archiver"))
        .arg("--config")
        .arg(&world.archiver_config.path)
        .args(["history", "--ip", &ip])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "history: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("  {line}");
    }

    println!(
        "\ncleaning up (daemons, namespaces, {})",
        dir.path().display()
    );
    drop(world);
    println!("done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// One TCP connection attempt from `from` to `to`: `Ok` when accepted, else why not.
fn connect(from: &Netns, to: SocketAddr) -> std::io::Result<()> {
    in_netns(&from.name, move || {
        TcpStream::connect_timeout(&to, PROBE).map(drop)
    })
}

/// What one connection attempt gives, in words.
fn outcome(from: &Netns, to: SocketAddr) -> String {
    match connect(from, to) {
        Ok(()) => "connect ok".into(),
        Err(e) => format!("connect fails: {e}"),
    }
}

/// Polls `check` every [`POLL`] until it holds, for at most [`WAIT`].
fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !check() {
        anyhow::ensure!(start.elapsed() < WAIT, "{what}: nothing after {WAIT:?}");
        std::thread::sleep(POLL);
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
