//! TLS: a certificate per tenant chosen by SNI, ALPN h2 and http/1.1.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::support::*;

fn cert(dir: &std::path::Path, name: &str) -> CertificateDer<'static> {
    let ck =
        rcgen::generate_simple_self_signed(vec![name.to_owned(), format!("*.{name}")]).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), ck.cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), ck.key_pair.serialize_pem()).unwrap();
    ck.cert.der().clone()
}

async fn connect(
    addr: std::net::SocketAddr,
    sni: &str,
    roots: &[CertificateDer<'static>],
    alpn: &[u8],
) -> (tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>) {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, leaf)
}

#[tokio::test]
async fn sni_selects_each_tenants_certificate_with_h1_and_h2() {
    let origin_v = Origin::start("ville").await;
    let origin_a = Origin::start("agglo").await;
    let certs = tempfile::tempdir().unwrap();
    let ville = cert(certs.path(), "ville.test");
    let agglo = cert(certs.path(), "agglo.test");
    let d = certs.path().display();
    let config = format!(
        r#"[[listeners]]
address = "127.0.0.1:0"
protocol = "https"

[[tenants]]
id = "ville"
name = "Ville"
hosts = ["ville.test", "*.ville.test"]
tls = {{ cert = "{d}/ville.test.pem", key = "{d}/ville.test.key" }}
[[tenants.pools]]
name = "web"
servers = [{{ address = "{}" }}]
[[tenants.routes]]
pool = "web"

[[tenants]]
id = "agglo"
name = "Agglo"
hosts = ["agglo.test"]
tls = {{ cert = "{d}/agglo.test.pem", key = "{d}/agglo.test.key" }}
[[tenants.pools]]
name = "web"
servers = [{{ address = "{}" }}]
[[tenants.routes]]
pool = "web"
"#,
        origin_v.addr, origin_a.addr
    );
    let gw = Gw::start(&config).await;
    let roots = [ville.clone(), agglo.clone()];

    // HTTP/1.1 over TLS, SNI ville.test.
    let (tls, leaf) = connect(gw.addr, "www.ville.test", &roots, b"http/1.1").await;
    assert_eq!(leaf, ville.to_vec());
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/headers")
        .header("host", "www.ville.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers.get("x-origin").unwrap(), "ville");
    let seen: std::collections::HashMap<String, String> = serde_json::from_str(&got.body).unwrap();
    assert_eq!(seen["x-forwarded-proto"], "https");

    // HTTP/2 over TLS, SNI agglo.test.
    let (tls, leaf) = connect(gw.addr, "agglo.test", &roots, b"h2").await;
    assert_eq!(leaf, agglo.to_vec());
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://agglo.test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let got = collect(resp).await;
    assert_eq!((got.status, got.body.as_str()), (200, "hello from agglo"));
}

/// One GET over a fresh TLS connection whose ClientHello offers only `suites`; the status.
async fn get_with_suites(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    suites: Vec<rustls::SupportedCipherSuite>,
) -> u16 {
    let mut store = rustls::RootCertStore::empty();
    store.add(root.clone()).unwrap();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::ring::default_provider()
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("ville.test").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .header("host", "ville.test")
        .header("user-agent", "Mozilla/5.0")
        .header("accept", "text/html")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send.send_request(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn fingerprint_limit_follows_the_tls_client_not_the_address() {
    let origin = Origin::start("ville").await;
    let certs = tempfile::tempdir().unwrap();
    let root = cert(certs.path(), "ville.test");
    let d = certs.path().display();
    let config = format!(
        r#"[[listeners]]
address = "127.0.0.1:0"
protocol = "https"

[limits]
max_connections_per_address = 0

[[tenants]]
id = "ville"
name = "Ville"
hosts = ["ville.test"]
tls = {{ cert = "{d}/ville.test.pem", key = "{d}/ville.test.key" }}
[[tenants.pools]]
name = "web"
servers = [{{ address = "{}" }}]
[[tenants.routes]]
pool = "web"
[tenants.shield]
fingerprint_rate = 3
"#,
        origin.addr
    );
    let gw = Gw::start(&config).await;
    use rustls::crypto::ring::cipher_suite as cs;
    let tool = || vec![cs::TLS13_AES_128_GCM_SHA256];
    let browser = || {
        vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
        ]
    };
    // One "tool" (one ClientHello shape) from the same address, new connection each time.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get_with_suites(gw.addr, &root, tool()).await);
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // Same address, same HTTP head, another TLS client: its own budget (JA4 differs).
    assert_eq!(get_with_suites(gw.addr, &root, browser()).await, 200);
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rule=\"fingerprint_rate\",action=\"limited\"} 3"),
        "{m}"
    );
    // Operators see the busiest fingerprints: a JA4 (TLS 1.3, SNI, 1 cipher suite, ALPN
    // http/1.1) and the HTTP fingerprint of the head.
    let admin = gw.running().admin_addr;
    let top = get_with(
        &h1_client(),
        admin,
        &admin.to_string(),
        "/admin/top",
        &[("authorization", &format!("Bearer {}", gw.token))],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&top.body).unwrap();
    let fp = v["fingerprints"][0]["client"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(fp.starts_with("t13d01"), "{v}");
    assert!(fp.contains(" h11ge"), "{v}");
}
