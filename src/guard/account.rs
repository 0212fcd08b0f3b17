//! Who is asking: the account a request on a guarded route is made with, taken from the
//! request by the route's sources, first match wins: a session cookie, the HTTP Basic user,
//! the claim of a JWT bearer token verified with the configured keys (HS256 secret, or the
//! RS256/ES256 keys of a JWKS file), or a header set by the town's single sign-on in front
//! (believed only from a trusted proxy).
//!
//! An account is kept as a keyed hash of its source and value, never as the raw value (a
//! session cookie is a secret, a user name personal data). A source that is present but
//! cannot be verified (a forged, expired or unreadable token) makes the request's account
//! unknown: never trusted, never read from a later source.

use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, AUTHORIZATION, COOKIE};
use ring::hmac;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

/// An account, as a keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub u64);

/// Who a request is made by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// A known account.
    Account(AccountId),
    /// No source named an account.
    Anonymous,
    /// A source was present but could not be verified.
    Unverified,
}

/// Where an account is read from.
#[derive(Debug)]
pub enum Source {
    /// The value of this session cookie.
    Cookie(String),
    /// The user of HTTP Basic authentication.
    Basic,
    /// A claim of a JWT bearer token.
    Bearer(JwtVerifier),
    /// A header set by a trusted proxy (the single sign-on in front).
    Header(HeaderName),
}

impl Source {
    /// The source's name in configuration and the admin API.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Cookie(_) => "cookie",
            Source::Basic => "basic",
            Source::Bearer(_) => "jwt",
            Source::Header(_) => "header",
        }
    }

    fn tag(&self) -> u8 {
        source_tag(self.name()).unwrap_or(0)
    }
}

/// Verifies JWT bearer tokens and reads their account claim.
#[derive(Debug)]
pub struct JwtVerifier {
    keys: Vec<JwtKey>,
    /// The claim naming the account (`sub` by default).
    pub claim: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_s: u64,
}

#[derive(Debug)]
enum JwtKey {
    Hs256(hmac::Key),
    Rs256 {
        kid: Option<String>,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Es256 {
        kid: Option<String>,
        point: Vec<u8>,
    },
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

impl JwtVerifier {
    /// A verifier of HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8], claim: &str) -> Self {
        Self {
            keys: vec![JwtKey::Hs256(hmac::Key::new(hmac::HMAC_SHA256, secret))],
            claim: claim.to_owned(),
            leeway_s: 60,
        }
    }

    /// A verifier of RS256 and ES256 tokens signed with the keys of a JWKS document
    /// (`{"keys": [...]}`): RSA keys (`n`, `e`) and P-256 keys (`x`, `y`). `Err` names what is
    /// wrong with the document.
    pub fn from_jwks(jwks: &str, claim: &str) -> Result<Self, String> {
        let doc: serde_json::Value =
            serde_json::from_str(jwks).map_err(|e| format!("not JSON: {e}"))?;
        let list = doc["keys"]
            .as_array()
            .ok_or("no `keys` array (a JWKS document is {\"keys\": [...]})")?;
        let mut keys = Vec::new();
        for (i, k) in list.iter().enumerate() {
            let field = |name: &str| {
                k[name]
                    .as_str()
                    .and_then(b64)
                    .ok_or(format!("keys[{i}]: missing or invalid `{name}`"))
            };
            let kid = k["kid"].as_str().map(str::to_owned);
            match (k["kty"].as_str(), k["crv"].as_str()) {
                (Some("RSA"), _) => keys.push(JwtKey::Rs256 {
                    kid,
                    n: field("n")?,
                    e: field("e")?,
                }),
                (Some("EC"), Some("P-256")) => {
                    let (x, y) = (field("x")?, field("y")?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err(format!("keys[{i}]: `x` and `y` must be 32 bytes"));
                    }
                    let mut point = vec![4u8];
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    keys.push(JwtKey::Es256 { kid, point });
                }
                (kty, crv) => {
                    let what = format!("kty {kty:?}, crv {crv:?}");
                    return Err(format!(
                        "keys[{i}]: unsupported key ({what}); RSA and EC P-256 are"
                    ));
                }
            }
        }
        if keys.is_empty() {
            return Err("no key".into());
        }
        Ok(Self {
            keys,
            claim: claim.to_owned(),
            leeway_s: 60,
        })
    }

    /// The account claim of `token` when its signature verifies with one of the keys, its
    /// algorithm is the key's (never `none`), and it is within `exp`/`nbf` at `now_s`.
    pub fn verify(&self, token: &str, now_s: u64) -> Option<String> {
        let mut parts = token.split('.');
        let (header, payload, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let head: serde_json::Value = serde_json::from_slice(&b64(header)?).ok()?;
        let alg = head["alg"].as_str()?;
        let kid = head["kid"].as_str();
        let signed = &token[..header.len() + 1 + payload.len()];
        let sig = b64(sig)?;
        let verified = self.keys.iter().any(|key| match (key, alg) {
            (JwtKey::Hs256(k), "HS256") => hmac::verify(k, signed.as_bytes(), &sig).is_ok(),
            (JwtKey::Rs256 { kid: k, n, e }, "RS256") if kid.is_none() || k.as_deref() == kid => {
                RsaPublicKeyComponents { n, e }
                    .verify(
                        &signature::RSA_PKCS1_2048_8192_SHA256,
                        signed.as_bytes(),
                        &sig,
                    )
                    .is_ok()
            }
            (JwtKey::Es256 { kid: k, point }, "ES256") if kid.is_none() || k.as_deref() == kid => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed.as_bytes(), &sig)
                    .is_ok()
            }
            _ => false,
        });
        if !verified {
            return None;
        }
        let claims: serde_json::Value = serde_json::from_slice(&b64(payload)?).ok()?;
        if let Some(exp) = claims.get("exp") {
            if exp.as_u64()?.saturating_add(self.leeway_s) < now_s {
                return None;
            }
        }
        if let Some(nbf) = claims.get("nbf") {
            if nbf.as_u64()? > now_s.saturating_add(self.leeway_s) {
                return None;
            }
        }
        match &claims[self.claim.as_str()] {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` fields.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .map(<[u8]>::trim_ascii)
        .find_map(|pair| {
            let rest = pair.strip_prefix(name.as_bytes())?;
            rest.strip_prefix(b"=").filter(|v| !v.is_empty())
        })
}

/// The value after `scheme ` in `Authorization` (scheme case-insensitive).
fn authorization<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest.trim())
}

/// The tag of the source named `name` in the admin API and the CLI (`cookie`, `basic`,
/// `jwt`, `header`, `origin`), to find an account by its name.
pub fn source_tag(name: &str) -> Option<u8> {
    Some(match name {
        "cookie" => 1,
        "basic" => 2,
        "jwt" => 3,
        "header" => 4,
        "origin" => TAG_ORIGIN,
        _ => return None,
    })
}

/// Tag of an account named by the origin's answer (`AccountId::keyed`).
pub const TAG_ORIGIN: u8 = 5;
/// Tag of the bucket of a client prefix without an account.
pub const TAG_ANONYMOUS: u8 = 6;
/// Tag of the bucket of a client prefix whose account could not be verified.
pub const TAG_UNVERIFIED: u8 = 7;

impl AccountId {
    /// The keyed hash of `value` read by the source tagged `tag`.
    pub fn keyed(key: &hmac::Key, tag: u8, value: &[u8]) -> Self {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(&[tag]);
        ctx.update(value);
        let tag = ctx.sign();
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&tag.as_ref()[..8]);
        AccountId(u64::from_le_bytes(eight))
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for AccountId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 16 {
            return Err(());
        }
        u64::from_str_radix(s, 16).map(AccountId).map_err(|_| ())
    }
}

/// Longest label kept for an account (characters).
const MAX_LABEL: usize = 64;

/// The request's identity under `sources` (first one present wins). `trusted`: the request
/// comes from a trusted proxy (only then is a `Header` source read). `key` keys the hashes.
pub fn identify(
    sources: &[Source],
    headers: &HeaderMap,
    trusted: bool,
    now_s: u64,
    key: &hmac::Key,
) -> Identity {
    identify_labelled(sources, headers, trusted, now_s, key).identity
}

/// A request's identity, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    /// Who.
    pub identity: Identity,
    /// The source that decided (`Source::name`), if one did.
    pub source: Option<&'static str>,
    /// The account's name for operators when the source gives one (the Basic user, the
    /// token's claim, the single sign-on's header; never a session cookie, which is a
    /// secret), cut to 64 characters. Shown only through the admin API, never logged.
    pub label: Option<String>,
}

/// `identify`, with the source that decided and the account's name for operators.
pub fn identify_labelled(
    sources: &[Source],
    headers: &HeaderMap,
    trusted: bool,
    now_s: u64,
    key: &hmac::Key,
) -> Identified {
    for source in sources {
        let value: Option<Result<Vec<u8>, ()>> = match source {
            Source::Cookie(name) => cookie(headers, name).map(|v| Ok(v.to_vec())),
            Source::Basic => authorization(headers, "Basic").map(|b| {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|_| ())?;
                let user = decoded.split(|c| *c == b':').next().unwrap_or_default();
                if user.is_empty() {
                    Err(())
                } else {
                    Ok(user.to_vec())
                }
            }),
            Source::Bearer(verifier) => authorization(headers, "Bearer")
                .map(|t| verifier.verify(t, now_s).map(String::into_bytes).ok_or(())),
            Source::Header(name) if trusted => headers
                .get(name)
                .map(|v| Ok(v.as_bytes().to_vec()))
                .filter(|v| v.as_ref().is_ok_and(|b| !b.is_empty())),
            Source::Header(_) => None,
        };
        match value {
            None => continue,
            Some(Err(())) => {
                return Identified {
                    identity: Identity::Unverified,
                    source: Some(source.name()),
                    label: None,
                }
            }
            Some(Ok(v)) => {
                let id = AccountId::keyed(key, source.tag(), &v);
                let label = match source {
                    Source::Cookie(_) => None,
                    _ => Some(
                        String::from_utf8_lossy(&v)
                            .chars()
                            .take(MAX_LABEL)
                            .collect(),
                    ),
                };
                return Identified {
                    identity: Identity::Account(id),
                    source: Some(source.name()),
                    label,
                };
            }
        }
    }
    Identified {
        identity: Identity::Anonymous,
        source: None,
        label: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn enc(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn hs256_token(secret: &[u8], header: &str, claims: &str) -> String {
        let signed = format!("{}.{}", enc(header.as_bytes()), enc(claims.as_bytes()));
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret),
            signed.as_bytes(),
        );
        format!("{signed}.{}", enc(tag.as_ref()))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"journal key of this gateway......")
    }

    #[test]
    fn hs256_tokens_verify_and_forgeries_do_not() {
        let v = JwtVerifier::hs256(b"secret of the town's SSO", "sub");
        let good = hs256_token(
            b"secret of the town's SSO",
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"sub":"agent-042","exp":2000}"#,
        );
        assert_eq!(v.verify(&good, 1_000).as_deref(), Some("agent-042"));
        // Expired (beyond the leeway), forged with another secret, `alg: none`, tampered.
        assert_eq!(v.verify(&good, 2_100), None);
        let forged = hs256_token(b"guess", r#"{"alg":"HS256"}"#, r#"{"sub":"maire"}"#);
        assert_eq!(v.verify(&forged, 1_000), None);
        let none = format!(
            "{}.{}.",
            enc(br#"{"alg":"none"}"#),
            enc(br#"{"sub":"maire"}"#)
        );
        assert_eq!(v.verify(&none, 1_000), None);
        let mut parts: Vec<&str> = good.split('.').collect();
        let other = enc(br#"{"sub":"maire","exp":2000}"#);
        parts[1] = &other;
        assert_eq!(v.verify(&parts.join("."), 1_000), None);
        assert_eq!(v.verify("a.b", 1_000), None);
    }

    #[test]
    fn es256_tokens_verify_with_a_jwks() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        use signature::KeyPair as _;
        let public = pair.public_key().as_ref();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}"}}]}}"#,
            enc(&public[1..33]),
            enc(&public[33..65])
        );
        let v = JwtVerifier::from_jwks(&jwks, "sub").unwrap();
        let signed = format!(
            "{}.{}",
            enc(br#"{"alg":"ES256","kid":"k1"}"#),
            enc(br#"{"sub":"conseillere-7"}"#)
        );
        let sig = pair.sign(&rng, signed.as_bytes()).unwrap();
        let token = format!("{signed}.{}", enc(sig.as_ref()));
        assert_eq!(v.verify(&token, 0).as_deref(), Some("conseillere-7"));
        // The same token claiming HS256 with the public key as secret: refused.
        let confused = format!(
            "{}.{}",
            enc(br#"{"alg":"HS256","kid":"k1"}"#),
            enc(br#"{"sub":"conseillere-7"}"#)
        );
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, public),
            confused.as_bytes(),
        );
        assert_eq!(
            v.verify(&format!("{confused}.{}", enc(tag.as_ref())), 0),
            None
        );
        assert!(
            JwtVerifier::from_jwks(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#, "sub").is_err()
        );
        assert!(JwtVerifier::from_jwks("[]", "sub").is_err());
    }

    #[test]
    fn first_source_present_wins_and_raw_values_are_never_kept() {
        let sso = HeaderName::from_static("x-remote-user");
        let sources = [
            Source::Bearer(JwtVerifier::hs256(b"s", "sub")),
            Source::Cookie("PHPSESSID".into()),
            Source::Basic,
            Source::Header(sso.clone()),
        ];
        let id = |pairs: &[(&str, &str)], trusted| {
            identify(&sources, &headers(pairs), trusted, 0, &key())
        };
        let session = id(&[("cookie", "lang=fr; PHPSESSID=abc123")], false);
        assert!(matches!(session, Identity::Account(_)));
        assert_eq!(session, id(&[("cookie", "PHPSESSID=abc123")], false));
        assert_ne!(session, id(&[("cookie", "PHPSESSID=abc124")], false));
        // Basic: the user, whatever the password.
        let basic = |pw: &str| {
            let v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("agent:{pw}"))
            );
            id(&[("authorization", &v)], false)
        };
        assert_eq!(basic("a"), basic("b"));
        // A bearer token that does not verify: unverified, the cookie is not read.
        assert_eq!(
            id(
                &[
                    ("authorization", "Bearer x.y.z"),
                    ("cookie", "PHPSESSID=abc123")
                ],
                false
            ),
            Identity::Unverified
        );
        // The SSO header only from a trusted proxy.
        assert_eq!(
            id(&[("x-remote-user", "agent")], false),
            Identity::Anonymous
        );
        assert!(matches!(
            id(&[("x-remote-user", "agent")], true),
            Identity::Account(_)
        ));
        // The same value through two sources is two accounts.
        assert_ne!(
            id(&[("x-remote-user", "abc123")], true),
            id(&[("cookie", "PHPSESSID=abc123")], false)
        );
        assert_eq!(id(&[], true), Identity::Anonymous);
    }

    /// An RSA key and a token it signed (made for this test with `openssl genrsa 2048` and
    /// `openssl dgst -sha256 -sign`).
    const RSA_N: &str = "neJ87bBXd5HLJUbmBVLgmfLSQpPlOkgGGRm94P38Ehj3Ff4j4V2fcjzLGuvBzyofqOrghup1vrU55pQijnOT9YjQ-2n1r3oT9M8E40F56RiDpB9h24loadOucUfoSgtDDK-pq2fO3waXnKjl68sWWnWblOUr3Rog1I22FKS66z8hgRBlWvJqZnmpR2zxzM077ZImRtw_e7qQcNaO9NBhG2_SDEVKGYTRCeoUqvoWmeC8Qb6jHj7-xuKVDCv6ayRNOgBvthSZjJt08Zbd-WvfyFbG88IDY6ClldWhjAzM_tRJ39lX7V5F_-h8G64aEsD3tmW3uIR05eEMoxhfX4iJhQ";
    const RSA_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InIxIn0.eyJzdWIiOiJhZ2VudC1yc2EiLCJleHAiOjQxMDI0NDQ4MDB9.EtB5i4Xjm8u9rkkbM_zcsA211XroST-OuM1nPyB-nvdqf7o8HwlKjS8Uu1Be6ZdP2-CbQqqFuPdoX1Ct1SnaUDw7adgw3opmkZWVQXSZp9FcKorsu-vgOoQzyT0RFvJNNeyauf9t1U6wftrqjiMWmg9YZQkkuvIoedBw-QI5bfxwQUCQF0WrJYZ7bbU4qL2lJHjqyU29-mLPsNpwgFLWq3-aX9qoDPaWzwoe6TfURQWRRvsW0O039Sn2DbyFxT2JCsg_Ghq0ot3ph44NKcaITjHwYuApdEh6TzBg-xL5MTQzt12Le_emwso6saozbgNHZsGS98wpLNwhpxbS6pDJFQ";

    #[test]
    fn rs256_tokens_verify_with_a_jwks() {
        let jwks = format!(r#"{{"keys":[{{"kty":"RSA","kid":"r1","n":"{RSA_N}","e":"AQAB"}}]}}"#);
        let v = JwtVerifier::from_jwks(&jwks, "sub").unwrap();
        assert_eq!(v.verify(RSA_TOKEN, 1_000).as_deref(), Some("agent-rsa"));
        // Another key id is not tried; a flipped signature byte fails.
        let other = jwks.replace("\"r1\"", "\"r2\"");
        assert_eq!(
            JwtVerifier::from_jwks(&other, "sub")
                .unwrap()
                .verify(RSA_TOKEN, 1_000),
            None
        );
        // A signature byte changed (a character well inside the signature).
        let at = RSA_TOKEN.len() - 10;
        let flipped = if &RSA_TOKEN[at..=at] == "A" { "B" } else { "A" };
        let bad = format!("{}{flipped}{}", &RSA_TOKEN[..at], &RSA_TOKEN[at + 1..]);
        assert_eq!(v.verify(&bad, 1_000), None);
    }
}
