//! `nftables`: a table with one set per family and drop rules, for `nft -f`.

use super::by_family;
use crate::blocklist::Listed;
use std::fmt::Write;

pub(super) fn write(out: &mut String, list: &[Listed], name: &str) {
    let (v4, v6) = by_family(list);
    // Replaces the table whole, atomically (`nft -f` applies a file as one transaction):
    // addresses no longer listed leave, rules are not added twice.
    let _ = writeln!(out, "table inet {name} {{}}\ndelete table inet {name}");
    let _ = writeln!(out, "table inet {name} {{");
    for (set, kind, ips) in [
        ("banned_v4", "ipv4_addr", &v4),
        ("banned_v6", "ipv6_addr", &v6),
    ] {
        let _ = writeln!(out, "\tset {set} {{\n\t\ttype {kind}");
        if !ips.is_empty() {
            out.push_str("\t\telements = { ");
            for (i, l) in ips.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{}", l.ip);
            }
            out.push_str(" }\n");
        }
        let _ = writeln!(out, "\t}}");
    }
    for (chain, hook) in [("input", "input"), ("forward", "forward")] {
        let _ = writeln!(
            out,
            "\tchain {chain} {{\n\t\ttype filter hook {hook} priority -10; policy accept;\n\
             \t\tip saddr @banned_v4 drop\n\t\tip6 saddr @banned_v6 drop\n\t}}"
        );
    }
    out.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{list, naming};
    use super::super::{Format, render};

    #[test]
    fn replaces_the_table_and_sets_each_family_apart() {
        let text = render(Format::Nftables, &list(), &naming());
        assert!(text.starts_with("table inet shared-f2b {}\ndelete table inet shared-f2b\n"));
        assert!(text.contains("type ipv4_addr\n\t\telements = { 192.0.2.1, 198.51.100.7 }"));
        assert!(text.contains("type ipv6_addr\n\t\telements = { 2001:db8::1 }"));
    }
}
