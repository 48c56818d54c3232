//! Old hosts of the original Shared Fail2Ban on a test site: the archiver's
//! `[archiver.legacy_api]` for them, and raw HTTP requests from their own addresses.

use crate::site;

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
