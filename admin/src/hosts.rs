//! The hosts file that the site's nats-server config includes (`include "hosts.conf"` in the
//! `HOSTS` account), and the registry it is made from (`<hosts_file>.json`, beside it): one nkey
//! user per host key, with the same permissions a host always had (its own two event subjects,
//! the replay request, the live subjects and its own inbox).
//!
//! The file is written whole from the registry every time (temp file, fsync, rename), never
//! edited in place; entries kept by hand (password users of before keys) go in the optional
//! `[admin] legacy_hosts_file`, whose text is put inside the users list as it is.

use serde::{Deserialize, Serialize};
use shared_f2b::subject::encode_token;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;
use thiserror::Error;

/// Why the hosts file or its registry could not be read, written or loaded by nats-server.
#[derive(Debug, Error)]
pub enum HostsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a hosts registry: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the hosts file {} is written, but nats-server was not told to read it: {why}; \
         run `{command}` (or `systemctl reload nats-server`) yourself",
        file.display()
    )]
    Reload {
        file: PathBuf,
        command: String,
        why: String,
    },
}

/// One key of a host, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub key: String,
    #[serde(with = "humantime_serde")]
    pub since: SystemTime,
    /// When its login and its signature stop counting (a rotation's grace), if they do.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<SystemTime>,
}

impl Key {
    pub fn in_force_at(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

/// One enrolled host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    pub keys: Vec<Key>,
    /// A sensor (`host add --sensor`): it may only publish its own events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensor: bool,
}

/// Every enrolled host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub hosts: Vec<Host>,
}

impl Registry {
    /// The registry beside `hosts_file`.
    pub fn path(hosts_file: &Path) -> PathBuf {
        let mut name = hosts_file.as_os_str().to_owned();
        name.push(".json");
        PathBuf::from(name)
    }

    /// Reads the registry (none yet: empty).
    pub fn load(hosts_file: &Path) -> Result<Registry, HostsError> {
        let path = Registry::path(hosts_file);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| HostsError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
            Err(source) => Err(HostsError::Read { path, source }),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Host> {
        self.hosts.iter_mut().find(|h| h.name == name)
    }

    /// Forgets the keys whose grace is over (and hosts left without keys); true if any went.
    pub fn prune(&mut self, now: SystemTime) -> bool {
        let before: usize = self.hosts.iter().map(|h| h.keys.len()).sum();
        for host in &mut self.hosts {
            host.keys.retain(|k| k.in_force_at(now));
        }
        self.hosts.retain(|h| !h.keys.is_empty());
        before != self.hosts.iter().map(|h| h.keys.len()).sum::<usize>()
    }

    /// The hosts file's text: one nkey user per key in force.
    pub fn render(&self, prefix: &str, legacy: Option<&str>, now: SystemTime) -> String {
        let mut out = String::from(
            "# Written by shared-f2b-admin host (add, remove, rotate, prune) from the registry\n\
             # beside it (<this file>.json): do not edit; it is rewritten whole.\n\
             users = [\n",
        );
        if let Some(text) = legacy {
            out.push_str("  # From admin.legacy_hosts_file, as it is:\n");
            out.push_str(text);
            out.push('\n');
        }
        for host in &self.hosts {
            let token = encode_token(&host.name).expect("names are checked on the way in");
            // A sensor publishes its own events and hears their acks on its inbox; nothing
            // more.
            let (replay, live, what) = match host.sensor {
                true => (String::new(), String::new(), " (sensor: publish only)"),
                false => (
                    format!(", \"{prefix}.replay\""),
                    format!("\"{prefix}.live.>\", "),
                    "",
                ),
            };
            for key in host.keys.iter().filter(|k| k.in_force_at(now)) {
                out.push_str(&format!(
                    "  # {name}{what}\n  {{ nkey: {key:?},\n    permissions: {{\n      \
                     publish: [ \"{prefix}.ban.*.{token}\", \"{prefix}.unban.*.{token}\"{replay} ],\n      \
                     subscribe: [ {live}\"_INBOX_{token}.>\" ] }} }}\n",
                    name = host.name,
                    key = key.key,
                ));
            }
        }
        out.push_str("]\n");
        out
    }

    /// Writes the registry, then the hosts file made from it.
    pub fn save(
        &self,
        hosts_file: &Path,
        prefix: &str,
        legacy: Option<&Path>,
        now: SystemTime,
    ) -> Result<(), HostsError> {
        let legacy = legacy
            .map(|path| {
                std::fs::read_to_string(path).map_err(|source| HostsError::Read {
                    path: path.to_owned(),
                    source,
                })
            })
            .transpose()?;
        let json = serde_json::to_vec_pretty(self).expect("a registry serialises");
        write_atomically(&Registry::path(hosts_file), &json, 0o640)?;
        let text = self.render(prefix, legacy.as_deref(), now);
        write_atomically(hosts_file, text.as_bytes(), 0o644)
    }
}

/// Writes `bytes` to `path` through a temp file beside it (fsync, rename), with `mode`.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), HostsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| HostsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Runs the reload command (no shell: the first word is the program).
pub fn reload(command: &[String], hosts_file: &Path) -> Result<(), HostsError> {
    let shown = command.join(" ");
    let fail = |why: String| HostsError::Reload {
        file: hosts_file.to_owned(),
        command: shown.clone(),
        why,
    };
    let (program, args) = command
        .split_first()
        .ok_or_else(|| fail("no command".into()))?;
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| fail(format!("cannot run {program:?}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(fail(format!(
        "`{shown}` exited with {}: {}",
        out.status,
        stderr.trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_file_holds_each_key_in_force_with_the_hosts_permissions() {
        let now = SystemTime::now();
        let reg = Registry {
            hosts: vec![Host {
                name: "bob.example.org".into(),
                keys: vec![
                    Key {
                        key: "UOLD".into(),
                        since: now,
                        until: Some(now - Duration::from_secs(1)),
                    },
                    Key {
                        key: "UNEW".into(),
                        since: now,
                        until: None,
                    },
                ],
                sensor: false,
            }],
        };
        let text = reg.render("f2b", Some("  { user: alice, password: x }"), now);
        assert!(text.contains("{ user: alice, password: x }"));
        assert!(text.contains("nkey: \"UNEW\""));
        assert!(!text.contains("UOLD"));
        assert!(text.contains("\"f2b.ban.*.bob_2Eexample_2Eorg\""));
        assert!(text.contains("\"_INBOX_bob_2Eexample_2Eorg.>\""));
        let mut pruned = reg.clone();
        assert!(pruned.prune(now));
        assert_eq!(pruned.hosts[0].keys.len(), 1);
    }

    #[test]
    fn a_sensor_may_only_publish_its_own_events() {
        let now = SystemTime::now();
        let reg = Registry {
            hosts: vec![Host {
                name: "honeypot".into(),
                keys: vec![Key {
                    key: "USENSOR".into(),
                    since: now,
                    until: None,
                }],
                sensor: true,
            }],
        };
        let text = reg.render("f2b", None, now);
        assert!(
            text.contains(
                "publish: [ \"f2b.ban.*.honeypot\", \"f2b.unban.*.honeypot\" ],\n      \
             subscribe: [ \"_INBOX_honeypot.>\" ]"
            ),
            "{text}"
        );
        assert!(
            !text.contains("f2b.live") && !text.contains("f2b.replay"),
            "{text}"
        );
    }
}
