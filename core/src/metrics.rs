//! Prometheus metrics and health over HTTP (`metrics_listen`, off by default), and systemd
//! readiness: what the daemons share to be observed like any well-kept service.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::net::SocketAddr;

/// A label set like `[("reason", "spoofed_origin")]`.
pub type Labels = Vec<(String, String)>;

/// One scraped series: name, labels, value.
pub type Sample = (String, Labels, f64);

/// One label.
pub fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_owned(), value.to_owned())]
}

/// Latency buckets from 0.5 ms to about 65 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Size buckets from 1 to about 16,000.
pub fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// A gauge family keyed by one label (e.g. bans held per origin).
pub type GaugeFamily = Family<Labels, Gauge>;

/// A plain HTTP/1.0 GET on loopback-style endpoints: (status code, body).
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    conn.read_to_string(&mut text).await?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((code, body))
}

/// Reads a Prometheus text page from `addr` (for `status` commands): `(name, labels, value)`.
pub async fn scrape(addr: SocketAddr) -> std::io::Result<Vec<Sample>> {
    Ok(parse_text(&get(addr, "/metrics").await?.1))
}

/// The daemon's `/healthz` answer: status code and the per-component lines.
pub async fn healthz(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    get(addr, "/healthz").await
}

/// Parses Prometheus text exposition (enough for our own pages).
pub fn parse_text(body: &str) -> Vec<Sample> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}')?;
                    let labels = inner
                        .split("\",")
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once("=\"")?;
                            Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), Vec::new()),
            };
            Some((name, labels, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_our_own_exposition() {
        let page = "# HELP x help\nx_total 3\ny{reason=\"spoofed_origin\",jail=\"a\"} 2\n";
        let parsed = parse_text(page);
        assert_eq!(parsed[0], ("x_total".into(), vec![], 3.0));
        assert_eq!(
            parsed[1].1,
            vec![
                ("reason".into(), "spoofed_origin".into()),
                ("jail".into(), "a".into())
            ]
        );
    }
}
