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

/// Returning clients resume their TLS session (session tickets), however many come back at
/// once: 300 browsers connect, then connect again; every second handshake is a resumed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_returning_clients_all_resume_their_sessions() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start("ville").await;
    let certs = tempfile::tempdir().unwrap();
    let root = cert(certs.path(), "ville.test");
    let d = certs.path().display();
    let gw = Gw::start(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"https\"\n\n[limits]\nmax_connections_per_address = 0\n\n[[tenants]]\nid = \"ville\"\nname = \"Ville\"\nhosts = [\"ville.test\"]\ntls = {{ cert = \"{d}/ville.test.pem\", key = \"{d}/ville.test.key\" }}\n[[tenants.pools]]\nname = \"web\"\nservers = [{{ address = \"{}\" }}]\n[[tenants.routes]]\npool = \"web\"\n",
        origin.addr
    ))
    .await;
    let mut store = rustls::RootCertStore::empty();
    store.add(root).unwrap();
    // One request over a fresh connection; the kind of handshake it had. Reading the answer
    // to its end also reads the tickets the server sent after the handshake.
    let visit = |connector: tokio_rustls::TlsConnector| async move {
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from("ville.test").unwrap(), tcp)
            .await
            .unwrap();
        let kind = tls.get_ref().1.handshake_kind();
        tls.write_all(b"GET / HTTP/1.1\r\nhost: ville.test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        kind
    };
    let browsers: Vec<tokio_rustls::TlsConnector> = (0..300)
        .map(|_| {
            let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store.clone())
            .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
        })
        .collect();
    for b in &browsers {
        assert_eq!(visit(b.clone()).await, Some(rustls::HandshakeKind::Full));
    }
    let mut full = 0;
    for b in &browsers {
        if visit(b.clone()).await != Some(rustls::HandshakeKind::Resumed) {
            full += 1;
        }
    }
    assert_eq!(
        full, 0,
        "{full} of 300 returning clients had a full handshake again"
    );
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
    // The client asks for AES-256 first (rustls' default order, OpenSSL's too); the server
    // chooses the suite whose handshake hashes with SHA-256.
    assert_eq!(
        tls.get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|suite| suite.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
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

/// A certificate for `names` valid from `days_ago` days ago for `days` days, written as
/// `file`.pem and `file`.key in `dir`; its DER and its end of validity (Unix seconds).
fn dated_cert(
    dir: &std::path::Path,
    file: &str,
    names: &[&str],
    days: i64,
) -> (CertificateDer<'static>, u64) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Whole seconds: the certificate's dates have no fraction.
    let at = |secs: i64| {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap())
    };
    params.not_before = at(now - 86_400).into();
    let not_after = now + days * 86_400;
    params.not_after = at(not_after).into();
    let cert = params.self_signed(&key).unwrap();
    // Written to a side name, then renamed: a renewal tool's atomic replacement.
    for (ext, text) in [("pem", cert.pem()), ("key", key.serialize_pem())] {
        let tmp = dir.join(format!(".{file}.{ext}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{file}.{ext}"))).unwrap();
    }
    (cert.der().clone(), not_after as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_is_exported_warned_and_a_renewal_on_disk_is_served() {
    let origin = Origin::start("ville").await;
    let (hook, hooks) = receiver().await;
    let certs = tempfile::tempdir().unwrap();
    let (old, old_end) = dated_cert(certs.path(), "ville", &["ville.test"], 10);
    let d = certs.path().display();
    let config = format!(
        r#"[[listeners]]
address = "127.0.0.1:0"
protocol = "https"

[[tenants]]
id = "ville"
name = "Ville"
hosts = ["ville.test", "www.ville.test"]
tls = {{ cert = "{d}/ville.pem", key = "{d}/ville.key" }}
[[tenants.pools]]
name = "web"
servers = [{{ address = "{}" }}]
[[tenants.routes]]
pool = "web"

[[watch.alerts]]
name = "astreinte"
kind = "webhook"
url = "http://{hook}/certificats"
"#,
        origin.addr
    );
    let gw = Gw::start_with(&config, watching_options()).await;
    // The on-call webhook hears of it from the start: 10 days left (or 9 whole days and
    // some hours, a moment later).
    let told = |event: &'static str| {
        let hooks = hooks.clone();
        async move {
            hooks.lock().unwrap().iter().find_map(|(path, _, body)| {
                let v: serde_json::Value = serde_json::from_str(body).ok()?;
                (path == "/certificats" && v["event"] == event).then_some(v)
            })
        }
    };
    assert!(
        eventually(std::time::Duration::from_secs(20), || async {
            told("watch.certificate.expiring").await.is_some()
        })
        .await,
        "no reminder"
    );
    let reminder = told("watch.certificate.expiring").await.unwrap();
    let alert = &reminder["incident"];
    assert_eq!(alert["certificate"]["tenant"], "ville", "{reminder}");
    let days = alert["certificate"]["days_left"].as_i64();
    assert!(matches!(days, Some(9 | 10)), "{reminder}");
    assert_eq!(alert["certificate"]["not_after_s"], old_end, "{reminder}");
    assert_eq!(alert["level"], "orange", "{reminder}");
    let (_, leaf) = connect(
        gw.addr,
        "ville.test",
        std::slice::from_ref(&old),
        b"http/1.1",
    )
    .await;
    assert_eq!(leaf, old.to_vec());
    let expiry = |m: &str| -> Option<u64> {
        m.lines()
            .find_map(|l| {
                l.strip_prefix(
                    "rempart_tls_certificate_expiry_timestamp_seconds{tenant=\"ville\"} ",
                )
            })
            .map(|v| v.parse().unwrap())
    };
    let m = crate::health::admin_metrics(&gw).await;
    assert_eq!(expiry(&m), Some(old_end), "{m}");

    // `rempart check` accepts the file and says what will hurt: 10 days left, a host name the
    // certificate does not cover.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rempart"))
        .args(["check", "--config"])
        .arg(&gw.path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // 10 days at the certificate's making, a moment less now.
    assert!(
        ["9", "10"].iter().any(|days| stderr.contains(&format!(
            "tenants.ville.tls: the certificate expires in {days} day(s)"
        ))),
        "{stderr}"
    );
    assert!(stderr.contains("does not cover www.ville.test"), "{stderr}");

    // certbot renews: both files replaced on disk. The gateway serves the new certificate
    // and exports its date without being told.
    let (new, new_end) = dated_cert(certs.path(), "ville", &["ville.test", "www.ville.test"], 90);
    assert!(
        eventually(std::time::Duration::from_secs(15), || async {
            expiry(&crate::health::admin_metrics(&gw).await) == Some(new_end)
        })
        .await
    );
    let (_, leaf) = connect(
        gw.addr,
        "www.ville.test",
        std::slice::from_ref(&new),
        b"http/1.1",
    )
    .await;
    assert_eq!(leaf, new.to_vec());
    // And the on-call webhook hears the all-clear, once.
    assert!(
        eventually(std::time::Duration::from_secs(20), || async {
            told("watch.certificate.renewed").await.is_some()
        })
        .await,
        "no all-clear"
    );
    let renewed = told("watch.certificate.renewed").await.unwrap();
    assert_eq!(
        renewed["incident"]["certificate"]["not_after_s"], new_end,
        "{renewed}"
    );
    let expiring = hooks
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, b)| b.contains("watch.certificate.expiring"))
        .count();
    assert_eq!(expiring, 1, "the reminder was told more than once");

    // A key that is not the certificate's (half a renewal copied) is refused with its
    // reason; the renewed pair keeps serving.
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(certs.path().join("ville.key"), other.serialize_pem()).unwrap();
    let (status, body) = gw.admin_reload().await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("does not belong to the certificate"),
        "{body}"
    );
    let m = crate::health::admin_metrics(&gw).await;
    assert_eq!(expiry(&m), Some(new_end));
}

/// One GET over a fresh TLS connection (HTTP/1.1): status and fields.
async fn https_get(
    addr: std::net::SocketAddr,
    host: &str,
    roots: &[CertificateDer<'static>],
    path: &str,
) -> (u16, http::HeaderMap) {
    let (tls, _) = connect(addr, host, roots, b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    (resp.status().as_u16(), resp.headers().clone())
}

#[tokio::test]
async fn plain_http_goes_to_https_and_https_answers_carry_hsts() {
    let origin = Origin::start("ville").await;
    let certs = tempfile::tempdir().unwrap();
    let ville = cert(certs.path(), "ville.test");
    let agglo = cert(certs.path(), "agglo.test");
    let d = certs.path().display();
    let https_port = closed_port().await.port();
    let config = format!(
        r#"[[listeners]]
address = "127.0.0.1:0"

[[listeners]]
name = "https"
address = "127.0.0.1:{https_port}"
protocol = "https"

[[tenants]]
id = "ville"
name = "Ville"
hosts = ["ville.test"]
tls = {{ cert = "{d}/ville.test.pem", key = "{d}/ville.test.key" }}
[[tenants.pools]]
name = "web"
servers = [{{ address = "{o}" }}]
[[tenants.routes]]
pool = "web"

[[tenants]]
id = "agglo"
name = "Agglo"
hosts = ["agglo.test"]
tls = {{ cert = "{d}/agglo.test.pem", key = "{d}/agglo.test.key" }}
https_redirect = false
hsts_max_age = "730d"
hsts_include_subdomains = true
hsts_preload = true
[[tenants.pools]]
name = "web"
servers = [{{ address = "{o}" }}]
[[tenants.routes]]
pool = "web"
"#,
        o = origin.addr
    );
    let gw = Gw::start(&config).await;
    let http = gw.running().listen_addrs[0];
    let https = gw.running().listen_addrs[1];
    let c = h1_client();

    // HTTPS by default for a tenant with a certificate: 308 keeps the method and the target.
    let got = get(&c, http, "ville.test", "/actes/naissance?annee=2024").await;
    assert_eq!(got.status, 308);
    assert_eq!(
        got.headers.get("location").unwrap(),
        &format!("https://ville.test:{https_port}/actes/naissance?annee=2024")
    );
    // What a certificate authority checks over HTTP is never redirected.
    let challenge = get(&c, http, "ville.test", "/.well-known/acme-challenge/abc").await;
    assert_eq!(challenge.status, 200);
    assert_eq!(challenge.body, "hello from ville");
    // A tenant may keep plain HTTP.
    let plain = get(&c, http, "agglo.test", "/").await;
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (200, "hello from ville")
    );
    assert!(plain.headers.get("strict-transport-security").is_none());

    // Over HTTPS: the origin's answers and Rempart's own pages carry the tenant's HSTS.
    let (status, fields) = https_get(https, "ville.test", std::slice::from_ref(&ville), "/").await;
    assert_eq!(status, 200);
    assert_eq!(
        fields.get("strict-transport-security").unwrap(),
        "max-age=31536000"
    );
    let (status, fields) = https_get(
        https,
        "ville.test",
        std::slice::from_ref(&ville),
        "/.rempart/pow.js",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        fields.get("strict-transport-security").unwrap(),
        "max-age=31536000"
    );
    let (_, fields) = https_get(https, "agglo.test", &[agglo], "/").await;
    assert_eq!(
        fields.get("strict-transport-security").unwrap(),
        "max-age=63072000; includeSubDomains; preload"
    );
}

#[test]
fn https_settings_that_would_fail_residents_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    cert(certs.path(), "ville.test");
    let d = certs.path().display();
    let cases = [
        (
            format!("tls = {{ cert = \"{d}/ville.test.pem\", key = \"{d}/ville.test.key\" }}\nhsts_preload = true\n"),
            "hsts_preload",
        ),
        ("https_redirect = true\n".to_owned(), "https_redirect"),
        ("hsts_max_age = \"365d\"\n".to_owned(), "HSTS without a certificate"),
    ];
    for (keys, said) in cases {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"https\"\n\n[[tenants]]\nid = \"ville\"\nname = \"Ville\"\nhosts = [\"ville.test\"]\n{keys}[[tenants.pools]]\nname = \"web\"\nservers = [{{ address = \"127.0.0.1:9\" }}]\n[[tenants.routes]]\npool = \"web\"\n"
        );
        let err = rempart::config::load_str(&text, std::path::Path::new("rempart.toml"))
            .err()
            .unwrap_or_else(|| panic!("accepted: {keys}"));
        assert!(err.to_string().contains(said), "{keys}: {err}");
    }
}

#[test]
fn acme_settings_that_could_never_serve_are_refused() {
    let cases = [
        // Only a wildcard name: HTTP-01 cannot prove it.
        (
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.2:0\"\nprotocol = \"https\"\n",
            "hosts = [\"*.ville.test\"]\ntls = { acme = true }\n",
            "only wildcard host names",
        ),
        // No https listener to present the certificate.
        (
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n",
            "hosts = [\"ville.test\"]\ntls = { acme = true }\n",
            "no https listener",
        ),
        // Files and ACME at once.
        (
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.2:0\"\nprotocol = \"https\"\n",
            "hosts = [\"ville.test\"]\ntls = { acme = true, cert = \"a.pem\", key = \"a.key\" }\n",
            "either `cert` and `key`",
        ),
    ];
    for (listeners, tenant, said) in cases {
        let text = format!(
            "{listeners}\n[acme]\ndirectory = \"https://127.0.0.1:14000/dir\"\n\n[[tenants]]\nid = \"ville\"\nname = \"Ville\"\n{tenant}[[tenants.pools]]\nname = \"web\"\nservers = [{{ address = \"127.0.0.1:9\" }}]\n[[tenants.routes]]\npool = \"web\"\n"
        );
        let err = rempart::config::load_str(&text, std::path::Path::new("rempart.toml"))
            .err()
            .unwrap_or_else(|| panic!("accepted: {tenant}"));
        assert!(err.to_string().contains(said), "{tenant}: {err}");
    }
}
