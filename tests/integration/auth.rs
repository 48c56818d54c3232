//! Every NATS auth method in the config works against a real nats-server: token, nkey seed
//! file, TLS with a private CA, mutual TLS (user/password is covered with the site permissions
//! in `trust.rs`). A wrong secret publishes nothing.

use shared_f2b_tests::nats::{NatsServer, read_stream_as_client};
use shared_f2b_tests::tls::Pki;
use shared_f2b_tests::{HostConfig, bin};
use std::path::Path;
use std::process::{Command, Output};

const STREAM: &str = "F2B_EVENTS";

fn publish(cfg: &HostConfig, ip: &str) -> Output {
    Command::new(bin("shared-f2b-publish"))
        .arg("--config")
        .arg(&cfg.path)
        .args(["ban", "--jail", "sshd", "--ip", ip])
        .output()
        .unwrap()
}

/// Starts a server with `auth` added to a JetStream config, publishes with `keys` in `[nats]`
/// (`url_scheme` nats or tls), and returns the server and the host's config.
fn site(dir: &Path, auth: &str, url_scheme: &str, keys: &str) -> (NatsServer, HostConfig) {
    let conf = format!("jetstream {{\n  store_dir: /var/lib/nats-server\n}}\n{auth}\n");
    let nats = NatsServer::start_with_config(dir, &conf);
    let url = format!("{url_scheme}://127.0.0.1:{}", nats.port);
    let cfg = HostConfig::write(dir, "alice", &url, "f2b", STREAM, "");
    cfg.add_nats_keys(keys);
    (nats, cfg)
}

fn assert_published(cfg: &HostConfig, ip: &str) {
    let out = publish(cfg, ip);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("published"),
        "{stderr}"
    );
    assert_eq!(cfg.spooled(), 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, cfg) = site(
        dir.path(),
        "authorization { token: \"s3cret-token\" }",
        "nats",
        "token = \"s3cret-token\"",
    );
    assert_published(&cfg, "203.0.113.1");
    let client = async_nats::ConnectOptions::with_token("s3cret-token".into())
        .connect(nats.url())
        .await
        .unwrap();
    assert_eq!(read_stream_as_client(client, STREAM).await.len(), 1);

    let wrong = HostConfig::write(
        &dir.path().join("wrong"),
        "alice",
        &nats.url(),
        "f2b",
        STREAM,
        "",
    );
    wrong.add_nats_keys("token = \"not-it\"");
    let out = publish(&wrong, "203.0.113.2");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("authorization")
    );
    let client = async_nats::ConnectOptions::with_token("s3cret-token".into())
        .connect(nats.url())
        .await
        .unwrap();
    assert_eq!(
        read_stream_as_client(client, STREAM).await.len(),
        1,
        "a wrong token publishes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seed_file_auth() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let seed_file = dir.path().join("alice.nk");
    std::fs::write(&seed_file, format!("{}\n", user.seed().unwrap())).unwrap();
    let auth = format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}",
        user.public_key()
    );
    let (nats, cfg) = site(
        dir.path(),
        &auth,
        "nats",
        &format!("nkey_seed_file = {:?}", seed_file.display().to_string()),
    );
    assert_published(&cfg, "203.0.113.1");
    let client = async_nats::ConnectOptions::with_nkey(user.seed().unwrap())
        .connect(nats.url())
        .await
        .unwrap();
    assert_eq!(read_stream_as_client(client, STREAM).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let p = |path: &Path| format!("{:?}", path.display().to_string());

    // Server-authenticated TLS: the client trusts the private CA.
    let tls = format!(
        "tls {{ cert_file: {}, key_file: {} }}",
        p(&pki.server_cert),
        p(&pki.server_key)
    );
    let one = dir.path().join("tls");
    std::fs::create_dir_all(&one).unwrap();
    let (_nats, cfg) = site(&one, &tls, "tls", &format!("tls_ca_file = {}", p(&pki.ca)));
    assert_published(&cfg, "203.0.113.1");

    // Mutual TLS: the server verifies the client certificate.
    let mtls = format!(
        "tls {{ cert_file: {}, key_file: {}, ca_file: {}, verify: true }}",
        p(&pki.server_cert),
        p(&pki.server_key),
        p(&pki.ca)
    );
    let two = dir.path().join("mtls");
    std::fs::create_dir_all(&two).unwrap();
    let (nats, cfg) = site(
        &two,
        &mtls,
        "tls",
        &format!(
            "tls_ca_file = {}\ntls_cert_file = {}\ntls_key_file = {}",
            p(&pki.ca),
            p(&pki.client_cert),
            p(&pki.client_key)
        ),
    );
    assert_published(&cfg, "203.0.113.2");
    // Without a client certificate the same server refuses the connection: the event is kept.
    let no_cert = HostConfig::write(
        &two.join("nocert"),
        "alice",
        &format!("tls://127.0.0.1:{}", nats.port),
        "f2b",
        STREAM,
        "",
    );
    no_cert.add_nats_keys(&format!("tls_ca_file = {}", p(&pki.ca)));
    let out = publish(&no_cert, "203.0.113.3");
    assert!(out.status.success());
    assert_eq!(
        no_cert.spooled(),
        1,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_file_auth_in_operator_mode() {
    let dir = tempfile::tempdir().unwrap();
    let setup = shared_f2b_tests::jwt::operator_setup("alice");
    let creds = dir.path().join("alice.creds");
    std::fs::write(&creds, &setup.creds).unwrap();
    let (nats, cfg) = site(
        dir.path(),
        &setup.server_config,
        "nats",
        &format!("creds_file = {:?}", creds.display().to_string()),
    );
    assert_published(&cfg, "203.0.113.1");
    let client = async_nats::ConnectOptions::with_credentials(&setup.creds)
        .unwrap()
        .connect(nats.url())
        .await
        .unwrap();
    assert_eq!(read_stream_as_client(client, STREAM).await.len(), 1);
}
