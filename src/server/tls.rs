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

impl ResolvesServerCert for TenantCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let gw = self.gateway.upgrade()?;
        gw.current().config.certificate_for(hello.server_name())
    }
}

/// Builds the acceptor's configuration.
pub fn server_config(gateway: &Arc<Gateway>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(TenantCertResolver {
            gateway: Arc::downgrade(gateway),
        }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
