//! How the archiver writes times and digests in what it prints and serves.

use md5::{Digest, Md5};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time as RFC 3339 in UTC, never past 9999-12-31T23:59:59Z (RFC 3339 has four-digit
/// years; a ban ending later is written as ending then).
pub fn when(t: SystemTime) -> String {
    let latest = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    humantime::format_rfc3339_seconds(t.min(latest)).to_string()
}

/// Bytes as lower-case hex (digests in ETags and MISP hash lists).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The MD5 digest of `bytes` (ETags, token comparison: not a security boundary on its own).
pub fn digest(bytes: &[u8]) -> [u8; 16] {
    Md5::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_the_year_9999_print_as_its_last_second() {
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(when(far), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
