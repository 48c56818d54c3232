//! `import-legacy`: the original's `f2b` table, read in pages by its primary key, archived as
//! history events (idempotent: a row's event id is derived from the row), with a report of
//! what was imported and what was refused and why.

use super::api::clients::Clients;
use super::hosts::{HostMap, HostMapError};
use super::row::{Converter, LegacyRow, Refused};
use crate::db::{Db, DbError};
use crate::store::{self, Archived};
use jiff::tz::TimeZone;
use sqlx::Row;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Rows read per page of the source table.
const PAGE_ROWS: i64 = 10_000;
/// Pages converted but not yet written: the reader stays this far ahead of the writer.
const PAGES_AHEAD: usize = 4;
/// Row ids kept per refusal reason, for the report.
const SAMPLE_IDS: usize = 10;

/// What to import, and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The original's database, `mysql://user:password@host/f2b`.
    pub from: String,
    /// The zone `created` was written in (an IANA name); `None`: this machine's zone.
    pub timezone: Option<String>,
    /// The map of legacy hostnames to host ids.
    pub hosts: Option<PathBuf>,
    /// Read and convert everything, write nothing.
    pub dry_run: bool,
    /// Also publish the bans still running, each as its host (the old hosts' logins of
    /// `[[archiver.legacy_api.hosts]]`), so that every host applies them now.
    pub publish_active: bool,
    /// Delete the history an earlier import archived first (to import it again with another
    /// zone or host map: the ids stay, so a plain second run would keep the first one's rows).
    pub replace: bool,
}

/// Why the import stopped. Rows already written stay written: a second run goes on from them.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("--from must be a mysql:// or mariadb:// URL of the original's database, not {0}")]
    Scheme(String),
    #[error("cannot connect to the original's database at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot read table f2b at {url}: {source}")]
    Read { url: String, source: sqlx::Error },
    #[error("unknown time zone {name}: {source} (an IANA name such as Europe/London)")]
    Zone { name: String, source: jiff::Error },
    #[error(transparent)]
    Hosts(#[from] HostMapError),
    #[error(transparent)]
    Archive(#[from] DbError),
    #[error("cannot write to the archive: {0}")]
    Write(sqlx::Error),
    #[error("--publish-active: {0} (the rest of the import is archived)")]
    Publish(String),
}

/// Rows refused for one reason: how many, and the first few ids.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RefusedRows {
    pub count: u64,
    pub ids: Vec<i64>,
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// The source, without its password.
    pub source: String,
    /// The zone the local times were read in.
    pub zone: String,
    /// Whether that zone is this machine's (no `--timezone` given).
    pub zone_is_default: bool,
    pub dry_run: bool,
    pub rows_read: u64,
    /// Rows archived by this run.
    pub imported: u64,
    /// Good rows that were in the archive already (an earlier run).
    pub already_archived: u64,
    /// Rows of earlier imports deleted first (`--replace`).
    pub replaced: u64,
    /// Refused rows by reason (`bad_ip`, …).
    pub refused: BTreeMap<&'static str, RefusedRows>,
    /// Local times in a daylight-saving fold (read as the earlier) or gap (read as after it).
    pub ambiguous_times: u64,
    /// Rows imported without their port or protocol (not a port list or protocol name).
    pub dropped_ports: u64,
    /// Bans whose time had not run out at the import (history only unless published).
    pub still_running: u64,
    /// Of those, published into the stream as their hosts' (`--publish-active`).
    pub published: u64,
    /// Hosts whose running bans were not published: no login for them (host id, bans).
    pub not_published: BTreeMap<String, u64>,
    /// Each legacy hostname (lower case; `NULL` for none) with its host id and row count.
    pub hosts: BTreeMap<String, (String, u64)>,
    pub seconds: f64,
}

impl ImportReport {
    pub fn refused_total(&self) -> u64 {
        self.refused.values().map(|r| r.count).sum()
    }
}

/// Reads the whole table and archives its good rows; with `publish_active`, publishes the
/// bans still running as the `old_hosts` they belong to.
pub async fn import(
    db: &Db,
    options: &ImportOptions,
    old_hosts: Option<&Clients>,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let (zone, zone_name) = zone(options.timezone.as_deref())?;
    let hosts = match &options.hosts {
        Some(path) => HostMap::load(path)?,
        None => HostMap::default(),
    };
    let source_url = redact(&options.from);
    let source = connect(&options.from, &source_url).await?;
    let mut replaced = 0;
    if !options.dry_run {
        db.migrate().await?;
        if options.replace {
            replaced = store::delete_imported(db)
                .await
                .map_err(ImportError::Write)?;
        }
    }
    let mut report = ImportReport {
        source: source_url.clone(),
        zone: zone_name,
        zone_is_default: options.timezone.is_none(),
        dry_run: options.dry_run,
        replaced,
        ..ImportReport::default()
    };
    let converter = Converter { hosts, zone };
    let (pages, mut written) = mpsc::channel::<Vec<Archived>>(PAGES_AHEAD);
    let writer = {
        let db = (!options.dry_run).then(|| Db {
            pool: db.pool.clone(),
            backend: db.backend,
        });
        tokio::spawn(async move {
            let mut new = 0u64;
            while let Some(mut page) = written.recv().await {
                let Some(db) = &db else { continue };
                // What is archived already stays as it is; the rest is this run's.
                let ids: Vec<_> = page.iter().map(|a| a.event.id).collect();
                let have = store::archived_ids(db, &ids)
                    .await
                    .map_err(ImportError::Write)?;
                page.retain(|a| !have.contains(&a.event.id));
                store::insert(db, &page, &[], &[])
                    .await
                    .map_err(ImportError::Write)?;
                new += page.len() as u64;
            }
            Ok::<u64, ImportError>(new)
        })
    };
    let mut running = Vec::new();
    let keep = options.publish_active.then_some(&mut running);
    let read = read_all(&source, &source_url, &converter, &mut report, &pages, keep).await;
    drop(pages);
    let new = writer.await.expect("the import's writer does not panic");
    read?;
    let new = new?;
    let good = report.rows_read - report.refused_total();
    report.imported = if options.dry_run { good } else { new };
    report.already_archived = if options.dry_run { 0 } else { good - new };
    source.close().await;
    if let (true, Some(clients)) = (options.publish_active && !options.dry_run, old_hosts) {
        publish_running(clients, running, &mut report).await?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Reads page after page, converting each row, and hands the good ones to the writer.
async fn read_all(
    source: &MySqlPool,
    url: &str,
    converter: &Converter,
    report: &mut ImportReport,
    pages: &mpsc::Sender<Vec<Archived>>,
    mut running: Option<&mut Vec<shared_f2b::Event>>,
) -> Result<(), ImportError> {
    let now = SystemTime::now();
    let mut after = i64::MIN;
    loop {
        let rows = page(source, after, PAGE_ROWS)
            .await
            .map_err(|source| ImportError::Read {
                url: url.to_owned(),
                source,
            })?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.id;
        let mut good = Vec::with_capacity(rows.len());
        for row in &rows {
            report.rows_read += 1;
            match converter.convert(row) {
                Ok(c) => {
                    report.ambiguous_times += u64::from(c.ambiguous);
                    report.dropped_ports += u64::from(c.dropped_ports);
                    if !c.event.expired_at(now) {
                        report.still_running += 1;
                        if let Some(running) = running.as_deref_mut() {
                            running.push(c.event.clone());
                        }
                    }
                    let name = row
                        .hostname
                        .as_deref()
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map_or_else(|| "NULL".to_owned(), str::to_ascii_lowercase);
                    report
                        .hosts
                        .entry(name)
                        .or_insert_with(|| (c.event.origin.clone(), 0))
                        .1 += 1;
                    good.push(Archived {
                        event: c.event,
                        seq: store::IMPORTED_SEQ as u64,
                    });
                }
                Err(why) => refuse(report, why, row.id),
            }
        }
        if pages.send(good).await.is_err() {
            // The writer stopped on an error, which the caller reports.
            return Ok(());
        }
    }
}

/// Publishes each running ban as its host, under an id of its own derived from the archived
/// one (the archived history stays history; a second run publishes the same ids, which the
/// stream, the archive and the subscribers dedupe).
async fn publish_running(
    clients: &Clients,
    running: Vec<shared_f2b::Event>,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    for mut event in running {
        let Some(client) = clients.by_host_id(&event.origin) else {
            *report
                .not_published
                .entry(event.origin.clone())
                .or_default() += 1;
            continue;
        };
        event.id = super::row::active_id(event.id);
        client
            .publish(event)
            .await
            .map_err(|e| ImportError::Publish(e.to_string()))?;
        report.published += 1;
    }
    Ok(())
}

fn refuse(report: &mut ImportReport, why: Refused, id: i64) {
    let rows = report.refused.entry(why.name()).or_default();
    rows.count += 1;
    if rows.ids.len() < SAMPLE_IDS {
        rows.ids.push(id);
    }
}

/// One page of rows after id `after`, every column as text. The table's own `f2b.id` orders
/// and filters: ordering by the alias `id` (the CAST) would sort the whole rest of the table
/// for every page (measured: 0.8 s a page instead of 27 ms).
pub(super) async fn page(
    source: &MySqlPool,
    after: i64,
    limit: i64,
) -> Result<Vec<LegacyRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT CAST(id AS SIGNED) AS id, CAST(hostname AS CHAR) AS hostname, \
         CAST(created AS CHAR) AS created, CAST(jail AS CHAR) AS jail, \
         CAST(protocol AS CHAR) AS protocol, CAST(port AS CHAR) AS port, \
         CAST(ip AS CHAR) AS ip, CAST(bantime AS CHAR) AS bantime \
         FROM f2b WHERE f2b.id > ? ORDER BY f2b.id LIMIT ?",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(source)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LegacyRow {
                id: r.try_get("id")?,
                hostname: r.try_get("hostname")?,
                created: r.try_get("created")?,
                jail: r.try_get("jail")?,
                protocol: r.try_get("protocol")?,
                port: r.try_get("port")?,
                ip: r.try_get("ip")?,
                bantime: r.try_get("bantime")?,
            })
        })
        .collect()
}

async fn connect(url: &str, shown: &str) -> Result<MySqlPool, ImportError> {
    let pool = pool_options()
        .connect_with(source_options(url, shown)?)
        .await
        .map_err(|source| ImportError::Connect {
            url: shown.to_owned(),
            source,
        })?;
    Ok(pool)
}

/// A pool for the original's database that connects when first used (the bridge: the old
/// database being away must not keep the archiver from starting).
pub(super) fn connect_lazy(url: &str, shown: &str) -> Result<MySqlPool, ImportError> {
    Ok(pool_options().connect_lazy_with(source_options(url, shown)?))
}

fn pool_options() -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
}

/// The connection options of `url`, in the server's own time zone (as the old hosts' `NOW()`
/// is), not the UTC sqlx sets by default.
fn source_options(url: &str, shown: &str) -> Result<MySqlConnectOptions, ImportError> {
    let url = if let Some(rest) = url.strip_prefix("mariadb://") {
        format!("mysql://{rest}")
    } else if url.starts_with("mysql://") {
        url.to_owned()
    } else {
        return Err(ImportError::Scheme(shown.to_owned()));
    };
    let options: MySqlConnectOptions = url.parse().map_err(|source| ImportError::Connect {
        url: shown.to_owned(),
        source,
    })?;
    Ok(options.timezone(None))
}

/// The zone named, or this machine's; and how the report names it.
pub(super) fn zone(name: Option<&str>) -> Result<(TimeZone, String), ImportError> {
    match name {
        Some(name) => TimeZone::get(name)
            .map(|tz| (tz, name.to_owned()))
            .map_err(|source| ImportError::Zone {
                name: name.to_owned(),
                source,
            }),
        None => {
            let tz = TimeZone::system();
            let name = tz.iana_name().unwrap_or("unnamed").to_owned();
            Ok((tz, name))
        }
    }
}

/// The URL without its password: `mysql://f2b:***@db/f2b`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".into();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The report for people.
pub fn render(report: &ImportReport) -> String {
    let mut out = String::new();
    let verb = if report.dry_run {
        "would import"
    } else {
        "imported"
    };
    let _ = writeln!(out, "source: {} (table f2b)", report.source);
    let _ = writeln!(
        out,
        "times read as {}{}",
        report.zone,
        if report.zone_is_default {
            " (this machine's zone; --timezone ZONE to choose another)"
        } else {
            ""
        }
    );
    if report.replaced > 0 {
        let _ = writeln!(out, "deleted first (--replace): {}", report.replaced);
    }
    let _ = writeln!(out, "rows read: {}", report.rows_read);
    let _ = writeln!(out, "{verb}: {}", report.imported);
    if !report.dry_run {
        let _ = writeln!(out, "already archived: {}", report.already_archived);
    }
    let _ = writeln!(out, "refused: {}", report.refused_total());
    for (why, rows) in &report.refused {
        let ids: Vec<String> = rows.ids.iter().map(i64::to_string).collect();
        let more = if rows.count > rows.ids.len() as u64 {
            ", …"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {why}: {} (ids {}{more})",
            rows.count,
            ids.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "ambiguous local times (daylight saving): {}",
        report.ambiguous_times
    );
    let _ = writeln!(out, "ports or protocols not kept: {}", report.dropped_ports);
    if report.published > 0 || !report.not_published.is_empty() {
        let _ = writeln!(
            out,
            "bans still running: {}, published as their hosts' (every host applies them now): {}",
            report.still_running, report.published
        );
        for (host, bans) in &report.not_published {
            let _ = writeln!(
                out,
                "  not published, no login for host {host} in [[archiver.legacy_api.hosts]]: {bans}"
            );
        }
    } else {
        let _ = writeln!(
            out,
            "bans still running: {} (archived as history; not applied on any host; \
             --publish-active applies them)",
            report.still_running
        );
    }
    let _ = writeln!(out, "hosts:");
    for (legacy, (id, rows)) in &report.hosts {
        let _ = writeln!(out, "  {legacy} -> {id} ({rows} rows)");
    }
    let _ = writeln!(out, "took {:.1} s", report.seconds);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("mysql://f2b:s3cret@db.example.org/f2b"),
            "mysql://f2b:***@db.example.org/f2b"
        );
        assert_eq!(redact("mysql://f2b@db/f2b"), "mysql://f2b@db/f2b");
        assert_eq!(redact("mysql://db/f2b"), "mysql://db/f2b");
        assert_eq!(redact("mysql://a:b@c@db/f2b"), "mysql://a:***@db/f2b");
    }
}
