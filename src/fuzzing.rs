//! Entry points for the cargo-fuzz targets in `fuzz/` (not a stable API). Each feeds
//! arbitrary bytes to a parser that reads from the network and checks its invariants.

use bytes::BytesMut;

/// PROXY protocol: the pure parsers and the reader, which must never consume past the header.
pub fn proxy_protocol(data: &[u8]) {
    use crate::server::proxy_protocol::{parse_v1, parse_v2, read_header};
    let _ = parse_v1(data);
    if data.len() >= 4 {
        let _ = parse_v2([data[0], data[1], data[2], data[3]], &data[4..]);
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        let mut cursor = std::io::Cursor::new(data);
        if read_header(&mut cursor).await.is_ok() {
            // A v1 line is at most 107 bytes; a v2 header at most 16 + 4096.
            assert!(cursor.position() <= 16 + 4096);
        }
    });
}

/// Upstream response: head parsing, then the remainder decoded under the head's framing.
pub fn response(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    crate::proxy::client::fuzz_response(&mut buf);
}

/// TLS ClientHello: the parser never panics, and whatever parses yields a well-formed JA4.
pub fn client_hello(data: &[u8]) {
    use crate::shield::fingerprint::{http_fingerprint, ja4, parse_client_hello};
    if let Ok(hello) = parse_client_hello(data) {
        let fp = ja4(&hello);
        let parts: Vec<&str> = fp.split('_').collect();
        assert_eq!(parts.len(), 3, "{fp}");
        assert_eq!(parts[0].len(), 10, "{fp}");
        assert!(parts[1].len() == 12 && parts[2].len() == 12, "{fp}");
    }
    let _ = http_fingerprint(data);
}

/// Pass cookies and challenge answers: arbitrary values are refused, never accepted, never
/// panic; a forged value never verifies.
pub fn pass_cookie(data: &[u8]) {
    use crate::shield::pass::{self, Answer, Binding, KeyRing};
    let Some(keys) = KeyRing::new(&[b"fuzzing key, 32 bytes or more....".to_vec()]) else {
        return;
    };
    let binding = Binding {
        tenant: 1,
        prefix: 2,
        fingerprint: 3,
    };
    let text = String::from_utf8_lossy(data);
    assert!(pass::verify_pass(&keys, &binding, &text, 0).is_err());
    let (token, counter) = text.split_once('&').unwrap_or((&text, "0"));
    assert!(
        pass::verify_answer(&keys, &binding, token, Answer::Work(counter), 60_000, 1_000).is_err()
    );
    assert!(
        pass::verify_answer(&keys, &binding, token, Answer::Waited, u64::MAX, u64::MAX).is_err()
    );
    let headers: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let _ = pass::find_cookie(headers.into_iter());
}

/// Downstream HTTP/1.1 request heads on the fast path (`server::h1`): whole and split.
pub fn request_head(data: &[u8]) {
    crate::server::h1::fuzz_request_head(data);
}

/// `Host` values: what parses is a host name (or a bracketed IPv6 literal) taken from the
/// value, without port or user info, and flagged when it has upper-case letters; the
/// request's host is then lower case without a trailing dot.
pub fn host(data: &[u8]) {
    use crate::canonical::authority::host_of;
    use crate::pipeline::route::request_host;
    if let Some((host, upper)) = host_of(data) {
        assert!(!host.is_empty());
        assert!(data.starts_with(host.as_bytes()), "{host:?}");
        assert_eq!(
            upper,
            host.bytes().any(|b| b.is_ascii_uppercase()),
            "{host:?}"
        );
        assert!(!host.contains('@'), "{host:?}");
        if !host.starts_with('[') {
            assert!(!host.contains(':'), "{host:?}");
        }
    }
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut req = http::Request::new(());
    req.headers_mut().insert(http::header::HOST, value);
    if let Some(h) = request_host(&req) {
        assert!(!h.is_empty() && !h.ends_with('.'), "{h:?}");
        assert!(!h.bytes().any(|b| b.is_ascii_uppercase()), "{h:?}");
    }
}

/// Request paths: the normaliser never panics; what it accepts is canonical (starts with
/// `/`, no dot or empty segment but a trailing `/`, upper-case escapes of reserved bytes
/// only), normalising it again changes nothing, and an encoded separator is reported
/// exactly when one is kept.
pub fn path(data: &[u8]) {
    use crate::canonical::path::normalise;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(canonical) = normalise(text) else {
        return;
    };
    let once = canonical.path.as_ref();
    assert!(once.starts_with('/'), "{once:?}");
    let inner = once.strip_suffix('/').unwrap_or(once);
    for segment in inner.split('/').skip(1) {
        assert!(
            !segment.is_empty() && segment != "." && segment != "..",
            "{once:?}"
        );
    }
    let Ok(again) = normalise(once) else {
        panic!("a canonical path is refused: {once:?}");
    };
    assert_eq!(again.path.as_ref(), once);
    assert_eq!(again.encoded_separator, canonical.encoded_separator);
    assert_eq!(
        canonical.encoded_separator,
        once.contains("%2F") || once.contains("%5C"),
        "{once:?}"
    );
    for (i, _) in once.match_indices('%') {
        let hex = &once[i + 1..i + 3];
        assert_eq!(hex, hex.to_ascii_uppercase(), "{once:?}");
    }
}

/// The personal-data scanner: never a panic; the items found in any split of the bytes are
/// the items found in the bytes whole, in order, within the stream.
pub fn pii(data: &[u8]) {
    use crate::guard::scan::{Found, Scanner};
    let run = |pieces: &[&[u8]]| {
        let mut s = Scanner::new();
        let mut out: Vec<Found> = Vec::new();
        let mut add = |f: Found| out.push(f);
        for p in pieces {
            s.feed(p, &mut add);
        }
        s.finish(&mut add);
        out
    };
    let whole = run(&[data]);
    let mut end = 0;
    for f in &whole {
        assert!(
            f.start >= end && f.end > f.start && f.end <= data.len() as u64,
            "{f:?}"
        );
        end = f.end;
    }
    let cut = data.first().map_or(0, |b| usize::from(*b)) % (data.len() + 1);
    assert_eq!(run(&[&data[..cut], &data[cut..]]), whole, "cut at {cut}");
}

#[cfg(test)]
mod tests {
    /// Runs an entry point over the committed seeds of its fuzz target (`fuzz/seeds/`), so
    /// the invariants the fuzzers check hold on every test run.
    fn seeds(target: &str, entry: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut n = 0;
        for file in std::fs::read_dir(&dir).unwrap() {
            entry(&std::fs::read(file.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn request_head_seeds() {
        seeds("request_head", super::request_head);
    }

    #[test]
    fn host_seeds() {
        seeds("host", super::host);
    }

    #[test]
    fn pii_seeds() {
        seeds("pii", super::pii);
    }

    #[test]
    fn path_seeds() {
        seeds("path", super::path);
    }
}
