//! `plain`: one address per line.

use crate::blocklist::Listed;
use std::fmt::Write;

pub(super) fn write(out: &mut String, list: &[Listed]) {
    for l in list {
        let _ = writeln!(out, "{}", l.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{list, naming};
    use super::super::{Format, render};
    use std::net::IpAddr;

    #[test]
    fn one_address_a_line() {
        let l = list();
        let plain: Vec<IpAddr> = render(Format::Plain, &l, &naming())
            .lines()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(plain, l.iter().map(|c| c.ip).collect::<Vec<_>>());
    }
}
