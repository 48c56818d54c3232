//! `zeek`: a Zeek intel file (`Intel::ADDR`), for `Intel::read_files`.

use super::Naming;
use crate::blocklist::Listed;
use crate::text::when;
use std::fmt::Write;

pub(super) fn write(out: &mut String, list: &[Listed], naming: &Naming) {
    let name = &naming.name;
    out.push_str("#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\n");
    for l in list {
        let url = naming.public_url.as_ref().map_or_else(
            || "-".to_owned(),
            |base| format!("{}/v1/history?ip={}", base.trim_end_matches('/'), l.ip),
        );
        let _ = writeln!(out, "{}\tIntel::ADDR\t{name}\t{}\t{url}", l.ip, describe(l));
    }
}

/// One line saying why an address is listed (no tabs: Zeek's field separator).
fn describe(l: &Listed) -> String {
    let mut parts = Vec::new();
    if l.reporters > 0 {
        let hosts = if l.reporters == 1 { "host" } else { "hosts" };
        parts.push(format!(
            "banned by {} {hosts} ({})",
            l.reporters,
            l.jails.join(",")
        ));
    }
    if let Some(op) = &l.operator {
        parts.push(format!("banned by operator {op}"));
    }
    if let Some(source) = &l.source {
        parts.push(format!("listed by intake source {source}"));
    }
    let until = l
        .expires
        .map_or_else(|| "permanent".to_owned(), |t| format!("until {}", when(t)));
    format!("{}; {until}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{list, naming};
    use super::super::{Format, render};

    #[test]
    fn lines_have_the_five_fields() {
        let mut naming = naming();
        naming.public_url = Some("https://f2b.example.org/".into());
        let text = render(Format::Zeek, &list(), &naming);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url"
        );
        let first: Vec<&str> = lines.next().unwrap().split('\t').collect();
        assert_eq!(
            first,
            [
                "192.0.2.1",
                "Intel::ADDR",
                "shared-f2b",
                "banned by 1 host (sshd); until 2027-01-15T08:00:00Z",
                "https://f2b.example.org/v1/history?ip=192.0.2.1"
            ]
        );
    }
}
