//! `flush`: send every spooled event now.

use crate::outcome::Outcome;
use shared_f2b::Config;
use shared_f2b::nats::{self, Lifetime};
use shared_f2b::publish::Sender;
use shared_f2b::spool::Spool;
use std::time::{Duration, Instant};

/// Longest a flush keeps sending before it reports what remains.
const FLUSH_LIMIT: Duration = Duration::from_secs(300);

/// Sends the spool and prints `sent N, remaining M`; fails when anything remains.
pub async fn run(config: &Config) -> Outcome {
    let spool = Spool::new(&config.publisher.spool_dir).confirming(config.publisher.confirm);
    let timeout = config.publisher.timeout;
    let conn = match nats::connect(&config.nats, &config.host_id, timeout, Lifetime::OneShot).await
    {
        Ok(conn) => conn,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let sender = Sender::new(&conn, &config.nats, timeout);
    match spool.drain(&sender, Instant::now() + FLUSH_LIMIT).await {
        Ok(report) => {
            println!(
                "sent {}, remaining {}, set aside {}",
                report.sent, report.remaining, report.set_aside
            );
            if report.busy {
                Outcome::Failed("another process is sending the spool; try again".into())
            } else if report.remaining > 0 {
                Outcome::Failed(format!(
                    "{} events remain in {}: {}",
                    report.remaining,
                    spool.dir().display(),
                    report.stopped.unwrap_or_default()
                ))
            } else {
                Outcome::Done
            }
        }
        Err(e) => Outcome::Failed(format!(
            "cannot read the spool {}: {e}",
            spool.dir().display()
        )),
    }
}
