//! The field lines of an origin's response head, kept as the origin sent them.
//!
//! An answer written by the HTTP/1.1 fast path downstream copies these bytes through (runs
//! of whole lines in one copy, the hop-by-hop and framing lines left out) instead of
//! building a `HeaderMap` for every response and encoding it again; a map is built only
//! where one is needed: hyper's HTTP/1 and HTTP/2 servers, the stale-copy recorder, an
//! upgrade. This took a proxied 1 KiB request from 29.8k to 26.9k instructions, together
//! with a one-line fix to the hop-by-hop list (callgrind, BENCHMARKS.md).
//!
//! The lines were validated by `httparse`, whose name and value rules are the ones `http`
//! applies (tokens; visible bytes, space, tab and obs-text), so copying them through sends
//! nothing a map would have refused.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};

/// One field line, as offsets into the head.
#[derive(Debug, Clone, Copy)]
struct Line {
    /// First byte of the name.
    start: u32,
    /// One past the name.
    name_end: u32,
    /// The value (without surrounding whitespace).
    value: (u32, u32),
    /// One past the line's LF.
    end: u32,
    /// Whether the line ends in CR LF (a bare LF is rewritten, never copied through).
    crlf: bool,
    /// What the line is for a proxy.
    role: Role,
}

/// What a field line is for a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// End to end: forwarded.
    Forward,
    /// Hop-by-hop (RFC 9110 7.6.1: `Connection` and what it lists, `Proxy-Connection`, `TE`,
    /// `Trailer`, `Upgrade`): dropped, except on a `101` where the tunnel needs them.
    Hop,
    /// Framing, read by the client and chosen afresh downstream (`Content-Length`,
    /// `Transfer-Encoding`, `Keep-Alive`, a `Connection` naming only `close`/`keep-alive`).
    Framing,
}

/// The field lines of one response head.
#[derive(Debug)]
pub struct OriginFields {
    head: Bytes,
    lines: Vec<Line>,
    /// Bytes the forwarded lines take on the wire.
    wire_len: usize,
    /// The origin's `Content-Length` when it framed the body with one (validated; `None`
    /// when `Transfer-Encoding` came too).
    pub content_length: Option<u64>,
    /// Whether the origin sent `Date`.
    pub has_date: bool,
}

/// Builds the field list while a head is parsed.
pub struct Builder {
    lines: Vec<Line>,
    /// Names listed in `Connection` (besides the framing tokens), as ranges of the head.
    listed: Vec<(usize, usize)>,
    has_date: bool,
    /// Whether a `Connection` token said `close`, and which framing token came last.
    close_token: bool,
    last_framing_token_is_close: Option<bool>,
}

/// What a field's name says, by length first (most names fall through on one compare).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// `Content-Length`.
    ContentLength,
    /// `Transfer-Encoding`.
    TransferEncoding,
    /// `Connection`.
    Connection,
    /// `Keep-Alive`.
    KeepAlive,
    /// `Date`.
    Date,
    /// `TE`, `Trailer`, `Upgrade`, `Proxy-Connection`.
    HopByHop,
    /// Anything else.
    Other,
}

impl Name {
    /// Classifies a field name (any case).
    pub fn of(name: &[u8]) -> Self {
        let is = |lower: &[u8]| name.eq_ignore_ascii_case(lower);
        match name.len() {
            2 if is(b"te") => Self::HopByHop,
            4 if is(b"date") => Self::Date,
            7 if is(b"trailer") || is(b"upgrade") => Self::HopByHop,
            10 if is(b"connection") => Self::Connection,
            10 if is(b"keep-alive") => Self::KeepAlive,
            14 if is(b"content-length") => Self::ContentLength,
            16 if is(b"proxy-connection") => Self::HopByHop,
            17 if is(b"transfer-encoding") => Self::TransferEncoding,
            _ => Self::Other,
        }
    }
}

impl Builder {
    /// Room for `n` lines.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            lines: Vec::with_capacity(n),
            listed: Vec::new(),
            has_date: false,
            close_token: false,
            last_framing_token_is_close: None,
        }
    }

    /// Whether the origin's `Connection` fields end the connection after this message:
    /// `close` does; on HTTP/1.0 the connection ends unless the last of `close` and
    /// `keep-alive` was `keep-alive`.
    pub fn connection_close(&self, http10: bool) -> bool {
        if http10 {
            self.last_framing_token_is_close.unwrap_or(true)
        } else {
            self.close_token
        }
    }

    /// Adds the field `name: value` (classified as `kind`), both slices of `head` (the bytes
    /// the parser read), `base` being where `head` starts in memory.
    pub fn push(&mut self, head: &[u8], base: usize, name: &[u8], kind: Name, value: &[u8]) {
        let start = name.as_ptr() as usize - base;
        let name_end = start + name.len();
        let at = value.as_ptr() as usize;
        // An empty value may not point into the head: it then sits right after the colon.
        let value = if at >= base + name_end && at + value.len() <= base + head.len() {
            (at - base, at - base + value.len())
        } else {
            (name_end + 1, name_end + 1)
        };
        let newline = head[value.1..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(head.len(), |i| value.1 + i);
        let crlf = newline > 0 && head[newline - 1] == b'\r';
        let role = match kind {
            Name::Connection => {
                let mut framing_only = true;
                let mut at = value.0;
                for raw in head[value.0..value.1].split(|b| *b == b',') {
                    let token = raw.trim_ascii();
                    let close = token.eq_ignore_ascii_case(b"close");
                    if close || token.eq_ignore_ascii_case(b"keep-alive") {
                        self.close_token |= close;
                        self.last_framing_token_is_close = Some(close);
                    } else {
                        framing_only = false;
                        if super::headers::listed_by_connection(token) {
                            let start = at + (token.as_ptr() as usize - raw.as_ptr() as usize);
                            self.listed.push((start, start + token.len()));
                        }
                    }
                    at += raw.len() + 1;
                }
                if framing_only {
                    Role::Framing
                } else {
                    Role::Hop
                }
            }
            Name::ContentLength | Name::TransferEncoding | Name::KeepAlive => Role::Framing,
            Name::HopByHop => Role::Hop,
            Name::Date => {
                self.has_date = true;
                Role::Forward
            }
            Name::Other => Role::Forward,
        };
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.lines.push(Line {
            start: at(start),
            name_end: at(name_end),
            value: (at(value.0), at(value.1)),
            end: at(newline + 1),
            crlf,
            role,
        });
    }

    /// The fields of `head` (the bytes `push` saw, now shared).
    pub fn finish(mut self, head: Bytes, content_length: Option<u64>) -> OriginFields {
        // Every line ends inside a complete head; clamped anyway, so that no input can make a
        // later slice run past it.
        let len = u32::try_from(head.len()).unwrap_or(u32::MAX);
        for line in &mut self.lines {
            line.end = line.end.min(len);
            line.name_end = line.name_end.min(line.end);
            line.start = line.start.min(line.name_end);
            line.value.1 = line.value.1.min(line.end);
            line.value.0 = line.value.0.min(line.value.1);
        }
        if !self.listed.is_empty() {
            for line in &mut self.lines {
                let name = &head[line.start as usize..line.name_end as usize];
                if line.role == Role::Forward
                    && self
                        .listed
                        .iter()
                        .any(|&(s, e)| head.get(s..e).is_some_and(|l| name.eq_ignore_ascii_case(l)))
                {
                    line.role = Role::Hop;
                }
            }
        }
        let wire_len = self
            .lines
            .iter()
            .filter(|l| l.role == Role::Forward)
            .map(|l| {
                if l.crlf {
                    (l.end - l.start) as usize
                } else {
                    (l.name_end - l.start + l.value.1 - l.value.0) as usize + 4
                }
            })
            .sum();
        OriginFields {
            head,
            lines: self.lines,
            wire_len,
            content_length,
            has_date: self.has_date,
        }
    }
}

impl OriginFields {
    fn name(&self, line: &Line) -> &[u8] {
        &self.head[line.start as usize..line.name_end as usize]
    }

    fn value(&self, line: &Line) -> &[u8] {
        &self.head[line.value.0 as usize..line.value.1 as usize]
    }

    /// Bytes `write_to` appends.
    pub fn wire_len(&self) -> usize {
        self.wire_len
    }

    /// Appends the forwarded lines, CR LF terminated: runs of adjacent lines in one copy.
    pub fn write_to(&self, out: &mut BytesMut) {
        let mut run: Option<(usize, usize)> = None;
        for line in self.lines.iter().filter(|l| l.role == Role::Forward) {
            let (start, end) = (line.start as usize, line.end as usize);
            if line.crlf {
                run = match run {
                    Some((s, e)) if e == start => Some((s, end)),
                    Some((s, e)) => {
                        out.put_slice(&self.head[s..e]);
                        Some((start, end))
                    }
                    None => Some((start, end)),
                };
                continue;
            }
            if let Some((s, e)) = run.take() {
                out.put_slice(&self.head[s..e]);
            }
            out.put_slice(self.name(line));
            out.put_slice(b": ");
            out.put_slice(self.value(line));
            out.put_slice(b"\r\n");
        }
        if let Some((s, e)) = run {
            out.put_slice(&self.head[s..e]);
        }
    }

    /// The fields as a map: the forwarded ones, and the hop-by-hop ones too when
    /// `with_hop_by_hop` (an upgrade's answer). `Content-Length` is not included. `extra`
    /// is room for fields the caller adds.
    pub fn to_header_map(&self, with_hop_by_hop: bool, extra: usize) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.lines.len() + extra);
        for line in &self.lines {
            let wanted = match line.role {
                Role::Forward => true,
                Role::Hop => with_hop_by_hop,
                Role::Framing => false,
            };
            if !wanted {
                continue;
            }
            let Some(name) = super::headers::header_name(self.name(line)) else {
                continue;
            };
            let value = self
                .head
                .slice(line.value.0 as usize..line.value.1 as usize);
            // Validated by the parser with the same rules: never refused here.
            if let Ok(value) = HeaderValue::from_maybe_shared(value) {
                map.append(name, value);
            }
        }
        map
    }

    /// The forwarded fields as a map, with the origin's `Content-Length` when it sent one: the
    /// fields of the answer as a map reader sees them. `extra` is room for fields the caller
    /// adds.
    pub fn to_response_map(&self, extra: usize) -> HeaderMap {
        let mut map = self.to_header_map(false, extra + 1);
        if let Some(n) = self.content_length {
            map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        map
    }

    /// Removes every forwarded line of field `name` (any case): it is not sent downstream,
    /// in any form. The first value, if there was one.
    pub fn remove(&mut self, name: &str) -> Option<Bytes> {
        let mut first = None;
        for i in 0..self.lines.len() {
            let line = self.lines[i];
            if line.role != Role::Forward || !self.name(&line).eq_ignore_ascii_case(name.as_bytes())
            {
                continue;
            }
            if first.is_none() {
                first = Some(
                    self.head
                        .slice(line.value.0 as usize..line.value.1 as usize),
                );
            }
            self.wire_len -= if line.crlf {
                (line.end - line.start) as usize
            } else {
                (line.name_end - line.start + line.value.1 - line.value.0) as usize + 4
            };
            // Framing lines are never forwarded: the line is dropped everywhere.
            self.lines[i].role = Role::Framing;
        }
        first
    }

    /// The first forwarded value of field `name` (any case), for code that reads one field
    /// of the origin's answer (a response tap deciding whether to attach).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.lines
            .iter()
            .filter(|l| l.role == Role::Forward)
            .find(|l| self.name(l).eq_ignore_ascii_case(name.as_bytes()))
            .map(|l| self.value(l))
    }
}

/// Parses `raw` (a whole response head) the way the upstream client does (tests).
#[cfg(test)]
pub(crate) fn from_head(raw: &str, content_length: Option<u64>) -> OriginFields {
    let head = Bytes::copy_from_slice(raw.as_bytes());
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut slots);
    let Ok(httparse::Status::Complete(n)) = resp.parse(&head) else {
        panic!("not a head: {raw:?}");
    };
    assert_eq!(n, head.len());
    let base = head.as_ptr() as usize;
    let mut b = Builder::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        b.push(&head, base, name, Name::of(name), h.value);
    }
    b.finish(head.clone(), content_length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(raw: &str) -> OriginFields {
        from_head(raw, None)
    }

    fn wire(f: &OriginFields) -> String {
        let mut out = BytesMut::new();
        f.write_to(&mut out);
        assert_eq!(out.len(), f.wire_len(), "wire_len is what write_to writes");
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn end_to_end_lines_are_copied_as_sent() {
        let f = fields(
            "HTTP/1.1 200 OK\r\nServer: o\r\nContent-Type:  text/html \r\nContent-Length: 5\r\nETag: \"x\"\r\nDate: now\r\n\r\n",
        );
        assert_eq!(
            wire(&f),
            "Server: o\r\nContent-Type:  text/html \r\nETag: \"x\"\r\nDate: now\r\n"
        );
        assert!(f.has_date);
        assert_eq!(f.get("content-type"), Some(&b"text/html"[..]));
        assert_eq!(f.get("content-length"), None, "framing is the encoder's");
    }

    #[test]
    fn hop_by_hop_and_listed_lines_are_dropped() {
        let f = fields(
            "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: x\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nX-Kept: 2\r\n\r\n",
        );
        assert_eq!(wire(&f), "X-Kept: 2\r\n");
        assert!(!f.has_date);
        // An upgrade's answer keeps them (the tunnel needs Connection and Upgrade).
        let map = f.to_header_map(true, 0);
        assert_eq!(map["connection"], "close, X-Secret");
        assert_eq!(map["upgrade"], "h2c");
        assert!(map.get("keep-alive").is_none() && map.get("transfer-encoding").is_none());
        let forwarded = f.to_header_map(false, 0);
        assert_eq!(forwarded.len(), 1);
        assert_eq!(forwarded["x-kept"], "2");
    }

    #[test]
    fn connection_naming_host_keeps_host() {
        let f = fields("HTTP/1.1 200 OK\r\nConnection: host\r\nHost: a\r\n\r\n");
        assert_eq!(wire(&f), "Host: a\r\n");
    }

    #[test]
    fn bare_line_feeds_are_rewritten() {
        let f = fields("HTTP/1.1 200 OK\nA: 1\nB: 2\r\nC:3\n\n");
        assert_eq!(wire(&f), "A: 1\r\nB: 2\r\nC: 3\r\n");
    }

    #[test]
    fn empty_values_and_repeated_names_survive_both_forms() {
        let f = fields("HTTP/1.1 200 OK\r\nX-Empty:\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n");
        assert_eq!(
            wire(&f),
            "X-Empty:\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        );
        let map = f.to_header_map(false, 0);
        assert_eq!(map["x-empty"], "");
        let cookies: Vec<_> = map.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }
}
