//! The operator commands: `migrate`, `history`, `active`, `export`, `stats`.

use crate::blocklist::format::{self, Format, Naming};
use crate::blocklist::{self, Family, Filter, Listed, Snapshot};
use crate::db::Db;
use crate::query::{self, HistoryFilter};
use crate::report;
use shared_f2b::Config;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("cannot read the archive: {0}")]
    Read(sqlx::Error),
    #[error(transparent)]
    Filter(#[from] blocklist::BadFilter),
    #[error(transparent)]
    Misp(#[from] crate::misp::MispError),
    #[error("cannot write JSON: {0}")]
    Json(serde_json::Error),
    #[error(
        "--all lists every address ever banned (with its number of bans), for research: use \
         --format plain, csv or json"
    )]
    AllNotAList,
    #[error(
        "the MISP feed needs [archiver.misp] in the config, with at least org_name (your \
         organisation's name) and org_uuid (its uuid in MISP); see config.example.toml"
    )]
    NoMisp,
}

impl From<sqlx::Error> for CommandError {
    fn from(e: sqlx::Error) -> CommandError {
        CommandError::Read(e)
    }
}

impl From<serde_json::Error> for CommandError {
    fn from(e: serde_json::Error) -> CommandError {
        CommandError::Json(e)
    }
}

/// Applies the schema migrations.
pub async fn migrate(db: &Db) -> Result<(), CommandError> {
    db.migrate().await?;
    println!("schema up to date");
    Ok(())
}

/// Prints events matching the filter.
pub async fn history(db: &Db, filter: &HistoryFilter, json: bool) -> Result<(), CommandError> {
    let rows = query::history(db, filter).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::history_json(&rows))?
        );
    } else {
        print!("{}", report::history_table(&rows));
        if let Some(ip) = filter.ip {
            let listed = query::intel_about(db, ip, filter.limit).await?;
            if !listed.is_empty() {
                print!("\n{}", report::listings_table(ip, &listed));
            }
        }
    }
    Ok(())
}

/// The bans active now that `filter` wants.
async fn active_list(
    db: &Db,
    config: &Config,
    filter: &Filter,
) -> Result<Vec<Listed>, CommandError> {
    filter.check()?;
    let upto = blocklist::archived_seq(db).await?;
    let never = blocklist::never_nets(config).await;
    let snapshot = Snapshot::load(db, &never, config.archiver.feed_max_bantime, upto).await?;
    Ok(snapshot.list(SystemTime::now(), filter).0)
}

/// Prints the active bans with how many hosts reported each.
pub async fn active(db: &Db, config: &Config, json: bool) -> Result<(), CommandError> {
    let bans = active_list(db, config, &Filter::default()).await?;
    if json {
        print!(
            "{}",
            format::render(Format::Json, &bans, &Naming::default())
        );
    } else {
        print!("{}", report::active_table(&bans));
    }
    Ok(())
}

/// Prints the active bans (or, with `all`, every address ever banned) in an export format.
pub async fn export(
    db: &Db,
    config: &Config,
    format: Format,
    all: bool,
    filter: &Filter,
    name: &str,
) -> Result<(), CommandError> {
    let list: Vec<Listed> = if all {
        // A research list, not a blocklist: nothing a firewall should load.
        if !matches!(format, Format::Plain | Format::Csv | Format::Json) {
            return Err(CommandError::AllNotAList);
        }
        query::all_banned(db)
            .await?
            .into_iter()
            .map(|c| Listed::counted(c.ip, c.count as usize))
            .collect()
    } else {
        active_list(db, config, filter).await?
    };
    let naming = Naming {
        name: name.to_owned(),
        public_url: config.archiver.public_url.clone(),
    };
    print!("{}", format::render(format, &list, &naming));
    Ok(())
}

/// A `--family` value.
pub fn family(text: &str) -> Result<Family, blocklist::BadFilter> {
    Family::parse(text)
}

/// A `--name` value.
pub fn list_name(text: &str) -> Result<String, format::BadListName> {
    format::check_list_name(text).map(|()| text.to_owned())
}

/// Prints events per day, origin and jail.
pub async fn stats(db: &Db, json: bool) -> Result<(), CommandError> {
    let (days, origins, jails) = query::stats(db).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::stats_json(&days, &origins, &jails))?
        );
    } else {
        print!("{}", report::stats_table(&days, &origins, &jails));
    }
    Ok(())
}

/// A `--since` value: a duration back from now (`90m`, `7d`).
pub fn since(text: &str) -> Result<SystemTime, String> {
    humantime::parse_duration(text)
        .map(|d: Duration| SystemTime::now() - d)
        .map_err(|e| format!("invalid duration {text:?}: {e} (examples: 90m, 12h, 7d)"))
}

/// An `--ip` value, normalised like events are.
pub fn ip(text: &str) -> Result<IpAddr, shared_f2b::event::EventError> {
    shared_f2b::event::parse_ip(text)
}

/// Writes (or updates in place) the MISP feed in `out`.
pub async fn misp_feed(
    db: &Db,
    config: &shared_f2b::Config,
    out: &std::path::Path,
    since: Option<SystemTime>,
) -> Result<(), CommandError> {
    let misp = misp_config(config)?;
    let s =
        crate::misp::write_feed(db, misp, &blocklist::never_nets(config).await, out, since).await?;
    println!(
        "MISP feed {}: {} days with {} bans ({} files changed, {} emptied days removed); \
         {} events in the feed",
        out.display(),
        s.days,
        s.bans,
        s.written,
        s.removed,
        s.events
    );
    Ok(())
}

/// `[archiver.misp]`, or an error saying what to add.
fn misp_config(
    config: &shared_f2b::Config,
) -> Result<&shared_f2b::config::MispConfig, CommandError> {
    config.archiver.misp.as_ref().ok_or(CommandError::NoMisp)
}

/// Sends the MISP feed's events of the days since `since` to a MISP instance.
pub async fn misp_push(
    db: &Db,
    config: &shared_f2b::Config,
    url: &str,
    key_file: &std::path::Path,
    since: SystemTime,
) -> Result<(), CommandError> {
    let misp = misp_config(config)?;
    let target = crate::misp::Target::new(url, key_file)?;
    let s = crate::misp::push(
        db,
        misp,
        &blocklist::never_nets(config).await,
        &target,
        since,
    )
    .await?;
    println!(
        "MISP {url}: {} days with {} bans sent ({} created, {} updated, {} unchanged)",
        s.days, s.bans, s.created, s.updated, s.unchanged
    );
    Ok(())
}
