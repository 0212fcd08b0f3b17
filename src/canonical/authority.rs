//! The authority decision: which host a request is for, taken once, so that the host the
//! tenant is chosen by is the `Host` the origin receives (RFC 9112 3.2.2). One `Host` field at
//! most; on HTTP/2 the `:authority` and a `Host` must agree; an absolute-form target's
//! authority replaces the `Host` field; user information in an authority is refused.

/// Why a request's host cannot be trusted (each is answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityError {
    /// Neither an authority nor a `Host` field.
    Missing,
    /// More than one `Host` field.
    DuplicateHost,
    /// A value that is not a host name with an optional port.
    Invalid,
    /// `user@host`.
    UserInfo,
    /// HTTP/2 `:authority` and `Host` name different hosts.
    Conflict,
}

impl AuthorityError {
    /// Short reason for logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "no host",
            Self::DuplicateHost => "more than one Host field",
            Self::Invalid => "invalid host",
            Self::UserInfo => "user information in the authority",
            Self::Conflict => "Host and :authority differ",
        }
    }
}

/// Where the request's host comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `Host` field, forwarded as it is.
    Host,
    /// The target's authority (HTTP/2 `:authority`, or an absolute-form target): the
    /// forwarded `Host` is set to it.
    Authority,
}

/// Decides the request's host from the target's `authority` (if any), its `Host` field
/// values (`hosts`, in order) and whether it came over HTTP/2.
pub fn agree<'v>(
    authority: Option<&str>,
    mut hosts: impl Iterator<Item = &'v [u8]>,
    http2: bool,
) -> Result<Source, AuthorityError> {
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::DuplicateHost);
    }
    let Some(authority) = authority else {
        // Its syntax is checked once, where the tenant is looked up (`host_of`).
        host.ok_or(AuthorityError::Missing)?;
        return Ok(Source::Host);
    };
    if authority.contains('@') {
        return Err(AuthorityError::UserInfo);
    }
    host_of(authority.as_bytes()).ok_or(AuthorityError::Invalid)?;
    match host {
        // An absolute-form target on HTTP/1: its authority wins, the `Host` field is replaced.
        Some(host) if http2 && !same_authority(authority.as_bytes(), host) => {
            Err(AuthorityError::Conflict)
        }
        _ => Ok(Source::Authority),
    }
}

/// Whether two authorities name the same host and port (host case and a trailing dot aside).
fn same_authority(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    match (split_authority(a), split_authority(b)) {
        (Some((ha, pa)), Some((hb, pb))) => ha.eq_ignore_ascii_case(hb) && pa == pb,
        _ => false,
    }
}

/// An authority's host (without a trailing dot) and its `:port` part.
fn split_authority(v: &[u8]) -> Option<(&[u8], &[u8])> {
    let (host, _) = host_of(v)?;
    let port = &v[host.len()..];
    let host = host.as_bytes();
    Some((host.strip_suffix(b".").unwrap_or(host), port))
}

/// Bytes allowed in a host name (RFC 3986 reg-name: unreserved, sub-delims, `%`).
const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        i += 1;
    }
    table
};

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`) and whether it
/// has upper-case letters, or `None` when it is not a valid authority without user info.
/// One pass over the bytes: this runs on every request.
pub fn host_of(value: &[u8]) -> Option<(&str, bool)> {
    if value.first() == Some(&b'[') {
        let end = value.iter().position(|b| *b == b']')?;
        let inner = &value[1..end];
        let port = &value[end + 1..];
        let inner_ok = inner
            .iter()
            .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.');
        let port_ok = port.is_empty()
            || port
                .strip_prefix(b":")
                .is_some_and(|p| p.iter().all(u8::is_ascii_digit));
        if !(inner_ok && port_ok) {
            return None;
        }
        let host = std::str::from_utf8(&value[..=end]).ok()?;
        return Some((host, inner.iter().any(u8::is_ascii_uppercase)));
    }
    let mut colon = None;
    let mut upper = false;
    for (i, &b) in value.iter().enumerate() {
        if b == b':' {
            if colon.is_some() {
                return None;
            }
            colon = Some(i);
        } else if colon.is_some() {
            if !b.is_ascii_digit() {
                return None;
            }
        } else if HOST_BYTES[usize::from(b)] {
            upper |= b.is_ascii_uppercase();
        } else {
            return None;
        }
    }
    let host = &value[..colon.unwrap_or(value.len())];
    if host.is_empty() {
        return None;
    }
    // Every byte was checked to be ASCII above.
    Some((std::str::from_utf8(host).ok()?, upper))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_values() {
        let host = |v: &'static str| host_of(v.as_bytes());
        assert_eq!(host("ville.test"), Some(("ville.test", false)));
        assert_eq!(host("Ville.Test:8443"), Some(("Ville.Test", true)));
        assert_eq!(host("[::1]:80"), Some(("[::1]", false)));
        assert_eq!(host("[::AB]"), Some(("[::AB]", true)));
        assert_eq!(host("ville test"), None);
        assert_eq!(host("ville.test:80x"), None);
        assert_eq!(host("ville.test:80:81"), None);
        assert_eq!(host("user@ville.test"), None);
        assert_eq!(host("[zz]"), None);
        assert_eq!(host("[::1]x"), None);
        assert_eq!(host(":80"), None);
        assert_eq!(host("ville.tést"), None);
    }

    #[test]
    fn host_and_authority_agree_or_are_refused() {
        let h = |v: &'static [&'static str]| v.iter().map(|s| s.as_bytes());
        assert_eq!(agree(None, h(&["ville.test"]), false), Ok(Source::Host));
        assert_eq!(agree(None, h(&[]), false), Err(AuthorityError::Missing));
        assert_eq!(
            agree(None, h(&["a.test", "b.test"]), false),
            Err(AuthorityError::DuplicateHost)
        );
        assert_eq!(
            agree(None, h(&["a.test", "a.test"]), true),
            Err(AuthorityError::DuplicateHost)
        );
        assert_eq!(
            agree(Some("ville.test"), h(&[]), true),
            Ok(Source::Authority)
        );
        assert_eq!(
            agree(Some("ville.test"), h(&["Ville.Test."]), true),
            Ok(Source::Authority)
        );
        assert_eq!(
            agree(Some("ville.test:8443"), h(&["ville.test:8443"]), true),
            Ok(Source::Authority)
        );
        assert_eq!(
            agree(Some("ville.test"), h(&["autre.test"]), true),
            Err(AuthorityError::Conflict)
        );
        assert_eq!(
            agree(Some("ville.test:1"), h(&["ville.test"]), true),
            Err(AuthorityError::Conflict)
        );
        // HTTP/1 absolute form: the target's authority replaces the Host field.
        assert_eq!(
            agree(Some("ville.test"), h(&["autre.test"]), false),
            Ok(Source::Authority)
        );
        assert_eq!(
            agree(Some("u@ville.test"), h(&[]), false),
            Err(AuthorityError::UserInfo)
        );
        assert_eq!(
            agree(Some("ville.test"), h(&["a", "b"]), false),
            Err(AuthorityError::DuplicateHost)
        );
    }
}
