//! PROXY protocol v1 (text) and v2 (binary) from an L4 load balancer: read exactly the
//! header, never a byte of the request after it, and return the original client address.
//! The parsing functions are pure and fuzzed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// v2 signature.
const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Longest v1 line, CRLF included.
const V1_MAX: usize = 107;

/// A malformed PROXY header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// Not a PROXY header at all.
    #[error("connection does not start with a PROXY protocol header")]
    Missing,
    /// Started like one but is malformed.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The connection failed while reading.
    #[error("I/O error while reading the PROXY header")]
    Io,
}

/// Parses a v1 line (without CRLF). `Ok(None)` for `UNKNOWN` (keep the socket peer).
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyHeaderError::Malformed("not ASCII"))?;
    let mut it = text.split(' ');
    if it.next() != Some("PROXY") {
        return Err(ProxyHeaderError::Missing);
    }
    match it.next() {
        Some("UNKNOWN") => Ok(None),
        Some(fam @ ("TCP4" | "TCP6")) => {
            let src: IpAddr = it
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or(ProxyHeaderError::Malformed("source address"))?;
            let _dst: IpAddr = it
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or(ProxyHeaderError::Malformed("destination address"))?;
            let sport: u16 = it
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or(ProxyHeaderError::Malformed("source port"))?;
            let _dport: u16 = it
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or(ProxyHeaderError::Malformed("destination port"))?;
            if it.next().is_some() {
                return Err(ProxyHeaderError::Malformed("trailing fields"));
            }
            if (fam == "TCP4") != src.is_ipv4() {
                return Err(ProxyHeaderError::Malformed("family mismatch"));
            }
            Ok(Some(SocketAddr::new(src, sport)))
        }
        _ => Err(ProxyHeaderError::Malformed("unknown protocol family")),
    }
}

/// Parses a v2 header: the 4 bytes after the signature, then `body` (its length).
pub fn parse_v2(fixed: [u8; 4], body: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let version = fixed[0] >> 4;
    let command = fixed[0] & 0x0F;
    if version != 2 {
        return Err(ProxyHeaderError::Malformed("version"));
    }
    match command {
        0 => return Ok(None), // LOCAL: health check from the balancer itself.
        1 => {}
        _ => return Err(ProxyHeaderError::Malformed("command")),
    }
    match fixed[1] >> 4 {
        0x1 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        0x2 if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        0x0 | 0x3 => Ok(None), // UNSPEC or UNIX: keep the socket peer.
        _ => Err(ProxyHeaderError::Malformed("address block")),
    }
}

/// Reads a v1 or v2 header from `io`; returns the client address it names, if any.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut start = [0u8; 12];
    io.read_exact(&mut start)
        .await
        .map_err(|_| ProxyHeaderError::Io)?;
    if start == V2_SIGNATURE {
        let mut fixed = [0u8; 4];
        io.read_exact(&mut fixed)
            .await
            .map_err(|_| ProxyHeaderError::Io)?;
        let len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        if len > 4096 {
            return Err(ProxyHeaderError::Malformed("length"));
        }
        let mut body = vec![0u8; len];
        io.read_exact(&mut body)
            .await
            .map_err(|_| ProxyHeaderError::Io)?;
        return parse_v2(fixed, &body);
    }
    if !start.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::Missing);
    }
    let mut line = start.to_vec();
    // Byte by byte so nothing after the CRLF is consumed.
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyHeaderError::Malformed("line too long"));
        }
        let b = io.read_u8().await.map_err(|_| ProxyHeaderError::Io)?;
        line.push(b);
    }
    line.truncate(line.len() - 2);
    parse_v1(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_variants() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443"),
            Ok(Some("192.0.2.1:56324".parse().unwrap()))
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2"),
            Ok(Some("[2001:db8::1]:1".parse().unwrap()))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN"), Ok(None));
        assert!(parse_v1(b"PROXY TCP4 2001:db8::1 1.1.1.1 1 2").is_err());
        assert!(parse_v1(b"PROXY TCP4 1.1.1.1 1.1.1.1 99999 2").is_err());
        assert_eq!(parse_v1(b"GET / HTTP/1.1"), Err(ProxyHeaderError::Missing));
    }

    #[tokio::test]
    async fn reads_exactly_the_header() {
        let mut data: Vec<u8> = V2_SIGNATURE.to_vec();
        data.extend_from_slice(&[
            0x21, 0x11, 0, 12, 203, 0, 113, 9, 10, 0, 0, 1, 0x1F, 0x90, 0, 80,
        ]);
        data.extend_from_slice(b"GET /");
        let mut cursor = std::io::Cursor::new(data);
        let addr = read_header(&mut cursor).await.unwrap();
        assert_eq!(addr, Some("203.0.113.9:8080".parse().unwrap()));
        let mut rest = String::new();
        cursor.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "GET /");

        let mut v1 =
            std::io::Cursor::new(b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\nGET".to_vec());
        assert_eq!(
            read_header(&mut v1).await.unwrap(),
            Some("192.0.2.1:1000".parse().unwrap())
        );
        let mut rest = String::new();
        v1.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "GET");
    }
}
