//! Federated sites as shipped in `deploy/federation/`: a hub and the sites a, b and c, each its
//! own nats-server (JetStream domain), database, archiver (the relay) and operator key, their
//! leaf nodes to the hub each through a [`Proxy`] the test can cut, and hosts with a real
//! Fail2Ban that sign their events with keys their site's operator vouched for.

use crate::db::TestDb;
use crate::host::{Daemon, Host};
use crate::nats::NatsServer;
use crate::proxy::Proxy;
use crate::site::{self, PREFIX, STREAM};
use crate::{HostConfig, free_port, repo_root};
use shared_f2b::control::Control;
use shared_f2b::signing::Signer;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The sites of the example and their hosts.
pub const SITES: [(&str, [&str; 2]); 3] = [
    ("a", ["alice", "anna"]),
    ("b", ["bob", "bert"]),
    ("c", ["charlie", "carol"]),
];

/// One site.
pub struct FedSite {
    pub id: String,
    pub dir: PathBuf,
    pub nats: NatsServer,
    pub db: TestDb,
    pub archiver: Option<Daemon>,
    pub archiver_config: HostConfig,
    /// Its operator's seed file and public key.
    pub operator: (PathBuf, String),
    /// Its leaf node's link to the hub.
    pub link: Proxy,
}

impl FedSite {
    pub fn url(&self) -> String {
        self.nats.url()
    }
}

/// The hub and the three sites, archivers running, no hosts yet.
pub struct Federation {
    pub dir: PathBuf,
    pub hub: NatsServer,
    pub sites: Vec<FedSite>,
}

fn shipped(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("deploy/federation").join(file))
        .unwrap_or_else(|e| panic!("deploy/federation/{file}: {e}"))
}

/// Puts `site_id` first in a config and the federation tables for every other site last.
fn federate(cfg: &HostConfig, site: &str, others: &[(&str, &str)], extra: &str) {
    let resync = if others.len() > 2 { "2s" } else { "1s" };
    let text = std::fs::read_to_string(&cfg.path).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    let mut out = format!(
        "{first}\nsite_id = {site:?}\n{rest}\n{extra}\n\n[federation]\nresync = {resync:?}\n"
    );
    for (id, key) in others {
        out.push_str(&format!(
            "\n[[federation.sites]]\nid = {id:?}\noperator_keys = [{key:?}]\n"
        ));
    }
    std::fs::write(&cfg.path, out).unwrap();
}

impl Federation {
    /// Starts the hub, the sites and their archivers (SQLite archives, so the three sites share
    /// no database server state), from `deploy/federation/` as shipped.
    pub fn start(dir: &Path) -> Federation {
        Federation::with_hub(dir, |hub| hub)
    }

    /// As [`Federation::start`], with the hub's config changed by `edit` first (a hub taken
    /// over).
    pub fn with_hub(dir: &Path, edit: impl FnOnce(String) -> String) -> Federation {
        let sites = SITES
            .iter()
            .map(|(id, _)| (id.to_string(), shipped(&format!("site-{id}.conf"))))
            .collect();
        Federation::start_with(dir, edit(shipped("hub.conf")), sites)
    }

    /// `n` sites `s1`…`sN` made from the example's site a (hosts alice and anna each) and a
    /// hub made for them the way the example's is.
    pub fn generated(dir: &Path, n: usize) -> Federation {
        let ids: Vec<String> = (1..=n).map(|i| format!("s{i}")).collect();
        let template = shipped("site-a.conf");
        let sites = ids
            .iter()
            .map(|id| {
                let conf = template
                    .replace("server_name: site-a", &format!("server_name: site-{id}"))
                    .replace("domain: a", &format!("domain: {id}"))
                    .replace(
                        "leaf-a:change-me-leaf-a",
                        &format!("leaf-{id}:change-me-leaf-{id}"),
                    );
                (id.clone(), conf)
            })
            .collect();
        let mut hub = String::from(
            "server_name: hub\nlisten: 0.0.0.0:4222\nleafnodes {\n  listen: 0.0.0.0:7422\n}\naccounts {\n",
        );
        for id in &ids {
            hub.push_str(&format!(
                "  {} {{\n    users = [ {{ user: leaf-{id}, password: \"change-me-leaf-{id}\", \
                 allowed_connection_types: [ \"LEAFNODE\" ] }} ]\n    exports = [ {{ stream: \"f2b.live.>\" }},\
                 {{ service: \"f2b.replay\" }} ]\n    imports = [\n",
                id.to_uppercase()
            ));
            for other in ids.iter().filter(|o| *o != id) {
                hub.push_str(&format!(
                    "      {{ stream: {{ account: {}, subject: \"f2b.live.>\" }}, prefix: \"site.{other}\" }}\n      \
                     {{ service: {{ account: {}, subject: \"f2b.replay\" }}, to: \"site.{other}.f2b.replay\" }}\n",
                    other.to_uppercase(),
                    other.to_uppercase()
                ));
            }
            hub.push_str("    ]\n  }\n");
        }
        hub.push_str("}\n");
        Federation::start_with(dir, hub, sites)
    }

    fn start_with(dir: &Path, hub_conf: String, site_confs: Vec<(String, String)>) -> Federation {
        let leaf_port = free_port();
        let mut hub_conf = hub_conf.replace(
            "listen: 0.0.0.0:7422",
            &format!("listen: 127.0.0.1:{leaf_port}"),
        );
        assert!(
            hub_conf.contains(&leaf_port.to_string()),
            "hub leafnode listen"
        );
        // The hub tells its sites the address to dial again (`advertise`, the sites' own
        // name for it): here one where nothing listens, so a site reaches the hub only
        // through its link.
        hub_conf = match hub_conf.contains("advertise: \"hub.example.org:7422\"") {
            true => hub_conf.replace(
                "advertise: \"hub.example.org:7422\"",
                "advertise: \"127.0.0.1:1\"",
            ),
            false => hub_conf.replacen(
                &format!("listen: 127.0.0.1:{leaf_port}"),
                &format!("listen: 127.0.0.1:{leaf_port}\n  advertise: \"127.0.0.1:1\""),
                1,
            ),
        };
        let hub = NatsServer::start_without_store(dir, &hub_conf);
        let keys: Vec<(PathBuf, String)> = site_confs
            .iter()
            .map(|(id, _)| {
                let d = dir.join(id);
                std::fs::create_dir_all(&d).unwrap();
                site::operator_key(&d)
            })
            .collect();
        let mut sites = Vec::new();
        for (n, (id, conf)) in site_confs.iter().enumerate() {
            let sdir = dir.join(id);
            let link = Proxy::start(leaf_port);
            let conf = conf.replace("hub.example.org:7422", &format!("127.0.0.1:{}", link.port));
            let nats = NatsServer::start_with_config(&sdir, &conf);
            let db = TestDb::sqlite(&sdir);
            let cfg = site::config(
                &sdir,
                "archiver",
                "archiver",
                &nats.url(),
                &format!("[archiver]\ndatabase_url = {:?}\n", db.url),
            );
            let others: Vec<(&str, &str)> = site_confs
                .iter()
                .enumerate()
                .filter(|(m, _)| *m != n)
                .map(|(m, (other, _))| (other.as_str(), keys[m].1.as_str()))
                .collect();
            federate(&cfg, id, &others, "");
            let archiver = Daemon::archiver(&cfg.path, &sdir.join("archiver.log"));
            sites.push(FedSite {
                id: id.clone(),
                dir: sdir,
                nats,
                db,
                archiver: Some(archiver),
                archiver_config: cfg,
                operator: keys[n].clone(),
                link,
            });
        }
        Federation {
            dir: dir.to_owned(),
            hub,
            sites,
        }
    }

    pub fn site(&self, id: &str) -> &FedSite {
        self.sites.iter().find(|s| s.id == id).expect("a site")
    }

    /// Host `name` of site `site` with a real Fail2Ban (`ban` mode), a key its operator vouched
    /// for (published before this returns), `require_signatures`, and `subscriber_extra`; its
    /// subscriber started.
    pub async fn host(&self, site: &str, name: &str, subscriber_extra: &str) -> Host {
        let s = self.site(site);
        let mut host = site::host(
            &s.dir,
            name,
            &s.url(),
            "ban",
            &format!("require_signatures = true\n{subscriber_extra}"),
            false,
        );
        let seed = host.dir.join("host.seed");
        let signer = Signer::generate();
        std::fs::write(&seed, signer.seed()).unwrap();
        let others: Vec<(&str, &str)> = self
            .sites
            .iter()
            .filter(|o| o.id != site)
            .map(|o| (o.id.as_str(), o.operator.1.as_str()))
            .collect();
        federate(
            &host.config,
            site,
            &others,
            &format!(
                "[trust]\nseed_file = {:?}\noperator_keys = [{:?}]",
                seed.display().to_string(),
                s.operator.1
            ),
        );
        self.vouch(site, name, signer.public_key()).await;
        host.start_subscriber();
        host
    }

    /// Site `site`'s operator publishes a key record: `key` is `host`'s.
    pub async fn vouch(&self, site: &str, host: &str, key: &str) {
        let s = self.site(site);
        let mut record = Control::key_record(
            "admin",
            host,
            key,
            SystemTime::now() - Duration::from_secs(60),
            None,
            "enrolled by the test",
        )
        .unwrap();
        Signer::from_file(&s.operator.0)
            .unwrap()
            .sign_control(&mut record);
        publish_as_admin(
            &s.url(),
            &shared_f2b::subject::control_subject(PREFIX, record.kind, "admin").unwrap(),
            record.encode(),
        )
        .await;
    }
}

/// Publishes into a site's stream as its `admin` user, waiting for the ack.
pub async fn publish_as_admin(url: &str, subject: &str, payload: Vec<u8>) {
    let admin = site::client(url, "admin").await;
    let js = async_nats::jetstream::new(admin);
    let ack = loop {
        match js.publish(subject.to_owned(), payload.clone().into()).await {
            Ok(ack) => match ack.await {
                Ok(ack) => break ack,
                Err(e) => eprintln!("retrying the publish on {subject}: {e}"),
            },
            Err(e) => eprintln!("retrying the publish on {subject}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ack.stream, STREAM);
}
