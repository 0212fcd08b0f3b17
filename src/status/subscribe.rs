//! Residents' e-mail subscriptions, pure parts: the subscriber record (only the address,
//! the chosen components and the language are kept), double opt-in and one-click
//! unsubscribe tokens (HMAC of the subscriber id under a secret kept in the database, so no
//! token is stored), address checks, and the limits that stop the form from being used to
//! mail-bomb someone.

use std::collections::HashMap;

use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::config::runtime::Language;

/// One subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscriber {
    /// Identifier.
    pub id: u64,
    /// Tenant id.
    pub tenant: String,
    /// The address (personal data: never logged).
    pub email: String,
    /// Components followed (empty = all).
    pub components: Vec<String>,
    /// Language of messages.
    pub lang: String,
    /// Confirmed by the link in the first message.
    pub confirmed: bool,
    /// Unix seconds.
    pub created_at: u64,
}

impl Subscriber {
    /// Language of messages.
    pub fn language(&self) -> Language {
        if self.lang == "en" {
            Language::En
        } else {
            Language::Fr
        }
    }

    /// Whether an update about `components` concerns this subscriber.
    pub fn follows(&self, components: &[String]) -> bool {
        self.components.is_empty()
            || components.is_empty()
            || components.iter().any(|c| self.components.contains(c))
    }
}

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Double opt-in.
    Confirm,
    /// One-click unsubscribe.
    Unsubscribe,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Confirm => b"confirm",
            Purpose::Unsubscribe => b"unsubscribe",
        }
    }
}

/// Makes and checks tokens.
pub struct Tokens {
    key: hmac::Key,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(<secret>)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    /// Tokens under `secret` (32 random bytes kept in the database).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The token of subscriber `id` for `purpose`: `<id>.<mac>`.
    pub fn make(&self, id: u64, purpose: Purpose) -> String {
        let mut msg = purpose.tag().to_vec();
        msg.extend_from_slice(&id.to_be_bytes());
        let tag = hmac::sign(&self.key, &msg);
        format!("{id}.{}", hex(&tag.as_ref()[..16]))
    }

    /// The subscriber id a token names, when it is genuine.
    pub fn check(&self, token: &str, purpose: Purpose) -> Option<u64> {
        let (id, mac) = token.split_once('.')?;
        let id: u64 = id.parse().ok()?;
        if mac.len() != 32 {
            return None;
        }
        let expected = self.make(id, purpose);
        // Constant-time comparison.
        use subtle::ConstantTimeEq;
        bool::from(expected.as_bytes().ct_eq(format!("{id}.{mac}").as_bytes())).then_some(id)
    }
}

/// Whether `s` looks like a deliverable address (one `@`, a dotted domain, no spaces or
/// control characters, at most 254 bytes).
pub fn valid_email(s: &str) -> bool {
    if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && s.parse::<lettre::Address>().is_ok()
}

/// Limits on confirmation messages: one per address per `per_address_s`, and at most
/// `per_minute` per tenant, so the form cannot be used to flood a mailbox or the server.
#[derive(Debug)]
pub struct SendLimits {
    per_address_s: u64,
    per_minute: u32,
    last_by_address: HashMap<[u8; 16], u64>,
    minute: u64,
    sent_this_minute: HashMap<String, u32>,
}

impl SendLimits {
    /// New limits.
    pub fn new(per_address_s: u64, per_minute: u32) -> Self {
        Self {
            per_address_s,
            per_minute,
            last_by_address: HashMap::new(),
            minute: 0,
            sent_this_minute: HashMap::new(),
        }
    }

    /// Whether a confirmation to `email` for `tenant` may go at `now`; records it when so.
    pub fn allow(&mut self, tenant: &str, email: &str, now: u64) -> bool {
        let d = ring::digest::digest(&ring::digest::SHA256, email.to_ascii_lowercase().as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&d.as_ref()[..16]);
        if now / 60 != self.minute {
            self.minute = now / 60;
            self.sent_this_minute.clear();
            let horizon = now.saturating_sub(self.per_address_s);
            self.last_by_address.retain(|_, t| *t > horizon);
        }
        if self
            .last_by_address
            .get(&key)
            .is_some_and(|t| now < t + self.per_address_s)
        {
            return false;
        }
        let count = self.sent_this_minute.entry(tenant.to_owned()).or_insert(0);
        if *count >= self.per_minute {
            return false;
        }
        *count += 1;
        self.last_by_address.insert(key, now);
        true
    }
}

/// A short, non-reversible label of an address for logs.
pub fn log_label(email: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, email.to_ascii_lowercase().as_bytes());
    format!("sha256:{}", hex(&d.as_ref()[..6]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_id_and_purpose() {
        let t = Tokens::new(&[7u8; 32]);
        let c = t.make(42, Purpose::Confirm);
        assert_eq!(t.check(&c, Purpose::Confirm), Some(42));
        assert_eq!(t.check(&c, Purpose::Unsubscribe), None);
        let forged = c.replacen("42.", "43.", 1);
        assert_eq!(t.check(&forged, Purpose::Confirm), None);
        assert_eq!(Tokens::new(&[8u8; 32]).check(&c, Purpose::Confirm), None);
        assert_eq!(t.check("nope", Purpose::Confirm), None);
        assert_eq!(t.check("1.zz", Purpose::Confirm), None);
    }

    #[test]
    fn addresses() {
        assert!(valid_email("marie.dupont@exemple.fr"));
        assert!(!valid_email("marie dupont@exemple.fr"));
        assert!(!valid_email("marie@localhost"));
        assert!(!valid_email("@exemple.fr"));
        assert!(!valid_email("a@b@exemple.fr"));
        assert!(!valid_email("a@exemple.fr\r\nBcc: x@y.fr"));
    }

    #[test]
    fn send_limits() {
        let mut l = SendLimits::new(600, 2);
        assert!(l.allow("v", "a@x.fr", 1000));
        assert!(
            !l.allow("v", "A@x.fr", 1001),
            "same address within the cooldown"
        );
        assert!(l.allow("v", "b@x.fr", 1002));
        assert!(!l.allow("v", "c@x.fr", 1003), "tenant cap per minute");
        assert!(l.allow("v", "c@x.fr", 1060));
        assert!(l.allow("v", "a@x.fr", 1601));
    }

    #[test]
    fn following() {
        let mut s = Subscriber {
            id: 1,
            tenant: "v".into(),
            email: "a@x.fr".into(),
            components: vec![],
            lang: "fr".into(),
            confirmed: true,
            created_at: 0,
        };
        assert!(s.follows(&["ecoles".into()]));
        s.components = vec!["etat-civil".into()];
        assert!(!s.follows(&["ecoles".into()]));
        assert!(s.follows(&["ecoles".into(), "etat-civil".into()]));
        assert!(s.follows(&[]));
    }
}
