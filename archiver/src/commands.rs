//! The operator commands: `migrate`, `history`, `active`, `export`, `stats`.

use crate::db::Db;
use crate::query::{self, Counted, HistoryFilter};
use crate::report::{self, Format};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Applies the schema migrations.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    db.migrate().await?;
    println!("schema up to date");
    Ok(())
}

/// Prints events matching the filter.
pub async fn history(db: &Db, filter: &HistoryFilter, json: bool) -> anyhow::Result<()> {
    let rows = query::history(db, filter).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::history_json(&rows))?
        );
    } else {
        print!("{}", report::history_table(&rows));
    }
    Ok(())
}

/// Every active ban row (one per origin), all pages.
async fn active_rows(db: &Db) -> anyhow::Result<Vec<query::Stored>> {
    let now = SystemTime::now();
    let all = ["*".to_owned()];
    let mut rows = Vec::new();
    let mut after = 0;
    loop {
        let page = query::active_page(db, now, &all, None, after, i64::MAX as u64, 10_000).await?;
        let done = page.len() < 10_000;
        after = page.last().map_or(after, |s| s.row_id);
        rows.extend(page);
        if done {
            return Ok(rows);
        }
    }
}

/// Prints the active bans with how many hosts reported each.
pub async fn active(db: &Db, json: bool) -> anyhow::Result<()> {
    let bans = report::group_active(&active_rows(db).await?);
    if json {
        let items: Vec<_> = bans
            .iter()
            .map(|b| {
                serde_json::json!({
                    "ip": b.ip.to_string(),
                    "reporters": b.reporters,
                    "jails": b.jails,
                    "expires": b.expires.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        print!("{}", report::active_table(&bans));
    }
    Ok(())
}

/// Prints the active bans (or, with `all`, every address ever banned) in an export format.
pub async fn export(db: &Db, format: Format, all: bool, name: &str) -> anyhow::Result<()> {
    let list: Vec<Counted> = if all {
        query::all_banned(db).await?
    } else {
        report::group_active(&active_rows(db).await?)
            .into_iter()
            .map(|b| Counted {
                ip: b.ip,
                count: b.reporters as u64,
            })
            .collect()
    };
    print!("{}", report::export(format, &list, name));
    Ok(())
}

/// Prints events per day, origin and jail.
pub async fn stats(db: &Db, json: bool) -> anyhow::Result<()> {
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
pub fn ip(text: &str) -> Result<IpAddr, String> {
    shared_f2b::event::parse_ip(text).map_err(|e| e.to_string())
}
