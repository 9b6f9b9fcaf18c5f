//! A minimal HTTP/1.1 response reader for keep-alive load generation: `Content-Length`
//! bodies only (a chunked response is an error, not something to guess at).

use anyhow::{bail, Context, Result};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// What the load generators need from one response; the body itself is discarded.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body_len: usize,
    pub location: Option<String>,
    /// Seconds, when a busy server says when to come back.
    pub retry_after: Option<f64>,
}

/// Splits `http://host:port/path` into (`host:port`, `/path`).
pub fn split_url(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

/// Reads one response and leaves any surplus (the next response's start) in `buf`.
pub async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: bool,
) -> Result<Response> {
    let mut chunk = vec![0u8; 64 * 1024];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(closed("connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = std::str::from_utf8(&buf[..header_end]).context("non-UTF-8 headers")?;
    let status: u16 = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .context("bad status line")?;
    let mut length = 0usize;
    let (mut location, mut retry_after) = (None, None);
    for line in text.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().context("bad content-length")?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not supported");
            } else if name.eq_ignore_ascii_case("location") {
                location = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("retry-after") {
                retry_after = value.parse().ok();
            }
        }
    }
    if head || status == 204 || status == 304 {
        length = 0;
    }
    buf.drain(..header_end);
    let mut left = length;
    let take = left.min(buf.len());
    buf.drain(..take);
    left -= take;
    while left > 0 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(closed("connection closed in body"));
        }
        let used = n.min(left);
        left -= used;
        if used < n {
            buf.extend_from_slice(&chunk[used..n]);
        }
    }
    Ok(Response {
        status,
        body_len: length,
        location,
        retry_after,
    })
}

/// The peer closed the connection: an I/O error, like a reset, so a caller that
/// reconnects on I/O errors needs no other test.
fn closed(what: &str) -> anyhow::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what.to_string()).into()
}
