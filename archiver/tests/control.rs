//! Control events in the archive (SQLite): stored once in the batch's transaction, kept by
//! retention, and `controls_page` lists exactly those in force.

use shared_f2b::control::{Control, parse_net};
use shared_f2b_archiver::db::Db;
use shared_f2b_archiver::query;
use shared_f2b_archiver::store::{self, ArchivedControl, Inserted};
use std::time::{Duration, SystemTime};

fn at(control: Control, seq: u64) -> ArchivedControl {
    ArchivedControl {
        control,
        seq,
        site: None,
    }
}

#[tokio::test]
async fn controls_in_force_survive_retention_and_revokes_end_them() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();

    let net = parse_net("192.0.2.0/24").unwrap();
    let hour = Some(Duration::from_secs(3600));
    let pardon = Control::pardon("ops", parse_net("192.0.2.7").unwrap(), hour, "oops").unwrap();
    let allow = Control::allow("ops", net, None, "partner").unwrap();
    let revoked =
        Control::allow("ops", parse_net("2001:db8::/48").unwrap(), None, "probe").unwrap();
    let revoke = Control::revoke("ops", revoked.id, "probe gone").unwrap();
    let ban = Control::ban("ops", "198.51.100.1".parse().unwrap(), -1, "scanner").unwrap();
    let mut ended = Control::pardon("ops", net, Some(Duration::from_secs(1)), "brief").unwrap();
    ended.until = Some(SystemTime::now() - Duration::from_secs(1));
    ended.time = SystemTime::now() - Duration::from_secs(2);
    let late = Control::pardon("ops", net, hour, "after the snapshot").unwrap();

    let batch = [
        at(pardon.clone(), 1),
        at(allow.clone(), 2),
        at(revoked.clone(), 3),
        at(revoke.clone(), 4),
        at(ban.clone(), 5),
        at(ended.clone(), 6),
        at(late.clone(), 9),
    ];
    let n = store::insert(&db, &[], &batch, &[]).await.unwrap();
    assert_eq!(
        n,
        Inserted {
            events: 0,
            controls: 7
        }
    );
    // Idempotent on the event id, like f2b_events.
    let n = store::insert(&db, &[], &batch, &[]).await.unwrap();
    assert_eq!(n, Inserted::default());

    // Retention deletes events only.
    store::delete_older_than(&db, SystemTime::now() + Duration::from_secs(86400))
        .await
        .unwrap();

    let now = SystemTime::now();
    let all = query::controls_page(&db, now, 0, 8, 100, true)
        .await
        .unwrap();
    let ids: Vec<_> = all.iter().map(|s| s.control.id).collect();
    assert_eq!(ids, [pardon.id, allow.id, ban.id]);
    assert_eq!(query::controls_count(&db, now, 8, true).await.unwrap(), 3);
    assert_eq!(all[0].seq, 1);
    assert_eq!(all[0].control, pardon);
    assert_eq!(all[1].control, allow);
    assert_eq!(all[2].control, ban);

    // Paged by row id.
    let first = query::controls_page(&db, now, 0, 8, 2, true).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = query::controls_page(&db, now, first[1].row_id, 8, 2, true)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|s| s.control.id).collect::<Vec<_>>(),
        [ban.id]
    );

    // Up to a later sequence the late pardon is in too; once its time is past, none of the
    // timed ones are.
    assert_eq!(query::controls_count(&db, now, 9, true).await.unwrap(), 4);
    let later = now + Duration::from_secs(7200);
    let left = query::controls_page(&db, later, 0, 9, 100, true)
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|s| s.control.id).collect::<Vec<_>>(),
        [allow.id, ban.id]
    );
}
