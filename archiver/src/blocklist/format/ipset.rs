//! `ipset`: `ipset restore` input, one set per family, swapped in whole.

use super::by_family;
use crate::blocklist::Listed;
use std::fmt::Write;

/// The size of the sets (fixed: `create -exist` refuses a set made with another).
const MAXELEM: usize = 1 << 20;

pub(super) fn write(out: &mut String, list: &[Listed], name: &str) {
    let (v4, v6) = by_family(list);
    // Filled under a new name, then swapped in (atomic) and the old one destroyed: addresses
    // no longer listed leave.
    for (suffix, family, ips) in [("v4", "inet", &v4), ("v6", "inet6", &v6)] {
        let set = format!("{name}-{suffix}");
        let new = format!("{set}-new");
        for s in [&set, &new] {
            let _ = writeln!(
                out,
                "create {s} hash:ip family {family} maxelem {MAXELEM} -exist"
            );
        }
        let _ = writeln!(out, "flush {new}");
        for l in ips.iter() {
            let _ = writeln!(out, "add {new} {} -exist", l.ip);
        }
        let _ = writeln!(out, "swap {new} {set}\ndestroy {new}");
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{list, naming};
    use super::super::{Format, render};

    #[test]
    fn puts_each_family_in_its_set() {
        let text = render(Format::Ipset, &list(), &naming());
        assert!(text.contains("create shared-f2b-v4 hash:ip family inet maxelem 1048576 -exist"));
        assert!(text.contains("add shared-f2b-v4-new 198.51.100.7 -exist"));
        assert!(text.contains("add shared-f2b-v6-new 2001:db8::1 -exist"));
        assert!(text.contains("swap shared-f2b-v4-new shared-f2b-v4\ndestroy shared-f2b-v4-new"));
    }
}
