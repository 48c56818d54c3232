//! A small site of hosts with their own addresses, on this machine: one network namespace per
//! host (`ip netns`), each joined by a veth pair to a bridge in the `site` namespace. Nothing
//! crosses into the machine's own network: every address lives inside the test's namespaces.
//! Everything is torn down on drop, also when the test fails; namespaces left by a test process
//! that died are removed by the next [`Network::new`].
//!
//! Processes run in a namespace with `ip netns exec` ([`Network::command`]); the test itself
//! reaches into one from a thread that joined it ([`in_netns`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Where namespace names start: `sf2b-<pid>-<n>-<host>`.
const STEM: &str = "sf2b";
/// The site's subnet (the same in every network: each is its own world).
const SUBNET: [u8; 3] = [10, 77, 0];

/// One host of the network.
#[derive(Debug, Clone)]
pub struct Netns {
    /// The namespace's name (for `ip netns exec`).
    pub name: String,
    /// Its address on the site's bridge.
    pub addr: Ipv4Addr,
}

/// A site network: the `site` namespace with the bridge, and hosts added to it.
pub struct Network {
    id: String,
    pub site: Netns,
    hosts: Vec<Netns>,
}

/// Whether this machine lets the tests make namespaces (root, iproute2); asked once.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let name = format!("{STEM}-{}-probe", std::process::id());
        let made = ip(&["netns", "add", &name]).is_ok();
        if made {
            let _ = ip(&["netns", "del", &name]);
        }
        made
    })
}

/// Runs `ip` with `args`; whether it succeeded (its own words go nowhere: callers only ask
/// whether a namespace could be made or removed).
fn ip(args: &[&str]) -> std::io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    match out.status.success() {
        true => Ok(()),
        false => Err(std::io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// Where each test process holds a lock while it runs (its namespaces are in use).
const CLAIMS: &str = "/run/sf2b-tests";

/// Takes this process's lock, held until it exits.
fn claim() {
    static CLAIM: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    CLAIM.get_or_init(|| {
        std::fs::create_dir_all(CLAIMS).ok()?;
        let file = std::fs::File::create(format!("{CLAIMS}/{}.lock", std::process::id())).ok()?;
        locked(&file).then_some(file)
    });
}

/// Takes an exclusive lock on `file` without waiting.
fn locked(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Whether the test process `pid` still runs: it holds its lock (a pid reused by another
/// program holds none), or, without a lock file, its `/proc` entry exists.
fn owner_runs(pid: u32) -> bool {
    let path = format!("{CLAIMS}/{pid}.lock");
    match std::fs::File::open(&path) {
        Ok(file) => {
            let free = locked(&file);
            if free {
                let _ = std::fs::remove_file(&path);
            }
            !free
        }
        Err(_) => Path::new(&format!("/proc/{pid}")).exists(),
    }
}

/// Namespaces (and lock files) of test processes that no longer run.
fn sweep_stale() {
    for entry in std::fs::read_dir(CLAIMS).into_iter().flatten().flatten() {
        let pid = entry
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".lock")
            .parse();
        if let Ok(pid) = pid
            && pid != std::process::id()
        {
            // Removes the lock file of a process that is gone.
            owner_runs(pid);
        }
    }
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&format!("{STEM}-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !owner_runs(pid) {
            kill_all_in(&name);
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// Kills every process still running in namespace `name`.
fn kill_all_in(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

impl Network {
    /// Makes the `site` namespace with a bridge at `10.77.0.1/24`.
    pub fn new() -> Network {
        static N: AtomicU32 = AtomicU32::new(0);
        claim();
        sweep_stale();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let id = format!("{STEM}-{}-{n}", std::process::id());
        let site = Netns {
            name: format!("{id}-site"),
            addr: Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 1),
        };
        let network = Network {
            id,
            site: site.clone(),
            hosts: Vec::new(),
        };
        must(&["netns", "add", &site.name]);
        let ns = site.name.as_str();
        must(&["-n", ns, "link", "set", "lo", "up"]);
        must(&["-n", ns, "link", "add", "br0", "type", "bridge"]);
        must(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", site.addr),
            "dev",
            "br0",
        ]);
        must(&["-n", ns, "link", "set", "br0", "up"]);
        network
    }

    /// Adds host `name` at `10.77.0.<last>`, joined to the site's bridge.
    pub fn add_host(&mut self, name: &str, last: u8) -> Netns {
        let host = Netns {
            name: format!("{}-{name}", self.id),
            addr: Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], last),
        };
        // The pair is made inside the site's namespace, its host end moved straight into the
        // host's: nothing appears in the machine's own namespace, names need only be unique
        // within this network.
        let outer = format!("port{}", self.hosts.len());
        must(&["netns", "add", &host.name]);
        self.hosts.push(host.clone());
        must(&["-n", &host.name, "link", "set", "lo", "up"]);
        must(&[
            "-n",
            &self.site.name,
            "link",
            "add",
            &outer,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &host.name,
        ]);
        must(&[
            "-n",
            &host.name,
            "addr",
            "add",
            &format!("{}/24", host.addr),
            "dev",
            "eth0",
        ]);
        must(&["-n", &host.name, "link", "set", "eth0", "up"]);
        must(&[
            "-n",
            &self.site.name,
            "link",
            "set",
            &outer,
            "master",
            "br0",
        ]);
        must(&["-n", &self.site.name, "link", "set", &outer, "up"]);
        host
    }

    /// Cuts `host` off the site: an nftables table in its namespace silently drops every
    /// packet to or from the site's subnet (a partition: connections hang, nothing is refused).
    pub fn cut(&self, host: &Netns) {
        let subnet = format!("{}.{}.{}.0/24", SUBNET[0], SUBNET[1], SUBNET[2]);
        let rules = format!(
            "table inet sf2b_cut {{\n\
             chain in {{ type filter hook input priority -10; ip saddr {subnet} drop; }}\n\
             chain out {{ type filter hook output priority -10; ip daddr {subnet} drop; }}\n}}\n"
        );
        nft(host, &rules);
    }

    /// Heals a [`Network::cut`].
    pub fn heal(&self, host: &Netns) {
        nft(host, "delete table inet sf2b_cut\n");
    }

    /// A command that runs `program` in namespace `ns`.
    pub fn command(ns: &Netns, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(Some(&ns.name), program)
    }
}

/// Loads `rules` with `nft -f -` in `host`'s namespace.
fn nft(host: &Netns, rules: &str) {
    use std::io::Write;
    let mut child = Network::command(host, "nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft runs (Debian package nftables)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f: {rules}");
}

impl Default for Network {
    fn default() -> Self {
        Network::new()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.site)) {
            kill_all_in(&ns.name);
            let _ = ip(&["netns", "del", &ns.name]);
        }
    }
}

/// A command that runs `program` in namespace `netns` (`ip netns exec`), or here when `None`.
pub fn command_in(netns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Runs `f` on a thread that joined namespace `ns` (sockets it opens live there).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        enter(&path);
        f()
    })
    .join()
    .expect("the namespace thread")
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &str) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on a namespace file we hold open; it only changes this thread's network
    // namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Whether a TCP connection from namespace `from` to `to` is accepted within `timeout`.
pub fn can_connect(from: &Netns, to: SocketAddr, timeout: Duration) -> bool {
    in_netns(&from.name, move || {
        std::net::TcpStream::connect_timeout(&to, timeout).is_ok()
    })
}

/// Runs an async block on a runtime in namespace `ns` (e.g. a NATS client of the site).
pub fn block_on_in<F, T>(ns: &str, fut: F) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    in_netns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fut)
    })
}

/// A TCP service in a namespace that accepts and closes every connection: a port to probe
/// (an `allports` ban drops it like any other). Stopped on drop.
pub struct Listener {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Listener {
    /// Listens on `port` at `ns`'s address.
    pub fn start(ns: &Netns, port: u16) -> Listener {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addr = SocketAddr::from((ns.addr, port));
        let path = format!("/run/netns/{}", ns.name);
        let (ready, listening) = std::sync::mpsc::channel();
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            enter(&path);
            let listener = std::net::TcpListener::bind(addr).expect("probe port");
            listener.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            while !stopped.load(Ordering::Relaxed) {
                if listener.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        listening.recv().expect("the listener thread");
        Listener {
            stop,
            thread: Some(thread),
            addr,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
