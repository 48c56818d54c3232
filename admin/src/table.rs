//! What `list` prints: a table for people (every name and reason escaped, so nothing an
//! operator typed can disturb the terminal), or JSON for machines.

use shared_f2b::control::{Control, ControlKind};
use shared_f2b::replay::ReplayedControl;
use std::fmt::Write;
use std::time::SystemTime;

/// The text as is when it holds only printable ASCII, else Debug-quoted (`"a\u{202e}b"`), so
/// control characters, bidi overrides and look-alikes show as what they are.
pub fn escaped(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// When it ends: a time, or "until revoked" (pardon, allow), or "permanent" (ban).
pub fn until(c: &Control) -> String {
    match (c.until, c.kind) {
        (Some(t), _) => when(t),
        (None, ControlKind::Ban) => "permanent".to_owned(),
        (None, _) => "until revoked".to_owned(),
    }
}

/// The table: id, kind, net, operator, since, until, reason; columns as wide as their widest
/// cell, the reason last.
pub fn render(controls: &[ReplayedControl]) -> String {
    if controls.is_empty() {
        return "nothing in force (no pardon, allow or operator ban)\n".to_owned();
    }
    let header = [
        "id",
        "kind",
        "net",
        "operator",
        "since (UTC)",
        "until (UTC)",
        "reason",
    ];
    let rows: Vec<[String; 7]> = controls
        .iter()
        .map(|r| {
            let c = &r.control;
            [
                c.id.to_string(),
                c.kind.as_str().to_owned(),
                c.net.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                escaped(&c.operator),
                when(c.time),
                until(c),
                escaped(&c.reason),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let cells = std::iter::once(header.map(str::to_owned)).chain(rows);
    for row in cells {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                let _ = writeln!(out, "{cell}");
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[i]);
            }
        }
    }
    out
}

/// `list --json`: the pages' `{seq, control}` objects as one array.
pub fn json(controls: &[ReplayedControl]) -> String {
    serde_json::to_string_pretty(controls).expect("controls serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_f2b::control::parse_net;
    use std::time::Duration;

    fn replayed(control: Control, seq: u64) -> ReplayedControl {
        ReplayedControl {
            seq,
            control,
            site: None,
        }
    }

    #[test]
    fn reasons_are_escaped_when_odd() {
        assert_eq!(escaped("partner gateway"), "partner gateway");
        assert_eq!(escaped("ticket #42: \"oops\""), "ticket #42: \"oops\"");
        assert_eq!(escaped("a\u{202e}b"), "\"a\\u{202e}b\"");
        assert_eq!(escaped("tab\there"), "\"tab\\there\"");
        assert_eq!(escaped("\x1b[31mred"), "\"\\u{1b}[31mred\"");
        assert_eq!(escaped("Müller"), "\"Müller\"");
        assert_eq!(escaped(""), "\"\"");
    }

    #[test]
    fn the_table_lines_up() {
        let net = parse_net("192.0.2.7").unwrap();
        let p = Control::pardon("ops", net, Some(Duration::from_secs(3600)), "mistake").unwrap();
        let a = Control::allow(
            "ops.example.org",
            parse_net("2001:db8::/48").unwrap(),
            None,
            "probe\u{202e}",
        )
        .unwrap();
        let b = Control::ban("ops", "198.51.100.1".parse().unwrap(), -1, "scanner").unwrap();
        let text = render(&[
            replayed(p.clone(), 5),
            replayed(a.clone(), 6),
            replayed(b, 9),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("id "), "{text}");
        let col = |name: &str| lines[0].find(name).unwrap();
        for (line, want) in lines[1..].iter().zip(["pardon", "allow", "ban"]) {
            assert_eq!(line.find(want), Some(col("kind")), "{text}");
        }
        assert!(lines[1].starts_with(&p.id.to_string()));
        assert_eq!(lines[1].find("192.0.2.7/32"), Some(col("net")));
        assert_eq!(lines[2].find("ops.example.org"), Some(col("operator")));
        assert!(lines[1].contains(&when(p.until.unwrap())));
        assert!(lines[2].contains("until revoked"));
        assert!(lines[3].contains("permanent"));
        assert!(lines[1].ends_with("mistake"));
        assert!(lines[2].ends_with("\"probe\\u{202e}\""), "{text}");
        assert_eq!(render(&[]).lines().count(), 1);
        let parsed: serde_json::Value = serde_json::from_str(&json(&[replayed(a, 6)])).unwrap();
        assert_eq!(parsed[0]["seq"], 6);
        assert_eq!(parsed[0]["control"]["kind"], "allow");
    }
}
