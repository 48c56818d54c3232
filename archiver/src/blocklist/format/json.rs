//! `json`: `[{"ip", "count", "jails", "operator", "source", "expires"}]` (`source`: the
//! intake source listing it).

use crate::blocklist::Listed;
use crate::text::when;
use serde_json::json;

pub(super) fn write(out: &mut String, list: &[Listed]) {
    let items: Vec<_> = list
        .iter()
        .map(|l| {
            json!({
                "ip": l.ip.to_string(),
                "count": l.reporters,
                "jails": l.jails,
                "operator": l.operator,
                "source": l.source,
                "expires": l.expires.map(when),
            })
        })
        .collect();
    out.push_str(&serde_json::to_string(&items).expect("serialises"));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{list, naming};
    use super::super::{Format, render};

    #[test]
    fn each_entry_an_object() {
        let json: serde_json::Value =
            serde_json::from_str(&render(Format::Json, &list(), &naming())).unwrap();
        assert_eq!(json[1]["ip"], "2001:db8::1");
        assert_eq!(json[1]["expires"], "2027-01-15T08:00:00Z");
    }
}
