//! What each source lists now, as published (`f2b_intake_entries`: the order banning each net
//! and until when), and its fetches (`f2b_intake_sources`, for the page and `intake` status).

use crate::db::{Backend, Db};
use crate::store::ms;
use ipnet::IpNet;
use shared_f2b::control::{Control, Listing, parse_net};
use sqlx::{Any, QueryBuilder, Row};
use std::collections::HashMap;
use std::time::SystemTime;

/// One net a source's orders ban now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub order: uuid::Uuid,
    pub until_ms: i64,
    pub listing: Listing,
}

/// Rows per statement.
const ROWS: usize = 500;

/// What `source`'s orders ban now.
pub async fn load(db: &Db, source: &str) -> Result<HashMap<IpNet, Held>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT net_text, order_id, until_ms, listing_event, listing_attribute, listing_tags \
         FROM f2b_intake_entries WHERE source = ?",
    )
    .bind(source.to_owned())
    .fetch_all(&db.pool)
    .await?;
    let bad = || sqlx::Error::Decode("an intake entry is invalid".into());
    let mut held = HashMap::with_capacity(rows.len());
    for row in rows {
        let net: String = row.try_get("net_text")?;
        let order: Vec<u8> = row.try_get("order_id")?;
        held.insert(
            parse_net(&net).map_err(|_| bad())?,
            Held {
                order: uuid::Uuid::from_slice(&order).map_err(|_| bad())?,
                until_ms: row.try_get("until_ms")?,
                listing: crate::query::listing(&row)?,
            },
        );
    }
    Ok(held)
}

/// Records what a window of published orders changed: intel orders ban their nets now,
/// unlist orders end them.
pub async fn record(db: &Db, source: &str, orders: &[Control]) -> Result<(), sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    for chunk in orders.chunks(ROWS) {
        let mut q: QueryBuilder<Any> =
            QueryBuilder::new("DELETE FROM f2b_intake_entries WHERE source = ");
        q.push_bind(source.to_owned()).push(" AND net_text IN (");
        let mut nets = q.separated(", ");
        for c in chunk {
            nets.push_bind(c.net.map(|n| n.to_string()).unwrap_or_default());
        }
        q.push(")");
        q.build().execute(&mut *tx).await?;
        let listed: Vec<&Control> = chunk
            .iter()
            .filter(|c| c.kind == shared_f2b::control::ControlKind::Intel)
            .collect();
        if listed.is_empty() {
            continue;
        }
        let mut q: QueryBuilder<Any> = QueryBuilder::new(
            "INSERT INTO f2b_intake_entries (source, net_text, order_id, until_ms, \
             listing_event, listing_attribute, listing_tags) ",
        );
        q.push_values(listed, |mut row, c| {
            let l = c.listing.clone().unwrap_or_default();
            row.push_bind(source.to_owned())
                .push_bind(c.net.map(|n| n.to_string()).unwrap_or_default())
                .push_bind(c.id.as_bytes().to_vec())
                .push_bind(c.until.map(ms).unwrap_or_default())
                .push_bind(l.event.map(|u| u.to_string()))
                .push_bind(l.attribute.map(|u| u.to_string()))
                .push_bind(l.tags.join("\t"));
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// How a fetch went, for `f2b_intake_sources`.
pub struct Fetch<'a> {
    pub at: SystemTime,
    /// `Err`: why nothing changed.
    pub outcome: Result<(), &'a str>,
    pub entries: usize,
}

/// Adds one fetch to `source`'s record.
pub async fn fetched(db: &Db, source: &str, fetch: Fetch<'_>) -> Result<(), sqlx::Error> {
    let at = ms(fetch.at);
    let (ok, failed, error) = match fetch.outcome {
        Ok(()) => (Some(at), 0_i64, None),
        Err(e) => (None, 1, Some(e.chars().take(1024).collect::<String>())),
    };
    let sql = match db.backend {
        Backend::MySql => {
            "INSERT INTO f2b_intake_sources \
             (source, fetched_ms, ok_ms, entries, fetches, failures, last_error) \
             VALUES (?, ?, ?, ?, 1, ?, ?) ON DUPLICATE KEY UPDATE fetched_ms = VALUES(fetched_ms), \
             ok_ms = COALESCE(VALUES(ok_ms), ok_ms), \
             entries = IF(VALUES(ok_ms) IS NULL, entries, VALUES(entries)), \
             fetches = fetches + 1, failures = failures + VALUES(failures), \
             last_error = IF(VALUES(ok_ms) IS NULL, VALUES(last_error), last_error)"
        }
        Backend::Sqlite => {
            "INSERT INTO f2b_intake_sources \
             (source, fetched_ms, ok_ms, entries, fetches, failures, last_error) \
             VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (source) DO UPDATE SET \
             fetched_ms = excluded.fetched_ms, ok_ms = COALESCE(excluded.ok_ms, ok_ms), \
             entries = CASE WHEN excluded.ok_ms IS NULL THEN entries ELSE excluded.entries END, \
             fetches = fetches + 1, failures = failures + excluded.failures, \
             last_error = CASE WHEN excluded.ok_ms IS NULL THEN excluded.last_error \
             ELSE last_error END"
        }
    };
    sqlx::query(sql)
        .bind(source.to_owned())
        .bind(at)
        .bind(ok)
        .bind(fetch.entries as i64)
        .bind(failed)
        .bind(error)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// One source's record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceRecord {
    pub source: String,
    pub fetched_ms: Option<i64>,
    pub ok_ms: Option<i64>,
    pub entries: i64,
    pub fetches: i64,
    pub failures: i64,
    pub last_error: Option<String>,
}

/// Every source's record, by name.
pub async fn sources(db: &Db) -> Result<Vec<SourceRecord>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT source, fetched_ms, ok_ms, entries, fetches, failures, last_error \
         FROM f2b_intake_sources ORDER BY source",
    )
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SourceRecord {
                source: r.try_get("source")?,
                fetched_ms: r.try_get("fetched_ms")?,
                ok_ms: r.try_get("ok_ms")?,
                entries: r.try_get("entries")?,
                fetches: r.try_get("fetches")?,
                failures: r.try_get("failures")?,
                last_error: r.try_get("last_error")?,
            })
        })
        .collect()
}
