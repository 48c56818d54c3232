//! The archive's inserts (SQLite; MariaDB through the integration tests): of two events with
//! one id, the one the stream stored first is kept, whichever batch commits first.

use shared_f2b::event::{Action, Event};
use shared_f2b_archiver::db::Db;
use shared_f2b_archiver::query::{self, HistoryFilter};
use shared_f2b_archiver::store::{self, Archived};
use std::time::SystemTime;

fn ban(ip: &str) -> Event {
    Event::new(
        Action::Ban,
        "alice",
        "sshd",
        ip.parse().unwrap(),
        SystemTime::now(),
        600,
        3,
    )
    .unwrap()
}

#[tokio::test]
async fn of_two_events_with_one_id_the_first_stored_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let first = ban("192.0.2.1");
    let reused = Event {
        ip: "192.0.2.2".parse().unwrap(),
        ..first.clone()
    };
    let stored = |ip: &str| {
        let db = db.clone();
        let ip = ip.parse().unwrap();
        async move {
            let filter = HistoryFilter {
                ip: Some(ip),
                limit: 10,
                ..HistoryFilter::default()
            };
            query::history(&db, &filter)
                .await
                .unwrap()
                .iter()
                .map(|s| s.seq)
                .collect::<Vec<_>>()
        }
    };
    // The later one (seq 7) commits first; the earlier (seq 3) replaces it.
    let n = store::insert(
        &db,
        &[Archived {
            event: reused.clone(),
            seq: 7,
        }],
        &[],
        &[],
    )
    .await;
    assert_eq!(n.unwrap().events, 1);
    assert_eq!(stored("192.0.2.2").await, [7]);
    let n = store::insert(
        &db,
        &[Archived {
            event: first.clone(),
            seq: 3,
        }],
        &[],
        &[],
    )
    .await;
    assert_eq!(n.unwrap().events, 1);
    assert_eq!(stored("192.0.2.1").await, [3]);
    assert!(stored("192.0.2.2").await.is_empty());
    // A later one, or the same redelivered, changes nothing.
    for (event, seq) in [(reused, 9), (first, 3)] {
        let n = store::insert(&db, &[Archived { event, seq }], &[], &[]).await;
        assert_eq!(n.unwrap().events, 0);
    }
    assert_eq!(stored("192.0.2.1").await, [3]);
}

#[tokio::test]
async fn the_stream_mark_only_rises_and_a_cursor_inside_a_seal_starts_at_its_cut() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let mark = |seq, ms| store::Mark { seq, ms };
    assert_eq!(query::stream_mark(&db).await.unwrap(), mark(0, 0));
    store::raise_stream_mark(&db, mark(10, 5_000))
        .await
        .unwrap();
    store::raise_stream_mark(&db, mark(7, 9_000)).await.unwrap();
    assert_eq!(
        query::stream_mark(&db).await.unwrap(),
        mark(10, 9_000),
        "each part the highest seen"
    );
    assert_eq!(query::catchup_start(&db, 50).await.unwrap(), 50, "no seal");
    // The stream kept up to 40; what it numbered again is archived from 10,000,091 on, and it
    // numbers on from 10,000,100.
    store::record_seal(&db, 40, 10_000_091, 10_000_100)
        .await
        .unwrap();
    for (cursor, start) in [
        (30, 30),
        (40, 40),
        (41, 40),
        (90, 40),
        (10_000_090, 40),
        (10_000_091, 10_000_091),
        (10_000_099, 10_000_099),
    ] {
        assert_eq!(
            query::catchup_start(&db, cursor).await.unwrap(),
            start,
            "cursor {cursor}"
        );
    }
}
