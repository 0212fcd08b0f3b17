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
