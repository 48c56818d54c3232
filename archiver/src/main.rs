//! `shared-f2b-archiver`: archives every event in MySQL/MariaDB or SQLite, answers replay
//! requests, and answers operators' questions about the history.

use anyhow::Context;
use clap::{Parser, Subcommand};
use shared_f2b::{Config, config, shutdown, telemetry};
use shared_f2b_archiver::blocklist::format::Format;
use shared_f2b_archiver::blocklist::{Family, Filter};
use shared_f2b_archiver::legacy::api::clients::Clients;
use shared_f2b_archiver::legacy::import::{self, ImportOptions};
use shared_f2b_archiver::query::HistoryFilter;
use shared_f2b_archiver::{commands, daemon, db::Db, verify};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

/// Archives Shared Fail2Ban events and serves replay and history.
#[derive(Parser)]
#[command(name = "shared-f2b-archiver", version)]
struct Cli {
    /// Config file [default: /etc/shared-f2b/config.toml]
    #[arg(long, global = true, env = config::ENV_VAR)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Apply the schema migrations and exit.
    Migrate {
        /// Use this database URL (an admin's) instead of the config's.
        #[arg(long, env = "SHARED_F2B_MIGRATE_URL")]
        database_url: Option<String>,
    },
    /// Show archived events, newest first.
    History {
        #[arg(long, value_parser = commands::ip)]
        ip: Option<IpAddr>,
        #[arg(long)]
        jail: Option<String>,
        #[arg(long)]
        origin: Option<String>,
        /// Only events newer than this (e.g. 90m, 12h, 7d).
        #[arg(long, value_parser = commands::since)]
        since: Option<SystemTime>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show the bans active now, with how many hosts reported each.
    Active {
        #[arg(long)]
        json: bool,
    },
    /// Print the active bans (or every address ever banned) for a firewall, Zeek or another
    /// site, as `/v1/blocklist` serves them; or write a MISP feed (`--format misp-feed --out DIR`).
    Export(Export),
    /// Send the MISP feed's events to a MISP instance's REST API (created, or updated in place).
    MispPush {
        /// The MISP instance, e.g. https://misp.example.org
        #[arg(long)]
        url: String,
        /// A file holding the MISP API key (one line).
        #[arg(long)]
        key_file: PathBuf,
        /// Only the days with bans newer than this.
        #[arg(long, default_value = "2d", value_parser = commands::since)]
        since: SystemTime,
    },
    /// Exit 0 when the running archiver reports healthy on its metrics_listen (healthchecks).
    Health,
    /// Events per day, per origin and per jail.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Import the history of the original Shared Fail2Ban (its MySQL table `f2b`) as archived
    /// events: idempotent, bad rows reported by reason and left out.
    ImportLegacy {
        /// The original's database, e.g. mysql://f2b:PASSWORD@db.example.org/f2b
        #[arg(long)]
        from: String,
        /// The zone the hosts wrote `created` in (IANA name) [default: this machine's zone]
        #[arg(long)]
        timezone: Option<String>,
        /// A file of `<legacy hostname> <host id>` lines [default: each hostname's short name]
        #[arg(long)]
        hosts: Option<PathBuf>,
        /// Read and check every row, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also publish the bans still running, each as its host (the old hosts' logins of
        /// [[archiver.legacy_api.hosts]]): every host applies them now.
        #[arg(long, conflicts_with = "dry_run")]
        publish_active: bool,
        /// Delete what earlier imports archived first (to import again with another zone or
        /// host map).
        #[arg(long, conflicts_with = "dry_run")]
        replace: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check every archived event's and order's signature again: how many are signed, by
    /// which keys, which fail (exit 1 if any does).
    Verify {
        #[arg(long)]
        json: bool,
    },
}

// `export`'s arguments (the variant's doc comment is its help).
#[derive(clap::Args)]
struct Export {
    #[arg(long, value_enum, default_value = "plain")]
    format: Format,
    /// Every address ever banned, with its ban count.
    #[arg(long, conflicts_with_all = ["jail", "min_reporters", "family"])]
    all: bool,
    /// Only bans from this jail.
    #[arg(long)]
    jail: Option<String>,
    /// Only addresses at least this many hosts banned (an operator's ban always counts).
    #[arg(long, default_value_t = 1)]
    min_reporters: usize,
    /// Only IPv4 (4) or IPv6 (6) addresses.
    #[arg(long, value_parser = commands::family)]
    family: Option<Family>,
    /// Table (nftables), set-name prefix (ipset) or address list (MikroTik).
    #[arg(long, default_value = "shared-f2b", value_parser = commands::list_name)]
    name: String,
    /// misp-feed: the feed's directory (created; updated in place on the next run).
    #[arg(long)]
    out: Option<PathBuf>,
    /// misp-feed: only bans newer than this (e.g. 30d); default: the whole archive.
    #[arg(long, value_parser = commands::since)]
    since: Option<SystemTime>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init("info");
    let config = match shared_f2b::cli::load_config(cli.config.as_deref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => daemon::run(config, shutdown::on_signals())
            .await
            .map_err(Into::into),
        command => operator(&config, command).await,
    };
    shared_f2b::cli::exit_code(result)
}

async fn operator(config: &Config, command: Command) -> anyhow::Result<()> {
    if let Command::Health = command {
        let addr = config
            .archiver
            .metrics_listen
            .ok_or_else(|| anyhow::anyhow!("health needs [archiver] metrics_listen"))?;
        let (code, report) = shared_f2b::metrics::healthz(addr)
            .await
            .with_context(|| format!("cannot reach the archiver at {addr}"))?;
        print!("{report}");
        anyhow::ensure!(code == 200, "the archiver at {addr} is not healthy");
        return Ok(());
    }
    if let Command::Migrate { database_url } = &command {
        let url = database_url
            .as_deref()
            .unwrap_or(config.archiver.database_url.expose());
        return Ok(commands::migrate(&Db::connect(url).await?).await?);
    }
    let db = Db::connect(config.archiver.database_url.expose()).await?;
    match command {
        Command::Run | Command::Migrate { .. } | Command::Health => {
            unreachable!("handled above")
        }
        Command::History {
            ip,
            jail,
            origin,
            since,
            limit,
            json,
        } => {
            let filter = HistoryFilter {
                ip,
                jail,
                origin,
                since,
                limit,
            };
            Ok(commands::history(&db, &filter, json).await?)
        }
        Command::Active { json } => Ok(commands::active(&db, config, json).await?),
        Command::Export(args) => export(&db, config, args).await,
        Command::MispPush {
            url,
            key_file,
            since,
        } => Ok(commands::misp_push(&db, config, &url, &key_file, since).await?),
        Command::Stats { json } => Ok(commands::stats(&db, json).await?),
        Command::ImportLegacy {
            from,
            timezone,
            hosts,
            dry_run,
            publish_active,
            replace,
            json,
        } => {
            let options = ImportOptions {
                from,
                timezone,
                hosts,
                dry_run,
                publish_active,
                replace,
            };
            let old_hosts = match (&config.archiver.legacy_api, publish_active) {
                (Some(api), true) => Some(Clients::connect(api).await?),
                (None, true) => anyhow::bail!(
                    "--publish-active publishes each ban as its host: list the old hosts in \
                     [[archiver.legacy_api.hosts]] (config = their own config, with its NATS login)"
                ),
                (_, false) => None,
            };
            let report = import::import(&db, &options, old_hosts.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", import::render(&report));
            }
            Ok(())
        }
        Command::Verify { json } => {
            let operators = config.trust.operator_keys()?;
            let intel = config.trust.intel_signers()?;
            let report = verify::verify(&db, &operators, &intel).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", verify::render(&report));
            }
            anyhow::ensure!(
                report.failed_total() == 0,
                "{} signatures fail",
                report.failed_total()
            );
            Ok(())
        }
    }
}

/// `export`: a list to standard output, or the MISP feed's directory.
async fn export(db: &Db, config: &Config, args: Export) -> anyhow::Result<()> {
    let Export {
        format,
        all,
        jail,
        min_reporters,
        family,
        name,
        out,
        since,
    } = args;
    if format == Format::MispFeed {
        anyhow::ensure!(
            !all && jail.is_none() && family.is_none(),
            "--all, --jail and --family are for the lists; the MISP feed holds every ban"
        );
        let out = out.ok_or_else(|| anyhow::anyhow!("--format misp-feed needs --out DIR"))?;
        return Ok(commands::misp_feed(db, config, &out, since).await?);
    }
    anyhow::ensure!(
        out.is_none() && since.is_none(),
        "--out and --since are for --format misp-feed; a list goes to standard output"
    );
    let filter = Filter {
        jail,
        min_reporters,
        family,
        intel: true,
    };
    Ok(commands::export(db, config, format, all, &filter, &name).await?)
}
