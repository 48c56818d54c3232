//! An HTTP answer as the tests read it (from curl's `-i` output or a raw socket).

/// One HTTP answer.
#[derive(Debug)]
pub struct Got {
    pub code: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as it came after the headers (not de-chunked).
    pub body: Vec<u8>,
}

impl Got {
    /// Splits raw bytes into status, headers and body; `None` without a status line and the
    /// end of the headers.
    pub fn parse(raw: &[u8]) -> Option<Got> {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let code = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Some(Got {
            code,
            headers,
            body: raw[split + 4..].to_vec(),
        })
    }

    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` as is to `127.0.0.1:port` and reads the answer to its end, its body
/// de-chunked; `None` when the server closed without one (or gave none `within`). A raw
/// client: exactly the bytes an attacker chooses (curl normalises paths).
pub fn exchange(port: u16, request: &[u8], within: std::time::Duration) -> Option<Got> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(within)).ok()?;
    conn.set_write_timeout(Some(within)).ok()?;
    // A server may answer (and close) before it read everything.
    let _ = conn.write_all(request);
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw);
    let mut got = Got::parse(&raw)?;
    if got
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        got.body = dechunk(&got.body);
    }
    Some(got)
}

/// A chunked body's data.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..end])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// `method target` with `headers`, HTTP/1.1, closing after the answer.
pub fn request(method: &str, target: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut text =
        format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}
