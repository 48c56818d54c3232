//! A request's query parameters, read one way for every route: only the names a route knows,
//! each at most once, each value checked, and a 400 that says what was wrong.

use shared_f2b::event::EventError;
use std::collections::HashMap;
use std::ops::RangeInclusive;
use thiserror::Error;

/// What was wrong with a request's parameters (the 400's text).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BadParameter {
    #[error("unknown parameter {0:?}: this takes none")]
    NoneTaken(String),
    #[error("unknown parameter {key:?}: use {known}")]
    Unknown { key: String, known: String },
    #[error("parameter {0:?} given twice")]
    Twice(String),
    #[error("{0} is required: ?{0}=ADDR")]
    Missing(&'static str),
    /// A value the parameter does not take, and what it takes.
    #[error("{name} {value:?}: {expected}")]
    Value {
        name: &'static str,
        value: String,
        expected: String,
    },
    #[error("ip {value:?}: {source}")]
    Ip { value: String, source: EventError },
    #[error(transparent)]
    Filter(#[from] crate::blocklist::BadFilter),
    #[error(transparent)]
    Name(#[from] crate::blocklist::format::BadListName),
}

impl BadParameter {
    /// `value` is not what `name` takes; `expected` says what it does.
    pub fn value(name: &'static str, value: &str, expected: impl Into<String>) -> BadParameter {
        BadParameter::Value {
            name,
            value: value.to_owned(),
            expected: expected.into(),
        }
    }
}

/// A request's parameters by name: only the `known` ones, each at most once.
pub fn parameters<'a>(
    pairs: &'a [(String, String)],
    known: &[&str],
) -> Result<HashMap<&'a str, &'a str>, BadParameter> {
    let mut seen = HashMap::new();
    for (key, value) in pairs {
        if !known.contains(&key.as_str()) {
            return Err(match known.is_empty() {
                true => BadParameter::NoneTaken(key.clone()),
                false => BadParameter::Unknown {
                    key: key.clone(),
                    known: known.join(", "),
                },
            });
        }
        if seen.insert(key.as_str(), value.as_str()).is_some() {
            return Err(BadParameter::Twice(key.clone()));
        }
    }
    Ok(seen)
}

/// A number parameter within `range`; `default` when it is absent.
pub fn number(
    value: Option<&&str>,
    name: &'static str,
    range: RangeInclusive<u64>,
    default: u64,
) -> Result<u64, BadParameter> {
    let Some(value) = value else {
        return Ok(default);
    };
    value
        .parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            let expected = format!("use a number from {} to {}", range.start(), range.end());
            BadParameter::value(name, value, expected)
        })
}

/// An address parameter (any spelling; IPv4-mapped taken as IPv4), required.
pub fn ip(value: Option<&&str>) -> Result<std::net::IpAddr, BadParameter> {
    let value = value.ok_or(BadParameter::Missing("ip"))?;
    shared_f2b::event::parse_ip(value).map_err(|source| BadParameter::Ip {
        value: value.to_string(),
        source,
    })
}

/// A query as the handlers get it, from `(name, value)` pairs (for tests).
#[cfg(test)]
pub(crate) fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
    q.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_names_each_once() {
        let p = pairs(&[("a", "1"), ("b", "2")]);
        assert_eq!(parameters(&p, &["a", "b"]).unwrap()["b"], "2");
        assert_eq!(
            parameters(&p, &["a"]).unwrap_err().to_string(),
            "unknown parameter \"b\": use a"
        );
        assert_eq!(
            parameters(&p, &[]).unwrap_err().to_string(),
            "unknown parameter \"a\": this takes none"
        );
        let twice = pairs(&[("a", "1"), ("a", "2")]);
        assert_eq!(
            parameters(&twice, &["a"]).unwrap_err(),
            BadParameter::Twice("a".into())
        );
    }

    #[test]
    fn numbers_and_addresses_are_checked() {
        assert_eq!(number(None, "limit", 1..=5, 3), Ok(3));
        assert_eq!(number(Some(&"5"), "limit", 1..=5, 3), Ok(5));
        assert_eq!(
            number(Some(&"6"), "limit", 1..=5, 3)
                .unwrap_err()
                .to_string(),
            "limit \"6\": use a number from 1 to 5"
        );
        assert_eq!(
            ip(Some(&"::ffff:192.0.2.1")).unwrap().to_string(),
            "192.0.2.1"
        );
        assert!(
            ip(Some(&"x"))
                .unwrap_err()
                .to_string()
                .starts_with("ip \"x\": ")
        );
        assert_eq!(
            ip(None).unwrap_err().to_string(),
            "ip is required: ?ip=ADDR"
        );
    }
}
