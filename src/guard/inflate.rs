//! Compressed answers on routes whose bodies the guard reads: the gateway asks the origin
//! for identity encoding, but an application may compress anyway. Rather than pass such an
//! answer unread (or refuse it), gzip and deflate bodies are decompressed as they stream, then
//! read, and sent on uncompressed. Bounded: a body that inflates past `MAX_INFLATED` bytes (a
//! decompression bomb) is refused.

use std::io::Write;

/// The most bytes a body may inflate to.
pub const MAX_INFLATED: u64 = 256 * 1024 * 1024;

/// A streaming decoder of one answer's body.
pub struct Inflater {
    inner: Inner,
    total: u64,
    limit: u64,
}

enum Inner {
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Gzip(_) => "gzip",
            Inner::Deflate(_) => "deflate",
        };
        write!(f, "Inflater({kind}, {} bytes)", self.total)
    }
}

/// The body could not be decoded, or inflated past the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflateError;

impl Inflater {
    /// A decoder for a `Content-Encoding` value (`gzip`, `x-gzip`, `deflate`); `None` for
    /// any other (several codings, `br`, `zstd`...).
    pub fn for_encoding(value: &[u8]) -> Option<Self> {
        let v = value.trim_ascii();
        let inner = if v.eq_ignore_ascii_case(b"gzip") || v.eq_ignore_ascii_case(b"x-gzip") {
            Inner::Gzip(flate2::write::GzDecoder::new(Vec::new()))
        } else if v.eq_ignore_ascii_case(b"deflate") {
            Inner::Deflate(flate2::write::ZlibDecoder::new(Vec::new()))
        } else {
            return None;
        };
        Some(Self {
            inner,
            total: 0,
            limit: MAX_INFLATED,
        })
    }

    /// The same, refusing bodies that inflate past `limit` bytes.
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    fn take(&mut self, out: &mut Vec<u8>) -> Result<(), InflateError> {
        let decoded = match &mut self.inner {
            Inner::Gzip(d) => d.get_mut(),
            Inner::Deflate(d) => d.get_mut(),
        };
        self.total += decoded.len() as u64;
        if self.total > self.limit {
            return Err(InflateError);
        }
        out.append(decoded);
        Ok(())
    }

    /// Decodes the body's next bytes, appending what they decode to to `out`.
    pub fn inflate(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        // Written in pieces, so that a bomb is caught before it fills memory.
        for piece in chunk.chunks(4096) {
            let written = match &mut self.inner {
                Inner::Gzip(d) => d.write_all(piece),
                Inner::Deflate(d) => d.write_all(piece),
            };
            written.map_err(|_| InflateError)?;
            self.take(out)?;
        }
        Ok(())
    }

    /// The end of the body: the last decoded bytes; `Err` when the stream was cut short.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), InflateError> {
        let done = match &mut self.inner {
            Inner::Gzip(d) => d.try_finish(),
            Inner::Deflate(d) => d.try_finish(),
        };
        done.map_err(|_| InflateError)?;
        self.take(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_and_deflate_bodies_decode_whatever_the_chunks() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("ligne {i}\n").into_bytes())
            .collect();
        let packed = gzip(&text);
        for size in [1, 7, 1000, packed.len()] {
            let mut i = Inflater::for_encoding(b" GZIP ").unwrap();
            let mut out = Vec::new();
            for c in packed.chunks(size) {
                i.inflate(c, &mut out).unwrap();
            }
            i.finish(&mut out).unwrap();
            assert_eq!(out, text, "chunks of {size}");
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&text).unwrap();
        let mut i = Inflater::for_encoding(b"deflate").unwrap();
        let mut out = Vec::new();
        i.inflate(&z.finish().unwrap(), &mut out).unwrap();
        i.finish(&mut out).unwrap();
        assert_eq!(out, text);
        assert!(Inflater::for_encoding(b"br").is_none());
        assert!(Inflater::for_encoding(b"gzip, br").is_none());
    }

    #[test]
    fn broken_bodies_and_bombs_are_refused() {
        let mut i = Inflater::for_encoding(b"gzip").unwrap();
        let mut out = Vec::new();
        assert!(
            i.inflate(b"\x1f\x8b\x08\x00garbage that is not deflate", &mut out)
                .is_err()
                || i.finish(&mut out).is_err()
        );
        // Cut short: the end is refused.
        let packed = gzip(b"un texte assez long pour etre coupe avant sa fin");
        let mut i = Inflater::for_encoding(b"gzip").unwrap();
        let mut out = Vec::new();
        let _ = i.inflate(&packed[..packed.len() - 6], &mut out);
        assert_eq!(i.finish(&mut out), Err(InflateError));
        // 8 MiB of zeros pack into about 8 KiB: refused past a 1 MiB bound.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&vec![0u8; 8 << 20]).unwrap();
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 64 * 1024);
        let mut i = Inflater::for_encoding(b"gzip").unwrap().with_limit(1 << 20);
        let mut refused = false;
        for c in bomb.chunks(16 * 1024) {
            let mut out = Vec::new();
            if i.inflate(c, &mut out).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }
}
