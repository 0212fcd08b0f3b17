//! The path normaliser: one reading of a request path, taken before any decision and
//! forwarded as is, so that what the gateway checks is what the origin serves.
//!
//! It decodes percent-encoded unreserved characters (`%41` is `A`, `%2E` is `.`), upper-cases
//! the hex digits of the encodings it keeps, merges repeated slashes and resolves dot segments
//! (RFC 3986 5.2.4). It refuses what has no safe reading: an encoded NUL, a raw backslash, a
//! broken escape, a segment that is not UTF-8 once decoded (overlong forms such as `%C0%AE`
//! included), `..` above the root, and a dot segment with parameters (`..;x`, which some
//! servlet containers read as `..`). An encoded `/` or `\` is kept encoded and reported: the
//! caller refuses it unless the route it reaches opts in.
//!
//! A path that is already canonical (nearly every request) is checked in one pass and
//! returned borrowed.

use std::borrow::Cow;

/// Why a path has no safe reading (each is answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%00`.
    EncodedNul,
    /// A raw `\` (some origins read it as `/`).
    Backslash,
    /// A segment that is not UTF-8 once its escapes are decoded.
    InvalidUtf8,
    /// `..` above the root.
    AboveRoot,
    /// `.` or `..` followed by `;` parameters.
    DotWithParameters,
}

impl PathError {
    /// Short reason for logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotAbsolute => "path not absolute",
            Self::BadEscape => "bad percent escape",
            Self::EncodedNul => "encoded NUL",
            Self::Backslash => "backslash in path",
            Self::InvalidUtf8 => "invalid UTF-8 in a decoded segment",
            Self::AboveRoot => "dot segment above the root",
            Self::DotWithParameters => "dot segment with parameters",
        }
    }
}

/// A normalised path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical<'a> {
    /// The path: starts with `/`, no empty segment but a trailing one, no dot segment, only
    /// the escapes that must stay (upper-case hex).
    pub path: Cow<'a, str>,
    /// The path keeps an encoded `/` or `\` (`%2F`, `%5C`).
    pub encoded_separator: bool,
}

/// Bytes that may stand in a canonical path as they are: what RFC 3986 allows in a segment
/// (unreserved, sub-delims, `:` and `@`) and `/`; other visible ASCII (`"`, `{`, ...) and
/// UTF-8 that the target parser let through pass unchanged too. `%` is not here: a path with
/// an escape takes the slow path; nor are `\`, controls, space and DEL.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0x21;
    while i < 0x100 {
        // 0x7f is DEL; bytes from 0x80 are UTF-8 (the path is a `str`).
        table[i] = !matches!(i as u8, b'%' | b'\\' | 0x7f);
        i += 1;
    }
    table
};

/// Whether `b` is an unreserved character (RFC 3986 2.3): decoded when found encoded.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The canonical form of `path`; borrowed when it already is.
pub fn normalise(path: &str) -> Result<Canonical<'_>, PathError> {
    if is_canonical(path.as_bytes()) {
        return Ok(Canonical {
            path: Cow::Borrowed(path),
            encoded_separator: false,
        });
    }
    rebuild(path)
}

/// Starts with `/`, only plain bytes, no empty segment but a trailing one, no dot segment
/// (with or without parameters). One pass, no iterator set-up: this runs on every request.
fn is_canonical(path: &[u8]) -> bool {
    let [b'/', rest @ ..] = path else {
        return false;
    };
    let ends_segment = |b: Option<&u8>| matches!(b, None | Some(b'/' | b';'));
    let mut segment_start = true;
    for (i, &b) in rest.iter().enumerate() {
        if !PLAIN[usize::from(b)] {
            return false;
        }
        if segment_start {
            if b == b'/' {
                return false;
            }
            if b == b'.'
                && (ends_segment(rest.get(i + 1))
                    || (rest.get(i + 1) == Some(&b'.') && ends_segment(rest.get(i + 2))))
            {
                return false;
            }
        }
        segment_start = b == b'/';
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The slow path: segment by segment.
fn rebuild(path: &str) -> Result<Canonical<'static>, PathError> {
    let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    // Start of each segment kept in `out` (each segment is written as `/` + its bytes).
    let mut starts: Vec<usize> = Vec::new();
    let mut decoded: Vec<u8> = Vec::new();
    let mut trailing_slash = false;
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, raw) in segments.into_iter().enumerate() {
        let start = out.len();
        out.push(b'/');
        decoded.clear();
        let bytes = raw.as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            let b = bytes[j];
            match b {
                b'%' => {
                    let (Some(hi), Some(lo)) = (
                        bytes.get(j + 1).copied().and_then(hex),
                        bytes.get(j + 2).copied().and_then(hex),
                    ) else {
                        return Err(PathError::BadEscape);
                    };
                    let v = hi << 4 | lo;
                    if v == 0 {
                        return Err(PathError::EncodedNul);
                    }
                    if unreserved(v) {
                        out.push(v);
                    } else {
                        out.extend_from_slice(&[
                            b'%',
                            HEX_UPPER[usize::from(hi)],
                            HEX_UPPER[usize::from(lo)],
                        ]);
                    }
                    decoded.push(v);
                    j += 3;
                }
                b'\\' => return Err(PathError::Backslash),
                _ => {
                    out.push(b);
                    decoded.push(b);
                    j += 1;
                }
            }
        }
        if std::str::from_utf8(&decoded).is_err() {
            return Err(PathError::InvalidUtf8);
        }
        let before_params = decoded.split(|b| *b == b';').next().unwrap_or(&[]);
        let is_dot = matches!(before_params, b"." | b"..");
        if is_dot && before_params.len() != decoded.len() {
            return Err(PathError::DotWithParameters);
        }
        match decoded.as_slice() {
            b"" | b"." => {
                out.truncate(start);
                trailing_slash = i == last;
            }
            b".." => {
                out.truncate(start);
                let parent = starts.pop().ok_or(PathError::AboveRoot)?;
                out.truncate(parent);
                trailing_slash = i == last;
            }
            _ => {
                starts.push(start);
                trailing_slash = false;
            }
        }
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    // Whether a kept segment (not one a `..` removed) holds an encoded separator.
    let encoded_separator = out.windows(3).any(|w| w == b"%2F" || w == b"%5C");
    // Only ASCII and whole UTF-8 sequences of the input were written.
    let path = String::from_utf8(out).map_err(|_| PathError::InvalidUtf8)?;
    Ok(Canonical {
        path: Cow::Owned(path),
        encoded_separator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalise(p).map(|c| c.path.into_owned())
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/.rempart/pass",
            "/a.b/c..d/",
            "/a;b=c",
            "/é",
            "/a:b@c",
        ] {
            let c = normalise(p).unwrap();
            assert!(matches!(c.path, Cow::Borrowed(_)), "{p}");
            assert_eq!(c.path, p);
        }
    }

    #[test]
    fn dots_slashes_and_escapes_are_resolved() {
        let cases = [
            ("/a//b", "/a/b"),
            ("//admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/public/../admin/", "/admin/"),
            ("/%61dmin", "/admin"),
            ("/x/%2E%2E/admin", "/admin"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%3fb", "/a%3Fb"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/.", "/"),
            ("/a/.%2e/b", "/b"),
            ("/a///", "/a/"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn paths_without_a_safe_reading_are_refused() {
        let cases = [
            ("/..", PathError::AboveRoot),
            ("/%2e%2e/", PathError::AboveRoot),
            ("/a/../../b", PathError::AboveRoot),
            ("/%2e%2e/%2e%2e/etc", PathError::AboveRoot),
            ("/a%00", PathError::EncodedNul),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a\\b", PathError::Backslash),
            ("/%c0%ae%c0%ae/", PathError::InvalidUtf8),
            ("/%ff", PathError::InvalidUtf8),
            ("/..;/admin", PathError::DotWithParameters),
            ("/a/.;x/b", PathError::DotWithParameters),
            ("a", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), Err(want), "{input}");
        }
    }

    #[test]
    fn encoded_separators_are_kept_and_reported() {
        let c = normalise("/files/a%2fb").unwrap();
        assert_eq!(c.path, "/files/a%2Fb");
        assert!(c.encoded_separator);
        assert!(normalise("/files/a%5Cb").unwrap().encoded_separator);
        assert!(!normalise("/files/a%20b").unwrap().encoded_separator);
    }

    /// Paths made of the pieces that matter: separators, dots, escapes of every kind.
    fn piece() -> impl proptest::strategy::Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "/", "//", ".", "..", "a", "B", "%2e", "%2E", "%2f", "%5c", "%41", "%7e", "%c3%a9",
            "%c3", "%20", "%3f", ";", "~", "é", "%zz", "\\", "%00", "-", ":", "@",
        ])
    }

    proptest::proptest! {
        /// Normalising twice changes nothing; the result starts with `/` and has no dot
        /// segment and no empty segment (but a trailing `/`); only upper-case escapes remain,
        /// and none of an unreserved character.
        #[test]
        fn normalising_is_idempotent_and_leaves_no_dots(pieces in proptest::collection::vec(piece(), 0..12)) {
            let path = format!("/{}", pieces.concat());
            if let Ok(c) = normalise(&path) {
                let once = c.path.clone().into_owned();
                let again = normalise(&once).unwrap();
                if !once.contains('%') {
                    proptest::prop_assert!(matches!(again.path, Cow::Borrowed(_)), "{}", once);
                }
                proptest::prop_assert_eq!(again.path.as_ref(), once.as_str());
                proptest::prop_assert_eq!(again.encoded_separator, c.encoded_separator);
                proptest::prop_assert!(once.starts_with('/'));
                let inner = once.strip_suffix('/').unwrap_or(&once);
                for segment in inner.split('/').skip(1) {
                    proptest::prop_assert!(!segment.is_empty(), "{}", once);
                    proptest::prop_assert!(segment != "." && segment != "..", "{}", once);
                }
                let bytes = once.as_bytes();
                for (i, b) in bytes.iter().enumerate() {
                    if *b == b'%' {
                        let v = &once[i + 1..i + 3];
                        proptest::prop_assert_eq!(v, v.to_ascii_uppercase());
                        let byte = u8::from_str_radix(v, 16).unwrap();
                        proptest::prop_assert!(!unreserved(byte), "{}", once);
                    }
                }
            }
        }

        /// Any byte string: never a panic; what is accepted is valid and idempotent.
        #[test]
        fn arbitrary_paths_never_panic(path in "/[ -~]{0,40}") {
            if let Ok(c) = normalise(&path) {
                let again = normalise(&c.path).unwrap();
                proptest::prop_assert_eq!(again.path.as_ref(), c.path.as_ref());
            }
        }
    }
}
