//! Handing remote bans to the local Fail2Ban in the configured `apply` mode, batched.

use crate::fail2ban::{Fail2Ban, Fail2BanError};
use ipnet::IpNet;
use shared_f2b::config::ApplyMode;
use shared_f2b::event::Event;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Addresses per `banip` / `unbanip` command.
const CHUNK: usize = 1000;
/// How long a jail's `ignoreip` list is trusted before it is read again.
const IGNORE_REFRESH: Duration = Duration::from_secs(60);

/// One step of applying a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `set <jail> banip <ip> …` (`ban` mode).
    Ban { jail: String, ips: Vec<IpAddr> },
    /// `set <jail> attempt <ip> <reason>` (`attempt` mode).
    Attempt {
        jail: String,
        ip: IpAddr,
        reason: String,
    },
    /// Lines for the shared log file (`log` mode).
    Log { lines: String },
    /// `set <jail> unbanip <ip> …`.
    Unban { jail: String, ips: Vec<IpAddr> },
}

/// Why an op did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Fail2Ban (or the log file) is not there right now: wait and retry the op.
    #[error("{0}")]
    Retry(String),
    /// Fail2Ban refused the op (e.g. the target jail does not exist): retrying cannot help.
    #[error("{0}")]
    Refused(String),
}

impl From<Fail2BanError> for ApplyError {
    fn from(e: Fail2BanError) -> Self {
        if e.is_unavailable() {
            ApplyError::Retry(e.to_string())
        } else {
            ApplyError::Refused(e.to_string())
        }
    }
}

/// Applies ops to the local Fail2Ban.
pub struct Applier {
    mode: ApplyMode,
    f2b: Fail2Ban,
    log_file: PathBuf,
    ignore: HashMap<String, (Vec<IpNet>, Instant)>,
}

/// Text safe to hand to Fail2Ban and to put in its log: printable ASCII without `<`/`>`.
fn tame(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '<' && c != '>' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

impl Applier {
    /// An applier for the configured mode and socket.
    pub fn new(mode: ApplyMode, f2b: Fail2Ban, log_file: PathBuf) -> Applier {
        Applier {
            mode,
            f2b,
            log_file,
            ignore: HashMap::new(),
        }
    }

    /// Turns a batch into ops: bans (per local jail, in arrival order) then unbans.
    pub fn plan(&self, bans: &[(String, Event)], unbans: &[(String, IpAddr)]) -> Vec<Op> {
        let mut ops = Vec::new();
        match self.mode {
            ApplyMode::Ban => {
                let mut by_jail: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
                for (jail, e) in bans {
                    by_jail.entry(jail).or_default().push(e.ip);
                }
                for (jail, ips) in by_jail {
                    for chunk in ips.chunks(CHUNK) {
                        ops.push(Op::Ban {
                            jail: jail.to_owned(),
                            ips: chunk.to_vec(),
                        });
                    }
                }
            }
            ApplyMode::Attempt => {
                for (jail, e) in bans {
                    ops.push(Op::Attempt {
                        jail: jail.clone(),
                        ip: e.ip,
                        reason: format!(
                            "shared-f2b: reported by {} (jail {})",
                            tame(&e.origin),
                            e.jail
                        ),
                    });
                }
            }
            ApplyMode::Log => {
                if !bans.is_empty() {
                    let mut lines = String::new();
                    for (_, e) in bans {
                        let epoch = e.time.duration_since(UNIX_EPOCH).unwrap_or_default();
                        lines.push_str(&format!(
                            "{} [{}] {} {}\n",
                            epoch.as_secs(),
                            e.ip,
                            e.jail,
                            tame(&e.origin)
                        ));
                    }
                    ops.push(Op::Log { lines });
                }
            }
        }
        let mut unban_by_jail: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
        for (jail, ip) in unbans {
            unban_by_jail.entry(jail).or_default().push(*ip);
        }
        for (jail, ips) in unban_by_jail {
            for chunk in ips.chunks(CHUNK) {
                ops.push(Op::Unban {
                    jail: jail.to_owned(),
                    ips: chunk.to_vec(),
                });
            }
        }
        ops
    }

    /// Runs one op; returns how many addresses it handed over.
    pub async fn execute(&mut self, op: &Op) -> Result<usize, ApplyError> {
        match op {
            Op::Ban { jail, ips } => {
                let ignored = self.ignored(jail, ips).await?;
                let keep: Vec<IpAddr> = ips
                    .iter()
                    .filter(|ip| !ignored.contains(ip))
                    .copied()
                    .collect();
                if keep.is_empty() {
                    return Ok(0);
                }
                let texts: Vec<String> = keep.iter().map(IpAddr::to_string).collect();
                let mut args = vec!["set", jail.as_str(), "banip"];
                args.extend(texts.iter().map(String::as_str));
                // Fail2Ban answers how many were newly banned (the rest already were).
                let reply = self.f2b.command(&args).await?;
                Ok(reply.as_int().map_or(keep.len(), |n| n.max(0) as usize))
            }
            Op::Attempt { jail, ip, reason } => {
                // Fail2Ban 1.0.2's `attempt` does not consult ignoreip either (filter.py
                // addAttempt goes straight to the fail manager), so it is enforced here too.
                if self.ignored(jail, &[*ip]).await?.contains(ip) {
                    return Ok(0);
                }
                let ip = ip.to_string();
                self.f2b
                    .command(&["set", jail, "attempt", &ip, reason])
                    .await?;
                Ok(1)
            }
            Op::Log { lines } => {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log_file)
                    .and_then(|mut f| f.write_all(lines.as_bytes()).map(|_| f))
                    .map_err(|e| {
                        ApplyError::Retry(format!("cannot write {}: {e}", self.log_file.display()))
                    })?;
                let _ = file.flush();
                Ok(lines.lines().count())
            }
            Op::Unban { jail, ips } => {
                let texts: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                let mut args = vec!["set", jail.as_str(), "unbanip"];
                args.extend(texts.iter().map(String::as_str));
                match self.f2b.command(&args).await {
                    Ok(_) => Ok(ips.len()),
                    // In `log` mode Fail2Ban's socket is optional: the jail reads the log file,
                    // and an unban that cannot be delivered is reported, not retried forever.
                    Err(e) if self.mode == ApplyMode::Log && e.is_unavailable() => {
                        tracing::warn!(%jail, ?ips, error = %e, "log mode: unban not delivered");
                        Ok(0)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Which of `ips` the jail's `ignoreip` covers (each logged): Fail2Ban skips ignoreip on
    /// both `banip` and `attempt`.
    async fn ignored(&mut self, jail: &str, ips: &[IpAddr]) -> Result<Vec<IpAddr>, ApplyError> {
        let list = self.ignore_list(jail).await?;
        let ignored: Vec<IpAddr> = ips
            .iter()
            .filter(|ip| list.iter().any(|net| net.contains(*ip)))
            .copied()
            .collect();
        for ip in &ignored {
            tracing::info!(%jail, %ip, "not applied: in the target jail's ignoreip");
        }
        Ok(ignored)
    }

    /// The jail's `ignoreip` entries that are addresses or networks (host names are skipped),
    /// read again after [`IGNORE_REFRESH`].
    async fn ignore_list(&mut self, jail: &str) -> Result<Vec<IpNet>, ApplyError> {
        if let Some((list, at)) = self.ignore.get(jail)
            && at.elapsed() < IGNORE_REFRESH
        {
            return Ok(list.clone());
        }
        let reply = self.f2b.command(&["get", jail, "ignoreip"]).await?;
        let list: Vec<IpNet> = reply
            .strings
            .iter()
            .filter_map(|s| {
                s.parse::<IpNet>()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
            })
            .collect();
        tracing::debug!(%jail, ?list, "read the jail's ignoreip");
        self.ignore
            .insert(jail.to_owned(), (list.clone(), Instant::now()));
        Ok(list)
    }

    /// Closes the Fail2Ban connection politely.
    pub async fn close(&mut self) {
        self.f2b.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_f2b::event::{Action, parse_ip};

    fn ev(origin: &str, ip: &str) -> Event {
        Event::new(
            Action::Ban,
            origin,
            "sshd",
            parse_ip(ip).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            600,
            1,
        )
        .unwrap()
    }

    fn applier(mode: ApplyMode) -> Applier {
        Applier::new(
            mode,
            Fail2Ban::new("/nonexistent".as_ref()),
            "/tmp/x".into(),
        )
    }

    #[test]
    fn plans_per_mode() {
        let bans = vec![
            ("shared".to_string(), ev("alice", "192.0.2.1")),
            ("shared".to_string(), ev("<F2B_END_COMMAND>", "192.0.2.2")),
        ];
        let unbans = vec![("shared".to_string(), parse_ip("192.0.2.3").unwrap())];
        let ops = applier(ApplyMode::Ban).plan(&bans, &unbans);
        assert_eq!(ops.len(), 2);
        assert!(matches!(&ops[0], Op::Ban { ips, .. } if ips.len() == 2));
        assert!(matches!(&ops[1], Op::Unban { ips, .. } if ips.len() == 1));

        let ops = applier(ApplyMode::Attempt).plan(&bans, &[]);
        match &ops[1] {
            Op::Attempt { reason, .. } => {
                assert_eq!(
                    reason,
                    "shared-f2b: reported by ?F2B_END_COMMAND? (jail sshd)"
                )
            }
            other => panic!("{other:?}"),
        }
        let ops = applier(ApplyMode::Log).plan(&bans, &[]);
        assert_eq!(
            ops,
            [Op::Log {
                lines: "1700000000 [192.0.2.1] sshd alice\n1700000000 [192.0.2.2] sshd ?F2B_END_COMMAND?\n"
                    .into()
            }]
        );
    }
}
