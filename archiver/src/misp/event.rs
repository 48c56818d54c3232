//! One day's bans as a MISP event, pure: the event file, its `manifest.json` entry and its
//! `hashes.csv` hashes, as PyMISP makes them.

use super::{Day, secs};
use crate::query::Stored;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use shared_f2b::config::MispConfig;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// PyMISP's shipped `fail2ban` object template (misp-objects `objects/fail2ban`).
pub const TEMPLATE_UUID: &str = "32f7ded6-e774-4401-81b0-79634e82f589";
/// The version of that template the objects follow.
pub const TEMPLATE_VERSION: &str = "6";
/// MISP's threat level "low": single bans are mass scanning and brute force, not targeted.
const THREAT_LEVEL_LOW: u8 = 3;
/// MISP's analysis "completed": a day's event only grows by bans, it is never reworked.
const ANALYSIS_COMPLETED: u8 = 2;

/// The day's event uuid: UUIDv5 of `shared-f2b:<YYYY-MM-DD>` in the organisation's namespace,
/// so every run (and every archiver of the same organisation) names a day alike.
pub fn event_uuid(misp: &MispConfig, day: Day) -> Uuid {
    Uuid::new_v5(&misp.org_uuid, format!("shared-f2b:{day}").as_bytes())
}

/// The newest arrival among the bans, in seconds: the event's timestamp unless an earlier
/// version of the event says otherwise.
pub fn newest_received(bans: &[Stored]) -> u64 {
    bans.iter().map(|b| secs(b.received)).max().unwrap_or(0)
}

/// The colour MISP's `tlp` taxonomy gives the tag.
fn tlp_colour(tlp: &str) -> &'static str {
    match tlp {
        "tlp:red" => "#CC0033",
        "tlp:amber" | "tlp:amber+strict" => "#FFC000",
        "tlp:green" => "#339900",
        _ => "#ffffff",
    }
}

/// RFC 3339 in UTC with `Z`; milliseconds only when there are some.
fn rfc3339(t: SystemTime) -> String {
    if t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_millis()
        == 0
    {
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        humantime::format_rfc3339_millis(t).to_string()
    }
}

/// One object attribute as MISP exports it; its uuid is UUIDv5 of the relation in the
/// object's namespace.
struct Attr {
    relation: &'static str,
    kind: &'static str,
    category: &'static str,
    to_ids: bool,
    disable_correlation: bool,
}

/// The template's relations this feed fills, with their types and MISP's default categories
/// (describeTypes.json: ip-src → Network activity; text, counter, datetime → Other).
const BANNED_IP: Attr = Attr {
    relation: "banned-ip",
    kind: "ip-src",
    category: "Network activity",
    to_ids: true,
    disable_correlation: false,
};
const ATTACK_TYPE: Attr = Attr {
    relation: "attack-type",
    kind: "text",
    category: "Other",
    to_ids: false,
    disable_correlation: true,
};
const FAILURES: Attr = Attr {
    relation: "failures",
    kind: "counter",
    category: "Other",
    to_ids: false,
    disable_correlation: true,
};
const SENSOR: Attr = Attr {
    relation: "sensor",
    kind: "text",
    category: "Other",
    to_ids: false,
    disable_correlation: true,
};
const PROCESSING_TIMESTAMP: Attr = Attr {
    relation: "processing-timestamp",
    kind: "datetime",
    category: "Other",
    to_ids: false,
    disable_correlation: true,
};

impl Attr {
    fn render(&self, object: &Uuid, value: String, timestamp: &str) -> Value {
        json!({
            "uuid": Uuid::new_v5(object, self.relation.as_bytes()).to_string(),
            "object_relation": self.relation,
            "type": self.kind,
            "category": self.category,
            "value": value,
            "to_ids": self.to_ids,
            "disable_correlation": self.disable_correlation,
            "distribution": "5",
            "timestamp": timestamp,
            "comment": "",
            "deleted": false,
        })
    }
}

/// One ban as a `fail2ban` object; its uuid is the archived event's id.
fn render_object(ban: &Stored) -> Value {
    let e = &ban.event;
    let timestamp = secs(ban.received).to_string();
    let comment = if e.bantime < 0 {
        "permanent ban".to_owned()
    } else {
        format!("banned for {} s", e.bantime)
    };
    json!({
        "name": "fail2ban",
        "meta-category": "network",
        "description": "Fail2ban event",
        "template_uuid": TEMPLATE_UUID,
        "template_version": TEMPLATE_VERSION,
        "uuid": e.id.to_string(),
        "timestamp": timestamp,
        "distribution": "5",
        "comment": comment,
        "deleted": false,
        "Attribute": [
            BANNED_IP.render(&e.id, e.ip.to_string(), &timestamp),
            ATTACK_TYPE.render(&e.id, e.jail.clone(), &timestamp),
            FAILURES.render(&e.id, e.failures.to_string(), &timestamp),
            SENSOR.render(&e.id, e.who(), &timestamp),
            PROCESSING_TIMESTAMP.render(&e.id, rfc3339(e.time), &timestamp),
        ],
    })
}

/// The day's event file (`{"Event": …}`, the fields of PyMISP's `MISPEvent.to_feed()` plus the
/// configured distribution), its objects in archive row order, stamped `timestamp` (seconds).
pub fn render_event(misp: &MispConfig, day: Day, bans: &[Stored], timestamp: u64) -> Value {
    let mut ordered: Vec<&Stored> = bans.iter().collect();
    ordered.sort_by_key(|b| b.row_id);
    let objects: Vec<Value> = ordered.into_iter().map(render_object).collect();
    let timestamp = timestamp.to_string();
    json!({"Event": {
        "uuid": event_uuid(misp, day).to_string(),
        "info": format!("{} {day}", misp.info),
        "date": day.to_string(),
        "threat_level_id": THREAT_LEVEL_LOW.to_string(),
        "analysis": ANALYSIS_COMPLETED.to_string(),
        "distribution": misp.distribution.to_string(),
        "published": true,
        "timestamp": timestamp,
        "publish_timestamp": timestamp,
        "extends_uuid": "",
        "protected": false,
        "Orgc": {"name": misp.org_name, "uuid": misp.org_uuid.to_string()},
        "Tag": [{
            "name": misp.tlp,
            "colour": tlp_colour(&misp.tlp),
            "local": false,
            "relationship_type": "",
        }],
        "Object": objects,
    }})
}

/// Sets an event's `timestamp` and `publish_timestamp`.
pub(super) fn set_timestamp(event: &mut Value, timestamp: u64) {
    for key in ["timestamp", "publish_timestamp"] {
        event["Event"][key] = Value::String(timestamp.to_string());
    }
}

/// A number MISP may write as a string or a number.
pub(super) fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The event's uuid and its `manifest.json` entry, as PyMISP's `MISPEvent.manifest` makes it
/// (numbers as numbers there, unlike in the event).
pub fn manifest_entry(event: &Value) -> Option<(String, Value)> {
    let e = event.get("Event")?;
    let uuid = e.get("uuid")?.as_str()?.to_owned();
    let orgc = e.get("Orgc")?;
    let entry = json!({
        "Orgc": {"name": orgc.get("name")?, "uuid": orgc.get("uuid")?},
        "Tag": e.get("Tag").cloned().unwrap_or_else(|| json!([])),
        "info": e.get("info")?,
        "date": e.get("date")?,
        "analysis": number(e.get("analysis")?)?,
        "threat_level_id": number(e.get("threat_level_id")?)?,
        "timestamp": number(e.get("timestamp")?)?,
    });
    Some((uuid, entry))
}

/// A `datetime` value as PyMISP reads it and `str()` prints it (`2026-11-25 07:00:16+00:00`,
/// microseconds when there are some): what `feed_meta_generator` hashes.
fn python_datetime(value: &str) -> Option<String> {
    let t = humantime::parse_rfc3339(value).ok()?;
    let base = humantime::format_rfc3339_seconds(t).to_string();
    let micros = t.duration_since(UNIX_EPOCH).ok()?.subsec_micros();
    let fraction = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    };
    Some(format!("{} {}{fraction}+00:00", &base[..10], &base[11..19]))
}

/// The MD5 of every attribute value of the event, sorted and without repeats: the event's
/// lines of `hashes.csv` as PyMISP's `feed_meta_generator` computes them.
pub fn event_hashes(event: &Value) -> Vec<[u8; 16]> {
    let mut out = Vec::new();
    let e = &event["Event"];
    let loose = e["Attribute"].as_array().into_iter().flatten();
    let in_objects = e["Object"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["Attribute"].as_array().into_iter().flatten());
    for attr in loose.chain(in_objects) {
        let kind = attr["type"].as_str().unwrap_or_default();
        let value = match &attr["value"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let values: Vec<String> = if kind.contains('|') || kind == "malware-sample" {
            value.split('|').map(str::to_owned).collect()
        } else if kind == "datetime" {
            vec![python_datetime(&value).unwrap_or(value)]
        } else {
            vec![value]
        };
        out.extend(
            values
                .iter()
                .map(|v| <[u8; 16]>::from(Md5::digest(v.as_bytes()))),
        );
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::hex;
    use shared_f2b::event::{Action, Event};

    fn config() -> MispConfig {
        MispConfig {
            org_name: "Example".into(),
            org_uuid: "5f0c3c1e-1b2a-4c3d-9e8f-0123456789ab".parse().unwrap(),
            distribution: 1,
            tlp: "tlp:green".into(),
            info: "Shared Fail2Ban bans".into(),
        }
    }

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn ban(row_id: u64, ip: &str, time: &str, received: &str) -> Stored {
        let mut event = Event::new(
            Action::Ban,
            "alice",
            "sshd",
            ip.parse().unwrap(),
            at(time),
            600,
            5,
        )
        .unwrap();
        event.id = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 + row_id as u128);
        Stored {
            row_id,
            seq: row_id,
            received: at(received),
            event,
        }
    }

    #[test]
    fn a_day_renders_as_misp_exports_it() {
        let misp = config();
        let day = Day::parse("2026-11-25").unwrap();
        let bans = [
            ban(
                7,
                "2001:db8::5",
                "2026-11-25T08:00:00.250Z",
                "2026-11-25T08:00:01Z",
            ),
            ban(
                3,
                "192.0.2.7",
                "2026-11-25T07:00:16Z",
                "2026-11-25T07:00:17Z",
            ),
        ];
        let newest = newest_received(&bans);
        assert_eq!(newest, secs(at("2026-11-25T08:00:01Z")));
        let event = render_event(&misp, day, &bans, newest);
        let e = &event["Event"];
        assert_eq!(e["uuid"], event_uuid(&misp, day).to_string());
        assert_eq!(
            event_uuid(&misp, day),
            Uuid::new_v5(&misp.org_uuid, b"shared-f2b:2026-11-25")
        );
        assert_eq!(e["info"], "Shared Fail2Ban bans 2026-11-25");
        assert_eq!(e["date"], "2026-11-25");
        assert_eq!(e["timestamp"], newest.to_string());
        assert_eq!(e["distribution"], "1");
        assert_eq!(e["Tag"][0]["name"], "tlp:green");
        assert_eq!(e["Tag"][0]["colour"], "#339900");
        assert_eq!(e["Orgc"]["uuid"], misp.org_uuid.to_string());
        // Objects in archive row order, named by the event id.
        let objects = e["Object"].as_array().unwrap();
        assert_eq!(objects[0]["uuid"], bans[1].event.id.to_string());
        assert_eq!(objects[1]["uuid"], bans[0].event.id.to_string());
        let attrs = objects[0]["Attribute"].as_array().unwrap();
        let relation = |r: &str| attrs.iter().find(|a| a["object_relation"] == r).unwrap();
        assert_eq!(relation("banned-ip")["value"], "192.0.2.7");
        assert_eq!(relation("banned-ip")["to_ids"], true);
        assert_eq!(relation("attack-type")["value"], "sshd");
        assert_eq!(relation("failures")["value"], "5");
        assert_eq!(relation("sensor")["value"], "alice");
        assert_eq!(
            relation("processing-timestamp")["value"],
            "2026-11-25T07:00:16Z"
        );
        assert_eq!(
            relation("sensor")["uuid"],
            Uuid::new_v5(&bans[1].event.id, b"sensor").to_string()
        );
        let later = &objects[1]["Attribute"][4];
        assert_eq!(later["value"], "2026-11-25T08:00:00.250Z");
        // The same bans render the same bytes.
        assert_eq!(
            serde_json::to_vec(&event).unwrap(),
            serde_json::to_vec(&render_event(&misp, day, &bans, newest)).unwrap()
        );
    }

    #[test]
    fn manifest_and_hashes_follow_pymisp() {
        let misp = config();
        let day = Day::parse("2026-11-25").unwrap();
        let bans = [ban(
            1,
            "192.0.2.7",
            "2026-11-25T07:00:16.5Z",
            "2026-11-25T07:00:17Z",
        )];
        let event = render_event(&misp, day, &bans, 1_795_590_017);
        let (uuid, entry) = manifest_entry(&event).unwrap();
        assert_eq!(uuid, event_uuid(&misp, day).to_string());
        assert_eq!(entry["timestamp"], 1_795_590_017);
        assert_eq!(entry["analysis"], 2);
        assert_eq!(entry["threat_level_id"], 3);
        assert_eq!(
            entry["Orgc"],
            json!({"name": "Example", "uuid": misp.org_uuid.to_string()})
        );
        let hashes: Vec<String> = event_hashes(&event).iter().map(|h| hex(h)).collect();
        let md5 = |s: &str| hex(&Md5::digest(s.as_bytes()));
        // PyMISP hashes a datetime as Python prints it.
        for value in [
            "192.0.2.7",
            "sshd",
            "5",
            "alice",
            "2026-11-25 07:00:16.500000+00:00",
        ] {
            assert!(hashes.contains(&md5(value)), "{value}");
        }
        assert_eq!(hashes.len(), 5);
        assert_eq!(
            python_datetime("2026-11-25T07:00:16Z").unwrap(),
            "2026-11-25 07:00:16+00:00"
        );
    }
}
