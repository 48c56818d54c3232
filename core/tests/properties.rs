//! Property tests (the fuzzing that runs in CI): hostile input to every decoder gets an error,
//! never a panic, and every encoding round-trips. `PROPTEST_CASES` raises the case count for a
//! longer run (see docs/testing.md, "Fuzzing").

use proptest::prelude::*;
use shared_f2b::Config;
use shared_f2b::event::{
    Action, Event, MAX_JAIL_LEN, parse_ip, validate_bantime, validate_host, validate_jail,
};
use shared_f2b::subject::{decode_token, encode_token, event_subject, parse_subject};
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

/// 4,096 cases per property in CI; `PROPTEST_CASES=200000` for a long run.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    ProptestConfig::with_cases(cases)
}

fn is_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What every config that parses holds: a valid host id and subject prefix, a server.
fn checked(config: &Config) -> bool {
    validate_host(&config.host_id).is_ok()
        && !config.nats.servers.is_empty()
        && validate_jail(&config.subscriber.target_jail).is_ok()
}

fn sample() -> Event {
    Event::new(
        Action::Ban,
        "alice",
        "sshd",
        parse_ip("192.0.2.7").unwrap(),
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        600,
        5,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_name_becomes_one_token_and_back(name in "\\PC{1,40}|[\\x00-\\x7f]{1,40}") {
        let token = encode_token(&name).unwrap();
        prop_assert!(is_token(&token), "{:?} -> {:?}", name, token);
        prop_assert_eq!(decode_token(&token).unwrap(), name);
    }

    #[test]
    fn decoding_any_token_is_safe_and_canonical(token in "[A-Za-z0-9_-]{0,30}|\\PC{0,30}") {
        if let Ok(name) = decode_token(&token) {
            prop_assert_eq!(encode_token(&name).unwrap(), token);
        }
    }

    #[test]
    fn any_subject_parses_or_errs(subject in "[a-z0-9._*> -]{0,60}") {
        // What parses is canonical: built again from its parts, it is the same subject.
        if let Ok(p) = parse_subject("f2b", &subject) {
            prop_assert_eq!(event_subject("f2b", p.action, &p.jail, &p.host).unwrap(), subject);
        }
    }

    #[test]
    fn any_bytes_decode_or_err(payload in proptest::collection::vec(any::<u8>(), 0..600)) {
        // What decodes is a valid event, and encodes to what decodes to it again.
        if let Ok(e) = Event::decode(&payload) {
            prop_assert!(e.validate().is_ok());
            prop_assert_eq!(Event::decode(&e.encode()).unwrap(), e);
        }
    }

    #[test]
    fn mutated_events_decode_or_err(pos in 0usize..250, byte in any::<u8>(), cut in 0usize..260) {
        let mut bytes = sample().encode();
        let i = pos % bytes.len();
        bytes[i] = byte;
        bytes.truncate(cut.max(1));
        if let Ok(d) = Event::decode(&bytes) {
            prop_assert!(d.validate().is_ok());
        }
    }

    #[test]
    fn valid_events_round_trip(
        origin in "[A-Za-z0-9.:_-]{1,60}",
        jail in "[A-Za-z0-9_-]{1,64}",
        ip in any::<IpAddr>(),
        ms in 0u64..4_000_000_000_000,
        bantime in -1i64..100_000_000,
        failures in any::<u32>(),
        unban in any::<bool>(),
    ) {
        let action = if unban { Action::Unban } else { Action::Ban };
        let time = UNIX_EPOCH + Duration::from_millis(ms);
        let e = Event::new(action, &origin, &jail, ip, time, bantime, failures).unwrap();
        prop_assert_eq!(Event::decode(&e.encode()).unwrap(), e.clone());
        let subject = event_subject("f2b", action, &jail, &origin).unwrap();
        let parsed = parse_subject("f2b", &subject).unwrap();
        prop_assert_eq!((parsed.host, parsed.jail), (origin, jail));
    }

    #[test]
    fn any_numbers_in_a_payload_are_safe(bantime in any::<i64>(), failures in any::<i64>(), year in 0u32..12000) {
        let text = String::from_utf8(sample().encode()).unwrap()
            .replace("\"bantime\":600", &format!("\"bantime\":{bantime}"))
            .replace("\"failures\":5", &format!("\"failures\":{failures}"))
            .replace("2023-11-14", &format!("{year:04}-11-14"));
        // Only a bantime from -1 to the maximum decodes; its end is never before its start,
        // and only a permanent ban has none.
        if let Ok(e) = Event::decode(text.as_bytes()) {
            prop_assert!(validate_bantime(e.bantime).is_ok(), "bantime {}", e.bantime);
            match e.expires() {
                Some(end) => prop_assert!(end >= e.time),
                None => prop_assert!(e.bantime == -1 || e.time.checked_add(Duration::from_secs(e.bantime as u64)).is_none()),
            }
            let _ = e.expired_at(std::time::SystemTime::now());
        }
    }

    #[test]
    fn any_ip_text_is_safe_and_canonical(text in "[0-9a-fA-F:.%/ ]{0,45}") {
        if let Ok(ip) = parse_ip(&text) {
            prop_assert_eq!(parse_ip(&ip.to_string()).unwrap(), ip);
        }
    }

    #[test]
    fn any_names_validate_or_err(text in "\\PC{0,300}") {
        // A valid jail is made of token characters; a valid host encodes into one token and
        // back.
        if validate_jail(&text).is_ok() {
            prop_assert!(is_token(&text));
            prop_assert!(text.len() <= MAX_JAIL_LEN);
        }
        if validate_host(&text).is_ok() {
            prop_assert!(!text.chars().any(char::is_whitespace));
            let token = encode_token(&text).unwrap();
            prop_assert!(is_token(&token));
            prop_assert_eq!(decode_token(&token).unwrap(), text.clone());
        }
    }

    #[test]
    fn any_config_text_parses_or_errs(text in "[\\[\\]a-z_=\" .0-9\\n{}:/-]{0,300}") {
        if let Ok(config) = Config::parse(&text) {
            prop_assert!(checked(&config));
        }
    }

    #[test]
    fn mutated_configs_parse_or_err(pos in 0usize..2000, byte in any::<u8>()) {
        let mut text = include_str!("../../config.example.toml").as_bytes().to_vec();
        let i = pos % text.len();
        text[i] = byte;
        if let Ok(text) = String::from_utf8(text)
            && let Ok(config) = Config::parse(&format!("host_id = \"a\"\n{text}"))
        {
            prop_assert!(checked(&config));
        }
    }
}
