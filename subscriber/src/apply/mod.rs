//! Handing remote bans to the local Fail2Ban in the configured `apply` mode, batched.

pub mod fail2ban;

use fail2ban::{Fail2Ban, Fail2BanError};
use ipnet::IpNet;
use shared_f2b::config::ApplyMode;
use shared_f2b::control::overlap;
use shared_f2b::event::Event;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Addresses per `banip` / `unbanip` command.
const CHUNK: usize = 1000;
/// How long a jail's `ignoreip` list is trusted before it is read again.
const IGNORE_REFRESH: Duration = Duration::from_secs(60);

/// One step of applying a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `set <jail> banip <ip> …` (`ban` mode; an operator's ban in every mode but `log`). With
    /// `bantime`, the tickets get that bantime rather than the jail's.
    Ban {
        jail: String,
        ips: Vec<IpNet>,
        bantime: Option<i64>,
    },
    /// `set <jail> attempt <ip> <reason>` (`attempt` mode).
    Attempt {
        jail: String,
        ip: IpNet,
        reason: String,
    },
    /// Lines for the shared log file (`log` mode).
    Log { lines: String },
    /// `set <jail> unbanip <ip> …`.
    Unban { jail: String, ips: Vec<IpNet> },
    /// `unban <ip> …` in every jail: every address in the nets (an operator's pardon or allow).
    Lift { nets: Vec<IpNet> },
}

/// A ban to apply.
#[derive(Debug, Clone)]
pub struct PlannedBan {
    /// The local jail.
    pub jail: String,
    /// The address, or a prefix.
    pub target: IpNet,
    pub event: Event,
    /// The bantime its ticket gets (`None`: the jail's).
    pub bantime: Option<i64>,
}

/// How Fail2Ban is handed an address or prefix: `192.0.2.1`, `2001:db8:1:2::/64`.
pub fn text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// Why an op did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Fail2Ban was unavailable, refused or answered what could not be read.
    #[error(transparent)]
    Fail2Ban(#[from] Fail2BanError),
    /// A file of the subscriber's (the log mode's file, the bantimes to put back).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A jail's bantime that is not a number.
    #[error("{jail}: bantime {value}")]
    Bantime { jail: String, value: String },
}

impl ApplyError {
    /// Whether Fail2Ban (or the log file) is not there right now: wait and retry the op. Else
    /// it was refused (e.g. the target jail does not exist) and retrying cannot help.
    pub fn is_retry(&self) -> bool {
        match self {
            ApplyError::Fail2Ban(e) => e.is_unavailable(),
            ApplyError::Write { .. } => true,
            ApplyError::Bantime { .. } => false,
        }
    }

    /// Whether Fail2Ban does not know the target jail (yet: a starting Fail2Ban answers
    /// before its jails exist).
    pub fn is_unknown_jail(&self) -> bool {
        matches!(self, ApplyError::Fail2Ban(e) if e.is_unknown_jail())
    }
}

/// Applies ops to the local Fail2Ban.
pub struct Applier {
    mode: ApplyMode,
    f2b: Fail2Ban,
    log_file: PathBuf,
    ignore: HashMap<String, (Vec<IpNet>, Instant)>,
    /// Jails whose bantime [`Applier::banip_for`] changed and did not put back yet, with the
    /// bantime to put back; also in `restore_file`, so that a crash in between cannot leave a
    /// jail's bantime changed for good.
    restore: HashMap<String, i64>,
    restore_file: PathBuf,
}

/// The file in `state_dir` holding the jail bantimes to put back.
const RESTORE_FILE: &str = "bantime-restore.json";

/// One line of the `log` mode's file for the shipped filter: `<epoch> [<ip>] <jail> <origin>`.
fn log_line(e: &shared_f2b::event::Event) -> String {
    let epoch = e.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "{} [{}] {} {}\n",
        epoch.as_secs(),
        e.ip,
        e.jail,
        tame(&e.origin)
    )
}

/// The unbans per local jail, in chunks.
fn unban_ops(unbans: &[(String, IpNet)]) -> Vec<Op> {
    let mut by_jail: BTreeMap<&str, Vec<IpNet>> = BTreeMap::new();
    for (jail, ip) in unbans {
        by_jail.entry(jail).or_default().push(*ip);
    }
    let mut ops = Vec::new();
    for (jail, ips) in by_jail {
        for chunk in ips.chunks(CHUNK) {
            ops.push(Op::Unban {
                jail: jail.to_owned(),
                ips: chunk.to_vec(),
            });
        }
    }
    ops
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
    /// An applier for the configured mode and socket; jail bantimes a crash left changed are
    /// read from `state_dir` (see [`Applier::restore_bantimes`]).
    pub fn new(mode: ApplyMode, f2b: Fail2Ban, log_file: PathBuf, state_dir: &Path) -> Applier {
        let restore_file = state_dir.join(RESTORE_FILE);
        let restore = std::fs::read(&restore_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Applier {
            mode,
            f2b,
            log_file,
            ignore: HashMap::new(),
            restore,
            restore_file,
        }
    }

    /// Puts back the bantime of jails [`Applier::banip_for`] changed and could not put back
    /// (Fail2Ban away, or the subscriber killed in between).
    pub async fn restore_bantimes(&mut self) -> Result<(), ApplyError> {
        if self.restore.is_empty() {
            return Ok(());
        }
        let pending: Vec<(String, i64)> =
            self.restore.iter().map(|(j, b)| (j.clone(), *b)).collect();
        for (jail, bantime) in pending {
            self.f2b
                .command(&["set", &jail, "bantime", &bantime.to_string()])
                .await?;
            tracing::info!(%jail, bantime, "the jail's bantime put back");
            self.restore.remove(&jail);
        }
        self.save_restore()
    }

    /// Keeps the bantimes to put back in `state_dir` before a jail's bantime is changed.
    fn save_restore(&self) -> Result<(), ApplyError> {
        let result = if self.restore.is_empty() {
            match std::fs::remove_file(&self.restore_file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            serde_json::to_vec(&self.restore)
                .map_err(std::io::Error::other)
                .and_then(|bytes| {
                    let tmp = self.restore_file.with_extension("tmp");
                    let mut file = std::fs::File::create(&tmp)?;
                    file.write_all(&bytes)?;
                    file.sync_all()?;
                    std::fs::rename(&tmp, &self.restore_file)
                })
        };
        result.map_err(|source| ApplyError::Write {
            path: self.restore_file.clone(),
            source,
        })
    }

    /// Turns a batch into ops: bans (per local jail and bantime, in arrival order), unbans, then
    /// the operators' lifts (a pardon in a batch wins over a ban before it).
    pub fn plan(
        &self,
        bans: &[PlannedBan],
        unbans: &[(String, IpNet)],
        lifts: &[IpNet],
    ) -> Vec<Op> {
        let mut ops = Vec::new();
        // Bans that go through `banip` whatever the mode: an operator's (with a bantime), and
        // in `ban` mode all of them.
        let banip = |b: &&PlannedBan| {
            self.mode == ApplyMode::Ban || (self.mode == ApplyMode::Attempt && b.bantime.is_some())
        };
        let mut by_jail: BTreeMap<(&str, Option<i64>), Vec<IpNet>> = BTreeMap::new();
        for b in bans.iter().filter(banip) {
            by_jail
                .entry((&b.jail, b.bantime))
                .or_default()
                .push(b.target);
        }
        for ((jail, bantime), ips) in by_jail {
            for chunk in ips.chunks(CHUNK) {
                ops.push(Op::Ban {
                    jail: jail.to_owned(),
                    ips: chunk.to_vec(),
                    bantime,
                });
            }
        }
        let rest: Vec<&PlannedBan> = bans.iter().filter(|b| !banip(b)).collect();
        match self.mode {
            ApplyMode::Ban => {}
            ApplyMode::Attempt => {
                for PlannedBan {
                    jail,
                    target,
                    event: e,
                    ..
                } in rest
                {
                    ops.push(Op::Attempt {
                        jail: jail.clone(),
                        ip: *target,
                        reason: format!(
                            "shared-f2b: reported by {} (jail {})",
                            tame(&e.origin),
                            e.jail
                        ),
                    });
                }
            }
            ApplyMode::Log => {
                if !rest.is_empty() {
                    let lines = rest.iter().map(|b| log_line(&b.event)).collect();
                    ops.push(Op::Log { lines });
                }
            }
        }
        ops.extend(unban_ops(unbans));
        if !lifts.is_empty() {
            ops.push(Op::Lift {
                nets: lifts.to_vec(),
            });
        }
        ops
    }

    /// Runs one op; returns how many addresses it handed over.
    pub async fn execute(&mut self, op: &Op) -> Result<usize, ApplyError> {
        match op {
            Op::Ban { jail, ips, bantime } => {
                let ignored = self.ignored(jail, ips).await?;
                let keep: Vec<IpNet> = ips
                    .iter()
                    .filter(|ip| !ignored.contains(ip))
                    .copied()
                    .collect();
                if keep.is_empty() {
                    return Ok(0);
                }
                let texts: Vec<String> = keep.iter().map(text).collect();
                match bantime {
                    None => self.banip(jail, &texts).await,
                    Some(bantime) => self.banip_for(jail, &texts, *bantime).await,
                }
            }
            Op::Lift { nets } => match self.lift(nets).await {
                // As for unbans: in `log` mode the socket is optional.
                Err(e) if e.is_retry() && self.mode == ApplyMode::Log => {
                    tracing::warn!(?nets, error = %e, "log mode: operator's lift not delivered");
                    Ok(0)
                }
                other => other,
            },
            Op::Attempt { jail, ip, reason } => {
                // Fail2Ban 1.0.2's `attempt` does not consult ignoreip either (filter.py
                // addAttempt goes straight to the fail manager), so it is enforced here too.
                if self.ignored(jail, &[*ip]).await?.contains(ip) {
                    return Ok(0);
                }
                let ip = text(ip);
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
                    .map_err(|source| ApplyError::Write {
                        path: self.log_file.clone(),
                        source,
                    })?;
                let _ = file.flush();
                Ok(lines.lines().count())
            }
            Op::Unban { jail, ips } => {
                let texts: Vec<String> = ips.iter().map(text).collect();
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
    async fn ignored(&mut self, jail: &str, ips: &[IpNet]) -> Result<Vec<IpNet>, ApplyError> {
        let list = self.ignore_list(jail).await?;
        let ignored: Vec<IpNet> = ips
            .iter()
            .filter(|ip| list.iter().any(|net| net.contains(*ip) || ip.contains(net)))
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

    /// `set <jail> banip …`; Fail2Ban answers how many were newly banned (the rest already were).
    async fn banip(&mut self, jail: &str, ips: &[String]) -> Result<usize, ApplyError> {
        let mut args = vec!["set", jail, "banip"];
        args.extend(ips.iter().map(String::as_str));
        let reply = self.f2b.command(&args).await?;
        Ok(reply.as_int().map_or(ips.len(), |n| n.max(0) as usize))
    }

    /// Bans with tickets of their own bantime. Fail2Ban 1.0.2's `banip` takes no bantime: a
    /// ticket without one follows the jail's. So: set the jail's bantime to `bantime`, ban, ban
    /// again (a second ban whose end is later prolongs the ticket, which then keeps that
    /// bantime as its own), and put the jail's bantime back. `get <jail> banip --with-time`
    /// shows the ticket's bantime. Only the subscriber bans in its target jails, and its ops run
    /// one at a time.
    async fn banip_for(
        &mut self,
        jail: &str,
        ips: &[String],
        bantime: i64,
    ) -> Result<usize, ApplyError> {
        // A jail whose bantime could not be put back last time: put back what it was then.
        let jail_bantime = match self.restore.get(jail) {
            Some(bantime) => *bantime,
            None => {
                let reply = self.f2b.command(&["get", jail, "bantime"]).await?;
                reply.as_int().ok_or_else(|| ApplyError::Bantime {
                    jail: jail.to_owned(),
                    value: format!("{:?}", reply.value),
                })?
            }
        };
        self.restore.insert(jail.to_owned(), jail_bantime);
        self.save_restore()?;
        let wanted = bantime.to_string();
        let set = self.f2b.command(&["set", jail, "bantime", &wanted]).await;
        let banned = match set {
            Ok(_) => match self.banip(jail, ips).await {
                Ok(n) => self.banip(jail, ips).await.map(|_| n),
                Err(e) => Err(e),
            },
            Err(e) => Err(e.into()),
        };
        let back = jail_bantime.to_string();
        self.f2b.command(&["set", jail, "bantime", &back]).await?;
        self.restore.remove(jail);
        self.save_restore()?;
        banned
    }

    /// Lifts `nets` in every jail (`unban`, Fail2Ban's "unban everywhere"): the orders' nets
    /// and the held addresses and prefixes that share addresses with them. For an order wider
    /// than one address, what Fail2Ban holds that shares addresses with it is read first
    /// (`banned`), so the host's own bans in it go too.
    async fn lift(&mut self, nets: &[IpNet]) -> Result<usize, ApplyError> {
        let mut texts: Vec<String> = nets.iter().map(text).collect();
        let wide: Vec<&IpNet> = nets
            .iter()
            .filter(|n| n.prefix_len() != n.max_prefix_len())
            .collect();
        if !wide.is_empty() {
            let reply = self.f2b.command(&["banned"]).await?;
            for held in reply.strings {
                let net = held
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| held.parse::<IpAddr>().ok().map(IpNet::from));
                if net.is_some_and(|h| wide.iter().any(|w| overlap(w, &h))) {
                    texts.push(held);
                }
            }
        }
        texts.sort();
        texts.dedup();
        let mut lifted = 0;
        for chunk in texts.chunks(CHUNK) {
            let mut args = vec!["unban"];
            args.extend(chunk.iter().map(String::as_str));
            let reply = self.f2b.command(&args).await?;
            lifted += reply.as_int().unwrap_or(0).max(0) as usize;
        }
        Ok(lifted)
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

    fn net(ip: &str) -> IpNet {
        IpNet::from(parse_ip(ip).unwrap())
    }

    fn planned(event: Event, bantime: Option<i64>) -> PlannedBan {
        PlannedBan {
            jail: "shared".into(),
            target: IpNet::from(event.ip),
            event,
            bantime,
        }
    }

    fn applier(mode: ApplyMode) -> Applier {
        Applier::new(
            mode,
            Fail2Ban::new("/nonexistent".as_ref()),
            "/tmp/x".into(),
            "/nonexistent".as_ref(),
        )
    }

    #[test]
    fn plans_per_mode() {
        let bans = vec![
            planned(ev("alice", "192.0.2.1"), None),
            planned(ev("<F2B_END_COMMAND>", "192.0.2.2"), None),
        ];
        let unbans = vec![("shared".to_string(), net("192.0.2.3"))];
        let ops = applier(ApplyMode::Ban).plan(&bans, &unbans, &[]);
        assert_eq!(ops.len(), 2);
        assert!(matches!(&ops[0], Op::Ban { ips, .. } if ips.len() == 2));
        assert!(matches!(&ops[1], Op::Unban { ips, .. } if ips.len() == 1));

        let ops = applier(ApplyMode::Attempt).plan(&bans, &[], &[]);
        match &ops[1] {
            Op::Attempt { reason, .. } => {
                assert_eq!(
                    reason,
                    "shared-f2b: reported by ?F2B_END_COMMAND? (jail sshd)"
                )
            }
            other => panic!("{other:?}"),
        }
        let ops = applier(ApplyMode::Log).plan(&bans, &[], &[]);
        assert_eq!(
            ops,
            [Op::Log {
                lines: "1700000000 [192.0.2.1] sshd alice\n1700000000 [192.0.2.2] sshd ?F2B_END_COMMAND?\n"
                    .into()
            }]
        );
    }

    #[test]
    fn an_operators_ban_goes_through_banip_with_its_bantime_and_lifts_come_last() {
        let bans = vec![
            planned(ev("alice", "192.0.2.1"), None),
            planned(ev("admin", "192.0.2.2"), Some(7200)),
        ];
        let lifts = vec![net("192.0.2.9")];
        let ops = applier(ApplyMode::Attempt).plan(&bans, &[], &lifts);
        assert_eq!(
            ops[0],
            Op::Ban {
                jail: "shared".into(),
                ips: vec![net("192.0.2.2")],
                bantime: Some(7200)
            }
        );
        assert!(matches!(&ops[1], Op::Attempt { ip, .. } if text(ip) == "192.0.2.1"));
        assert_eq!(
            text(&"2001:db8:1:2::/64".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(ops[2], Op::Lift { nets: lifts });
    }
}
