//! Command-line interface of `shared-f2b-admin`, and the parsers for its values (a bad value is
//! a usage error, exit 2, before anything is sent).

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use shared_f2b::control::parse_net;
use shared_f2b::event::{self, PERMANENT};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// How long a pardon lasts when `--for` is not given.
pub const DEFAULT_PARDON: Duration = Duration::from_secs(24 * 3600);
/// An operator ban's bantime when `--bantime` is not given, in seconds.
pub const DEFAULT_BANTIME: i64 = 3600;
/// The longest `--for` accepted (100 years): anything longer is a typo, or `forever`.
pub const MAX_LASTS: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Orders for the whole site: pardons, allows, revokes and operator bans, published as control
/// events (only operator NATS users may), and the list of what is in force.
#[derive(Debug, Parser)]
#[command(name = "shared-f2b-admin", version)]
pub struct Cli {
    /// Config file [default: /etc/shared-f2b/config.toml]
    #[arg(long, global = true, env = shared_f2b::config::ENV_VAR)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Lift an address (or every address in a net) on every host now, and apply no remote ban
    /// of it for a while.
    Pardon {
        /// The address or net (192.0.2.7, 2001:db8::/64).
        #[arg(long, value_name = "ADDR|CIDR", value_parser = net)]
        ip: IpNet,
        /// How long the pardon holds (90m, 24h, 7d), or `forever` (until revoked) [default: 24h].
        #[arg(long = "for", value_name = "DURATION", value_parser = lasts)]
        lasts: Option<Lasts>,
        /// Why (shown in `list`, the logs and the archive).
        #[arg(long)]
        reason: String,
    },
    /// Never ban anything in a net on any host (a partner's gateway, a probe); lifts what is
    /// banned there now.
    Allow {
        /// The net (198.51.100.0/24) or one address.
        #[arg(long, value_name = "CIDR", value_parser = net)]
        net: IpNet,
        /// How long the allow holds (90m, 24h, 7d) or `forever` [default: forever, until revoked].
        #[arg(long = "for", value_name = "DURATION", value_parser = lasts)]
        lasts: Option<Lasts>,
        /// Why (shown in `list`, the logs and the archive).
        #[arg(long)]
        reason: String,
    },
    /// End a pardon or allow early (its id as `list` shows it).
    Revoke {
        /// The id of the pardon or allow.
        #[arg(value_name = "ID", value_parser = id)]
        id: Uuid,
        /// Why [default: "revoked by <operator>"].
        #[arg(long)]
        reason: Option<String>,
    },
    /// Ban one address on every host, as if every host had reported it.
    Ban {
        /// The address (one address, not a net).
        #[arg(long, value_name = "ADDR", value_parser = address)]
        ip: IpAddr,
        /// Ban length in seconds, -1 for permanent.
        #[arg(long, value_name = "S", default_value_t = DEFAULT_BANTIME,
              allow_negative_numbers = true, value_parser = bantime)]
        bantime: i64,
        /// Why (shown in `list`, the logs and the archive).
        #[arg(long)]
        reason: String,
    },
    /// Show the pardons, allows and operator bans in force now (asks the archiver).
    List {
        /// One JSON array of {seq, control} objects.
        #[arg(long)]
        json: bool,
    },
    /// Enrol, remove, rotate and list the hosts' keys (run on the NATS server's machine, with
    /// `[admin] hosts_file` and `[trust] operator_seed_file`).
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// Make a new operator key pair: the seed goes to FILE (mode 0600), the public key
    /// (for every host's `[trust] operator_keys`) is printed.
    OperatorKey {
        /// Where the seed goes (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// `host …`: enrolment.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Enrol a host: a new key pair, its seed file (0600) and config in --out, its NATS user
    /// in the hosts file, a key record every subscriber learns, and nats-server reloaded.
    Add {
        /// The host's name (its `host_id`).
        name: String,
        /// Where the host's NAME.seed and NAME.toml go.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// The seed's path on the host, as written into NAME.toml [default: where it is written].
        #[arg(long, value_name = "PATH")]
        seed_path: Option<PathBuf>,
        /// Also print the seed on stdout.
        #[arg(long)]
        print_seed: bool,
        /// A sensor (a honeypot): its user may only publish its own events, not follow the
        /// live subjects or ask for catch-up; it runs no subscriber.
        #[arg(long)]
        sensor: bool,
    },
    /// Remove a host: its keys end now everywhere, its NATS user goes, its connections close.
    Remove {
        /// The host's name.
        name: String,
    },
    /// Give a host a new key; the old one keeps working for --grace, then stops.
    Rotate {
        /// The host's name.
        name: String,
        /// How long the old key keeps working (0s: not at all) [default: 1h].
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = grace)]
        grace: Duration,
        /// Where the host's new NAME.seed and NAME.toml go (replacing the old ones).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// The seed's path on the host, as written into NAME.toml.
        #[arg(long, value_name = "PATH")]
        seed_path: Option<PathBuf>,
        /// Also print the new seed on stdout.
        #[arg(long)]
        print_seed: bool,
    },
    /// List the enrolled hosts and their keys.
    List {
        /// The registry as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take keys whose grace is over out of the hosts file (run it from a timer after rotations).
    Prune,
}

/// `--grace`: a duration (0s allowed).
pub fn grace(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}; use a duration such as 0s, 10m or 1h"))?;
    if d > MAX_LASTS {
        return Err("longer than 100 years".into());
    }
    Ok(d)
}

/// How long a pardon or allow holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasts {
    For(Duration),
    /// Until revoked.
    Forever,
}

impl Lasts {
    /// The duration, `None` for until revoked.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Lasts::For(d) => Some(d),
            Lasts::Forever => None,
        }
    }
}

/// `--for`: a duration (`90m`, `24h`, `7d`, `1h 30m`) or `forever`.
pub fn lasts(text: &str) -> Result<Lasts, String> {
    if text.trim() == "forever" {
        return Ok(Lasts::Forever);
    }
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{e}; use a duration such as 90m, 24h or 7d, or `forever` (until revoked)")
    })?;
    if d < Duration::from_secs(1) {
        return Err("a duration of at least 1s (or `forever`)".into());
    }
    if d > MAX_LASTS {
        return Err("longer than 100 years; use `forever` (until revoked)".into());
    }
    Ok(Lasts::For(d))
}

/// `--ip` of a pardon, `--net` of an allow: an address or a net.
pub fn net(text: &str) -> Result<IpNet, String> {
    parse_net(text.trim()).map_err(|_| {
        format!("{text:?} is not an address or net (192.0.2.7, 198.51.100.0/24, 2001:db8::/64)")
    })
}

/// `--ip` of a ban: one address.
pub fn address(text: &str) -> Result<IpAddr, String> {
    if text.contains('/') {
        return Err(format!(
            "{text:?} is a net; an operator ban names one address (pardon and allow take nets)"
        ));
    }
    event::parse_ip(text.trim()).map_err(|_| format!("{text:?} is not an IPv4 or IPv6 address"))
}

/// `--bantime`: seconds (at least 1), or -1 for permanent.
pub fn bantime(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a bantime: use seconds (at least 1) or -1 for permanent");
    let secs: i64 = text.trim().parse().map_err(|_| bad())?;
    if secs == 0 || (secs != PERMANENT && event::validate_bantime(secs).is_err()) {
        return Err(bad());
    }
    Ok(secs)
}

/// A control event's id (a UUID, as `list` prints it).
pub fn id(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text.trim())
        .map_err(|_| format!("{text:?} is not an id (a UUID, as `list` prints it)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let mut all = vec!["shared-f2b-admin"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.command)
    }

    #[test]
    fn the_interface_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(lasts("24h"), Ok(Lasts::For(DEFAULT_PARDON)));
        assert_eq!(lasts("90m"), Ok(Lasts::For(Duration::from_secs(5400))));
        assert_eq!(lasts("1h 30m"), Ok(Lasts::For(Duration::from_secs(5400))));
        assert_eq!(lasts("7d"), Ok(Lasts::For(Duration::from_secs(7 * 86400))));
        assert_eq!(lasts("forever"), Ok(Lasts::Forever));
        assert_eq!(Lasts::Forever.duration(), None);
        for bad in [
            "",
            "0s",
            "500ms",
            "soon",
            "-1h",
            "24",
            "200years",
            "forever and ever",
        ] {
            assert!(lasts(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn addresses_and_nets() {
        assert_eq!(net("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            net("198.51.100.9/24").unwrap().to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(net("2001:db8::1/64").unwrap().to_string(), "2001:db8::/64");
        for bad in ["", "nope", "192.0.2.1/33", "192.0.2", "::1/129"] {
            assert!(net(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            address("::ffff:192.0.2.1").unwrap().to_string(),
            "192.0.2.1"
        );
        assert!(address("192.0.2.0/24").unwrap_err().contains("is a net"));
        assert!(address("example.org").is_err());
    }

    #[test]
    fn bantimes() {
        assert_eq!(bantime("3600"), Ok(3600));
        assert_eq!(bantime("-1"), Ok(PERMANENT));
        for bad in ["0", "-2", "1h", "", "99999999999999"] {
            assert!(bantime(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn commands_and_defaults() {
        match parse(&["pardon", "--ip", "192.0.2.7", "--reason", "x"]).unwrap() {
            Command::Pardon { ip, lasts, reason } => {
                assert_eq!(ip.to_string(), "192.0.2.7/32");
                assert_eq!(lasts, None);
                assert_eq!(reason, "x");
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "allow",
            "--net",
            "2001:db8::/48",
            "--for",
            "7d",
            "--reason",
            "probe",
        ])
        .unwrap()
        {
            Command::Allow { lasts, .. } => {
                assert_eq!(lasts, Some(Lasts::For(Duration::from_secs(7 * 86400))))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["ban", "--ip", "192.0.2.1", "--reason", "scan"]).unwrap() {
            Command::Ban { bantime, .. } => assert_eq!(bantime, DEFAULT_BANTIME),
            other => panic!("{other:?}"),
        }
        match parse(&[
            "ban",
            "--ip",
            "192.0.2.1",
            "--bantime",
            "-1",
            "--reason",
            "s",
        ])
        .unwrap()
        {
            Command::Ban { bantime, .. } => assert_eq!(bantime, PERMANENT),
            other => panic!("{other:?}"),
        }
        let id = "0192f0c4-7d1e-7a4b-9c3d-2e1f0a9b8c7d";
        match parse(&["revoke", id]).unwrap() {
            Command::Revoke { id: got, reason } => {
                assert_eq!(got.to_string(), id);
                assert_eq!(reason, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["list", "--json"]).unwrap(),
            Command::List { json: true }
        ));
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for args in [
            &["pardon", "--ip", "192.0.2.7"][..],
            &["pardon", "--ip", "nope", "--reason", "x"],
            &[
                "pardon",
                "--ip",
                "192.0.2.7",
                "--for",
                "soon",
                "--reason",
                "x",
            ],
            &["allow", "--reason", "x"],
            &["ban", "--ip", "192.0.2.0/24", "--reason", "x"],
            &[
                "ban",
                "--ip",
                "192.0.2.1",
                "--bantime",
                "0",
                "--reason",
                "x",
            ],
            &["revoke", "not-an-id"],
            &["unban", "--ip", "192.0.2.1"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }
}
