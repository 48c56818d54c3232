//! A site as shipped: a private nats-server running `deploy/nats-server.conf` (accounts SITE and
//! HOSTS, prefix `f2b`, stream `F2B_EVENTS`), users logging in with the example's passwords and
//! inboxes, hosts with a real Fail2Ban, an archiver, and the operators' `shared-f2b-admin`.

use crate::db::TestDb;
use crate::host::{Daemon, Host, HostSpec};
use crate::nats::NatsServer;
use crate::{HostConfig, bin, repo_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PREFIX: &str = "f2b";
pub const STREAM: &str = "F2B_EVENTS";

/// The password users of the hosts alice, bob and charlie (the entries of a users list), as
/// sites had them before keys (and as `[admin] legacy_hosts_file` keeps them while a site moves
/// to keys).
pub const LEGACY_HOSTS: &str = r#"
      { user: alice, password: "change-me-alice",
        permissions: {
          publish: [ "f2b.ban.*.alice", "f2b.unban.*.alice", "f2b.replay" ],
          subscribe: [ "f2b.live.>", "_INBOX_alice.>" ] } }

      { user: bob, password: "change-me-bob",
        permissions: {
          publish: [ "f2b.ban.*.bob", "f2b.unban.*.bob", "f2b.replay" ],
          subscribe: [ "f2b.live.>", "_INBOX_bob.>" ] } }

      { user: charlie, password: "change-me-charlie",
        permissions: {
          publish: [ "f2b.ban.*.charlie", "f2b.unban.*.charlie", "f2b.replay" ],
          subscribe: [ "f2b.live.>", "_INBOX_charlie.>" ] } }
"#;

/// The shipped `deploy/nats-server.conf` with its hosts file's include replaced by
/// [`LEGACY_HOSTS`]: the site most tests run on (password hosts, which keep working).
pub fn shipped_config() -> String {
    let conf = std::fs::read_to_string(repo_root().join("deploy/nats-server.conf"))
        .expect("deploy/nats-server.conf");
    assert!(
        conf.contains("include \"hosts.conf\""),
        "the hosts file's include"
    );
    conf.replacen(
        "include \"hosts.conf\"",
        &format!("users = [{LEGACY_HOSTS}    ]"),
        1,
    )
}

/// A new operator key pair made by `shared-f2b-admin operator-key`: the seed file in `dir`, and
/// the public key it printed.
pub fn operator_key(dir: &Path) -> (PathBuf, String) {
    let seed = dir.join("operator.seed");
    let out = Command::new(bin("shared-f2b-admin"))
        .args(["operator-key", "--out"])
        .arg(&seed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    (seed, public)
}

/// `[nats]` keys for logging in as `user` with the example's password and inbox.
pub fn login(user: &str) -> String {
    format!("user = {user:?}\npassword = \"change-me-{user}\"\ninbox_prefix = \"_INBOX_{user}\"")
}

/// A config for `host` logging in as NATS `user`, in `dir/<host>/<user>`.
pub fn config(dir: &Path, host: &str, user: &str, url: &str, extra: &str) -> HostConfig {
    let dir = dir.join(host).join(user);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = HostConfig::write(&dir, host, url, PREFIX, STREAM, extra);
    cfg.add_nats_keys(&login(user));
    cfg
}

/// The shipped config on a private server whose store lives in `dir`.
pub fn nats(dir: &Path) -> NatsServer {
    nats_with_hosts(dir, &[])
}

/// The shipped config on a private server whose store is `store` (a directory on the
/// power-cut simulator, [`crate::powercut::PowerCut`]), with the config's
/// `sync_interval: always` line turned on when `sync_always` (nats-server 2.10 and newer).
pub fn nats_on_store(dir: &Path, store: &Path, sync_always: bool) -> NatsServer {
    let mut conf = shipped_config().replace(
        "store_dir: /var/lib/nats-server",
        &format!("store_dir: {:?}", store.display().to_string()),
    );
    if sync_always {
        let line = "  # sync_interval: always\n";
        assert!(conf.contains(line), "the shipped sync_interval line");
        conf = conf.replace(line, "  sync_interval: always\n");
    }
    NatsServer::start_without_store(dir, &conf)
}

/// As [`nats`], with more hosts added the way the config's comment says: a copy of a host's
/// entry with the name replaced in its user, its two publish subjects and its inbox prefix.
pub fn nats_with_hosts(dir: &Path, hosts: &[&str]) -> NatsServer {
    nats_with(dir, hosts, &[])
}

/// As [`nats_with_hosts`], with operators of their own in `SITE`, each pinned to its name the
/// way the config's comment says (it logs in with inbox prefix `_INBOX_<name>`).
pub fn nats_with(dir: &Path, hosts: &[&str], operators: &[&str]) -> NatsServer {
    let mut conf = shipped_config();
    let admin = conf.find("{ user: admin").expect("the admin entry");
    for name in operators {
        conf.insert_str(
            admin,
            &format!(
                "{{ user: {name}, password: \"change-me-{name}\",\n        permissions: {{ \
                 publish: [ \"f2b.control.*.{name}\", \"f2b.replay\" ], \
                 subscribe: [ \"_INBOX_{name}.>\" ] }} }}\n\n      "
            ),
        );
    }
    let start = conf.find("{ user: charlie").expect("charlie's entry");
    let len = conf[start..].find("} }").expect("its end") + 3;
    let entry = conf[start..start + len].to_owned();
    for host in hosts {
        let copy = entry.replace("charlie", host);
        conf.insert_str(start + len, &format!("\n\n      {copy}"));
    }
    NatsServer::start_with_config(dir, &conf)
}

/// The shipped site config with charlie's user publishing as host `host_id` (any printable
/// name, encoded into its subjects as the config's comment says): for hostile names.
pub fn nats_with_charlie_as(dir: &Path, host_id: &str) -> NatsServer {
    let token = shared_f2b::subject::encode_token(host_id).expect("a host name");
    let conf = shipped_config()
        .replace("\"f2b.ban.*.charlie\"", &format!("\"f2b.ban.*.{token}\""))
        .replace(
            "\"f2b.unban.*.charlie\"",
            &format!("\"f2b.unban.*.{token}\""),
        );
    NatsServer::start_with_config(dir, &conf)
}

/// A stock client logged in as `user`.
pub async fn client(url: &str, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), format!("change-me-{user}"))
        .custom_inbox_prefix(format!("_INBOX_{user}"))
        .request_timeout(Some(std::time::Duration::from_secs(2)))
        .connect(url)
        .await
        .unwrap()
}

/// A host with a real Fail2Ban in `apply` mode, logged in as itself; its subscriber is started
/// (and waited for) unless `start` is false.
pub fn host(dir: &Path, name: &str, url: &str, apply: &str, extra: &str, start: bool) -> Host {
    let mut host = Host::new(
        dir,
        &HostSpec {
            name,
            nats_url: url,
            prefix: PREFIX,
            stream: STREAM,
            apply,
            subscriber_extra: extra,
            shared_jail_extra: "",
        },
    );
    host.config.add_nats_keys(&login(name));
    if start {
        host.start_subscriber();
    }
    host
}

/// The archiver, logged in as `archiver`, storing into `db`.
pub fn archiver(dir: &Path, url: &str, db: &TestDb) -> Daemon {
    archiver_with(dir, url, db, "").1
}

/// As [`archiver`], with more `[archiver]` keys; also returns its config.
pub fn archiver_with(dir: &Path, url: &str, db: &TestDb, keys: &str) -> (HostConfig, Daemon) {
    let arch = config(
        dir,
        "archiver",
        "archiver",
        url,
        &format!("[archiver]\ndatabase_url = {:?}\n{keys}", db.url),
    );
    let daemon = Daemon::archiver(&arch.path, &dir.join("archiver.log"));
    (arch, daemon)
}

/// The operators' tool with a config logging in as `user` (`admin` is the site's operator).
pub struct Admin {
    pub config: PathBuf,
}

impl Admin {
    /// A config for operator `user` in `dir`.
    pub fn new(dir: &Path, user: &str, url: &str) -> Admin {
        Admin {
            config: config(dir, user, user, url, "").path,
        }
    }

    /// Runs `shared-f2b-admin` with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(bin("shared-f2b-admin"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs it, asserts success, and returns the order's id (the second word of its report,
    /// `pardon <id> published …`).
    pub fn order(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "shared-f2b-admin {args:?} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no id in {text:?}"))
            .to_owned()
    }
}
