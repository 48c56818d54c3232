//! The shapes the site page reads (`archiver/src/http/site/API.md`): times in milliseconds since
//! the epoch, names as given (the page shows them as text).

use crate::blocklist::Listed;
use crate::store::ms;
use serde_json::{Value, json};
use shared_f2b::control::Control;
use shared_f2b::event::Event;

/// A host's event.
pub fn event(seq: u64, e: &Event) -> Value {
    json!({
        "seq": seq,
        "type": "event",
        "action": e.action,
        "ip": e.ip.to_string(),
        "origin": e.who(),
        "jail": e.jail,
        "time": ms(e.time),
        "bantime": e.bantime,
        "failures": e.failures,
        "port": e.port,
        "protocol": e.protocol,
    })
}

/// An operator's order.
pub fn control(seq: u64, c: &Control) -> Value {
    json!({
        "seq": seq,
        "type": "control",
        "kind": c.kind.as_str(),
        "net": c.net.map(|n| n.to_string()),
        "operator": c.operator,
        "reason": c.reason,
        "time": ms(c.time),
        "until": c.until.map(ms),
    })
}

/// Hosts named per row at most (the count is exact).
const ORIGINS_SHOWN: usize = 20;

/// An active ban.
pub fn row(l: &Listed) -> Value {
    json!({
        "ip": l.ip.to_string(),
        "jails": l.jails,
        "hosts": l.reporters,
        "origins": &l.origins[..l.origins.len().min(ORIGINS_SHOWN)],
        "operator": l.operator,
        "source": l.source,
        "first_seen": l.first_seen.map(ms),
        "last_seen": l.last_seen.map(ms),
        "expires": l.expires.map(ms),
    })
}
