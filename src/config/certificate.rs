//! What an operator must know about a tenant's certificate before it hurts: when it expires
//! and which of the tenant's host names it does not cover. Read from the leaf certificate
//! (DER) when the configuration is loaded; pure, `now` is given.

use base64::Engine as _;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectAltName};

/// Days before expiry from which `rempart check` warns (and the shipped alert fires).
pub const EXPIRY_WARNING_DAYS: u64 = 14;

/// The facts of a leaf certificate that matter to an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
    /// DNS names of the subject alternative name extension, lower case.
    pub dns_names: Vec<String>,
    /// Its identifier for the authority's renewal information (ARI, RFC 9773 section 4.1):
    /// the authority key identifier and the serial number's DER content, both base64url,
    /// joined by a dot; `None` without an authority key identifier.
    pub ari_id: Option<String>,
}

/// The ARI identifier of `cert` (see `CertificateFacts::ari_id`).
fn ari_id(cert: &x509_cert::Certificate) -> Option<String> {
    let tbs = cert.tbs_certificate();
    let (_, aki) = tbs.get_extension::<AuthorityKeyIdentifier>().ok()??;
    let key_id = aki.key_identifier?;
    // The serial's content octets: its DER encoding without tag and length (a serial is at
    // most 20 bytes, so the length is one byte).
    let serial = tbs.serial_number().to_der().ok()?;
    let content = serial
        .get(2..)
        .filter(|c| !c.is_empty() && serial[1] < 0x80)?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Some(format!(
        "{}.{}",
        b64.encode(key_id.as_bytes()),
        b64.encode(content)
    ))
}

impl CertificateFacts {
    /// Reads the leaf certificate `der`.
    pub fn read(der: &[u8]) -> Result<Self, String> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| format!("the certificate cannot be read: {e}"))?;
        let tbs = cert.tbs_certificate();
        let validity = tbs.validity();
        let mut dns_names = Vec::new();
        if let Ok(Some((_, SubjectAltName(names)))) = tbs.get_extension::<SubjectAltName>() {
            for name in names {
                if let GeneralName::DnsName(dns) = name {
                    dns_names.push(dns.as_str().to_ascii_lowercase());
                }
            }
        }
        Ok(Self {
            not_before: validity.not_before.to_unix_duration().as_secs(),
            not_after: validity.not_after.to_unix_duration().as_secs(),
            dns_names,
            ari_id: ari_id(&cert),
        })
    }

    /// Whole days left at `now` (Unix seconds); negative once expired.
    pub fn days_left(&self, now: u64) -> i64 {
        (self.not_after as i64 - now as i64).div_euclid(86_400)
    }

    /// Whether `host` (lower case) is one of the certificate's names, a wildcard name
    /// covering one label (`*.ville.fr` covers `www.ville.fr`, not `ville.fr` nor
    /// `a.b.ville.fr`). A tenant's wildcard host needs a wildcard name.
    pub fn covers(&self, host: &str) -> bool {
        self.dns_names.iter().any(|name| {
            if name == host {
                return true;
            }
            match (name.strip_prefix("*."), host.split_once('.')) {
                (Some(parent), Some((label, rest))) => {
                    !label.is_empty() && label != "*" && rest == parent
                }
                _ => false,
            }
        })
    }

    /// What `rempart check` says about this certificate for a tenant serving `hosts` at
    /// `now`: expired, expiring within `EXPIRY_WARNING_DAYS`, not yet valid, names missing.
    pub fn warnings(&self, hosts: &[String], now: u64) -> Vec<String> {
        let mut out = Vec::new();
        let days = self.days_left(now);
        if self.not_after <= now {
            out.push(format!(
                "the certificate expired {} day(s) ago: browsers refuse it",
                (now - self.not_after) / 86_400
            ));
        } else if days < EXPIRY_WARNING_DAYS as i64 {
            out.push(format!(
                "the certificate expires in {days} day(s): renew it (certbot or lego, then `rempart reload`)"
            ));
        }
        if self.not_before > now {
            out.push("the certificate is not valid yet (check the clock)".to_owned());
        }
        let missing: Vec<&str> = hosts
            .iter()
            .filter(|h| !self.covers(&h.to_ascii_lowercase()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            out.push(format!(
                "the certificate does not cover {}: browsers refuse those names",
                missing.join(", ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(names: &[&str]) -> CertificateFacts {
        CertificateFacts {
            not_before: 1_000_000,
            not_after: 1_000_000 + 90 * 86_400,
            dns_names: names.iter().map(|s| s.to_string()).collect(),
            ari_id: None,
        }
    }

    #[test]
    fn the_ari_identifier_is_rfc_9773s_example() {
        // RFC 9773 section 4.1: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:
        // 2C:DE:01:C8:D4, serial 00:87:65:43:21 -> "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE".
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ville.fr".to_string()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x87, 0x65, 0x43, 0x21]));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![
            0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0,
            0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4,
        ]);
        let cert = params.self_signed(&key).unwrap();
        let facts = CertificateFacts::read(cert.der()).unwrap();
        assert_eq!(
            facts.ari_id.as_deref(),
            Some("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
        );
        // Without an authority key identifier there is none.
        let plain = rcgen::CertificateParams::new(vec!["ville.fr".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(CertificateFacts::read(plain.der()).unwrap().ari_id, None);
    }

    #[test]
    fn wildcards_cover_one_label_only() {
        let f = facts(&["ville.fr", "*.ville.fr"]);
        assert!(f.covers("ville.fr"));
        assert!(f.covers("www.ville.fr"));
        assert!(!f.covers("a.b.ville.fr"));
        assert!(!f.covers("autreville.fr"));
        assert!(f.covers("*.ville.fr"));
        let exact = facts(&["www.ville.fr"]);
        assert!(!exact.covers("*.ville.fr"));
        assert!(!exact.covers("ville.fr"));
    }

    #[test]
    fn warns_before_expiry_and_for_missing_names() {
        let f = facts(&["www.ville.fr"]);
        let hosts = vec!["www.ville.fr".to_string(), "Ville.fr".to_string()];
        let start = f.not_before;
        let w = f.warnings(&hosts, start);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("Ville.fr"), "{w:?}");
        let late = f.not_after - 13 * 86_400;
        let w = f.warnings(&hosts[..1], late);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("expires in 13 day(s)"), "{w:?}");
        assert!(f
            .warnings(&hosts[..1], f.not_after - 15 * 86_400)
            .is_empty());
        let w = f.warnings(&hosts[..1], f.not_after + 3 * 86_400);
        assert!(w[0].contains("expired 3 day(s) ago"), "{w:?}");
        assert!(f.warnings(&hosts[..1], start - 1)[0].contains("not valid yet"));
    }

    #[test]
    fn reads_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["www.ville.fr".into(), "*.ville.fr".into()])
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 4, 1);
        let cert = params.self_signed(&key).unwrap();
        let f = CertificateFacts::read(cert.der()).unwrap();
        assert_eq!(f.not_before, 1_767_225_600);
        assert_eq!(f.not_after, 1_775_001_600);
        assert_eq!(f.dns_names, ["www.ville.fr", "*.ville.fr"]);
        assert!(CertificateFacts::read(b"not a certificate").is_err());
    }
}
