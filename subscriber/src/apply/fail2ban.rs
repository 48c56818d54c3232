//! Talking to the local Fail2Ban over its unix socket, as `fail2ban-client` does, without a
//! process per command.
//!
//! Request: a pickled list of strings, then `<F2B_END_COMMAND>`. Reply: a pickled
//! `(code, result)`, then `<F2B_END_COMMAND>`; `code = 1` means `result` is an exception.
//! Arguments go over the socket as list items: nothing is ever interpreted by a shell.

pub use serde_pickle::Value;
use serde_pickle::{DeOptions, SerOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const END: &[u8] = b"<F2B_END_COMMAND>";
const CLOSE: &[u8] = b"<F2B_CLOSE_COMMAND>";
/// Replies larger than this are refused (a list of 100,000 banned addresses is ~3 MB).
const MAX_REPLY: usize = 64 << 20;

/// Why a command did not succeed.
#[derive(Debug, Error)]
pub enum Fail2BanError {
    /// The socket is missing or the server went away: retry later.
    #[error("Fail2Ban socket {path} unavailable: {source}")]
    Unavailable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Fail2Ban answered with an error (unknown jail, bad argument…).
    #[error("Fail2Ban refused {command}: {message}")]
    Refused { command: String, message: String },
    /// The reply could not be understood.
    #[error("unexpected reply from Fail2Ban to {command}: {detail}")]
    Protocol { command: String, detail: String },
}

impl Fail2BanError {
    /// Whether waiting and retrying may help.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Fail2BanError::Unavailable { .. })
    }

    /// Whether Fail2Ban refused because it has no such jail (`UnknownJailException`).
    pub fn is_unknown_jail(&self) -> bool {
        matches!(self, Fail2BanError::Refused { message, .. }
            if message.starts_with("UnknownJailException"))
    }
}

/// A connection to one Fail2Ban server, reopened after any failure.
pub struct Fail2Ban {
    path: PathBuf,
    conn: Option<UnixStream>,
    timeout: Duration,
}

impl Fail2Ban {
    /// A client for the socket at `path` (connected on first use).
    pub fn new(path: &Path) -> Fail2Ban {
        Fail2Ban {
            path: path.to_owned(),
            conn: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// Sends one command and returns its result.
    pub async fn command(&mut self, args: &[&str]) -> Result<Reply, Fail2BanError> {
        let shown = || args.iter().take(4).copied().collect::<Vec<_>>().join(" ");
        let request = encode_request(args).map_err(|e| Fail2BanError::Protocol {
            command: shown(),
            detail: e.to_string(),
        })?;
        let reply = match tokio::time::timeout(self.timeout, self.round_trip(&request)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(source)) => {
                self.conn = None;
                return Err(Fail2BanError::Unavailable {
                    path: self.path.clone(),
                    source,
                });
            }
            Err(_) => {
                self.conn = None;
                return Err(Fail2BanError::Unavailable {
                    path: self.path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply"),
                });
            }
        };
        decode_reply(&reply).map_err(|e| match e {
            ReplyError::Refused(message) => Fail2BanError::Refused {
                command: shown(),
                message,
            },
            ReplyError::Malformed(detail) => Fail2BanError::Protocol {
                command: shown(),
                detail,
            },
        })
    }

    async fn round_trip(&mut self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        if self.conn.is_none() {
            self.conn = Some(UnixStream::connect(&self.path).await?);
        }
        let conn = self.conn.as_mut().expect("just connected");
        conn.write_all(request).await?;
        let mut reply = Vec::with_capacity(64);
        let mut chunk = [0u8; 16 * 1024];
        while !reply.ends_with(END) {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            reply.extend_from_slice(&chunk[..n]);
            if reply.len() > MAX_REPLY {
                return Err(std::io::Error::other("reply too large"));
            }
        }
        reply.truncate(reply.len() - END.len());
        Ok(reply)
    }

    /// Whether the server answers `ping` (for `/healthz`); opens and closes its own connection.
    pub async fn ping(path: &Path) -> Result<(), Fail2BanError> {
        let mut f2b = Fail2Ban::new(path);
        let result = f2b.command(&["ping"]).await.map(drop);
        f2b.close().await;
        result
    }

    /// Says goodbye the way `fail2ban-client` does, so the server logs no error.
    pub async fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = conn.write_all(&[CLOSE, END].concat()).await;
        }
    }
}

/// Why a command could not be put into a request.
#[derive(Debug, thiserror::Error)]
enum EncodeError {
    #[error("cannot pickle the command: {0}")]
    Pickle(#[from] serde_pickle::Error),
    #[error("an argument contains the protocol's end marker")]
    EndMarker,
}

fn encode_request(args: &[&str]) -> Result<Vec<u8>, EncodeError> {
    let mut bytes = serde_pickle::to_vec(&args, SerOptions::new())?;
    // The server splits on the end marker: an argument holding it would cut the command short.
    if bytes.windows(END.len()).any(|w| w == END) {
        return Err(EncodeError::EndMarker);
    }
    bytes.extend_from_slice(END);
    Ok(bytes)
}

enum ReplyError {
    Refused(String),
    Malformed(String),
}

/// A successful reply.
#[derive(Debug)]
pub struct Reply {
    /// The result as serde-pickle decodes it (objects it cannot build become `None`).
    pub value: Value,
    /// Every string in the raw reply: Fail2Ban pickles addresses as `str` subclasses, which
    /// serde-pickle cannot build, so lists such as `get <jail> ignoreip` are read from here.
    pub strings: Vec<String>,
}

impl Reply {
    /// The result as a number (`banip` counts, `get <jail> banned <ip>` answers 0 or 1).
    pub fn as_int(&self) -> Option<i64> {
        match self.value {
            Value::I64(n) => Some(n),
            _ => None,
        }
    }
}

fn decode_reply(reply: &[u8]) -> Result<Reply, ReplyError> {
    let value =
        serde_pickle::value_from_slice(reply, DeOptions::new().replace_unresolved_globals())
            .map_err(|e| ReplyError::Malformed(e.to_string()))?;
    match value {
        Value::Tuple(mut items) if items.len() == 2 => {
            let result = items.pop().expect("two items");
            match items.pop().expect("two items") {
                Value::I64(0) => Ok(Reply {
                    value: result,
                    strings: raw_strings(reply),
                }),
                Value::I64(_) => Err(ReplyError::Refused(exception_text(reply))),
                other => Err(ReplyError::Malformed(format!("reply code {other:?}"))),
            }
        }
        other => Err(ReplyError::Malformed(format!("reply {other:?}"))),
    }
}

/// The message of a pickled exception (class and arguments): serde-pickle cannot build the
/// exception object, so it is read from the raw strings for the log.
fn exception_text(pickle: &[u8]) -> String {
    let parts: Vec<_> = raw_strings(pickle)
        .into_iter()
        .filter(|p| !p.contains("fail2ban.") && p != "builtins")
        .collect();
    if parts.is_empty() {
        "error (no detail)".into()
    } else {
        parts.join(": ")
    }
}

/// The unicode strings of a pickle (`SHORT_BINUNICODE` and `BINUNICODE` opcodes), in order.
fn raw_strings(pickle: &[u8]) -> Vec<String> {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < pickle.len() {
        let (len, start) = match pickle[i] {
            0x8c if i + 1 < pickle.len() => (pickle[i + 1] as usize, i + 2),
            b'X' if i + 4 < pickle.len() => (
                u32::from_le_bytes(pickle[i + 1..i + 5].try_into().expect("4 bytes")) as usize,
                i + 5,
            ),
            _ => {
                i += 1;
                continue;
            }
        };
        match pickle.get(start..start + len).map(std::str::from_utf8) {
            Some(Ok(s)) if !s.is_empty() => {
                parts.push(s.to_owned());
                i = start + len;
            }
            _ => i += 1,
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_a_pickled_list_with_the_end_marker() {
        let bytes = encode_request(&["set", "sshd", "banip", "192.0.2.1"]).unwrap();
        assert!(bytes.ends_with(END));
        let body = &bytes[..bytes.len() - END.len()];
        let back: Vec<String> = serde_pickle::from_slice(body, DeOptions::new()).unwrap();
        assert_eq!(back, ["set", "sshd", "banip", "192.0.2.1"]);
        assert!(encode_request(&["set", "x<F2B_END_COMMAND>"]).is_err());
    }

    #[test]
    fn replies_decode_and_errors_keep_their_message() {
        // Python's pickle.dumps((0, 1), 4) and fail2ban 1.0.2's reply for an unknown jail.
        let ok = b"\x80\x04\x95\x07\x00\x00\x00\x00\x00\x00\x00K\x00K\x01\x86\x94.";
        assert!(matches!(
            decode_reply(ok),
            Ok(Reply {
                value: Value::I64(1),
                ..
            })
        ));
        let err = b"\x80\x04\x95A\x00\x00\x00\x00\x00\x00\x00K\x01\x8c\x13fail2ban.exceptions\x94\x8c\x14UnknownJailException\x94\x93\x94\x8c\x06nojail\x94\x85\x94R\x94\x86\x94.";
        match decode_reply(err) {
            Err(ReplyError::Refused(m)) => {
                assert_eq!(m, "UnknownJailException: nojail");
                let refused = Fail2BanError::Refused {
                    command: "set nojail banip".into(),
                    message: m,
                };
                assert!(refused.is_unknown_jail());
                let other = Fail2BanError::Refused {
                    command: "set sshd banip".into(),
                    message: "ValueError: x".into(),
                };
                assert!(!other.is_unknown_jail());
            }
            _ => panic!("an error reply"),
        }
        assert!(matches!(
            decode_reply(b"garbage"),
            Err(ReplyError::Malformed(_))
        ));
        // fail2ban 1.0.2's reply to `get <jail> ignoreip` (addresses are str subclasses).
        let list = b"\x80\x05\x95C\x00\x00\x00\x00\x00\x00\x00K\x00]\x94(\x8c\x08builtins\x94\x8c\x03str\x94\x93\x94\x8c\x0f198.51.100.0/24\x94\x85\x94R\x94h\x03\x8c\x0810.0.0.1\x94\x85\x94R\x94e\x86\x94.";
        let reply = decode_reply(list).ok().unwrap();
        assert_eq!(
            reply.strings,
            ["builtins", "str", "198.51.100.0/24", "10.0.0.1"]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4096)
        ))]

        /// Whatever a (broken or hostile) socket peer sends, decoding errs or succeeds: no panic.
        #[test]
        fn any_reply_bytes_are_safe(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = decode_reply(&bytes);
            let _ = raw_strings(&bytes);
            let _ = exception_text(&bytes);
        }

        /// Requests carry any argument text intact (or are refused if it holds the end marker).
        #[test]
        fn any_arguments_round_trip(args in proptest::collection::vec("\\PC{0,40}", 1..6)) {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Ok(bytes) = encode_request(&refs) {
                let body = &bytes[..bytes.len() - END.len()];
                let back: Vec<String> = serde_pickle::from_slice(body, DeOptions::new()).unwrap();
                proptest::prop_assert_eq!(back, args);
            }
        }
    }
}
