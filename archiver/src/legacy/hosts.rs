//! Which host id a row of the original's table belongs to: the `--hosts` map file, else a
//! sanitised short name of the `hostname` column.

use shared_f2b::event::validate_host;
use std::collections::HashMap;
use std::path::Path;

/// The host id of rows whose `hostname` is NULL or empty, unless the map names one for `NULL`.
pub const UNKNOWN_HOST: &str = "unknown";

/// Why the map file was refused.
#[derive(Debug, thiserror::Error)]
pub enum HostMapError {
    #[error("cannot read the host map {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("host map {path}, line {line}: {why}")]
    Line {
        path: String,
        line: usize,
        why: String,
    },
}

/// Legacy hostnames (as written in the table, compared case-insensitively) to host ids.
#[derive(Debug, Clone, Default)]
pub struct HostMap {
    ids: HashMap<String, String>,
}

impl HostMap {
    /// Reads a map file: one `<legacy hostname> <host id>` per line, `NULL` for rows without
    /// a hostname, `#` starting a comment.
    pub fn load(path: &Path) -> Result<HostMap, HostMapError> {
        let text = std::fs::read_to_string(path).map_err(|source| HostMapError::Read {
            path: path.display().to_string(),
            source,
        })?;
        HostMap::parse(&text).map_err(|(line, why)| HostMapError::Line {
            path: path.display().to_string(),
            line,
            why,
        })
    }

    /// Parses the map file's text; an error names the line.
    pub fn parse(text: &str) -> Result<HostMap, (usize, String)> {
        let mut ids = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(legacy), Some(id), None) = (words.next(), words.next(), words.next()) else {
                return Err((n + 1, "expected `<legacy hostname> <host id>`".into()));
            };
            validate_host(id).map_err(|e| (n + 1, e.to_string()))?;
            if ids
                .insert(legacy.to_ascii_lowercase(), id.to_owned())
                .is_some()
            {
                return Err((n + 1, format!("{legacy} is mapped twice")));
            }
        }
        Ok(HostMap { ids })
    }

    /// The host id of a row's `hostname`, or `None` when nothing usable is left of it.
    pub fn host_id(&self, hostname: Option<&str>) -> Option<String> {
        let hostname = hostname.map(str::trim).filter(|h| !h.is_empty());
        let key = hostname.map_or_else(|| "null".to_owned(), str::to_ascii_lowercase);
        if let Some(id) = self.ids.get(&key) {
            return Some(id.clone());
        }
        match hostname {
            None => Some(UNKNOWN_HOST.to_owned()),
            Some(name) => short_name(name),
        }
    }
}

/// `web1.example.org` → `web1`; an address stays whole; anything but letters, digits, `-` and
/// `_` becomes `-`.
pub fn short_name(hostname: &str) -> Option<String> {
    let lower = hostname.to_ascii_lowercase();
    let short = if lower.parse::<std::net::IpAddr>().is_ok() {
        lower.as_str()
    } else {
        lower.split('.').next().unwrap_or("")
    };
    let id: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || c == ':' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id = id.trim_matches('-');
    (validate_host(id).is_ok() && !id.is_empty()).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_and_the_map() {
        let map = HostMap::parse("# comment\nWeb1.Example.org  www\nNULL nobody\n").unwrap();
        assert_eq!(
            map.host_id(Some("web1.example.org")).as_deref(),
            Some("www")
        );
        assert_eq!(map.host_id(None).as_deref(), Some("nobody"));
        assert_eq!(map.host_id(Some("  ")).as_deref(), Some("nobody"));
        assert_eq!(map.host_id(Some("DB2.example.org")).as_deref(), Some("db2"));
        assert_eq!(map.host_id(Some("10.0.0.1")).as_deref(), Some("10.0.0.1"));
        assert_eq!(map.host_id(Some("my host")).as_deref(), Some("my-host"));
        assert_eq!(map.host_id(Some("...")), None);
        assert_eq!(
            HostMap::default().host_id(None).as_deref(),
            Some(UNKNOWN_HOST)
        );
        assert!(HostMap::parse("a b c\n").is_err());
        assert!(HostMap::parse("a b@c\n").is_err());
        assert!(HostMap::parse("a b\nA c\n").is_err());
    }
}
