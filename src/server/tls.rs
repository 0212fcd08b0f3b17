//! TLS termination: one rustls `ServerConfig` (ring provider, ALPN h2 + http/1.1) whose
//! certificate resolver asks the current configuration generation, so a reload changes
//! certificates without touching listeners.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::pipeline::Gateway;

/// Picks the tenant certificate by SNI from the gateway's current generation.
#[derive(Debug)]
struct TenantCertResolver {
    gateway: std::sync::Weak<Gateway>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gateway")
    }
}

/// The protocol of TLS-ALPN-01 validations (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl ResolvesServerCert for TenantCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let gw = self.gateway.upgrade()?;
        let generation = gw.current();
        // An ACME authority checking a TLS-ALPN-01 proof offers only `acme-tls/1`.
        if hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
        {
            return generation.acme.alpn_certificate(hello.server_name()?);
        }
        generation.certificate_for(hello.server_name())
    }
}

/// Builds the acceptor's configuration.
pub fn server_config(gateway: &Arc<Gateway>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first, at each version, chosen by the server: its handshake hashes with
    // SHA-256 (SHA-NI on current x86 and ARMv8 CPUs) where AES-256's SHA-384 runs in
    // software, 11 % of a resumed handshake's CPU here. It is the suite browsers ask for
    // first and Mozilla's first choice; OpenSSL clients (curl, most bots) ask for AES-256
    // first. All the default suites stay on offer (ChaCha20 for a client with no other).
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(TenantCertResolver {
            gateway: Arc::downgrade(gateway),
        }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    cfg.ignore_client_order = true;
    // Resumption by session tickets (stateless, keys made at random per process and
    // rotated every 6 hours by rustls; resumed TLS 1.3 handshakes still agree a fresh
    // key, and early data stays off). Without them rustls keeps 256 sessions in memory:
    // past a few hundred returning clients at once, each comes back to a full handshake,
    // four times the CPU of a resumed one.
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(cfg))
}
