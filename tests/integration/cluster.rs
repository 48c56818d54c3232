//! A three-node NATS cluster with the stream at three replicas: one node killed while 1,000 bans
//! flow, and every ban still reaches the subscriber and the archive.

use shared_f2b::config::NatsConfig;
use shared_f2b::nats::{Lifetime, connect};
use shared_f2b::publish::Sender;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::Daemon;
use shared_f2b_tests::nats::{NatsServer, ban_event};
use shared_f2b_tests::{HostConfig, free_port, wait_for};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn node(dir: &std::path::Path, name: &str, route_ports: &[u16], own: u16) -> NatsServer {
    let routes: Vec<String> = route_ports
        .iter()
        .filter(|p| **p != own)
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect();
    let conf = format!(
        "server_name: {name}\njetstream {{\n  store_dir: /var/lib/nats-server\n}}\n\
         cluster {{\n  name: f2b\n  listen: 127.0.0.1:{own}\n  routes: [{}]\n}}\n",
        routes.join(", ")
    );
    NatsServer::start_with_config(&dir.join(name), &conf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_mid_flow_loses_no_ban() {
    let dir = tempfile::tempdir().unwrap();
    let routes = [free_port(), free_port(), free_port()];
    let mut nodes: Vec<NatsServer> = ["n1", "n2", "n3"]
        .iter()
        .zip(routes)
        .map(|(name, port)| {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
            node(dir.path(), name, &routes, port)
        })
        .collect();
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    let servers = format!(
        "[{}]",
        urls.iter()
            .map(|u| format!("{u:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let with_cluster = |cfg: &HostConfig| {
        let text = std::fs::read_to_string(&cfg.path).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("servers"))
            .unwrap()
            .to_owned();
        let text = text.replace(&line, &format!("servers = {servers}\nstream_replicas = 3"));
        std::fs::write(&cfg.path, text).unwrap();
    };

    let site = NatsConfig {
        servers: urls.clone(),
        stream_replicas: 3,
        stream_max_age: Duration::from_secs(3600),
        ..Default::default()
    };
    let conn = connect(&site, "alice", Duration::from_secs(5), Lifetime::Daemon)
        .await
        .unwrap();
    let sender = Sender::new(&conn, &site, Duration::from_secs(2));
    // Wait for the cluster to elect its JetStream leader and take the three-replica stream.
    wait_for(WAIT, "the cluster to create the stream", || async {
        sender.create_stream().await.ok()
    })
    .await;

    let db = TestDb::sqlite(dir.path());
    let arch = HostConfig::write(
        &dir.path().join("archiver"),
        "archiver",
        &urls[0],
        "f2b",
        "F2B_EVENTS",
        &format!("[archiver]\ndatabase_url = {:?}\n", db.url),
    );
    with_cluster(&arch);
    let _archiver = Daemon::archiver(&arch.path, &dir.path().join("archiver.log"));
    let bob_dir = dir.path().join("bob");
    let bob = HostConfig::write(
        &bob_dir,
        "bob",
        &urls[0],
        "f2b",
        "F2B_EVENTS",
        &format!(
            "[subscriber]\napply = \"log\"\nlog_file = {:?}\nstate_dir = {:?}\n",
            bob_dir.join("shared.log").display().to_string(),
            bob_dir.join("state").display().to_string()
        ),
    );
    with_cluster(&bob);
    let _bob = Daemon::subscriber(&bob.path, &bob_dir);

    let site = NatsConfig {
        servers: urls.clone(),
        stream_replicas: 3,
        stream_max_age: Duration::from_secs(3600),
        ..Default::default()
    };
    let conn = connect(&site, "alice", Duration::from_secs(5), Lifetime::Daemon)
        .await
        .unwrap();
    let sender = Sender::new(&conn, &site, Duration::from_secs(2));
    let events: Vec<_> = (0..1000)
        .map(|i| ban_event("alice", "sshd", &format!("10.9.{}.{}", i / 250, i % 250)))
        .collect();
    for (i, e) in events.iter().enumerate() {
        if i == 300 {
            nodes[1].stop();
        }
        // As the publisher would: an event that got no ack is sent again (the id dedupes it).
        wait_for(WAIT, &format!("event {i} to be acked"), || async {
            sender.send(e).await.ok()
        })
        .await;
    }
    wait_for(WAIT, "all 1000 applied by bob", || async {
        let log = std::fs::read_to_string(bob_dir.join("shared.log")).unwrap_or_default();
        (log.lines().count() >= 1000).then_some(())
    })
    .await;
    wait_for(WAIT, "all 1000 archived", || async {
        (db.rows().await >= 1000).then_some(())
    })
    .await;
    // Bob applied each event once (one line per application in `log` mode), the archive holds
    // each once.
    let log = std::fs::read_to_string(bob_dir.join("shared.log")).unwrap();
    for e in &events {
        let applied = log.matches(&format!("[{}]", e.ip)).count();
        assert_eq!(applied, 1, "{} applied {applied} times at bob", e.ip);
    }
    let ids: Vec<_> = events.iter().map(|e| e.id).collect();
    db.assert_holds_exactly(&ids).await;
}
