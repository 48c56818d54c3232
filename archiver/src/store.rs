//! Writing to the archive: batched multi-row inserts, idempotent on the event id, in one
//! transaction per batch (events, operators' control events and rejects together); and the
//! retention job's bounded deletes (events only: control events are kept).

use crate::db::{Backend, Db};
use shared_f2b::control::Control;
use shared_f2b::event::Event;
use sqlx::{Any, QueryBuilder};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Rows per INSERT: at most 18 placeholders each stays under SQLite's 32,766 and MySQL's 65,535.
const ROWS_PER_INSERT: usize = 1000;
/// Rows per retention DELETE, so one run never holds long locks.
const ROWS_PER_DELETE: i64 = 10_000;

/// The stream sequence of history imported from elsewhere (`import-legacy`): archived, shown by
/// `history`, never part of the bans in force.
pub const IMPORTED_SEQ: i64 = 0;

/// An event and the stream sequence it arrived with ([`IMPORTED_SEQ`] if it never did).
#[derive(Debug, Clone)]
pub struct Archived {
    pub event: Event,
    pub seq: u64,
}

/// An operator's control event and the stream sequence it arrived with.
#[derive(Debug, Clone)]
pub struct ArchivedControl {
    pub control: Control,
    pub seq: u64,
    /// The federated site it was relayed from (`None`: this site's own).
    pub site: Option<String>,
}

/// How many rows of a batch were new (the rest were archived before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    pub events: u64,
    pub controls: u64,
}

/// A message that is not a valid event.
#[derive(Debug, Clone)]
pub struct Reject {
    pub seq: u64,
    pub subject: String,
    pub reason: String,
    pub detail: String,
    pub payload: Vec<u8>,
}

/// Milliseconds since the epoch (UTC).
pub fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// The address as 16 bytes (IPv4 in its IPv4-mapped IPv6 form): one order for both families.
pub fn ip_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The tail that makes an insert into a table keyed by `event_id` skip rows archived already.
fn skip_duplicate_ids(backend: Backend) -> &'static str {
    match backend {
        Backend::MySql => " ON DUPLICATE KEY UPDATE event_id = event_id",
        Backend::Sqlite => " ON CONFLICT (event_id) DO NOTHING",
    }
}

/// The tail that makes an event insert keep, of two events with one id (a host reusing an id,
/// or replaying its own old event under a new message id), the one the stream stored first,
/// whichever batch commits first (batches are written two at a time): the lower sequence
/// replaces a higher one, anything else is left as it is. What reads the archive only up to
/// the committed mark (the feeds, the site page) never sees the other: the mark passes the
/// later one only once the earlier one is committed too.
fn first_stored_wins(backend: Backend) -> &'static str {
    match backend {
        // Assignments run left to right: the sequence is compared before it changes.
        Backend::MySql => {
            " ON DUPLICATE KEY UPDATE \
             origin = IF(VALUES(stream_seq) < stream_seq, VALUES(origin), origin), \
             jail = IF(VALUES(stream_seq) < stream_seq, VALUES(jail), jail), \
             ip = IF(VALUES(stream_seq) < stream_seq, VALUES(ip), ip), \
             ip_text = IF(VALUES(stream_seq) < stream_seq, VALUES(ip_text), ip_text), \
             action = IF(VALUES(stream_seq) < stream_seq, VALUES(action), action), \
             event_time_ms = IF(VALUES(stream_seq) < stream_seq, VALUES(event_time_ms), event_time_ms), \
             bantime = IF(VALUES(stream_seq) < stream_seq, VALUES(bantime), bantime), \
             expires_ms = IF(VALUES(stream_seq) < stream_seq, VALUES(expires_ms), expires_ms), \
             failures = IF(VALUES(stream_seq) < stream_seq, VALUES(failures), failures), \
             received_ms = IF(VALUES(stream_seq) < stream_seq, VALUES(received_ms), received_ms), \
             stream_seq = LEAST(VALUES(stream_seq), stream_seq)"
        }
        Backend::Sqlite => {
            " ON CONFLICT (event_id) DO UPDATE SET origin = excluded.origin, \
             jail = excluded.jail, ip = excluded.ip, ip_text = excluded.ip_text, \
             action = excluded.action, event_time_ms = excluded.event_time_ms, \
             bantime = excluded.bantime, expires_ms = excluded.expires_ms, \
             failures = excluded.failures, received_ms = excluded.received_ms, \
             stream_seq = excluded.stream_seq \
             WHERE excluded.stream_seq < f2b_events.stream_seq"
        }
    }
}

/// Inserts a batch in one transaction; events and control events already archived (same id)
/// are left as they are. Returns how many of each were new.
pub async fn insert(
    db: &Db,
    events: &[Archived],
    controls: &[ArchivedControl],
    rejects: &[Reject],
) -> Result<Inserted, sqlx::Error> {
    insert_marked(db, events, controls, rejects, None).await
}

/// [`insert`] of a batch from the stream, raising the stream mark to `mark` in the same
/// transaction.
pub async fn insert_from_stream(
    db: &Db,
    events: &[Archived],
    controls: &[ArchivedControl],
    rejects: &[Reject],
    mark: Mark,
) -> Result<Inserted, sqlx::Error> {
    insert_marked(db, events, controls, rejects, Some(mark)).await
}

async fn insert_marked(
    db: &Db,
    events: &[Archived],
    controls: &[ArchivedControl],
    rejects: &[Reject],
    mark: Option<Mark>,
) -> Result<Inserted, sqlx::Error> {
    let received = ms(SystemTime::now());
    let mut tx = db.pool.begin().await?;
    let mut inserted = Inserted::default();
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut q: QueryBuilder<Any> = QueryBuilder::new(
            "INSERT INTO f2b_events (event_id, origin, jail, ip, ip_text, action, event_time_ms, \
             bantime, expires_ms, failures, stream_seq, received_ms, key_id, sig, site, port, \
             protocol) ",
        );
        q.push_values(chunk, |mut row, a| {
            let e = &a.event;
            row.push_bind(e.id.as_bytes().to_vec())
                .push_bind(e.origin.clone())
                .push_bind(e.jail.clone())
                .push_bind(ip_key(e.ip))
                .push_bind(e.ip.to_string())
                .push_bind(e.action.as_str())
                .push_bind(ms(e.time))
                .push_bind(e.bantime)
                .push_bind(e.expires().map(ms))
                .push_bind(i64::from(e.failures))
                .push_bind(a.seq as i64)
                .push_bind(received)
                .push_bind(e.key.clone())
                .push_bind(e.sig.clone())
                .push_bind(e.site.clone())
                .push_bind(e.port.clone())
                .push_bind(e.protocol.clone());
        });
        // Idempotent without INSERT IGNORE, which would also hide every other error.
        q.push(first_stored_wins(db.backend));
        inserted.events += q.build().execute(&mut *tx).await?.rows_affected();
    }
    for chunk in controls.chunks(ROWS_PER_INSERT) {
        let mut q: QueryBuilder<Any> = QueryBuilder::new(
            "INSERT INTO f2b_control (event_id, operator, kind, net_text, net_lo, net_hi, \
             revokes, event_time_ms, until_ms, reason, stream_seq, received_ms, host, host_key, \
             since_ms, key_id, sig, site, listing_event, listing_attribute, listing_tags) ",
        );
        q.push_values(chunk, |mut row, a| {
            let c = &a.control;
            let l = c.listing.as_ref();
            row.push_bind(c.id.as_bytes().to_vec())
                .push_bind(c.operator.clone())
                .push_bind(c.kind.as_str())
                .push_bind(c.net.map(|n| n.to_string()))
                .push_bind(c.net.map(|n| ip_key(n.network())))
                .push_bind(c.net.map(|n| ip_key(n.broadcast())))
                .push_bind(c.revokes.map(|id| id.as_bytes().to_vec()))
                .push_bind(ms(c.time))
                .push_bind(c.until.map(ms))
                .push_bind(c.reason.clone())
                .push_bind(a.seq as i64)
                .push_bind(received)
                .push_bind(c.host.clone())
                .push_bind(c.host_key.clone())
                .push_bind(c.since.map(ms))
                .push_bind(c.key.clone())
                .push_bind(c.sig.clone())
                .push_bind(a.site.clone())
                .push_bind(l.and_then(|l| l.event).map(|u| u.to_string()))
                .push_bind(l.and_then(|l| l.attribute).map(|u| u.to_string()))
                .push_bind(l.map(|l| l.tags.join("\t")));
        });
        q.push(skip_duplicate_ids(db.backend));
        inserted.controls += q.build().execute(&mut *tx).await?.rows_affected();
    }
    for chunk in rejects.chunks(ROWS_PER_INSERT) {
        let mut q: QueryBuilder<Any> = QueryBuilder::new(
            "INSERT INTO f2b_rejects (stream_seq, subject, reason, detail, payload, received_ms) ",
        );
        q.push_values(chunk, |mut row, r| {
            row.push_bind(r.seq as i64)
                .push_bind(r.subject.chars().take(512).collect::<String>())
                .push_bind(r.reason.clone())
                .push_bind(r.detail.chars().take(1024).collect::<String>())
                .push_bind(r.payload.iter().take(4096).copied().collect::<Vec<u8>>())
                .push_bind(received);
        });
        q.push(match db.backend {
            Backend::MySql => " ON DUPLICATE KEY UPDATE stream_seq = stream_seq",
            Backend::Sqlite => " ON CONFLICT (stream_seq) DO NOTHING",
        });
        q.build().execute(&mut *tx).await?;
    }
    if let Some(mark) = mark {
        raise_mark(mark).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    // MySQL counts a row replaced by an earlier one twice (the rare reused id): new rows are
    // never more than the batch.
    inserted.events = inserted.events.min(events.len() as u64);
    Ok(inserted)
}

/// Deletes events older than `cutoff` in bounded batches; returns how many went. Control events
/// (`f2b_control`) are never deleted: an old allow may still be in force, and a revoke must
/// outlive what it ends.
pub async fn delete_older_than(db: &Db, cutoff: SystemTime) -> Result<u64, sqlx::Error> {
    let sql = match db.backend {
        Backend::MySql => "DELETE FROM f2b_events WHERE event_time_ms < ? ORDER BY id LIMIT ?",
        Backend::Sqlite => {
            "DELETE FROM f2b_events WHERE id IN \
             (SELECT id FROM f2b_events WHERE event_time_ms < ? ORDER BY id LIMIT ?)"
        }
    };
    delete_in_steps(db, sql, ms(cutoff)).await
}

/// Deletes all imported history ([`IMPORTED_SEQ`]), in bounded steps; how many rows went.
pub async fn delete_imported(db: &Db) -> Result<u64, sqlx::Error> {
    let sql = match db.backend {
        Backend::MySql => "DELETE FROM f2b_events WHERE stream_seq = ? ORDER BY id LIMIT ?",
        Backend::Sqlite => {
            "DELETE FROM f2b_events WHERE id IN \
             (SELECT id FROM f2b_events WHERE stream_seq = ? ORDER BY id LIMIT ?)"
        }
    };
    delete_in_steps(db, sql, IMPORTED_SEQ).await
}

/// Runs `sql` (a DELETE of at most `?` rows matching `?` = `value`) until a step deletes fewer
/// than [`ROWS_PER_DELETE`], so that no step holds long locks; how many rows went.
async fn delete_in_steps(db: &Db, sql: &'static str, value: i64) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = sqlx::query(sql)
            .bind(value)
            .bind(ROWS_PER_DELETE)
            .execute(&db.pool)
            .await?
            .rows_affected();
        total += n;
        if n < ROWS_PER_DELETE as u64 {
            return Ok(total);
        }
    }
}

/// Which of `ids` the archive holds already.
pub async fn archived_ids(
    db: &Db,
    ids: &[uuid::Uuid],
) -> Result<std::collections::HashSet<uuid::Uuid>, sqlx::Error> {
    let mut found = std::collections::HashSet::new();
    for chunk in ids.chunks(ROWS_PER_INSERT) {
        let mut q: QueryBuilder<Any> =
            QueryBuilder::new("SELECT event_id FROM f2b_events WHERE event_id IN (");
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(id.as_bytes().to_vec());
        }
        q.push(")");
        for row in q.build().fetch_all(&db.pool).await? {
            let bytes: Vec<u8> = sqlx::Row::try_get(&row, "event_id")?;
            if let Ok(id) = uuid::Uuid::from_slice(&bytes) {
                found.insert(id);
            }
        }
    }
    Ok(found)
}

/// How far the relay has read `site`'s stream (0: nothing yet).
pub async fn site_cursor(db: &Db, site: &str) -> Result<u64, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT seq FROM f2b_site_cursors WHERE site = ?")
        .bind(site)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map_or(0, |(seq,)| seq.max(0) as u64))
}

/// Records that everything of `site`'s stream up to `seq` is in this site's stream.
pub async fn set_site_cursor(db: &Db, site: &str, seq: u64) -> Result<(), sqlx::Error> {
    let sql = match db.backend {
        Backend::MySql => {
            "INSERT INTO f2b_site_cursors (site, seq, updated_ms) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE seq = VALUES(seq), updated_ms = VALUES(updated_ms)"
        }
        Backend::Sqlite => {
            "INSERT INTO f2b_site_cursors (site, seq, updated_ms) VALUES (?, ?, ?) \
             ON CONFLICT (site) DO UPDATE SET seq = excluded.seq, updated_ms = excluded.updated_ms"
        }
    };
    sqlx::query(sql)
        .bind(site)
        .bind(seq as i64)
        .bind(ms(SystemTime::now()))
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// The stream mark (`f2b_stream_mark`): the highest sequence of the stream seen and the latest
/// time (the server's clock, ms since the epoch) it stored a message seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
    pub ms: i64,
}

impl Mark {
    /// Each part the higher of the two.
    pub fn max(self, other: Mark) -> Mark {
        Mark {
            seq: self.seq.max(other.seq),
            ms: self.ms.max(other.ms),
        }
    }
}

fn raise_mark(mark: Mark) -> sqlx::query::Query<'static, Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "UPDATE f2b_stream_mark SET \
         last_seq = CASE WHEN last_seq < ? THEN ? ELSE last_seq END, \
         last_ms = CASE WHEN last_ms < ? THEN ? ELSE last_ms END WHERE id = 1",
    )
    .bind(mark.seq as i64)
    .bind(mark.seq as i64)
    .bind(mark.ms)
    .bind(mark.ms)
}

/// Raises the stream mark to `mark` (each part; never lowers it).
pub async fn raise_stream_mark(db: &Db, mark: Mark) -> Result<(), sqlx::Error> {
    raise_mark(mark).execute(&db.pool).await?;
    Ok(())
}

/// Records a seal: the stream kept what it had up to `cut`, what it numbered again is archived
/// from `base` on, and it numbers on from `resumed`.
pub async fn record_seal(db: &Db, cut: u64, base: u64, resumed: u64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO f2b_stream_seals (cut_seq, base_seq, resumed_seq, sealed_ms) \
         VALUES (?, ?, ?, ?)",
    )
    .bind(cut as i64)
    .bind(base as i64)
    .bind(resumed as i64)
    .bind(ms(SystemTime::now()))
    .execute(&db.pool)
    .await?;
    Ok(())
}
