//! A small blocking HTTP/1.1 client for `warren ctl`: one request per
//! connection (`Connection: close`), Basic auth, JSON bodies, bounded
//! time and size. Enough for the management API on a trusted address;
//! not a general client (no TLS, no redirects).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;

/// Largest response read (a definitions export of a big broker fits).
const MAX_RESPONSE_BYTES: u64 = 256 << 20;
/// Time allowed to connect, and for each read or write.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the API is and who asks.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port`.
    pub authority: String,
    /// Path prefix, normally `/api`.
    pub prefix: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl Endpoint {
    /// Parse `http://host:port[/prefix]`.
    pub fn parse(url: &str, user: &str, password: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let prefix = if path.is_empty() { "/api" } else { path };
        Ok(Endpoint {
            authority: authority.to_string(),
            prefix: prefix.to_string(),
            user: user.to_string(),
            password: password.to_string(),
        })
    }

    /// Send one request; the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), String> {
        let addr = self.authority.as_str();
        let mut last_error = String::new();
        let mut stream = None;
        for a in
            std::net::ToSocketAddrs::to_socket_addrs(addr).map_err(|e| format!("{addr}: {e}"))?
        {
            match TcpStream::connect_timeout(&a, TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        let mut stream = stream.ok_or_else(|| format!("cannot connect to {addr}: {last_error}"))?;
        let _ = stream.set_read_timeout(Some(TIMEOUT));
        let _ = stream.set_write_timeout(Some(TIMEOUT));
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {credentials}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.prefix,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(body))
            .map_err(|e| format!("cannot send to {addr}: {e}"))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .map_err(|e| format!("cannot read from {addr}: {e}"))?;
        parse_response(&raw)
    }
}

/// Status and body of a complete response (plain or chunked).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("truncated HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed HTTP status line")?;
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        },
    ))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "malformed chunk size")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if size.checked_add(2).is_none_or(|n| body.len() < n) {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_plain_and_chunked() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"[]"[..]));
        let raw = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n2\r\n\"}\r\n0\r\n\r\n";
        let (s, b) = parse_response(raw).unwrap();
        assert_eq!((s, b.as_slice()), (404, &b"{\"a\"}"[..]));
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:15672", "u", "p").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.prefix.as_str()),
            ("127.0.0.1:15672", "/api")
        );
        let e = Endpoint::parse("http://h:1/mgmt/api/", "u", "p").unwrap();
        assert_eq!(e.prefix, "/mgmt/api");
        assert!(Endpoint::parse("https://h", "u", "p").is_err());
    }
}
