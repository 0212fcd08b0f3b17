//! Proof-of-work challenges and pass cookies: the pure core (no clock reads, no sockets).
//!
//! A challenge token is issued with the challenge page; the browser finds a counter `n` such
//! that `SHA-256(token || n)` starts with `difficulty` zero bits (or, without JavaScript,
//! waits `wait` seconds and follows a meta refresh). The server checks the token's MAC, its
//! age and the work in O(1), refuses a token used before (`replay::ReplayGuard`), and hands out a
//! pass cookie: expiry + MAC, bound to the tenant, the client's network prefix and its
//! fingerprint (so a pass copied to another network or client type is worthless).
//!
//! Both are HMAC-SHA256 (ring) under a key ring: the first key signs, every key verifies,
//! so keys can be rotated without logging residents out.

use ring::hmac;

/// Name of the pass cookie.
pub const PASS_COOKIE: &str = "rempart_pass";

/// Token and cookie format version.
const VERSION: u8 = 1;
/// MAC bytes kept in tokens and cookies (128 bits).
const MAC_LEN: usize = 16;
/// Challenge token: version, key id, issued (ms), nonce, difficulty, wait (s), MAC.
const TOKEN_LEN: usize = 1 + 1 + 8 + 8 + 1 + 1 + MAC_LEN;
/// Pass cookie of the first version: version, key id, expiry (s), MAC. Still accepted until
/// it expires; no longer issued.
const PASS_LEN: usize = 1 + 1 + 8 + MAC_LEN;
/// Pass cookie: version 2, key id, expiry (s), the nonce of the challenge it answered (its
/// own identity: two browsers behind one address passing in the same second get two passes,
/// each with its own rate), MAC.
const PASS2_LEN: usize = 1 + 1 + 8 + 8 + MAC_LEN;
/// The version of passes issued now.
const PASS_VERSION: u8 = 2;

/// HMAC keys: the first signs, all verify (rotation).
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(u8, hmac::Key)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "KeyRing({} keys)", self.keys.len())
    }
}

impl KeyRing {
    /// A key ring from raw secrets, newest first. Key ids are positions counted from the
    /// oldest key, so adding a key at the front keeps the ids of the others.
    pub fn new(secrets: &[Vec<u8>]) -> Option<Self> {
        if secrets.is_empty() || secrets.len() > 255 {
            return None;
        }
        let n = secrets.len();
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    u8::try_from(n - 1 - i).unwrap_or(0),
                    hmac::Key::new(hmac::HMAC_SHA256, s),
                )
            })
            .collect();
        Some(Self { keys })
    }

    /// One random key (when the operator configured none: passes last until a restart,
    /// or across upgrades, which hand the secret over).
    pub fn random() -> Self {
        Self::from_secret(&Self::random_secret())
    }

    /// A fresh random secret for `from_secret`.
    pub fn random_secret() -> [u8; 32] {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; 32];
        // SystemRandom only fails when the OS has no randomness at all; then a time-derived
        // key is still unguessable enough to be better than refusing to start.
        if ring::rand::SystemRandom::new().fill(&mut secret).is_err() {
            let t = crate::clock::unix_nanos();
            secret[..16].copy_from_slice(&t.to_le_bytes());
        }
        secret
    }

    /// The one-key ring of `secret` (key id 0, as `random` makes).
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self {
            keys: vec![(0, hmac::Key::new(hmac::HMAC_SHA256, secret))],
        }
    }

    fn signer(&self) -> &(u8, hmac::Key) {
        &self.keys[0]
    }

    fn key(&self, id: u8) -> Option<&hmac::Key> {
        self.keys.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }
}

/// What a token or pass is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// Tenant index hash (the tenant id's hash, stable across reloads).
    pub tenant: u64,
    /// Client network prefix (see `shield::prefix_of`), family-tagged.
    pub prefix: u128,
    /// Client fingerprint hash (user agent; JA4 once available).
    pub fingerprint: u64,
}

impl Binding {
    /// The tenant and client network, as one key: what the replay guard and the
    /// no-JavaScript budget count per.
    pub fn partition(&self) -> u64 {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.tenant.to_le_bytes());
        b[8..].copy_from_slice(&self.prefix.to_le_bytes());
        crate::shield::defence::stable_hash(&b)
    }

    fn bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&self.tenant.to_le_bytes());
        b[8..24].copy_from_slice(&self.prefix.to_le_bytes());
        b[24..].copy_from_slice(&self.fingerprint.to_le_bytes());
        b
    }
}

fn mac(key: &hmac::Key, body: &[u8], binding: &Binding) -> [u8; MAC_LEN] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(body);
    ctx.update(&binding.bytes());
    let tag = ctx.sign();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
    out
}

fn check_mac(key: &hmac::Key, body: &[u8], binding: &Binding, given: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    mac(key, body, binding).ct_eq(given).into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = nibble(s[2 * i])? << 4 | nibble(s[2 * i + 1])?;
    }
    Some(out)
}

/// A challenge as issued (what the page embeds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Token, hex.
    pub token: String,
    /// Leading zero bits required.
    pub difficulty: u8,
    /// Seconds a browser without JavaScript waits before it may claim a pass.
    pub wait_s: u8,
}

/// Issues a challenge token.
pub fn issue_challenge(
    keys: &KeyRing,
    binding: &Binding,
    nonce: u64,
    difficulty: u8,
    wait_s: u8,
    now_ms: u64,
) -> Challenge {
    let (id, key) = keys.signer();
    let mut raw = [0u8; TOKEN_LEN];
    raw[0] = VERSION;
    raw[1] = *id;
    raw[2..10].copy_from_slice(&now_ms.to_le_bytes());
    raw[10..18].copy_from_slice(&nonce.to_le_bytes());
    raw[18] = difficulty;
    raw[19] = wait_s;
    let tag = mac(key, &raw[..20], binding);
    raw[20..].copy_from_slice(&tag);
    Challenge {
        token: hex(&raw),
        difficulty,
        wait_s,
    }
}

/// Why a challenge answer or a pass was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not a token or cookie of ours.
    Malformed,
    /// Signed by an unknown key, tampered with, or for another tenant, network or client.
    BadMac,
    /// Too old.
    Expired,
    /// The proof of work does not have enough zero bits.
    BadWork,
    /// A no-JavaScript claim came before the wait was over.
    TooEarly,
    /// The token was already used.
    Replayed,
}

impl Reject {
    /// Name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadMac => "bad_mac",
            Self::Expired => "expired",
            Self::BadWork => "bad_work",
            Self::TooEarly => "too_early",
            Self::Replayed => "replayed",
        }
    }
}

/// How the client answered the challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// The counter found by the script (decimal).
    Work(&'a str),
    /// No JavaScript: the client waited.
    Waited,
}

/// A valid answer: the token's nonce (for the replay guard) and issue time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solved {
    /// The token's nonce.
    pub nonce: u64,
    /// When the token was issued.
    pub issued_ms: u64,
}

/// Leading zero bits of a SHA-256 digest.
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for b in digest {
        if *b == 0 {
            bits += 8;
        } else {
            return bits + b.leading_zeros();
        }
    }
    bits
}

/// The proof-of-work digest: SHA-256 of the token's hex text followed by the counter's text.
pub fn work_digest(token: &str, counter: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(token.as_bytes());
    ctx.update(counter.as_bytes());
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Finds a counter for `token` (what the browser script does; used by the drill tool and
/// tests).
pub fn solve(token: &str, difficulty: u8) -> u64 {
    (0u64..)
        .find(|n| leading_zero_bits(&work_digest(token, &n.to_string())) >= u32::from(difficulty))
        .unwrap_or(0)
}

/// Checks an answer to a challenge (O(1): one HMAC, at most one SHA-256). Replays are
/// checked by the caller with the returned nonce.
pub fn verify_answer(
    keys: &KeyRing,
    binding: &Binding,
    token: &str,
    answer: Answer<'_>,
    max_age_ms: u64,
    now_ms: u64,
) -> Result<Solved, Reject> {
    let raw: [u8; TOKEN_LEN] = unhex(token).ok_or(Reject::Malformed)?;
    if raw[0] != VERSION {
        return Err(Reject::Malformed);
    }
    let key = keys.key(raw[1]).ok_or(Reject::BadMac)?;
    if !check_mac(key, &raw[..20], binding, &raw[20..]) {
        return Err(Reject::BadMac);
    }
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&raw[2..10]);
    let issued_ms = u64::from_le_bytes(eight);
    eight.copy_from_slice(&raw[10..18]);
    let nonce = u64::from_le_bytes(eight);
    let (difficulty, wait_s) = (raw[18], raw[19]);
    if now_ms.saturating_sub(issued_ms) > max_age_ms || issued_ms > now_ms.saturating_add(5_000) {
        return Err(Reject::Expired);
    }
    match answer {
        Answer::Work(counter) => {
            let plain = !counter.is_empty()
                && counter.len() <= 20
                && counter.bytes().all(|b| b.is_ascii_digit());
            if !plain || leading_zero_bits(&work_digest(token, counter)) < u32::from(difficulty) {
                return Err(Reject::BadWork);
            }
        }
        Answer::Waited => {
            if now_ms < issued_ms + u64::from(wait_s) * 1000 {
                return Err(Reject::TooEarly);
            }
        }
    }
    Ok(Solved { nonce, issued_ms })
}

/// Forges a pass cookie value valid until `expires_s` (Unix seconds), for the answer to the
/// challenge of `nonce` (each pass its own identity).
pub fn issue_pass(keys: &KeyRing, binding: &Binding, expires_s: u64, nonce: u64) -> String {
    let (id, key) = keys.signer();
    let mut raw = [0u8; PASS2_LEN];
    raw[0] = PASS_VERSION;
    raw[1] = *id;
    raw[2..10].copy_from_slice(&expires_s.to_le_bytes());
    raw[10..18].copy_from_slice(&nonce.to_le_bytes());
    let tag = mac(key, &raw[..18], binding);
    raw[18..].copy_from_slice(&tag);
    hex(&raw)
}

/// A pass cookie's bytes (either version, in a buffer of the longer) and its length, if
/// well formed: the signed part is `raw[..len - MAC_LEN]`, the MAC the rest.
fn pass_bytes(value: &str) -> Option<([u8; PASS2_LEN], usize)> {
    let mut raw = [0u8; PASS2_LEN];
    if value.len() == PASS_LEN * 2 {
        let v1: [u8; PASS_LEN] = unhex(value)?;
        raw[..PASS_LEN].copy_from_slice(&v1);
        (raw[0] == VERSION).then_some((raw, PASS_LEN))
    } else {
        raw = unhex(value)?;
        (raw[0] == PASS_VERSION).then_some((raw, PASS2_LEN))
    }
}

/// A verified pass: its MAC identifies it for the per-pass rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// A stable identifier of this pass (from its MAC).
    pub id: u64,
    /// Expiry, Unix seconds.
    pub expires_s: u64,
}

/// Checks a pass cookie value.
pub fn verify_pass(
    keys: &KeyRing,
    binding: &Binding,
    value: &str,
    now_s: u64,
) -> Result<Pass, Reject> {
    let (raw, len) = pass_bytes(value).ok_or(Reject::Malformed)?;
    let (body, tag) = raw[..len].split_at(len - MAC_LEN);
    let key = keys.key(body[1]).ok_or(Reject::BadMac)?;
    if !check_mac(key, body, binding, tag) {
        return Err(Reject::BadMac);
    }
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&body[2..10]);
    let expires_s = u64::from_le_bytes(eight);
    if now_s >= expires_s {
        return Err(Reject::Expired);
    }
    // The MAC covers the nonce (version 2): each pass has its own identifier.
    eight.copy_from_slice(&tag[..8]);
    Ok(Pass {
        id: u64::from_le_bytes(eight),
        expires_s,
    })
}

/// The pass cookie's value among a request's `Cookie` header values, if any.
pub fn find_cookie<'a>(cookie_headers: impl Iterator<Item = &'a [u8]>) -> Option<&'a str> {
    for header in cookie_headers {
        let Ok(text) = std::str::from_utf8(header) else {
            continue;
        };
        for pair in text.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                if name == PASS_COOKIE {
                    return Some(value.trim_matches('"'));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding {
            tenant: 7,
            prefix: 0xc000_0200,
            fingerprint: 42,
        }
    }

    fn keys() -> KeyRing {
        KeyRing::new(&[b"second key".to_vec(), b"first key".to_vec()]).unwrap()
    }

    #[test]
    fn solved_challenge_verifies_once_bound() {
        let k = keys();
        let c = issue_challenge(&k, &binding(), 99, 8, 5, 1_000_000);
        let n = solve(&c.token, c.difficulty).to_string();
        let ok = verify_answer(
            &k,
            &binding(),
            &c.token,
            Answer::Work(&n),
            60_000,
            1_000_500,
        );
        assert_eq!(
            ok,
            Ok(Solved {
                nonce: 99,
                issued_ms: 1_000_000
            })
        );
        // Another network, client type or tenant: refused.
        for other in [
            Binding {
                prefix: 1,
                ..binding()
            },
            Binding {
                fingerprint: 1,
                ..binding()
            },
            Binding {
                tenant: 1,
                ..binding()
            },
        ] {
            assert_eq!(
                verify_answer(&k, &other, &c.token, Answer::Work(&n), 60_000, 1_000_500),
                Err(Reject::BadMac)
            );
        }
        // Too late.
        assert_eq!(
            verify_answer(
                &k,
                &binding(),
                &c.token,
                Answer::Work(&n),
                60_000,
                1_070_000
            ),
            Err(Reject::Expired)
        );
    }

    #[test]
    fn bad_work_and_tampering_are_refused() {
        let k = keys();
        let c = issue_challenge(&k, &binding(), 1, 12, 5, 10_000);
        let good = solve(&c.token, 12);
        // The first counter that does NOT meet the difficulty.
        let bad = (0u64..)
            .find(|n| leading_zero_bits(&work_digest(&c.token, &n.to_string())) < 12)
            .unwrap();
        assert_eq!(
            verify_answer(
                &k,
                &binding(),
                &c.token,
                Answer::Work(&bad.to_string()),
                60_000,
                10_001
            ),
            Err(Reject::BadWork)
        );
        for junk in ["", "-1", "1e3", "99999999999999999999999"] {
            assert_eq!(
                verify_answer(&k, &binding(), &c.token, Answer::Work(junk), 60_000, 10_001),
                Err(Reject::BadWork)
            );
        }
        // Lowering the difficulty byte breaks the MAC.
        let mut raw: [u8; TOKEN_LEN] = unhex(&c.token).unwrap();
        raw[18] = 0;
        assert_eq!(
            verify_answer(
                &k,
                &binding(),
                &hex(&raw),
                Answer::Work(&good.to_string()),
                60_000,
                10_001
            ),
            Err(Reject::BadMac)
        );
        assert_eq!(
            verify_answer(&k, &binding(), "zz", Answer::Waited, 60_000, 10_001),
            Err(Reject::Malformed)
        );
    }

    #[test]
    fn waiting_path_needs_the_wait() {
        let k = keys();
        let c = issue_challenge(&k, &binding(), 5, 20, 4, 50_000);
        assert_eq!(
            verify_answer(&k, &binding(), &c.token, Answer::Waited, 60_000, 53_999),
            Err(Reject::TooEarly)
        );
        assert!(verify_answer(&k, &binding(), &c.token, Answer::Waited, 60_000, 54_000).is_ok());
    }

    #[test]
    fn pass_cookie_binding_expiry_and_rotation() {
        let old = KeyRing::new(&[b"first key".to_vec()]).unwrap();
        let value = issue_pass(&old, &binding(), 2_000, 1);
        assert!(verify_pass(&old, &binding(), &value, 1_999).is_ok());
        assert_eq!(
            verify_pass(&old, &binding(), &value, 2_000),
            Err(Reject::Expired)
        );
        // After rotation (new key in front), passes signed by the old key still verify...
        let rotated = keys();
        assert!(verify_pass(&rotated, &binding(), &value, 1_000).is_ok());
        // ... new passes are signed by the new key, which the old ring does not know.
        let fresh = issue_pass(&rotated, &binding(), 2_000, 2);
        assert_eq!(
            verify_pass(&old, &binding(), &fresh, 1_000),
            Err(Reject::BadMac)
        );
        // Once the old key is dropped, its passes die.
        let only_new = KeyRing::new(&[b"second key".to_vec()]).unwrap();
        assert!(verify_pass(&only_new, &binding(), &value, 1_000).is_err());
        // Bound to the client's network.
        let elsewhere = Binding {
            prefix: 9,
            ..binding()
        };
        assert_eq!(
            verify_pass(&rotated, &elsewhere, &fresh, 1_000),
            Err(Reject::BadMac)
        );
        // Forged expiry.
        let mut raw: [u8; PASS2_LEN] = unhex(&fresh).unwrap();
        raw[2..10].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            verify_pass(&rotated, &binding(), &hex(&raw), 1_000),
            Err(Reject::BadMac)
        );
        // Forged nonce (another pass's identity).
        let mut raw: [u8; PASS2_LEN] = unhex(&fresh).unwrap();
        raw[10] ^= 1;
        assert_eq!(
            verify_pass(&rotated, &binding(), &hex(&raw), 1_000),
            Err(Reject::BadMac)
        );
    }

    #[test]
    fn each_pass_has_its_own_identity_and_first_version_passes_still_verify() {
        let k = keys();
        // Two browsers behind one address, same user agent, passing in the same second.
        let a = issue_pass(&k, &binding(), 2_000, 41);
        let b = issue_pass(&k, &binding(), 2_000, 42);
        let (pa, pb) = (
            verify_pass(&k, &binding(), &a, 1_000).unwrap(),
            verify_pass(&k, &binding(), &b, 1_000).unwrap(),
        );
        assert_ne!(
            pa.id, pb.id,
            "one rate per browser, not per network and second"
        );
        // A pass of the first version (no nonce), issued before an upgrade, verifies until
        // it expires.
        let (key_id, key) = k.signer();
        let mut raw = [0u8; PASS_LEN];
        raw[0] = VERSION;
        raw[1] = *key_id;
        raw[2..10].copy_from_slice(&2_000u64.to_le_bytes());
        let tag = mac(key, &raw[..10], &binding());
        raw[10..].copy_from_slice(&tag);
        let old = hex(&raw);
        assert!(verify_pass(&k, &binding(), &old, 1_000).is_ok());
        assert_eq!(
            verify_pass(&k, &binding(), &old, 2_000),
            Err(Reject::Expired)
        );
        // Lengths and versions that match neither are malformed.
        assert_eq!(
            verify_pass(&k, &binding(), &a[..a.len() - 2], 1_000),
            Err(Reject::Malformed)
        );
        let mut v3 = a.into_bytes();
        v3[1] = b'3';
        assert_eq!(
            verify_pass(&k, &binding(), &String::from_utf8(v3).unwrap(), 1_000),
            Err(Reject::Malformed)
        );
    }

    proptest::proptest! {
        /// A pass verifies only for its exact binding and before its expiry, and any single
        /// changed character makes it worthless.
        #[test]
        fn passes_are_bound_and_tamper_proof(
            tenant in 0u64..4, prefix in 0u128..4, fingerprint in 0u64..4,
            other in (0u64..4, 0u128..4, 0u64..4),
            expires in 1u64..1_000_000, now in 0u64..2_000_000,
            flip in 0usize..68, digit in 0u8..16, nonce in 0u64..u64::MAX,
        ) {
            let k = keys();
            let b = Binding { tenant, prefix, fingerprint };
            let value = issue_pass(&k, &b, expires, nonce);
            let ok = verify_pass(&k, &b, &value, now);
            proptest::prop_assert_eq!(ok.is_ok(), now < expires);
            let o = Binding { tenant: other.0, prefix: other.1, fingerprint: other.2 };
            if o != b {
                proptest::prop_assert!(verify_pass(&k, &o, &value, 0).is_err());
            }
            let mut chars: Vec<u8> = value.into_bytes();
            let replacement = b"0123456789abcdef"[usize::from(digit)];
            if chars[flip] != replacement {
                chars[flip] = replacement;
                let tampered = String::from_utf8(chars).unwrap();
                proptest::prop_assert!(verify_pass(&k, &b, &tampered, 0).is_err());
            }
        }
    }

    #[test]
    fn cookie_is_found_among_others() {
        let headers: Vec<&[u8]> = vec![b"a=1; b=2", b"x=y;  rempart_pass=abc ; z=1"];
        assert_eq!(find_cookie(headers.into_iter()), Some("abc"));
        let none: Vec<&[u8]> = vec![b"rempart_passx=1", b"\xff"];
        assert_eq!(find_cookie(none.into_iter()), None);
    }
}
