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
