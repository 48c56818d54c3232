//! `mikrotik`: a RouterOS script that replaces an address list per family (`/import`).

use super::by_family;
use crate::blocklist::Listed;
use std::fmt::Write;

pub(super) fn write(out: &mut String, list: &[Listed], name: &str) {
    let (v4, v6) = by_family(list);
    for (menu, ips, host) in [("/ip", &v4, 32), ("/ipv6", &v6, 128)] {
        let _ = writeln!(
            out,
            "{menu} firewall address-list remove [find list=\"{name}\"]"
        );
        for l in ips.iter() {
            let _ = writeln!(
                out,
                "{menu} firewall address-list add list=\"{name}\" address={}/{host}",
                l.ip
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{list, naming};
    use super::super::{Format, render};

    #[test]
    fn replaces_one_list_per_family() {
        let text = render(Format::Mikrotik, &list(), &naming());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "/ip firewall address-list remove [find list=\"shared-f2b\"]"
        );
        assert!(
            lines.contains(
                &"/ip firewall address-list add list=\"shared-f2b\" address=192.0.2.1/32"
            )
        );
        assert!(lines.contains(
            &"/ipv6 firewall address-list add list=\"shared-f2b\" address=2001:db8::1/128"
        ));
    }
}
