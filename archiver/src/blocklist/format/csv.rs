//! `csv`: `ip,count` lines, as the original Shared-Fail2Ban exported.

use crate::blocklist::Listed;
use std::fmt::Write;

pub(super) fn write(out: &mut String, list: &[Listed]) {
    for l in list {
        let _ = writeln!(out, "{},{}", l.ip, l.reporters);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{list, naming};
    use super::super::{Format, render};
    use std::net::IpAddr;

    #[test]
    fn address_and_count() {
        let csv: Vec<(IpAddr, usize)> = render(Format::Csv, &list(), &naming())
            .lines()
            .map(|line| {
                let (ip, n) = line.split_once(',').unwrap();
                (ip.parse().unwrap(), n.parse().unwrap())
            })
            .collect();
        assert_eq!(csv[2], ("198.51.100.7".parse().unwrap(), 3));
    }
}
