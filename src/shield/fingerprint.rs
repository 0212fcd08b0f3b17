//! Client fingerprints, pure and cheap, computed once per connection:
//!
//! - **JA4** (FoxIO's public TLS client fingerprint, BSD-3 specification) from the raw bytes
//!   of the ClientHello, which rustls does not expose: the server records the first bytes of
//!   a TLS connection and hands them to `parse_client_hello` (our own parser, fuzzed by
//!   `fuzz/fuzz_targets/client_hello.rs`).
//! - An **HTTP fingerprint** of the first request head as sent on the wire (`http_fingerprint`):
//!   method, version, number of header lines, which of the headers browsers always send are
//!   there, and a hash of the header names in their order and casing. Browsers of one family
//!   share it; scripts and flood tools rarely match a browser's.

/// Why a ClientHello could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloError {
    /// The bytes are not a TLS handshake record.
    NotHandshake,
    /// More bytes are needed.
    Truncated,
    /// A length field is inconsistent.
    Malformed,
}

/// The ClientHello fields JA4 uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// `legacy_version` of the ClientHello.
    pub legacy_version: u16,
    /// Cipher suites, wire order (GREASE included).
    pub ciphers: Vec<u16>,
    /// Extension types, wire order (GREASE included).
    pub extensions: Vec<u16>,
    /// Whether a server_name extension is present.
    pub sni: bool,
    /// First ALPN protocol, if any.
    pub alpn_first: Option<Vec<u8>>,
    /// supported_versions values.
    pub supported_versions: Vec<u16>,
    /// signature_algorithms values, wire order.
    pub signature_algorithms: Vec<u16>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], HelloError> {
        let end = self.pos.checked_add(n).ok_or(HelloError::Malformed)?;
        let s = self.bytes.get(self.pos..end).ok_or(HelloError::Malformed)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, HelloError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, HelloError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Result<usize, HelloError> {
        let b = self.take(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn u16_list(bytes: &[u8]) -> Vec<u16> {
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }
}

/// Most handshake bytes reassembled (a ClientHello with post-quantum key shares is about
/// 1.8 KB; 16 KiB leaves room for large ones).
pub const MAX_HELLO_BYTES: usize = 16 * 1024;

/// Parses the ClientHello from the first bytes a client sent on a TLS connection (one or
/// more handshake records). `Truncated` means more bytes are needed.
pub fn parse_client_hello(bytes: &[u8]) -> Result<ClientHello, HelloError> {
    // Reassemble the handshake message from its records.
    let mut handshake = Vec::new();
    let mut pos = 0;
    loop {
        let header = bytes.get(pos..pos + 5).ok_or(HelloError::Truncated)?;
        if header[0] != 22 {
            return Err(HelloError::NotHandshake);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > 16_384 + 2048 {
            return Err(HelloError::Malformed);
        }
        let body = bytes
            .get(pos + 5..pos + 5 + len)
            .ok_or(HelloError::Truncated)?;
        handshake.extend_from_slice(body);
        pos += 5 + len;
        if handshake.len() > MAX_HELLO_BYTES {
            return Err(HelloError::Malformed);
        }
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Err(HelloError::NotHandshake);
            }
            let need = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            if need > MAX_HELLO_BYTES {
                return Err(HelloError::Malformed);
            }
            if handshake.len() >= 4 + need {
                handshake.truncate(4 + need);
                break;
            }
        }
    }
    let mut r = Reader::new(&handshake);
    r.u8()?;
    let len = r.u24()?;
    let mut body = Reader::new(r.take(len)?);
    let mut hello = ClientHello {
        legacy_version: body.u16()?,
        ..ClientHello::default()
    };
    body.take(32)?;
    let session = usize::from(body.u8()?);
    body.take(session)?;
    let cipher_len = usize::from(body.u16()?);
    if cipher_len % 2 != 0 {
        return Err(HelloError::Malformed);
    }
    hello.ciphers = Reader::u16_list(body.take(cipher_len)?);
    let compression = usize::from(body.u8()?);
    body.take(compression)?;
    if body.is_empty() {
        return Ok(hello);
    }
    let ext_len = usize::from(body.u16()?);
    let mut exts = Reader::new(body.take(ext_len)?);
    while !exts.is_empty() {
        let kind = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let data = exts.take(len)?;
        hello.extensions.push(kind);
        let mut d = Reader::new(data);
        match kind {
            0x0000 => hello.sni = true,
            0x0010 => {
                let list_len = usize::from(d.u16()?);
                let mut list = Reader::new(d.take(list_len)?);
                if !list.is_empty() {
                    let n = usize::from(list.u8()?);
                    hello.alpn_first = Some(list.take(n)?.to_vec());
                }
            }
            0x002b => {
                let n = usize::from(d.u8()?);
                hello.supported_versions = Reader::u16_list(d.take(n)?);
            }
            0x000d => {
                let n = usize::from(d.u16()?);
                hello.signature_algorithms = Reader::u16_list(d.take(n)?);
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// GREASE values (RFC 8701): 0x0a0a, 0x1a1a, ... 0xfafa.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn version_code(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

fn hash12(text: &str) -> String {
    if text.is_empty() {
        return "000000000000".into();
    }
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_list(values: &[u16]) -> String {
    values
        .iter()
        .map(|v| format!("{v:04x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The JA4 fingerprint of a ClientHello received over TCP.
pub fn ja4(hello: &ClientHello) -> String {
    let version = hello
        .supported_versions
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .max()
        .unwrap_or(hello.legacy_version);
    let mut ciphers: Vec<u16> = hello
        .ciphers
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let extensions: Vec<u16> = hello
        .extensions
        .iter()
        .copied()
        .filter(|e| !is_grease(*e))
        .collect();
    let alpn = match hello.alpn_first.as_deref() {
        None | Some([]) => "00".to_owned(),
        Some(v) => {
            let (first, last) = (v[0], v[v.len() - 1]);
            if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
                format!("{}{}", char::from(first), char::from(last))
            } else {
                let hex = format!("{first:02x}{last:02x}");
                format!("{}{}", &hex[..1], &hex[3..])
            }
        }
    };
    let a = format!(
        "t{}{}{:02}{:02}{alpn}",
        version_code(version),
        if hello.sni { 'd' } else { 'i' },
        ciphers.len().min(99),
        extensions.len().min(99),
    );
    ciphers.sort_unstable();
    let mut exts: Vec<u16> = extensions
        .into_iter()
        .filter(|e| *e != 0x0000 && *e != 0x0010)
        .collect();
    exts.sort_unstable();
    let sigs: Vec<u16> = hello
        .signature_algorithms
        .iter()
        .copied()
        .filter(|s| !is_grease(*s))
        .collect();
    let mut c = hex_list(&exts);
    if !sigs.is_empty() {
        c.push('_');
        c.push_str(&hex_list(&sigs));
    }
    format!("{a}_{}_{}", hash12(&hex_list(&ciphers)), hash12(&c))
}

/// Headers every mainstream browser sends on a page load.
const BROWSER_HEADERS: [&str; 3] = ["user-agent", "accept", "accept-language"];

/// The HTTP fingerprint of a raw HTTP/1.x request head (bytes up to and including the blank
/// line): `h{version}{method}{header count}{a|-}{b|-}{c|-}_{hash of header names in order,
/// original casing}`, where the three letters say whether `User-Agent`, `Accept` and
/// `Accept-Language` are present. `None` when the bytes are not an HTTP/1 request head.
pub fn http_fingerprint(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let method = parts.next()?;
    let _target = parts.next()?;
    let version = match parts.next()? {
        "HTTP/1.1" => "11",
        "HTTP/1.0" => "10",
        _ => return None,
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut names = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, _) = line.split_once(':')?;
        names.push(name);
    }
    Some(shape(version, method, &names))
}

/// `h{version}{method}{count}{a|-}{b|-}{c|-}_{hash of the names in order}`.
fn shape(version: &str, method: &str, names: &[&str]) -> String {
    let has = |h: &str| names.iter().any(|n| n.eq_ignore_ascii_case(h));
    let flags: String = BROWSER_HEADERS
        .iter()
        .zip(['a', 'b', 'c'])
        .map(|(h, c)| if has(h) { c } else { '-' })
        .collect();
    let m: String = method
        .chars()
        .take(2)
        .collect::<String>()
        .to_ascii_lowercase();
    format!(
        "h{version}{m}{:02}{flags}_{}",
        names.len().min(99),
        hash12(&names.join(","))
    )
}

/// The HTTP fingerprint of an HTTP/2 request, from its method and header names in the order
/// they were decoded (HTTP/2 names are lower case, so casing carries nothing): same shape as
/// `http_fingerprint`, version `20`.
pub fn http2_fingerprint<'a>(method: &str, names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    shape("20", method, &names)
}

/// Whether an HTTP fingerprint lacks a header every browser sends.
pub fn lacks_browser_headers(http_fingerprint: &str) -> bool {
    http_fingerprint
        .split('_')
        .next()
        .is_some_and(|a| a.contains('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut v = kind.to_be_bytes().to_vec();
        v.extend_from_slice(&(data.len() as u16).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn u16s(values: &[u16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    /// A Chrome-like ClientHello matching a published JA4 (browserleaks' Chrome 143 on
    /// Android: ciphers and extensions in wire order from its `ja4_ro`), with GREASE values
    /// added where Chrome puts them. Split over `records` records.
    fn chrome_hello(records: usize) -> Vec<u8> {
        let ciphers = [
            0x2a2a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ];
        let sigs = [
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ];
        let mut exts = Vec::new();
        exts.extend(ext(0x3a3a, &[]));
        for kind in [
            0x002d, 0x0033, 0x0010, 0xfe0d, 0x0017, 0x44cd, 0x0000, 0x000b, 0x000a, 0x002b, 0xff01,
            0x0023, 0x0012, 0x0005, 0x000d, 0x001b,
        ] {
            let data = match kind {
                0x0000 => {
                    let name = b"www.ville.test";
                    let mut d = ((name.len() + 3) as u16).to_be_bytes().to_vec();
                    d.push(0);
                    d.extend_from_slice(&(name.len() as u16).to_be_bytes());
                    d.extend_from_slice(name);
                    d
                }
                0x0010 => {
                    let mut d = 12u16.to_be_bytes().to_vec();
                    d.extend_from_slice(b"\x02h2\x08http/1.1");
                    d
                }
                0x002b => {
                    let mut d = vec![6];
                    d.extend(u16s(&[0x6a6a, 0x0304, 0x0303]));
                    d
                }
                0x000d => {
                    let mut d = (sigs.len() as u16 * 2).to_be_bytes().to_vec();
                    d.extend(u16s(&sigs));
                    d
                }
                _ => vec![0, 0],
            };
            exts.extend(ext(kind, &data));
        }
        exts.extend(ext(0x1a1a, &[0]));
        let mut body = vec![0x03, 0x03];
        body.extend([7u8; 32]);
        body.push(32);
        body.extend([9u8; 32]);
        body.extend(((ciphers.len() * 2) as u16).to_be_bytes());
        body.extend(u16s(&ciphers));
        body.extend([1, 0]);
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut out = Vec::new();
        for chunk in hs.chunks(hs.len().div_ceil(records)) {
            out.extend([22, 3, 1]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    #[test]
    fn ja4_matches_the_published_vector() {
        for records in [1, 3] {
            let hello = parse_client_hello(&chrome_hello(records)).unwrap();
            assert_eq!(ja4(&hello), "t13d1516h2_8daaf6152771_d8a2da3f94cd");
        }
    }

    #[test]
    fn truncated_and_foreign_input_is_refused() {
        let full = chrome_hello(2);
        for cut in [0, 3, 5, 40, full.len() - 1] {
            assert_eq!(
                parse_client_hello(&full[..cut]),
                Err(HelloError::Truncated),
                "{cut}"
            );
        }
        assert_eq!(
            parse_client_hello(b"GET / HTTP/1.1\r\n\r\n"),
            Err(HelloError::NotHandshake)
        );
        let mut bad = full.clone();
        bad[5] = 2; // a ServerHello, not a ClientHello
        assert_eq!(parse_client_hello(&bad), Err(HelloError::NotHandshake));
    }

    #[test]
    fn ja4_details() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a1a));
        let mut h = ClientHello {
            legacy_version: 0x0303,
            ciphers: vec![0x1301],
            ..ClientHello::default()
        };
        // No SNI, no ALPN, no extensions, TLS 1.2.
        assert_eq!(
            ja4(&h),
            format!("t12i010000_{}_000000000000", hash12("1301"))
        );
        // A non-alphanumeric ALPN is shown by its hex digits.
        h.alpn_first = Some(vec![0xab, b'x', 0x01]);
        assert!(ja4(&h).starts_with("t12i0100a1_"), "{}", ja4(&h));
    }

    #[test]
    fn http_fingerprints_tell_browsers_from_scripts() {
        let firefox = b"GET / HTTP/1.1\r\nHost: ville.test\r\nUser-Agent: Mozilla/5.0\r\nAccept: text/html\r\nAccept-Language: fr\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n";
        let fp = http_fingerprint(firefox).unwrap();
        assert!(fp.starts_with("h11ge06abc_"), "{fp}");
        assert!(!lacks_browser_headers(&fp));
        let script = b"GET /?x=1 HTTP/1.1\r\nhost: ville.test\r\nuser-agent: Mozilla/5.0\r\n\r\n";
        let fp2 = http_fingerprint(script).unwrap();
        assert!(fp2.starts_with("h11ge02a--_"), "{fp2}");
        assert!(lacks_browser_headers(&fp2));
        // Same names, other casing or order: another fingerprint.
        let reordered = b"GET / HTTP/1.1\r\nUser-Agent: Mozilla/5.0\r\nHost: ville.test\r\nAccept: text/html\r\nAccept-Language: fr\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n";
        assert_ne!(http_fingerprint(reordered).unwrap(), fp);
        assert_eq!(http_fingerprint(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), None);
        let h2 = http2_fingerprint(
            "GET",
            ["user-agent", "accept", "accept-language"].into_iter(),
        );
        assert!(h2.starts_with("h20ge03abc_"), "{h2}");
        assert!(lacks_browser_headers(&http2_fingerprint(
            "GET",
            ["user-agent"].into_iter()
        )));
        assert_eq!(http_fingerprint(b"\xff\xfe"), None);
    }
}
