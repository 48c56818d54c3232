//! `shared-f2b-archiver verify`: checks every archived event's and order's signature again, with
//! the keyring the archived key records make (each taken only when signed by an operator key of
//! `[trust]`), and tells how many are signed, by which keys, and which fail.

use crate::commands::CommandError;
use crate::db::Db;
use crate::query;
use serde::Serialize;
use shared_f2b::control::ControlKind;
use shared_f2b::keyring::Keyring;
use shared_f2b::signing::{OperatorKeys, SigError};
use std::collections::BTreeMap;

/// Rows read per query.
const PAGE: usize = 5000;
/// Failures listed one by one (all are counted).
const LISTED: usize = 100;

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub events: u64,
    pub unsigned: u64,
    /// Valid signatures per key, with the host it belongs to.
    pub signed: BTreeMap<String, (String, u64)>,
    pub orders: u64,
    pub orders_unsigned: u64,
    pub orders_signed: u64,
    pub key_records: u64,
    /// Failures by reason (`bad_signature`, `unknown_key`, `revoked_key`).
    pub failed: BTreeMap<&'static str, u64>,
    /// The first failures: (stream sequence, what, reason).
    pub failures: Vec<(u64, String, &'static str)>,
}

impl Report {
    fn fail(&mut self, seq: u64, what: String, e: SigError) {
        *self.failed.entry(e.reason()).or_default() += 1;
        if self.failures.len() < LISTED {
            self.failures.push((seq, what, e.reason()));
        }
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// Reads the whole archive: orders and key records first (the keyring), then every event.
/// `intel`: the keys that count on intel and unlist orders (operators' and `intel_keys`).
pub async fn verify(
    db: &Db,
    operators: &OperatorKeys,
    intel: &OperatorKeys,
) -> Result<Report, CommandError> {
    let mut report = Report::default();
    let mut ring = Keyring::default();
    let mut after = 0;
    loop {
        let page = query::controls_after(db, after, i64::MAX as u64, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        // Federated sites' records and events were checked against their own operators' keys by
        // the relay (and by every host again): this report is about this site's.
        for stored in page.into_iter().filter(|s| s.site.is_none()) {
            let c = &stored.control;
            let what = format!("{} {} by {:?}", c.kind.as_str(), c.id, c.operator);
            if c.kind == ControlKind::Key {
                report.key_records += 1;
                if let Err(e) = ring.take(c, operators) {
                    report.fail(stored.seq, what, e);
                }
                continue;
            }
            report.orders += 1;
            let keys = match c.kind {
                ControlKind::Intel | ControlKind::Unlist => intel,
                _ => operators,
            };
            match keys.check(c) {
                Ok(()) => report.orders_signed += 1,
                Err(SigError::Unsigned) => report.orders_unsigned += 1,
                Err(e) => report.fail(stored.seq, what, e),
            }
        }
    }
    let mut after = 0;
    loop {
        let page = query::events_between(db, after, i64::MAX as u64, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for stored in page.into_iter().filter(|s| s.event.site.is_none()) {
            let e = &stored.event;
            report.events += 1;
            match ring.check(e, Some(stored.received)) {
                Ok(()) => {
                    let key = e.key.clone().unwrap_or_default();
                    report
                        .signed
                        .entry(key)
                        .or_insert_with(|| (e.origin.clone(), 0))
                        .1 += 1;
                }
                Err(SigError::Unsigned) => report.unsigned += 1,
                Err(err) => report.fail(
                    stored.seq,
                    format!(
                        "{} {} of {} by {:?}",
                        e.action.as_str(),
                        e.id,
                        e.ip,
                        e.origin
                    ),
                    err,
                ),
            }
        }
    }
    Ok(report)
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "events: {}, signed and valid: {}, unsigned: {}\n",
        r.events,
        r.signed.values().map(|(_, n)| n).sum::<u64>(),
        r.unsigned
    );
    out.push_str(&format!(
        "orders: {}, signed and valid: {}, unsigned: {}; key records: {}\n",
        r.orders, r.orders_signed, r.orders_unsigned, r.key_records
    ));
    for (key, (host, n)) in &r.signed {
        out.push_str(&format!("  {key}  {host:?}  {n} events\n"));
    }
    if r.failed.is_empty() {
        out.push_str("failures: none\n");
    } else {
        let by: Vec<String> = r.failed.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out.push_str(&format!("failures: {}\n", by.join(", ")));
        for (seq, what, reason) in &r.failures {
            out.push_str(&format!("  seq {seq}: {reason}: {what}\n"));
        }
    }
    out
}
