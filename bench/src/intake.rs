//! Intake: a 100,000-entry list taken in by the archiver (`[[archiver.intake]]`, kind `list`,
//! a local file) → every entry banned in all three hosts' Fail2Ban (`intel = "ban"`, the
//! shipped site config, MariaDB); then refreshes with nothing changed, which must publish
//! nothing. Beside it, in the same run: the raw batched `banip` of the same 100,000 addresses
//! into one host's socket (the ceiling of the applying part).

use crate::report::Report;
use crate::subscribe::banned_count;
use shared_f2b_subscriber::apply::fail2ban::Fail2Ban as Socket;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::Host;
use shared_f2b_tests::site;
use sqlx::Row;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

fn ip(i: usize) -> String {
    Ipv4Addr::new(23, 100 + (i >> 16) as u8, (i >> 8) as u8, i as u8).to_string()
}

async fn intel_orders(db: &TestDb) -> i64 {
    let pool = db.pool().await;
    let n = sqlx::query("SELECT COUNT(*) AS n FROM f2b_control WHERE kind = 'intel'")
        .fetch_one(&pool)
        .await
        .map(|r| r.get::<i64, _>("n"))
        .unwrap_or(0);
    pool.close().await;
    n
}

async fn fetches(db: &TestDb) -> i64 {
    let pool = db.pool().await;
    let n = sqlx::query("SELECT fetches FROM f2b_intake_sources WHERE source = 'bench'")
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
        .map_or(0, |r| r.get::<i64, _>("fetches"));
    pool.close().await;
    n
}

pub async fn run(report: &mut Report, entries: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = site::nats(dir.path());
    let url = nats.url();
    let db = TestDb::mariadb();
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "# nothing yet\n").expect("list");
    let source = format!(
        "[[archiver.intake]]\nname = \"bench\"\nkind = \"list\"\nurl = {:?}\nevery = \"1s\"\n\
         bantime = \"1d\"\nmax_entries = {entries}\n",
        list.display().to_string()
    );
    let (_, _archiver) = site::archiver_with(dir.path(), &url, &db, &source);
    let hosts: Vec<Host> = ["alice", "bob", "charlie"]
        .iter()
        .map(|n| site::host(dir.path(), n, &url, "ban", "intel = \"ban\"", true))
        .collect();
    let mut sockets: Vec<Socket> = hosts.iter().map(|h| Socket::new(&h.f2b.socket)).collect();
    let ips: Vec<String> = (0..entries).map(ip).collect();

    // The ceiling: the same addresses, batched, into one host's socket.
    let t0 = Instant::now();
    for chunk in ips.chunks(1000) {
        let mut args = vec!["set", "shared", "banip"];
        args.extend(chunk.iter().map(String::as_str));
        sockets[0].command(&args).await.expect("banip");
    }
    let raw = t0.elapsed();
    sockets[0]
        .command(&["unban", "--all"])
        .await
        .expect("unban all");

    let text = ips.join("\n") + "\n";
    let tmp = dir.path().join("list.tmp");
    std::fs::write(&tmp, &text).expect("list");
    let t0 = Instant::now();
    std::fs::rename(&tmp, &list).expect("list");
    let mut archived = None;
    let mut done = vec![None; sockets.len()];
    while done.iter().any(Option::is_none) {
        if t0.elapsed() >= LIMIT {
            let mut counts = Vec::new();
            for socket in sockets.iter_mut() {
                counts.push(banned_count(socket, "shared").await);
            }
            println!("after {LIMIT:?} the hosts held {counts:?} of {entries}");
            break;
        }
        if archived.is_none() && intel_orders(&db).await >= entries as i64 {
            archived = Some(t0.elapsed());
        }
        for (i, socket) in sockets.iter_mut().enumerate() {
            if done[i].is_none() && banned_count(socket, "shared").await >= entries as i64 {
                done[i] = Some(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = if done.iter().all(Option::is_some) {
        done.iter().flatten().max().copied().expect("hosts")
    } else {
        LIMIT
    };
    let archived = archived.unwrap_or(all);

    // Refreshes with nothing changed.
    let before = intel_orders(&db).await;
    let seen = fetches(&db).await;
    let waited = Instant::now();
    while fetches(&db).await < seen + 3 && waited.elapsed() < LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let published = intel_orders(&db).await - before;

    report
        .add(
            &format!("{entries}-entry list written -> banned on all 3 hosts"),
            all.as_secs_f64(),
            "s",
            "<= 10 s",
        )
        .reference = Some((
        format!("raw batched banip of {entries}, one host"),
        raw.as_secs_f64(),
    ));
    report.add(
        "  of which: list written -> every order archived",
        archived.as_secs_f64(),
        "s",
        "",
    );
    report.add(
        "orders published by 3 refreshes with nothing changed",
        published as f64,
        "",
        "0",
    );
}
