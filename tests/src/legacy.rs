//! Old hosts of the original Shared Fail2Ban on a test site: its table, the archiver's
//! `[archiver.legacy_api]` for them, raw HTTP requests from their own addresses, the old host's
//! script (tests/legacy/old_host.py) and its own Fail2Ban.

use crate::fail2ban::Fail2Ban;
use crate::{bin, repo_root, site};
use std::process::Command;

/// The original's table, as its schema creates it.
pub const LEGACY_TABLE: &str = "CREATE TABLE f2b ( \
    id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, \
    hostname varchar(255) DEFAULT NULL, \
    created datetime DEFAULT NULL, \
    jail text, \
    protocol varchar(16) DEFAULT NULL, \
    port varchar(32) DEFAULT NULL, \
    ip varchar(64) DEFAULT NULL, \
    bantime varchar(32) DEFAULT '900', \
    KEY hostname (hostname, ip))";
use std::path::Path;

/// One old host: its host id (and NATS user on the shipped site), token and address.
pub struct OldHost<'a> {
    pub name: &'a str,
    pub token: &'a str,
    pub address: &'a str,
}

/// `http_listen` on `port` and `[archiver.legacy_api]` for `hosts`, each with its own config
/// (logging in as itself) and token file in `dir`: keys for [`site::archiver_with`].
pub fn api_keys(dir: &Path, url: &str, port: u16, hosts: &[OldHost]) -> String {
    let mut keys =
        format!("http_listen = \"127.0.0.1:{port}\"\n\n[archiver.legacy_api]\nallow = []\n");
    for host in hosts {
        let cfg = site::config(dir, host.name, host.name, url, "");
        let token_file = dir.join(format!("{}.token", host.name));
        std::fs::write(&token_file, format!("{}\n", host.token)).unwrap();
        keys.push_str(&format!(
            "\n[[archiver.legacy_api.hosts]]\nconfig = {:?}\ntoken_file = {:?}\naddresses = [{:?}]\n",
            cfg.path.display().to_string(),
            token_file.display().to_string(),
            host.address
        ));
    }
    keys
}

/// One HTTP/1.1 request to `127.0.0.1:port` from address `source` (any of 127.0.0.0/8);
/// `head` is the method and path, then any header lines. The status and body.
pub async fn request(port: u16, source: &str, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let (line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let headers = if headers.is_empty() {
        String::new()
    } else {
        format!("{headers}\r\n")
    };
    let head = format!(
        "{line} HTTP/1.1\r\n{headers}Host: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // A server that answers early (413) may close before it all went out.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Runs the old host of tests/legacy/old_host.py (its PUT, its cron pull, or the same straight
/// on the table); whether it exited 0, and what it printed.
pub fn old_host(args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(repo_root().join("tests/legacy/old_host.py"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The old host's own Fail2Ban in `dir/oldweb-f2b`: jail `shared-pull` bans from the pulled
/// `filter-all.log` with the original's failregex `\[<HOST>\]`.
pub fn old_fail2ban(dir: &Path) -> Fail2Ban {
    let dir = dir.join("oldweb-f2b");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("filter-all.log"), "").unwrap();
    let jails = format!(
        "[DEFAULT]\nbackend = polling\n\n[shared-pull]\nenabled = true\nfilter = login\n\
         failregex = \\[<HOST>\\]\ndatepattern = {{NONE}}\nlogpath = {}\nmaxretry = 1\n\
         findtime = 1h\nbantime = 3600\naction = noop\n",
        dir.join("filter-all.log").display()
    );
    Fail2Ban::start(&dir, &jails)
}

/// `shared-f2b-archiver history --ip IP` with the config at `cfg`.
pub fn history(cfg: &Path, ip: &str) -> String {
    let out = Command::new(bin("shared-f2b-archiver"))
        .arg("--config")
        .arg(cfg)
        .args(["history", "--ip", ip])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
