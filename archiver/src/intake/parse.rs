//! What a source's text says: the entries of a plain list, and the address-carrying
//! attributes of MISP JSON (a `restSearch` answer or a feed's event file), with the filters of
//! `[[archiver.intake]]` applied. Pure: no I/O.

use ipnet::IpNet;
use serde_json::Value;
use shared_f2b::control::{Listing, MAX_TAG, MAX_TAGS, parse_net};
use shared_f2b::intake::IntakeConfig;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One address or net a source lists, and where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub net: IpNet,
    pub listing: Listing,
}

/// The attribute types that carry an address.
pub const TYPES: [&str; 5] = [
    "ip-src",
    "ip-dst",
    "ip-src|port",
    "ip-dst|port",
    "domain|ip",
];

/// A plain list: one address or CIDR per line, what follows `#` or `;` a comment; anything
/// else on a line after the address (Spamhaus DROP's `; SBL…`) ignored. Lines that hold no
/// address are counted in the second value.
pub fn list(text: &str) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default().trim();
        let Some(word) = line.split_whitespace().next() else {
            continue;
        };
        match parse_net(word) {
            Ok(net) => entries.push(Entry {
                net,
                listing: Listing::default(),
            }),
            Err(_) => bad += 1,
        }
    }
    (entries, bad)
}

/// The address in an attribute's value, by its type.
fn address(kind: &str, value: &str) -> Option<IpNet> {
    let text = match kind {
        "ip-src" | "ip-dst" => value,
        "ip-src|port" | "ip-dst|port" => value.split('|').next()?,
        "domain|ip" => value.split('|').nth(1)?,
        _ => return None,
    };
    parse_net(text.trim()).ok()
}

fn tags_of(v: &Value) -> Vec<String> {
    v.get("Tag")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A number MISP may write as a string.
fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn boolean(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s == "1" || s == "true"),
        Value::Number(n) => Some(n.as_u64() == Some(1)),
        _ => None,
    }
}

/// The attributes of one MISP event (`{"Event": {...}}` or the event itself), its objects'
/// included, that pass `source`'s filters at `now`.
pub fn misp_event(event: &Value, source: &IntakeConfig, now: SystemTime) -> Vec<Entry> {
    let event = event.get("Event").unwrap_or(event);
    let mut attributes: Vec<&Value> = event
        .get("Attribute")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    for object in event
        .get("Object")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        attributes.extend(
            object
                .get("Attribute")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
    }
    attributes
        .into_iter()
        .filter_map(|a| attribute(a, event, source, now))
        .collect()
}

/// The attributes of a `restSearch` answer (`{"response": {"Attribute": [...]}}`), each with
/// its `Event` as MISP includes it, that pass `source`'s filters.
pub fn misp_attributes(
    answer: &Value,
    source: &IntakeConfig,
    now: SystemTime,
) -> Option<Vec<Entry>> {
    let response = answer.get("response")?;
    let attributes = response
        .get("Attribute")
        .or_else(|| response.as_array().map(|_| response))?
        .as_array()?;
    let none = Value::Null;
    Some(
        attributes
            .iter()
            .filter_map(|a| attribute(a, a.get("Event").unwrap_or(&none), source, now))
            .collect(),
    )
}

/// One attribute, if it carries an address and passes the filters; `event`: its event (for
/// its uuid, tags, publication and threat level), `Null` if unknown.
fn attribute(a: &Value, event: &Value, source: &IntakeConfig, now: SystemTime) -> Option<Entry> {
    let kind = a.get("type")?.as_str()?;
    let net = address(kind, a.get("value")?.as_str()?)?;
    if a.get("deleted").and_then(|d| boolean(Some(d))) == Some(true) {
        return None;
    }
    if source.to_ids && boolean(a.get("to_ids")) != Some(true) {
        return None;
    }
    // A filter that cannot be checked (the event's context missing) leaves the attribute out.
    if let Some(wanted) = source.published
        && boolean(event.get("published")) != Some(wanted)
    {
        return None;
    }
    if let Some(most) = source.threat_level
        && number(event.get("threat_level_id")).is_none_or(|t| t > most as u64)
    {
        return None;
    }
    if let Some(age) = source.last {
        let changed = number(a.get("timestamp"))
            .or_else(|| number(event.get("timestamp")))
            .map(|s| UNIX_EPOCH + Duration::from_secs(s));
        if changed.is_some_and(|t| t + age < now) {
            return None;
        }
    }
    let mut tags = tags_of(a);
    for tag in tags_of(event) {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if !source.tags.is_empty() && !tags.iter().any(|t| source.tags.contains(t)) {
        return None;
    }
    tags.retain(|t| {
        !t.is_empty() && t.chars().count() <= MAX_TAG && !t.chars().any(char::is_control)
    });
    tags.truncate(MAX_TAGS);
    let uuid = |v: &Value| {
        v.get("uuid")
            .and_then(Value::as_str)
            .and_then(|u| u.parse().ok())
    };
    Some(Entry {
        net,
        listing: Listing {
            event: uuid(event),
            attribute: uuid(a),
            tags,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &str) -> IntakeConfig {
        toml::from_str(&format!(
            "name = \"t\"\nkind = \"misp-feed\"\nurl = \"/x\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn lists_take_addresses_and_nets_and_skip_comments() {
        let text =
            "# FireHOL\n1.2.3.4\n5.6.7.0/24 ; SBL123\n; comment\n\nnot-an-ip\n2001:db8::/48\n";
        let (entries, bad) = list(text);
        let nets: Vec<String> = entries.iter().map(|e| e.net.to_string()).collect();
        assert_eq!(nets, ["1.2.3.4/32", "5.6.7.0/24", "2001:db8::/48"]);
        assert_eq!(bad, 1);
    }

    #[test]
    fn misp_attributes_pass_the_filters() {
        let event = serde_json::json!({"Event": {
            "uuid": "5f8e2a3c-0000-4000-8000-000000000001", "published": true,
            "threat_level_id": "2", "Tag": [{"name": "tlp:green"}],
            "Attribute": [
                {"type": "ip-src", "value": "198.51.100.1", "to_ids": true,
                 "uuid": "5f8e2a3c-0000-4000-8000-0000000000a1"},
                {"type": "ip-dst|port", "value": "198.51.100.2|443", "to_ids": true},
                {"type": "ip-src", "value": "198.51.100.3", "to_ids": false},
                {"type": "domain", "value": "example.org", "to_ids": true}],
            "Object": [{"Attribute": [
                {"type": "domain|ip", "value": "example.org|198.51.100.4", "to_ids": "1"}]}]}});
        let now = SystemTime::now();
        let got: Vec<String> = misp_event(&event, &source(""), now)
            .iter()
            .map(|e| e.net.to_string())
            .collect();
        assert_eq!(
            got,
            ["198.51.100.1/32", "198.51.100.2/32", "198.51.100.4/32"]
        );
        let first = &misp_event(&event, &source(""), now)[0];
        assert_eq!(first.listing.tags, ["tlp:green"]);
        assert!(first.listing.event.is_some() && first.listing.attribute.is_some());
        assert!(misp_event(&event, &source("tags = [\"tlp:red\"]"), now).is_empty());
        assert!(misp_event(&event, &source("threat_level = 1"), now).is_empty());
        assert_eq!(misp_event(&event, &source("to_ids = false"), now).len(), 4);
    }
}
